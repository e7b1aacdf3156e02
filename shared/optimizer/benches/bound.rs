//! The lower bound the plan benchmark measures against: the LP relaxation of the assignment
//! model.
//!
//! ```text
//! min  sum_t p_t y_t
//! s.t. sum_t x_gt = n_g                     every pod group g is placed
//!      sum_g d_gr x_gt <= C_tr y_t          cpu, memory, pod slots and GPUs of type t
//!      x, y >= 0;  x_gt = 0 unless group g may run on type t and fits it
//! ```
//!
//! Unlike the fluid bound, a pod's share on a type takes that type's cpu, memory and pod slots
//! together, and a pod never goes on a type it does not fit. Zones collapse to each type's
//! cheapest price (per capacity type). Pods are grouped by their requests rounded down (which
//! keeps it a lower bound), and types that another type dominates (as much of every resource,
//! the same pods admitted, no higher price) are dropped.
//!
//! It is solved through its dual: max sum_g n_g u_g such that, for every type t and every
//! fractional way z of filling one node of it, sum_g z_g u_g <= p_t. Cutting planes: at the
//! current u, each type's fullest fill is a linear program over its three or four resources,
//! solved exactly; the violated fills become constraints and microlp re-solves. Any u, scaled
//! down until no type's fullest fill is worth more than its price, is feasible for the dual, so
//! every round yields a valid bound; rounds stop when it is within 0.05% of the relaxed one.

use std::collections::HashMap;
use std::time::Duration;

use microlp::{ComparisonOp, OptimizationDirection, Problem, Variable};
use serde::{Deserialize, Serialize};
use spotwise_optimizer::lp;
use spotwise_optimizer::model::{DIMENSIONS, PlanInput, Vector};
use spotwise_optimizer::packing::admits;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bound {
    /// A valid lower bound on the cost of any plan (a dual-feasible value).
    pub value: f64,
    /// The relaxed dual's optimum when the rounds stopped: the LP's value lies in between.
    pub relaxed: f64,
    pub groups: usize,
    pub types: usize,
    pub cuts: usize,
}

/// Keeps the `bits` most significant bits of a request: at most 2^(1-bits) lower.
fn round_down(value: u64, bits: u32) -> u64 {
    let width = u64::BITS - value.leading_zeros();
    if width <= bits {
        value
    } else {
        let shift = width - bits;
        (value >> shift) << shift
    }
}

/// One type's fullest fill at the current prices, worth `violation` times the type's price.
struct Cut {
    violation: f64,
    /// (group, pods of it per node)
    fill: Vec<(usize, f64)>,
    price: f64,
}

struct Column {
    capacity: Vector,
    price: f64,
    /// Which pod classes may run on it.
    classes: Vec<bool>,
}

/// Pod classes (pods admitted by the same offerings): each class's admitted offerings, and
/// each pod's class.
fn classes(input: &PlanInput) -> (Vec<Vec<bool>>, Vec<usize>) {
    let mut class_of: HashMap<Vec<bool>, usize> = HashMap::new();
    let mut class_admits: Vec<Vec<bool>> = Vec::new();
    let mut pod_class = Vec::with_capacity(input.pods.len());
    for pod in &input.pods {
        let admitted: Vec<bool> = input
            .offerings
            .iter()
            .map(|o| admits(input, pod, o))
            .collect();
        let next = class_admits.len();
        let class = *class_of.entry(admitted.clone()).or_insert(next);
        if class == next {
            class_admits.push(admitted);
        }
        pod_class.push(class);
    }
    (class_admits, pod_class)
}

/// One column per (type, capacity type) that admits some class: its cheapest zone, and the
/// classes it admits there; columns another dominates (as much of every resource, the same
/// classes admitted, no higher price) dropped.
fn columns(input: &PlanInput, class_admits: &[Vec<bool>]) -> Vec<Column> {
    let mut by_type: HashMap<(&str, bool), Column> = HashMap::new();
    for (o, offering) in input.offerings.iter().enumerate() {
        let classes: Vec<bool> = class_admits.iter().map(|a| a[o]).collect();
        if !classes.iter().any(|&c| c) {
            continue;
        }
        let column = by_type
            .entry((offering.instance_type.as_str(), offering.is_spot()))
            .or_insert_with(|| Column {
                capacity: input.policy.usable(offering),
                price: f64::INFINITY,
                classes: vec![false; class_admits.len()],
            });
        column.price = column.price.min(offering.price_hr);
        for (c, &admitted) in classes.iter().enumerate() {
            column.classes[c] |= admitted;
        }
    }
    let mut columns: Vec<Column> = by_type.into_values().collect();
    columns.sort_by(|a, b| a.price.total_cmp(&b.price));
    let dominated = |a: &Column, b: &Column| {
        b.price <= a.price
            && (0..DIMENSIONS).all(|r| b.capacity[r] >= a.capacity[r])
            && a.classes.iter().zip(&b.classes).all(|(x, y)| !x || *y)
    };
    let mut kept: Vec<Column> = Vec::new();
    for column in columns {
        if !kept.iter().any(|k| dominated(&column, k)) {
            kept.retain(|k| !dominated(k, &column));
            kept.push(column);
        }
    }
    kept
}

