//! The write-ahead log: every event is in a file before the request it
//! belongs to is answered.
//!
//! The log is a directory of segments, `<writer>-<segment>.wal`, one writer
//! per recording thread so that writers never wait for each other. A
//! segment is a file of [`SEGMENT_BYTES`] mapped into memory (shared): an
//! append is a copy into the page cache, with no system call, and once it
//! is done the event survives the process being killed (the kernel owns
//! the pages). [`WalWriter::sync`] makes it survive the machine too. A
//! segment's unused tail is zeros, which replay reads as its end.
//!
//! Segments are closed by [`WalWriter::rotate`] when their events are
//! flushed to the store; the store records the [`Checkpoint`] (per writer,
//! the last segment flushed) in the same transaction as the usage, so after
//! a crash exactly the segments after the checkpoint are replayed: nothing
//! is lost, nothing counted twice.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

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

/// The size of a segment file (sparse: only what is written takes room).
pub const SEGMENT_BYTES: usize = 16 << 20;

/// One thread's log.
pub struct WalWriter {
    dir: PathBuf,
    writer: u32,
    segment: u64,
    map: MmapMut,
    buffer: Vec<u8>,
    /// Bytes appended to the current segment.
    written: usize,
    /// Whether anything was appended since the last rotation (a segment
    /// that filled up is followed by the next without one).
    dirty: bool,
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
        let map = create(dir, writer, segment)?;
        Ok(WalWriter {
            dir: dir.to_owned(),
            writer,
            segment,
            map,
            buffer: Vec::with_capacity(256),
            written: 0,
            dirty: false,
        })
    }

    pub fn writer(&self) -> u32 {
        self.writer
    }

    /// Copies `event` into the log; a full segment is followed by the next.
    pub fn append(&mut self, event: &Event) -> Result<(), WalError> {
        self.buffer.clear();
        event.encode(&mut self.buffer)?;
        if self.written + self.buffer.len() > SEGMENT_BYTES {
            self.map.flush()?;
            // The next number free: one may be taken by a segment made
            // ahead of a rotation.
            let mut next = self.segment + 1;
            self.map = loop {
                match create(&self.dir, self.writer, next) {
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => next += 1,
                    created => break created?,
                }
            };
            self.segment = next;
            self.written = 0;
        }
        let end = self.written + self.buffer.len();
        self.map[self.written..end].copy_from_slice(&self.buffer);
        self.written = end;
        self.dirty = true;
        Ok(())
    }

    /// Whether nothing was appended since the last rotation.
    pub fn is_empty(&self) -> bool {
        !self.dirty
    }

    /// Makes everything appended so far survive a machine crash.
    pub fn sync(&self) -> std::io::Result<()> {
        self.map.flush()
    }

    /// A number for a segment made ahead of a rotation: one past the next,
    /// so that the current segment can still fill up and be followed by
    /// the next meanwhile (numbers need only grow).
    pub fn next_segment(&self) -> u64 {
        self.segment + 2
    }

    /// Starts `next` (made by [`Segment::create`] for
    /// [`WalWriter::next_segment`]) in place of the current segment, which
    /// is returned to be synced (outside any lock) with its number. If the
    /// writer moved past it meanwhile, `next` is given back.
    pub fn rotate_to(&mut self, next: Segment) -> Result<(u64, Segment), Segment> {
        if next.number <= self.segment || next.writer != self.writer {
            return Err(next);
        }
        let closed =
            Segment { writer: self.writer, number: self.segment, map: std::mem::replace(&mut self.map, next.map) };
        self.segment = next.number;
        self.written = 0;
        self.dirty = false;
        Ok((closed.number, closed))
    }

    /// Closes the current segment (synced) and starts the next; returns the
    /// closed segment's number (which covers any that filled up before it).
    pub fn rotate(&mut self) -> std::io::Result<u64> {
        self.map.flush()?;
        let closed = self.segment;
        self.map = create(&self.dir, self.writer, closed + 1)?;
        self.segment = closed + 1;
        self.written = 0;
        self.dirty = false;
        Ok(closed)
    }
}

/// A segment file, mapped: made ahead of a rotation, or closed by one.
pub struct Segment {
    writer: u32,
    number: u64,
    map: MmapMut,
}

impl Segment {
    /// Writer `writer`'s segment `number`, new: the file, its size, its
    /// name made durable and the map (the slow part of a rotation, done
    /// before it).
    pub fn create(dir: &Path, writer: u32, number: u64) -> std::io::Result<Segment> {
        Ok(Segment { writer, number, map: create(dir, writer, number)? })
    }

    /// Makes what was written to it survive a machine crash.
    pub fn sync(&self) -> std::io::Result<()> {
        self.map.flush()
    }

    /// Removes a segment made but not used.
    pub fn discard(self, dir: &Path) -> std::io::Result<()> {
        drop(self.map);
        std::fs::remove_file(segment_path(dir, self.writer, self.number))
    }
}

/// A new segment, mapped.
fn create(dir: &Path, writer: u32, segment: u64) -> std::io::Result<MmapMut> {
    let file = OpenOptions::new().read(true).write(true).create_new(true).open(segment_path(dir, writer, segment))?;
    file.set_len(SEGMENT_BYTES as u64)?;
    // Make the new file's name durable too.
    File::open(dir)?.sync_all()?;
    // SAFETY: the file was just created by this writer (`create_new`) and
    // is only ever written through this map; the log's directory belongs
    // to this process, so nothing truncates the file under the map.
    unsafe { MmapMut::map_mut(&file) }
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
        // A zero length is the unwritten rest of the segment: every record
        // has a body.
        while at < bytes.len() && !bytes[at..].iter().take(4).all(|&b| b == 0) {
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
