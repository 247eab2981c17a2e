//! The ledger state machine: balances, transfer ids, settled periods and
//! the NAV history, changed only by [`Ledger::apply`].
//!
//! Checking a block returns a [`Rejection`] for anything a block may get
//! wrong; committing it then asserts, in every build profile, what checking
//! guaranteed (next height, double entry per asset, no forbidden negative
//! balance, unique ids, NAV from the balances). A failed assertion is a bug
//! in this crate, never bad input.

use std::collections::BTreeSet;

use commons_core::Period;
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use crate::block::{Block, BlockHeader, CheckedBlock, Hash, MAX_TRANSFERS_PER_BLOCK, Signer};
use crate::encoding::header_hash;
use crate::model::{AccountKind, AccountName, Asset, Transfer, TransferId, TransferKind};
use crate::rejection::Rejection;

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

impl LedgerConfig {
    /// What block 1 links to: the hash of every field above, so that
    /// block 1's signature binds them (see docs/ledger-format.md).
    pub fn header_hash(&self) -> Hash {
        header_hash(&self.currency, self.initial_cents_per_cc, &self.signer)
    }
}

/// Whether `code` is a currency code as a ledger's header holds one: three
/// ASCII capital letters (ISO 4217).
pub fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
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

    /// Cents paid for redeeming `micros` at this NAV (floored); `None` for
    /// more than the supply.
    pub fn redeem(&self, micros: u64) -> Option<u64> {
        if micros > self.supply_micros {
            return None;
        }
        if self.supply_micros == 0 {
            return Some(0);
        }
        let cents = u128::from(micros) * u128::from(self.reserve_cents) / u128::from(self.supply_micros);
        Some(u64::try_from(cents).expect("micros ≤ supply, so cents ≤ reserve"))
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
    /// `config.header_hash()`, what block 1 links to.
    header_hash: Hash,
    /// Whether block 1 links to the header's hash; false while empty, and
    /// for a chain begun before header binding, whose block 1 links to zeros.
    header_bound: bool,
    height: u64,
    /// Each block's hash; index 0 is block 1.
    hashes: Vec<Hash>,
    balances: HashMap<AccountName, i128>,
    /// Each recorded transfer id with its ordinal: its position in the
    /// whole chain, counting from 0.
    transfers: HashMap<TransferId, u64>,
    /// The leaf hash of each recorded transfer's content, by ordinal: to
    /// tell a retry from a reused id. Kept out of the map, whose entries
    /// then take 32 bytes (an id and an ordinal) rather than 64.
    leaves: Vec<Hash>,
    /// The ordinal of each block's first transfer; index 0 is block 1.
    block_first: Vec<u64>,
    settled: BTreeSet<Period>,
    /// (reserve, supply) after each block; index 0 is the empty ledger.
    nav_history: Vec<(u64, u64)>,
}

/// Where a recorded transfer is: the block that holds it, and its index in
/// that block's transfers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferLocation {
    pub height: u64,
    pub index: usize,
}

/// The effects of a checked block, ready to commit.
struct Delta<'b> {
    balances: Vec<(&'b AccountName, i128)>,
    leaves: Vec<(TransferId, Hash)>,
    settled: Vec<Period>,
    nav: (u64, u64),
}

