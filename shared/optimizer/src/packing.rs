//! Placing pods on nodes at the lowest cost.
//!
//! Pods are grouped into classes that can use the same offerings (capacity type, nodeSelector,
//! tolerations, GPU need). Classes with the fewest choices are packed first; later classes fill
//! the room earlier nodes left before opening nodes of their own. For each class several
//! packings are tried and the cheapest kept:
//! - first-fit decreasing onto each of the few node types that are cheapest for the class alone;
//! - the fluid optimum's mix of types (usually two shapes, e.g. compute- and memory-optimised),
//!   filled by the dot-product rule so each pod lands where its shape matches the room left;
//! - splits of the pods by memory per cpu over pairs of types, and over segments of many types;
//! - the fluid optimum in whole nodes, its remainder covered by the cheapest whole nodes.
//!
//! The class's emptiest nodes are then repacked on their own, and a large-neighbourhood search
//! repacks nodes that waste cpu together with nodes that waste memory while that saves (there,
//! node patterns chosen one at a time at the fluid optimum's resource prices join the tries).
//!
//! Every node is then shrunk to the cheapest offering that still holds its pods, spread over
//! equally priced zones, and spot nodes are spread over at least `min_spot_pools` pools at the
//! least extra cost.
//!
//! Placement constraints hold throughout: zones for the pods zone rules concern are chosen
//! first ([`crate::zones`]), every placement checks the hostname rules ([`crate::constraints`]),
//! and pods that need a matching pod on their node are placed last, beside one.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::constraints::{Constraints, NodeState};
use crate::model::{CPU, DIMENSIONS, MEM, Offering, PODS, PlanInput, PodSpec, Vector, add, fits};
use crate::{lp, zones};

/// How many single node types each class tries beyond the fluid mix.
const SINGLE_TYPE_CANDIDATES: usize = 4;

#[derive(Debug, Clone, PartialEq)]
pub struct Bin {
    pub offering: usize,
    pub used: Vector,
    pub pods: Vec<usize>,
    /// Classes of the pods on it: the offerings it may move to are those all of them allow.
    classes: Vec<usize>,
    host: NodeState,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Unschedulable {
    pub pod: usize,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Packing {
    pub bins: Vec<Bin>,
    pub unschedulable: Vec<Unschedulable>,
}

impl Packing {
    pub fn cost_hr(&self, offerings: &[Offering]) -> f64 {
        self.bins
            .iter()
            .map(|b| offerings[b.offering].price_hr)
            .sum()
    }
}

struct Class {
    pods: Vec<usize>,
    /// Allowed offerings, cheapest (by ranking price) first.
    allowed: Vec<usize>,
    allowed_set: Vec<bool>,
    /// The allowed offerings no other allowed offering beats on every resource and on price,
    /// one zone per type: the types the segment programme chooses among.
    frontier: Vec<usize>,
}

struct Context<'a> {
    input: &'a PlanInput,
    rules: Constraints,
    capacity: Vec<Vector>,
    price: Vec<f64>,
    demand: Vec<Vector>,
}

impl Context<'_> {
    /// Whether the pod fits the room the node has left and its hostname rules allow it there.
    fn can_take(&self, bin: &Bin, pod: usize) -> bool {
        fits(&bin.used, &self.demand[pod], &self.capacity[bin.offering])
            && self.rules.host_refusal(pod, &bin.host).is_none()
    }

    fn put(&self, bin: &mut Bin, pod: usize) {
        add(&mut bin.used, &self.demand[pod]);
        bin.pods.push(pod);
        self.rules.host_add(pod, &mut bin.host);
    }
}

pub fn pack(input: &PlanInput) -> Packing {
    let policy = &input.policy;
    let price: Vec<f64> = input
        .offerings
        .iter()
        .map(|o| policy.ranking_price(o))
        .collect();
    let rules = Constraints::new(input);
    let zoned = zones::choose(input, &rules, &price);
    let input = zoned.input.as_ref().unwrap_or(input);
    let ctx = Context {
        input,
        rules,
        capacity: input.offerings.iter().map(|o| policy.usable(o)).collect(),
        price,
        demand: input.pods.iter().map(PodSpec::demand).collect(),
    };
    let mut refused = vec![false; input.pods.len()];
    let mut unschedulable: Vec<Unschedulable> = zoned
        .refused
        .into_iter()
        .map(|(pod, reason)| {
            refused[pod] = true;
            Unschedulable { pod, reason }
        })
        .collect();
    let (mut classes, unplaceable) = classify(&ctx, &refused);
    unschedulable.extend(unplaceable);
    classes.sort_by_key(|c| c.allowed.len());

    let mut bins: Vec<Bin> = Vec::new();
    let mut with_company: Vec<(usize, usize)> = Vec::new();
    for (class_index, class) in classes.iter().enumerate() {
        let mut pods = class.pods.clone();
        let (placeable, too_big): (Vec<usize>, Vec<usize>) = pods.drain(..).partition(|&p| {
            class
                .allowed
                .iter()
                .any(|&o| fits(&[0; DIMENSIONS], &ctx.demand[p], &ctx.capacity[o]))
        });
        for pod in too_big {
            unschedulable.push(Unschedulable {
                pod,
                reason: too_big_reason(&ctx, class, pod),
            });
        }
        let (later, placeable): (Vec<usize>, Vec<usize>) = placeable
            .into_iter()
            .partition(|&p| ctx.rules.needs_company(p));
        with_company.extend(later.into_iter().map(|p| (p, class_index)));
        let rest = fill_existing(&ctx, class, class_index, &mut bins, placeable);
        if !rest.is_empty() {
            bins.extend(pack_class(&ctx, class, class_index, &rest));
        }
    }
    place_with_company(&ctx, &classes, &mut bins, with_company, &mut unschedulable);
    let class_allowed: Vec<&[bool]> = classes.iter().map(|c| c.allowed_set.as_slice()).collect();
    let class_order: Vec<&[usize]> = classes.iter().map(|c| c.allowed.as_slice()).collect();
    for bin in &mut bins {
        shrink(&ctx, &class_order, &class_allowed, bin);
    }
    spread_zones(&ctx, &class_allowed, &mut bins);
    diversify_spot(&ctx, &class_order, &class_allowed, &mut bins);
    unschedulable.sort_by_key(|u| u.pod);
    Packing {
        bins,
        unschedulable,
    }
}

/// Groups pods by what they may run on and rejects pods no offering admits; `refused` pods
/// are already rejected.
fn classify(ctx: &Context<'_>, refused: &[bool]) -> (Vec<Class>, Vec<Unschedulable>) {
    let input = ctx.input;
    let mut by_key: HashMap<(bool, bool, String), usize> = HashMap::new();
    let mut classes: Vec<Class> = Vec::new();
    let mut unschedulable = Vec::new();
    for (index, pod) in input.pods.iter().enumerate() {
        if refused[index] {
            continue;
        }
        let key = (
            pod.spot_ok,
            pod.gpus > 0,
            // Selector, tolerations and volume zones as one canonical string.
            serde_json::to_string(&(&pod.node_selector, &pod.tolerations, &pod.volumes))
                .unwrap_or_default(),
        );
        let class = *by_key.entry(key).or_insert_with(|| {
            let allowed_set: Vec<bool> = input
                .offerings
                .iter()
                .map(|o| admits(input, pod, o))
                .collect();
            let mut allowed: Vec<usize> = (0..input.offerings.len())
                .filter(|&o| allowed_set[o])
                .collect();
            allowed.sort_by(|&a, &b| ctx.price[a].total_cmp(&ctx.price[b]));
            let frontier = frontier(ctx, &allowed);
            classes.push(Class {
                pods: Vec::new(),
                allowed,
                allowed_set,
                frontier,
            });
            classes.len() - 1
        });
        if classes[class].allowed.is_empty() {
            unschedulable.push(Unschedulable {
                pod: index,
                reason: no_offering_reason(input, pod),
            });
        } else {
            classes[class].pods.push(index);
        }
    }
    classes.retain(|c| !c.pods.is_empty());
    (classes, unschedulable)
}

/// The offerings of `allowed` (cheapest first) that no other beats: the cheapest zone of each
/// type, kept unless another type has at least as much of every resource for no more.
fn frontier(ctx: &Context<'_>, allowed: &[usize]) -> Vec<usize> {
    let mut seen = HashSet::new();
    let mut kept: Vec<usize> = Vec::new();
    for &o in allowed {
        if !seen.insert(ctx.input.offerings[o].instance_type.as_str()) {
            continue;
        }
        let c = &ctx.capacity[o];
        // `allowed` is sorted by price, so every kept offering costs no more than this one.
        if !kept
            .iter()
            .any(|&k| (0..DIMENSIONS).all(|r| ctx.capacity[k][r] >= c[r]))
        {
            kept.push(o);
        }
    }
    kept
}

/// Whether the plan may launch a node of `offering` for `pod`, size aside.
pub fn admits(input: &PlanInput, pod: &PodSpec, offering: &Offering) -> bool {
    input.policy.launch_exclusion(offering).is_none() && runs_on(input, pod, offering)
}

