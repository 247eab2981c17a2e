//! Recording a settled period on the ledger: payments that mint escrow at
//! NAV, then the settlement's postings, in atomic batches.
//!
//! Batches hold whole subscribers (an escrow is emptied within one block)
//! and levels 2 to 4 go in one final block, after which the period is
//! settled on the ledger.
//!
//! # Recovery
//! A run stopped anywhere leaves a prefix of whole blocks (a block is
//! appended in one transaction). Running it again on the same inputs
//! finishes the period exactly as one uninterrupted run would have:
//! - a subscriber whose payment is recorded is not charged again, and their
//!   escrow is what their mint transfer minted, read back from the block
//!   that holds it (never the escrow's balance, which level 1 may already
//!   have emptied);
//! - the others are priced at the ledger's NAV, as the first run would have
//!   priced them after the same blocks;
//! - every transfer id derives from what it records and batches end at the
//!   same places, so a batch recorded before is a no-op and the rest are
//!   appended.
//!
//! The run then checks that the period is settled and that none of its
//! escrows and pools holds anything, and fails if not.
//!
//! # Invariants
//! - Nothing is appended for a period the ledger cannot finish: account
//!   names the ledger would refuse (of subscribers, sites, projects,
//!   operators, providers) and escrows of the period that belong to no
//!   subscriber of the input are refused first; a payout contract's output
//!   to such a name is that contract's failure (its project keeps the
//!   amount), not an error after level 1 is on the ledger.
//! - What level 1 takes out of escrows, and what reaches accounts, are each
//!   exactly what was minted (asserted).
//!
//! # Deliberately absent
//! No clock of its own beyond block timestamps, no environment: the batch
//! size and the hook called after each block come from the caller.

mod postings;

use std::collections::HashSet;

use anyhow::{Context, bail, ensure};
use commons_core::{Account, Bps, Micros, Period};
use ledger::{AccountName, Block, MAX_TRANSFERS_PER_BLOCK, Nav, Transfer, TransferId, TransferKind, payment};
use scenario::Scenario;
use settlement::{
    ContractError, Node, Params, ParamsSpec, PayoutContract, Posting, ProjectAccount, Settlement, SubscriberIx,
    settle_journaled,
};
use store::Store;

use crate::{BadInput, now_ms};
use postings::transfer_for;

/// Transfers per block while recording a period, by default.
pub const BATCH_TRANSFERS: usize = 50_000;

const _: () = assert!(BATCH_TRANSFERS <= MAX_TRANSFERS_PER_BLOCK);

/// How a period is recorded.
pub struct Recording<'a> {
    /// Transfers per block (1 to `MAX_TRANSFERS_PER_BLOCK`), except that a
    /// subscriber's postings, and levels 2 to 4, are never split.
    pub batch_transfers: usize,
    /// Level 4's payout contract.
    pub contract: &'a dyn PayoutContract,
    /// Told the height of each block this run appends, once it is durable
    /// (tests stop the process there).
    pub after_block: &'a mut dyn FnMut(u64),
}

/// Settles `scenario` onto the ledger in `store`, or finishes an earlier
/// run that was interrupted; returns the settlement and the scenario with
/// each subscriber's escrow as the ledger minted it. Every project's
/// contract is the default one, blocks hold [`BATCH_TRANSFERS`].
pub fn record_period(store: &mut Store, scenario: Scenario) -> anyhow::Result<(Settlement, Scenario)> {
    let recording = Recording { batch_transfers: BATCH_TRANSFERS, contract: &ProjectAccount, after_block: &mut |_| {} };
    record_period_with(store, scenario, recording)
}

