//! Assets, accounts and transfers.

use std::fmt;

use commons_core::Period;

/// What a balance counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Asset {
    /// CommonCents, in µCC.
    Cc,
    /// The ledger's one fiat currency, in its minor unit (cents).
    Fiat,
}

impl Asset {
    pub fn code(self) -> u8 {
        match self {
            Asset::Cc => 0,
            Asset::Fiat => 1,
        }
    }

    pub fn from_code(code: u8) -> Option<Asset> {
        match code {
            0 => Some(Asset::Cc),
            1 => Some(Asset::Fiat),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Asset::Cc => "CC",
            Asset::Fiat => "fiat",
        }
    }
}

/// What an account is for, read from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountKind {
    /// `world`: fiat outside the platform (payers, redeemers). May go negative.
    World,
    /// `reserve`: the custodian's fiat reserve backing every token.
    Reserve,
    /// `issuance`: where CC comes from and returns to; its negated balance
    /// is the supply. May go negative.
    Issuance,
    /// `escrow:<period>:<user>`: a subscriber's tokens for a period.
    Escrow,
    /// `pool:<period>:site:<id>` or `pool:<period>:project:<id>`: amounts in
    /// the middle of a period's settlement.
    Pool,
    /// `general-fund`, `provider:<id>`, `operator:<id>`, `project:<id>`,
    /// `contributor:<project>/<id>`, `holder:<id>`: owners of CC.
    Holder,
}

impl AccountKind {
    /// The asset this kind of account holds.
    pub fn asset(self) -> Asset {
        match self {
            AccountKind::World | AccountKind::Reserve => Asset::Fiat,
            _ => Asset::Cc,
        }
    }

    pub fn may_go_negative(self) -> bool {
        matches!(self, AccountKind::World | AccountKind::Issuance)
    }
}

/// Most bytes in an account name.
pub const ACCOUNT_NAME_MAX_BYTES: usize = 256;

// `AccountName::parse` names the limit in its message.
const _: () = assert!(ACCOUNT_NAME_MAX_BYTES == 256);

/// A valid account name; its kind follows from its form.
///
/// The name's hash is computed once, when the name is made: applying a
/// block looks each account up several times, and verification makes names
/// on one thread and applies blocks on another.
#[derive(Clone, Debug)]
pub struct AccountName {
    name: String,
    hash: u64,
}

impl AccountName {
    fn new(name: String) -> AccountName {
        // Seeded once per process, so crafted names cannot force collisions.
        static SEED: std::sync::OnceLock<foldhash::quality::RandomState> = std::sync::OnceLock::new();
        let hash = std::hash::BuildHasher::hash_one(SEED.get_or_init(Default::default), &name);
        AccountName { name, hash }
    }
}

impl PartialEq for AccountName {
    fn eq(&self, other: &AccountName) -> bool {
        self.hash == other.hash && self.name == other.name
    }
}

impl Eq for AccountName {}

impl PartialOrd for AccountName {
    fn partial_cmp(&self, other: &AccountName) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for AccountName {
    fn cmp(&self, other: &AccountName) -> std::cmp::Ordering {
        self.name.cmp(&other.name)
    }
}

impl std::hash::Hash for AccountName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// An account name that is not one of the forms above.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not an account name: {reason}")]
pub struct AccountNameError {
    pub name: String,
    pub reason: &'static str,
}

impl AccountName {
    pub fn parse(name: &str) -> Result<AccountName, AccountNameError> {
        let fail = |reason| AccountNameError { name: name.to_owned(), reason };
        if name.len() > ACCOUNT_NAME_MAX_BYTES {
            return Err(fail("longer than 256 bytes"));
        }
        if name.chars().any(|c| c.is_control() || c.is_whitespace() || c == '"' || c == '\\') {
            return Err(fail("it contains whitespace, control characters, quotes or backslashes"));
        }
        kind_of(name).ok_or_else(|| {
            fail("expected world, reserve, issuance, general-fund, escrow:<period>:<user>, pool:<period>:site|project:<id>, or provider|operator|project|contributor|holder:<id>")
        })?;
        Ok(AccountName::new(name.to_owned()))
    }

    pub fn world() -> AccountName {
        AccountName::new("world".into())
    }
    pub fn reserve() -> AccountName {
        AccountName::new("reserve".into())
    }
    pub fn issuance() -> AccountName {
        AccountName::new("issuance".into())
    }

    pub fn escrow(period: Period, user: &str) -> Result<AccountName, AccountNameError> {
        AccountName::parse(&format!("escrow:{period}:{user}"))
    }

    pub fn site_pool(period: Period, site: &str) -> Result<AccountName, AccountNameError> {
        AccountName::parse(&format!("pool:{period}:site:{site}"))
    }

    pub fn project_pool(period: Period, project: &str) -> Result<AccountName, AccountNameError> {
        AccountName::parse(&format!("pool:{period}:project:{project}"))
    }

