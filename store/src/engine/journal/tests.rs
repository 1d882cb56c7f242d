//! Tests of the journal: what a reopen replays after clean closes, torn
//! and lost tails, segment rolls and releases, and concurrent group commits.

use super::*;
use std::sync::Arc;

fn payload(i: u64) -> Vec<u8> {
    // Lengths vary so that records straddle small segments differently.
    let n = 1 + (i * 37 % 200) as usize;
    (0..n).map(|j| (i as usize + j) as u8).collect()
}

/// Opens `dir` and collects what it replays after `applied`.
fn reopen(dir: &Path, opts: JournalOptions, applied: u64) -> (Journal, Vec<(u64, Vec<u8>)>) {
    let mut got = Vec::new();
    let (j, n) = Journal::open(dir, opts, applied, |lsn, p| {
        got.push((lsn, p.to_vec()));
        Ok(())
    })
    .unwrap();
    assert_eq!(n as usize, got.len());
    (j, got)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with(SPARE))
        .collect();
    v.sort();
    v
}

/// The record at `at` of a segment's bytes if it is whole, checks, and
/// is number `lsn`.
fn record_at(bytes: &[u8], at: usize, lsn: u64) -> Option<&[u8]> {
    let (len, kind, got, check) = record_head(bytes.get(at..)?)?;
    let payload = bytes.get(at + RECORD..at + RECORD + len)?;
    (len > 0 && got == lsn && xxh3_64_with_seed(payload, kind.seed(lsn)) == check).then_some(payload)
}

fn expect(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
    range.map(|i| (i, payload(i))).collect()
}

/// A new journal holding records 1..=n, synced and closed.
fn written(opts: JournalOptions, n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = reopen(dir.path(), opts, 0);
    for i in 1..=n {
        j.append(&payload(i)).unwrap();
    }
    j.sync_all().unwrap();
    dir
}

/// Each group write and sync is timed: the longest is kept, and those
/// over `SLOW_SYNC` are counted.
#[test]
fn slow_syncs_are_counted_and_the_longest_kept() {
    use std::time::Duration;
    let mut s = JournalStats::default();
    s.note_sync(Duration::from_micros(300));
    s.note_sync(crate::engine::SLOW_SYNC + Duration::from_millis(5));
    s.note_sync(Duration::from_millis(2));
    s.note_sync(crate::engine::SLOW_SYNC);
    assert_eq!((s.longest_sync_us, s.slow_syncs), (15_000, 1));
    // A real journal's syncs are timed in microseconds, no longer than
    // the calls that made them.
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = reopen(dir.path(), JournalOptions::default(), 0);
    let started = std::time::Instant::now();
    for i in 1..=20 {
        j.append(&payload(i)).unwrap();
        j.sync_to(i).unwrap();
    }
    let spent = started.elapsed().as_micros() as u64;
    let st = j.stats();
    assert_eq!(st.syncs, 20);
    assert!(st.longest_sync_us <= spent, "{} µs of {spent}", st.longest_sync_us);
    assert!(st.slow_syncs <= st.syncs);
}

#[test]
fn synced_records_come_back_after_the_last_applied_one() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions::default();
    let (j, got) = reopen(dir.path(), opts, 0);
    assert!(got.is_empty());
    for i in 1..=50 {
        assert_eq!(j.append(&payload(i)).unwrap(), i);
    }
    j.sync_to(50).unwrap();
    drop(j);
    let (j, got) = reopen(dir.path(), opts, 0);
    assert_eq!(got, expect(1..=50));
    assert_eq!(j.last_lsn(), 50);
    drop(j);
    // What the caller's state holds already is not handed back.
    let (j, got) = reopen(dir.path(), opts, 42);
    assert_eq!(got, expect(43..=50));
    assert_eq!(j.append(&payload(51)).unwrap(), 51);
}