/// Whether a node like `offering`, launched or already running, may run `pod`, size aside.
pub fn runs_on(input: &PlanInput, pod: &PodSpec, offering: &Offering) -> bool {
    if offering.is_spot() && (!pod.spot_ok || offering.band() > input.policy.max_interruption_band)
    {
        return false;
    }
    if pod.gpus == 0 && offering.gpus > 0 {
        // GPU nodes are kept for GPU pods, as their taints would in a real cluster.
        return false;
    }
    pod.volumes.iter().all(|v| v.zones.contains(&offering.zone))
        && pod
            .node_selector
            .iter()
            .all(|(k, v)| offering.label(k) == Some(v.as_str()))
        && offering
            .taints
            .iter()
            .filter(|t| t.effect != "PreferNoSchedule")
            .all(|t| pod.tolerations.iter().any(|tol| tol.tolerates(t)))
}

fn no_offering_reason(input: &PlanInput, pod: &PodSpec) -> String {
    let offerings: Vec<&Offering> = input
        .offerings
        .iter()
        .filter(|o| input.policy.launch_exclusion(o).is_none())
        .collect();
    if offerings.is_empty()
        && let Some(exclusion) = input
            .offerings
            .first()
            .and_then(|o| input.policy.launch_exclusion(o))
    {
        return format!("every offering is excluded: {exclusion}");
    }
    let selector_ok = |o: &&Offering| {
        pod.node_selector
            .iter()
            .all(|(k, v)| o.label(k) == Some(v.as_str()))
    };
    if let Some(volume) = pod.volumes.iter().find(|v| {
        !offerings
            .iter()
            .any(|o| selector_ok(o) && v.zones.contains(&o.zone))
    }) {
        return format!(
            "bound to volume {} in {}, where no allowed offering is",
            volume.claim,
            volume.zones.join(", ")
        );
    }
    if !offerings.iter().any(selector_ok) {
        let selector: Vec<String> = pod
            .node_selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        return format!("no offering matches nodeSelector {}", selector.join(","));
    }
    let capacity_ok: Vec<&Offering> = offerings
        .iter()
        .copied()
        .filter(selector_ok)
        .filter(|o| !o.is_spot() || pod.spot_ok)
        .collect();
    if capacity_ok.is_empty() {
        return "spot_ok is false and no on-demand offering is available".into();
    }
    let band = input.policy.max_interruption_band;
    if capacity_ok.iter().all(|o| o.is_spot() && o.band() > band) {
        return format!(
            "every spot offering is above max_interruption_band {band} and no on-demand offering is available"
        );
    }
    if pod.gpus > 0 && !capacity_ok.iter().any(|o| o.gpus > 0) {
        return "requests GPUs and no GPU offering is available".into();
    }
    if pod.gpus == 0 && capacity_ok.iter().all(|o| o.gpus > 0) {
        return "only GPU offerings are available and the pod requests no GPU".into();
    }
    "no offering's taints are tolerated by the pod".into()
}

fn too_big_reason(ctx: &Context<'_>, class: &Class, pod: usize) -> String {
    let d = ctx.demand[pod];
    let largest = class
        .allowed
        .iter()
        .max_by_key(|&&o| (ctx.capacity[o][CPU], ctx.capacity[o][MEM]))
        .map(|&o| (&ctx.input.offerings[o].instance_type, ctx.capacity[o]));
    match largest {
        Some((name, c)) => format!(
            "requests {}m cpu, {} MiB memory, {} GPU; the largest allowed offering ({name}) has {}m cpu, {} MiB, {} pod slots, {} GPU free for pods",
            d[CPU], d[MEM], d[3], c[CPU], c[MEM], c[PODS], c[3]
        ),
        None => "no allowed offering".into(),
    }
}

/// Places what fits into nodes opened for earlier classes; returns the pods left over.
fn fill_existing(
    ctx: &Context<'_>,
    class: &Class,
    class_index: usize,
    bins: &mut [Bin],
    mut pods: Vec<usize>,
) -> Vec<usize> {
    let usable: Vec<usize> = (0..bins.len())
        .filter(|&b| class.allowed_set[bins[b].offering])
        .collect();
    if usable.is_empty() {
        return pods;
    }
    pods.sort_by(|&a, &b| size_key(&ctx.demand[b]).cmp(&size_key(&ctx.demand[a])));
    pods.into_iter()
        .filter(|&pod| {
            let Some(&b) = usable.iter().find(|&&b| ctx.can_take(&bins[b], pod)) else {
                return true;
            };
            let bin = &mut bins[b];
            ctx.put(bin, pod);
            if !bin.classes.contains(&class_index) {
                bin.classes.push(class_index);
            }
            false
        })
        .collect()
}

fn size_key(d: &Vector) -> (u64, u64) {
    (d[CPU] * 4 + d[MEM], d[CPU])
}

/// How many of a class's emptiest nodes are repacked on their own.
const TAIL_REPACK: usize = 10;

/// The cheapest packing of one class onto new nodes, then its emptiest nodes repacked alone:
/// they carry what whole nodes lose, and on their own their pods often fit a cheaper mix of
/// smaller nodes than the types that suit the whole class.
fn pack_class(ctx: &Context<'_>, class: &Class, class_index: usize, pods: &[usize]) -> Vec<Bin> {
    let mut bins = cheapest_packing(ctx, class, class_index, pods, Portfolio::Full);
    let cost = |bins: &[Bin]| bins.iter().map(|b| ctx.price[b.offering]).sum::<f64>();
    for tail in 1..=TAIL_REPACK {
        // A repack may have left fewer nodes than the next tail takes.
        if tail >= bins.len() {
            break;
        }
        bins.sort_by(|a, b| fill(ctx, b).total_cmp(&fill(ctx, a)));
        let emptiest = bins.split_off(bins.len() - tail);
        let pods: Vec<usize> = emptiest
            .iter()
            .flat_map(|b| b.pods.iter().copied())
            .collect();
        let repacked = cheapest_packing(ctx, class, class_index, &pods, Portfolio::Full);
        if cost(&repacked) < cost(&emptiest) - 1e-12 {
            bins.extend(repacked);
        } else {
            bins.extend(emptiest);
        }
    }
    repack_complements(ctx, class, class_index, &mut bins);
    bins
}

/// Nodes of each kind of waste `repack_complements` pairs up.
const COMPLEMENT_CANDIDATES: usize = 6;
/// Repacks `repack_complements` tries for one class, plus one per four of its nodes.
const COMPLEMENT_ATTEMPTS: usize = 48;

/// Large-neighbourhood search over a class's nodes: a node that leaves cpu unused and one that
/// leaves memory unused are repacked together (with the emptiest node, in a second try), so
/// their pods can trade places or move to a cheaper mix. A repack is kept when it costs less.
fn repack_complements(ctx: &Context<'_>, class: &Class, class_index: usize, bins: &mut Vec<Bin>) {
    let cost = |bins: &[Bin]| bins.iter().map(|b| ctx.price[b.offering]).sum::<f64>();
    let mut tried: HashSet<Vec<usize>> = HashSet::new();
    for _ in 0..COMPLEMENT_ATTEMPTS + bins.len() / 4 {
        // Dollars per hour of each resource left unused on each node.
        let waste = |b: &Bin, r: usize| {
            let c = &ctx.capacity[b.offering];
            if c[r] == 0 {
                0.0
            } else {
                ctx.price[b.offering] * (c[r] - b.used[r]) as f64 / c[r] as f64
            }
        };
        let ranked = |r: usize| {
            let mut order: Vec<usize> = (0..bins.len()).collect();
            order.sort_by(|&a, &b| waste(&bins[b], r).total_cmp(&waste(&bins[a], r)));
            order.truncate(COMPLEMENT_CANDIDATES);
            order
        };
        let emptiest =
            (0..bins.len()).min_by(|&a, &b| fill(ctx, &bins[a]).total_cmp(&fill(ctx, &bins[b])));
        let mut subsets: Vec<Vec<usize>> = Vec::new();
        for &a in &ranked(CPU) {
            for &b in &ranked(MEM) {
                if a == b {
                    continue;
                }
                subsets.push(vec![a, b]);
                if let Some(e) = emptiest.filter(|&e| e != a && e != b) {
                    subsets.push(vec![a, b, e]);
                }
            }
        }
        let key = |subset: &[usize], bins: &[Bin]| {
            let mut key: Vec<usize> = subset
                .iter()
                .flat_map(|&b| bins[b].pods.iter().copied())
                .collect();
            key.sort_unstable();
            key
        };
        let Some((subset_key, subset)) = subsets
            .into_iter()
            .map(|s| (key(&s, bins), s))
            .find(|(k, _)| !tried.contains(k))
        else {
            break;
        };
        tried.insert(subset_key);
        let pods: Vec<usize> = subset
            .iter()
            .flat_map(|&b| bins[b].pods.iter().copied())
            .collect();
        let before: f64 = subset.iter().map(|&b| ctx.price[bins[b].offering]).sum();
        // No packing of these pods costs less than their fluid optimum.
        if solve_for(ctx, &pods, &class.frontier).is_none_or(|f| f.cost >= before - 1e-9) {
            continue;
        }
        let repacked = cheapest_packing(ctx, class, class_index, &pods, Portfolio::Light);
        if cost(&repacked) < before - 1e-9 {
            let mut removed = subset;
            removed.sort_unstable_by(|a, b| b.cmp(a));
            for b in removed {
                bins.swap_remove(b);
            }
            bins.extend(repacked);
        }
    }
}

/// The largest share of any resource a node's pods take.
fn fill(ctx: &Context<'_>, bin: &Bin) -> f64 {
    share(&bin.used, &ctx.capacity[bin.offering])
}

