//! Fetching feeds: files, HTTPS URLs, and the AWS APIs (EC2, Pricing), each paginated to the end.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ec2::types::Filter as Ec2Filter;
use aws_sdk_pricing::types::{Filter as PricingFilter, FilterType};
use spotwise_aws::AwsFailure;
use spotwise_core::domain::InstanceType;
use spotwise_core::pricing::catalogue::TypeInfo;
use spotwise_core::pricing::ondemand::{get_products_filters, parse_price_item};
use spotwise_core::pricing::pools::Zone;
use spotwise_core::pricing::spot::{PricePoint, is_linux};
use time::OffsetDateTime;

use crate::ScrapeError;

/// Where one feed comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The AWS API of the region being scraped.
    Aws,
    Url(String),
    File(String),
}

impl Source {
    /// `aws`, an `https://` URL (plain `http://` only in dev mode), `file://PATH` or a path.
    pub fn parse(value: &str, dev_mode: bool) -> Result<Self, String> {
        if value == "aws" {
            Ok(Source::Aws)
        } else if value.starts_with("https://") || (dev_mode && value.starts_with("http://")) {
            Ok(Source::Url(value.to_owned()))
        } else if value.starts_with("http://") {
            Err("plain http:// sources are only allowed with SPOTWISE_DEV_MODE".into())
        } else if let Some(path) = value.strip_prefix("file://") {
            Ok(Source::File(path.to_owned()))
        } else if value.contains("://") {
            Err("expected `aws`, an https:// URL or a file path".into())
        } else {
            Ok(Source::File(value.to_owned()))
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Source::Aws => "aws",
            Source::Url(s) | Source::File(s) => s,
        }
    }
}

/// The public feeds are a few MB; refuse anything absurdly larger.
const MAX_FEED_BYTES: usize = 256 * 1024 * 1024;

/// Reads a file or URL source.
pub async fn fetch(http: &reqwest::Client, source: &Source) -> Result<Vec<u8>, ScrapeError> {
    let fail = |reason: String, retryable: bool| ScrapeError::Fetch {
        source_name: source.name().to_owned(),
        reason,
        retryable,
    };
    match source {
        Source::Aws => Err(fail("this feed has no AWS API source".into(), false)),
        Source::File(path) => tokio::fs::read(path)
            .await
            .map_err(|e| fail(e.to_string(), false)),
        Source::Url(url) => {
            let response = http
                .get(url)
                .send()
                .await
                .map_err(|e| fail(e.to_string(), true))?;
            let status = response.status();
            if !status.is_success() {
                return Err(fail(
                    format!("HTTP {status}"),
                    status.is_server_error() || status.as_u16() == 429,
                ));
            }
            let body = response
                .bytes()
                .await
                .map_err(|e| fail(e.to_string(), true))?;
            if body.len() > MAX_FEED_BYTES {
                return Err(fail(
                    format!(
                        "{} bytes is over the {MAX_FEED_BYTES}-byte limit",
                        body.len()
                    ),
                    false,
                ));
            }
            Ok(body.to_vec())
        }
    }
}

pub async fn zones(ec2: &aws_sdk_ec2::Client) -> Result<Vec<Zone>, AwsFailure> {
    let out = ec2
        .describe_availability_zones()
        .filters(
            Ec2Filter::builder()
                .name("zone-type")
                .values("availability-zone")
                .build(),
        )
        .send()
        .await
        .map_err(|e| AwsFailure::from_sdk("ec2:DescribeAvailabilityZones", e))?;
    Ok(out
        .availability_zones()
        .iter()
        .filter_map(|z| {
            Some(Zone {
                name: z.zone_name()?.to_owned(),
                id: z.zone_id()?.to_owned(),
            })
        })
        .collect())
}

