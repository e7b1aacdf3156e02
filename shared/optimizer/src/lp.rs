//! The fluid relaxation of node selection: min sum(price_t * x_t) subject to
//! sum(capacity_t,r * x_t) >= demand_r for every resource r, x >= 0.
//!
//! With at most four resources the basis is at most 4x4, so a revised simplex with an explicit
//! inverse is exact enough and takes microseconds per pivot over thousands of offerings. Its
//! optimum is a lower bound on any plan's cost for the same pods, and its dual prices value each
//! resource, which the packer uses to size pods and to pick node types that mix well.

use crate::model::{DIMENSIONS, Vector};

#[derive(Debug, Clone, PartialEq)]
pub struct FluidSolution {
    /// Cost of the relaxation: a lower bound on the cost of any packing.
    pub cost: f64,
    /// Fractional node counts, by column index, nonzero only.
    pub nodes: Vec<(usize, f64)>,
    /// Price of one unit of each resource (per millicore, MiB, pod slot, GPU) at the optimum.
    pub unit_prices: [f64; DIMENSIONS],
}

const EPS: f64 = 1e-9;
const MAX_PIVOTS: usize = 10_000;

/// Solves the relaxation for `demand` over columns of (capacity, price). `None` when some
/// demanded resource is offered by no column.
pub fn solve(demand: &Vector, columns: &[(Vector, f64)]) -> Option<FluidSolution> {
    let rows: Vec<usize> = (0..DIMENSIONS).filter(|&r| demand[r] > 0).collect();
    let m = rows.len();
    if m == 0 {
        return Some(FluidSolution {
            cost: 0.0,
            nodes: Vec::new(),
            unit_prices: [0.0; DIMENSIONS],
        });
    }
    // Rows scaled so every right-hand side is 1.
    let coefficient = |column: usize, row: usize| -> f64 {
        let n = columns.len();
        if column < n {
            columns[column].0[rows[row]] as f64 / demand[rows[row]] as f64
        } else if column < n + m {
            if column - n == row { -1.0 } else { 0.0 }
        } else if column - n - m == row {
            1.0
        } else {
            0.0
        }
    };
    let max_price = columns.iter().map(|c| c.1).fold(0.0_f64, f64::max).max(1.0);
    let big_m = max_price * 1e7;
    let n = columns.len();
    let cost = |column: usize| -> f64 {
        if column < n {
            columns[column].1
        } else if column < n + m {
            0.0
        } else {
            big_m
        }
    };

    let mut basis: Vec<usize> = (0..m).map(|row| n + m + row).collect();
    let mut values = vec![1.0; m];
    let mut inverse = vec![vec![0.0; m]; m];
    for (i, row) in inverse.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    let mut duals = vec![0.0; m];
    for _ in 0..MAX_PIVOTS {
        for (r, dual) in duals.iter_mut().enumerate() {
            *dual = (0..m).map(|i| cost(basis[i]) * inverse[i][r]).sum();
        }
        let mut entering = None;
        let mut best = -EPS * max_price;
        for column in 0..n + m {
            let reduced = cost(column)
                - (0..m)
                    .map(|r| duals[r] * coefficient(column, r))
                    .sum::<f64>();
            if reduced < best {
                best = reduced;
                entering = Some(column);
            }
        }
        let Some(entering) = entering else { break };
        let direction: Vec<f64> = (0..m)
            .map(|i| {
                (0..m)
                    .map(|r| inverse[i][r] * coefficient(entering, r))
                    .sum()
            })
            .collect();
        let leaving = pivot(&mut inverse, &mut values, &direction)?;
        basis[leaving] = entering;
    }
    if (0..m).any(|i| basis[i] >= n + m && values[i] > 1e-7) {
        return None;
    }
    let nodes: Vec<(usize, f64)> = (0..m)
        .filter(|&i| basis[i] < n && values[i] > EPS)
        .map(|i| (basis[i], values[i]))
        .collect();
    let mut unit_prices = [0.0; DIMENSIONS];
    for (row, &resource) in rows.iter().enumerate() {
        unit_prices[resource] = duals[row].max(0.0) / demand[resource] as f64;
    }
    Some(FluidSolution {
        cost: nodes.iter().map(|&(c, x)| columns[c].1 * x).sum(),
        nodes,
        unit_prices,
    })
}