/// The largest share of any of `capacity`'s resources that `demand` takes.
fn share(demand: &Vector, capacity: &Vector) -> f64 {
    (0..DIMENSIONS)
        .filter(|&r| capacity[r] > 0)
        .map(|r| demand[r] as f64 / capacity[r] as f64)
        .fold(0.0, f64::max)
}

/// Which packings `cheapest_packing` tries.
#[derive(Clone, Copy, PartialEq)]
enum Portfolio {
    Full,
    /// For the few nodes a neighbourhood search repacks: without the size tiers and segments,
    /// which seldom win there and cost the most to build, and with priced patterns.
    Light,
}

/// The cheapest of several packings of one class onto new nodes.
fn cheapest_packing(
    ctx: &Context<'_>,
    class: &Class,
    class_index: usize,
    pods: &[usize],
    portfolio: Portfolio,
) -> Vec<Bin> {
    let total = total_demand(ctx, pods);
    // Single types ranked by what the class alone would cost on them, fluidly (the frontier
    // holds each type once, in its cheapest zone: spreading over zones comes later).
    let mut singles: Vec<(f64, usize)> = class
        .frontier
        .iter()
        .filter_map(|&o| fluid_alone(ctx, &total, o).map(|cost| (cost, o)))
        .collect();
    singles.sort_by(|a, b| a.0.total_cmp(&b.0));

    let mut candidates: Vec<Vec<Bin>> = singles
        .iter()
        .take(SINGLE_TYPE_CANDIDATES)
        .map(|&(_, o)| first_fit_single(ctx, class, class_index, pods, o))
        .collect();
    if portfolio == Portfolio::Full {
        candidates.push(tiered(ctx, class, class_index, pods));
        candidates.extend(segments(ctx, class, class_index, pods));
    }
    candidates.extend(pair_split(ctx, class, class_index, pods, &singles));
    candidates.extend(whole_node_mixes(ctx, class, class_index, pods, &singles));
    // On a class's whole pods the patterns' first, fullest nodes can leave the classes packed
    // after it a worse fit (the demo cluster's plan cost 3% more with them); on a few nodes'
    // pods they often find the cheaper mix.
    if portfolio == Portfolio::Light {
        candidates.push(priced_fills(ctx, class, class_index, pods));
    }
    // The cheapest offering that holds a node of this class alone is on its frontier.
    let class_order = [class.frontier.as_slice()];
    let class_allowed = [class.allowed_set.as_slice()];
    candidates
        .into_iter()
        .map(|mut bins| {
            empty_sparse_bins(ctx, &mut bins);
            for bin in &mut bins {
                // Only this class is on new nodes, at index 0 of the slices above.
                let own = std::mem::replace(&mut bin.classes, vec![0]);
                shrink(ctx, &class_order, &class_allowed, bin);
                bin.classes = own;
            }
            let cost: f64 = bins.iter().map(|b| ctx.price[b.offering]).sum();
            (cost, bins)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, bins)| bins)
        .unwrap_or_default()
}

fn new_bin(offering: usize, class_index: usize) -> Bin {
    Bin {
        offering,
        used: [0; DIMENSIONS],
        pods: Vec::new(),
        classes: vec![class_index],
        host: NodeState::default(),
    }
}

/// Moves the node with the company the pod needs that is cheapest to enlarge to an offering
/// that also holds the pod; returns it.
fn grow_beside(
    ctx: &Context<'_>,
    classes: &[Class],
    bins: &mut [Bin],
    pod: usize,
    class_index: usize,
) -> Option<usize> {
    let placed = |group| bins.iter().map(|b| b.host.count(group)).sum::<u32>();
    let (_, b, o) = (0..bins.len())
        .filter(|&b| {
            ctx.rules.host_refusal(pod, &bins[b].host).is_none()
                && ctx
                    .rules
                    .company_missing(pod, &bins[b].host, placed)
                    .is_none()
        })
        .filter_map(|b| {
            let bin = &bins[b];
            let mut need = bin.used;
            add(&mut need, &ctx.demand[pod]);
            let o = classes[class_index].allowed.iter().copied().find(|&o| {
                bin.classes.iter().all(|&c| classes[c].allowed_set[o])
                    && fits(&[0; DIMENSIONS], &need, &ctx.capacity[o])
            })?;
            Some((ctx.price[o] - ctx.price[bin.offering], b, o))
        })
        .min_by(|x, y| x.0.total_cmp(&y.0))?;
    bins[b].offering = o;
    Some(b)
}

/// Places the pods that must share a node with a matching pod, largest first: beside one where
/// there is room, or, for the first of a group that matches its own term, on a new node.
fn place_with_company(
    ctx: &Context<'_>,
    classes: &[Class],
    bins: &mut Vec<Bin>,
    mut pods: Vec<(usize, usize)>,
    unschedulable: &mut Vec<Unschedulable>,
) {
    pods.sort_by(|a, b| size_key(&ctx.demand[b.0]).cmp(&size_key(&ctx.demand[a.0])));
    for (pod, class_index) in pods {
        let class = &classes[class_index];
        let placed = |group| bins.iter().map(|b| b.host.count(group)).sum::<u32>();
        let beside = (0..bins.len()).find(|&b| {
            class.allowed_set[bins[b].offering]
                && ctx.can_take(&bins[b], pod)
                && ctx
                    .rules
                    .company_missing(pod, &bins[b].host, placed)
                    .is_none()
        });
        let missing = ctx
            .rules
            .company_missing(pod, &NodeState::default(), placed)
            .map(|rule| rule.text.clone());
        let b = match (beside, missing) {
            (Some(b), _) => b,
            (None, None) => match cheapest_for(ctx, class, &ctx.demand[pod]) {
                Some(o) => {
                    bins.push(new_bin(o, class_index));
                    bins.len() - 1
                }
                None => continue,
            },
            (None, Some(rule)) => match grow_beside(ctx, classes, bins, pod, class_index) {
                Some(b) => b,
                None => {
                    unschedulable.push(Unschedulable {
                        pod,
                        reason: format!(
                            "{rule}: no node running a matching pod can hold it, even a larger one"
                        ),
                    });
                    continue;
                }
            },
        };
        let bin = &mut bins[b];
        ctx.put(bin, pod);
        if !bin.classes.contains(&class_index) {
            bin.classes.push(class_index);
        }
    }
}

/// The cheapest allowed offering a pod fits on its own.
fn cheapest_for(ctx: &Context<'_>, class: &Class, d: &Vector) -> Option<usize> {
    class
        .allowed
        .iter()
        .copied()
        .find(|&o| fits(&[0; DIMENSIONS], d, &ctx.capacity[o]))
}

/// First-fit decreasing onto nodes of one offering; pods too big for it get the cheapest node
/// they fit.
fn first_fit_single(
    ctx: &Context<'_>,
    class: &Class,
    class_index: usize,
    pods: &[usize],
    offering: usize,
) -> Vec<Bin> {
    let cap = ctx.capacity[offering];
    let mut keyed: Vec<(f64, usize)> = pods
        .iter()
        .map(|&p| (share(&ctx.demand[p], &cap), p))
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    let order: Vec<usize> = keyed.into_iter().map(|(_, p)| p).collect();
    let min_cpu = pods.iter().map(|&p| ctx.demand[p][CPU]).min().unwrap_or(0);
    let min_mem = pods.iter().map(|&p| ctx.demand[p][MEM]).min().unwrap_or(0);
    let mut bins: Vec<Bin> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    for pod in order {
        let d = &ctx.demand[pod];
        let found = open.iter().position(|&b| ctx.can_take(&bins[b], pod));
        let (slot, b) = match found {
            Some(slot) => (Some(slot), open[slot]),
            None => {
                let o = if fits(&[0; DIMENSIONS], d, &cap) {
                    offering
                } else {
                    match cheapest_for(ctx, class, d) {
                        Some(o) => o,
                        None => continue,
                    }
                };
                bins.push(new_bin(o, class_index));
                open.push(bins.len() - 1);
                (Some(open.len() - 1), bins.len() - 1)
            }
        };
        let bin = &mut bins[b];
        ctx.put(bin, pod);
        let c = &ctx.capacity[bin.offering];
        let full = bin.used[PODS] >= c[PODS]
            || c[CPU] - bin.used[CPU] < min_cpu
            || c[MEM] - bin.used[MEM] < min_mem;
        if full && let Some(slot) = slot {
            open.remove(slot);
        }
    }
    bins
}

