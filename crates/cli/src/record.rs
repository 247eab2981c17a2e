//! Recording a settled period on the ledger: payments that mint escrow at
//! NAV, then the settlement's postings, in atomic batches.
//!
//! Batches hold whole subscribers (an escrow is emptied within one block)
//! and levels 2 to 4 go in one final block, after which the period is
//! settled on the ledger. Every transfer id derives from what it records,
//! so running this again after a crash repeats the same batches (no-ops)
//! and finishes the job; once settled, the period is refused.

use anyhow::Context;
use commons_core::Bps;
use commons_core::{Micros, Period};
use ledger::{AccountName, Nav, Transfer, TransferId, payment};
use scenario::Scenario;
use settlement::{Node, Params, ParamsSpec, Posting, ProjectAccount, Settlement, SubscriberIx, settle_journaled};
use store::Store;

use crate::{BadInput, now_ms};

mod postings;

use postings::transfer_for;

/// Transfers per block while recording a period.
const BATCH_TRANSFERS: usize = 50_000;

/// Settles `scenario` onto the ledger in `store`; returns the settlement and
/// the scenario with each subscriber's escrow as the ledger minted it.
pub fn record_period(store: &mut Store, scenario: Scenario) -> anyhow::Result<(Settlement, Scenario)> {
    let period = scenario.params.period();
    if store.ledger().is_settled(period) {
        return Err(BadInput(format!(
            "period {period} is settled already on the ledger at {}; a period is settled once",
            store.location().describe()
        ))
        .into());
    }
    let escrow = record_payments(store, &scenario, period)?;
    let activity = scenario.activity.with_escrow(escrow).context("escrow minted on the ledger overflows 64 bits")?;

    let mut batch = Vec::new();
    let mut failure: Option<anyhow::Error> = None;
    let mut last_user: Option<String> = None;
    let mut closing = false;
    let mut journal = |posting: Posting<'_>| {
        if failure.is_some() {
            return;
        }
        // A block ends only between subscribers, and level 1 ends before
        // levels 2 to 4, which share the last block.
        let subscriber = match posting.from {
            Node::Escrow { user } => Some(user),
            _ => None,
        };
        let starts_group = match subscriber {
            Some(user) => last_user.as_deref() != Some(user),
            None => !closing,
        };
        if starts_group
            && !batch.is_empty()
            && (subscriber.is_none() || batch.len() >= BATCH_TRANSFERS)
            && let Err(e) = store.append(std::mem::take(&mut batch), now_ms())
        {
            failure = Some(e.into());
            return;
        }
        match subscriber {
            Some(user) if starts_group => last_user = Some(user.to_owned()),
            Some(_) => {}
            None => closing = true,
        }
        match transfer_for(period, &posting) {
            Ok(transfer) => batch.push(transfer),
            Err(e) => failure = Some(BadInput(e.to_string()).into()),
        }
    };
    let settlement =
        settle_journaled(&scenario.params, &scenario.registry, &activity, &ProjectAccount, Some(&mut journal));
    if let Some(failure) = failure {
        return Err(failure);
    }
    if !batch.is_empty() {
        store.append(batch, now_ms())?;
    }
    Ok((settlement, Scenario { activity, ..scenario }))
}

/// The ledger legs of `user`'s subscription payment for `period` (cash into
/// the reserve, CommonCents minted at NAV into their escrow) and what it
/// mints; none if it is too small to mint anything. Its id derives from
/// (period, user): a subscription is paid once.
fn subscription_payment(
    nav: &Nav,
    period: Period,
    user: &str,
    paid_cents: u64,
    reserve: Bps,
) -> anyhow::Result<Option<(Vec<Transfer>, u64)>> {
    let payment_id = format!("{period}/{user}");
    match payment(nav, period, user, paid_cents, reserve, payment_id.as_bytes()) {
        Ok(paid) => Ok(Some(paid)),
        Err(ledger::CustodyError::TooSmall(_)) => Ok(None),
        Err(e) => Err(BadInput(format!("subscription of {user}: {e}")).into()),
    }
}

/// Sells `user` a subscription for `period`: records it in the store, and
/// the payment on the ledger (the custodian keeps the cash in the reserve
/// and mints CommonCents at NAV into the user's escrow). Returns the µCC
/// minted.
pub fn subscribe(store: &mut Store, period: Period, user: &str, paid_cents: u64) -> anyhow::Result<u64> {
    if store.ledger().is_settled(period) {
        return Err(BadInput(format!("period {period} is settled already; subscribe to a later one")).into());
    }
    let reserve = Params::new(period, &ParamsSpec::default())
        .map_err(|(field, e)| anyhow::anyhow!("the platform's {field}: {e}"))?
        .reserve_contribution_bps();
    let nav = store.ledger().nav();
    let Some((legs, minted)) = subscription_payment(&nav, period, user, paid_cents, reserve)? else {
        return Err(BadInput(format!("{paid_cents} cents is too little to mint any CommonCents")).into());
    };
    if !store.subscribe(period, user, paid_cents)? {
        return Err(BadInput(format!("{user} has a subscription for {period} already")).into());
    }
    // Should this fail, settling the period records the payment then.
    store.append(legs, now_ms())?;
    Ok(minted)
}

/// Records each subscription as a payment that mints at NAV; returns the
/// escrow each subscriber got. Payments recorded by an interrupted earlier
/// run are found and not repeated.
fn record_payments(store: &mut Store, scenario: &Scenario, period: Period) -> anyhow::Result<Vec<Micros>> {
    let activity = &scenario.activity;
    let reserve = scenario.params.reserve_contribution_bps();
    let mut escrow = Vec::with_capacity(activity.n_subscribers());
    let mut batch = Vec::new();
    let mut nav = store.ledger().nav();
    for u in 0..activity.n_subscribers() {
        let u = SubscriberIx::from_index(u);
        let user = activity.user(u);
        let payment_id = format!("{period}/{user}");
        let account = AccountName::escrow(period, user).map_err(|e| BadInput(e.to_string()))?;
        if store.ledger().contains(TransferId::derive(&[b"payment", payment_id.as_bytes()])) {
            escrow.push(Micros::new(store.ledger().balance(&account) as u64));
            continue;
        }
        let paid = activity.paid(u).get();
        match subscription_payment(&nav, period, user, paid, reserve)? {
            Some((legs, minted)) => {
                nav = nav.after_payment(paid, minted).ok_or_else(|| {
                    BadInput(format!("subscription of {user}: the reserve or the supply would pass 2^64"))
                })?;
                batch.extend(legs);
                escrow.push(Micros::new(minted));
            }
            // Nothing to mint (a zero payment): nothing to record or settle.
            None => escrow.push(Micros::ZERO),
        }
        if batch.len() >= BATCH_TRANSFERS {
            store.append(std::mem::take(&mut batch), now_ms())?;
            nav = store.ledger().nav();
        }
    }
    if !batch.is_empty() {
        store.append(batch, now_ms())?;
    }
    Ok(escrow)
}