#[test]
fn a_torn_record_ends_the_journal_and_later_appends_follow_it() {
    let opts = JournalOptions::default();
    let dir = written(opts, 20);
    // Tear the last record: its final byte never reached the disk.
    let seg = segments(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let end = HEADER + (1..=20).map(|i| RECORD + payload(i).len()).sum::<usize>();
    let mut torn = bytes.clone();
    torn[end - 1] ^= 0xFF;
    std::fs::write(&seg, &torn).unwrap();
    let (j, got) = reopen(dir.path(), opts, 0);
    assert_eq!(got, expect(1..=19));
    // Record 20 was never acknowledged: its number is taken again.
    assert_eq!(j.append(&payload(20)).unwrap(), 20);
    j.append(&payload(21)).unwrap();
    j.sync_all().unwrap();
    drop(j);
    let (_, got) = reopen(dir.path(), opts, 0);
    assert_eq!(got, expect(1..=21));
}

#[test]
fn records_roll_over_segments_and_released_ones_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions { segment_bytes: 600, prefill: false };
    let (j, _) = reopen(dir.path(), opts, 0);
    for i in 1..=100 {
        j.append(&payload(i)).unwrap();
        if i % 7 == 0 {
            j.sync_to(i).unwrap();
        }
    }
    // A record longer than a segment gets one of its own.
    let big = vec![7u8; 2000];
    assert_eq!(j.append(&big).unwrap(), 101);
    j.sync_all().unwrap();
    let closed = j.closed_segments();
    assert!(closed > 5, "{closed} segments closed");
    j.release_through(50).unwrap();
    assert!(j.closed_segments() < closed);
    drop(j);
    let (j, got) = reopen(dir.path(), opts, 50);
    let mut want = expect(51..=100);
    want.push((101, big));
    assert_eq!(got, want);
    drop(j);
    // A caller holding every record gets none back.
    let (j, got) = reopen(dir.path(), opts, 101);
    assert!(got.is_empty());
    // Releasing everything leaves only the segment being appended to.
    j.release_through(101).unwrap();
    assert_eq!(j.closed_segments(), 0);
    assert_eq!(segments(dir.path()).len(), 1);
}

/// A release that fails half-way keeps the segments it did not remove, in
/// order: a later release removes none newer before them, so no crash can
/// leave a gap; and a segment already gone is taken as removed.
#[test]
fn a_release_that_fails_half_way_keeps_the_rest_for_the_next_one() {
    let opts = JournalOptions { segment_bytes: 600, prefill: false };
    let dir = written(opts, 100);
    let (j, _) = reopen(dir.path(), opts, 0);
    for i in 101..=200 {
        j.append(&payload(i)).unwrap();
    }
    j.sync_all().unwrap();
    let closed = j.closed_segments();
    let before = segments(dir.path());
    assert!(closed > 5 && before.len() == closed + 1, "{closed} closed, {} files", before.len());
    // The second oldest cannot be removed: a directory now holds its name.
    std::fs::remove_file(&before[1]).unwrap();
    std::fs::create_dir(&before[1]).unwrap();
    std::fs::write(before[1].join("x"), b"x").unwrap();
    assert!(j.release_through(200).is_err());
    assert_eq!(j.closed_segments(), closed - 1, "only the oldest went");
    assert!(j.release_through(200).is_err(), "the next release stops at the same one");
    assert_eq!(segments(dir.path()), before[1..], "nothing newer removed meanwhile");
    // Once it is gone, the next release goes on past it.
    std::fs::remove_dir_all(&before[1]).unwrap();
    j.release_through(200).unwrap();
    assert_eq!(j.closed_segments(), 0);
    assert_eq!(segments(dir.path()), before[before.len() - 1..]);
}

