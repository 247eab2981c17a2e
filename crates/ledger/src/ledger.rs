//! The ledger state machine: balances, transfer ids, settled periods and
//! the NAV history, changed only by [`Ledger::apply`].

use std::collections::BTreeSet;

use commons_core::Period;
use foldhash::{HashMap, HashMapExt};

use crate::block::{Block, CheckedBlock, Hash, MAX_TRANSFERS_PER_BLOCK, Signer};
use crate::model::{AccountKind, AccountName, Asset, Transfer, TransferId, TransferKind};

/// What a ledger is for, fixed for its life and recorded in exports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerConfig {
    /// The fiat currency's ISO code, e.g. `USD`.
    pub currency: String,
    /// The price of one CC in cents while no CC exists.
    pub initial_cents_per_cc: u64,
    /// The public key every block must be signed with.
    pub signer: [u8; 32],
}

/// Why a batch or block is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("a batch must hold between 1 and {MAX_TRANSFERS_PER_BLOCK} transfers, not {0}")]
    BatchSize(usize),
    #[error("height {found} where {expected} comes next")]
    Height { expected: u64, found: u64 },
    #[error("the previous-block hash does not match block {0}")]
    BrokenLink(u64),
    #[error("the Merkle root does not match the transfers")]
    MerkleRoot,
    #[error("the header says {header} transfers, the block holds {actual}")]
    TransferCount { header: u32, actual: usize },
    #[error("signed by {found}, not by the ledger's key {expected}")]
    WrongSigner { expected: String, found: String },
    #[error("the signature does not verify")]
    BadSignature,
    #[error("transfer {0} appears twice")]
    DuplicateId(TransferId),
    #[error("transfer {0} was recorded before with different content")]
    IdReused(TransferId),
    #[error(
        "some of the batch's transfers were recorded before and some were not: a batch is applied whole or not at all"
    )]
    PartlyRecorded,
    #[error("transfer {id}: {kind} cannot move from {debit} to {credit}")]
    KindNotAllowed { id: TransferId, kind: &'static str, debit: AccountName, credit: AccountName },
    #[error("transfer {0}: the amount is zero")]
    ZeroAmount(TransferId),
    #[error("transfer {id}: escrow and pool accounts of different periods ({debit} to {credit})")]
    MixedPeriods { id: TransferId, debit: AccountName, credit: AccountName },
    #[error("account {account} would end at {balance}, and only world and issuance may go negative")]
    Negative { account: AccountName, balance: i128 },
    #[error("{account} paid out {paid} but held {held}: settlement must move exactly what an escrow or pool holds")]
    NotEmptied { account: AccountName, paid: u128, held: i128 },
    #[error("period {0} is settled already")]
    PeriodSettled(Period),
    #[error(
        "NAV would fall: reserve {reserve_after} cents for {supply_after} µCC, after {reserve_before} cents for {supply_before} µCC"
    )]
    Underbacked { reserve_before: i128, supply_before: i128, reserve_after: i128, supply_after: i128 },
    #[error("a balance would exceed the ledger's range")]
    Overflow,
}

/// A block that cannot be applied, and its height: its position in the
/// chain, whatever height it claims.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("block {height}: {rejection}")]
pub struct LedgerError {
    pub height: u64,
    pub rejection: Rejection,
}

/// Net asset value at some height: the reserve behind the supply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nav {
    pub height: u64,
    pub reserve_cents: u64,
    pub supply_micros: u64,
    /// The price while supply is zero.
    pub initial_cents_per_cc: u64,
}

impl Nav {
    /// µCC minted for `net_cents` at this NAV (floored; never more than
    /// the cents cover, so NAV never falls).
    pub fn mint(&self, net_cents: u64) -> Option<u64> {
        let micros = if self.supply_micros == 0 || self.reserve_cents == 0 {
            u128::from(net_cents) * 1_000_000 / u128::from(self.initial_cents_per_cc.max(1))
        } else {
            u128::from(net_cents) * u128::from(self.supply_micros) / u128::from(self.reserve_cents)
        };
        u64::try_from(micros).ok()
    }

    /// Cents paid for redeeming `micros` at this NAV (floored).
    pub fn redeem(&self, micros: u64) -> u64 {
        if self.supply_micros == 0 {
            return 0;
        }
        (u128::from(micros) * u128::from(self.reserve_cents) / u128::from(self.supply_micros)) as u64
    }

    /// Cents per CC, to six decimals, as a display string.
    pub fn cents_per_cc(&self) -> String {
        if self.supply_micros == 0 {
            return format!("{}.000000", self.initial_cents_per_cc);
        }
        let scaled = u128::from(self.reserve_cents) * 1_000_000_000_000 / u128::from(self.supply_micros);
        format!("{}.{:06}", scaled / 1_000_000, scaled % 1_000_000)
    }
}

/// What [`Ledger::prepare`] found a batch to be.
#[derive(Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// New: sealed into this block.
    Sealed(Box<CheckedBlock>),
    /// Every transfer was recorded before with the same content: a retry.
    AlreadyRecorded,
}