impl Ledger {
    /// An empty ledger. Its currency must be a currency code
    /// ([`is_currency_code`]); whoever reads a config checks it.
    pub fn new(config: LedgerConfig) -> Ledger {
        assert!(is_currency_code(&config.currency), "{:?} is not a currency code", config.currency);
        Ledger {
            header_hash: config.header_hash(),
            config,
            header_bound: false,
            height: 0,
            hashes: Vec::new(),
            balances: HashMap::new(),
            transfers: HashMap::new(),
            leaves: Vec::new(),
            block_first: Vec::new(),
            settled: BTreeSet::new(),
            nav_history: vec![(0, 0)],
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
        self.hashes.last().copied().unwrap_or([0; 32])
    }

    /// The hash of block `height`, if the chain has it.
    pub fn block_hash(&self, height: u64) -> Option<Hash> {
        self.hashes.get(usize::try_from(height.checked_sub(1)?).ok()?).copied()
    }

    /// Whether block 1 commits to the header (currency, initial price,
    /// signer). False for an empty ledger, and for a chain begun before
    /// header binding: its header is then only what it claims to be.
    pub fn header_bound(&self) -> bool {
        self.header_bound
    }

    /// What the next block links to: the head, or for block 1 the header's hash.
    fn link(&self) -> Hash {
        if self.height == 0 { self.header_hash } else { self.head() }
    }

    /// Whether a transfer with this id is recorded.
    pub fn contains(&self, id: TransferId) -> bool {
        self.transfers.contains_key(&id)
    }

    /// Where the transfer with this id is recorded, if it is: the ledger
    /// keeps no transfers, but the block at that height holds it.
    pub fn locate(&self, id: TransferId) -> Option<TransferLocation> {
        let ordinal = *self.transfers.get(&id)?;
        // The last block whose first transfer is at or before `ordinal`.
        let block = self.block_first.partition_point(|&first| first <= ordinal).checked_sub(1);
        let block = block.expect("block 1 starts at ordinal 0");
        let index = usize::try_from(ordinal - self.block_first[block]).expect("a block holds < 2^24 transfers");
        Some(TransferLocation { height: block as u64 + 1, index })
    }

    pub fn n_transfers(&self) -> u64 {
        self.leaves.len() as u64
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
        let sum = |asset| self.balances.iter().filter(|(a, _)| a.asset() == asset).map(|(_, b)| *b).sum();
        [(Asset::Cc, sum(Asset::Cc)), (Asset::Fiat, sum(Asset::Fiat))]
    }

    /// Periods settled on this ledger.
    pub fn settled_periods(&self) -> impl Iterator<Item = Period> + '_ {
        self.settled.iter().copied()
    }

    pub fn is_settled(&self, period: Period) -> bool {
        self.settled.contains(&period)
    }

    /// The non-zero balances of `period`'s escrow and pool accounts, by
    /// name: none once the period is settled.
    pub fn period_balances(&self, period: Period) -> Vec<(AccountName, i128)> {
        let mut held: Vec<_> = self
            .balances
            .iter()
            .filter(|(account, balance)| {
                **balance != 0
                    && matches!(account.kind(), AccountKind::Escrow | AccountKind::Pool)
                    && account.period() == Some(period)
            })
            .map(|(account, balance)| (account.clone(), *balance))
            .collect();
        held.sort();
        held
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
                Some(&ordinal) if self.leaves[ordinal as usize] == *leaf => recorded += 1,
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
        let block = Block::seal(self.height + 1, self.link(), timestamp_ms, batch, leaves, signer);
        assert_eq!(block.block().header.height, self.height + 1, "a batch is sealed as the next block");
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
        let height = self.height;
        self.commit(checked.block(), delta);
        assert_eq!(self.height, height + 1, "applying a block advances the height by one");
        Ok(())
    }

