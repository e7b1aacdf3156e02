//! Calendar evaluation cost: `cargo bench -p spotwise-schedule --bench calendar`. The
//! scheduler evaluates every cluster's matrix and every due cron expression each minute, so
//! these bound its CPU time per cluster.

use std::hint::black_box;
use std::time::{Duration, Instant};

use spotwise_schedule::{Cron, Hibernation, WeekMatrix, Zone};
use time::OffsetDateTime;
use time::macros::datetime;

fn measure(name: &str, iterations: u32, mut run: impl FnMut()) {
    let mut samples: Vec<Duration> = (0..15)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..iterations {
                run();
            }
            started.elapsed() / iterations
        })
        .collect();
    samples.sort();
    println!(
        "{name:<44} median {:>10.2?}  worst {:>10.2?}",
        samples[samples.len() / 2],
        samples[samples.len() - 1]
    );
}

fn main() {
    let from: OffsetDateTime = datetime!(2026-11-25 10:07 UTC);
    let berlin = Hibernation {
        zone: Zone::new("Europe/Berlin").unwrap_or_else(|_| Zone::utc()),
        matrix: WeekMatrix::office_hours(8, 20),
    };
    measure("hibernation: desired state at one instant", 20_000, || {
        black_box(berlin.desired(black_box(from), None));
    });
    measure("hibernation: 7-day transition preview", 50, || {
        black_box(berlin.transitions(from, from + time::Duration::days(7), None));
    });
    let zone = Zone::new("America/New_York").unwrap_or_else(|_| Zone::utc());
    for expression in ["*/5 * * * *", "0 9 * * MON-FRI", "0 0 1 1 *"] {
        let Ok(cron) = Cron::parse(expression) else {
            continue;
        };
        measure(&format!("cron: next run of {expression:?}"), 2_000, || {
            black_box(cron.next_after(&zone, black_box(from)));
        });
    }
    measure("cron: parse and validate \"0 9 * * MON-FRI\"", 200, || {
        black_box(Cron::parse(black_box("0 9 * * MON-FRI")).ok());
    });
}
