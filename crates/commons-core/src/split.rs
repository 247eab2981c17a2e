//! The two operations every allocation is made of: a percentage cut and a
//! proportional split with largest remainders.
//!
//! Both conserve exactly: `cut + rest == amount` and `Σ shares == amount`.
//! Ties between equal remainders go to the recipient that comes first, so
//! callers list recipients in ascending id order to get "ties by id".

use crate::{Bps, Micros};

/// Takes `floor(amount * bps / 10_000)` off `amount`; returns `(cut, rest)`.
/// The rounding dust stays with the rest.
pub fn cut(amount: Micros, bps: Bps) -> (Micros, Micros) {
    let cut = u128::from(amount.get()) * u128::from(bps.get()) / 10_000;
    let cut = u64::try_from(cut).expect("at most 10,000 bps of a u64 amount");
    (Micros::new(cut), Micros::new(amount.get() - cut))
}

/// Splits `amount` by `weights`; `None` when the weights sum to zero.
///
/// A convenience over [`Splitter`] for code off the hot path.
pub fn split(amount: Micros, weights: &[u64]) -> Option<Vec<Micros>> {
    let mut shares = vec![Micros::ZERO; weights.len()];
    Splitter::default().split(amount, weights, &mut shares).then_some(shares)
}

/// Proportional splits with largest remainders, reusing its scratch space so
/// that splitting in a loop does not allocate.
#[derive(Default)]
pub struct Splitter {
    remainders: Vec<(u128, u32)>,
}

impl Splitter {
    /// Writes into `shares[i]` recipient `i`'s part of `amount` by weight:
    /// `floor(amount * w_i / W)`, then one more unit to each of the
    /// `amount - Σ floor` recipients with the largest remainders, earlier
    /// recipients first on ties. Zero-weight recipients get nothing.
    ///
    /// Returns `false`, leaving `shares` untouched, when `Σ w_i == 0`.
    ///
    /// # Panics
    /// If `shares` and `weights` differ in length or there are more than
    /// `u32::MAX` recipients: both are programmer errors.
    pub fn split(&mut self, amount: Micros, weights: &[u64], shares: &mut [Micros]) -> bool {
        assert_eq!(weights.len(), shares.len(), "one share per weight");
        assert!(weights.len() <= u32::MAX as usize, "too many recipients");
        let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
        if total == 0 {
            return false;
        }
        let amount = amount.get();
        let mut given: u64 = 0;
        // The common case (amounts and weights well below 2^32) stays in u64
        // arithmetic; u128 division is several times slower.
        let narrow = u64::try_from(total).ok().filter(|_| amount <= u64::from(u32::MAX));
        for (share, &weight) in shares.iter_mut().zip(weights) {
            let part = match (narrow, amount.checked_mul(weight)) {
                (Some(total), Some(product)) => product / total,
                _ => u64::try_from(u128::from(amount) * u128::from(weight) / total)
                    .expect("a weight's share is at most the amount"),
            };
            *share = Micros::new(part);
            given += part;
        }
        let leftover = amount - given;
        if leftover == 0 {
            return true;
        }
        self.remainders.clear();
        self.remainders
            .extend(weights.iter().enumerate().map(|(i, &w)| ((u128::from(amount) * u128::from(w)) % total, i as u32)));
        // Largest remainder first; on equal remainders the earlier recipient.
        let order = |a: &(u128, u32), b: &(u128, u32)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
        let leftover = usize::try_from(leftover).expect("fewer leftover units than recipients");
        assert!(leftover < weights.len(), "each recipient's floor loses less than one unit");
        if leftover < self.remainders.len() {
            self.remainders.select_nth_unstable_by(leftover, order);
        }
        for &(remainder, i) in &self.remainders[..leftover] {
            debug_assert!(remainder > 0);
            shares[i as usize] = Micros::new(shares[i as usize].get() + 1);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(amount: u64, weights: &[u64], expect: Option<&[u64]>) {
        let got = split(Micros::new(amount), weights).map(|s| s.iter().map(|m| m.get()).collect::<Vec<_>>());
        assert_eq!(got.as_deref(), expect, "split({amount}, {weights:?})");
    }

    #[test]
    fn even_split_is_exact() {
        check(9, &[1, 1, 1], Some(&[3, 3, 3]));
    }

    #[test]
    fn remainder_goes_to_largest_fractional_part() {
        // 10 * [1, 2, 4] / 7 = [1.43, 2.86, 5.71]: floors 8, 2 left for 2.86 and 5.71.
        check(10, &[1, 2, 4], Some(&[1, 3, 6]));
    }

    #[test]
    fn equal_remainders_go_to_the_earlier_recipient() {
        check(2, &[1, 1, 1], Some(&[1, 1, 0]));
        check(1, &[5, 5], Some(&[1, 0]));
    }

    #[test]
    fn zero_weight_recipients_get_nothing() {
        check(5, &[0, 1, 0, 1], Some(&[0, 3, 0, 2]));
    }

    #[test]
    fn all_zero_weights_are_no_split() {
        check(5, &[0, 0], None);
        check(5, &[], None);
    }

    #[test]
    fn huge_amounts_and_weights_do_not_overflow() {
        check(u64::MAX, &[u64::MAX, u64::MAX], Some(&[u64::MAX / 2 + 1, u64::MAX / 2]));
        check(u64::MAX, &[1, u64::MAX], Some(&[1, u64::MAX - 1]));
    }

    #[test]
    fn cut_keeps_dust_in_the_rest() {
        let (cut, rest) = cut(Micros::new(999), Bps::new(500).unwrap());
        assert_eq!((cut.get(), rest.get()), (49, 950));
    }

    proptest! {
        #[test]
        fn split_conserves_and_is_within_one_of_the_quota(
            amount in any::<u64>(),
            weights in proptest::collection::vec(any::<u64>(), 1..12),
        ) {
            let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
            match split(Micros::new(amount), &weights) {
                None => prop_assert_eq!(total, 0),
                Some(shares) => {
                    prop_assert_eq!(shares.iter().map(|s| u128::from(s.get())).sum::<u128>(), u128::from(amount));
                    for (share, &w) in shares.iter().zip(&weights) {
                        let floor = u128::from(amount) * u128::from(w) / total;
                        let share = u128::from(share.get());
                        prop_assert!(share == floor || share == floor + 1);
                        if w == 0 { prop_assert_eq!(share, 0); }
                    }
                }
            }
        }

        #[test]
        fn narrow_and_wide_arithmetic_agree(
            amount in 0u64..1 << 32,
            weights in proptest::collection::vec(0u64..1 << 31, 1..8),
        ) {
            // Scaling every weight by 2^32 forces the u128 path; the split must not change.
            let wide: Vec<u64> = weights.iter().map(|&w| w.saturating_mul(1 << 32)).collect();
            if weights.iter().all(|&w| w < 1 << 31) {
                prop_assert_eq!(split(Micros::new(amount), &weights), split(Micros::new(amount), &wide));
            }
        }

        #[test]
        fn a_larger_weight_never_gets_less(
            amount in 0u64..1_000_000,
            weights in proptest::collection::vec(0u64..1000, 1..8),
            which in any::<prop::sample::Index>(),
            more in 1u64..1000,
        ) {
            let i = which.index(weights.len());
            let mut bigger = weights.clone();
            bigger[i] += more;
            let before = split(Micros::new(amount), &weights).map_or(0, |s| s[i].get());
            let after = split(Micros::new(amount), &bigger).unwrap()[i].get();
            prop_assert!(after >= before, "{before} -> {after}");
        }
    }
}
