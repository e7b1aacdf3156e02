use std::sync::{Arc, Mutex};

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use spotwise_core::domain::PoolKey;
use spotwise_testkit::{LocalStack, repo_root};

use super::*;

fn data(file: &str) -> String {
    repo_root().join("data").join(file).display().to_string()
}

fn file_params(regions: &str) -> Vec<String> {
    vec![
        format!("SpotAdvisorUrl={}", data("spot-advisor-data.json")),
        format!("SpotPriceSource={}", data("spot-prices-spotjs.json")),
        format!("OnDemandPriceSource={}", data("on-demand-prices.json")),
        format!("CatalogueSource={}", data("ec2-instance-types.json")),
        format!("ScrapeRegions={regions}"),
    ]
}

async fn setup(params: &[String]) -> (LocalStack, Config, Deps) {
    let refs: Vec<&str> = params.iter().map(String::as_str).collect();
    let stack = LocalStack::start_with(&refs);
    let config =
        Config::from_env(&Env::from_map(stack.function_env("PricingScraperFunction"))).unwrap();
    let deps = Deps::new(&stack.sdk_config().await, &config).unwrap();
    (stack, config, deps)
}

fn trigger() -> ScheduleTrigger {
    serde_json::from_str(&spotwise_testkit::fixture(
        "events/pricing-scraper/schedule.json",
    ))
    .unwrap()
}

