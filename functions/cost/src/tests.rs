use std::str::FromStr;

use spotwise_core::domain::Pool;
use spotwise_core::snapshot::Snapshot;
use spotwise_testkit::{LocalStack, fixture, records};
use time::macros::datetime;

use super::*;

struct Setup {
    stack: LocalStack,
    deps: Deps,
    tenant: TenantId,
    cluster: ClusterId,
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

async fn setup() -> Setup {
    let stack = LocalStack::start();
    let config = Config::from_env(&Env::from_map(stack.function_env("CostFunction"))).unwrap();
    let deps = Deps::new(&stack.sdk_config().await, &config);
    let tenant = TenantId::new("t1").unwrap();
    // The cluster the sample events name.
    let cluster = ClusterId::new("111122223333.us-east-1.prod-us-east-1").unwrap();
    let record = records::cluster(&tenant, &cluster, None);
    deps.store
        .put(
            &Item::new(keys::cluster(&tenant, &cluster), record),
            PutCondition::IfAbsent,
        )
        .await
        .unwrap();
    let mut pools = Vec::new();
    for zone in ["use1-az1", "use1-az2"] {
        pools.push(records::pool(zone, "m5.large", 2, 8192, 0.035, 0.096, 1));
        pools.push(records::pool(zone, "m5.xlarge", 4, 16384, 0.07, 0.192, 1));
        pools.push(records::pool(zone, "m5.2xlarge", 8, 32768, 0.14, 0.384, 1));
    }
    let items: Vec<Item<&Pool>> = pools.iter().map(snapshots::current_pool_item).collect();
    deps.store.batch_put(&items).await.unwrap();
    Setup {
        stack,
        deps,
        tenant,
        cluster,
    }
}

fn sample_snapshot() -> Snapshot {
    spotwise_core::snapshot::parse_list(
        fixture("events/optimizer/kubectl-snapshot.json").as_bytes(),
    )
    .unwrap()
}

async fn upload(s: &Setup, at: OffsetDateTime) {
    snapshots::put(
        &s.deps.store,
        &s.deps.snapshots,
        &s.tenant,
        &s.cluster,
        &sample_snapshot(),
        at,
    )
    .await
    .unwrap();
}

/// Uploads the sample snapshot as taken at `at` and samples it five minutes later.
async fn sample_at(s: &Setup, at: OffsetDateTime) -> Outcome {
    upload(s, at).await;
    sample(
        &s.deps,
        &s.tenant,
        &s.cluster,
        at + time::Duration::minutes(5),
    )
    .await
    .unwrap()
}

async fn stored(s: &Setup, g: CostGranularity, dimension: &str, p: &str) -> CostPeriod {
    period(&s.deps, &s.tenant, &s.cluster, g, dimension, p)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no {dimension} item for {p}"))
}

/// The sample cluster's nodes at the test pools' prices: two on-demand m5.xlarge, one
/// on-demand m5.2xlarge and one spot m5.large.
const CLUSTER_HOURLY: &str = "0.803";

#[tokio::test]
async fn hourly_samples_roll_up_into_days_and_months_exactly() {
    let s = setup().await;
    for (at, hour) in [
        (datetime!(2026-11-22 10:02 UTC), "2026-11-22T10"),
        (datetime!(2026-11-22 11:59 UTC), "2026-11-22T11"),
        (datetime!(2026-11-23 00:30 +01:00), "2026-11-22T23"),
        // A second snapshot of 10:00 to 11:00 replaces the first.
        (datetime!(2026-11-22 10:40 UTC), "2026-11-22T10"),
    ] {
        let outcome = sample_at(&s, at).await;
        assert!(
            matches!(&outcome, Outcome::Sampled { hour: h, cost, pods: 24, unpriced_nodes: 0 } if *cost == d(CLUSTER_HOURLY) && h == hour),
            "{outcome:?}"
        );
        if at == datetime!(2026-11-22 10:02 UTC) {
            let day = period(
                &s.deps,
                &s.tenant,
                &s.cluster,
                CostGranularity::Day,
                SUMMARY,
                "2026-11-22",
            )
            .await
            .unwrap();
            assert!(
                day.is_none(),
                "the day is rolled up every sixth hour, not every hour"
            );
        }
    }
    let day = stored(&s, CostGranularity::Day, SUMMARY, "2026-11-22").await;
    assert!(day.complete, "rolled up with its last hour");
    let day = day.summary.unwrap();
    assert_eq!(day.samples, 3, "hour 10 was sampled twice and counted once");
    assert_eq!(day.total.cost, d(CLUSTER_HOURLY) * Decimal::from(3));
    let month = stored(&s, CostGranularity::Month, SUMMARY, "2026-11")
        .await
        .summary
        .unwrap();
    assert_eq!(month.samples, 3);
    let forecast = stored(&s, CostGranularity::Month, SUMMARY, "2026-11")
        .await
        .forecast
        .unwrap();
    assert_eq!(forecast.days_observed, 1);
    // One day of three hours: a flat line over the eight days left.
    assert_eq!(forecast.to_date, d(CLUSTER_HOURLY) * Decimal::from(3));
    assert_eq!(forecast.month_total, d("21.68"));
    assert_eq!(month.total.cost, d(CLUSTER_HOURLY) * Decimal::from(3));
    assert_eq!(
        month.savings.spot,
        (d("0.096") - d("0.035")) * Decimal::from(3)
    );
    assert_eq!(
        month.savings.consolidation,
        Decimal::ZERO,
        "nothing changed since the baseline"
    );

    // Every dimension's month adds up to the month's cost; pods are costed by the day.
    let pods = stored(&s, CostGranularity::Day, "pod", "2026-11-22")
        .await
        .table
        .unwrap();
    assert_eq!(pods.total().cost + day.total.idle, day.total.cost);
    assert!(
        period(
            &s.deps,
            &s.tenant,
            &s.cluster,
            CostGranularity::Month,
            "pod",
            "2026-11"
        )
        .await
        .unwrap()
        .is_none()
    );
    for dimension in Dimension::ALL.into_iter().filter(|d| *d != Dimension::Pod) {
        let table = stored(&s, CostGranularity::Month, dimension.as_str(), "2026-11")
            .await
            .table
            .unwrap();
        let sum = table.total().cost;
        match dimension {
            Dimension::Node => assert_eq!(sum, month.total.cost),
            Dimension::Label => {}
            _ => assert_eq!(sum + month.total.idle, month.total.cost, "{dimension:?}"),
        }
    }
    let namespaces = stored(&s, CostGranularity::Month, "namespace", "2026-11")
        .await
        .table
        .unwrap();
    assert_eq!(namespaces.ranked().first().map(|(k, _)| *k), Some("shop"));
    let workloads = stored(&s, CostGranularity::Day, "workload", "2026-11-22")
        .await
        .table
        .unwrap();
    assert!(workloads.lines.contains_key("shop/Deployment/web"));
    assert!(
        workloads
            .lines
            .contains_key("kube-system/DaemonSet/aws-node")
    );
}

#[tokio::test]
async fn a_day_whose_last_hour_was_missed_is_completed_the_next_morning() {
    let s = setup().await;
    sample_at(&s, datetime!(2026-11-24 12:10 UTC)).await;
    sample_at(&s, datetime!(2026-11-24 17:10 UTC)).await;
    let day = stored(&s, CostGranularity::Day, SUMMARY, "2026-11-24").await;
    assert!(!day.complete, "rolled up at 17:00, still in progress");
    assert_eq!(day.summary.unwrap().samples, 2);
    let month = period(
        &s.deps,
        &s.tenant,
        &s.cluster,
        CostGranularity::Month,
        SUMMARY,
        "2026-11",
    )
    .await
    .unwrap();
    assert!(month.is_none(), "the month waits for complete days");

    // No sample at 23:00 (the agent was offline); the first of the next morning completes it.
    sample_at(&s, datetime!(2026-11-25 02:10 UTC)).await;
    let day = stored(&s, CostGranularity::Day, SUMMARY, "2026-11-24").await;
    assert!(day.complete);
    let month = stored(&s, CostGranularity::Month, SUMMARY, "2026-11").await;
    assert_eq!(month.summary.unwrap().samples, 2);
}

#[tokio::test]
async fn hibernation_and_consolidation_savings_are_counted() {
    let s = setup().await;
    let first = datetime!(2026-11-22 10:00 UTC);
    sample_at(&s, first).await;
    // The cluster then loses its m5.2xlarge (its pods moved) and goes to sleep.
    let mut smaller = sample_snapshot();
    smaller.nodes.retain(|n| n.instance_type != "m5.2xlarge");
    for pod in smaller
        .pods
        .iter_mut()
        .chain(smaller.daemon_pods.iter_mut())
    {
        if pod.spec.node.as_deref() == Some("ip-10-0-1-12.ec2.internal") {
            pod.spec.node = Some("ip-10-0-1-10.ec2.internal".into());
        }
    }
    let later = first + time::Duration::hours(1);
    snapshots::put(
        &s.deps.store,
        &s.deps.snapshots,
        &s.tenant,
        &s.cluster,
        &smaller,
        later,
    )
    .await
    .unwrap();
    s.deps
        .store
        .put(
            &Item::new(
                keys::hibernation_state(&s.tenant, &s.cluster),
                HibernationState {
                    asleep_since: later,
                    awake_cost_hr: 1.25,
                    node_groups: vec![],
                    workloads: vec![],
                    cordoned_nodes: vec![],
                    complete: true,
                    problems: vec![],
                },
            ),
            PutCondition::Always,
        )
        .await
        .unwrap();
    sample(&s.deps, &s.tenant, &s.cluster, later).await.unwrap();
    let hour = stored(&s, CostGranularity::Hour, SUMMARY, "2026-11-22T11")
        .await
        .summary
        .unwrap();
    assert_eq!(hour.savings.hibernation, d("1.25"));
    assert_eq!(
        hour.savings.consolidation,
        d("0.384"),
        "the same workload without the m5.2xlarge, at on-demand prices"
    );
}

#[tokio::test]
async fn schedules_fan_out_one_request_per_cluster() {
    let s = setup().await;
    let now = OffsetDateTime::now_utc();
    upload(&s, now).await;
    let quiet_tenant = TenantId::new("t2").unwrap();
    let quiet = ClusterId::new("444455556666.eu-west-1.batch").unwrap();
    snapshots::put(
        &s.deps.store,
        &s.deps.snapshots,
        &quiet_tenant,
        &quiet,
        &sample_snapshot(),
        now - time::Duration::hours(3),
    )
    .await
    .unwrap();

    let event: CostEvent =
        serde_json::from_str(&fixture("events/cost/schedule-cost-sample.json")).unwrap();
    let CostResponse::FanOut(samples) = handle(&s.deps, event).await.unwrap() else {
        panic!("a schedule event is not a batch");
    };
    assert_eq!(
        (samples.clusters, samples.stale, samples.enqueued),
        (2, 1, 1),
        "the quiet cluster has no fresh snapshot to sample"
    );
    assert_eq!(samples.period, hour_period(now));
    let sent: Vec<CostRequest> = s.stack.drain(s.deps.cost_queue.url()).await;
    assert_eq!(
        sent,
        vec![CostRequest::Sample {
            tenant_id: s.tenant.clone(),
            cluster_id: s.cluster.clone(),
        }]
    );

    let reports = fan_out(
        &s.deps,
        &ScheduleTrigger {
            job: Some("savings-report".into()),
            time: None,
        },
        now,
    )
    .await
    .unwrap();
    assert_eq!(
        (reports.clusters, reports.enqueued),
        (2, 2),
        "both had data last month"
    );
    let last_month = now.date().replace_day(1).unwrap() - time::Duration::days(1);
    assert_eq!(
        reports.period,
        month_period(last_month.year(), last_month.month())
    );
    assert_eq!(
        s.stack
            .drain::<CostRequest>(s.deps.cost_queue.url())
            .await
            .len(),
        2
    );

    let unknown = ScheduleTrigger {
        job: Some("cleanup".into()),
        time: None,
    };
    let err = fan_out(&s.deps, &unknown, now).await.unwrap_err();
    assert!(err.to_string().contains("unknown scheduled job `cleanup`"));
}

#[tokio::test]
async fn monthly_report_is_stored_and_sent_once() {
    let s = setup().await;
    let now = OffsetDateTime::now_utc();
    assert_eq!(
        report(&s.deps, &s.tenant, &s.cluster, "2026-11", now)
            .await
            .unwrap(),
        Outcome::Skipped(Skipped::NoCosts {
            month: "2026-11".into()
        })
    );
    for at in [
        datetime!(2026-11-02 00:10 UTC),
        datetime!(2026-11-02 01:10 UTC),
        datetime!(2026-11-03 00:10 UTC),
    ] {
        sample_at(&s, at).await;
    }
    let event: SqsEvent =
        serde_json::from_str(&fixture("events/cost/sqs-savings-report.json")).unwrap();
    let response = handle_batch(&s.deps, event.clone()).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    // A redelivery stores the report again but does not notify twice.
    assert_eq!(
        report(&s.deps, &s.tenant, &s.cluster, "2026-11", now)
            .await
            .unwrap(),
        Outcome::Reported {
            month: "2026-11".into(),
            notified: false
        }
    );
    let sent: Vec<Notification> = s.stack.drain(s.deps.notifications.url()).await;
    assert_eq!(sent.len(), 1);
    let note = &sent[0];
    assert_eq!(note.event_type, "savings_report");
    assert_eq!(note.cluster_id.as_ref(), Some(&s.cluster));
    assert!(
        note.title.starts_with("Spotwise saved $0.18 on"),
        "{}",
        note.title
    );
    assert!(
        note.body.contains("Top namespaces: shop $"),
        "{}",
        note.body
    );
    assert!(
        note.body.contains("Measured over 3 of 720 hours"),
        "{}",
        note.body
    );

    let stored = s
        .deps
        .store
        .get::<MonthlyReport>(&keys::savings_report(&s.tenant, &s.cluster, "2026-11"))
        .await
        .unwrap()
        .unwrap()
        .body;
    assert_eq!(
        stored.cost,
        d("2.41"),
        "3 hours of {CLUSTER_HOURLY}, in cents"
    );
    assert_eq!(stored.realised_savings.spot, d("0.18"));
}

#[tokio::test]
async fn bad_requests_fail_alone_and_unknown_clusters_are_skipped() {
    let s = setup().await;
    let now = OffsetDateTime::now_utc();
    upload(&s, now).await;
    let mut event: SqsEvent =
        serde_json::from_str(&fixture("events/cost/sqs-cost-sample.json")).unwrap();
    let mut bad = event.records[0].clone();
    bad.message_id = Some("bad-month".into());
    bad.body =
        Some(r#"{"kind":"report","tenant_id":"t1","cluster_id":"c1","month":"2026-13"}"#.into());
    let mut garbled = event.records[0].clone();
    garbled.message_id = Some("garbled".into());
    garbled.body = Some(r#"{"kind":"teleport"}"#.into());
    let mut unknown = event.records[0].clone();
    unknown.message_id = Some("unknown-cluster".into());
    unknown.body = Some(r#"{"kind":"sample","tenant_id":"t1","cluster_id":"nope"}"#.into());
    event.records.extend([bad, garbled, unknown]);
    let response = handle_batch(&s.deps, event).await.unwrap();
    let mut failed: Vec<String> = response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect();
    failed.sort();
    assert_eq!(failed, vec!["bad-month", "garbled"]);
    assert_eq!(
        sample(&s.deps, &s.tenant, &ClusterId::new("nope").unwrap(), now)
            .await
            .unwrap(),
        Outcome::Skipped(Skipped::UnknownCluster)
    );
    // The valid sample event was processed.
    stored(&s, CostGranularity::Hour, SUMMARY, &hour_period(now)).await;
}

#[test]
fn periods_parse_strictly() {
    assert_eq!(parse_month("2026-11"), Some((2026, Month::November)));
    for bad in ["2026-13", "26-11", "2026-1", "2026/11"] {
        assert_eq!(parse_month(bad), None, "{bad}");
    }
    assert_eq!(
        parse_day("2026-02-28"),
        Some(datetime!(2026-02-28 0:00 UTC).date())
    );
    assert_eq!(parse_day("2026-02-30"), None);
    assert_eq!(
        hour_period(datetime!(2026-11-18 11:06:40 UTC)),
        "2026-11-18T11"
    );
}
