//! Node templates: what nodes a cluster's plans may use. Each template narrows the priced
//! offerings (families, excluded types, architectures, capacity types, zones, size) and gives
//! its nodes labels and taints, so workloads that select or tolerate them land there. Without
//! templates every offering is open, as before.

use spotwise_core::domain::{NodeTemplate, Taint};

use crate::model::Offering;

/// The label every templated offering carries, naming its template.
pub const TEMPLATE_LABEL: &str = "spotwise.io/node-template";

/// The instance family: `m5` of `m5.large`, `c7gn` of `c7gn.xlarge`.
pub fn family(instance_type: &str) -> &str {
    instance_type.split('.').next().unwrap_or(instance_type)
}

/// `*` matches any run of characters: `t2.*`, `*.metal`, `*.24xlarge`.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut remaining) = text.strip_prefix(head) else {
        return false;
    };
    let mut parts = rest.split('*').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            return remaining.ends_with(part);
        }
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    true
}

pub fn allows(template: &NodeTemplate, offering: &Offering) -> bool {
    let vcpus = offering.cpu_m / 1000;
    let in_list = |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v == value);
    in_list(
        &template.spec.instance_families,
        family(&offering.instance_type),
    ) && !template
        .spec
        .exclude_instance_types
        .iter()
        .any(|p| glob_matches(p, &offering.instance_type))
        && (template.spec.architectures.is_empty()
            || offering
                .arch
                .is_some_and(|a| template.spec.architectures.contains(&a)))
        && (template.spec.capacity_types.is_empty()
            || template
                .spec
                .capacity_types
                .contains(&offering.capacity_type))
        && in_list(&template.spec.zones, &offering.zone)
        && template
            .spec
            .min_vcpus
            .is_none_or(|min| vcpus >= u64::from(min))
        && template
            .spec
            .max_vcpus
            .is_none_or(|max| vcpus <= u64::from(max))
        && template
            .spec
            .min_memory_mib
            .is_none_or(|min| offering.mem_mib >= min)
        && template
            .spec
            .max_memory_mib
            .is_none_or(|max| offering.mem_mib <= max)
}