#[test]
fn segments_after_a_gap_in_the_records_were_never_acknowledged() {
    let opts = JournalOptions { segment_bytes: 600, prefill: false };
    let dir = written(opts, 60);
    // A crash in the middle of a group that rolled: the second segment's
    // last record is torn, the third (written in the same group) whole.
    let segs = segments(dir.path());
    assert!(segs.len() >= 4, "{segs:?}");
    let second = &segs[1];
    let mut bytes = std::fs::read(second).unwrap();
    let first = read_header(&bytes, 2).unwrap();
    let mut at = HEADER;
    let mut lsn = first;
    let mut last_at = at;
    while let Some(p) = record_at(&bytes, at, lsn) {
        last_at = at;
        at += RECORD + p.len();
        lsn += 1;
    }
    bytes[last_at + RECORD] ^= 0xFF;
    std::fs::write(second, &bytes).unwrap();
    let (_, got) = reopen(dir.path(), opts, 0);
    assert_eq!(got, expect(1..=lsn - 2));
    // The later segments are gone; the new session's follows the second.
    let left = segments(dir.path());
    assert_eq!(left.len(), 3, "{left:?}");
}

#[test]
fn a_lost_segment_or_lost_records_refuse_to_open() {
    let opts = JournalOptions { segment_bytes: 600, prefill: false };
    let dir = written(opts, 60);
    let segs = segments(dir.path());
    std::fs::remove_file(&segs[2]).unwrap();
    let e = Journal::open(dir.path(), opts, 0, |_, _| Ok(())).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
    // Without the first segments, records the caller does not hold are gone.
    let dir = written(opts, 60);
    std::fs::remove_file(&segments(dir.path())[0]).unwrap();
    let e = Journal::open(dir.path(), opts, 0, |_, _| Ok(())).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
    // A caller whose state holds them opens it.
    let first_kept = 1 + (1..=60).scan(HEADER, |used, i| {
        *used += RECORD + payload(i).len();
        Some(*used)
    })
    .take_while(|&u| u <= 600)
    .count() as u64;
    let (_, got) = reopen(dir.path(), opts, first_kept - 1);
    assert_eq!(got, expect(first_kept..=60));
}

#[test]
fn unsynced_records_the_caller_persisted_are_not_a_gap() {
    let opts = JournalOptions::default();
    let dir = written(opts, 10);
    // Records 11..=15 reached the caller's state but not the journal.
    let (j, got) = reopen(dir.path(), opts, 15);
    assert!(got.is_empty());
    assert_eq!(j.append(&payload(16)).unwrap(), 16);
    j.sync_all().unwrap();
    drop(j);
    let (_, got) = reopen(dir.path(), opts, 15);
    assert_eq!(got, expect(16..=16));
}

#[test]
fn concurrent_appenders_share_syncs_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions { segment_bytes: 4096, prefill: false };
    let (j, _) = reopen(dir.path(), opts, 0);
    let j = Arc::new(j);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let j = Arc::clone(&j);
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..200u64 {
                    let p = format!("{t}:{i}").into_bytes();
                    let lsn = j.append(&p).unwrap();
                    j.sync_to(lsn).unwrap();
                    mine.push((lsn, p));
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<(u64, Vec<u8>)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    all.sort();
    drop(j);
    let (_, got) = reopen(dir.path(), opts, 0);
    assert_eq!(got, all);
}

fn spares(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with(SPARE))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len()))
        .collect();
    v.sort();
    v
}