/// The state of a chain of blocks.
#[derive(Clone, Debug)]
pub struct Ledger {
    config: LedgerConfig,
    height: u64,
    head: Hash,
    balances: HashMap<AccountName, i128>,
    /// Each recorded transfer id with the leaf hash of its content.
    transfers: HashMap<TransferId, Hash>,
    settled: BTreeSet<Period>,
    /// (reserve, supply) after each block; index 0 is the empty ledger.
    nav_history: Vec<(u64, u64)>,
    n_transfers: u64,
}

/// The effects of a checked block, ready to commit.
struct Delta<'b> {
    balances: Vec<(&'b AccountName, i128)>,
    leaves: Vec<(TransferId, Hash)>,
    settled: Vec<Period>,
    nav: (u64, u64),
}

impl Ledger {
    pub fn new(config: LedgerConfig) -> Ledger {
        Ledger {
            config,
            height: 0,
            head: [0; 32],
            balances: HashMap::new(),
            transfers: HashMap::new(),
            settled: BTreeSet::new(),
            nav_history: vec![(0, 0)],
            n_transfers: 0,
        }
    }

    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    /// The height of the last block; 0 when empty.
    pub fn height(&self) -> u64 {
        self.height
    }

    /// The last block's hash; zeros when empty.
    pub fn head(&self) -> Hash {
        self.head
    }

    /// Whether a transfer with this id is recorded.
    pub fn contains(&self, id: TransferId) -> bool {
        self.transfers.contains_key(&id)
    }

    pub fn n_transfers(&self) -> u64 {
        self.n_transfers
    }

    pub fn balance(&self, account: &AccountName) -> i128 {
        self.balances.get(account).copied().unwrap_or(0)
    }

    /// Every account with a non-zero balance, by name.
    pub fn balances(&self) -> Vec<(AccountName, i128)> {
        let mut all: Vec<_> = self.balances.iter().filter(|(_, b)| **b != 0).map(|(a, b)| (a.clone(), *b)).collect();
        all.sort();
        all
    }

    /// Σ balances per asset: zero for both, always (double entry).
    pub fn asset_sums(&self) -> [(Asset, i128); 2] {
        let sum = |asset| self.balances.iter().filter(|(a, _)| a.kind().asset() == asset).map(|(_, b)| *b).sum();
        [(Asset::Cc, sum(Asset::Cc)), (Asset::Fiat, sum(Asset::Fiat))]
    }