    /// Checks a self-consistent block against the chain and the balances:
    /// its header, then each transfer on its own, then the balances it
    /// leaves, then backing. The first broken rule is the rejection.
    fn check<'b>(&self, checked: &'b CheckedBlock) -> Result<Delta<'b>, Rejection> {
        let block = checked.block();
        self.check_header(&block.header)?;
        let mut effects = Effects::with_capacity(block.transfers.len());
        for transfer in &block.transfers {
            self.check_transfer(transfer, &mut effects)?;
        }
        check_balances(&effects)?;
        let nav = self.check_backing(&effects.changed)?;
        Ok(Delta {
            balances: effects.changed.into_iter().collect(),
            leaves: block.transfers.iter().map(|t| t.id).zip(checked.leaves().iter().copied()).collect(),
            settled: effects.settled,
            nav,
        })
    }

    /// The header continues this chain: next height, signed by the
    /// ledger's key, linked to the head (block 1: to the header's hash, or
    /// to zeros for a chain begun before header binding).
    fn check_header(&self, header: &BlockHeader) -> Result<(), Rejection> {
        if header.height != self.height + 1 {
            return Err(Rejection::Height { expected: self.height + 1, found: header.height });
        }
        if header.signer != self.config.signer {
            return Err(Rejection::WrongSigner {
                expected: hex::encode(self.config.signer),
                found: hex::encode(header.signer),
            });
        }
        // Block 1 links to the header's hash; blocks sealed before header
        // binding link to zeros, and still load.
        let legacy_start = self.height == 0 && header.prev_hash == [0; 32];
        if header.prev_hash != self.link() && !legacy_start {
            return Err(if self.height == 0 { Rejection::HeaderNotBound } else { Rejection::BrokenLink(self.height) });
        }
        Ok(())
    }

    /// One transfer on its own (a new id, a movement its kind allows, a
    /// positive amount, one period, not a settled one), then its effect on
    /// the balances the block has changed so far.
    fn check_transfer<'b>(&self, transfer: &'b Transfer, effects: &mut Effects<'b>) -> Result<(), Rejection> {
        let id = transfer.id;
        if !effects.ids.insert(id) {
            return Err(Rejection::DuplicateId(id));
        }
        if self.transfers.contains_key(&id) {
            return Err(Rejection::IdReused(id));
        }
        let (debit, credit) = (&transfer.debit, &transfer.credit);
        let (debit_kind, credit_kind) = (debit.kind(), credit.kind());
        if !transfer.kind.allows(debit_kind, credit_kind) {
            return Err(Rejection::KindNotAllowed {
                id,
                kind: transfer.kind.as_str(),
                debit: debit.clone(),
                credit: credit.clone(),
            });
        }
        // Every movement a kind allows is between accounts of one asset
        // (tested for every kind and pair of account kinds): double entry
        // per asset rests on it.
        assert_eq!(debit_kind.asset(), credit_kind.asset(), "transfer {id}: a kind allowed two assets");
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
            if transfer.kind == TransferKind::Distribute && !effects.settled.contains(&period) {
                effects.settled.push(period);
            }
        }
        // At most MAX_TRANSFERS_PER_BLOCK amounts of at most 2^64 each, on
        // balances of at most 2^64 (checked below): no i128 or u128 sum
        // here can overflow (asserted at compile time).
        let amount = i128::from(transfer.amount);
        *effects.changed.entry(debit).or_insert_with(|| self.balance(debit)) -= amount;
        *effects.changed.entry(credit).or_insert_with(|| self.balance(credit)) += amount;
        if matches!(debit_kind, AccountKind::Escrow | AccountKind::Pool) {
            *effects.paid_out.entry(debit).or_default() += u128::from(transfer.amount);
        }
        Ok(())
    }

    /// Full backing: NAV does not fall. Returns (reserve, supply) after the
    /// block.
    fn check_backing(&self, changed: &HashMap<&AccountName, i128>) -> Result<(u64, u64), Rejection> {
        let &(reserve_before, supply_before) = self.nav_history.last().expect("the empty ledger has a NAV");
        let reserve_after = match changed.get(&AccountName::reserve()) {
            // The reserve may not go negative and no balance exceeds 2^64
            // (check_balances).
            Some(&balance) => u64::try_from(balance).expect("checked: the reserve is within 0..=u64::MAX"),
            None => reserve_before,
        };
        let supply_after = match changed.get(&AccountName::issuance()) {
            // Double entry: the supply is what every other CC account holds,
            // and none of them may go negative, so issuance never ends above 0.
            Some(&balance) => u64::try_from(-balance).expect("the supply is within 0..=u64::MAX"),
            None => supply_before,
        };
        // Products of two u64 values fit in u128 (an i128 would overflow
        // for a reserve and supply near 2^64).
        let (rb, sb, ra, sa) = (
            u128::from(reserve_before),
            u128::from(supply_before),
            u128::from(reserve_after),
            u128::from(supply_after),
        );
        let backed = if supply_before == 0 {
            ra * 1_000_000 >= u128::from(self.config.initial_cents_per_cc) * sa
        } else {
            ra * sb >= rb * sa
        };
        if !backed {
            return Err(Rejection::Underbacked { reserve_before, supply_before, reserve_after, supply_after });
        }
        Ok((reserve_after, supply_after))
    }

    /// Applies a checked delta, asserting what checking guaranteed: the
    /// next height, double entry per asset, no forbidden negative balance,
    /// every id new, NAV from the reserve and issuance balances.
    fn commit(&mut self, block: &Block, delta: Delta<'_>) {
        assert_eq!(block.header.height, self.height + 1, "blocks are committed in order");
        let prev = block.header.prev_hash;
        assert!(prev == self.link() || (self.height == 0 && prev == [0; 32]), "a committed block links to the head");
        if self.height == 0 {
            self.header_bound = prev == self.header_hash;
        }
        // Per asset, Σ (after − before) over the changed accounts.
        let mut moved = [0i128; 2];
        for (account, balance) in delta.balances {
            assert!(balance >= 0 || account.kind().may_go_negative(), "{account} committed at {balance}");
            let before = match self.balances.get_mut(account) {
                Some(existing) => std::mem::replace(existing, balance),
                None => {
                    self.balances.insert(account.clone(), balance);
                    0
                }
            };
            moved[usize::from(account.asset().code())] += balance - before;
        }
        assert_eq!(moved, [0, 0], "double entry: a block moves as much into accounts as out of them");
        let first = self.n_transfers();
        self.transfers.extend(delta.leaves.iter().map(|&(id, _)| id).zip(first..));
        self.leaves.extend(delta.leaves.into_iter().map(|(_, leaf)| leaf));
        assert_eq!(self.leaves.len(), self.transfers.len(), "transfer ids are unique across the chain");
        assert_eq!(self.n_transfers() - first, block.transfers.len() as u64, "every transfer of the block is kept");
        self.block_first.push(first);
        for period in delta.settled {
            assert!(self.settled.insert(period), "period {period} is settled once");
        }
        self.nav_history.push(delta.nav);
        self.height = block.header.height;
        self.hashes.push(block.hash());
        assert_eq!(self.block_first.len() as u64, self.height, "one first ordinal per block");
        assert_eq!(self.nav_history.len() as u64, self.height + 1, "one NAV per block, and the empty ledger's");
        assert_eq!(
            (self.balance(&AccountName::reserve()), -self.balance(&AccountName::issuance())),
            (i128::from(delta.nav.0), i128::from(delta.nav.1)),
            "NAV is the reserve's balance over the supply"
        );
    }
}