#[test]
fn prefilled_segments_are_full_length_and_recycled() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions { segment_bytes: 8192, prefill: true };
    let (j, _) = reopen(dir.path(), opts, 0);
    // Two spares: a roll takes one, a cancel may need the other.
    assert_eq!(spares(dir.path()), vec![("spare-1.jnl".to_owned(), 8192), ("spare-2.jnl".to_owned(), 8192)]);
    assert_eq!(std::fs::metadata(&segments(dir.path())[0]).unwrap().len(), 8192);
    for i in 1..=400 {
        j.append(&payload(i)).unwrap();
        // What the engine's keeper does after a roll took the spare.
        if j.wants_spare() {
            j.sync_to(i).unwrap();
            j.make_spare().unwrap();
        }
    }
    j.sync_all().unwrap();
    assert!(j.closed_segments() > 3);
    j.release_through(400).unwrap();
    // Released segments become spares (up to two) or go.
    assert_eq!(spares(dir.path()).len(), SPARES);
    assert_eq!(segments(dir.path()).len(), 1);
    for i in 401..=600 {
        j.append(&payload(i)).unwrap();
    }
    j.sync_all().unwrap();
    drop(j);
    // A recycled segment's old records do not come back.
    let (j, got) = reopen(dir.path(), opts, 400);
    assert_eq!(got, expect(401..=600));
    assert!(!spares(dir.path()).is_empty());
    drop(j);
    // Without prefilling, spares found are deleted.
    let (_, got) = reopen(dir.path(), JournalOptions { segment_bytes: 8192, prefill: false }, 400);
    assert_eq!(got, expect(401..=600));
    assert_eq!(spares(dir.path()), vec![]);
}

#[test]
fn empty_and_oversized_payloads_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = reopen(dir.path(), JournalOptions::default(), 0);
    assert!(j.append(&[]).is_err());
    assert_eq!(j.append(b"x").unwrap(), 1);
}

#[test]
fn records_of_uses_come_back_with_their_kind_from_where_asked() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions { segment_bytes: 4096, prefill: false };
    {
        let (j, _) = Journal::open(dir.path(), opts, 0, |_, _| Ok(())).unwrap();
        let mut queued = Vec::new();
        for i in 1..=30u64 {
            let kind = if i % 3 == 0 { Kind::Uses } else { Kind::Batch };
            let lsn = j.append_then(kind, &payload(i), |lsn| queued.push(lsn)).unwrap();
            assert_eq!(lsn, i);
        }
        assert_eq!(queued, (1..=30).collect::<Vec<_>>(), "then runs in journal order");
        j.sync_all().unwrap();
    }
    // The tables hold batches through 20, the trail uses through 10.
    let mut got = Vec::new();
    let (j, replayed) = Journal::open_from(dir.path(), opts, 20, 10, |lsn, kind, p| {
        got.push((lsn, kind, p.to_vec()));
        Ok(())
    })
    .unwrap();
    assert_eq!(replayed, 6, "batches after 20 count as replayed");
    let want: Vec<(u64, Kind, Vec<u8>)> =
        (11..=30).map(|i| (i, if i % 3 == 0 { Kind::Uses } else { Kind::Batch }, payload(i))).collect();
    assert_eq!(got, want);
    drop(j);
    // The plain open hands back batches only.
    let (_, seen) = reopen(dir.path(), opts, 20);
    assert_eq!(seen.iter().map(|(l, _)| *l).collect::<Vec<_>>(), vec![22, 23, 25, 26, 28, 29]);
}