    /// Periods settled on this ledger.
    pub fn settled_periods(&self) -> impl Iterator<Item = Period> + '_ {
        self.settled.iter().copied()
    }

    pub fn is_settled(&self, period: Period) -> bool {
        self.settled.contains(&period)
    }

    /// NAV after block `height` (0: before any block).
    pub fn nav_at(&self, height: u64) -> Option<Nav> {
        let &(reserve_cents, supply_micros) = self.nav_history.get(usize::try_from(height).ok()?)?;
        Some(Nav { height, reserve_cents, supply_micros, initial_cents_per_cc: self.config.initial_cents_per_cc })
    }

    pub fn nav(&self) -> Nav {
        self.nav_at(self.height).expect("the head has a NAV")
    }

    /// Checks a batch against what is recorded: a retry of a recorded batch
    /// is [`AppendOutcome::AlreadyRecorded`]; a new one is sealed into the
    /// next block (not yet applied).
    pub fn prepare(
        &self,
        batch: Vec<Transfer>,
        timestamp_ms: u64,
        signer: &Signer,
    ) -> Result<AppendOutcome, Rejection> {
        if batch.is_empty() || batch.len() > MAX_TRANSFERS_PER_BLOCK {
            return Err(Rejection::BatchSize(batch.len()));
        }
        let (_, leaves) = Block::leaves(&batch);
        let mut recorded = 0;
        for (transfer, leaf) in batch.iter().zip(&leaves) {
            match self.transfers.get(&transfer.id) {
                Some(known) if known == leaf => recorded += 1,
                Some(_) => return Err(Rejection::IdReused(transfer.id)),
                None => {}
            }
        }
        if recorded == batch.len() {
            return Ok(AppendOutcome::AlreadyRecorded);
        }
        if recorded > 0 {
            return Err(Rejection::PartlyRecorded);
        }
        let block = Block::seal(self.height + 1, self.head, timestamp_ms, batch, leaves, signer);
        self.check(&block)?;
        Ok(AppendOutcome::Sealed(Box::new(block)))
    }

    /// Checks `block` on its own ([`Block::check`]) and applies it.
    pub fn apply_block(&mut self, block: Block) -> Result<(), LedgerError> {
        let checked = block.check().map_err(|rejection| LedgerError { height: self.height + 1, rejection })?;
        self.apply(&checked)
    }

    /// Applies `block` whole, or refuses it leaving the ledger unchanged.
    pub fn apply(&mut self, checked: &CheckedBlock) -> Result<(), LedgerError> {
        let delta = self.check(checked).map_err(|rejection| LedgerError { height: self.height + 1, rejection })?;
        self.commit(checked.block(), delta);
        Ok(())
    }

    /// Checks a self-consistent block against the chain and the balances.
    fn check<'b>(&self, checked: &'b CheckedBlock) -> Result<Delta<'b>, Rejection> {
        let block = checked.block();
        let header = &block.header;
        if header.height != self.height + 1 {
            return Err(Rejection::Height { expected: self.height + 1, found: header.height });
        }
        if header.prev_hash != self.head {
            return Err(Rejection::BrokenLink(self.height));
        }
        if header.signer != self.config.signer {
            return Err(Rejection::WrongSigner {
                expected: hex::encode(self.config.signer),
                found: hex::encode(header.signer),
            });
        }

        let mut ids: HashMap<TransferId, ()> = HashMap::with_capacity(block.transfers.len());
        let mut changed: HashMap<&AccountName, i128> = HashMap::new();
        let mut paid_out: HashMap<&AccountName, u128> = HashMap::new();
        let mut settled = Vec::new();
        for transfer in &block.transfers {
            let id = transfer.id;
            if ids.insert(id, ()).is_some() {
                return Err(Rejection::DuplicateId(id));
            }
            if self.transfers.contains_key(&id) {
                return Err(Rejection::IdReused(id));
            }
            let (debit, credit) = (&transfer.debit, &transfer.credit);
            if !transfer.kind.allows(debit.kind(), credit.kind()) {
                return Err(Rejection::KindNotAllowed {
                    id,
                    kind: transfer.kind.as_str(),
                    debit: debit.clone(),
                    credit: credit.clone(),
                });
            }
            if debit.kind().asset() != credit.kind().asset() {
                return Err(Rejection::KindNotAllowed {
                    id,
                    kind: transfer.kind.as_str(),
                    debit: debit.clone(),
                    credit: credit.clone(),
                });
            }
            if transfer.amount == 0 {
                return Err(Rejection::ZeroAmount(id));
            }
            if let (Some(a), Some(b)) = (debit.period(), credit.period())
                && a != b
            {
                return Err(Rejection::MixedPeriods { id, debit: debit.clone(), credit: credit.clone() });
            }
            for period in [debit.period(), credit.period()].into_iter().flatten() {
                if self.settled.contains(&period) {
                    return Err(Rejection::PeriodSettled(period));
                }
                if transfer.kind == TransferKind::Distribute && !settled.contains(&period) {
                    settled.push(period);
                }
            }
            let amount = i128::from(transfer.amount);
            *changed.entry(debit).or_insert_with(|| self.balance(debit)) -= amount;
            *changed.entry(credit).or_insert_with(|| self.balance(credit)) += amount;
            if matches!(debit.kind(), AccountKind::Escrow | AccountKind::Pool) {
                *paid_out.entry(debit).or_default() += u128::from(transfer.amount);
            }
        }
        for (&account, &balance) in &changed {
            if balance < 0 && !account.kind().may_go_negative() {
                return Err(Rejection::Negative { account: account.clone(), balance });
            }
            if balance.unsigned_abs() > u128::from(u64::MAX) {
                return Err(Rejection::Overflow);
            }
        }
        for (&account, &paid) in &paid_out {
            let after = changed[account];
            if after != 0 {
                return Err(Rejection::NotEmptied { account: account.clone(), paid, held: after + paid as i128 });
            }
        }

        let (reserve_before, supply_before) = self.nav_history[self.height as usize];
        let reserve = AccountName::reserve();
        let issuance = AccountName::issuance();
        let reserve_after = changed.get(&reserve).copied().unwrap_or(i128::from(reserve_before));
        let supply_after = -changed.get(&issuance).copied().unwrap_or(-i128::from(supply_before));
        if supply_after < 0 {
            return Err(Rejection::Negative { account: issuance, balance: -supply_after });
        }
        let (rb, sb) = (i128::from(reserve_before), i128::from(supply_before));
        let backed = if supply_before == 0 {
            reserve_after * 1_000_000 >= i128::from(self.config.initial_cents_per_cc) * supply_after
        } else {
            reserve_after * sb >= rb * supply_after
        };
        if !backed {
            return Err(Rejection::Underbacked { reserve_before: rb, supply_before: sb, reserve_after, supply_after });
        }

        Ok(Delta {
            balances: changed.into_iter().collect(),
            leaves: block.transfers.iter().map(|t| t.id).zip(checked.leaves().iter().copied()).collect(),
            settled,
            nav: (reserve_after as u64, supply_after as u64),
        })
    }

    fn commit(&mut self, block: &Block, delta: Delta<'_>) {
        for (account, balance) in delta.balances {
            match self.balances.get_mut(account) {
                Some(existing) => *existing = balance,
                None => {
                    self.balances.insert(account.clone(), balance);
                }
            }
        }
        self.transfers.extend(delta.leaves);
        self.settled.extend(delta.settled);
        self.nav_history.push(delta.nav);
        self.n_transfers += block.transfers.len() as u64;
        self.height = block.header.height;
        self.head = block.hash();
    }
}
