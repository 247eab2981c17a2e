//! A request path as the sites behind the gateway may read it.
//!
//! Apps and their frameworks read one path in several ways: as it came;
//! normalised (RFC 3986 §6.2.2: unreserved characters percent-decoded,
//! `//` collapsed, dot segments removed); and, in servlet containers, with
//! each segment's `;parameters` cut off before that. A decision on a path
//! (a premium-only prefix, the gateway's own `/.commons/`) holds for every
//! reading at once ([`Readings::any`]).
//!
//! # Invariants
//! - A path some app could read in yet another way — an encoded `/` or
//!   `\`, a backslash, an encoded or raw control byte, a byte that is not
//!   visible ASCII, a malformed or double escape (`%2565`), dot segments
//!   that climb above the root — is refused ([`Problem`]), never guessed at.
//! - A plain path (visible ASCII, no `%`, `\`, `;`, `//` or `/.`) has one
//!   reading, found without allocating.

/// Why a path is refused: an app could read it otherwise than the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    EncodedSlash,
    Backslash,
    Control,
    NotAscii,
    BadEscape,
    DoubleEscape,
    AboveRoot,
}

impl Problem {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Problem::EncodedSlash => "an encoded '/' (%2F)",
            Problem::Backslash => "a backslash, raw or encoded (%5C)",
            Problem::Control => "a control character, raw or encoded",
            Problem::NotAscii => "a byte that is not visible ASCII (percent-encode it)",
            Problem::BadEscape => "a '%' not followed by two hex digits",
            Problem::DoubleEscape => "a double percent-encoding (%25 and hex digits)",
            Problem::AboveRoot => "dot segments that climb above the root",
        }
    }
}

/// The readings of a path (its query left out).
#[derive(Debug)]
pub(crate) struct Readings<'p> {
    raw: &'p str,
    /// Normalised, when it differs from `raw`.
    normal: Option<String>,
    /// Normalised with `;parameters` cut from each segment, when the path
    /// has any.
    unparam: Option<String>,
}

impl Readings<'_> {
    /// Whether `holds` for any reading.
    pub(crate) fn any(&self, holds: impl Fn(&str) -> bool) -> bool {
        holds(self.raw) || self.normal.as_deref().is_some_and(&holds) || self.unparam.as_deref().is_some_and(&holds)
    }
}

/// The readings of `target`'s path (what precedes any `?`), or why an app
/// could read it in some other way.
pub(crate) fn readings(target: &str) -> Result<Readings<'_>, Problem> {
    let raw = target.split_once('?').map_or(target, |(path, _)| path);
    let bytes = raw.as_bytes();
    let mut plain = true;
    let mut previous = 0u8;
    for &b in bytes {
        if !(0x21..0x7f).contains(&b) {
            return Err(if b < 0x80 { Problem::Control } else { Problem::NotAscii });
        }
        if b == b'\\' {
            return Err(Problem::Backslash);
        }
        plain &= b != b'%' && b != b';' && !(previous == b'/' && (b == b'/' || b == b'.'));
        previous = b;
    }
    if plain {
        return Ok(Readings { raw, normal: None, unparam: None });
    }
    let decoded = decode(bytes)?;
    let normal = without_dots(decoded.split('/'))?;
    let unparam = if decoded.contains(';') {
        Some(without_dots(decoded.split('/').map(|segment| segment.split(';').next().unwrap_or("")))?)
    } else {
        None
    };
    Ok(Readings { raw, normal: (normal != raw).then_some(normal), unparam })
}

/// `path` with its unreserved characters decoded and every other escape in
/// upper case; an escape no app can read one way only is refused.
fn decode(path: &[u8]) -> Result<String, Problem> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = String::with_capacity(path.len());
    let mut at = 0;
    while at < path.len() {
        let b = path[at];
        if b != b'%' {
            out.push(b as char);
            at += 1;
            continue;
        }
        let (Some(high), Some(low)) = (path.get(at + 1).and_then(|&b| hex(b)), path.get(at + 2).and_then(|&b| hex(b)))
        else {
            return Err(Problem::BadEscape);
        };
        let value = high << 4 | low;
        match value {
            b'/' => return Err(Problem::EncodedSlash),
            b'\\' => return Err(Problem::Backslash),
            0..0x20 | 0x7f => return Err(Problem::Control),
            b'%' if path.get(at + 3).and_then(|&b| hex(b)).is_some()
                && path.get(at + 4).and_then(|&b| hex(b)).is_some() =>
            {
                return Err(Problem::DoubleEscape);
            }
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(value as char),
            _ => {
                out.push('%');
                out.push_str(&format!("{value:02X}"));
            }
        }
        at += 3;
    }
    Ok(out)
}

/// The path these segments make, with empty and `.` segments dropped and
/// each `..` taking the one before it away.
fn without_dots<'s>(segments: impl Iterator<Item = &'s str>) -> Result<String, Problem> {
    let mut kept: Vec<&str> = Vec::new();
    let mut directory = false;
    for segment in segments {
        directory = true;
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop().ok_or(Problem::AboveRoot)?;
            }
            segment => {
                kept.push(segment);
                directory = false;
            }
        }
    }
    let mut path = String::with_capacity(64);
    for segment in &kept {
        path.push('/');
        path.push_str(segment);
    }
    if directory || kept.is_empty() {
        path.push('/');
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(path: &str) -> Vec<String> {
        let readings = readings(path).unwrap();
        let mut all = vec![readings.raw.to_owned()];
        all.extend(readings.normal);
        all.extend(readings.unparam);
        all
    }

    #[test]
    fn a_path_is_read_as_it_came_normalised_and_without_parameters() {
        assert_eq!(all("/a/b?x=/../.."), ["/a/b"]);
        assert_eq!(all("//a/./b/../c/"), ["//a/./b/../c/", "/a/c/"]);
        assert_eq!(all("/%65x%2e/%7e%c3%a9"), ["/%65x%2e/%7e%c3%a9", "/ex./~%C3%A9"]);
        assert_eq!(all("/x/..;y/a;b/c"), ["/x/..;y/a;b/c", "/a/c"]);
        assert_eq!(all("/a/.."), ["/a/..", "/"]);
        assert_eq!(all("*"), ["*"]);
    }

    #[test]
    fn paths_an_app_could_read_otherwise_are_refused_with_their_problem() {
        for (path, problem) in [
            ("/a%2fb", Problem::EncodedSlash),
            ("/a%5cb", Problem::Backslash),
            ("/a\\b", Problem::Backslash),
            ("/a%00", Problem::Control),
            ("/a\tb", Problem::Control),
            ("/é", Problem::NotAscii),
            ("/%g0", Problem::BadEscape),
            ("/%2", Problem::BadEscape),
            ("/%252f", Problem::DoubleEscape),
            ("/../a", Problem::AboveRoot),
            ("/a/%2e%2e/..", Problem::AboveRoot),
            ("/..;/a", Problem::AboveRoot),
        ] {
            assert_eq!(readings(path).map(|_| ()), Err(problem), "{path}");
        }
        assert!(readings("/100%25").is_ok(), "an encoded '%' alone is one reading");
    }
}
