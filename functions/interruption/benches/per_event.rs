//! Handler work per event, excluding AWS calls: parse the SQS body, apply it to the instance's
//! signal record (and encode the record as it is stored), compute the deadline, build the
//! action, sign it and encode it for the queue.
//!
//!     cargo bench -p interruption --bench per_event

use std::hint::black_box;
use std::time::Instant;

use interruption::{Decision, InstanceSignals, Wanted, build_action};
use spotwise_core::action::ActionKind;
use spotwise_core::interruption::{Parsed, action_deadline, parse};
use spotwise_core::{ClusterId, TenantId};
use time::OffsetDateTime;

const SAMPLES: [(&str, &str); 4] = [
    (
        "spot warning",
        include_str!("../../../events/eventbridge/spot-interruption-warning.json"),
    ),
    (
        "health scheduled change",
        include_str!("../../../events/eventbridge/scheduled-change.json"),
    ),
    (
        "asg lifecycle",
        include_str!("../../../events/eventbridge/asg-lifecycle-termination.json"),
    ),
    (
        "rebalance",
        include_str!("../../../events/eventbridge/rebalance-recommendation.json"),
    ),
];

/// A sample as a linked account forwards it (the published ones carry placeholder accounts).
fn forwarded(sample: &str) -> String {
    let mut event: serde_json::Value =
        serde_json::from_str(sample).unwrap_or_else(|e| panic!("{e}"));
    event["account"] = serde_json::json!("111122223333");
    event.to_string()
}

fn main() {
    let cluster = ClusterId::new("c1").unwrap_or_else(|e| panic!("{e}"));
    let tenant = TenantId::new("t1").unwrap_or_else(|e| panic!("{e}"));
    let secret = [7u8; 32];
    for (name, sample) in SAMPLES {
        let body = forwarded(sample);
        let work = || {
            let now = OffsetDateTime::now_utc();
            let Ok(Parsed::Signal(signal)) = parse(black_box(&body)) else {
                panic!("{name} did not parse to a signal")
            };
            let instance_id = &signal.instance_ids[0];
            let wanted = Wanted {
                kind: ActionKind::Drain,
                not_after: action_deadline(&signal, now),
                lifecycle_hook: signal.lifecycle.as_ref().map(|l| l.hook_for(instance_id)),
            };
            let mut record = InstanceSignals::new(
                tenant.clone(),
                cluster.clone(),
                "ip-10-0-1-17.ec2.internal".into(),
            );
            let Decision::Issue { wanted, .. } = record.apply(&signal, Some(wanted), now) else {
                panic!("{name} did not issue")
            };
            record.issued("01jd0000000000000000000000".into(), &wanted, &signal, now);
            black_box(serde_json::to_string(&record).unwrap_or_default());
            let Some(in_flight) = &record.action else {
                panic!("{name}: nothing in flight")
            };
            let action = build_action(
                &signal,
                &cluster,
                "ip-10-0-1-17.ec2.internal",
                instance_id,
                in_flight,
                now,
            )
            .sign(&secret);
            black_box(serde_json::to_string(&action).unwrap_or_default())
        };
        for _ in 0..2_000 {
            work();
        }
        let mut samples: Vec<f64> = (0..20_000)
            .map(|_| {
                let start = Instant::now();
                work();
                start.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        samples.sort_by(f64::total_cmp);
        let pct = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
        println!(
            "{name:<24} per event: p50 {:>6.1} us  p99 {:>6.1} us  max {:>7.1} us  ({} runs)",
            pct(0.50),
            pct(0.99),
            pct(1.0),
            samples.len()
        );
    }
}