#[test]
fn a_record_whose_kind_bit_flipped_fails_its_check() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions::default();
    {
        let (j, _) = Journal::open(dir.path(), opts, 0, |_, _| Ok(())).unwrap();
        j.append_then(Kind::Uses, b"uses", |_| ()).unwrap();
        j.append(b"batch").unwrap();
        j.sync_all().unwrap();
    }
    let seg = segments(dir.path()).into_iter().next().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[HEADER + 3] ^= 0x80;
    std::fs::write(&seg, &bytes).unwrap();
    let mut got = 0;
    Journal::open_from(dir.path(), opts, 0, 0, |_, _, _| {
        got += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(got, 0, "a flipped kind reads as a torn record");
}

/// A cancelled batch is never replayed, wherever its cancel lies (the
/// same segment or a later one), and a cancel is no record to replay.
#[test]
fn a_cancelled_batch_is_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions { segment_bytes: 1024, prefill: false };
    let mut passed = Vec::new();
    {
        let (j, _) = reopen(dir.path(), opts, 0);
        let checks: Vec<u64> = (1..=3).map(|i| j.append_checked(&payload(i)).unwrap().1).collect();
        // Batch 2 is cancelled at once, batch 3 only after records that
        // fill a few segments.
        j.sync_all().unwrap();
        j.cancel(2, checks[1], |at| passed.push(at)).unwrap();
        for i in 5..=30 {
            j.append(&payload(i)).unwrap();
        }
        j.cancel(3, checks[2], |at| passed.push(at)).unwrap();
        j.append(&payload(32)).unwrap();
        j.sync_all().unwrap();
    }
    assert_eq!(passed, vec![4, 31], "each cancel has a number of its own");
    assert!(segments(dir.path()).len() > 3, "the second cancel lies segments after its batch");
    let want: Vec<(u64, Vec<u8>)> = [1].into_iter().chain(5..=30).chain([32]).map(|i| (i, payload(i))).collect();
    let (j, got) = reopen(dir.path(), opts, 0);
    assert_eq!(got, want);
    assert_eq!(j.last_lsn(), 32);
    drop(j);
    // From a later position the same holds; the records of either kind
    // that `open_from` hands back include no cancel.
    let mut kinds = Vec::new();
    Journal::open_from(dir.path(), opts, 2, 0, |lsn, kind, _| {
        kinds.push((lsn, kind));
        Ok(())
    })
    .unwrap();
    assert_eq!(kinds.iter().map(|(l, _)| *l).collect::<Vec<_>>(), want.iter().map(|(l, _)| *l).collect::<Vec<_>>());
    assert!(kinds.iter().all(|(_, k)| *k == Kind::Batch));
}

/// A cancel whose payload is damaged fails its check: the journal ends
/// there, and the batch it named is replayed as any other.
#[test]
fn a_damaged_cancel_ends_the_journal_and_cancels_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions::default();
    {
        let (j, _) = reopen(dir.path(), opts, 0);
        let (_, check) = j.append_checked(&payload(1)).unwrap();
        j.sync_all().unwrap();
        j.cancel(1, check, |_| ()).unwrap();
        j.append(&payload(3)).unwrap();
        j.sync_all().unwrap();
    }
    let seg = segments(dir.path()).into_iter().next().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let cancel_at = HEADER + RECORD + payload(1).len();
    assert_eq!(record_head(&bytes[cancel_at..]).unwrap().1, Kind::Cancel);
    assert_eq!(record_head(&bytes[cancel_at..]).unwrap().0, 16, "a number and a check");
    bytes[cancel_at + RECORD] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let (_, got) = reopen(dir.path(), opts, 0);
    assert_eq!(got, expect(1..=1));
}

/// With prefilled segments, a roll that finds no spare ready makes one at
/// once; where none can be made (a full disk) the append that would roll
/// is refused before it is numbered, and the journal goes on once one can.
#[test]
fn a_roll_without_a_spare_makes_one_or_is_refused_before_numbering() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions { segment_bytes: 4096, prefill: true };
    let mut appended = Vec::new();
    {
        let (j, _) = reopen(dir.path(), opts, 0);
        // The spares made at open take the first roll; the next finds only
        // the one kept for a cancel (no keeper here) and makes one.
        let mut i = 0u64;
        while segments(dir.path()).len() < 3 {
            i += 1;
            assert_eq!(j.append(&payload(i)).unwrap(), i);
            j.sync_all().unwrap();
            appended.push(i);
        }
        let newest = segments(dir.path()).pop().unwrap();
        assert_eq!(std::fs::metadata(&newest).unwrap().len(), 4096, "a full-length segment, not one growing as written");
        assert_eq!(spares(dir.path()).len(), 1, "one kept for a cancel");
        j.refuse_space(true);
        let mut refused = 0;
        loop {
            i += 1;
            match j.append(&payload(i)) {
                Ok(lsn) => {
                    assert_eq!(lsn, i);
                    appended.push(i);
                }
                Err(e) => {
                    assert!(matches!(e, Error::NoSpace(_)), "{e:?}");
                    i -= 1;
                    refused += 1;
                    if refused == 3 {
                        break;
                    }
                }
            }
        }
        assert_eq!(j.last_lsn(), i, "nothing was numbered for the refused appends");
        assert!(j.failed().is_none());
        j.sync_all().unwrap();
        // A cancel still goes in, onto the spare kept for it if it rolls
        // (naming no batch here: check 0).
        j.cancel(i, 0, |_| ()).unwrap();
        j.refuse_space(false);
        assert_eq!(j.append(&payload(i + 2)).unwrap(), i + 2);
        appended.push(i + 2);
        j.sync_all().unwrap();
    }
    let (_, got) = reopen(dir.path(), opts, 0);
    assert_eq!(got, appended.iter().map(|&i| (i, payload(i))).collect::<Vec<_>>());
}