    /// The account of a settlement participant.
    pub fn holder(account: &commons_core::Account) -> Result<AccountName, AccountNameError> {
        AccountName::parse(&account.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> AccountKind {
        kind_of(&self.name).expect("checked when constructed")
    }

    /// The asset this account holds, its kind's, without parsing the whole
    /// name: only `world` and `reserve` hold fiat.
    pub fn asset(&self) -> Asset {
        match self.name.as_str() {
            "world" | "reserve" => Asset::Fiat,
            _ => Asset::Cc,
        }
    }

    /// The period of an escrow or pool account.
    pub fn period(&self) -> Option<Period> {
        let rest = self.name.strip_prefix("escrow:").or_else(|| self.name.strip_prefix("pool:"))?;
        Period::parse(rest.get(..7)?).ok()
    }
}

fn kind_of(name: &str) -> Option<AccountKind> {
    let nonempty = |s: &str| !s.is_empty();
    match name {
        "world" => return Some(AccountKind::World),
        "reserve" => return Some(AccountKind::Reserve),
        "issuance" => return Some(AccountKind::Issuance),
        "general-fund" => return Some(AccountKind::Holder),
        _ => {}
    }
    let (prefix, rest) = name.split_once(':')?;
    match prefix {
        "provider" | "operator" | "project" | "holder" if nonempty(rest) => Some(AccountKind::Holder),
        "contributor" => {
            let (project, who) = rest.split_once('/')?;
            (nonempty(project) && nonempty(who)).then_some(AccountKind::Holder)
        }
        "escrow" => {
            let (period, user) = rest.split_at_checked(7)?;
            Period::parse(period).ok()?;
            let user = user.strip_prefix(':')?;
            nonempty(user).then_some(AccountKind::Escrow)
        }
        "pool" => {
            let (period, target) = rest.split_at_checked(7)?;
            Period::parse(period).ok()?;
            let target = target.strip_prefix(':')?;
            let id = target.strip_prefix("site:").or_else(|| target.strip_prefix("project:"))?;
            nonempty(id).then_some(AccountKind::Pool)
        }
        _ => None,
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A client-chosen 128-bit transfer id: retrying with the same id and the
/// same content is a no-op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransferId(pub u128);

impl TransferId {
    /// An id derived from a description, for transfers whose identity is
    /// their meaning (a period's settlement legs): the same meaning, the
    /// same id, so a retried settlement is idempotent.
    pub fn derive(parts: &[&[u8]]) -> TransferId {
        let mut hasher = blake3::Hasher::new_derive_key("onecommons transfer id v1");
        for part in parts {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        let bytes = hasher.finalize();
        TransferId(u128::from_le_bytes(bytes.as_bytes()[..16].try_into().expect("16 bytes")))
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Why money moved; each kind allows only certain accounts at each end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransferKind {
    /// A subscription payment: `world` → `reserve`, fiat.
    Payment,
    /// Tokens minted for a payment: `issuance` → `escrow:…`, CC.
    Mint,
    /// Level 1 of settlement: `escrow:…` → `general-fund` or `pool:…:site:…`.
    Allocate,
    /// Levels 2–4: `pool:…` → another pool or a holder.
    Distribute,
    /// Tokens handed back: a holder → `issuance`, CC.
    Burn,
    /// Fiat paid out for burnt tokens: `reserve` → `world`.
    Redeem,
}

impl TransferKind {
    pub const ALL: [TransferKind; 6] = [
        TransferKind::Payment,
        TransferKind::Mint,
        TransferKind::Allocate,
        TransferKind::Distribute,
        TransferKind::Burn,
        TransferKind::Redeem,
    ];

    pub fn code(self) -> u8 {
        match self {
            TransferKind::Payment => 0,
            TransferKind::Mint => 1,
            TransferKind::Allocate => 2,
            TransferKind::Distribute => 3,
            TransferKind::Burn => 4,
            TransferKind::Redeem => 5,
        }
    }

    pub fn from_code(code: u8) -> Option<TransferKind> {
        TransferKind::ALL.get(usize::from(code)).copied()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::Payment => "payment",
            TransferKind::Mint => "mint",
            TransferKind::Allocate => "allocate",
            TransferKind::Distribute => "distribute",
            TransferKind::Burn => "burn",
            TransferKind::Redeem => "redeem",
        }
    }

    pub fn parse(name: &str) -> Option<TransferKind> {
        TransferKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Whether `debit → credit` is a movement of this kind.
    pub fn allows(self, debit: AccountKind, credit: AccountKind) -> bool {
        use AccountKind::*;
        match self {
            TransferKind::Payment => debit == World && credit == Reserve,
            TransferKind::Mint => debit == Issuance && credit == Escrow,
            TransferKind::Allocate => debit == Escrow && matches!(credit, Pool | Holder),
            TransferKind::Distribute => debit == Pool && matches!(credit, Pool | Holder),
            TransferKind::Burn => matches!(debit, Holder | Escrow) && credit == Issuance,
            TransferKind::Redeem => debit == Reserve && credit == World,
        }
    }
}

/// One movement of one asset between two accounts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Transfer {
    pub id: TransferId,
    pub kind: TransferKind,
    pub debit: AccountName,
    pub credit: AccountName,
    /// In µCC for CC, in cents for fiat; the asset is the accounts'.
    pub amount: u64,
}

impl Transfer {
    pub fn asset(&self) -> Asset {
        self.debit.asset()
    }
}
