//! On-demand prices from the Price List Query API (GetProducts) or a shipped price table.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{FeedError, round_price};

/// GetProducts filters (all TERM_MATCH) that select Linux, shared-tenancy, on-demand capacity
/// actually in use in one region. Without capacitystatus=Used, capacity-reservation SKUs with
/// the same type and OS match too.
pub fn get_products_filters(region: &str) -> Vec<(&'static str, String)> {
    vec![
        ("regionCode", region.to_owned()),
        ("operatingSystem", "Linux".into()),
        ("tenancy", "Shared".into()),
        ("capacitystatus", "Used".into()),
        ("preInstalledSw", "NA".into()),
        ("marketoption", "OnDemand".into()),
        ("productFamily", "Compute Instance".into()),
    ]
}

/// The Pricing API answers only in a few regions; this is the closest one for `region`.
pub fn pricing_endpoint_region(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "cn-northwest-1"
    } else if region.starts_with("ap-") || region.starts_with("me-") {
        "ap-south-1"
    } else if region.starts_with("eu-") || region.starts_with("il-") || region.starts_with("af-") {
        "eu-central-1"
    } else {
        "us-east-1"
    }
}

/// One priced SKU.
#[derive(Debug, Clone, PartialEq)]
pub struct OnDemandPrice {
    pub instance_type: String,
    pub region: Option<String>,
    pub price_hr: f64,
}

