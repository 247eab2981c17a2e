//! Usage events and their write-ahead-log encoding.
//!
//! A record is `len: u32 | crc32: u32 | body`, little-endian, where the CRC
//! covers the body; a record that is cut short or whose CRC fails marks
//! the end of what was written before a crash.

use commons_core::Period;

/// One metered fact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A direct request by `user` to `site` in `minute` (since the epoch),
    /// served in `service_ms`.
    Direct { period: Period, user: String, site: String, minute: u32, service_ms: u64 },
    /// `site` called `service` for `user` (with a verified provenance
    /// token) in `minute`, and `service` spent `service_ms` on it. The call
    /// is also a direct use of `site` by `user` in that minute (a site only
    /// calls for the user of a request it is serving), so it counts that
    /// minute for `site` even if `site` then never answers. Minute 0 (a
    /// record older than the field) counts no minute.
    Call { period: Period, user: String, site: String, service: String, minute: u32, service_ms: u64 },
}

/// A record that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the record is cut short")]
    Truncated,
    #[error("the record's checksum does not match: it was not written whole")]
    Checksum,
    #[error("the record is malformed: {0}")]
    Malformed(&'static str),
}

/// Most bytes in one id (user, site, service).
pub const ID_MAX_BYTES: usize = u16::MAX as usize;

impl Event {
    /// Appends the framed record to `out`; refuses ids longer than
    /// [`ID_MAX_BYTES`].
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EventError> {
        let start = out.len();
        out.extend_from_slice(&[0; 8]);
        let (tag, period, user, site, third, minute, service_ms) = match self {
            Event::Direct { period, user, site, minute, service_ms } => {
                (0u8, period, user, site, "", *minute, *service_ms)
            }
            Event::Call { period, user, site, service, minute, service_ms } => {
                (1u8, period, user, site, service.as_str(), *minute, *service_ms)
            }
        };
        out.push(tag);
        out.extend_from_slice(&period.year().to_le_bytes());
        out.push(period.month());
        for id in [user.as_str(), site.as_str(), third] {
            if id.len() > ID_MAX_BYTES {
                out.truncate(start);
                return Err(EventError::Malformed("an id is longer than 65535 bytes"));
            }
            out.extend_from_slice(&(id.len() as u16).to_le_bytes());
            out.extend_from_slice(id.as_bytes());
        }
        out.extend_from_slice(&minute.to_le_bytes());
        out.extend_from_slice(&service_ms.to_le_bytes());
        let body_len = (out.len() - start - 8) as u32;
        let crc = crc32fast::hash(&out[start + 8..]);
        out[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    /// Reads one record from the front of `bytes`: the event and the bytes
    /// it took.
    pub fn decode(bytes: &[u8]) -> Result<(Event, usize), EventError> {
        if bytes.len() < 8 {
            return Err(EventError::Truncated);
        }
        let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        let body = bytes.get(8..8 + len).ok_or(EventError::Truncated)?;
        if crc32fast::hash(body) != crc {
            return Err(EventError::Checksum);
        }
        let mut at = 0;
        let mut take = |n: usize| -> Result<&[u8], EventError> {
            let piece = body.get(at..at + n).ok_or(EventError::Malformed("short body"))?;
            at += n;
            Ok(piece)
        };
        let tag = take(1)?[0];
        let year = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes"));
        let month = take(1)?[0];
        let period = Period::parse(&format!("{year:04}-{month:02}")).map_err(|_| EventError::Malformed("period"))?;
        let mut id = || -> Result<String, EventError> {
            let n = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes")) as usize;
            String::from_utf8(take(n)?.to_vec()).map_err(|_| EventError::Malformed("id is not UTF-8"))
        };
        let (user, site, third) = (id()?, id()?, id()?);
        let minute = u32::from_le_bytes(take(4)?.try_into().expect("4 bytes"));
        let service_ms = u64::from_le_bytes(take(8)?.try_into().expect("8 bytes"));
        if at != body.len() {
            return Err(EventError::Malformed("trailing bytes"));
        }
        let event = match tag {
            0 => Event::Direct { period, user, site, minute, service_ms },
            1 => Event::Call { period, user, site, service: third, minute, service_ms },
            _ => return Err(EventError::Malformed("unknown event kind")),
        };
        Ok((event, 8 + len))
    }
}