/// Packs by size tiers. The fluid optimum over all pods usually picks small, cheap shapes
/// that the largest pods do not fit; those pods form the next tier, solved again over the
/// offerings they fit, and so on. Tiers are then packed largest first, so smaller pods fill
/// the room the large ones leave before new nodes are opened for them.
fn tiered(ctx: &Context<'_>, class: &Class, class_index: usize, pods: &[usize]) -> Vec<Bin> {
    let mut tiers: Vec<Vec<usize>> = Vec::new();
    let mut rest = pods.to_vec();
    let mut columns = class.frontier.clone();
    while !rest.is_empty() {
        let Some(fluid) = solve_for(ctx, &rest, &columns) else {
            tiers.push(rest);
            break;
        };
        let basis: Vec<usize> = fluid.nodes.iter().map(|&(c, _)| columns[c]).collect();
        let (fit, big): (Vec<usize>, Vec<usize>) = rest.into_iter().partition(|&p| {
            basis
                .iter()
                .any(|&o| fits(&[0; DIMENSIONS], &ctx.demand[p], &ctx.capacity[o]))
        });
        if fit.is_empty() {
            tiers.push(big);
            break;
        }
        tiers.push(fit);
        let Some(&smallest) = big.iter().min_by_key(|&&p| size_key(&ctx.demand[p])) else {
            break;
        };
        columns.retain(|&o| fits(&[0; DIMENSIONS], &ctx.demand[smallest], &ctx.capacity[o]));
        rest = big;
    }
    let mut bins: Vec<Bin> = Vec::new();
    for tier in tiers.into_iter().rev() {
        let leftover = place_aligned(ctx, &mut bins, &tier, 0);
        if leftover.is_empty() {
            continue;
        }
        let columns: Vec<usize> = class
            .frontier
            .iter()
            .copied()
            .filter(|&o| {
                leftover
                    .iter()
                    .any(|&p| fits(&[0; DIMENSIONS], &ctx.demand[p], &ctx.capacity[o]))
            })
            .collect();
        let mix: Vec<(usize, f64)> = solve_for(ctx, &leftover, &columns)
            .map(|f| f.nodes.iter().map(|&(c, x)| (columns[c], x)).collect())
            .unwrap_or_default();
        bins.extend(split_by_shape(ctx, class, class_index, &leftover, &mix));
    }
    bins.retain(|b| !b.pods.is_empty());
    bins
}

/// Most split points the pair split weighs.
const PAIR_SPLIT_POINTS: usize = 1_024;
/// Types each class considers pairing.
const PAIR_CANDIDATES: usize = 12;
/// How many of the best pairs are packed for real.
const PAIRS_PACKED: usize = 10;

/// Splits the pods by memory-per-cpu at the point where a cpu-leaning type takes the lower
/// part and a memory-leaning type the upper part at the least fluid cost, over pairs of the
/// cheapest types (a type paired with itself is a single type). Unlike the fluid mix, which
/// may pair shapes more extreme than any pod, each side of the split is a set of whole pods.
fn pair_split(
    ctx: &Context<'_>,
    class: &Class,
    class_index: usize,
    pods: &[usize],
    singles: &[(f64, usize)],
) -> Vec<Vec<Bin>> {
    let (order, prefix) = by_mem_per_cpu(ctx, pods);
    let n = order.len();
    let mut prefix_max = vec![[0u64; DIMENSIONS]; n + 1];
    for (i, &p) in order.iter().enumerate() {
        prefix_max[i + 1] = std::array::from_fn(|r| prefix_max[i][r].max(ctx.demand[p][r]));
    }
    let mut suffix_max = vec![[0u64; DIMENSIONS]; n + 1];
    for i in (0..n).rev() {
        let d = &ctx.demand[order[i]];
        for r in 0..DIMENSIONS {
            suffix_max[i][r] = suffix_max[i + 1][r].max(d[r]);
        }
    }
    let largest = prefix_max[n];
    let mut types: Vec<usize> = singles.iter().take(PAIR_CANDIDATES).map(|s| s.1).collect();
    types.extend(
        singles
            .iter()
            .map(|s| s.1)
            .filter(|&o| fits(&[0; DIMENSIONS], &largest, &ctx.capacity[o]))
            .take(4),
    );
    types.sort_unstable();
    types.dedup();
    let fluid = |o: usize, demand: &Vector, biggest: &Vector| -> f64 {
        if demand.iter().all(|&v| v == 0) {
            return 0.0;
        }
        let c = &ctx.capacity[o];
        if !fits(&[0; DIMENSIONS], biggest, c) {
            return f64::INFINITY;
        }
        let nodes = (0..DIMENSIONS)
            .filter(|&r| demand[r] > 0)
            .map(|r| demand[r] as f64 / c[r] as f64)
            .fold(0.0, f64::max);
        ctx.price[o] * nodes
    };
    // The best split of each pair, fluidly; the few best pairs are then packed for real,
    // since whole pods lose more to fragmentation on some pairs than on others.
    // Split points: every pod boundary in small classes, evenly spaced ones in large.
    let step = n.div_ceil(PAIR_SPLIT_POINTS).max(1);
    let splits: Vec<usize> = (0..=n).step_by(step).chain([n]).collect();
    let mut per_pair: Vec<(f64, usize, usize, usize)> = Vec::new();
    for &low in &types {
        for &high in &types {
            let mut best: Option<(f64, usize, usize, usize)> = None;
            for &k in &splits {
                let upper: Vector = std::array::from_fn(|r| prefix[n][r] - prefix[k][r]);
                let cost =
                    fluid(low, &prefix[k], &prefix_max[k]) + fluid(high, &upper, &suffix_max[k]);
                if cost.is_finite() && best.is_none_or(|b| cost < b.0) {
                    best = Some((cost, low, high, k));
                }
            }
            per_pair.extend(best);
        }
    }
    per_pair.sort_by(|a, b| a.0.total_cmp(&b.0));
    per_pair
        .iter()
        .take(PAIRS_PACKED)
        .map(|&(_, low, high, k)| {
            let mut bins = first_fit_single(ctx, class, class_index, &order[..k], low);
            bins.extend(first_fit_single(ctx, class, class_index, &order[k..], high));
            bins
        })
        .collect()
}

/// Boundaries the segment programme considers in the memory-per-cpu order.
const SEGMENT_POINTS: usize = 48;
/// What whole nodes lose on a segment, in nodes of its type, tried in turn.
const SEGMENT_PENALTIES: [f64; 2] = [0.5, 0.2];

/// The pods in memory-per-cpu order, cut into consecutive segments each packed onto one type,
/// with the cuts and types chosen by a dynamic programme over the fluid cost of each segment
/// plus a share of a node for the one left partly empty (one packing per share in
/// `SEGMENT_PENALTIES`). With two resources, the assignment LP gives each type a range of that
/// order, so this reaches mixes of many shapes; the pair split is its two-segment case.
fn segments(ctx: &Context<'_>, class: &Class, class_index: usize, pods: &[usize]) -> Vec<Vec<Bin>> {
    let (order, totals) = by_mem_per_cpu(ctx, pods);
    let n = order.len();
    if n < 3 {
        return Vec::new();
    }
    let k = n.min(SEGMENT_POINTS);
    let mut points: Vec<usize> = (0..=k).map(|i| i * n / k).collect();
    points.dedup();
    let k = points.len() - 1;
    // Largest demand of each resource between consecutive points.
    let piece_max: Vec<Vector> = (0..k)
        .map(|i| {
            order[points[i]..points[i + 1]]
                .iter()
                .fold([0u64; DIMENSIONS], |m, &p| {
                    std::array::from_fn(|r| m[r].max(ctx.demand[p][r]))
                })
        })
        .collect();
    SEGMENT_PENALTIES
        .iter()
        .filter_map(|&penalty| {
            let mut best = vec![f64::INFINITY; k + 1];
            let mut choice = vec![(0usize, 0usize); k + 1];
            best[0] = 0.0;
            for j in 1..=k {
                let mut biggest = [0u64; DIMENSIONS];
                for i in (0..j).rev() {
                    biggest = std::array::from_fn(|r| biggest[r].max(piece_max[i][r]));
                    if !best[i].is_finite() {
                        continue;
                    }
                    let load: Vector =
                        std::array::from_fn(|r| totals[points[j]][r] - totals[points[i]][r]);
                    for &t in &class.frontier {
                        let c = &ctx.capacity[t];
                        if !fits(&[0; DIMENSIONS], &biggest, c) {
                            continue;
                        }
                        let cost = best[i] + ctx.price[t] * (share(&load, c) + penalty);
                        if cost < best[j] {
                            best[j] = cost;
                            choice[j] = (i, t);
                        }
                    }
                }
            }
            if !best[k].is_finite() {
                return None;
            }
            let mut chosen = Vec::new();
            let mut j = k;
            while j > 0 {
                let (i, t) = choice[j];
                chosen.push((&order[points[i]..points[j]], t));
                j = i;
            }
            Some(fill_segments(ctx, class_index, &chosen))
        })
        .collect()
}

/// Each segment's pods, largest first, take room earlier segments' nodes left before a node of
/// the segment's type is opened: a segment's last node is then rarely left part empty.
fn fill_segments(ctx: &Context<'_>, class_index: usize, chosen: &[(&[usize], usize)]) -> Vec<Bin> {
    let mut bins: Vec<Bin> = Vec::new();
    for &(pods, t) in chosen {
        let cap = ctx.capacity[t];
        let mut segment = pods.to_vec();
        segment
            .sort_by(|&a, &b| share(&ctx.demand[b], &cap).total_cmp(&share(&ctx.demand[a], &cap)));
        for pod in segment {
            let b = match bins.iter().position(|b| ctx.can_take(b, pod)) {
                Some(b) => b,
                None => {
                    bins.push(new_bin(t, class_index));
                    bins.len() - 1
                }
            };
            ctx.put(&mut bins[b], pod);
        }
    }
    bins
}

/// Demand scalings the whole-node mixes cover: whole pods leave a little of every node unused.
const MIX_SLACK: [f64; 2] = [1.0, 1.04];
/// Types of the fluid mix (those with the most whole nodes) that variants take one node from.
const MIX_FEWER: usize = 2;
/// Rounds of covering the pods a whole-node mix could not hold before falling back to one type.
const LEFTOVER_COVERS: usize = 3;
/// Types a cover of the fluid remainder chooses among.
const COVER_TYPES: usize = 24;
/// Most nodes of one type a cover of the fluid remainder considers.
const COVER_MOST: u64 = 64;

