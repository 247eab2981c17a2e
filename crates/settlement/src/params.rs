//! The parameters of a period's settlement, with the defaults of docs/economics.md §2.

use std::num::NonZeroU64;

use commons_core::{Bps, BpsError, Cents, Micros, Period};

/// Most a project may pass on to its dependencies: it always keeps 10 %,
/// which is also what makes dependency flow terminate on cycles.
pub const PASS_BPS_MAX: u64 = 9_000;

/// Validated settlement parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    period: Period,
    general_fund_bps: Bps,
    provider_share_bps: Bps,
    developer_share_bps: Bps,
    pass_bps: Bps,
    cents_per_cc: NonZeroU64,
    reserve_contribution_bps: Bps,
}

/// Parameters as written by a person: anything left out takes its default.
#[derive(Clone, Debug, Default)]
pub struct ParamsSpec {
    pub general_fund_bps: Option<u64>,
    pub provider_share_bps: Option<u64>,
    pub developer_share_bps: Option<u64>,
    pub pass_bps: Option<u64>,
    pub cents_per_cc: Option<u64>,
    pub reserve_contribution_bps: Option<u64>,
}

/// A parameter out of its range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// A basis-point value above 10,000.
    #[error(transparent)]
    Bps(#[from] BpsError),
    /// A `pass_bps` above [`PASS_BPS_MAX`].
    #[error("pass_bps {0} is more than {PASS_BPS_MAX}: a project keeps at least 10 % of what it receives")]
    PassTooHigh(u64),
    /// A zero `cents_per_cc`.
    #[error("cents_per_cc must be at least 1")]
    ZeroPrice,
}

impl Params {
    /// Checks every value, naming the field that is out of range.
    pub fn new(period: Period, spec: &ParamsSpec) -> Result<Params, (&'static str, ParamError)> {
        let bps = |field: &'static str, value: Option<u64>, default: u64| {
            Bps::new(value.unwrap_or(default)).map_err(|e| (field, ParamError::from(e)))
        };
        let pass = spec.pass_bps.unwrap_or(5_000);
        Ok(Params {
            period,
            general_fund_bps: bps("general_fund_bps", spec.general_fund_bps, 500)?,
            provider_share_bps: bps("provider_share_bps", spec.provider_share_bps, 3_000)?,
            developer_share_bps: bps("developer_share_bps", spec.developer_share_bps, 2_000)?,
            pass_bps: pass_bps(pass).map_err(|e| ("pass_bps", e))?,
            cents_per_cc: NonZeroU64::new(spec.cents_per_cc.unwrap_or(100))
                .ok_or(("cents_per_cc", ParamError::ZeroPrice))?,
            reserve_contribution_bps: bps("reserve_contribution_bps", spec.reserve_contribution_bps, 100)?,
        })
    }

    /// The µCC minted into escrow for a subscription payment, at the initial
    /// price: `floor((paid - floor(paid * reserve_bps / 10000)) * 10^6 / cents_per_cc)`.
    /// `None` if that does not fit in a `u64`.
    pub fn escrow_for(&self, paid: Cents) -> Option<Micros> {
        let paid = u128::from(paid.get());
        let reserved = paid * u128::from(self.reserve_contribution_bps.get()) / 10_000;
        let micros = (paid - reserved) * 1_000_000 / u128::from(self.cents_per_cc.get());
        u64::try_from(micros).ok().map(Micros::new)
    }

    pub fn period(&self) -> Period {
        self.period
    }
    pub fn general_fund_bps(&self) -> Bps {
        self.general_fund_bps
    }
    pub fn provider_share_bps(&self) -> Bps {
        self.provider_share_bps
    }
    /// The floor under every site's developer share.
    pub fn developer_share_bps(&self) -> Bps {
        self.developer_share_bps
    }
    pub fn pass_bps(&self) -> Bps {
        self.pass_bps
    }
    pub fn cents_per_cc(&self) -> NonZeroU64 {
        self.cents_per_cc
    }
    pub fn reserve_contribution_bps(&self) -> Bps {
        self.reserve_contribution_bps
    }
}

pub(crate) fn pass_bps(value: u64) -> Result<Bps, ParamError> {
    if value > PASS_BPS_MAX {
        return Err(ParamError::PassTooHigh(value));
    }
    Ok(Bps::new(value)?)
}