/// [`record_period`], recorded as `recording` says.
pub fn record_period_with(
    store: &mut Store,
    scenario: Scenario,
    recording: Recording<'_>,
) -> anyhow::Result<(Settlement, Scenario)> {
    let period = scenario.params.period();
    if store.ledger().is_settled(period) {
        return Err(BadInput(format!(
            "period {period} is settled already on the ledger at {}; a period is settled once",
            store.location().describe()
        ))
        .into());
    }
    let batch_transfers = recording.batch_transfers;
    assert!((1..=MAX_TRANSFERS_PER_BLOCK).contains(&batch_transfers), "batch size {batch_transfers}");
    check_accounts(store, &scenario)?;

    let mut appender = Appender { store, after_block: recording.after_block };
    let escrow = record_payments(&mut appender, &scenario, batch_transfers)?;
    let activity = scenario.activity.with_escrow(escrow).context("escrow minted on the ledger overflows 64 bits")?;

    let mut batcher = Batcher::new(period, batch_transfers, appender);
    let contract = LedgerAccounts(recording.contract);
    let settlement = settle_journaled(
        &scenario.params,
        &scenario.registry,
        &activity,
        &contract,
        Some(&mut |posting: Posting<'_>| batcher.post(posting)),
    );
    let (appender, totals) = batcher.finish()?;
    // The engine conserves, and every posting became one transfer.
    let minted = u128::from(activity.minted().get());
    assert_eq!(totals.allocated, minted, "level 1 takes out of escrows exactly what was minted");
    assert_eq!(totals.to_accounts, minted, "what reaches accounts is exactly what was minted");
    assert_eq!(settlement.minted, activity.minted(), "the settlement is of the escrow the ledger minted");

    check_finished(appender.store, period, &settlement)?;
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
    match payment(nav, period, user, paid_cents, reserve, payment_id(period, user).as_bytes()) {
        Ok(paid) => Ok(Some(paid)),
        Err(ledger::CustodyError::TooSmall(_)) => Ok(None),
        Err(e) => Err(BadInput(format!("subscription of {user}: {e}")).into()),
    }
}

/// What a subscription payment's transfer ids derive from.
fn payment_id(period: Period, user: &str) -> String {
    format!("{period}/{user}")
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

/// Refuses, before anything is appended, what would stop the period half
/// recorded: an account name the ledger cannot hold, or an escrow of the
/// period with CommonCents that no subscriber of `scenario` would empty.
fn check_accounts(store: &Store, scenario: &Scenario) -> anyhow::Result<()> {
    let period = scenario.params.period();
    let bad = |e: ledger::AccountNameError| BadInput(format!("period {period} cannot be recorded on the ledger: {e}"));
    let activity = &scenario.activity;
    let users = || (0..activity.n_subscribers()).map(|u| activity.user(SubscriberIx::from_index(u)));
    for user in users() {
        AccountName::escrow(period, user).map_err(bad)?;
    }
    AccountName::holder(&Account::GeneralFund).map_err(bad)?;
    let registry = &scenario.registry;
    for project in registry.projects() {
        AccountName::project_pool(period, &project.id).map_err(bad)?;
        AccountName::holder(&Account::Project(project.id.clone())).map_err(bad)?;
    }
    for site in registry.sites() {
        AccountName::site_pool(period, &site.id).map_err(bad)?;
        AccountName::holder(&Account::Operator(site.operator.clone())).map_err(bad)?;
        for (provider, _) in &site.providers {
            AccountName::holder(&Account::Provider(provider.clone())).map_err(bad)?;
        }
    }
    // Escrows of the period that already hold CommonCents: from `commons
    // subscribe`, or from an interrupted run.
    let prefix = format!("escrow:{period}:");
    let held = store.ledger().period_balances(period);
    let mut escrows = held
        .iter()
        .filter_map(|(account, balance)| Some((account.as_str().strip_prefix(&prefix)?, account, balance)))
        .peekable();
    if escrows.peek().is_none() {
        return Ok(());
    }
    let subscribers: HashSet<&str> = users().collect();
    if let Some((_, account, balance)) = escrows.find(|(user, _, _)| !subscribers.contains(user)) {
        return Err(BadInput(format!(
            "{account} holds {balance} µCC, but its user has no subscription in this period's input: \
             settling it would leave them there for good"
        ))
        .into());
    }
    Ok(())
}

/// Records each subscription as a payment that mints at NAV; returns the
/// escrow each subscriber got. Payments recorded before (by `subscribe`, or
/// by an interrupted run) are found, with what they minted, and not
/// repeated.
fn record_payments(
    appender: &mut Appender<'_>,
    scenario: &Scenario,
    batch_transfers: usize,
) -> anyhow::Result<Vec<Micros>> {
    let period = scenario.params.period();
    let activity = &scenario.activity;
    let reserve = scenario.params.reserve_contribution_bps();
    let mut escrow = Vec::with_capacity(activity.n_subscribers());
    let mut recorded = RecordedMints::default();
    let mut batch = Vec::new();
    let mut nav = appender.store.ledger().nav();
    for u in 0..activity.n_subscribers() {
        let u = SubscriberIx::from_index(u);
        let user = activity.user(u);
        if let Some(minted) = recorded.minted(appender.store, period, user)? {
            escrow.push(minted);
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
        if batch.len() >= batch_transfers {
            nav = appender.append_payments(std::mem::take(&mut batch), &nav)?;
        }
    }
    if !batch.is_empty() {
        appender.append_payments(batch, &nav)?;
    }
    Ok(escrow)
}

/// Appends blocks, tells the caller of each, and asserts what each append
/// did to the height.
struct Appender<'r> {
    store: &'r mut Store,
    after_block: &'r mut dyn FnMut(u64),
}

impl Appender<'_> {
    /// Appends `batch`: a new block, or nothing if it was recorded before.
    fn append(&mut self, batch: Vec<Transfer>) -> anyhow::Result<()> {
        let height = self.store.ledger().height();
        match self.store.append(batch, now_ms())? {
            Some(block) => {
                assert_eq!(block.header.height, height + 1, "a batch is appended as the next block");
                assert_eq!(self.store.ledger().height(), height + 1, "the store applied the block it appended");
                (self.after_block)(height + 1);
            }
            None => assert_eq!(self.store.ledger().height(), height, "a recorded batch appends nothing"),
        }
        Ok(())
    }

    /// Appends a batch of new payments priced up to `nav`, and returns the
    /// ledger's NAV after it: the same reserve and supply (asserted), so the
    /// custodian's running price is the ledger's.
    fn append_payments(&mut self, batch: Vec<Transfer>, nav: &Nav) -> anyhow::Result<Nav> {
        let height = self.store.ledger().height();
        self.append(batch)?;
        let after = self.store.ledger().nav();
        assert_eq!(after.height, height + 1, "new payments are a new block");
        assert_eq!((after.reserve_cents, after.supply_micros), (nav.reserve_cents, nav.supply_micros), "NAV");
        Ok(after)
    }
}

/// Mints recorded before, read back from the blocks that hold them. The
/// last block read is kept: one run's payments share blocks.
#[derive(Default)]
struct RecordedMints {
    block: Option<Block>,
}

impl RecordedMints {
    /// What `user`'s recorded payment for `period` minted into their
    /// escrow; `None` if no payment of theirs is recorded.
    fn minted(&mut self, store: &mut Store, period: Period, user: &str) -> anyhow::Result<Option<Micros>> {
        let id = payment_id(period, user);
        if !store.ledger().contains(TransferId::derive(&[b"payment", id.as_bytes()])) {
            return Ok(None);
        }
        let mint = TransferId::derive(&[b"mint", id.as_bytes()]);
        // A payment and its mint are one batch, so one block.
        let Some(at) = store.ledger().locate(mint) else {
            bail!("the ledger holds the payment of {user} for {period} but not its mint {mint}");
        };
        if self.block.as_ref().map(|b| b.header.height) != Some(at.height) {
            let block = store.block(at.height)?.with_context(|| format!("block {} is not stored", at.height))?;
            self.block = Some(block);
        }
        let block = self.block.as_ref().expect("the block was just read");
        let transfer = block.transfers.get(at.index).filter(|t| t.id == mint);
        let transfer = transfer.with_context(|| format!("block {} does not hold {mint} at {}", at.height, at.index))?;
        let escrow = AccountName::escrow(period, user)?;
        ensure!(
            transfer.kind == TransferKind::Mint && transfer.credit == escrow,
            "transfer {mint} is a {} to {}, not the mint of {user}'s subscription for {period}",
            transfer.kind.as_str(),
            transfer.credit
        );
        Ok(Some(Micros::new(transfer.amount)))
    }
}

/// Σ of what postings moved, to check the recording conserves.
#[derive(Default)]
struct Totals {
    /// Out of escrows (level 1).
    allocated: u128,
    /// Into accounts (any level).
    to_accounts: u128,
}

/// Turns the settlement's postings, in order, into batches and appends
/// them: a batch ends only between subscribers (once it holds
/// `batch_transfers`), and level 1 ends before levels 2 to 4, which share
/// the last batch.
struct Batcher<'r> {
    period: Period,
    batch_transfers: usize,
    appender: Appender<'r>,
    batch: Vec<Transfer>,
    last_user: Option<String>,
    closing: bool,
    totals: Totals,
    failure: Option<anyhow::Error>,
}

