//! Settlement scenarios: everything needed to recompute a period, as files.
//!
//! Two forms with identical meaning:
//! - a TOML file (`[params]`, `[[project]]`, `[[site]]`, `[[subscription]]`,
//!   `[[usage]]`), for examples and hand-written cases;
//! - a directory of CSV files (`projects.csv`, `deps.csv`, `sites.csv`,
//!   `site_providers.csv`, `subscriptions.csv`, `usage.csv`, `calls.csv` and
//!   an optional `params.toml`), for periods with millions of rows. The big
//!   files are parsed on every core.
//!
//! Both forms end in the same calls to the settlement crate's validating
//! constructors, so a rule is checked in one place whichever form it
//! arrives in.
//!
//! # Invariants
//! - Loading either succeeds with a whole [`Scenario`] or fails with one
//!   [`ScenarioError`] naming the file, the line, the entry and the field.
//! - Unknown keys, unknown columns and unknown files' absence of required
//!   columns are errors, never ignored.

#![forbid(unsafe_code)]

mod csv_form;
mod error;
mod toml_form;

use std::path::Path;

use commons_core::Period;
use settlement::{Activity, Params, Registry};

pub use error::ScenarioError;

/// Validated inputs of one period's settlement.
#[derive(Debug)]
pub struct Scenario {
    pub params: Params,
    pub registry: Registry,
    pub activity: Activity,
}

/// Reads a scenario from a TOML file or a CSV directory.
///
/// `default_period` labels the period when the scenario does not.
/// `on_progress` is called from any thread with the number of input bytes
/// just processed; [`input_bytes`] gives the total to expect.
pub fn load(
    path: &Path,
    default_period: Period,
    on_progress: &(dyn Fn(u64) + Sync),
) -> Result<Scenario, ScenarioError> {
    if path.is_dir() {
        csv_form::load(path, default_period, on_progress)
    } else {
        let text = error::read_to_string(path)?;
        let scenario = toml_form::parse(path, &text, default_period)?;
        on_progress(text.len() as u64);
        Ok(scenario)
    }
}

/// Parses a scenario in the TOML form from text; `path` names it in errors.
pub fn from_toml(path: &Path, text: &str, default_period: Period) -> Result<Scenario, ScenarioError> {
    toml_form::parse(path, text, default_period)
}

/// The number of bytes [`load`] will process for `path`.
pub fn input_bytes(path: &Path) -> u64 {
    if path.is_dir() {
        csv_form::FILES
            .iter()
            .filter_map(|name| std::fs::metadata(path.join(name)).ok())
            .map(|metadata| metadata.len())
            .sum()
    } else {
        std::fs::metadata(path).map_or(0, |m| m.len())
    }
}