/// The fluid optimum in whole nodes: each of its types rounded down (and, in variants, one node
/// fewer of one type), the remainder covered by the cheapest whole nodes of one or two types,
/// and the pods placed by the dot-product rule. The fluid mix of a few large, cheap nodes is
/// rarely whole; this keeps its cheap full nodes and sizes the rest to what is left.
fn whole_node_mixes(
    ctx: &Context<'_>,
    class: &Class,
    class_index: usize,
    pods: &[usize],
    singles: &[(f64, usize)],
) -> Vec<Vec<Bin>> {
    let Some(fluid) = solve_for(ctx, pods, &class.frontier) else {
        return Vec::new();
    };
    let total = total_demand(ctx, pods);
    let whole: Vec<(usize, u64)> = fluid
        .nodes
        .iter()
        .map(|&(c, x)| (class.frontier[c], x.floor() as u64))
        .collect();
    let mut bases = vec![whole.clone()];
    let mut by_count: Vec<usize> = (0..whole.len()).filter(|&i| whole[i].1 > 0).collect();
    by_count.sort_by_key(|&i| std::cmp::Reverse(whole[i].1));
    for &i in by_count.iter().take(MIX_FEWER) {
        let mut fewer = whole.clone();
        fewer[i].1 -= 1;
        bases.push(fewer);
    }
    // The remainder is covered from the types that hold the class for least on their own
    // (`singles`, cheapest first), and the fluid optimum's.
    let mut shortlist: Vec<usize> = singles.iter().take(COVER_TYPES).map(|s| s.1).collect();
    shortlist.extend(whole.iter().map(|w| w.0));
    shortlist.sort_unstable();
    shortlist.dedup();
    let mut packings = Vec::new();
    for base in &bases {
        for (slack, placement) in MIX_SLACK
            .iter()
            .flat_map(|&s| [(s, Placement::Aligned), (s, Placement::ByShape)])
        {
            let mut rest: Vector = std::array::from_fn(|r| {
                if r == CPU || r == MEM {
                    (total[r] as f64 * slack).ceil() as u64
                } else {
                    total[r]
                }
            });
            for &(o, count) in base {
                for (r, left) in rest.iter_mut().enumerate() {
                    *left = left.saturating_sub(count * ctx.capacity[o][r]);
                }
            }
            let Some(rest_nodes) = cover(ctx, &shortlist, &rest) else {
                continue;
            };
            let mut bins = open_nodes(base.iter().chain(&rest_nodes), class_index);
            let mut left = match placement {
                Placement::Aligned => place_aligned(ctx, &mut bins, pods, 0),
                Placement::ByShape => place_by_shape(ctx, &mut bins, pods),
            };
            // Pods the mix could not hold get whole nodes of their own, covered the same way.
            for _ in 0..LEFTOVER_COVERS {
                if left.is_empty() {
                    break;
                }
                let Some(more) = cover(ctx, &shortlist, &total_demand(ctx, &left)) else {
                    break;
                };
                let from = bins.len();
                bins.extend(open_nodes(&more, class_index));
                left = place_aligned(ctx, &mut bins, &left, from);
            }
            bins.retain(|b| !b.pods.is_empty());
            if !left.is_empty() {
                let Some(o) = cheapest_single(ctx, class, &left) else {
                    continue;
                };
                bins.extend(first_fit_single(ctx, class, class_index, &left, o));
            }
            packings.push(bins);
        }
    }
    packings
}

/// Empty nodes, `count` of each `(offering, count)`.
fn open_nodes<'a>(
    nodes: impl IntoIterator<Item = &'a (usize, u64)>,
    class_index: usize,
) -> Vec<Bin> {
    nodes
        .into_iter()
        .flat_map(|&(o, count)| (0..count).map(move |_| new_bin(o, class_index)))
        .collect()
}

/// How pods go onto a whole-node mix.
#[derive(Clone, Copy)]
enum Placement {
    /// Largest first, each where its shape matches the room left ([`place_aligned`]).
    Aligned,
    /// Most memory per cpu first, each on the most memory-rich node with room
    /// ([`place_by_shape`]), as the assignment LP would split them.
    ByShape,
}

/// Places pods, most memory per cpu first, each on the node with the most memory per cpu that
/// can take it; returns the pods that fit nowhere.
fn place_by_shape(ctx: &Context<'_>, bins: &mut [Bin], pods: &[usize]) -> Vec<usize> {
    let mut order = pods.to_vec();
    order.sort_by(|&a, &b| mem_per_cpu(&ctx.demand[b]).total_cmp(&mem_per_cpu(&ctx.demand[a])));
    let mut by_shape: Vec<usize> = (0..bins.len()).collect();
    by_shape.sort_by(|&a, &b| {
        mem_per_cpu(&ctx.capacity[bins[b].offering])
            .total_cmp(&mem_per_cpu(&ctx.capacity[bins[a].offering]))
    });
    let mut left = Vec::new();
    for pod in order {
        match by_shape.iter().find(|&&b| ctx.can_take(&bins[b], pod)) {
            Some(&b) => ctx.put(&mut bins[b], pod),
            None => left.push(pod),
        }
    }
    left
}

/// The cheapest whole nodes of at most two of `types` that hold `demand` in every resource.
fn cover(ctx: &Context<'_>, types: &[usize], demand: &Vector) -> Option<Vec<(usize, u64)>> {
    if demand.iter().all(|&d| d == 0) {
        return Some(Vec::new());
    }
    // Nodes of type `o` needed for `need`, or `None` when it lacks a resource.
    let nodes_for = |o: usize, need: &Vector| -> Option<u64> {
        let c = &ctx.capacity[o];
        (0..DIMENSIONS)
            .filter(|&r| need[r] > 0)
            .map(|r| (c[r] > 0).then(|| need[r].div_ceil(c[r])))
            .try_fold(0, |most, n| n.map(|n| most.max(n)))
    };
    let mut best: Option<(f64, Vec<(usize, u64)>)> = None;
    for (i, &a) in types.iter().enumerate() {
        if let Some(n) = nodes_for(a, demand).filter(|&n| n <= COVER_MOST) {
            let cost = ctx.price[a] * n as f64;
            if best.as_ref().is_none_or(|b| cost < b.0) {
                best = Some((cost, vec![(a, n)]));
            }
        }
        for &b in &types[i + 1..] {
            for k in 1..=COVER_MOST {
                let rest: Vector =
                    std::array::from_fn(|r| demand[r].saturating_sub(k * ctx.capacity[a][r]));
                if rest.iter().all(|&d| d == 0) {
                    break;
                }
                let a_cost = ctx.price[a] * k as f64;
                if best.as_ref().is_some_and(|b| a_cost >= b.0) {
                    break;
                }
                let Some(n) = nodes_for(b, &rest).filter(|&n| n <= COVER_MOST) else {
                    continue;
                };
                let cost = a_cost + ctx.price[b] * n as f64;
                if best.as_ref().is_none_or(|b| cost < b.0) {
                    best = Some((cost, vec![(a, k), (b, n)]));
                }
            }
        }
    }
    best.map(|(_, nodes)| nodes)
}

/// What `demand` costs on nodes of `offering` alone, fluidly (at least one node); `None` when
/// the offering lacks a resource it needs.
fn fluid_alone(ctx: &Context<'_>, demand: &Vector, offering: usize) -> Option<f64> {
    let c = &ctx.capacity[offering];
    let nodes = (0..DIMENSIONS)
        .filter(|&r| demand[r] > 0)
        .map(|r| {
            if c[r] == 0 {
                f64::INFINITY
            } else {
                demand[r] as f64 / c[r] as f64
            }
        })
        .fold(0.0, f64::max);
    nodes
        .is_finite()
        .then(|| ctx.price[offering] * nodes.max(1.0))
}

/// The frontier offering that holds the pods alone for the least, fluidly.
fn cheapest_single(ctx: &Context<'_>, class: &Class, pods: &[usize]) -> Option<usize> {
    let total = total_demand(ctx, pods);
    class
        .frontier
        .iter()
        .filter_map(|&o| fluid_alone(ctx, &total, o).map(|cost| (cost, o)))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, o)| o)
}

/// (group, how many of its pods) making up one node's fill.
type PodCounts = Vec<(usize, usize)>;

