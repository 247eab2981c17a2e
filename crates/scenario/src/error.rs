//! Errors that say what is wrong and exactly where.

use std::fmt;
use std::path::{Path, PathBuf};

/// A scenario that cannot be settled, with where the problem is.
///
/// Displayed as `FILE:LINE: ENTRY, field `FIELD`: PROBLEM`, leaving out the
/// parts that do not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: PathBuf,
    /// 1-based.
    pub line: Option<u64>,
    /// The entry at fault, e.g. `[[site]] #2 "chat"` or `usage.csv row`.
    pub entry: Option<String>,
    pub field: Option<String>,
    pub problem: String,
}

impl std::error::Error for ScenarioError {}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        match (&self.entry, &self.field) {
            (Some(entry), Some(field)) => write!(f, "{entry}, field `{field}`: ")?,
            (Some(entry), None) => write!(f, "{entry}: ")?,
            (None, Some(field)) => write!(f, "field `{field}`: ")?,
            (None, None) => {}
        }
        f.write_str(&self.problem)
    }
}

impl ScenarioError {
    /// A problem with a whole file.
    pub(crate) fn file(file: &Path, problem: impl fmt::Display) -> ScenarioError {
        ScenarioError { file: file.to_owned(), line: None, entry: None, field: None, problem: problem.to_string() }
    }

    /// A problem at a byte offset of a file's contents.
    pub(crate) fn at(file: &Path, bytes: &[u8], offset: u64, problem: impl fmt::Display) -> ScenarioError {
        ScenarioError { line: Some(line_of(bytes, offset)), ..ScenarioError::file(file, problem) }
    }

    pub(crate) fn entry(mut self, entry: impl Into<String>) -> ScenarioError {
        self.entry = Some(entry.into());
        self
    }

    pub(crate) fn field(mut self, field: impl Into<String>) -> ScenarioError {
        self.field = Some(field.into());
        self
    }
}

/// The 1-based line holding byte `offset`.
pub(crate) fn line_of(bytes: &[u8], offset: u64) -> u64 {
    let end = (offset as usize).min(bytes.len());
    memchr::memchr_iter(b'\n', &bytes[..end]).count() as u64 + 1
}

pub(crate) fn read_to_string(path: &Path) -> Result<String, ScenarioError> {
    let bytes = std::fs::read(path).map_err(|e| ScenarioError::file(path, format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to() as u64;
        ScenarioError::at(path, e.as_bytes(), offset, "not valid UTF-8")
    })
}
