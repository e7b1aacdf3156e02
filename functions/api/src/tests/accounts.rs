//! `/v1/accounts`: external ids, linking, validation and unlinking.

use super::*;

/// Links `role` for us-east-1 and eu-west-1 as the tenant's admin.
async fn link_in_two_regions(api: &Api, role: &str) -> Reply {
    api.post(
        "/v1/accounts",
        &api.admin,
        json!({"role_arn": role, "regions": ["us-east-1", "eu-west-1"]}),
    )
    .await
}

#[tokio::test]
async fn accounts_are_linked_with_the_tenants_external_id() {
    let api = api().await;
    let role = "arn:aws:iam::111122223333:role/SpotwiseAccess";
    let early = api
        .post(
            "/v1/accounts",
            &api.admin,
            json!({"role_arn": role, "regions": ["us-east-1"]}),
        )
        .await;
    assert_eq!(
        (early.status, error_code(&early)),
        (StatusCode::CONFLICT, "no_external_id")
    );

    let issued = api
        .post("/v1/accounts/external-id", &api.admin, json!({}))
        .await;
    let external_id = issued.body["external_id"].as_str().unwrap().to_owned();
    assert!(external_id.starts_with("sw-"));
    assert_eq!(
        api.post("/v1/accounts/external-id", &api.admin, json!({}))
            .await
            .body["external_id"],
        external_id.as_str(),
        "stable"
    );
    let other = api
        .post("/v1/accounts/external-id", &api.other_admin, json!({}))
        .await;
    assert_ne!(
        other.body["external_id"],
        external_id.as_str(),
        "per tenant"
    );

    for (body, field) in [
        (
            json!({"role_arn": "arn:aws:iam::1111:role/x", "regions": ["us-east-1"]}),
            "role_arn",
        ),
        (json!({"role_arn": role, "regions": []}), "regions"),
        (
            json!({"role_arn": role, "regions": ["mars-1"]}),
            "regions[0]",
        ),
    ] {
        let reply = api.post("/v1/accounts", &api.admin, body).await;
        assert_eq!(
            (reply.status, &reply.body["error"]["field"]),
            (StatusCode::BAD_REQUEST, &json!(field)),
            "{}",
            reply.body
        );
    }
    let linked = link_in_two_regions(&api, role).await;
    assert_eq!(linked.status, StatusCode::CREATED, "{}", linked.body);
    assert_eq!(
        (&linked.body["account_id"], &linked.body["external_id"]),
        (&json!("111122223333"), &json!(external_id))
    );
    let again = api
        .post(
            "/v1/accounts",
            &api.admin,
            json!({"role_arn": role, "regions": ["us-east-1"]}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let elsewhere = api
        .post(
            "/v1/accounts",
            &api.other_admin,
            json!({"role_arn": role, "regions": ["us-east-1"]}),
        )
        .await;
    assert_eq!(elsewhere.status, StatusCode::CONFLICT, "{}", elsewhere.body);
    assert!(
        elsewhere.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another Spotwise tenant"),
        "one tenant per AWS account, so cluster partitions are never shared"
    );

    let validated = api
        .post("/v1/accounts/111122223333/validate", &api.admin, json!({}))
        .await;
    assert_eq!(
        validated.body["health"]["state"], "healthy",
        "{}",
        validated.body
    );
    assert_eq!(
        api.get("/v1/accounts", &api.admin).await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        api.get("/v1/accounts", &api.other_admin).await.body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        api.delete("/v1/accounts/111122223333", &api.other_admin)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.delete("/v1/accounts/111122223333", &api.admin)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let moved = api
        .post(
            "/v1/accounts",
            &api.other_admin,
            json!({"role_arn": role, "regions": ["us-east-1"]}),
        )
        .await;
    assert_eq!(
        moved.status,
        StatusCode::CREATED,
        "free once unlinked: {}",
        moved.body
    );
    let audited: Vec<String> = api.get("/v1/audit", &api.admin).await.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    for action in ["account.external_id", "account.validate", "account.unlink"] {
        assert!(audited.iter().any(|a| a == action), "{action}: {audited:?}");
    }
    assert!(
        api.get("/v1/accounts", &api.admin).await.body["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// The customer's side, through the Spotwise role: the forwarding rule `infra/customer-events.yaml`
/// creates, in `region`, targeting `bus`.
async fn forward(customer: &aws_config::SdkConfig, region: &str, bus: &str) {
    let events = aws_sdk_eventbridge::Client::from_conf(
        aws_sdk_eventbridge::config::Builder::from(customer)
            .region(aws_sdk_eventbridge::config::Region::new(region.to_owned()))
            .build(),
    );
    events
        .put_rule()
        .name(spotwise_aws::events::FORWARDING_RULE)
        .event_pattern(r#"{"source":["aws.ec2"]}"#)
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule(spotwise_aws::events::FORWARDING_RULE)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("spotwise")
                .arn(bus)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

fn bus_statements(policy: Option<&str>) -> Vec<String> {
    let policy: Value = policy.map_or(Value::Null, |p| serde_json::from_str(p).unwrap());
    policy["Statement"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|st| st["Sid"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn linking_admits_the_account_to_the_bus_and_reports_what_keeps_its_interruptions_away() {
    let api = api().await;
    let role = "arn:aws:iam::111122223333:role/SpotwiseAccess";
    let external_id = api
        .post("/v1/accounts/external-id", &api.admin, json!({}))
        .await
        .body["external_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let linked = link_in_two_regions(&api, role).await;
    assert_eq!(linked.status, StatusCode::CREATED, "{}", linked.body);
    let forwarding = &linked.body["event_forwarding"];
    assert_eq!(forwarding["admitted"], true);
    let gaps: Vec<&str> = forwarding["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert_eq!(gaps.len(), 2, "{gaps:?}");
    for (gap, region) in gaps.iter().zip(["us-east-1", "eu-west-1"]) {
        assert!(
            gap.starts_with(&format!(
                "{region}: no rule spotwise-interruption-forwarding"
            )),
            "{gap}"
        );
    }
    let sdk = api.stack.sdk_config().await;
    let bus = api.state.interruption_bus.arn().to_owned();
    let bus_name = bus.rsplit('/').next().unwrap().to_owned();
    let events = aws_sdk_eventbridge::Client::new(&sdk);
    let described = events
        .describe_event_bus()
        .name(&bus_name)
        .send()
        .await
        .unwrap();
    assert_eq!(
        bus_statements(described.policy()),
        ["account-111122223333"],
        "only the linked account may put events on the bus"
    );

    // The customer deploys the forwarding rule in both regions, and has an Auto Scaling group
    // with a termination hook the agent's role may not complete (no spotwise.io/managed tag).
    let customer = spotwise_aws::cross_account::CrossAccount::new(sdk.clone(), "test")
        .config_for(
            &spotwise_core::domain::RoleArn::parse(role).unwrap(),
            &external_id,
        )
        .await
        .unwrap();
    for region in ["us-east-1", "eu-west-1"] {
        forward(&customer, region, &bus).await;
    }
    let autoscaling = aws_sdk_autoscaling::Client::new(&customer);
    autoscaling
        .create_launch_configuration()
        .launch_configuration_name("workers")
        .image_id("ami-12c6146b")
        .instance_type("m5.large")
        .send()
        .await
        .unwrap();
    autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name("eks-workers")
        .launch_configuration_name("workers")
        .min_size(0)
        .max_size(1)
        .desired_capacity(0)
        .availability_zones("us-east-1a")
        .send()
        .await
        .unwrap();
    autoscaling
        .put_lifecycle_hook()
        .auto_scaling_group_name("eks-workers")
        .lifecycle_hook_name("drain-first")
        .lifecycle_transition("autoscaling:EC2_INSTANCE_TERMINATING")
        .send()
        .await
        .unwrap();
    let validated = api
        .post("/v1/accounts/111122223333/validate", &api.admin, json!({}))
        .await;
    let gaps = validated.body["event_forwarding"]["gaps"]
        .as_array()
        .unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let gap = gaps[0].as_str().unwrap();
    assert!(
        gap.starts_with("us-east-1: group eks-workers has termination hook drain-first but no spotwise.io/managed=true tag"),
        "{gap}"
    );

    // Unlinking takes the account off the bus.
    assert_eq!(
        api.delete("/v1/accounts/111122223333", &api.admin)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let described = events
        .describe_event_bus()
        .name(&bus_name)
        .send()
        .await
        .unwrap();
    assert!(bus_statements(described.policy()).is_empty());
}
