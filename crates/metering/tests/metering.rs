//! Metering as the gateway uses it: exact distinct minutes, exact merges,
//! and a log that replays exactly what was recorded and not yet flushed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use commons_core::{Period, SplitMix64};
use metering::wal::{Checkpoint, replay};
use metering::{DirectKey, Event, Insert, Meter, MinuteSet, Usage};
use proptest::prelude::*;

fn period() -> Period {
    Period::parse("2026-11").unwrap()
}

fn direct(user: &str, site: &str, minute: u32, service_ms: u64) -> Event {
    Event::Direct { period: period(), user: user.into(), site: site.into(), minute, service_ms }
}

fn minutes_of(usage: &Usage, user: &str, site: &str) -> u32 {
    usage.direct[&DirectKey { period: period(), user: user.into(), site: site.into() }].minutes.count()
}

#[test]
fn n_requests_across_m_minutes_are_m_active_minutes() {
    let mut usage = Usage::default();
    // 1000 requests spread over minutes 100..107: an app that multiplies
    // its requests gains nothing.
    for i in 0..1000u32 {
        usage.record(&direct("alice", "wiki", 100 + i % 7, 3));
    }
    assert_eq!(minutes_of(&usage, "alice", "wiki"), 7);
    assert_eq!(usage.direct.values().next().unwrap().service_ms, 3000);
}

#[test]
fn minutes_arriving_slightly_out_of_order_count_once() {
    let mut set = MinuteSet::default();
    for minute in [100, 102, 101, 102, 100, 103, 101] {
        set.insert(minute);
    }
    assert_eq!(set.count(), 4);
    assert_eq!(set.insert(103 - 64), Insert::TooLate);
    assert_eq!(set.insert(103 - 63), Insert::Counted);
    assert_eq!(set.count(), 5);
}

#[test]
fn calls_add_up_service_time_per_caller_and_callee() {
    let mut usage = Usage::default();
    for ms in [100, 50] {
        usage.record(&Event::Call {
            period: period(),
            user: "alice".into(),
            site: "chat".into(),
            service: "search".into(),
            minute: 100,
            service_ms: ms,
        });
    }
    assert_eq!(usage.calls.values().copied().collect::<Vec<_>>(), vec![150]);
}

#[test]
fn a_call_is_a_direct_use_of_the_caller_in_its_minute_even_if_the_caller_never_answers() {
    let call = |minute| Event::Call {
        period: period(),
        user: "alice".into(),
        site: "chat".into(),
        service: "search".into(),
        minute,
        service_ms: 5,
    };
    let mut usage = Usage::default();
    usage.record(&call(100));
    let caller = usage.direct[&DirectKey { period: period(), user: "alice".into(), site: "chat".into() }];
    assert_eq!((caller.minutes.count(), caller.requests, caller.service_ms), (1, 0, 0));
    // With the caller's own answer in the same minute, the minute counts once.
    usage.record(&direct("alice", "chat", 100, 30));
    usage.record(&call(101));
    assert_eq!(minutes_of(&usage, "alice", "chat"), 2);
    assert_eq!(usage.direct.len(), 1, "the service's own direct use is not invented");
    // A record older than the minute field counts no minute, but the row is there.
    let mut old = Usage::default();
    old.record(&call(0));
    assert_eq!(minutes_of(&old, "alice", "chat"), 0);
}

proptest! {
    #[test]
    fn merging_a_later_aggregate_counts_each_minute_once(
        steps in proptest::collection::vec(-3i64..5, 1..300),
        tail in 0usize..40,
        cut in any::<prop::sample::Index>(),
    ) {
        // A walk of minutes with small steps back, split into an earlier
        // and a later aggregate.
        let mut minute = 1_000i64;
        let minutes: Vec<u32> = steps.iter().map(|s| { minute = (minute + s).max(0); minute as u32 }).collect();
        // A flush covers seconds, so what comes after the cut spans less
        // than the window (which is what merging relies on).
        let at = minutes.len().saturating_sub(1 + tail.min(cut.index(minutes.len())));
        let later_span = minutes[at..].iter().max().zip(minutes[at..].iter().min()).map_or(0, |(a, b)| a - b);
        prop_assume!(later_span < metering::MINUTE_WINDOW);
        let (mut earlier, mut later, mut all) = (MinuteSet::default(), MinuteSet::default(), MinuteSet::default());
        minutes[..at].iter().for_each(|&m| { earlier.insert(m); });
        minutes[at..].iter().for_each(|&m| { later.insert(m); });
        minutes.iter().for_each(|&m| { all.insert(m); });
        let distinct = minutes.iter().collect::<std::collections::BTreeSet<_>>().len() as u32;
        prop_assert_eq!(all.count(), distinct);
        prop_assert_eq!(earlier.merge(&later), 0);
        prop_assert_eq!(earlier.count(), distinct);
    }
}

