//! Zones for the pods zone rules concern, chosen before packing so that the packer and every
//! later move (zone spreading, spot diversification) keep them: each becomes a zone selector.
//!
//! Pods a zone pins already come first, then the pods other rules count, then the pods with
//! rules, those with the fewest zones first. Each takes, among the zones every required rule
//! allows, the cheapest; between equally priced zones, the one its preferred terms like best,
//! then the one where its spread and anti-affinity groups are thinnest.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use spotwise_core::placement::ZONE;

use crate::constraints::{Constraints, NodeState};
use crate::model::{DIMENSIONS, PlanInput, fits};
use crate::packing::admits;

pub struct ZoneChoice {
    /// The input with the chosen zones as selectors; `None` when no pod needed one.
    pub input: Option<PlanInput>,
    /// Pods no zone admits under their rules, with the rule.
    pub refused: Vec<(usize, String)>,
}

/// `price` is each offering's ranking price.
pub fn choose(input: &PlanInput, rules: &Constraints, price: &[f64]) -> ZoneChoice {
    let pods = rules.zone_pods();
    if pods.is_empty() {
        return ZoneChoice {
            input: None,
            refused: Vec::new(),
        };
    }
    let mut cache: HashMap<String, Vec<(String, f64)>> = HashMap::new();
    let options: Vec<Vec<(String, f64)>> = pods
        .iter()
        .map(|&p| {
            let pod = &input.pods[p];
            let key = serde_json::to_string(&(
                pod.spot_ok,
                pod.demand(),
                &pod.node_selector,
                &pod.tolerations,
                &pod.volumes,
            ))
            .unwrap_or_default();
            cache
                .entry(key)
                .or_insert_with(|| zone_prices(input, p, price))
                .clone()
        })
        .collect();
    let mut order: Vec<usize> = (0..pods.len()).collect();
    order.sort_by_key(|&i| {
        (
            options[i].len() > 1,
            rules.has_zone_rules(pods[i]),
            options[i].len(),
            pods[i],
        )
    });
    let mut state = rules.zone_state();
    let mut chosen: Vec<(usize, String)> = Vec::new();
    let mut refused = Vec::new();
    let no_node = NodeState::default();
    for i in order {
        let p = pods[i];
        if options[i].is_empty() {
            // No offering admits it at all: the packer says why.
            continue;
        }
        let domains: Vec<&str> = options[i].iter().map(|(z, _)| z.as_str()).collect();
        let best = options[i]
            .iter()
            .filter(|(zone, _)| rules.zone_refusal(p, zone, &state, &domains).is_none())
            .min_by(|(za, pa), (zb, pb)| {
                let key = |zone: &str| {
                    (
                        Reverse(rules.preference(p, &no_node, zone, &state)),
                        rules.zone_crowding(p, zone, &state),
                    )
                };
                pa.total_cmp(pb)
                    .then_with(|| key(za).cmp(&key(zb)))
                    .then(za.cmp(zb))
            });
        match best {
            Some((zone, _)) => {
                rules.zone_add(p, zone, &mut state);
                chosen.push((p, zone.clone()));
            }
            None => {
                let rule = rules
                    .zone_refusal(p, domains[0], &state, &domains)
                    .map_or_else(|| "its zone rules".to_owned(), |r| r.text.clone());
                refused.push((
                    p,
                    format!(
                        "{rule} cannot be met in any zone the pod may run in ({})",
                        domains.join(", ")
                    ),
                ));
            }
        }
    }
    let mut zoned = input.clone();
    for (p, zone) in chosen {
        zoned.pods[p].node_selector.insert(ZONE.to_owned(), zone);
    }
    ZoneChoice {
        input: Some(zoned),
        refused,
    }
}

/// The zones with an offering that admits and holds the pod, each at its cheapest price there.
fn zone_prices(input: &PlanInput, pod: usize, price: &[f64]) -> Vec<(String, f64)> {
    let spec = &input.pods[pod];
    let demand = spec.demand();
    let mut zones: BTreeMap<&str, f64> = BTreeMap::new();
    for (o, offering) in input.offerings.iter().enumerate() {
        if admits(input, spec, offering)
            && fits(&[0; DIMENSIONS], &demand, &input.policy.usable(offering))
        {
            let slot = zones.entry(offering.zone.as_str()).or_insert(f64::INFINITY);
            *slot = slot.min(price[o]);
        }
    }
    zones
        .into_iter()
        .map(|(zone, price)| (zone.to_owned(), price))
        .collect()
}