/// A cancel names its batch by number and check: one that names a number
/// with another check (a batch that reused the number after a torn tail)
/// cancels nothing.
#[test]
fn a_cancel_with_another_check_cancels_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions::default();
    {
        let (j, _) = reopen(dir.path(), opts, 0);
        let (_, check) = j.append_checked(&payload(1)).unwrap();
        j.append(&payload(2)).unwrap();
        j.sync_all().unwrap();
        j.cancel(2, check, |_| ()).unwrap();
        j.cancel(1, check ^ 1, |_| ()).unwrap();
    }
    let (_, got) = reopen(dir.path(), opts, 0);
    assert_eq!(got, expect(1..=2));
}

/// Without prefilled segments, the bytes a record takes are allocated
/// before it is numbered, a megabyte at a time: where they cannot be (a
/// full disk), the append is refused and nothing is numbered; the journal
/// goes on once they can.
#[test]
fn without_prefilling_a_record_is_numbered_only_once_its_bytes_are_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions { segment_bytes: 4 << 20, prefill: false };
    let big = |i: u64| vec![i as u8; 100_000];
    let mut appended = Vec::new();
    {
        let (j, _) = reopen(dir.path(), opts, 0);
        // Half a megabyte in: the file is allocated a megabyte ahead, no
        // further, and not the segment's length.
        for i in 1..=5 {
            assert_eq!(j.append(&big(i)).unwrap(), i);
            appended.push(i);
        }
        j.sync_all().unwrap();
        let seg = segments(dir.path()).pop().unwrap();
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), 1 << 20);
        j.refuse_space(true);
        let mut i = 5;
        let mut refused = 0;
        while refused < 2 {
            match j.append(&big(i + 1)) {
                Ok(lsn) => {
                    i += 1;
                    assert_eq!(lsn, i);
                    appended.push(i);
                }
                Err(e) => {
                    assert!(matches!(e, Error::NoSpace(_)), "{e:?}");
                    refused += 1;
                }
            }
        }
        assert!(i < 11, "refused once the first megabyte was taken, after {i}");
        assert_eq!(j.last_lsn(), i, "nothing numbered for the refused appends");
        assert!(j.failed().is_none());
        j.sync_all().unwrap();
        j.refuse_space(false);
        // On to the next segment and beyond.
        for _ in 0..50 {
            i += 1;
            assert_eq!(j.append(&big(i)).unwrap(), i);
            appended.push(i);
        }
        j.sync_all().unwrap();
        assert!(segments(dir.path()).len() >= 2);
    }
    let mut got = Vec::new();
    Journal::open(dir.path(), opts, 0, |lsn, p| {
        got.push((lsn, p.len(), p[0]));
        Ok(())
    })
    .unwrap();
    assert_eq!(got, appended.iter().map(|&i| (i, 100_000, i as u8)).collect::<Vec<_>>());
}