/// `bits` of each request are kept when grouping pods (`u32::MAX` keeps them exact). `None` when
/// some pod fits no type.
pub fn assignment_lp(input: &PlanInput, bits: u32) -> Option<Bound> {
    let (class_admits, class_of_pod) = classes(input);
    let mut groups: HashMap<(usize, Vector), f64> = HashMap::new();
    for (pod, &class) in input.pods.iter().zip(&class_of_pod) {
        let d = pod.demand();
        let rounded: Vector = [round_down(d[0], bits), round_down(d[1], bits), d[2], d[3]];
        *groups.entry((class, rounded)).or_default() += 1.0;
    }
    let mut groups: Vec<((usize, Vector), f64)> = groups.into_iter().collect();
    groups.sort_by_key(|g| g.0);

    let columns = columns(input, &class_admits);

    let fits = |g: usize, t: usize| {
        let ((class, d), _) = groups[g];
        columns[t].classes[class] && (0..DIMENSIONS).all(|r| d[r] <= columns[t].capacity[r])
    };
    let eligible: Vec<Vec<usize>> = (0..columns.len())
        .map(|t| (0..groups.len()).filter(|&g| fits(g, t)).collect())
        .collect();

    // Each u_g is at most the cheapest price of one pod of g alone on a node.
    let mut problem = Problem::new(OptimizationDirection::Maximize);
    let mut vars: Vec<Variable> = Vec::with_capacity(groups.len());
    for (g, ((_, d), count)) in groups.iter().enumerate() {
        let alone = (0..columns.len())
            .filter(|&t| fits(g, t))
            .map(|t| {
                let per_node = (0..DIMENSIONS)
                    .filter(|&r| d[r] > 0)
                    .map(|r| columns[t].capacity[r] as f64 / d[r] as f64)
                    .fold(f64::INFINITY, f64::min);
                columns[t].price / per_node
            })
            .fold(f64::INFINITY, f64::min);
        if !alone.is_finite() {
            return None;
        }
        vars.push(problem.add_var(*count, (0.0, alone)));
    }
    let mut solution = problem.solve().ok()?.into_solution().ok()?;
    let mut cuts = 0;
    loop {
        let u: Vec<f64> = vars.iter().map(|&v| solution.var_value(v)).collect();
        let relaxed = solution.objective();
        let mut worst = 1.0_f64;
        let mut violated: Vec<Cut> = Vec::new();
        for (t, column) in columns.iter().enumerate() {
            let (value, fill) = fullest_fill(&column.capacity, &eligible[t], &groups, &u);
            if value > column.price {
                worst = worst.max(value / column.price);
                violated.push(Cut {
                    violation: value / column.price,
                    fill,
                    price: column.price,
                });
            }
        }
        let value = relaxed / worst;
        if violated.is_empty() || value >= relaxed * (1.0 - 5e-4) {
            return Some(Bound {
                value,
                relaxed,
                groups: groups.len(),
                types: columns.len(),
                cuts,
            });
        }
        violated.sort_by(|a, b| b.violation.total_cmp(&a.violation));
        for Cut { fill, price, .. } in violated.into_iter().take(64) {
            let row: Vec<(Variable, f64)> = fill.iter().map(|&(g, z)| (vars[g], z)).collect();
            solution = solution
                .add_constraint(row.as_slice(), ComparisonOp::Le, price)
                .ok()?
                .into_solution()
                .ok()?;
            cuts += 1;
        }
    }
}