/// What a block does, gathered while its transfers are checked.
struct Effects<'b> {
    ids: HashSet<TransferId>,
    /// Each account the block touches, with its balance after the block.
    changed: HashMap<&'b AccountName, i128>,
    /// Each escrow or pool the block pays out of, with what it pays.
    paid_out: HashMap<&'b AccountName, u128>,
    /// Periods a `distribute` of this block settles.
    settled: Vec<Period>,
}

impl Effects<'_> {
    fn with_capacity(n_transfers: usize) -> Self {
        Effects {
            ids: HashSet::with_capacity(n_transfers),
            changed: HashMap::new(),
            paid_out: HashMap::new(),
            settled: Vec::new(),
        }
    }
}

/// The balances a block leaves: none negative unless its kind may be, none
/// beyond the ledger's range, every escrow or pool it pays out of empty.
fn check_balances(effects: &Effects<'_>) -> Result<(), Rejection> {
    for (&account, &balance) in &effects.changed {
        if balance < 0 && !account.kind().may_go_negative() {
            return Err(Rejection::Negative { account: account.clone(), balance });
        }
        if balance.unsigned_abs() > u128::from(u64::MAX) {
            return Err(Rejection::Overflow);
        }
    }
    for (&account, &paid) in &effects.paid_out {
        let after = effects.changed[account];
        if after != 0 {
            let paid_signed = i128::try_from(paid).expect("a block pays out less than 2^88");
            return Err(Rejection::NotEmptied { account: account.clone(), paid, held: after + paid_signed });
        }
    }
    Ok(())
}

// A block's amounts sum below 2^88, and balances stay within ±2^64, so the
// i128 and u128 sums of `check_transfer` cannot overflow.
const _: () = assert!((MAX_TRANSFERS_PER_BLOCK as u128 + 1) * (u64::MAX as u128) <= i128::MAX as u128);
