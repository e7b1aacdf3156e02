//! Money as exact decimals, and splitting an amount into parts that sum back to it exactly.

use std::ops::AddAssign;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// Amounts are split at this many decimal places (1e-10 dollars): a pod's share of an hour of a
/// small node stays visible, and sums of a year of hours stay far inside i128.
pub const SCALE: u32 = 10;

/// `amount` in units of 1e-[`SCALE`] dollars, rounded half away from zero.
pub fn to_units(amount: Decimal) -> i128 {
    let rounded = amount.round_dp_with_strategy(SCALE, RoundingStrategy::MidpointAwayFromZero);
    rounded.mantissa() * 10_i128.pow(SCALE - rounded.scale())
}

/// The inverse of [`to_units`], without trailing zeros (so stored items stay small).
pub fn from_units(units: i128) -> Decimal {
    Decimal::try_from_i128_with_scale(units, SCALE)
        .map(|d| d.normalize())
        .unwrap_or(Decimal::MAX)
}

/// A price from a feed (f64) as a decimal of at most eight places, the feeds' own precision.
pub fn price(value: f64) -> Option<Decimal> {
    Decimal::from_f64_retain(value)
        .map(|d| d.round_dp(8).normalize())
        .filter(|d| !d.is_sign_negative())
}

/// Rounds to cents, half away from zero, and shows them ("135.00").
pub fn cents(amount: Decimal) -> Decimal {
    let mut rounded = amount.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(2);
    rounded
}

/// Splits `total` units in proportion to `weights` so that the parts sum to `total` exactly
/// (largest remainder: each part is rounded down, and the units left over go to the parts
/// with the largest remainders, earlier parts first on ties). With every weight zero the
/// whole amount goes to the last part, which callers use for "idle".
pub fn apportion(total: i128, weights: &[u128]) -> Vec<i128> {
    let Some(last) = weights.len().checked_sub(1) else {
        return Vec::new();
    };
    let sum: u128 = weights.iter().sum();
    let mut parts = vec![0_i128; weights.len()];
    if sum == 0 {
        parts[last] = total;
        return parts;
    }
    let magnitude = total.unsigned_abs();
    let mut remainders: Vec<(u128, usize)> = Vec::with_capacity(weights.len());
    let mut assigned: u128 = 0;
    for (i, &w) in weights.iter().enumerate() {
        let product = magnitude * w;
        let share = product / sum;
        parts[i] = i128::try_from(share).unwrap_or(i128::MAX);
        assigned += share;
        remainders.push((product % sum, i));
    }
    let left = usize::try_from(magnitude - assigned).unwrap_or(usize::MAX);
    if left > 0 {
        remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, i) in remainders.iter().take(left) {
            parts[i] += 1;
        }
    }
    if total < 0 {
        parts.iter_mut().for_each(|p| *p = -*p);
    }
    parts
}

/// What something cost over a period, split by resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostLine {
    /// `cpu + memory + gpu`.
    pub cost: Decimal,
    pub cpu: Decimal,
    pub memory: Decimal,
    pub gpu: Decimal,
    /// The same shares of the nodes' on-demand prices: the cost without spot.
    pub on_demand: Decimal,
    /// The part of `cost` no pod requested or used (nodes and totals only).
    pub idle: Decimal,
}

impl AddAssign<&CostLine> for CostLine {
    fn add_assign(&mut self, other: &CostLine) {
        self.cost += other.cost;
        self.cpu += other.cpu;
        self.memory += other.memory;
        self.gpu += other.gpu;
        self.on_demand += other.on_demand;
        self.idle += other.idle;
    }
}

impl CostLine {
    /// What spot saved on this line: on-demand equivalent minus actual.
    pub fn spot_savings(&self) -> Decimal {
        self.on_demand - self.cost
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::str::FromStr;

    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn units_round_trip_at_the_split_scale() {
        assert_eq!(to_units(d("0.0965")), 965_000_000);
        assert_eq!(to_units(d("0.00000000005")), 1, "half away from zero");
        assert_eq!(from_units(965_000_000), d("0.0965"));
        assert_eq!(from_units(0).to_string(), "0");
        assert_eq!(price(0.096), Some(d("0.096")));
        assert_eq!(price(-1.0), None);
        assert_eq!(cents(d("1.005")), d("1.01"));
        assert_eq!(cents(d("135")).to_string(), "135.00");
    }

    #[test]
    fn apportion_sums_exactly_and_follows_the_weights() {
        assert_eq!(apportion(100, &[1, 1, 1]), vec![34, 33, 33]);
        assert_eq!(apportion(10, &[0, 3, 7]), vec![0, 3, 7]);
        assert_eq!(apportion(7, &[0, 0]), vec![0, 7], "all to the last part");
        assert_eq!(apportion(-100, &[1, 1, 1]), vec![-34, -33, -33]);
        assert!(apportion(5, &[]).is_empty());
        // Many awkward splits: the parts always add back up.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..2_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let total = i128::from(seed % 1_000_000_007);
            let weights: Vec<u128> = (0..(seed % 37 + 1))
                .map(|i| u128::from((seed >> (i % 50)) % 9_973))
                .collect();
            let parts = apportion(total, &weights);
            assert_eq!(parts.iter().sum::<i128>(), total);
            let sum: u128 = weights.iter().sum();
            for (part, w) in parts.iter().zip(&weights) {
                if sum > 0 {
                    let exact = total as f64 * *w as f64 / sum as f64;
                    assert!(
                        (*part as f64 - exact).abs() < 1.0 + 1e-6,
                        "{part} vs {exact}"
                    );
                }
            }
        }
    }
}