impl<'r> Batcher<'r> {
    fn new(period: Period, batch_transfers: usize, appender: Appender<'r>) -> Self {
        Batcher {
            period,
            batch_transfers,
            appender,
            batch: Vec::new(),
            last_user: None,
            closing: false,
            totals: Totals::default(),
            failure: None,
        }
    }

    fn post(&mut self, posting: Posting<'_>) {
        if self.failure.is_some() {
            return;
        }
        let subscriber = match posting.from {
            Node::Escrow { user } => Some(user),
            _ => None,
        };
        let starts_group = match subscriber {
            Some(user) => self.last_user.as_deref() != Some(user),
            None => !self.closing,
        };
        if starts_group
            && !self.batch.is_empty()
            && (subscriber.is_none() || self.batch.len() >= self.batch_transfers)
            && let Err(e) = self.appender.append(std::mem::take(&mut self.batch))
        {
            self.failure = Some(e);
            return;
        }
        match subscriber {
            Some(user) if starts_group => self.last_user = Some(user.to_owned()),
            Some(_) => {}
            None => self.closing = true,
        }
        let amount = u128::from(posting.amount.get());
        if subscriber.is_some() {
            self.totals.allocated += amount;
        }
        if matches!(posting.to, Node::Account(_)) {
            self.totals.to_accounts += amount;
        }
        // check_accounts checked every name a posting can name, and
        // LedgerAccounts every name a contract can.
        let transfer = transfer_for(self.period, &posting).expect("account names are checked before recording");
        self.batch.push(transfer);
    }