/// Decodes one PriceList element (itself a JSON string). Returns `None` for SKUs the filters
/// should have excluded (reservations, Windows, dedicated, pre-installed software), so a loose
/// filter never mixes their prices in.
pub fn parse_price_item(item: &str, source: &str) -> Result<Option<OnDemandPrice>, FeedError> {
    let value: Value = serde_json::from_str(item).map_err(|e| FeedError::json(source, &e))?;
    let attrs = &value["product"]["attributes"];
    let attr = |name: &str| attrs.get(name).and_then(Value::as_str);
    let wanted = attr("operatingSystem") == Some("Linux")
        && attr("tenancy") == Some("Shared")
        && attr("capacitystatus") == Some("Used")
        && attr("preInstalledSw") == Some("NA");
    if !wanted {
        return Ok(None);
    }
    let instance_type = attr("instanceType")
        .ok_or_else(|| FeedError::new(source, "price item has no product.attributes.instanceType"))?
        .to_owned();
    let dimensions = value["terms"]["OnDemand"]
        .as_object()
        .into_iter()
        .flat_map(|terms| terms.values())
        .filter_map(|term| term["priceDimensions"].as_object())
        .flat_map(|dims| dims.values());
    let mut price = None;
    for dimension in dimensions {
        if dimension["unit"].as_str() == Some("Hrs")
            && let Some(usd) = dimension["pricePerUnit"]["USD"].as_str()
        {
            price = Some(usd.parse::<f64>().map_err(|_| {
                FeedError::new(
                    source,
                    format!("{instance_type}: pricePerUnit.USD {usd:?} is not a number"),
                )
            })?);
            break;
        }
    }
    let Some(price_hr) = price else {
        return Err(FeedError::new(
            source,
            format!("{instance_type}: no hourly OnDemand price dimension"),
        ));
    };
    Ok(Some(OnDemandPrice {
        instance_type,
        region: attr("regionCode").map(str::to_owned),
        price_hr: round_price(price_hr),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetProductsPage {
    price_list: Vec<String>,
    #[serde(default)]
    next_token: Option<String>,
}

/// Parses one GetProducts response (as the CLI prints it): priced SKUs and the next token.
pub fn parse_get_products(
    json: &[u8],
    source: &str,
) -> Result<(Vec<OnDemandPrice>, Option<String>), FeedError> {
    let page: GetProductsPage =
        serde_json::from_slice(json).map_err(|e| FeedError::json(source, &e))?;
    let mut prices = Vec::new();
    for (i, item) in page.price_list.iter().enumerate() {
        if let Some(price) = parse_price_item(item, &format!("{source} PriceList[{i}]"))? {
            prices.push(price);
        }
    }
    Ok((prices, page.next_token))
}

/// Parses a price table `{"aws": {"<region>": {"<type>": price}}, ...}` (the shipped
/// `data/on-demand-prices.json`) into prices per (region, type). Only the USD partitions.
pub fn parse_price_table(
    json: &[u8],
    source: &str,
) -> Result<BTreeMap<(String, String), f64>, FeedError> {
    let table: BTreeMap<String, Value> =
        serde_json::from_slice(json).map_err(|e| FeedError::json(source, &e))?;
    let mut prices = BTreeMap::new();
    for partition in ["aws", "aws-us-gov"] {
        let Some(regions) = table.get(partition).and_then(Value::as_object) else {
            continue;
        };
        for (region, types) in regions {
            for (instance_type, price) in types.as_object().into_iter().flatten() {
                let price = price.as_f64().ok_or_else(|| {
                    FeedError::new(
                        source,
                        format!("{partition}.{region}.{instance_type} is not a number"),
                    )
                })?;
                prices.insert((region.clone(), instance_type.clone()), round_price(price));
            }
        }
    }
    if prices.is_empty() {
        return Err(FeedError::new(
            source,
            "no USD prices (expected an \"aws\" partition)",
        ));
    }
    Ok(prices)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESPONSE: &[u8] =
        include_bytes!("../../tests/data/pricing-getproducts-response-m5.large-us-east-1.json");

    #[test]
    fn real_get_products_response_double_decodes() {
        let (prices, next) = parse_get_products(RESPONSE, "GetProducts").unwrap();
        assert_eq!(next, None);
        assert_eq!(prices.len(), 1);
        assert_eq!(prices[0].instance_type, "m5.large");
        assert_eq!(prices[0].price_hr, 0.096);
    }

    fn item_with(attribute: &str, value: &str) -> String {
        let page: Value = serde_json::from_slice(RESPONSE).unwrap();
        let mut item: Value = serde_json::from_str(page["PriceList"][0].as_str().unwrap()).unwrap();
        item["product"]["attributes"][attribute] = Value::String(value.into());
        item.to_string()
    }

    #[test]
    fn reservation_windows_and_dedicated_skus_are_filtered_out() {
        for (attribute, value) in [
            ("capacitystatus", "UnusedCapacityReservation"),
            ("capacitystatus", "AllocatedCapacityReservation"),
            ("operatingSystem", "Windows"),
            ("tenancy", "Dedicated"),
            ("preInstalledSw", "SQL Std"),
        ] {
            assert_eq!(
                parse_price_item(&item_with(attribute, value), "x").unwrap(),
                None,
                "{attribute}={value}"
            );
        }
    }

    #[test]
    fn pagination_token_is_returned() {
        let mut page: Value = serde_json::from_slice(RESPONSE).unwrap();
        page["NextToken"] = Value::String("tok-2".into());
        let (_, next) = parse_get_products(page.to_string().as_bytes(), "p").unwrap();
        assert_eq!(next.as_deref(), Some("tok-2"));
    }

    #[test]
    fn broken_items_name_their_position() {
        let page = serde_json::json!({"FormatVersion": "aws_v1", "PriceList": ["{\"product\": "]});
        let err =
            parse_get_products(page.to_string().as_bytes(), "GetProducts us-east-1").unwrap_err();
        assert!(err.source_name.contains("PriceList[0]"), "{err}");
    }

    #[test]
    fn shipped_price_table() {
        let prices = parse_price_table(
            include_bytes!("../../../../data/on-demand-prices.json"),
            "data",
        )
        .unwrap();
        assert_eq!(
            prices[&("us-east-1".to_owned(), "m5.large".to_owned())],
            0.096
        );
        assert!(
            !prices.keys().any(|(r, _)| r.starts_with("cn-")),
            "CNY prices are not mixed in"
        );
    }

    #[test]
    fn filters_and_endpoints() {
        let filters = get_products_filters("eu-west-1");
        assert!(filters.contains(&("capacitystatus", "Used".into())));
        assert!(filters.contains(&("regionCode", "eu-west-1".into())));
        assert_eq!(pricing_endpoint_region("eu-west-1"), "eu-central-1");
        assert_eq!(pricing_endpoint_region("ap-northeast-1"), "ap-south-1");
        assert_eq!(pricing_endpoint_region("us-west-2"), "us-east-1");
        assert_eq!(pricing_endpoint_region("sa-east-1"), "us-east-1");
    }
}
