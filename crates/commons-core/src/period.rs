//! Settlement periods: calendar months in UTC, labelled `YYYY-MM`.

use std::fmt;

/// A calendar month, the unit in which subscriptions are paid and settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    year: u16,
    month: u8,
}

/// A period label that is not `YYYY-MM`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("period {label:?} is not a month in the form YYYY-MM (for example 2026-11)")]
pub struct PeriodError {
    pub label: String,
}

impl Period {
    /// Parses `YYYY-MM` with a four-digit year and a month from 01 to 12.
    pub fn parse(label: &str) -> Result<Period, PeriodError> {
        let error = || PeriodError { label: label.to_owned() };
        let bytes = label.as_bytes();
        if bytes.len() != 7 || bytes[4] != b'-' || !label.is_char_boundary(4) {
            return Err(error());
        }
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        let (year, month) = (&label[..4], &label[5..]);
        if !digits(year) || !digits(month) {
            return Err(error());
        }
        let year: u16 = year.parse().map_err(|_| error())?;
        let month: u8 = month.parse().map_err(|_| error())?;
        if !(1..=12).contains(&month) {
            return Err(error());
        }
        Ok(Period { year, month })
    }

    /// The month containing a day counted from 1970-01-01 (UTC).
    pub fn from_days_since_epoch(days: i64) -> Period {
        let (year, month, _) = civil_from_days(days);
        Period { year: year.clamp(0, 9999) as u16, month: month as u8 }
    }

    /// The days from 1970-01-01 (UTC) to the period's first day: Howard
    /// Hinnant's `days_from_civil`, the inverse of
    /// [`Period::from_days_since_epoch`].
    pub fn first_day_since_epoch(self) -> i64 {
        let (month, year) = (i64::from(self.month), i64::from(self.year) - i64::from(self.month <= 2));
        let era = year.div_euclid(400);
        let yoe = year.rem_euclid(400);
        let mp = if month > 2 { month - 3 } else { month + 9 };
        let doy = (153 * mp + 2) / 5;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    pub fn year(self) -> u16 {
        self.year
    }

    pub fn month(self) -> u8 {
        self.month
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// The (year, month, day) of a day counted from 1970-01-01 (UTC): Howard
/// Hinnant's `civil_from_days`, so that callers read the clock and this
/// crate stays free of it.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        for label in ["2026-11", "1999-01", "0000-12"] {
            assert_eq!(Period::parse(label).unwrap().to_string(), label);
        }
    }

    #[test]
    fn malformed_labels_are_refused() {
        for label in ["2026-13", "2026-00", "2026-1", "26-11", "2026/11", "2026-1x", "", "२०२६-11"] {
            assert!(Period::parse(label).is_err(), "{label}");
        }
    }

    #[test]
    fn a_period_starts_on_its_first_day() {
        assert_eq!(Period::parse("1970-01").unwrap().first_day_since_epoch(), 0);
        assert_eq!(Period::parse("2026-12").unwrap().first_day_since_epoch(), 20_788);
        assert_eq!(Period::parse("2000-03").unwrap().first_day_since_epoch(), 11_017);
        for days in [0, 59, 60, 11_016, 20_787, 20_788, 40_000] {
            let p = Period::from_days_since_epoch(days);
            assert!(p.first_day_since_epoch() <= days);
            assert_eq!(Period::from_days_since_epoch(p.first_day_since_epoch()), p);
            assert_ne!(Period::from_days_since_epoch(p.first_day_since_epoch() - 1), p);
        }
    }

    #[test]
    fn days_map_to_their_month() {
        assert_eq!(Period::from_days_since_epoch(0).to_string(), "1970-01");
        // 2026-11-23 is day 20780, 2026-12-01 is day 20788.
        assert_eq!(Period::from_days_since_epoch(20_780).to_string(), "2026-11");
        assert_eq!(Period::from_days_since_epoch(20_788).to_string(), "2026-12");
        assert_eq!(Period::from_days_since_epoch(11_016).to_string(), "2000-02");
        assert_eq!(Period::from_days_since_epoch(11_017).to_string(), "2000-03");
    }
}