/// Nodes chosen one pattern at a time, the way cutting-stock problems are rounded: the fluid
/// optimum of the pods still unplaced prices each resource; every frontier type is filled with
/// the most valuable pods that fit (largest first), and the type whose fill is worth the most
/// per dollar is opened, as many times as its pods allow. Prices are re-solved after each
/// pattern, so the tail, once small, goes to nodes its size.
fn priced_fills(ctx: &Context<'_>, class: &Class, class_index: usize, pods: &[usize]) -> Vec<Bin> {
    // Pods with the same requests and hostname rules are interchangeable.
    let mut groups: BTreeMap<Vector, Vec<usize>> = BTreeMap::new();
    for &p in pods {
        groups.entry(ctx.demand[p]).or_default().push(p);
    }
    let mut groups: Vec<(Vector, Vec<usize>)> = groups.into_iter().collect();
    let columns: Vec<(Vector, f64)> = class
        .frontier
        .iter()
        .map(|&o| (ctx.capacity[o], ctx.price[o]))
        .collect();
    let mut bins: Vec<Bin> = Vec::new();
    let mut stuck: Vec<usize> = Vec::new();
    loop {
        let mut remaining = [0; DIMENSIONS];
        for (d, members) in &groups {
            for _ in members {
                add(&mut remaining, d);
            }
        }
        if remaining.iter().all(|&r| r == 0) {
            break;
        }
        let Some(fluid) = lp::solve(&remaining, &columns) else {
            break;
        };
        let value = |d: &Vector| -> f64 {
            (0..DIMENSIONS)
                .map(|r| fluid.unit_prices[r] * d[r] as f64)
                .sum()
        };
        let mut order: Vec<usize> = (0..groups.len())
            .filter(|&g| !groups[g].1.is_empty())
            .collect();
        let worth: Vec<f64> = groups.iter().map(|(d, _)| value(d)).collect();
        order.sort_by(|&a, &b| worth[b].total_cmp(&worth[a]));
        let mut best: Option<(f64, usize, PodCounts)> = None;
        for &o in &class.frontier {
            let cap = &ctx.capacity[o];
            let mut used = [0; DIMENSIONS];
            let mut fill_worth = 0.0;
            let mut fill: PodCounts = Vec::new();
            for &g in &order {
                let (d, members) = &groups[g];
                let room = (0..DIMENSIONS)
                    .filter(|&r| d[r] > 0)
                    .map(|r| ((cap[r] - used[r]) / d[r]) as usize)
                    .min()
                    .unwrap_or(members.len());
                let taken = room.min(members.len());
                if taken > 0 {
                    for (r, u) in used.iter_mut().enumerate() {
                        *u += d[r] * taken as u64;
                    }
                    fill_worth += worth[g] * taken as f64;
                    fill.push((g, taken));
                }
            }
            if fill_worth <= 0.0 {
                continue;
            }
            let per_dollar = fill_worth / ctx.price[o];
            if best.as_ref().is_none_or(|b| per_dollar > b.0) {
                best = Some((per_dollar, o, fill));
            }
        }
        let Some((_, o, fill)) = best else {
            stuck.extend(groups.iter_mut().flat_map(|(_, m)| m.drain(..)));
            break;
        };
        let repeats = fill
            .iter()
            .map(|&(g, taken)| groups[g].1.len() / taken)
            .min()
            .unwrap_or(1)
            .max(1);
        for _ in 0..repeats {
            let mut bin = new_bin(o, class_index);
            for &(g, taken) in &fill {
                for _ in 0..taken {
                    let Some(p) = groups[g].1.pop() else { break };
                    if ctx.can_take(&bin, p) {
                        ctx.put(&mut bin, p);
                    } else {
                        stuck.push(p);
                    }
                }
            }
            if !bin.pods.is_empty() {
                bins.push(bin);
            }
        }
    }
    let left = place_aligned(ctx, &mut bins, &stuck, 0);
    if !left.is_empty()
        && let Some(o) = cheapest_single(ctx, class, &left)
    {
        bins.extend(first_fit_single(ctx, class, class_index, &left, o));
    }
    bins
}

/// Memory per millicore: the order pods and node shapes are split by.
fn mem_per_cpu(v: &Vector) -> f64 {
    v[MEM] as f64 / v[CPU].max(1) as f64
}

/// The pods by memory per cpu, lowest first, and the running totals of their demands along that
/// order (`totals[i]` sums the first `i`).
fn by_mem_per_cpu(ctx: &Context<'_>, pods: &[usize]) -> (Vec<usize>, Vec<Vector>) {
    let mut keyed: Vec<(f64, usize)> = pods
        .iter()
        .map(|&p| (mem_per_cpu(&ctx.demand[p]), p))
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    let order: Vec<usize> = keyed.into_iter().map(|(_, p)| p).collect();
    let mut totals = vec![[0u64; DIMENSIONS]; order.len() + 1];
    for (i, &p) in order.iter().enumerate() {
        let mut next = totals[i];
        add(&mut next, &ctx.demand[p]);
        totals[i + 1] = next;
    }
    (order, totals)
}

/// Realises a fluid mix: pods sorted by memory per cpu go, most memory-hungry first, to the
/// mix's types sorted the same way, each type taking pods up to its fluid capacity; each group
/// is then packed first-fit decreasing onto its type. Pods a type cannot hold go on to the next.
fn split_by_shape(
    ctx: &Context<'_>,
    class: &Class,
    class_index: usize,
    pods: &[usize],
    mix: &[(usize, f64)],
) -> Vec<Bin> {
    let mut types = mix.to_vec();
    types.sort_by(|a, b| {
        mem_per_cpu(&ctx.capacity[b.0]).total_cmp(&mem_per_cpu(&ctx.capacity[a.0]))
    });
    let mut order = pods.to_vec();
    order.sort_by(|&a, &b| mem_per_cpu(&ctx.demand[b]).total_cmp(&mem_per_cpu(&ctx.demand[a])));
    let mut groups: Vec<(usize, Vec<usize>)> =
        types.iter().map(|&(o, _)| (o, Vec::new())).collect();
    let mut unplaced = Vec::new();
    let mut current = 0;
    let mut taken = [0u64; DIMENSIONS];
    for pod in order {
        let d = &ctx.demand[pod];
        loop {
            let Some(&(o, x)) = types.get(current) else {
                unplaced.push(pod);
                break;
            };
            let c = &ctx.capacity[o];
            let last = current + 1 == types.len();
            let within =
                (0..DIMENSIONS).all(|r| (taken[r] + d[r]) as f64 <= x * c[r] as f64 + 1e-6);
            if fits(&[0; DIMENSIONS], d, c) && (within || last) {
                add(&mut taken, d);
                groups[current].1.push(pod);
                break;
            }
            if !within && !last {
                current += 1;
                taken = [0; DIMENSIONS];
                continue;
            }
            unplaced.push(pod);
            break;
        }
    }
    let mut bins: Vec<Bin> = Vec::new();
    for (o, group) in groups {
        if !group.is_empty() {
            bins.extend(first_fit_single(ctx, class, class_index, &group, o));
        }
    }
    if !unplaced.is_empty() {
        bins.extend(first_fit_single(
            ctx,
            class,
            class_index,
            &unplaced,
            types.first().map_or(class.allowed[0], |t| t.0),
        ));
    }
    bins
}

/// What the pods request together.
fn total_demand(ctx: &Context<'_>, pods: &[usize]) -> Vector {
    let mut total = [0; DIMENSIONS];
    for &p in pods {
        add(&mut total, &ctx.demand[p]);
    }
    total
}

fn solve_for(ctx: &Context<'_>, pods: &[usize], columns: &[usize]) -> Option<lp::FluidSolution> {
    let total = total_demand(ctx, pods);
    let columns: Vec<(Vector, f64)> = columns
        .iter()
        .map(|&o| (ctx.capacity[o], ctx.price[o]))
        .collect();
    lp::solve(&total, &columns)
}

/// Places pods, largest first, each on the node from `bins[from..]` where its demand best aligns
/// with the room left (the dot-product rule for vector packing); returns the pods that fit
/// nowhere.
fn place_aligned(ctx: &Context<'_>, bins: &mut [Bin], pods: &[usize], from: usize) -> Vec<usize> {
    let mut order = pods.to_vec();
    order.sort_by(|&a, &b| size_key(&ctx.demand[b]).cmp(&size_key(&ctx.demand[a])));
    // Shapes compare on one scale for every node size: each resource over the pods' total.
    let total = total_demand(ctx, pods);
    let scale: [f64; DIMENSIONS] = std::array::from_fn(|r| {
        if total[r] == 0 {
            0.0
        } else {
            1.0 / total[r] as f64
        }
    });
    // Each open node's room on that scale, as a unit vector: cosines are then dot products.
    let direction = |bin: &Bin| -> [f64; DIMENSIONS] {
        let c = &ctx.capacity[bin.offering];
        let room: [f64; DIMENSIONS] =
            std::array::from_fn(|r| (c[r] - bin.used[r]) as f64 * scale[r]);
        let norm = room.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 0.0 {
            room.map(|x| x / norm)
        } else {
            [0.0; DIMENSIONS]
        }
    };
    let mut open: Vec<usize> = (from..bins.len()).collect();
    let mut directions: Vec<[f64; DIMENSIONS]> =
        open.iter().map(|&b| direction(&bins[b])).collect();
    let mut left = Vec::new();
    for pod in order {
        let d: [f64; DIMENSIONS] = std::array::from_fn(|r| ctx.demand[pod][r] as f64 * scale[r]);
        let mut best: Option<(f64, usize)> = None;
        for (slot, &b) in open.iter().enumerate() {
            if !ctx.can_take(&bins[b], pod) {
                continue;
            }
            // Cosine between the pod's demand and the node's room: the pod goes where its
            // shape matches what is left, whatever the node's size.
            let score: f64 = (0..DIMENSIONS).map(|r| d[r] * directions[slot][r]).sum();
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, slot));
            }
        }
        let Some((_, slot)) = best else {
            left.push(pod);
            continue;
        };
        let b = open[slot];
        ctx.put(&mut bins[b], pod);
        if bins[b].used[PODS] >= ctx.capacity[bins[b].offering][PODS] {
            open.swap_remove(slot);
            directions.swap_remove(slot);
        } else {
            directions[slot] = direction(&bins[b]);
        }
    }
    left
}