#[tokio::test]
async fn the_schedule_fans_out_one_message_per_region_and_each_scrapes_its_region() {
    let (stack, config, deps) = setup(&file_params("us-east-1,eu-west-1")).await;
    let fanned = handle(&deps, &config, ScraperEvent::Schedule(trigger()))
        .await
        .unwrap();
    assert!(matches!(
        fanned,
        ScraperResponse::FanOut(FanOut {
            regions: 2,
            enqueued: 2
        })
    ));
    let batch = stack.poll(&config.scrape_queue_url).await;
    let mut regions: Vec<String> = batch
        .records
        .iter()
        .map(|r| {
            serde_json::from_str::<ScrapeRegion>(r.body.as_deref().unwrap())
                .unwrap()
                .region
        })
        .collect();
    regions.sort();
    assert_eq!(regions, ["eu-west-1", "us-east-1"]);
    let mut unknown = batch.clone();
    let Ok(response) = handle_batch(&deps, &config, batch).await;
    assert!(response.batch_item_failures.is_empty());
    for region in &regions {
        assert!(!stored_pools(&deps.store, region).await.unwrap().is_empty());
    }

    unknown.records.truncate(1);
    unknown.records[0].body = Some(r#"{"region":"mars-north-1"}"#.into());
    let Ok(response) = handle_batch(&deps, &config, unknown).await;
    assert_eq!(
        response.batch_item_failures.len(),
        1,
        "a region not configured is refused"
    );
}

#[test]
fn sources_parse() {
    assert_eq!(Source::parse("aws", false), Ok(Source::Aws));
    assert_eq!(
        Source::parse("https://x/y.json", false),
        Ok(Source::Url("https://x/y.json".into()))
    );
    assert_eq!(
        Source::parse("data/a.json", false),
        Ok(Source::File("data/a.json".into()))
    );
    assert_eq!(
        Source::parse("file:///tmp/a.json", false),
        Ok(Source::File("/tmp/a.json".into()))
    );
    assert!(Source::parse("http://127.0.0.1/x", false).is_err());
    assert!(Source::parse("http://127.0.0.1/x", true).is_ok());
    assert!(Source::parse("s3://bucket/x", false).is_err());
}

#[test]
fn config_errors_name_the_variable() {
    let base = [
        ("TABLE_NAME", "t"),
        ("SCRAPE_REGIONS", "us-east-1"),
        ("NOTIFICATIONS_QUEUE_URL", "q"),
    ];
    let with =
        |extra: &[(&'static str, &'static str)]| Env::from_pairs(base.iter().chain(extra).copied());
    for (var, value) in [
        ("SPOT_ADVISOR_SOURCE", "ftp://x"),
        ("SPOT_ADVISOR_SOURCE", "aws"),
        ("CATALOGUE_SOURCE", "s3://b/k"),
    ] {
        let mut extra = vec![("SPOT_ADVISOR_SOURCE", "feed.json")];
        extra.retain(|(k, _)| *k != var);
        extra.push((var, value));
        let err = Config::from_env(&with(&extra)).err().unwrap();
        assert!(err.to_string().contains(var), "{err}");
    }
}

#[tokio::test]
async fn file_feeds_become_pools_and_an_unchanged_rerun_writes_nothing() {
    let (_stack, config, deps) = setup(&file_params("us-east-1,eu-west-1")).await;
    let first = scrape(&deps, &config, &config.regions).await.unwrap();
    assert_eq!(first.error, None);
    assert!(
        first.regions.iter().all(|r| r.error.is_none()),
        "{:?}",
        first.regions
    );
    assert!(first.pools > 1000, "{} pools", first.pools);
    assert_eq!(first.written, first.pools);

    let pools = stored_pools(&deps.store, "us-east-1").await.unwrap();
    let zones: std::collections::BTreeSet<&str> =
        pools.iter().map(|p| p.key.zone.as_str()).collect();
    assert!(
        zones.iter().all(|z| z.starts_with("use1-az")),
        "pools are keyed by zone id: {zones:?}"
    );
    let m5 = pools
        .iter()
        .find(|p| p.key.instance_type == "m5.large")
        .unwrap();
    assert_eq!(
        (
            m5.on_demand_price_hr,
            m5.interruption_band,
            m5.advisor_savings_pct
        ),
        (Some(0.096), Some(3), Some(66))
    );
    assert_eq!((m5.vcpus, m5.memory_mib, m5.max_pods), (2, 8192, 29));
    assert!(m5.spot_price_hr > 0.0 && m5.spot_price_hr < 0.096);
    let stored = deps
        .store
        .get::<Pool>(&keys::pool_current(&m5.key))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.body, *m5);

    let second = scrape(&deps, &config, &config.regions).await.unwrap();
    assert_eq!(second.pools, first.pools);
    assert_eq!(second.written, 0, "nothing changed, nothing written");
    let recorded = deps
        .store
        .get::<ScrapeRun>(&keys::scrape_run(&second.run_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(recorded.body.written, 0);
    assert!(recorded.ttl.is_some());
}

#[tokio::test]
async fn ec2_apis_are_read_through_the_sdk() {
    // The local emulator serves DescribeAvailabilityZones, DescribeInstanceTypes and (dummy)
    // DescribeSpotPriceHistory.
    let mut params = file_params("us-east-1");
    params.retain(|p| !p.starts_with("SpotPriceSource") && !p.starts_with("CatalogueSource"));
    let (_stack, config, deps) = setup(&params).await;
    assert_eq!(
        (config.spot_prices.clone(), config.catalogue.clone()),
        (Source::Aws, Source::Aws)
    );
    let run = scrape(&deps, &config, &config.regions).await.unwrap();
    assert_eq!(run.regions[0].error, None);
    assert!(run.pools > 100, "{} pools", run.pools);
    let pools = stored_pools(&deps.store, "us-east-1").await.unwrap();
    assert!(
        pools
            .iter()
            .any(|p| p.key.instance_type == "m5.large" && p.on_demand_price_hr == Some(0.096))
    );
}

/// A stand-in for the Price List Query API: two pages for us-east-1, a server error elsewhere.
async fn fake_pricing() -> (String, Arc<Mutex<Vec<Value>>>, tokio::task::JoinHandle<()>) {
    let requests: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = requests.clone();
    let sample: Value = serde_json::from_str(&spotwise_testkit::fixture(
        "shared/core/tests/data/pricing-getproducts-response-m5.large-us-east-1.json",
    ))
    .unwrap();
    let m5: Value = serde_json::from_str(sample["PriceList"][0].as_str().unwrap()).unwrap();
    let mut reserved = m5.clone();
    reserved["product"]["attributes"]["capacitystatus"] = json!("UnusedCapacityReservation");
    reserved["terms"]["OnDemand"] =
        json!({"X": {"priceDimensions": {"Y": {"unit": "Hrs", "pricePerUnit": {"USD": "9.99"}}}}});
    let mut c5 = m5.clone();
    c5["product"]["attributes"]["instanceType"] = json!("c5.xlarge");
    for term in c5["terms"]["OnDemand"]
        .as_object_mut()
        .unwrap()
        .values_mut()
    {
        for dim in term["priceDimensions"]
            .as_object_mut()
            .unwrap()
            .values_mut()
        {
            dim["pricePerUnit"]["USD"] = json!("0.1700000000");
        }
    }
    let app = axum::Router::new().fallback(move |headers: HeaderMap, raw: axum::body::Bytes| {
        let seen = seen.clone();
        let (m5, reserved, c5) = (m5.to_string(), reserved.to_string(), c5.to_string());
        async move {
            assert_eq!(headers.get("x-amz-target").and_then(|v| v.to_str().ok()), Some("AWSPriceListService.GetProducts"));
            let body: Value = serde_json::from_slice(&raw).unwrap();
            seen.lock().unwrap().push(body.clone());
            let region = body["Filters"].as_array().unwrap().iter().find(|f| f["Field"] == "regionCode").map(|f| f["Value"].clone());
            if region != Some(json!("us-east-1")) {
                return (StatusCode::BAD_REQUEST, Json(json!({"__type": "InvalidParameterException", "Message": "no prices here"})));
            }
            let page = match body.get("NextToken").and_then(Value::as_str) {
                None => json!({"FormatVersion": "aws_v1", "PriceList": [m5, reserved], "NextToken": "page-2"}),
                Some(_) => json!({"FormatVersion": "aws_v1", "PriceList": [c5]}),
            };
            (StatusCode::OK, Json(page))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, requests, server)
}

#[tokio::test]
async fn get_products_is_paginated_filtered_and_a_failing_region_does_not_lose_the_others() {
    let mut params = file_params("us-east-1,eu-west-1");
    params.retain(|p| !p.starts_with("OnDemandPriceSource"));
    let (stack, config, mut deps) = setup(&params).await;
    let (url, requests, server) = fake_pricing().await;
    deps.pricing_endpoint = Some(url);

    let run = scrape(&deps, &config, &config.regions).await.unwrap();
    server.abort();
    let by_region: HashMap<&str, &RegionReport> =
        run.regions.iter().map(|r| (r.region.as_str(), r)).collect();
    assert_eq!(by_region["us-east-1"].error, None);
    assert!(by_region["us-east-1"].written > 0);
    assert!(
        by_region["eu-west-1"]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("pricing:GetProducts"),
        "{:?}",
        by_region["eu-west-1"]
    );

    let pools = stored_pools(&deps.store, "us-east-1").await.unwrap();
    let od = |t: &str| {
        pools
            .iter()
            .find(|p| p.key.instance_type == t)
            .and_then(|p| p.on_demand_price_hr)
    };
    assert_eq!(
        od("m5.large"),
        Some(0.096),
        "the reservation SKU's 9.99 was filtered out"
    );
    assert_eq!(od("c5.xlarge"), Some(0.17), "the second page was read");
    assert!(
        stored_pools(&deps.store, "eu-west-1")
            .await
            .unwrap()
            .is_empty()
    );

    let first = requests.lock().unwrap()[0].clone();
    let filters: Vec<(String, String)> = first["Filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["Field"].as_str().unwrap().to_owned(),
                f["Value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        filters.contains(&("capacitystatus".into(), "Used".into())),
        "{filters:?}"
    );
    assert_eq!(first["ServiceCode"], "AmazonEC2");

    // The failed region was reported to the operators.
    let alerts: Vec<Notification> = stack.drain(stack.resource("NotificationsQueue")).await;
    let alert = &alerts[0];
    assert_eq!(
        (alert.event_type.as_str(), alert.severity),
        ("scrape_failure", Severity::Warning)
    );
    assert!(alert.body.contains("eu-west-1"));
}

#[tokio::test]
async fn truncated_feed_keeps_the_previous_pools_and_names_source_and_position() {
    let (_stack, config, deps) = setup(&file_params("us-east-1")).await;
    scrape(&deps, &config, &config.regions).await.unwrap();
    let before = stored_pools(&deps.store, "us-east-1").await.unwrap();

    let truncated =
        std::env::temp_dir().join(format!("advisor-truncated-{}.json", std::process::id()));
    let full = std::fs::read(data("spot-advisor-data.json")).unwrap();
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    let broken = Config {
        advisor: Source::File(truncated.display().to_string()),
        ..config
    };
    let run = scrape(&deps, &broken, &broken.regions).await.unwrap();
    std::fs::remove_file(&truncated).unwrap();

    let error = run.error.unwrap();
    assert!(
        error.contains("advisor-truncated") && error.contains("line 1, column"),
        "{error}"
    );
    assert_eq!(run.written, 0);
    assert_eq!(
        stored_pools(&deps.store, "us-east-1").await.unwrap(),
        before
    );
}

#[test]
fn pools_are_indexed_by_region() {
    let pool = Pool {
        key: PoolKey {
            region: "us-east-1".into(),
            zone: "use1-az1".into(),
            instance_type: "m5.large".into(),
        },
        spot_price_hr: 0.04,
        spot_price_avg_30d: 0.04,
        spot_price_volatility: 0.0,
        on_demand_price_hr: None,
        interruption_band: None,
        advisor_savings_pct: None,
        vcpus: 2,
        memory_mib: 8192,
        gpus: 0,
        max_pods: 29,
        arch: spotwise_core::domain::Arch::X86_64,
        updated_at: OffsetDateTime::UNIX_EPOCH,
    };
    assert_eq!(
        keys::region_pools_index(&pool.key).gsi1pk,
        "POOLS#us-east-1"
    );
}
