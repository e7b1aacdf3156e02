//! Rollouts on the simulated cloud and cluster, beyond the happy path of the whole flow: spot
//! without capacity, a tick that dies between any two steps, a cancel, a rollback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use serde_json::{Value, json};
use spotwise_core::action::ActionRecord;
use spotwise_flow::{Report, Rig, setup};
use spotwise_optimizer::rollout::{self as plan, Rollout};
use spotwise_store::{Query, keys};
use spotwise_testkit::LocalStack;
use time::{Duration, OffsetDateTime};

const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

async fn approved(stack: &LocalStack) -> Rig {
    let mut report = Report::default();
    let rig = setup(stack, &mut report).await.unwrap();
    rig.approve().await.unwrap();
    rig
}

fn later(minutes: i64) -> impl Fn(usize) -> OffsetDateTime {
    move |_| OffsetDateTime::now_utc() + Duration::minutes(minutes)
}

fn groups(rollout: &Value) -> &Vec<Value> {
    rollout["groups"].as_array().unwrap()
}

fn nodegroups(rig: &Rig) -> Vec<String> {
    let eks = aws_sdk_eks::Client::new(&rig.customer);
    let mut names = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(async {
            eks.list_nodegroups()
                .cluster_name("prod")
                .send()
                .await
                .unwrap()
                .nodegroups()
                .to_vec()
        })
    });
    names.sort();
    names
}

fn customer_groups() -> Vec<String> {
    let mut names: Vec<String> = spotwise_flow::PROD
        .iter()
        .map(|g| g.nodegroup.to_owned())
        .collect();
    names.sort();
    names
}

