//! Integer amounts and basis points.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign};

/// µCC in one CommonCent.
pub const MICROS_PER_CC: u64 = 1_000_000;

/// An amount of CommonCents in micro-CommonCents (µCC).
///
/// Arithmetic is checked by the caller where a sum of untrusted amounts could
/// overflow ([`Micros::checked_add`]); `+` is for sums already bounded by a
/// checked total, and panics on overflow in every build profile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(u64);

impl Micros {
    pub const ZERO: Micros = Micros(0);

    pub const fn new(micros: u64) -> Micros {
        Micros(micros)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    pub fn checked_add(self, other: Micros) -> Option<Micros> {
        self.0.checked_add(other.0).map(Micros)
    }

    pub fn checked_sub(self, other: Micros) -> Option<Micros> {
        self.0.checked_sub(other.0).map(Micros)
    }
}

impl Add for Micros {
    type Output = Micros;
    fn add(self, other: Micros) -> Micros {
        Micros(self.0.checked_add(other.0).expect("µCC sum overflows u64"))
    }
}

impl AddAssign for Micros {
    fn add_assign(&mut self, other: Micros) {
        *self = *self + other;
    }
}

impl Sum for Micros {
    fn sum<I: Iterator<Item = Micros>>(iter: I) -> Micros {
        iter.fold(Micros::ZERO, Add::add)
    }
}

/// Shows whole CommonCents with six decimals: `12.345678 CC`.
impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / MICROS_PER_CC;
        let frac = self.0 % MICROS_PER_CC;
        write!(f, "{whole}.{frac:06} CC")
    }
}

/// An amount of fiat money in the currency's minor unit (cents).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cents(u64);

impl Cents {
    pub const ZERO: Cents = Cents(0);

    pub const fn new(cents: u64) -> Cents {
        Cents(cents)
    }

    pub const fn get(self) -> u64 {
        self.0
    }
}

/// Basis points: hundredths of a percent, from 0 to 10,000 inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bps(u16);

/// A basis-point value above 10,000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0} basis points is more than 10000 (100 %)")]
pub struct BpsError(pub u64);

impl Bps {
    pub const ZERO: Bps = Bps(0);
    pub const ALL: Bps = Bps(10_000);

    /// Checks `bps <= 10_000`.
    pub const fn new(bps: u64) -> Result<Bps, BpsError> {
        if bps <= 10_000 { Ok(Bps(bps as u16)) } else { Err(BpsError(bps)) }
    }

    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Bps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bps", self.0)
    }
}