    /// Appends the last batch; returns the appender and what was posted.
    fn finish(mut self) -> anyhow::Result<(Appender<'r>, Totals)> {
        if let Some(failure) = self.failure {
            return Err(failure);
        }
        if !self.batch.is_empty() {
            self.appender.append(self.batch)?;
        }
        Ok((self.appender, self.totals))
    }
}

/// A payout contract whose every output the ledger can hold: an output to
/// an account name the ledger refuses is the contract's failure.
struct LedgerAccounts<'c>(&'c dyn PayoutContract);

impl PayoutContract for LedgerAccounts<'_> {
    fn payout(&self, project: &str, amount: Micros) -> Result<Vec<(Account, Micros)>, ContractError> {
        let outputs = self.0.payout(project, amount)?;
        for (account, _) in &outputs {
            AccountName::holder(account).map_err(|e| ContractError::Failed(format!("an output to {e}")))?;
        }
        Ok(outputs)
    }
}

/// The postconditions of recording a period: it is settled (if anything
/// reached a site's pool: a period is settled by its first `distribute`),
/// and none of its escrows and pools holds anything.
fn check_finished(store: &Store, period: Period, settlement: &Settlement) -> anyhow::Result<()> {
    let ledger = store.ledger();
    let reached_a_site = settlement.site_totals.iter().any(|&total| total > Micros::ZERO);
    if reached_a_site && !ledger.is_settled(period) {
        bail!("recording period {period} ended with the period not settled on the ledger");
    }
    let held = ledger.period_balances(period);
    if let Some((account, balance)) = held.first() {
        bail!(
            "recording period {period} ended with {} of its escrows and pools not empty: {account} holds {balance} µCC",
            held.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! What is refused before anything is appended, and level 4 on the
    //! ledger. Each case records the worked example (`examples/golden.toml`,
    //! changed as it says) into a fresh embedded store.

    use std::path::Path;

    use super::*;

    const GOLDEN: &str = include_str!("../../../examples/golden.toml");

    fn store(dir: &Path) -> Store {
        Store::open(&store::Location::new(Some(dir.to_owned()), None)).unwrap()
    }

    fn record(store: &mut Store, text: &str, contract: &dyn PayoutContract) -> anyhow::Result<Settlement> {
        let scenario = scenario::from_toml(Path::new("golden.toml"), text, period()).unwrap();
        let recording = Recording { batch_transfers: BATCH_TRANSFERS, contract, after_block: &mut |_| {} };
        record_period_with(store, scenario, recording).map(|(settlement, _)| settlement)
    }

    fn balance(store: &Store, account: &str) -> i128 {
        store.ledger().balance(&AccountName::parse(account).unwrap())
    }

    /// Pays project `wiki`'s 498,750 µCC to contributors by `outputs`, and
    /// every other project to its own account.
    struct Wiki(fn(Micros) -> Vec<(Account, Micros)>);

    impl PayoutContract for Wiki {
        fn payout(&self, project: &str, amount: Micros) -> Result<Vec<(Account, Micros)>, ContractError> {
            match project {
                "wiki" => Ok((self.0)(amount)),
                _ => ProjectAccount.payout(project, amount),
            }
        }
    }

    fn contributor(name: &str) -> Account {
        Account::Contributor { project: "wiki".into(), contributor: name.into() }
    }

    #[test]
    fn a_name_the_ledger_cannot_hold_is_refused_before_anything_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        let text = GOLDEN.replace("operator = \"olga\"", "operator = \"olga smith\"");
        let error = record(&mut store, &text, &ProjectAccount).unwrap_err();
        assert_eq!(
            error.to_string(),
            "period 2026-11 cannot be recorded on the ledger: \"operator:olga smith\" is not an account name: \
             it contains whitespace, control characters, quotes or backslashes"
        );
        assert_eq!(store.ledger().height(), 0);
    }

    #[test]
    fn an_escrow_no_subscriber_of_the_input_would_empty_is_refused_before_anything_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        subscribe(&mut store, period(), "mallory", 1000).unwrap();
        let error = record(&mut store, GOLDEN, &ProjectAccount).unwrap_err();
        assert_eq!(
            error.to_string(),
            "escrow:2026-11:mallory holds 9900000 µCC, but its user has no subscription in this period's input: \
             settling it would leave them there for good"
        );
        assert_eq!(store.ledger().height(), 1, "only mallory's subscription");
    }

    #[test]
    fn a_contract_paying_one_account_twice_is_recorded_as_one_transfer_of_the_sum() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        let twice = Wiki(|amount| {
            let half = Micros::new(amount.get() / 2);
            vec![(contributor("ann"), half), (contributor("ann"), amount.checked_sub(half).unwrap())]
        });
        let settlement = record(&mut store, GOLDEN, &twice).unwrap();
        assert!(settlement.contract_failures.is_empty());
        assert_eq!(balance(&store, "contributor:wiki/ann"), 498_750);
        assert_eq!(balance(&store, "project:wiki"), 0);
        assert!(store.ledger().is_settled(period()));
    }

    #[test]
    fn a_contract_output_the_ledger_cannot_name_is_the_contract_s_failure() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(dir.path());
        let unnamable = Wiki(|amount| vec![(contributor("ann smith"), amount)]);
        let settlement = record(&mut store, GOLDEN, &unnamable).unwrap();
        let failures: Vec<String> = settlement.contract_failures.iter().map(|f| f.error.to_string()).collect();
        assert_eq!(
            failures,
            ["the payout contract failed: an output to \"contributor:wiki/ann smith\" is not an account name: \
              it contains whitespace, control characters, quotes or backslashes"]
        );
        assert_eq!(balance(&store, "project:wiki"), 498_750, "the project keeps what its contract did not pay");
        assert!(store.ledger().is_settled(period()));
    }

    fn period() -> Period {
        Period::parse("2026-11").unwrap()
    }
}
