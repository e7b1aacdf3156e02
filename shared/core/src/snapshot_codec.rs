//! A cluster snapshot as it travels and is stored: JSON, gzip-compressed, named by the SHA-256
//! of the JSON. The agent encodes, S3 holds the bytes, and every reader decodes under the same
//! limits, so an oversized or corrupt object is refused before it can exhaust a function.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use crate::karpenter::{MAX_NODE_POOLS, MAX_REQUIREMENT_VALUES, MAX_REQUIREMENTS};
use crate::rightsizing::{MAX_USAGE_CONTAINERS, MAX_USAGE_HOURS};
use crate::snapshot::Snapshot;

/// The largest compressed snapshot accepted (a 20,000-pod, 1,000-node cluster with realistic
/// metadata compresses to about 2 MiB).
pub const MAX_COMPRESSED_BYTES: u64 = 32 * 1024 * 1024;
/// The largest snapshot JSON once inflated (the same cluster is about 45 MiB).
pub const MAX_JSON_BYTES: u64 = 256 * 1024 * 1024;
pub const MAX_NODES: usize = 5_000;
/// Workload and daemon pods together.
pub const MAX_PODS: usize = 100_000;
pub const MAX_PDBS: usize = 10_000;
/// Affinity terms, spread constraints and zonal volumes of one pod, together.
pub const MAX_PLACEMENT_RULES_PER_POD: usize = 64;
pub const MAX_CONTAINERS_PER_POD: usize = 64;
pub const MAX_HPAS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("snapshot is not valid gzip: {0}")]
    Gzip(std::io::Error),
    #[error("snapshot inflates to more than {MAX_JSON_BYTES} bytes")]
    TooLarge,
    #[error("snapshot is not a snapshot document: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

/// A snapshot ready to upload.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub gzip: Vec<u8>,
    /// Hex SHA-256 of the JSON before compression: equal snapshots have equal digests.
    pub sha256: String,
    pub json_bytes: usize,
}

pub fn encode(snapshot: &Snapshot) -> Result<Encoded, CodecError> {
    let json = serde_json::to_vec(snapshot)?;
    Ok(Encoded {
        gzip: gzip(&json)?,
        sha256: hex::encode(Sha256::digest(&json)),
        json_bytes: json.len(),
    })
}

/// A decoded snapshot and the digest of its JSON.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub snapshot: Snapshot,
    pub sha256: String,
}

/// Inflates at most [`MAX_JSON_BYTES`], parses, and checks the snapshot's bounds.
pub fn decode(gzip: &[u8]) -> Result<Decoded, CodecError> {
    let json = inflate(gzip, MAX_JSON_BYTES)?;
    let snapshot: Snapshot = serde_json::from_slice(&json)?;
    check_bounds(&snapshot)?;
    Ok(Decoded {
        snapshot,
        sha256: hex::encode(Sha256::digest(&json)),
    })
}

/// Any other document kept beside the snapshots (a usage history), as gzip JSON.
pub fn gzip_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    gzip(&serde_json::to_vec(value)?)
}

fn gzip(json: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(json.len() / 8), Compression::fast());
    encoder.write_all(json).map_err(CodecError::Gzip)?;
    encoder.finish().map_err(CodecError::Gzip)
}

/// Reads what [`gzip_json`] wrote, inflating at most `max` bytes.
pub fn gunzip_json<T: serde::de::DeserializeOwned>(gzip: &[u8], max: u64) -> Result<T, CodecError> {
    Ok(serde_json::from_slice(&inflate(gzip, max)?)?)
}

/// Inflates no more than `max` bytes (one past it proves the excess).
fn inflate(gzip: &[u8], max: u64) -> Result<Vec<u8>, CodecError> {
    let mut json = Vec::new();
    GzDecoder::new(gzip)
        .take(max + 1)
        .read_to_end(&mut json)
        .map_err(CodecError::Gzip)?;
    if json.len() as u64 > max {
        return Err(CodecError::TooLarge);
    }
    Ok(json)
}

