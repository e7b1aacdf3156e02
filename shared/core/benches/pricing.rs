//! Feed normalisation throughput, in MB of JSON per second, on the real feeds the project ships
//! and on a synthetic GetProducts stream of real-shaped price items.
//!
//!     cargo bench -p spotwise-core --bench pricing

use std::hint::black_box;
use std::time::Instant;

use spotwise_core::pricing::{advisor, catalogue, ondemand, spot};

fn measure(name: &str, bytes: &[u8], mut parse: impl FnMut(&[u8]) -> usize) {
    let items = parse(bytes);
    let mut runs = 0u32;
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < 3.0 || runs < 5 {
        black_box(parse(black_box(bytes)));
        runs += 1;
    }
    let seconds = started.elapsed().as_secs_f64() / f64::from(runs);
    println!(
        "{name:<34} {:>8.1} KB  {:>7} items  {:>8.2} ms/run  {:>7.1} MB/s",
        bytes.len() as f64 / 1e3,
        items,
        seconds * 1e3,
        bytes.len() as f64 / 1e6 / seconds
    );
}

/// A GetProducts response with `n` real-shaped items (the m5.large item, renamed per type).
fn synthetic_get_products(n: usize) -> Vec<u8> {
    let sample: serde_json::Value = serde_json::from_str(include_str!(
        "../tests/data/pricing-getproducts-response-m5.large-us-east-1.json"
    ))
    .unwrap_or_default();
    let item = sample["PriceList"][0].as_str().unwrap_or_default();
    let list: Vec<String> = (0..n)
        .map(|i| item.replace("m5.large", &format!("x{i}.large")))
        .collect();
    serde_json::to_vec(&serde_json::json!({"FormatVersion": "aws_v1", "PriceList": list}))
        .unwrap_or_default()
}

fn main() {
    let fail = |e: spotwise_core::pricing::FeedError| -> usize { panic!("{e}") };
    measure(
        "spot advisor feed",
        include_bytes!("../../../data/spot-advisor-data.json"),
        |b| match advisor::Advisor::parse(b, "advisor") {
            Ok(a) => a.entries.len(),
            Err(e) => panic!("{e}"),
        },
    );
    measure(
        "spot.js prices",
        include_bytes!("../../../data/spot-prices-spotjs.json"),
        |b| spot::parse_spotjs(b, "spot.js").map_or_else(fail, |p| p.len()),
    );
    measure(
        "on-demand price table",
        include_bytes!("../../../data/on-demand-prices.json"),
        |b| ondemand::parse_price_table(b, "table").map_or_else(fail, |p| p.len()),
    );
    measure(
        "instance catalogue",
        include_bytes!("../../../data/ec2-instance-types.json"),
        |b| catalogue::parse_catalogue_file(b, "catalogue").map_or_else(fail, |c| c.len()),
    );
    measure(
        "spot price history (250 records)",
        include_bytes!("../tests/data/describe-spot-price-history-m5.large-us-east-1.json"),
        |b| spot::parse_history(b, "history").map_or_else(fail, |p| p.len()),
    );
    let stream = synthetic_get_products(5_000);
    measure("GetProducts, 5,000 items", &stream, |b| {
        ondemand::parse_get_products(b, "GetProducts").map_or_else(fail, |(p, _)| p.len())
    });
}