/// The offerings the templates open, each with its template's labels and taints. An offering
/// two templates allow appears once per template, as their nodes differ.
pub fn apply(templates: &[NodeTemplate], offerings: Vec<Offering>) -> Vec<Offering> {
    if templates.is_empty() {
        return offerings;
    }
    let mut out = Vec::new();
    for template in templates {
        for offering in offerings.iter().filter(|o| allows(template, o)) {
            let mut templated = offering.clone();
            templated.labels.extend(
                template
                    .spec
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
            templated
                .labels
                .insert(TEMPLATE_LABEL.to_owned(), template.spec.name.clone());
            templated
                .taints
                .extend(template.spec.taints.iter().cloned());
            out.push(templated);
        }
    }
    out
}

/// Whether a taint effect is one Kubernetes knows.
pub fn valid_taint(taint: &Taint) -> bool {
    matches!(
        taint.effect.as_str(),
        "NoSchedule" | "PreferNoSchedule" | "NoExecute"
    ) && !taint.key.is_empty()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use spotwise_core::domain::{Arch, CapacityType, NodeTemplateSpec};
    use spotwise_core::{ClusterId, TenantId};

    use super::*;

    fn offering(
        instance_type: &str,
        zone: &str,
        capacity: CapacityType,
        cpu: u64,
        mem: u64,
    ) -> Offering {
        Offering {
            instance_type: instance_type.into(),
            zone: zone.into(),
            capacity_type: capacity,
            cpu_m: cpu * 1000,
            mem_mib: mem,
            max_pods: 29,
            gpus: 0,
            price_hr: 0.1,
            interruption_band: Some(0),
            arch: Some(if instance_type.contains("g.") {
                Arch::Arm64
            } else {
                Arch::X86_64
            }),
            on_demand_price_hr: Some(0.2),
            observed_interruptions: 0,
            price_volatility: 0.0,
            labels: BTreeMap::new(),
            taints: Vec::new(),
        }
    }

    fn template(name: &str) -> NodeTemplate {
        NodeTemplate {
            id: name.into(),
            tenant_id: TenantId::new("t1").unwrap(),
            cluster_id: ClusterId::new("c1").unwrap(),
            spec: NodeTemplateSpec {
                name: name.into(),
                ..NodeTemplateSpec::default()
            },
        }
    }

    fn catalogue() -> Vec<Offering> {
        vec![
            offering("m5.large", "us-east-1a", CapacityType::Spot, 2, 8192),
            offering("m5.24xlarge", "us-east-1a", CapacityType::Spot, 96, 393_216),
            offering("c6g.xlarge", "us-east-1b", CapacityType::Spot, 4, 8192),
            offering("t3.large", "us-east-1a", CapacityType::OnDemand, 2, 8192),
            offering(
                "m5.metal",
                "us-east-1c",
                CapacityType::OnDemand,
                96,
                393_216,
            ),
        ]
    }

    #[test]
    fn globs_match_like_shell_patterns() {
        assert!(glob_matches("t2.*", "t2.micro"));
        assert!(glob_matches("*.metal", "m5.metal"));
        assert!(glob_matches("m*.*large", "m5.24xlarge"));
        assert!(!glob_matches("t2.*", "t3.micro"));
        assert!(glob_matches("m5.large", "m5.large"));
        assert!(!glob_matches("m5.large", "m5.xlarge"));
        assert!(glob_matches("*", "anything"));
    }

    #[test]
    fn no_templates_leave_every_offering_open() {
        assert_eq!(apply(&[], catalogue()), catalogue());
    }

    #[test]
    fn each_constraint_narrows_the_offerings() {
        let names = |t: &NodeTemplate| -> Vec<String> {
            apply(std::slice::from_ref(t), catalogue())
                .into_iter()
                .map(|o| o.instance_type)
                .collect()
        };
        let mut t = template("general");
        t.spec.instance_families = vec!["m5".into()];
        t.spec.exclude_instance_types = vec!["*.metal".into()];
        assert_eq!(names(&t), ["m5.large", "m5.24xlarge"]);
        t.spec.max_vcpus = Some(16);
        assert_eq!(names(&t), ["m5.large"]);

        let mut arm = template("arm");
        arm.spec.architectures = vec![Arch::Arm64];
        assert_eq!(names(&arm), ["c6g.xlarge"]);

        let mut on_demand = template("steady");
        on_demand.spec.capacity_types = vec![CapacityType::OnDemand];
        on_demand.spec.zones = vec!["us-east-1a".into()];
        assert_eq!(names(&on_demand), ["t3.large"]);

        let mut big = template("big");
        big.spec.min_memory_mib = Some(65_536);
        assert_eq!(names(&big), ["m5.24xlarge", "m5.metal"]);
    }

    #[test]
    fn templated_offerings_carry_the_templates_labels_and_taints() {
        let mut batch = template("batch");
        batch.spec.instance_families = vec!["m5".into()];
        batch.spec.labels = BTreeMap::from([("workload".to_owned(), "batch".to_owned())]);
        batch.spec.taints = vec![Taint {
            key: "dedicated".into(),
            value: Some("batch".into()),
            effect: "NoSchedule".into(),
        }];
        let mut general = template("general");
        general.spec.instance_families = vec!["m5".into()];
        general.spec.max_vcpus = Some(4);
        let out = apply(&[batch, general], catalogue());
        // m5.large is open to both templates, as two different nodes.
        assert_eq!(out.len(), 4);
        let batch_nodes: Vec<&Offering> = out
            .iter()
            .filter(|o| o.labels.get(TEMPLATE_LABEL).map(String::as_str) == Some("batch"))
            .collect();
        assert_eq!(batch_nodes.len(), 3);
        assert!(
            batch_nodes
                .iter()
                .all(|o| o.labels["workload"] == "batch" && o.taints.len() == 1)
        );
        assert!(valid_taint(&batch_nodes[0].taints[0]));
        assert!(!valid_taint(&Taint {
            key: "x".into(),
            value: None,
            effect: "Sometimes".into()
        }));
    }
}