/// What every stored snapshot satisfies: at least one node, and at most the documented counts.
pub fn check_bounds(snapshot: &Snapshot) -> Result<(), CodecError> {
    let invalid = |field, message: String| Err(CodecError::Invalid { field, message });
    if snapshot.nodes.is_empty() {
        return invalid("nodes", "a cluster snapshot has at least one node".into());
    }
    if snapshot.nodes.len() > MAX_NODES {
        return invalid("nodes", format!("at most {MAX_NODES} nodes"));
    }
    if snapshot.pods.len() + snapshot.daemon_pods.len() > MAX_PODS {
        return invalid(
            "pods",
            format!("at most {MAX_PODS} pods, daemon pods included"),
        );
    }
    if snapshot.pdbs.len() > MAX_PDBS {
        return invalid("pdbs", format!("at most {MAX_PDBS} PodDisruptionBudgets"));
    }
    if let Some(karpenter) = &snapshot.karpenter {
        if karpenter.node_pools.len() + karpenter.node_classes.len() > MAX_NODE_POOLS {
            return invalid(
                "karpenter",
                format!("at most {MAX_NODE_POOLS} NodePools and EC2NodeClasses"),
            );
        }
        if let Some(pool) = karpenter.node_pools.iter().find(|p| {
            p.spec.requirements.len() > MAX_REQUIREMENTS
                || p.spec
                    .requirements
                    .iter()
                    .any(|r| r.values.len() > MAX_REQUIREMENT_VALUES)
        }) {
            return invalid(
                "karpenter",
                format!(
                    "NodePool {} has more than {MAX_REQUIREMENTS} requirements or a requirement of more than {MAX_REQUIREMENT_VALUES} values",
                    pool.spec.name
                ),
            );
        }
    }
    if snapshot.hpas.len() > MAX_HPAS {
        return invalid(
            "hpas",
            format!("at most {MAX_HPAS} HorizontalPodAutoscalers"),
        );
    }
    if snapshot.usage_hours.len() > MAX_USAGE_HOURS
        || snapshot
            .usage_hours
            .iter()
            .any(|h| h.containers.len() > MAX_USAGE_CONTAINERS)
    {
        return invalid(
            "usage_hours",
            format!("at most {MAX_USAGE_HOURS} hours of at most {MAX_USAGE_CONTAINERS} containers"),
        );
    }
    if let Some(pod) = snapshot
        .pods
        .iter()
        .chain(&snapshot.daemon_pods)
        .find(|p| p.containers.len() > MAX_CONTAINERS_PER_POD)
    {
        return invalid(
            "pods",
            format!(
                "pod {} has more than {MAX_CONTAINERS_PER_POD} containers",
                pod.spec.name
            ),
        );
    }
    if let Some(pod) = snapshot.pods.iter().find(|p| {
        p.spec.affinity.len() + p.spec.spread.len() + p.spec.volumes.len()
            > MAX_PLACEMENT_RULES_PER_POD
    }) {
        return invalid(
            "pods",
            format!(
                "pod {} has more than {MAX_PLACEMENT_RULES_PER_POD} affinity terms, spread constraints and zonal volumes",
                pod.spec.name
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CapacityType;
    use crate::snapshot::CurrentNode;

    fn one_node() -> Snapshot {
        Snapshot {
            nodes: vec![CurrentNode {
                name: "n1".into(),
                instance_id: Some("i-1".into()),
                instance_type: "m5.large".into(),
                zone: "us-east-1a".into(),
                capacity_type: CapacityType::OnDemand,
                cpu_m: 1930,
                mem_mib: 7000,
                max_pods: 29,
                gpus: 0,
                price_hr: None,
                labels: Default::default(),
                taints: Vec::new(),
                unschedulable: false,
                not_ready: false,
                do_not_disrupt: false,
            }],
            ..Snapshot::default()
        }
    }

    #[test]
    fn a_snapshot_survives_the_round_trip_with_its_digest() {
        let encoded = encode(&one_node()).unwrap();
        let decoded = decode(&encoded.gzip).unwrap();
        assert_eq!(decoded.snapshot, one_node());
        assert_eq!(decoded.sha256, encoded.sha256);
        assert_eq!(encoded.sha256.len(), 64);
    }

    #[test]
    fn equal_snapshots_have_equal_digests_and_a_change_moves_it() {
        let mut changed = one_node();
        assert_eq!(
            encode(&one_node()).unwrap().sha256,
            encode(&changed).unwrap().sha256
        );
        changed.nodes[0].unschedulable = true;
        assert_ne!(
            encode(&one_node()).unwrap().sha256,
            encode(&changed).unwrap().sha256
        );
    }

    #[test]
    fn bytes_that_are_not_gzip_are_refused() {
        assert!(matches!(
            decode(b"{\"nodes\": []}"),
            Err(CodecError::Gzip(_))
        ));
    }

    #[test]
    fn a_bomb_that_inflates_past_the_limit_is_refused_without_inflating_it_all() {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(&vec![b' '; 4 * 1024 * 1024]).unwrap();
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 8 * 1024, "{} bytes", bomb.len());
        assert!(matches!(
            inflate(&bomb, 1024 * 1024),
            Err(CodecError::TooLarge)
        ));
        assert_eq!(
            inflate(&bomb, 4 * 1024 * 1024).unwrap().len(),
            4 * 1024 * 1024
        );
    }

    #[test]
    fn a_snapshot_without_nodes_names_the_field() {
        let encoded = encode(&Snapshot::default()).unwrap();
        match decode(&encoded.gzip) {
            Err(CodecError::Invalid { field, .. }) => assert_eq!(field, "nodes"),
            other => panic!("expected a refusal naming nodes, got {other:?}"),
        }
    }

    #[test]
    fn json_of_another_shape_is_refused() {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(b"{\"kind\": \"List\"}").unwrap();
        let gzip = encoder.finish().unwrap();
        assert!(matches!(decode(&gzip), Err(CodecError::Json(_))));
    }
}
