//! The instance catalogue: what each type offers a Kubernetes scheduler.

use serde::Deserialize;

use super::FeedError;
use crate::domain::{Arch, InstanceType};

/// Pods per node under the VPC CNI without prefix delegation: one IP per pod from each ENI's
/// secondary addresses, plus two host-network pods.
pub fn max_pods(enis: u32, ipv4_per_eni: u32) -> u32 {
    enis.saturating_mul(ipv4_per_eni.saturating_sub(1))
        .saturating_add(2)
}

fn arch(name: &str) -> Option<Arch> {
    match name {
        "x86_64" | "amd64" => Some(Arch::X86_64),
        "arm64" => Some(Arch::Arm64),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeInstanceTypes {
    instance_types: Vec<ApiType>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ApiType {
    instance_type: String,
    v_cpu_info: VCpu,
    memory_info: Memory,
    processor_info: Processor,
    #[serde(default)]
    gpu_info: Option<Gpu>,
    network_info: Network,
    #[serde(default)]
    supported_usage_classes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VCpu {
    default_v_cpus: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Memory {
    size_in_mi_b: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Processor {
    supported_architectures: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Gpu {
    #[serde(default)]
    gpus: Vec<GpuDevice>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GpuDevice {
    count: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Network {
    maximum_network_interfaces: u32,
    ipv4_addresses_per_interface: u32,
}

/// One row of EC2 DescribeInstanceTypes, already reduced (the SDK path builds these directly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub architectures: Vec<String>,
    pub gpus: u32,
    pub enis: u32,
    pub ipv4_per_eni: u32,
    pub spot_capable: bool,
}

impl TypeInfo {
    /// The catalogue entry, or `None` for architectures EKS nodes do not run (i386, mac).
    pub fn to_instance_type(&self) -> Option<InstanceType> {
        let arch = self.architectures.iter().find_map(|a| arch(a))?;
        Some(InstanceType {
            name: self.name.clone(),
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            arch,
            gpus: self.gpus,
            max_pods: max_pods(self.enis, self.ipv4_per_eni),
        })
    }
}

/// Parses DescribeInstanceTypes output (CLI/SDK JSON), keeping spot-capable Linux node types.
pub fn parse_describe_instance_types(
    json: &[u8],
    source: &str,
) -> Result<Vec<InstanceType>, FeedError> {
    let parsed: DescribeInstanceTypes =
        serde_json::from_slice(json).map_err(|e| FeedError::json(source, &e))?;
    Ok(parsed
        .instance_types
        .into_iter()
        .map(|t| TypeInfo {
            gpus: t
                .gpu_info
                .map_or(0, |g| g.gpus.iter().map(|d| d.count).sum()),
            spot_capable: t.supported_usage_classes.is_empty()
                || t.supported_usage_classes.iter().any(|c| c == "spot"),
            name: t.instance_type,
            vcpus: t.v_cpu_info.default_v_cpus,
            memory_mib: t.memory_info.size_in_mi_b,
            architectures: t.processor_info.supported_architectures,
            enis: t.network_info.maximum_network_interfaces,
            ipv4_per_eni: t.network_info.ipv4_addresses_per_interface,
        })
        .filter(|t| t.spot_capable)
        .filter_map(|t| t.to_instance_type())
        .collect())
}

#[derive(Deserialize)]
struct Derived {
    instance_types: std::collections::BTreeMap<String, DerivedType>,
}

#[derive(Deserialize)]
struct DerivedType {
    vcpu: u32,
    memory_mib: u64,
    #[serde(default)]
    gpu_count: u32,
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    max_enis: Option<u32>,
    #[serde(default)]
    ipv4_per_eni: Option<u32>,
}

/// Parses the shipped catalogue file (`data/ec2-instance-types.json`). Types without an
/// architecture or ENI limits cannot be scheduled onto reliably and are left out.
pub fn parse_catalogue_file(json: &[u8], source: &str) -> Result<Vec<InstanceType>, FeedError> {
    let parsed: Derived = serde_json::from_slice(json).map_err(|e| FeedError::json(source, &e))?;
    Ok(parsed
        .instance_types
        .into_iter()
        .filter_map(|(name, t)| {
            TypeInfo {
                name,
                vcpus: t.vcpu,
                memory_mib: t.memory_mib,
                architectures: t.architecture.into_iter().collect(),
                gpus: t.gpu_count,
                enis: t.max_enis?,
                ipv4_per_eni: t.ipv4_per_eni?,
                spot_capable: true,
            }
            .to_instance_type()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_pods_matches_the_eks_table() {
        assert_eq!(max_pods(3, 10), 29); // m5.large
        assert_eq!(max_pods(4, 15), 58); // m5.xlarge
        assert_eq!(max_pods(3, 4), 11); // t3.small
        assert_eq!(max_pods(0, 0), 2);
    }

    #[test]
    fn api_shape_parses_with_gpus_and_arm() {
        let types = parse_describe_instance_types(
            include_bytes!("../../tests/data/describe-instance-types-karpenter-17.json"),
            "t",
        )
        .unwrap();
        let get = |n: &str| types.iter().find(|t| t.name == n).unwrap();
        assert_eq!(
            (
                get("m5.large").vcpus,
                get("m5.large").memory_mib,
                get("m5.large").max_pods
            ),
            (2, 8192, 29)
        );
        assert_eq!(get("c6g.large").arch, Arch::Arm64);
        assert!(get("g5.12xlarge").gpus >= 4);
    }

    #[test]
    fn shipped_catalogue_parses() {
        let types = parse_catalogue_file(
            include_bytes!("../../../../data/ec2-instance-types.json"),
            "data",
        )
        .unwrap();
        assert!(types.len() > 700, "{}", types.len());
        let m5 = types.iter().find(|t| t.name == "m5.large").unwrap();
        assert_eq!(
            (m5.vcpus, m5.memory_mib, m5.max_pods, m5.arch),
            (2, 8192, 29, Arch::X86_64)
        );
    }

    #[test]
    fn truncated_catalogue_names_source_and_position() {
        let err = parse_catalogue_file(b"{\"instance_types\": {\"m5.large\": {", "data/x.json")
            .unwrap_err();
        assert_eq!(err.source_name, "data/x.json");
        assert!(err.reason.contains("line 1"), "{err}");
    }
}