/// How many of the least-filled nodes each packing tries to empty into the others.
const REPACK_ATTEMPTS: usize = 16;

/// Local search on a class's new nodes: the least-filled ones are emptied into the room the
/// others have left, when all their pods fit there.
fn empty_sparse_bins(ctx: &Context<'_>, bins: &mut Vec<Bin>) {
    let mut order: Vec<usize> = (0..bins.len()).collect();
    order.sort_by(|&a, &b| fill(ctx, &bins[a]).total_cmp(&fill(ctx, &bins[b])));
    let mut emptied = vec![false; bins.len()];
    for &victim in order.iter().take(REPACK_ATTEMPTS) {
        let mut trial: Vec<Vector> = bins.iter().map(|b| b.used).collect();
        let mut trial_host: Vec<NodeState> = bins.iter().map(|b| b.host.clone()).collect();
        let mut moves = Vec::with_capacity(bins[victim].pods.len());
        let mut pods = bins[victim].pods.clone();
        pods.sort_by(|&a, &b| size_key(&ctx.demand[b]).cmp(&size_key(&ctx.demand[a])));
        let all_moved = pods.iter().all(|&p| {
            let d = &ctx.demand[p];
            let target = (0..bins.len())
                .filter(|&b| {
                    b != victim
                        && !emptied[b]
                        && fits(&trial[b], d, &ctx.capacity[bins[b].offering])
                        && ctx.rules.host_refusal(p, &trial_host[b]).is_none()
                })
                .min_by_key(|&b| {
                    let c = &ctx.capacity[bins[b].offering];
                    // Best fit: the node left with the least room in its scarcest resource.
                    (0..DIMENSIONS)
                        .filter(|&r| c[r] > 0)
                        .map(|r| (c[r] - trial[b][r] - d[r]) * 1_000 / c[r])
                        .min()
                        .unwrap_or(0)
                });
            match target {
                Some(b) => {
                    add(&mut trial[b], d);
                    ctx.rules.host_add(p, &mut trial_host[b]);
                    moves.push((p, b));
                    true
                }
                None => false,
            }
        });
        if all_moved {
            for (p, b) in moves {
                ctx.put(&mut bins[b], p);
            }
            bins[victim].pods.clear();
            bins[victim].used = [0; DIMENSIONS];
            bins[victim].host = NodeState::default();
            emptied[victim] = true;
        }
    }
    bins.retain(|b| !b.pods.is_empty());
}

/// Moves a node to the cheapest offering every pod on it allows that still holds them.
fn shrink(ctx: &Context<'_>, class_order: &[&[usize]], class_allowed: &[&[bool]], bin: &mut Bin) {
    let Some((&first, others)) = bin.classes.split_first() else {
        return;
    };
    let current = ctx.price[bin.offering];
    if let Some(&o) = class_order[first].iter().find(|&&o| {
        others.iter().all(|&c| class_allowed[c][o])
            && fits(&[0; DIMENSIONS], &bin.used, &ctx.capacity[o])
    }) && ctx.price[o] < current
    {
        bin.offering = o;
    }
}

fn allowed_for(class_allowed: &[&[bool]], bin: &Bin, o: usize) -> bool {
    bin.classes.iter().all(|&c| class_allowed[c][o])
}

/// Nodes of one type at one capacity type rotate over the zones that price it the same, so a
/// zone outage or a pool reclaim takes out as few of them as possible.
fn spread_zones(ctx: &Context<'_>, class_allowed: &[&[bool]], bins: &mut [Bin]) {
    let offerings = &ctx.input.offerings;
    let mut same_shape: HashMap<(&str, bool), Vec<usize>> = HashMap::new();
    for (o, offering) in offerings.iter().enumerate() {
        same_shape
            .entry((offering.instance_type.as_str(), offering.is_spot()))
            .or_default()
            .push(o);
    }
    let mut load: HashMap<usize, usize> = HashMap::new();
    for bin in bins.iter_mut() {
        let current = &offerings[bin.offering];
        let Some(siblings) = same_shape.get(&(current.instance_type.as_str(), current.is_spot()))
        else {
            continue;
        };
        let choice = siblings
            .iter()
            .copied()
            .filter(|&o| {
                (ctx.price[o] - ctx.price[bin.offering]).abs() <= 1e-12
                    && allowed_for(class_allowed, bin, o)
                    && fits(&[0; DIMENSIONS], &bin.used, &ctx.capacity[o])
            })
            .min_by_key(|&o| (load.get(&o).copied().unwrap_or(0), o));
        if let Some(o) = choice {
            bin.offering = o;
        }
        *load.entry(bin.offering).or_default() += 1;
    }
}