fn unschedulable(rig: &Rig) -> Vec<String> {
    rig.fake
        .state()
        .nodes
        .iter()
        .filter(|(_, n)| n["spec"]["unschedulable"] == true)
        .map(|(name, _)| name.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_without_capacity_falls_back_to_on_demand_and_returns_to_spot() {
    let stack = LocalStack::start();
    let mut rig = approved(&stack).await;
    let rollout = rig.api.get(&rig.rollout_path()).await.unwrap();
    let spot_types: Vec<String> = groups(&rollout)
        .iter()
        .filter(|g| g["capacity_type"] == "spot")
        .flat_map(|g| g["instance_types"].as_array().unwrap().clone())
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    assert!(!spot_types.is_empty(), "{rollout:#}");
    for instance_type in &spot_types {
        for zone in ZONES {
            rig.cloud
                .no_spot_capacity
                .insert((instance_type.clone(), zone.to_owned()));
        }
    }

    // Nothing launches; within the deadline the rollout waits.
    let waiting = rig.round(OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!(waiting["status"], "provisioning", "{waiting:#}");
    assert!(waiting["reason"].as_str().unwrap().contains("waiting for"));

    // Past it, on-demand stands in for the shortfall and the rollout completes.
    let done = rig.drive(30, later(11)).await.unwrap();
    assert_eq!(done["status"], "completed", "{done:#}");
    assert!(
        done["reason"].as_str().unwrap().contains("on-demand"),
        "{done:#}"
    );
    let fallbacks: Vec<&Value> = groups(&done)
        .iter()
        .filter(|g| g["fallback_for"].is_string())
        .collect();
    assert!(!fallbacks.is_empty(), "{done:#}");
    let events = done["events"].to_string();
    assert!(events.contains("stands in"), "{events}");
    assert_eq!(done["realised"]["spot_nodes"], 0, "{done:#}");
    assert_eq!(done["realised"]["pods_pending"], 0);
    assert!(done["spot_retry_at"].is_string());
    assert!(rig.fake.state().pdb_violations.is_empty());

    // Spot is back; the retry comes due and moves the workloads back to spot.
    rig.cloud.no_spot_capacity.clear();
    let key = keys::rollout(&rig.tenant, &rig.cluster, rig.revision);
    let mut item = rig
        .scheduler
        .store
        .get::<Rollout>(&key)
        .await
        .unwrap()
        .unwrap();
    item.body.spot_retry_at = Some(OffsetDateTime::now_utc() - Duration::seconds(1));
    rig.scheduler
        .store
        .update_versioned(&spotwise_store::rollouts::item(item.body, item.version))
        .await
        .unwrap();
    let back = rig.drive(30, later(12)).await.unwrap();
    assert_eq!(back["status"], "completed", "{back:#}");
    assert_eq!(
        back["realised"]["spot_nodes"], back["planned"]["spot_nodes"],
        "{back:#}"
    );
    assert!(back["spot_retry_at"].is_null(), "{back:#}");
    assert!(
        groups(&back)
            .iter()
            .filter(|g| g["fallback_for"].is_string())
            .all(|g| g["deleted"] == true),
        "{back:#}"
    );
    assert!(rig.fake.state().pending().is_empty());
    assert!(rig.fake.state().pdb_violations.is_empty());
    let mut expected = customer_groups();
    expected.extend(
        groups(&back)
            .iter()
            .filter(|g| g["deleted"] == false)
            .map(|g| g["name"].as_str().unwrap().to_owned()),
    );
    // The customer groups the plan emptied stay, at zero.
    let mut present = nodegroups(&rig);
    present.retain(|g| expected.contains(g));
    expected.sort();
    assert_eq!(present, expected);
}

/// Every step is first taken by a tick that dies before storing what it did; the next tick
/// takes it again. Nothing is created or sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_dying_between_any_two_steps_is_finished_by_the_next() {
    let stack = LocalStack::start();
    let mut rig = approved(&stack).await;
    let key = keys::rollout(&rig.tenant, &rig.cluster, rig.revision);
    let mut crashed = Vec::new();
    let mut rollout = Value::Null;
    let store = &rig.scheduler.store;
    for _ in 0..30 {
        let now = OffsetDateTime::now_utc();
        rig.cloud.reconcile().await.unwrap();
        rig.upload_snapshot(now).await.unwrap();
        loop {
            let mut item = store.get::<Rollout>(&key).await.unwrap().unwrap();
            let mut target =
                scheduler::rollout::Target::new(&rig.scheduler, &rig.tenant, &rig.cluster, now)
                    .await
                    .unwrap();
            let actions = scheduler::rollout::action_statuses(&rig.scheduler, &item.body)
                .await
                .unwrap();
            let step = plan::next_step(&item.body, &target.observed(actions.clone()), now);
            if matches!(step, plan::Step::Wait(_)) {
                break;
            }
            // The dying tick: the step taken, its record never stored.
            let mut lost = item.body.clone();
            scheduler::rollout::take(&rig.scheduler, &mut target, &mut lost, &step, now)
                .await
                .unwrap();
            crashed.push(format!("{step:?}"));
            // The next tick, from the stored record.
            let actions = scheduler::rollout::action_statuses(&rig.scheduler, &item.body)
                .await
                .unwrap();
            let again = plan::next_step(&item.body, &target.observed(actions), now);
            scheduler::rollout::take(&rig.scheduler, &mut target, &mut item.body, &again, now)
                .await
                .unwrap();
            store
                .update_versioned(&spotwise_store::rollouts::item(item.body, item.version))
                .await
                .unwrap();
        }
        rig.execute().await.unwrap();
        rollout = rig.api.get(&rig.rollout_path()).await.unwrap();
        if rollout["status"] == "completed" {
            break;
        }
    }
    assert_eq!(rollout["status"], "completed", "{rollout:#}");
    for kind in [
        "CreateGroup",
        "Cordon",
        "Drain(",
        "Drained",
        "EmptyGroup",
        "Verify",
    ] {
        assert!(
            crashed.iter().any(|s| s.starts_with(kind)),
            "no crash after {kind}: {crashed:?}"
        );
    }
    // One node group per planned group, one instance per planned node.
    let created: Vec<String> = groups(&rollout)
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_owned())
        .collect();
    let present = nodegroups(&rig);
    for name in &created {
        assert_eq!(present.iter().filter(|g| *g == name).count(), 1);
    }
    let planned_new: u64 = groups(&rollout)
        .iter()
        .map(|g| g["desired"].as_u64().unwrap())
        .sum();
    assert_eq!(u64::from(rig.cloud.launched), planned_new);
    // One cordon and one drain per replaced node.
    let records = rig
        .scheduler
        .store
        .query_all::<ActionRecord>(
            &Query::partition(keys::tenant_partition(&rig.tenant)).prefix(keys::prefix::ACTION),
        )
        .await
        .unwrap();
    let mut sent: BTreeMap<String, usize> = BTreeMap::new();
    for record in &records {
        *sent
            .entry(format!(
                "{} {}",
                record.body.action.spec.kind(),
                record.body.action.target_name()
            ))
            .or_default() += 1;
    }
    let replaced = rollout["replaced"].as_array().unwrap().len();
    assert_eq!(sent.len(), replaced * 2, "{sent:?}");
    assert!(sent.values().all(|n| *n == 1), "{sent:?}");
    assert_eq!(rollout["realised"]["pods_pending"], 0);
    assert!(rig.fake.state().pdb_violations.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_at_the_next_safe_point() {
    let stack = LocalStack::start();
    let mut rig = approved(&stack).await;
    let mut rollout = Value::Null;
    for _ in 0..20 {
        rollout = rig.round(OffsetDateTime::now_utc()).await.unwrap();
        let drained = rollout["replaced"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["drained"] == true)
            .count();
        if drained >= 1 {
            break;
        }
    }
    assert_eq!(rollout["status"], "migrating", "{rollout:#}");
    let cancelled = rig
        .api
        .post(&format!("{}/cancel", rig.rollout_path()), json!({}))
        .await
        .unwrap();
    assert!(cancelled["cancel_requested_by"].is_string());
    let end = rig.drive(10, later(0)).await.unwrap();
    assert_eq!(end["status"], "cancelled", "{end:#}");
    assert!(
        end["reason"].as_str().unwrap().contains("cancelled by"),
        "{end:#}"
    );
    let replaced = end["replaced"].as_array().unwrap();
    let drained: Vec<&str> = replaced
        .iter()
        .filter(|r| r["drained"] == true)
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        !drained.is_empty() && drained.len() < replaced.len(),
        "{end:#}"
    );
    // The nodes not yet drained take pods again; the drained ones are gone.
    rig.cloud.reconcile().await.unwrap();
    let remaining = rig.fake.state().nodes.keys().cloned().collect::<Vec<_>>();
    for node in &drained {
        assert!(
            !remaining.contains(&(*node).to_owned()),
            "{node} left running"
        );
    }
    assert!(unschedulable(&rig).is_empty(), "{:?}", unschedulable(&rig));
    assert!(rig.fake.state().pending().is_empty());
    assert!(rig.fake.state().pdb_violations.is_empty());
    // The API refuses a second cancel of a finished rollout.
    let (status, _) = rig
        .api
        .send(
            reqwest::Method::POST,
            &format!("{}/cancel", rig.rollout_path()),
            Some(json!({})),
        )
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::CONFLICT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_that_never_comes_rolls_back_what_was_created() {
    let stack = LocalStack::start();
    let mut rig = approved(&stack).await;
    let before: Vec<String> = {
        let mut nodes: Vec<String> = rig.fake.state().nodes.keys().cloned().collect();
        nodes.sort();
        nodes
    };
    let rollout = rig.api.get(&rig.rollout_path()).await.unwrap();
    for group in groups(&rollout) {
        for instance_type in group["instance_types"].as_array().unwrap() {
            for zone in ZONES {
                let pool = (instance_type.as_str().unwrap().to_owned(), zone.to_owned());
                rig.cloud.no_spot_capacity.insert(pool.clone());
                rig.cloud.no_on_demand_capacity.insert(pool);
            }
        }
    }
    rig.round(OffsetDateTime::now_utc()).await.unwrap();
    let fell_back = rig.drive(3, later(11)).await.unwrap();
    assert_eq!(fell_back["status"], "provisioning", "{fell_back:#}");
    let end = rig.drive(10, later(31)).await.unwrap();
    assert_eq!(end["status"], "rolled_back", "{end:#}");
    assert!(
        end["reason"]
            .as_str()
            .unwrap()
            .contains("capacity not Ready"),
        "{end:#}"
    );
    assert!(groups(&end).iter().all(|g| g["deleted"] == true), "{end:#}");
    assert_eq!(nodegroups(&rig), customer_groups());
    let mut after: Vec<String> = rig.fake.state().nodes.keys().cloned().collect();
    after.sort();
    assert_eq!(after, before, "the cluster is as it was");
    assert!(unschedulable(&rig).is_empty());
}