#[test]
fn the_log_replays_what_was_recorded_and_skips_what_was_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let (meter, replayed) = Meter::open(dir.path(), 2, &Checkpoint::default()).unwrap();
    assert_eq!(replayed.events, 0);
    for minute in 0..10 {
        meter.record(minute as usize, direct("alice", "wiki", minute, 1)).unwrap();
    }
    let flush = meter.take().unwrap();
    assert_eq!(minutes_of(&flush.usage, "alice", "wiki"), 10);
    // The store records the flush; then the covered segments can go.
    let stored = flush.checkpoint.clone();
    meter.forget(&stored).unwrap();
    for minute in 10..15 {
        meter.record(0, direct("alice", "wiki", minute, 1)).unwrap();
    }
    drop(meter); // a crash: nothing flushed since

    let (_, replayed) = Meter::open(dir.path(), 2, &stored).unwrap();
    assert_eq!(replayed.events, 5);
    assert_eq!(minutes_of(&replayed.usage, "alice", "wiki"), 5);
    // Had the store not recorded the first flush, it would be replayed too.
    let everything = replay(dir.path(), &Checkpoint::default()).unwrap();
    assert_eq!(everything.events, 5, "flushed segments were deleted");
}

#[test]
fn a_flush_the_store_did_not_record_is_retried_with_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (meter, _) = Meter::open(dir.path(), 1, &Checkpoint::default()).unwrap();
    meter.record(0, direct("alice", "wiki", 1, 1)).unwrap();
    let failed = meter.take().unwrap(); // the store refused it: not forgotten
    meter.record(0, direct("alice", "wiki", 2, 1)).unwrap();
    let retry = meter.take().unwrap();
    assert_eq!(minutes_of(&retry.usage, "alice", "wiki"), 2);
    assert!(retry.checkpoint.covers(0, failed.checkpoint.flushed[&0]));
    meter.forget(&retry.checkpoint).unwrap();
    assert!(meter.take().unwrap().usage.is_empty());
    assert_eq!(replay(dir.path(), &Checkpoint::default()).unwrap().events, 0);
}

#[test]
fn a_record_cut_short_by_a_crash_ends_the_replay_of_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (meter, _) = Meter::open(dir.path(), 1, &Checkpoint::default()).unwrap();
    for minute in 0..3 {
        meter.record(0, direct("alice", "wiki", minute, 1)).unwrap();
    }
    drop(meter);
    let (_, _, path) = metering::wal::segments(dir.path()).unwrap().pop().unwrap();
    let mut record = Vec::new();
    direct("alice", "wiki", 0, 1).encode(&mut record).unwrap();
    let written = 3 * record.len();
    // Killed while copying the third record: its last bytes never landed.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[written - 10..written].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let replayed = replay(dir.path(), &Checkpoint::default()).unwrap();
    assert_eq!(replayed.events, 2);
    assert_eq!(replayed.torn.len(), 1);
    assert_eq!(replayed.torn[0].1, 2 * record.len() as u64, "whole records end there");
    // A file cut short (written by appending, or truncated) ends the same way.
    std::fs::write(&path, &bytes[..written - 10]).unwrap();
    assert_eq!(replay(dir.path(), &Checkpoint::default()).unwrap().events, 2);
}

#[test]
fn checkpoints_round_trip_as_text() {
    let mut checkpoint = Checkpoint::default();
    checkpoint.flushed.insert(0, 7);
    checkpoint.flushed.insert(3, 12);
    assert_eq!(Checkpoint::from_text(&checkpoint.to_text()), Some(checkpoint));
    assert_eq!(Checkpoint::from_text(""), Some(Checkpoint::default()));
    assert_eq!(Checkpoint::from_text("x:1"), None);
}

#[test]
fn any_bytes_replay_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = SplitMix64::new(7);
    for i in 0..50u64 {
        let bytes: Vec<u8> = (0..rng.below(300)).map(|_| rng.next_u64() as u8).collect();
        std::fs::write(dir.path().join(format!("0000-{i:012}.wal")), bytes).unwrap();
    }
    // Random bytes are at best a torn record: each segment ends its replay.
    let replayed = replay(dir.path(), &Checkpoint::default()).unwrap();
    assert!(replayed.torn.len() <= 50);
}