/// One pivot of a revised simplex with an explicit basis inverse: the ratio test picks the
/// leaving row for the entering column's `direction` (its column times the inverse), and
/// `values` and `inverse` move to the new basis. Returns the leaving row; `None` when the
/// direction is unbounded.
pub fn pivot(inverse: &mut [Vec<f64>], values: &mut [f64], direction: &[f64]) -> Option<usize> {
    let m = values.len();
    let leaving = (0..m)
        .filter(|&i| direction[i] > EPS)
        .min_by(|&a, &b| (values[a] / direction[a]).total_cmp(&(values[b] / direction[b])))?;
    let step = values[leaving] / direction[leaving];
    for i in 0..m {
        values[i] = if i == leaving {
            step
        } else {
            (values[i] - step * direction[i]).max(0.0)
        };
    }
    let pivot_row: Vec<f64> = inverse[leaving]
        .iter()
        .map(|v| v / direction[leaving])
        .collect();
    for i in 0..m {
        if i == leaving {
            inverse[i].clone_from(&pivot_row);
        } else {
            for r in 0..m {
                inverse[i][r] -= direction[i] * pivot_row[r];
            }
        }
    }
    Some(leaving)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_type_costs_its_binding_resource() {
        // 10 cpu-units and 10 mem-units on a (2, 8) node at 1.0: cpu binds, 5 nodes.
        let s = solve(&[10, 10, 0, 0], &[([2, 8, 0, 0], 1.0)]).unwrap();
        assert!((s.cost - 5.0).abs() < 1e-9);
        assert!((s.unit_prices[CPU_INDEX] - 0.5).abs() < 1e-9);
        assert_eq!(s.unit_prices[1], 0.0);
    }

    const CPU_INDEX: usize = 0;

    #[test]
    fn mixing_two_shapes_beats_either_alone() {
        // Demand (8 cpu, 8 mem). cpu-heavy (4,1) and mem-heavy (1,4) nodes at 1.0 each:
        // alone, 8 nodes; mixed, x = y = 1.6 -> cost 3.2. A balanced (2,2) node at 1.5 costs 6.
        let columns = [
            ([4, 1, 0, 0], 1.0),
            ([1, 4, 0, 0], 1.0),
            ([2, 2, 0, 0], 1.5),
        ];
        let s = solve(&[8, 8, 0, 0], &columns).unwrap();
        assert!((s.cost - 3.2).abs() < 1e-9, "{s:?}");
        assert_eq!(s.nodes.len(), 2);
        // Every column prices at or above its resources' value (dual feasibility).
        for (capacity, price) in columns {
            let value: f64 = (0..DIMENSIONS)
                .map(|r| s.unit_prices[r] * capacity[r] as f64)
                .sum();
            assert!(value <= price + 1e-9);
        }
    }

    #[test]
    fn pod_slots_can_bind() {
        // 100 tiny pods, 29 slots per node: 100/29 nodes.
        let s = solve(&[1000, 1000, 100, 0], &[([1930, 7200, 29, 0], 0.1)]).unwrap();
        assert!((s.cost - 0.1 * 100.0 / 29.0).abs() < 1e-9);
    }

    #[test]
    fn unserved_resource_is_infeasible() {
        assert_eq!(solve(&[1, 1, 1, 1], &[([4, 4, 4, 0], 1.0)]), None);
        assert_eq!(solve(&[0, 0, 0, 0], &[]).map(|s| s.cost), Some(0.0));
    }
}
