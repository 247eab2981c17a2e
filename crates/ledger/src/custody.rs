//! What a custodian records: payments that mint, and redemptions that burn,
//! both at NAV, each as one atomic batch.
//!
//! # Invariants (asserted in every build profile)
//! - A payment's cash is the reserve's part plus the part that buys CC; a
//!   redemption pays at most what the reserve holds.
//! - Neither lowers NAV: a mint is floored and a redemption's pay is
//!   floored, both in the reserve's favour.

use commons_core::{Bps, Period};

use crate::ledger::Nav;
use crate::model::{AccountName, AccountNameError, Transfer, TransferId, TransferKind};

/// Why a payment or redemption cannot be recorded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CustodyError {
    #[error(transparent)]
    Account(#[from] AccountNameError),
    #[error("{0} cents buys less than one µCC")]
    TooSmall(u64),
    #[error("the tokens minted would overflow 64 bits")]
    Overflow,
    #[error("{micros} µCC is more than the {supply} µCC in existence")]
    MoreThanSupply { micros: u64, supply: u64 },
}

/// A payment of `paid_cents` by `user` for `period`: the cash goes to the
/// reserve and, less the reserve contribution, buys CC at `nav` into the
/// user's escrow for the period. Returns the batch and the µCC minted.
/// Transfer ids derive from `payment_id`, so a retry is idempotent.
pub fn payment(
    nav: &Nav,
    period: Period,
    user: &str,
    paid_cents: u64,
    reserve_contribution: Bps,
    payment_id: &[u8],
) -> Result<(Vec<Transfer>, u64), CustodyError> {
    // The reserve's part is floored, so the rounding dust is minted. At most
    // 10,000 bps, it is at most what was paid.
    let reserved = u128::from(paid_cents) * u128::from(reserve_contribution.get()) / 10_000;
    let reserved = u64::try_from(reserved).expect("a part of paid_cents fits in u64");
    let net = paid_cents.checked_sub(reserved).expect("the reserve's part is at most what was paid");
    assert_eq!(reserved + net, paid_cents, "a payment's cash is the reserve's part and the minting part");
    let minted = nav.mint(net).ok_or(CustodyError::Overflow)?;
    if minted == 0 {
        return Err(CustodyError::TooSmall(paid_cents));
    }
    assert!(nav_holds(nav, paid_cents, minted), "minting {minted} µCC for {paid_cents} cents lowers NAV");
    let batch = vec![
        Transfer {
            id: TransferId::derive(&[b"payment", payment_id]),
            kind: TransferKind::Payment,
            debit: AccountName::world(),
            credit: AccountName::reserve(),
            amount: paid_cents,
        },
        Transfer {
            id: TransferId::derive(&[b"mint", payment_id]),
            kind: TransferKind::Mint,
            debit: AccountName::issuance(),
            credit: AccountName::escrow(period, user)?,
            amount: minted,
        },
    ];
    Ok((batch, minted))
}

/// `holder` hands back `micros` and is paid their value at `nav`. Returns
/// the batch and the cents paid. More than the supply cannot be redeemed;
/// whether the holder has `micros` is for the ledger to check.
pub fn redemption(
    nav: &Nav,
    holder: &AccountName,
    micros: u64,
    redemption_id: &[u8],
) -> Result<(Vec<Transfer>, u64), CustodyError> {
    let cents = nav.redeem(micros).ok_or(CustodyError::MoreThanSupply { micros, supply: nav.supply_micros })?;
    assert!(cents <= nav.reserve_cents, "a redemption pays at most the reserve");
    // NAV after ≥ NAV before: (R − c) / (S − m) ≥ R / S ⇔ R·m ≥ c·S, and
    // c = ⌊m·R / S⌋.
    assert!(
        u128::from(nav.reserve_cents) * u128::from(micros) >= u128::from(cents) * u128::from(nav.supply_micros),
        "redeeming {micros} µCC for {cents} cents lowers NAV"
    );
    let mut batch = vec![Transfer {
        id: TransferId::derive(&[b"burn", redemption_id]),
        kind: TransferKind::Burn,
        debit: holder.clone(),
        credit: AccountName::issuance(),
        amount: micros,
    }];
    if cents > 0 {
        batch.push(Transfer {
            id: TransferId::derive(&[b"redeem", redemption_id]),
            kind: TransferKind::Redeem,
            debit: AccountName::reserve(),
            credit: AccountName::world(),
            amount: cents,
        });
    }
    Ok((batch, cents))
}

impl Nav {
    /// The NAV after a batch of payments and mints, for pricing the next
    /// payment in the same batch; `None` if the reserve or the supply would
    /// pass 2^64 (the ledger would refuse the batch).
    pub fn after_payment(&self, paid_cents: u64, minted: u64) -> Option<Nav> {
        Some(Nav {
            reserve_cents: self.reserve_cents.checked_add(paid_cents)?,
            supply_micros: self.supply_micros.checked_add(minted)?,
            ..*self
        })
    }
}

/// Whether paying `paid_cents` into the reserve for `minted` new µCC keeps
/// NAV at or above `nav` (at the initial price while nothing exists): the
/// rule the ledger checks after every block.
fn nav_holds(nav: &Nav, paid_cents: u64, minted: u64) -> bool {
    let (reserve, supply) = (u128::from(nav.reserve_cents), u128::from(nav.supply_micros));
    let (paid, minted) = (u128::from(paid_cents), u128::from(minted));
    if supply == 0 {
        (reserve + paid) * 1_000_000 >= u128::from(nav.initial_cents_per_cc) * minted
    } else {
        // (R + p) / (S + m) ≥ R / S ⇔ p·S ≥ R·m: products of two u64 values,
        // which fit in u128 where (R + p)·S might not.
        paid * supply >= reserve * minted
    }
}
