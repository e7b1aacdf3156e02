//! The shipped manifest configures the agent it ships, mounts what the configuration points
//! at, and grants the agent what it calls and nothing more.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use serde::Deserialize;
use spotwise_agent::AgentConfig;
use spotwise_core::config::Env;
use spotwise_core::domain::CapacityType;
use spotwise_core::karpenter::reservation_priority_class;

struct Manifest {
    deployment: Deployment,
    role: ClusterRole,
    namespaced_role: Role,
    priority_classes: Vec<PriorityClass>,
}

fn manifest() -> Manifest {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/agent/agent.yaml"
    ))
    .unwrap();
    let mut deployment = None;
    let mut role = None;
    let mut namespaced_role = None;
    let mut priority_classes = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(document).unwrap();
        match value["kind"].as_str() {
            Some("Deployment") => deployment = Some(serde_yaml::from_value(value).unwrap()),
            Some("ClusterRole") => role = Some(serde_yaml::from_value(value).unwrap()),
            Some("Role") => namespaced_role = Some(serde_yaml::from_value(value).unwrap()),
            Some("PriorityClass") => priority_classes.push(serde_yaml::from_value(value).unwrap()),
            _ => {}
        }
    }
    Manifest {
        deployment: deployment.expect("a Deployment"),
        role: role.expect("a ClusterRole"),
        namespaced_role: namespaced_role.expect("a Role"),
        priority_classes,
    }
}

#[test]
fn the_deployment_environment_is_a_valid_agent_configuration() {
    let spec = manifest().deployment.spec.unwrap().template.spec.unwrap();
    let container = &spec.containers[0];
    let vars: std::collections::HashMap<String, String> = container
        .env
        .iter()
        .flatten()
        .map(|var| (var.name.clone(), var.value.clone().unwrap_or_default()))
        .collect();
    let config = AgentConfig::from_env(&Env::from_map(vars)).unwrap();

    let mounts: Vec<&str> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    for file in [&config.secret_file, &config.key_file, &config.buffer_file] {
        assert!(
            mounts.iter().any(|m| file.starts_with(m)),
            "{} is on a mounted volume",
            file.display()
        );
    }
    let probe_port = container
        .liveness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .map(|g| g.port.clone())
        .unwrap();
    let metrics_port = container
        .ports
        .iter()
        .flatten()
        .find(|p| p.container_port == i32::from(config.metrics_addr.port()))
        .expect("the metrics address is a container port");
    assert_eq!(
        probe_port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
            metrics_port.name.clone().unwrap()
        )
    );
}

#[test]
fn the_container_runs_unprivileged_on_a_read_only_root() {
    let spec = manifest().deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        spec.security_context.and_then(|s| s.run_as_non_root),
        Some(true)
    );
    let container = &spec.containers[0];
    let security = container.security_context.clone().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    let resources = container.resources.clone().unwrap();
    assert!(resources.requests.is_some() && resources.limits.is_some());
}

#[test]
fn the_cluster_role_grants_exactly_what_the_agent_calls() {
    let mut granted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for rule in manifest().role.rules.unwrap() {
        for group in rule.api_groups.unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                let key = format!("{group}/{resource}");
                granted
                    .entry(key)
                    .or_default()
                    .extend(rule.verbs.iter().cloned());
            }
        }
    }
    let set = |verbs: &[&str]| verbs.iter().map(|v| v.to_string()).collect::<BTreeSet<_>>();
    // execute.rs, drain.rs and snapshot.rs between them make exactly these calls.
    let expected: BTreeMap<String, BTreeSet<String>> = [
        ("/nodes", set(&["get", "list", "patch"])),
        ("/pods", set(&["list"])),
        ("/pods/eviction", set(&["create"])),
        ("/persistentvolumeclaims", set(&["list"])),
        ("/persistentvolumes", set(&["list"])),
        ("policy/poddisruptionbudgets", set(&["list"])),
        ("apps/deployments/scale", set(&["get", "patch"])),
        ("apps/statefulsets/scale", set(&["get", "patch"])),
        ("apps/deployments", set(&["get", "patch"])),
        ("apps/statefulsets", set(&["get", "patch"])),
        ("apps/daemonsets", set(&["get", "patch"])),
        ("autoscaling/horizontalpodautoscalers", set(&["list"])),
        ("metrics.k8s.io/pods", set(&["list"])),
        (
            "karpenter.sh/nodepools",
            set(&["get", "list", "create", "patch", "delete"]),
        ),
        ("karpenter.k8s.aws/ec2nodeclasses", set(&["get", "list"])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(granted, expected);
    assert!(
        !granted.values().flatten().any(|verb| verb == "*"),
        "no wildcard verbs"
    );
}

#[test]
fn the_agent_may_create_and_delete_pods_only_in_its_own_namespace_for_reservations() {
    let manifest = manifest();
    let role = manifest.namespaced_role;
    assert_eq!(
        role.metadata.namespace, manifest.deployment.metadata.namespace,
        "the namespace the agent's client defaults to"
    );
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].api_groups.as_deref(), Some(&[String::new()][..]));
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["pods".to_owned()][..])
    );
    // execute.rs's reserve_nodes and release_nodes.
    assert_eq!(rules[0].verbs, ["create", "delete"]);

    let value = |capacity: CapacityType| {
        let name = reservation_priority_class(capacity);
        let class = manifest
            .priority_classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("PriorityClass {name} is shipped"));
        assert_eq!(class.preemption_policy.as_deref(), Some("Never"));
        assert_ne!(class.global_default, Some(true));
        class.value
    };
    let (spot, on_demand) = (value(CapacityType::Spot), value(CapacityType::OnDemand));
    assert!(on_demand < 0, "every workload pod preempts a placeholder");
    assert!(spot < on_demand, "spot placeholders are preempted first");
    assert_eq!(manifest.priority_classes.len(), 2);
}

#[test]
fn a_placeholder_pod_meets_the_restricted_pod_security_standard_of_the_namespace() {
    let reservation = spotwise_core::karpenter::NodeReservation {
        node_pool: "spotwise-spot-0123456789".into(),
        capacity_type: CapacityType::Spot,
        nodes: 2,
        placeholders: vec![spotwise_core::karpenter::Placeholder {
            cpu_m: 3_500,
            mem_mib: 14_000,
            count: 2,
        }],
    };
    let pod: Pod = serde_json::from_value(reservation.pod(1)).unwrap();
    assert_eq!(
        pod.metadata.name.as_deref(),
        Some("spotwise-spot-0123456789-hold-1")
    );
    let spec = pod.spec.unwrap();
    let security = spec.security_context.unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(
        security.seccomp_profile.map(|p| p.type_),
        Some("RuntimeDefault".to_owned())
    );
    let container = &spec.containers[0];
    let container_security = container.security_context.clone().unwrap();
    assert_eq!(container_security.allow_privilege_escalation, Some(false));
    assert_eq!(
        container_security.capabilities.unwrap().drop.unwrap(),
        ["ALL"]
    );
    assert_eq!(
        spec.node_selector.unwrap()["karpenter.sh/nodepool"],
        "spotwise-spot-0123456789"
    );
    assert_eq!(
        spec.priority_class_name.as_deref(),
        Some("spotwise-reservation-spot")
    );
}
