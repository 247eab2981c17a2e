//! What a custodian records: payments that mint, and redemptions that burn,
//! both at NAV, each as one atomic batch.

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
    // The reserve's part is floored, so the rounding dust is minted.
    let reserved = (u128::from(paid_cents) * u128::from(reserve_contribution.get()) / 10_000) as u64;
    let minted = nav.mint(paid_cents - reserved).ok_or(CustodyError::Overflow)?;
    if minted == 0 {
        return Err(CustodyError::TooSmall(paid_cents));
    }
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
/// the batch and the cents paid.
pub fn redemption(nav: &Nav, holder: &AccountName, micros: u64, redemption_id: &[u8]) -> (Vec<Transfer>, u64) {
    let cents = nav.redeem(micros);
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
    (batch, cents)
}

impl Nav {
    /// The NAV after a batch of payments and mints, for pricing the next
    /// payment in the same batch.
    pub fn after_payment(&self, paid_cents: u64, minted: u64) -> Nav {
        Nav {
            reserve_cents: self.reserve_cents.saturating_add(paid_cents),
            supply_micros: self.supply_micros.saturating_add(minted),
            ..*self
        }
    }
}
