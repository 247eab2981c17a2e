//! The write-ahead log: every event is in a file before the request it
//! belongs to is answered.
//!
//! The log is a directory of segments, `<writer>-<segment>.wal`, one writer
//! per recording thread so that writers never wait for each other. An
//! append is one `write` call: once it returns, the event survives the
//! process being killed; [`WalWriter::sync`] makes it survive the machine
//! too (the gateway syncs on a short timer, group-commit style).
//!
//! Segments are closed by [`WalWriter::rotate`] when their events are
//! flushed to the store; the store records the [`Checkpoint`] (per writer,
//! the last segment flushed) in the same transaction as the usage, so after
//! a crash exactly the segments after the checkpoint are replayed: nothing
//! is lost, nothing counted twice.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Event, EventError, Usage};

/// Per writer, the last segment whose events are in the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub flushed: BTreeMap<u32, u64>,
}

impl Checkpoint {
    pub fn covers(&self, writer: u32, segment: u64) -> bool {
        self.flushed.get(&writer).is_some_and(|&last| segment <= last)
    }

    /// Text form for storing: `writer:segment,…`.
    pub fn to_text(&self) -> String {
        self.flushed.iter().map(|(w, s)| format!("{w}:{s}")).collect::<Vec<_>>().join(",")
    }

    pub fn from_text(text: &str) -> Option<Checkpoint> {
        let mut flushed = BTreeMap::new();
        for pair in text.split(',').filter(|p| !p.is_empty()) {
            let (w, s) = pair.split_once(':')?;
            flushed.insert(w.parse().ok()?, s.parse().ok()?);
        }
        Some(Checkpoint { flushed })
    }

    /// This checkpoint and `later` together.
    pub fn extend(&mut self, later: &Checkpoint) {
        for (&writer, &segment) in &later.flushed {
            let entry = self.flushed.entry(writer).or_insert(segment);
            *entry = (*entry).max(segment);
        }
    }
}

/// One thread's log.
pub struct WalWriter {
    dir: PathBuf,
    writer: u32,
    segment: u64,
    file: File,
    buffer: Vec<u8>,
    /// Bytes appended to the current segment.
    written: u64,
}

/// The name of a segment file.
fn segment_path(dir: &Path, writer: u32, segment: u64) -> PathBuf {
    dir.join(format!("{writer:04}-{segment:012}.wal"))
}

fn parse_segment_name(name: &str) -> Option<(u32, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (writer, segment) = stem.split_once('-')?;
    Some((writer.parse().ok()?, segment.parse().ok()?))
}

/// The segments in `dir`, by writer then segment.
pub fn segments(dir: &Path) -> std::io::Result<Vec<(u32, u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some((writer, segment)) = entry.file_name().to_str().and_then(parse_segment_name) {
            found.push((writer, segment, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

impl WalWriter {
    /// Opens writer `writer`'s log in `dir`, in a new segment after any it
    /// wrote before (those are left for replay).
    pub fn open(dir: &Path, writer: u32) -> std::io::Result<WalWriter> {
        std::fs::create_dir_all(dir)?;
        let last = segments(dir)?.iter().filter(|(w, _, _)| *w == writer).map(|(_, s, _)| *s).max();
        let segment = last.map_or(1, |s| s + 1);
        let file = create(dir, writer, segment)?;
        Ok(WalWriter { dir: dir.to_owned(), writer, segment, file, buffer: Vec::with_capacity(256), written: 0 })
    }

    pub fn writer(&self) -> u32 {
        self.writer
    }

    /// Writes `event` to the log in one `write` call.
    pub fn append(&mut self, event: &Event) -> Result<(), WalError> {
        self.buffer.clear();
        event.encode(&mut self.buffer)?;
        self.file.write_all(&self.buffer)?;
        self.written += self.buffer.len() as u64;
        Ok(())
    }

    /// Whether anything was appended to the current segment.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Makes everything appended so far survive a machine crash.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// Closes the current segment (synced) and starts the next; returns the
    /// closed segment's number.
    pub fn rotate(&mut self) -> std::io::Result<u64> {
        self.file.sync_data()?;
        let closed = self.segment;
        self.file = create(&self.dir, self.writer, closed + 1)?;
        self.segment = closed + 1;
        self.written = 0;
        Ok(closed)
    }
}

fn create(dir: &Path, writer: u32, segment: u64) -> std::io::Result<File> {
    let file = OpenOptions::new().create_new(true).append(true).open(segment_path(dir, writer, segment))?;
    // Make the new file's name durable too.
    File::open(dir)?.sync_all()?;
    Ok(file)
}

/// Why the log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("the write-ahead log: {0}")]
    Io(#[from] std::io::Error),
    #[error("an event cannot be logged: {0}")]
    Event(#[from] EventError),
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct Replay {
    pub usage: Usage,
    /// The segments replayed, as a checkpoint to record with `usage`.
    pub checkpoint: Checkpoint,
    pub events: u64,
    /// Segments that ended in a record cut short by a crash: (file, the
    /// offset where whole records end). Everything before is replayed.
    pub torn: Vec<(PathBuf, u64)>,
}

/// Reads every segment in `dir` not covered by `checkpoint`, in order.
/// Call it before opening writers on `dir`: the segments it reads are taken
/// to be closed, and its checkpoint covers them.
pub fn replay(dir: &Path, checkpoint: &Checkpoint) -> std::io::Result<Replay> {
    let mut replay = Replay::default();
    if !dir.exists() {
        return Ok(replay);
    }
    for (writer, segment, path) in segments(dir)? {
        if checkpoint.covers(writer, segment) {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let mut at = 0;
        while at < bytes.len() {
            match Event::decode(&bytes[at..]) {
                Ok((event, taken)) => {
                    replay.usage.record(&event);
                    replay.events += 1;
                    at += taken;
                }
                // A crash mid-write leaves a short or half-written record
                // at the end; nothing after it was acknowledged.
                Err(_) => {
                    replay.torn.push((path.clone(), at as u64));
                    break;
                }
            }
        }
        let last = replay.checkpoint.flushed.entry(writer).or_insert(segment);
        *last = (*last).max(segment);
    }
    Ok(replay)
}

/// Deletes the segments `checkpoint` covers: their events are in the store.
pub fn remove_covered(dir: &Path, checkpoint: &Checkpoint) -> std::io::Result<usize> {
    let mut removed = 0;
    for (writer, segment, path) in segments(dir)? {
        if checkpoint.covers(writer, segment) {
            std::fs::remove_file(path)?;
            removed += 1;
        }
    }
    Ok(removed)
}