/// Any record but a cancel leaves room allocated after it for cancels: a
/// batch refused on a full disk can be cancelled even after a batch
/// larger than the megabyte allocated ahead.
#[test]
fn a_cancel_always_has_room_after_the_batches_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions { segment_bytes: 8 << 20, prefill: false };
    let (j, _) = reopen(dir.path(), opts, 0);
    let (lsn, check) = j.append_checked(&vec![7u8; 3 << 20]).unwrap();
    j.sync_all().unwrap();
    j.refuse_space(true);
    assert!(matches!(j.append(&vec![8u8; 1 << 20]), Err(Error::NoSpace(_))));
    for _ in 0..10 {
        j.cancel(lsn, check, |_| ()).unwrap();
    }
    assert!(j.failed().is_none());
}

/// A session without prefilling, in segments of `segment_bytes`, that
/// wrote `n` records of 100,000 bytes, synced and closed.
fn written_unprefilled(segment_bytes: u64, n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = reopen(dir.path(), JournalOptions { segment_bytes, prefill: false }, 0);
    for i in 1..=n {
        j.append(&vec![i as u8; 100_000]).unwrap();
    }
    j.sync_all().unwrap();
    dir
}

/// Spares made without prefilling (a megabyte long) are not taken for
/// prefilled ones when the journal opens prefilled.
#[test]
fn short_spares_are_not_kept_when_prefilling() {
    let dir = written_unprefilled(2 << 20, 40);
    assert!(!spares(dir.path()).is_empty(), "rolls made spares");
    assert!(spares(dir.path()).iter().all(|(_, len)| *len < 2 << 20));
    let opts = JournalOptions { segment_bytes: 2 << 20, prefill: true };
    let (_j, got) = reopen(dir.path(), opts, 0);
    assert_eq!(got.len(), 40);
    assert!(spares(dir.path()).iter().all(|(_, len)| *len == 2 << 20), "{:?}", spares(dir.path()));
    let newest = segments(dir.path()).pop().unwrap();
    assert_eq!(std::fs::metadata(&newest).unwrap().len(), 2 << 20, "the segment opened is prefilled, not a short spare");
}

/// Prefilled segments stay their length: the room kept for cancels never
/// extends one near its end (a cancel there rolls onto the kept spare).
#[test]
fn prefilled_segments_are_not_extended_near_their_end() {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions { segment_bytes: 8192, prefill: true };
    let (j, _) = reopen(dir.path(), opts, 0);
    for i in 1..=300 {
        j.append(&payload(i)).unwrap();
        j.sync_to(i).unwrap();
        // What the engine's keeper does after a roll took a spare.
        while j.wants_spare() {
            j.make_spare().unwrap();
        }
    }
    let lengths: Vec<u64> = segments(dir.path()).iter().map(|p| std::fs::metadata(p).unwrap().len()).collect();
    assert!(lengths.len() > 3 && lengths.iter().all(|&l| l == 8192), "{lengths:?}");
}

/// A segment a session without prefilling left short is deleted when a
/// prefilled session releases it, not kept as a spare.
#[test]
fn short_segments_released_when_prefilling_are_not_kept_as_spares() {
    let dir = written_unprefilled(4 << 20, 3);
    let opts = JournalOptions { segment_bytes: 4 << 20, prefill: true };
    let (j, got) = reopen(dir.path(), opts, 0);
    assert_eq!(got.len(), 3);
    let short = segments(dir.path())[0].clone();
    assert!(std::fs::metadata(&short).unwrap().len() < 4 << 20);
    // Make room among the spares for the released segment.
    let spare = dir.path().join(&spares(dir.path())[0].0);
    std::fs::remove_file(&spare).unwrap();
    j.spares().0.retain(|p| p != &spare);
    j.release_through(3).unwrap();
    assert!(!short.exists());
    assert!(spares(dir.path()).iter().all(|(_, len)| *len == 4 << 20), "{:?}", spares(dir.path()));
}