/// Ensures spot nodes use at least `min_spot_pools` distinct pools (or one per spot node when
/// there are fewer nodes), moving nodes from crowded pools to unused ones at the least added
/// price.
fn diversify_spot(
    ctx: &Context<'_>,
    class_order: &[&[usize]],
    class_allowed: &[&[bool]],
    bins: &mut [Bin],
) {
    let offerings = &ctx.input.offerings;
    let spot_bins: Vec<usize> = (0..bins.len())
        .filter(|&b| offerings[bins[b].offering].is_spot())
        .collect();
    let target = (ctx.input.policy.min_spot_pools as usize).min(spot_bins.len());
    let pool = |o: usize| {
        (
            offerings[o].instance_type.as_str(),
            offerings[o].zone.as_str(),
        )
    };
    let mut per_pool: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for &b in &spot_bins {
        *per_pool.entry(pool(bins[b].offering)).or_default() += 1;
    }
    while per_pool.len() < target {
        let used: HashSet<(&str, &str)> = per_pool.keys().copied().collect();
        let mut best: Option<(f64, usize, usize)> = None;
        for &b in &spot_bins {
            let bin = &bins[b];
            if per_pool.get(&pool(bin.offering)).copied().unwrap_or(0) < 2 {
                continue;
            }
            let Some(&first) = bin.classes.first() else {
                continue;
            };
            let found = class_order[first].iter().copied().find(|&o| {
                offerings[o].is_spot()
                    && !used.contains(&pool(o))
                    && allowed_for(class_allowed, bin, o)
                    && fits(&[0; DIMENSIONS], &bin.used, &ctx.capacity[o])
            });
            if let Some(o) = found {
                let delta = ctx.price[o] - ctx.price[bin.offering];
                if best.is_none_or(|(d, _, _)| delta < d) {
                    best = Some((delta, b, o));
                }
            }
        }
        let Some((_, b, o)) = best else { break };
        if let Some(count) = per_pool.get_mut(&pool(bins[b].offering)) {
            *count -= 1;
        }
        bins[b].offering = o;
        *per_pool.entry(pool(o)).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use spotwise_core::domain::{CapacityType, Taint};

    use super::*;
    use crate::model::{PlanPolicy, Toleration};
    use crate::synth;

    fn offering(
        itype: &str,
        zone: &str,
        capacity: CapacityType,
        cpu_m: u64,
        mem_mib: u64,
        price: f64,
        band: u8,
    ) -> Offering {
        Offering {
            instance_type: itype.into(),
            zone: zone.into(),
            capacity_type: capacity,
            cpu_m,
            mem_mib,
            max_pods: 29,
            gpus: 0,
            price_hr: price,
            interruption_band: Some(band),
            arch: None,
            on_demand_price_hr: None,
            observed_interruptions: 0,
            price_volatility: 0.0,
            labels: BTreeMap::new(),
            taints: Vec::new(),
        }
    }

    fn pod(name: &str, cpu_m: u64, mem_mib: u64, spot_ok: bool) -> PodSpec {
        PodSpec {
            name: name.into(),
            cpu_m,
            mem_mib,
            spot_ok,
            ..PodSpec::default()
        }
    }

    fn offerings() -> Vec<Offering> {
        use CapacityType::*;
        let mut all = Vec::new();
        for zone in ["a", "b", "c"] {
            all.push(offering("m5.large", zone, Spot, 1930, 7200, 0.035, 1));
            all.push(offering("m5.large", zone, OnDemand, 1930, 7200, 0.096, 0));
            all.push(offering("c5.xlarge", zone, Spot, 3920, 6500, 0.06, 2));
            all.push(offering("r5.xlarge", zone, Spot, 3920, 29000, 0.08, 3));
            all.push(offering(
                "m5.2xlarge",
                zone,
                OnDemand,
                7910,
                29000,
                0.384,
                0,
            ));
        }
        all
    }

    /// The invariants every plan must hold, whatever the heuristics chose.
    fn assert_valid(input: &PlanInput, packing: &Packing) {
        let mut placed = vec![0; input.pods.len()];
        for bin in &packing.bins {
            let o = &input.offerings[bin.offering];
            let mut used = [0; DIMENSIONS];
            for &p in &bin.pods {
                placed[p] += 1;
                add(&mut used, &input.pods[p].demand());
                assert!(
                    admits(input, &input.pods[p], o),
                    "{} may not run on {}",
                    input.pods[p].name,
                    o.instance_type
                );
            }
            assert_eq!(used, bin.used);
            assert!(
                fits(&[0; DIMENSIONS], &used, &input.policy.usable(o)),
                "over capacity"
            );
        }
        for u in &packing.unschedulable {
            placed[u.pod] += 1;
        }
        assert!(
            placed.iter().all(|&n| n == 1),
            "every pod placed or rejected exactly once"
        );
    }

    #[test]
    fn synthetic_clusters_are_packed_validly() {
        for seed in 0..5 {
            let input = PlanInput {
                pods: synth::pods(seed, 400),
                offerings: offerings(),
                policy: PlanPolicy {
                    max_interruption_band: 3,
                    ..PlanPolicy::default()
                },
                ..PlanInput::default()
            };
            let packing = pack(&input);
            assert_valid(&input, &packing);
            assert!(packing.unschedulable.is_empty());
            for bin in &packing.bins {
                let o = &input.offerings[bin.offering];
                if bin.pods.iter().any(|&p| !input.pods[p].spot_ok) {
                    assert!(!o.is_spot());
                }
            }
        }
    }

    #[test]
    fn band_cap_selectors_and_taints_are_respected() {
        let mut offers = offerings();
        offers[0].taints.push(Taint {
            key: "dedicated".into(),
            value: Some("batch".into()),
            effect: "NoSchedule".into(),
        });
        let mut zoned = pod("ns/zoned", 500, 500, true);
        zoned
            .node_selector
            .insert("topology.kubernetes.io/zone".into(), "b".into());
        let mut tolerant = pod("ns/batch", 500, 500, true);
        tolerant
            .node_selector
            .insert("topology.kubernetes.io/zone".into(), "a".into());
        tolerant
            .node_selector
            .insert("node.kubernetes.io/instance-type".into(), "m5.large".into());
        tolerant
            .node_selector
            .insert("karpenter.sh/capacity-type".into(), "spot".into());
        tolerant.tolerations.push(Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("batch".into()),
            effect: Some("NoSchedule".into()),
        });
        let input = PlanInput {
            pods: vec![zoned, tolerant, pod("ns/p", 3000, 20000, true)],
            offerings: offers,
            policy: PlanPolicy {
                max_interruption_band: 2,
                ..PlanPolicy::default()
            },
            ..PlanInput::default()
        };
        let packing = pack(&input);
        assert_valid(&input, &packing);
        let node_of = |name: &str| {
            let p = input.pods.iter().position(|p| p.name == name).unwrap();
            let b = packing.bins.iter().find(|b| b.pods.contains(&p)).unwrap();
            &input.offerings[b.offering]
        };
        assert_eq!(node_of("ns/zoned").zone, "b");
        assert_eq!(node_of("ns/batch").instance_type, "m5.large");
        // r5.xlarge spot is band 3, above the cap: the memory-heavy pod goes on-demand.
        assert_eq!(node_of("ns/p").instance_type, "m5.2xlarge");
    }

    #[test]
    fn spot_nodes_spread_over_the_policy_minimum_of_pools() {
        let input = PlanInput {
            pods: (0..60)
                .map(|i| pod(&format!("ns/p{i}"), 900, 1000, true))
                .collect(),
            offerings: offerings(),
            policy: PlanPolicy {
                max_interruption_band: 3,
                min_spot_pools: 3,
                ..PlanPolicy::default()
            },
            ..PlanInput::default()
        };
        let packing = pack(&input);
        assert_valid(&input, &packing);
        let pools: HashSet<(&str, &str)> = packing
            .bins
            .iter()
            .map(|b| &input.offerings[b.offering])
            .filter(|o| o.is_spot())
            .map(|o| (o.instance_type.as_str(), o.zone.as_str()))
            .collect();
        assert!(pools.len() >= 3, "{pools:?}");
    }

    #[test]
    fn unschedulable_pods_carry_their_reason() {
        let mut selector = pod("ns/arm", 100, 100, true);
        selector
            .node_selector
            .insert("kubernetes.io/arch".into(), "arm64".into());
        let input = PlanInput {
            pods: vec![
                pod("ns/huge", 64_000, 1000, true),
                pod("ns/od", 100, 100, false),
                selector,
            ],
            offerings: offerings().into_iter().filter(|o| o.is_spot()).collect(),
            policy: PlanPolicy {
                max_interruption_band: 4,
                ..PlanPolicy::default()
            },
            ..PlanInput::default()
        };
        let packing = pack(&input);
        assert_valid(&input, &packing);
        let reasons: Vec<&str> = packing
            .unschedulable
            .iter()
            .map(|u| u.reason.as_str())
            .collect();
        assert_eq!(reasons.len(), 3);
        assert!(reasons[0].contains("64000m cpu"), "{}", reasons[0]);
        assert!(reasons[1].contains("spot_ok is false"), "{}", reasons[1]);
        assert!(
            reasons[2].contains("nodeSelector kubernetes.io/arch=arm64"),
            "{}",
            reasons[2]
        );
    }

    #[test]
    fn empty_input_plans_nothing() {
        let packing = pack(&PlanInput::default());
        assert!(packing.bins.is_empty() && packing.unschedulable.is_empty());
    }

    fn context(input: &PlanInput) -> (Context<'_>, Vec<Class>) {
        let price: Vec<f64> = input
            .offerings
            .iter()
            .map(|o| input.policy.ranking_price(o))
            .collect();
        let ctx = Context {
            input,
            rules: Constraints::new(input),
            capacity: input
                .offerings
                .iter()
                .map(|o| input.policy.usable(o))
                .collect(),
            price,
            demand: input.pods.iter().map(PodSpec::demand).collect(),
        };
        let (classes, unplaceable) = classify(&ctx, &vec![false; input.pods.len()]);
        assert!(unplaceable.is_empty());
        (ctx, classes)
    }

    fn on_demand(itype: &str, cpu_m: u64, mem_mib: u64, price: f64) -> Offering {
        offering(itype, "a", CapacityType::OnDemand, cpu_m, mem_mib, price, 0)
    }

    #[test]
    fn the_remainder_is_covered_by_the_cheapest_whole_nodes_of_two_types() {
        let input = PlanInput {
            pods: vec![pod("ns/p", 100, 100, false)],
            offerings: vec![
                on_demand("big", 8000, 16000, 0.8),
                on_demand("small", 2000, 4000, 0.25),
                on_demand("mem", 2000, 16000, 0.3),
            ],
            ..PlanInput::default()
        };
        let (ctx, _) = context(&input);
        let types = [0, 1, 2];
        let names = |nodes: Vec<(usize, u64)>| -> Vec<(String, u64)> {
            nodes
                .into_iter()
                .map(|(o, n)| (input.offerings[o].instance_type.clone(), n))
                .collect()
        };
        // Two big nodes cost 1.6, five small ones 1.25, a big and a memory node 1.1: a big and
        // a small one hold 9000m and 20000 MiB for 1.05.
        let nodes = cover(&ctx, &types, &[9000, 20000, 10, 0]).unwrap();
        assert_eq!(names(nodes), [("big".into(), 1), ("small".into(), 1)]);
        // Memory alone: one memory node.
        let nodes = cover(&ctx, &types, &[1000, 15000, 1, 0]).unwrap();
        assert_eq!(names(nodes), [("mem".into(), 1)]);
        assert_eq!(cover(&ctx, &types, &[0; DIMENSIONS]), Some(Vec::new()));
        // A GPU no type has.
        assert_eq!(cover(&ctx, &types, &[100, 100, 1, 1]), None);
    }

    #[test]
    fn priced_fills_place_every_pod_once_within_capacity() {
        let input = PlanInput {
            pods: synth::pods(3, 500),
            offerings: offerings(),
            policy: PlanPolicy {
                max_interruption_band: 3,
                ..PlanPolicy::default()
            },
            ..PlanInput::default()
        };
        let (ctx, classes) = context(&input);
        let mut placed = vec![0; input.pods.len()];
        for (index, class) in classes.iter().enumerate() {
            for bin in priced_fills(&ctx, class, index, &class.pods) {
                let mut used = [0; DIMENSIONS];
                for &p in &bin.pods {
                    placed[p] += 1;
                    add(&mut used, &ctx.demand[p]);
                }
                assert_eq!(used, bin.used);
                assert!(class.allowed_set[bin.offering]);
                assert!(fits(&[0; DIMENSIONS], &used, &ctx.capacity[bin.offering]));
            }
        }
        assert!(placed.iter().all(|&n| n == 1));
    }

    #[test]
    fn a_node_short_of_cpu_and_one_short_of_memory_are_repacked_together() {
        // Node A holds two cpu-heavy pods and wastes memory, node B two memory-heavy ones and
        // wastes cpu: together they fit one larger node for less than the two.
        let mut pods: Vec<PodSpec> = (0..2)
            .map(|i| pod(&format!("ns/cpu{i}"), 2000, 500, false))
            .collect();
        pods.extend((0..2).map(|i| pod(&format!("ns/mem{i}"), 500, 2000, false)));
        let input = PlanInput {
            pods,
            offerings: vec![
                on_demand("x.large", 4000, 4000, 1.0),
                on_demand("x.xlarge", 6000, 6000, 1.4),
            ],
            ..PlanInput::default()
        };
        let (ctx, classes) = context(&input);
        let mut bins = vec![new_bin(0, 0), new_bin(0, 0)];
        for p in 0..4 {
            ctx.put(&mut bins[p / 2], p);
        }
        repack_complements(&ctx, &classes[0], 0, &mut bins);
        assert_eq!(bins.len(), 1);
        assert_eq!(input.offerings[bins[0].offering].instance_type, "x.xlarge");
        let mut pods = bins[0].pods.clone();
        pods.sort_unstable();
        assert_eq!(pods, [0, 1, 2, 3]);
    }
}