/// max sum_g u_g z_g  s.t.  sum_g d_g z_g <= capacity, z >= 0, over the eligible groups: the
/// primal simplex from the all-slack basis, over at most four rows.
fn fullest_fill(
    capacity: &Vector,
    eligible: &[usize],
    groups: &[((usize, Vector), f64)],
    u: &[f64],
) -> (f64, Vec<(usize, f64)>) {
    let rows: Vec<usize> = (0..DIMENSIONS).filter(|&r| capacity[r] > 0).collect();
    let m = rows.len();
    // Rows scaled so each capacity is 1; basis entries are group indices or slack rows.
    let coefficient = |g: usize, i: usize| groups[g].0.1[rows[i]] as f64 / capacity[rows[i]] as f64;
    #[derive(Clone, Copy, PartialEq)]
    enum Basic {
        Slack(usize),
        Group(usize),
    }
    let mut basis: Vec<Basic> = (0..m).map(Basic::Slack).collect();
    let mut inverse = vec![vec![0.0; m]; m];
    for (i, row) in inverse.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    let mut values = vec![1.0; m];
    for _ in 0..200 {
        let cost = |b: Basic| match b {
            Basic::Slack(_) => 0.0,
            Basic::Group(g) => u[g],
        };
        let duals: Vec<f64> = (0..m)
            .map(|r| (0..m).map(|i| cost(basis[i]) * inverse[i][r]).sum())
            .collect();
        let mut entering: Option<(f64, Basic)> = None;
        for &g in eligible {
            let reduced = u[g] - (0..m).map(|r| duals[r] * coefficient(g, r)).sum::<f64>();
            if reduced > 1e-12 && entering.is_none_or(|(best, _)| reduced > best) {
                entering = Some((reduced, Basic::Group(g)));
            }
        }
        for (r, &dual) in duals.iter().enumerate() {
            if -dual > 1e-12 && entering.is_none_or(|(best, _)| -dual > best) {
                entering = Some((-dual, Basic::Slack(r)));
            }
        }
        let Some((_, column)) = entering else { break };
        let a: Vec<f64> = (0..m)
            .map(|r| match column {
                Basic::Slack(s) => f64::from(u8::from(s == r)),
                Basic::Group(g) => coefficient(g, r),
            })
            .collect();
        let direction: Vec<f64> = (0..m)
            .map(|i| (0..m).map(|r| inverse[i][r] * a[r]).sum())
            .collect();
        let Some(leaving) = lp::pivot(&mut inverse, &mut values, &direction) else {
            break;
        };
        basis[leaving] = column;
    }
    let fill: Vec<(usize, f64)> = (0..m)
        .filter_map(|i| match basis[i] {
            Basic::Group(g) if values[i] > 0.0 => Some((g, values[i])),
            _ => None,
        })
        .collect();
    (fill.iter().map(|&(g, z)| u[g] * z).sum(), fill)
}

/// What the LP cannot see: nodes come whole. The assignment model above with integer node
/// counts (pods may still split across a type's nodes, and zones still collapse to the
/// cheapest), so it is a lower bound on every plan; a small cluster's spot part cannot buy
/// half of a metal instance here as it can in the LP. Exact pod requests, no rounding. Node
/// counts are capped by what `upper` (a plan's cost) buys. Solved by microlp's branch and
/// bound; `None` unless proven optimal within `limit`.
pub fn whole_node_assignment(input: &PlanInput, upper: f64, limit: Duration) -> Option<f64> {
    let (class_admits, class_of_pod) = classes(input);
    let mut groups: HashMap<(usize, Vector), f64> = HashMap::new();
    for (pod, &class) in input.pods.iter().zip(&class_of_pod) {
        *groups.entry((class, pod.demand())).or_default() += 1.0;
    }
    let groups: Vec<((usize, Vector), f64)> = groups.into_iter().collect();
    let columns: Vec<Column> = columns(input, &class_admits)
        .into_iter()
        .filter(|c| c.price <= upper)
        .collect();
    let mut problem = Problem::new(OptimizationDirection::Minimize);
    problem.set_time_limit(limit);
    let mut placed: Vec<Vec<(Variable, f64)>> = vec![Vec::new(); groups.len()];
    for column in &columns {
        let most = (upper / column.price + 1e-9).floor() as i32;
        let count = problem.add_integer_var(column.price, (0, most));
        let mut rows: Vec<Vec<(Variable, f64)>> = vec![vec![(count, 0.0)]; DIMENSIONS];
        for (r, row) in rows.iter_mut().enumerate() {
            row[0].1 = -(column.capacity[r] as f64);
        }
        for (g, ((class, d), n)) in groups.iter().enumerate() {
            if !column.classes[*class] || (0..DIMENSIONS).any(|r| d[r] > column.capacity[r]) {
                continue;
            }
            let x = problem.add_var(0.0, (0.0, *n));
            placed[g].push((x, 1.0));
            for (r, row) in rows.iter_mut().enumerate() {
                if d[r] > 0 {
                    row.push((x, d[r] as f64));
                }
            }
        }
        for row in rows.iter().filter(|row| row.len() > 1) {
            problem.add_constraint(row.as_slice(), ComparisonOp::Le, 0.0);
        }
    }
    for (g, (_, n)) in groups.iter().enumerate() {
        problem.add_constraint(placed[g].as_slice(), ComparisonOp::Eq, *n);
    }
    let outcome = problem.solve().ok()?;
    if !outcome.is_optimal() {
        return None;
    }
    outcome.solution().map(|s| s.objective())
}