pub async fn catalogue(ec2: &aws_sdk_ec2::Client) -> Result<Vec<InstanceType>, AwsFailure> {
    let mut pages = ec2
        .describe_instance_types()
        .max_results(100)
        .into_paginator()
        .send();
    let mut types = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsFailure::from_sdk("ec2:DescribeInstanceTypes", e))?;
        for t in page.instance_types() {
            let info = TypeInfo {
                name: t
                    .instance_type()
                    .map(|n| n.as_str().to_owned())
                    .unwrap_or_default(),
                vcpus: t
                    .v_cpu_info()
                    .and_then(|v| v.default_v_cpus())
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or(0),
                memory_mib: t
                    .memory_info()
                    .and_then(|m| m.size_in_mib())
                    .and_then(|m| u64::try_from(m).ok())
                    .unwrap_or(0),
                architectures: t
                    .processor_info()
                    .map(|p| {
                        p.supported_architectures()
                            .iter()
                            .map(|a| a.as_str().to_owned())
                            .collect()
                    })
                    .unwrap_or_default(),
                gpus: t
                    .gpu_info()
                    .map(|g| {
                        g.gpus()
                            .iter()
                            .filter_map(|d| d.count())
                            .filter_map(|c| u32::try_from(c).ok())
                            .sum()
                    })
                    .unwrap_or(0),
                enis: t
                    .network_info()
                    .and_then(|n| n.maximum_network_interfaces())
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or(0),
                ipv4_per_eni: t
                    .network_info()
                    .and_then(|n| n.ipv4_addresses_per_interface())
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or(0),
                spot_capable: t
                    .supported_usage_classes()
                    .iter()
                    .any(|c| c.as_str() == "spot"),
            };
            if info.spot_capable && info.vcpus > 0 && info.memory_mib > 0 {
                types.extend(info.to_instance_type());
            }
        }
    }
    Ok(types)
}

/// Linux spot price changes over the window, every page.
pub async fn spot_history(
    ec2: &aws_sdk_ec2::Client,
    since: OffsetDateTime,
) -> Result<Vec<PricePoint>, AwsFailure> {
    let mut pages = ec2
        .describe_spot_price_history()
        .start_time(aws_smithy_types::DateTime::from_secs(
            since.unix_timestamp(),
        ))
        .product_descriptions("Linux/UNIX")
        .product_descriptions("Linux/UNIX (Amazon VPC)")
        .max_results(1000)
        .into_paginator()
        .send();
    let mut points = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsFailure::from_sdk("ec2:DescribeSpotPriceHistory", e))?;
        for p in page.spot_price_history() {
            let linux = p
                .product_description()
                .is_some_and(|d| is_linux(d.as_str()));
            let price = p.spot_price().and_then(|s| s.parse::<f64>().ok());
            let at = p
                .timestamp()
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t.secs()).ok());
            if let (true, Some(zone), Some(instance_type), Some(price), Some(at)) =
                (linux, p.availability_zone(), p.instance_type(), price, at)
            {
                points.push(PricePoint {
                    zone: zone.to_owned(),
                    instance_type: instance_type.as_str().to_owned(),
                    price,
                    at,
                });
            }
        }
    }
    Ok(points)
}

/// On-demand Linux prices for `region` from the Pricing API, every page, keyed like the price
/// table: (region, instance type).
pub async fn on_demand(
    pricing: &aws_sdk_pricing::Client,
    region: &str,
) -> Result<BTreeMap<(String, String), f64>, ScrapeError> {
    let mut request = pricing
        .get_products()
        .service_code("AmazonEC2")
        .format_version("aws_v1")
        .max_results(100);
    for (field, value) in get_products_filters(region) {
        let filter = PricingFilter::builder()
            .r#type(FilterType::TermMatch)
            .field(field)
            .value(value)
            .build()
            .map_err(|e| ScrapeError::Fetch {
                source_name: "pricing:GetProducts".into(),
                reason: e.to_string(),
                retryable: false,
            })?;
        request = request.filters(filter);
    }
    let mut pages = request.into_paginator().send();
    let mut prices = BTreeMap::new();
    let source = format!("pricing:GetProducts {region}");
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| AwsFailure::from_sdk("pricing:GetProducts", e))?;
        for item in page.price_list() {
            if let Some(price) = parse_price_item(item, &source)? {
                // The regionCode filter already selected the region; older items lack the attribute.
                if price.region.as_deref().is_none_or(|r| r == region) {
                    prices.insert((region.to_owned(), price.instance_type), price.price_hr);
                }
            }
        }
    }
    Ok(prices)
}

/// Timeout for feed downloads.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