/// The killed recorder: records one event per user, printing each once
/// `record` has returned.
fn child(dir: &str) {
    let (meter, _) = Meter::open(std::path::Path::new(dir), 2, &Checkpoint::default()).unwrap();
    let mut out = std::io::stdout().lock();
    for n in 0u64.. {
        meter.record(n as usize, direct(&format!("u{n}"), "wiki", 1, 1)).unwrap();
        writeln!(out, "acked {n}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn a_killed_recorder_loses_no_acknowledged_event_and_counts_none_twice() {
    if let Ok(dir) = std::env::var("METERING_CRASH_CHILD") {
        return child(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut recorder = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_killed_recorder_loses_no_acknowledged_event_and_counts_none_twice", "--nocapture"])
        .env("METERING_CRASH_CHILD", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(recorder.stdout.take().unwrap());
    let mut acknowledged = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        let Some(n) = line.strip_prefix("acked ") else { continue };
        let n: u64 = n.parse().unwrap();
        acknowledged.push(n);
        if acknowledged.len() == 20_000 {
            recorder.kill().unwrap(); // SIGKILL, mid-stream
            break;
        }
    }
    recorder.wait().unwrap();
    let replayed = replay(dir.path(), &Checkpoint::default()).unwrap();
    for n in &acknowledged {
        assert_eq!(minutes_of(&replayed.usage, &format!("u{n}"), "wiki"), 1, "u{n}");
    }
    assert!(replayed.events >= acknowledged.len() as u64);
    assert_eq!(replayed.usage.direct.len() as u64, replayed.events, "an event counted twice");
}

#[test]
fn a_segment_that_fills_up_is_followed_by_the_next_and_both_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (meter, _) = Meter::open(dir.path(), 1, &Checkpoint::default()).unwrap();
    let mut record = Vec::new();
    direct("alice", "wiki", 0, 1).encode(&mut record).unwrap();
    let n = metering::wal::SEGMENT_BYTES / record.len() + 1000;
    for i in 0..n {
        meter.record(0, direct("alice", "wiki", (i % 50) as u32, 1)).unwrap();
    }
    assert_eq!(metering::wal::segments(dir.path()).unwrap().len(), 2);
    // Killed now: both segments replay, every event once.
    let replayed = replay(dir.path(), &Checkpoint::default()).unwrap();
    assert_eq!(replayed.events, n as u64);
    assert!(replayed.torn.is_empty());
    // Flushed: one checkpoint covers both.
    let flush = meter.take().unwrap();
    assert_eq!(flush.usage.direct.values().next().unwrap().requests, n as u64);
    meter.forget(&flush.checkpoint).unwrap();
    assert_eq!(replay(dir.path(), &Checkpoint::default()).unwrap().events, 0);
}

#[test]
fn a_segment_made_ahead_of_a_rotation_never_collides_with_one_that_filled_up() {
    use metering::wal::{Segment, WalWriter};
    let dir = tempfile::tempdir().unwrap();
    let mut wal = WalWriter::open(dir.path(), 0).unwrap();
    let event = direct("alice", "wiki", 0, 1);
    let mut record = Vec::new();
    event.encode(&mut record).unwrap();
    let fill = |wal: &mut WalWriter| {
        for _ in 0..metering::wal::SEGMENT_BYTES / record.len() + 10 {
            wal.append(&event).unwrap();
        }
    };
    // Made ahead while the writer is in segment 1: number 3.
    let ahead = Segment::create(dir.path(), 0, wal.next_segment()).unwrap();
    fill(&mut wal); // now in 2
    let (closed, old) = wal.rotate_to(ahead).map_err(drop).expect("3 is still ahead");
    assert_eq!(closed, 2);
    old.sync().unwrap();
    // A number already taken is skipped when a segment fills up (5 is
    // taken: the writer goes from 3 to 4, then from 4 to 6).
    let taken = Segment::create(dir.path(), 0, 5).unwrap();
    fill(&mut wal);
    fill(&mut wal);
    let numbers: Vec<u64> = metering::wal::segments(dir.path()).unwrap().iter().map(|(_, s, _)| *s).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6]);
    // A segment the writer moved past is given back, and removed.
    let behind = wal.rotate_to(taken).map(drop).expect_err("6 is past 5");
    behind.discard(dir.path()).unwrap();
    // Everything appended replays, once.
    let replayed = replay(dir.path(), &Checkpoint::default()).unwrap();
    assert_eq!(replayed.events, 3 * (metering::wal::SEGMENT_BYTES / record.len() + 10) as u64);
}
