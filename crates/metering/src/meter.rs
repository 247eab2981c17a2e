//! The recording side: shards of (log writer, aggregate), one per thread
//! that records, and the flush that hands aggregates to the store.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::wal::{self, Checkpoint, Replay, Segment, WalError, WalWriter};
use crate::{Event, Usage};

/// Most recording shards (threads) a meter has.
pub const SHARDS_MAX: usize = 256;

/// Records events durably and aggregates them until flushed.
pub struct Meter {
    dir: PathBuf,
    shards: Vec<Mutex<Shard>>,
    /// Taken but not yet recorded by the store (a flush that failed is
    /// retried with the next one, so its segments stay covered by exactly
    /// what the store records).
    pending: Mutex<Flush>,
}

struct Shard {
    wal: WalWriter,
    usage: Usage,
}

/// What a flush hands to the store, to record in one transaction.
#[derive(Clone, Debug, Default)]
pub struct Flush {
    pub usage: Usage,
    pub checkpoint: Checkpoint,
}

impl Meter {
    /// Opens the log in `dir` with `shards` writers. Segments left by an
    /// earlier run that `stored` does not cover are replayed first and
    /// returned: flush them before anything else.
    pub fn open(dir: &Path, shards: usize, stored: &Checkpoint) -> Result<(Meter, Replay), WalError> {
        let shards = shards.clamp(1, SHARDS_MAX);
        let replay = wal::replay(dir, stored)?;
        let shards = (0..shards)
            .map(|writer| Ok(Mutex::new(Shard { wal: WalWriter::open(dir, writer as u32)?, usage: Usage::default() })))
            .collect::<Result<Vec<_>, WalError>>()?;
        Ok((Meter { dir: dir.to_owned(), shards, pending: Mutex::new(Flush::default()) }, replay))
    }

    /// Logs `event` in shard `shard` (any number; taken modulo the shard
    /// count) and counts it. When this returns `Ok`, the event survives the
    /// process being killed.
    pub fn record(&self, shard: usize, event: Event) -> Result<(), WalError> {
        let mut shard = self.shards[shard % self.shards.len()].lock().unwrap_or_else(|e| e.into_inner());
        shard.wal.append(&event)?;
        shard.usage.record_owned(event);
        Ok(())
    }

    /// Makes every logged event survive a machine crash.
    pub fn sync(&self) -> std::io::Result<()> {
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|e| e.into_inner()).wal.sync()?;
        }
        Ok(())
    }

    /// Takes everything recorded and not yet [`Meter::forget`]-ten: what was
    /// taken before and not recorded, plus everything since, closing each
    /// shard's segment that holds events. The checkpoint covers exactly
    /// those events. Idle shards are left alone (no file churn).
    pub fn take(&self) -> Result<Flush, WalError> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut flush = Flush::default();
        let taken = self.shards.iter().try_for_each(|shard| self.take_shard(shard, &mut flush));
        // Whatever was taken is kept until the store has it, even if a
        // shard failed (its segments stay covered by what is recorded).
        pending.usage.merge(&flush.usage);
        pending.checkpoint.extend(&flush.checkpoint);
        taken?;
        Ok(pending.clone())
    }

    /// Moves a shard's aggregate and closed segment into `flush`. The next
    /// segment is made before the shard is locked and the closed one is
    /// synced after: recording waits only for the swap.
    fn take_shard(&self, shard: &Mutex<Shard>, flush: &mut Flush) -> Result<(), WalError> {
        let (writer, next) = {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            if shard.wal.is_empty() {
                return Ok(());
            }
            (shard.wal.writer(), shard.wal.next_segment())
        };
        let next = Segment::create(&self.dir, writer, next)?;
        let (closed, usage, segment) = {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let (closed, segment) = match shard.wal.rotate_to(next) {
                Ok((closed, segment)) => (closed, Some(segment)),
                // It filled up meanwhile: rotate the slow way.
                Err(next) => {
                    next.discard(&self.dir)?;
                    (shard.wal.rotate()?, None)
                }
            };
            (closed, std::mem::take(&mut shard.usage), segment)
        };
        flush.usage.merge(&usage);
        flush.checkpoint.flushed.insert(writer, closed);
        match segment {
            Some(segment) => Ok(segment.sync()?),
            None => Ok(()),
        }
    }

    /// After the store has recorded the last [`Meter::take`]: forgets it and
    /// deletes the segments it covers.
    pub fn forget(&self, checkpoint: &Checkpoint) -> std::io::Result<usize> {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Flush::default();
        wal::remove_covered(&self.dir, checkpoint)
    }
}
