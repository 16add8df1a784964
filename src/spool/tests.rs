use super::*;
use proptest::prelude::*;

fn record(i: usize) -> Record {
    Record {
        topic: "ingest-events".into(),
        key: format!("{i:032x}"),
        payload: Bytes::from(format!("{{\"n\":{i}}}")),
        headers: RecordHeaders {
            project_id: "42".into(),
            event_id: format!("{i:032x}"),
            item_type: "event".into(),
            received_at: "2026-11-21T08:00:00.000Z".into(),
            fingerprint: i.is_multiple_of(2).then(|| format!("fp{i}")),
            sample_rate: i.is_multiple_of(3).then(|| "0.5".to_owned()),
        },
    }
}

/// A spool in `dir` (1 MiB) that holds `records`, for the replay.
async fn holding(dir: &std::path::Path, records: &[Record]) -> Spool {
    let spool = Spool::open(dir, 1 << 20, Duration::ZERO, true).expect("open");
    spool.append(records, false).await.expect("append");
    spool
}

/// Appends [`plain`] records one request at a time; their sequence numbers.
async fn append_each(spool: &Spool, records: std::ops::Range<usize>) -> Vec<u64> {
    let mut seqs = Vec::new();
    for i in records {
        seqs.push(
            spool
                .append(&[plain(i)], false)
                .await
                .expect("append")
                .start,
        );
    }
    seqs
}

/// The sequence numbers of everything the replay would read now.
fn replayable(spool: &Spool) -> Vec<u64> {
    let items = spool.oldest(usize::MAX, u64::MAX).expect("read");
    items.iter().map(|s| s.seq).collect()
}

fn keys(items: &[Spooled]) -> Vec<String> {
    items
        .iter()
        .map(|s| s.record.as_ref().expect("intact").key.clone())
        .collect()
}

#[test]
fn encoding_round_trips_every_header() {
    for i in 0..6 {
        let r = record(i);
        let (back, at) = decode(&encode(&r, 77)).expect("decodes");
        assert_eq!(at, 77);
        assert_eq!(&*back.topic, &*r.topic);
        assert_eq!(back.key, r.key);
        assert_eq!(back.payload, r.payload);
        assert_eq!(
            back.headers.pairs().collect::<Vec<_>>(),
            r.headers.pairs().collect::<Vec<_>>()
        );
    }
}

#[test]
fn every_flipped_bit_is_caught() {
    let value = encode(&record(3), 1);
    for byte in 0..value.len() {
        let mut damaged = value.clone();
        damaged[byte] ^= 0x10;
        assert!(
            decode(&damaged).is_err(),
            "flip in byte {byte} went unnoticed"
        );
    }
    for len in 0..value.len() {
        assert!(
            decode(&value[..len]).is_err(),
            "truncation to {len} went unnoticed"
        );
    }
}

#[tokio::test]
async fn items_come_back_in_order_and_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path(), 1 << 20, Duration::ZERO, true).expect("open");
    for i in 0..5 {
        spool
            .append(&[record(i * 2), record(i * 2 + 1)], false)
            .await
            .expect("append");
    }
    assert_eq!(spool.usage().items, 10);
    let first = spool.oldest(4, u64::MAX).expect("read");
    assert_eq!(
        keys(&first),
        (0..4).map(|i| record(i).key).collect::<Vec<_>>()
    );
    assert!(first.iter().all(|s| s.spooled_at_ms > 0));
    spool.remove(&first.iter().map(|s| s.seq).collect::<Vec<_>>());
    // A removal reaches the disk with the next append.
    spool.append(&[record(10)], false).await.expect("append");
    let before = spool.usage();
    drop(spool);

    // The writer thread lets go of the directory once the spool is dropped.
    let spool = reopen(dir.path(), 1 << 20);
    assert_eq!(spool.usage(), before);
    let rest = spool.oldest(100, u64::MAX).expect("read");
    assert_eq!(
        keys(&rest),
        (4..11).map(|i| record(i).key).collect::<Vec<_>>()
    );
    // Numbering resumes after the last item: new items sort after the old ones.
    spool.append(&[record(11)], false).await.expect("append");
    let all = spool.oldest(100, u64::MAX).expect("read");
    assert_eq!(
        all.last().map(|s| keys(std::slice::from_ref(s))),
        Some(vec![record(11).key])
    );
}

/// Bytes a record takes in a segment file.
fn on_disk(i: usize) -> u64 {
    (HEADER + encode(&record(i), 0).len()) as u64
}

/// A record of the same size whatever `i` is.
fn plain(i: usize) -> Record {
    let mut r = record(i);
    r.payload = Bytes::from(format!("{{\"n\":{i:08}}}"));
    r.headers.fingerprint = None;
    r.headers.sample_rate = None;
    r
}

/// A spool size whose segments are the smallest (64 KiB), and how many
/// [`plain`] records a segment then takes.
const SMALL_SEGMENTS: u64 = 512 << 10;
fn per_segment() -> usize {
    let size = (HEADER + encode(&plain(0), 0).len()) as u64;
    (64u64 << 10).div_ceil(size) as usize
}

#[tokio::test]
async fn a_full_spool_refuses_whole_requests_and_keeps_what_it_has() {
    let dir = tempfile::tempdir().expect("tempdir");
    let three = on_disk(0) + on_disk(2) + on_disk(8);
    let spool = Spool::open(dir.path(), three, Duration::ZERO, true).expect("open");
    spool
        .append(&[record(0), record(2)], false)
        .await
        .expect("two fit");
    assert!(!spool.is_full());
    // Two more would pass the limit: neither is taken.
    assert!(matches!(
        spool.append(&[record(4), record(6)], false).await,
        Err(SpoolError::Full)
    ));
    assert_eq!(spool.usage().items, 2);
    // Full (not ready), though its bytes are short of the limit: what it
    // refused does not fit.
    assert!(spool.usage().bytes < three);
    assert!(spool.is_full());
    spool.append(&[record(8)], false).await.expect("one fits");
    assert_eq!(spool.usage().bytes, three);
    assert!(matches!(
        spool.append(&[record(10)], false).await,
        Err(SpoolError::Full)
    ));
    // Removing makes room again once the segment holding them goes.
    let oldest = spool.oldest(10, u64::MAX).expect("read");
    spool.remove(&oldest.iter().map(|s| s.seq).collect::<Vec<_>>());
    spool.sync().await.expect("sync");
    // The segment is written over from its start again.
    assert_eq!(spool.usage(), Usage::default());
    assert!(!spool.is_full());
    spool
        .append(&[record(10)], false)
        .await
        .expect("room again");
    assert_eq!(spool.usage().items, 1);
}

fn segments(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == SEGMENT_EXT))
        .collect();
    found.sort();
    found
}

/// Opens the spool again once the dropped one's writer has let go of it.
fn reopen(dir: &std::path::Path, max_size: u64) -> Spool {
    reopen_with(dir, max_size, true)
}

/// [`reopen`], with the segments' I/O around the page cache or through it.
fn reopen_with(dir: &std::path::Path, max_size: u64, direct: bool) -> Spool {
    loop {
        match Spool::open(dir, max_size, Duration::ZERO, direct) {
            Ok(s) => break s,
            Err(e) if e.message.contains("another process") => std::thread::yield_now(),
            Err(e) => panic!("reopen: {e}"),
        }
    }
}

#[tokio::test]
async fn drained_segments_are_deleted_oldest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path(), SMALL_SEGMENTS, Duration::ZERO, true).expect("open");
    let n = per_segment();
    let mut seqs = append_each(&spool, 0..n * 3).await;
    assert_eq!(segments(dir.path()).len(), 3);
    let full = spool.usage();
    // Removing from the second segment frees nothing: the first still holds
    // items. (The removal record starts a fourth segment.)
    spool.remove(&seqs[n..2 * n]);
    spool.sync().await.expect("sync");
    assert_eq!(segments(dir.path()).len(), 4);
    assert_eq!(spool.usage().items, full.items - n as u64);
    assert!(spool.usage().bytes > full.bytes);
    // Once the first drains too, both go.
    spool.remove(&seqs[..n]);
    spool.sync().await.expect("sync");
    assert_eq!(segments(dir.path()).len(), 2);
    assert!(spool.usage().bytes < full.bytes / 2);
    // They are kept for reuse, and the next segments are written over them.
    assert_eq!(spares(dir.path()), 2);
    seqs.extend(append_each(&spool, 0..n * 2).await);
    assert_eq!(spares(dir.path()), 0);
    drop(spool);
    // Reading them stops at each one's end: nothing stale comes back, nothing reads as damaged.
    let spool = reopen(dir.path(), SMALL_SEGMENTS);
    assert_eq!(spool.damaged_at_open(), 0);
    assert_eq!(replayable(&spool), seqs[2 * n..].to_vec());
}

#[tokio::test]
async fn a_reused_segments_stale_tail_is_not_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path(), SMALL_SEGMENTS, Duration::ZERO, true).expect("open");
    let n = per_segment();
    // One group of two segments' worth: written as one, into one file.
    let big = spool
        .append(&(0..2 * n).map(plain).collect::<Vec<_>>(), false)
        .await
        .expect("append");
    let mut held = vec![
        spool
            .append(&[plain(0)], false)
            .await
            .expect("append")
            .start,
    ];
    spool.remove(&big.collect::<Vec<_>>());
    spool.sync().await.expect("sync");
    assert_eq!(spares(dir.path()), 1);
    // Its reuse ends half way through the old bytes, at an end record.
    while spares(dir.path()) == 1 || held.len() < 2 * n {
        held.push(
            spool
                .append(&[plain(1)], false)
                .await
                .expect("append")
                .start,
        );
    }
    drop(spool);
    let spool = reopen(dir.path(), SMALL_SEGMENTS);
    assert_eq!(spool.damaged_at_open(), 0);
    let back = replayable(&spool);
    assert_eq!(back, held);
}

#[tokio::test]
async fn numbers_never_repeat_even_after_a_restart_finds_no_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path(), SMALL_SEGMENTS, Duration::ZERO, true).expect("open");
    let n = per_segment();
    let old = append_each(&spool, 0..n * 2 + 1).await;
    spool.remove(&old);
    spool.sync().await.expect("sync");
    // Two spares, full of whole records of their first use.
    assert_eq!(spares(dir.path()), 2);
    drop(spool);
    // A restart that finds nothing held (and deletes every segment), then another.
    drop(reopen(dir.path(), SMALL_SEGMENTS));
    assert_eq!(segments(dir.path()).len(), 0);
    let spool = reopen(dir.path(), SMALL_SEGMENTS);
    // Written over a spare's first records, record for record.
    let new = spool
        .append(&[plain(1000), plain(1001)], false)
        .await
        .expect("append");
    assert!(
        new.start > *old.last().expect("old"),
        "{new:?} after {old:?}"
    );
    drop(spool);
    let spool = reopen(dir.path(), SMALL_SEGMENTS);
    assert_eq!(spool.damaged_at_open(), 0);
    assert_eq!(
        keys(&spool.oldest(usize::MAX, u64::MAX).expect("read")),
        vec![plain(1000).key, plain(1001).key]
    );
}

/// A spool directory whose only item, `record(0)`, is in segment 5, so
/// that older segments can be put beside it.
async fn record_0_in_segment_5() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path(), 1 << 20, Duration::ZERO, true).expect("open");
    spool.append(&[record(0)], false).await.expect("append");
    drop(spool);
    std::fs::rename(segment_path(dir.path(), 0), segment_path(dir.path(), 5)).expect("rename");
    dir
}

#[tokio::test]
async fn a_retired_segment_a_crash_brings_back_is_not_damage() {
    let dir = record_0_in_segment_5().await;
    // An older segment, wiped as retiring leaves a file, its rename undone.
    std::fs::write(segment_path(dir.path(), 2), [0u8; 4096]).expect("write");
    let spool = reopen(dir.path(), 1 << 20);
    assert_eq!(spool.damaged_at_open(), 0);
    assert_eq!(
        keys(&spool.oldest(10, u64::MAX).expect("read")),
        vec![record(0).key]
    );
}

/// When `spool.seq` is lost, new items are numbered far above every old
/// number: a stale record in a reused file (numbered up to what the lost file
/// had reserved) must never read as newer than what is written over it.
#[tokio::test]
async fn a_lost_sequence_file_numbers_new_items_far_above_the_old() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path(), SMALL_SEGMENTS, Duration::ZERO, true).expect("open");
    let n = per_segment();
    let old = append_each(&spool, 0..n * 3).await;
    spool.remove(&old[..n * 2]);
    spool.sync().await.expect("sync");
    assert_eq!(spares(dir.path()), 2, "stale records wait in spare files");
    drop(spool);
    std::fs::remove_file(dir.path().join(SEQ_FILE)).expect("remove spool.seq");
    let spool = reopen(dir.path(), SMALL_SEGMENTS);
    let new = append_each(&spool, 0..n).await;
    assert!(new[0] >= old[old.len() - 1] + SEQ_JUMP, "{}", new[0]);
    drop(spool);
    let spool = reopen(dir.path(), SMALL_SEGMENTS);
    assert_eq!(spool.damaged_at_open(), 0);
    let want: Vec<u64> = old[n * 2..].iter().chain(&new).copied().collect();
    assert_eq!(
        replayable(&spool),
        want,
        "the old items, then the new, nothing stale"
    );
}

/// A drained active segment is written over from its start only once the
/// older segments drained with it are gone: until then its removal records
/// are all that keeps their items from being replayed after a crash.
#[tokio::test]
async fn a_drained_active_segment_is_not_written_over_while_older_ones_remain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path(), SMALL_SEGMENTS, Duration::ZERO, true).expect("open");
    let n = per_segment();
    let old = append_each(&spool, 0..n + 1).await;
    assert_eq!(segments(dir.path()).len(), 2);
    // The retiring thread is slow: the first segment's deletion is pending.
    let shared = spool.inner.shared.clone();
    let gate = shared.retire_gate.lock().await;
    spool.remove(&old);
    // The tick writes the removals (into the active segment) and drains both.
    spool.tick().await;
    assert_eq!(spool.usage().items, 0);
    let new = spool.append(&[plain(n + 1)], false).await.expect("append");
    // Killed before the first segment was deleted.
    spool.crash();
    drop(gate);
    let spool = reopen(dir.path(), SMALL_SEGMENTS);
    assert_eq!(spool.damaged_at_open(), 0);
    let back = replayable(&spool);
    assert_eq!(back, new.collect::<Vec<_>>(), "delivered items came back");
}

fn spares(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .expect("list")
        .filter(|e| {
            e.as_ref()
                .expect("entry")
                .path()
                .extension()
                .is_some_and(|e| e == SPARE_EXT)
        })
        .count()
}

#[tokio::test]
async fn a_drained_spool_is_written_over_and_nothing_stale_comes_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path(), 1 << 20, Duration::ZERO, true).expect("open");
    let old = spool
        .append(&(0..5).map(plain).collect::<Vec<_>>(), false)
        .await
        .expect("append");
    spool.remove(&old.collect::<Vec<_>>());
    spool.sync().await.expect("sync");
    assert_eq!(spool.usage(), Usage::default());
    // Written over the first of the old ones, record for record: the stale
    // records after it line up, and only their numbers tell them apart.
    spool.append(&[plain(7)], false).await.expect("append");
    drop(spool);
    let spool = reopen(dir.path(), 1 << 20);
    assert_eq!(spool.damaged_at_open(), 0);
    assert_eq!(
        keys(&spool.oldest(10, u64::MAX).expect("read")),
        vec![plain(7).key]
    );
    // Numbering went on past the old items.
    let next = spool.append(&[record(8)], false).await.expect("append");
    assert!(next.start > 5, "{next:?}");
}

#[tokio::test]
async fn owned_items_wait_for_their_release() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path(), 1 << 20, Duration::ZERO, true).expect("open");
    let owned = spool
        .append(&[record(0), record(1), record(2)], true)
        .await
        .expect("append");
    spool.append(&[record(3)], false).await.expect("append");
    assert_eq!(spool.replayable(), 1);
    assert_eq!(
        keys(&spool.oldest(10, u64::MAX).expect("read")),
        vec![record(3).key]
    );
    // One delivered, one failed: the failed one goes to the replay.
    let owned: Vec<u64> = owned.collect();
    spool.remove(&[owned[0]]);
    spool.release(&[owned[1]]);
    assert_eq!(spool.replayable(), 2);
    assert_eq!(
        keys(&spool.oldest(10, u64::MAX).expect("read")),
        vec![record(1).key, record(3).key]
    );
    // After a restart nothing is owned: what was not removed is replayed.
    spool.append(&[record(4)], false).await.expect("append");
    drop(spool);
    let spool = reopen(dir.path(), 1 << 20);
    assert_eq!(spool.replayable(), 4);
    assert_eq!(
        keys(&spool.oldest(10, u64::MAX).expect("read")),
        vec![record(1).key, record(2).key, record(3).key, record(4).key]
    );
}

#[tokio::test]
async fn long_runs_of_items_read_back_in_pieces_intact() {
    for direct in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = reopen_with(dir.path(), 64 << 20, direct);
        // About 3 MiB in one segment, in groups of odd sizes, with removal
        // records between some of them.
        let records: Vec<Record> = (0..300)
            .map(|i| {
                let mut r = plain(i);
                r.payload = Bytes::from(vec![b'a' + (i % 26) as u8; 10_000 + i * 7]);
                r
            })
            .collect();
        let mut seqs = Vec::new();
        for group in records.chunks(37) {
            seqs.extend(spool.append(group, false).await.expect("append"));
            spool.remove(&seqs[seqs.len() - 1..]);
        }
        spool.sync().await.expect("sync");
        let removed: HashSet<u64> = records
            .chunks(37)
            .scan(0, |end, g| {
                *end += g.len();
                Some(seqs[*end - 1])
            })
            .collect();
        let want: Vec<(u64, &Record)> = seqs
            .iter()
            .zip(&records)
            .filter(|(seq, _)| !removed.contains(seq))
            .map(|(seq, r)| (*seq, r))
            .collect();
        let check = |spool: &Spool| {
            let back = spool.oldest(usize::MAX, u64::MAX).expect("read");
            assert_eq!(back.len(), want.len(), "direct {direct}");
            for (got, (seq, record)) in back.iter().zip(&want) {
                assert_eq!(got.seq, *seq);
                let got = got.record.as_ref().expect("intact");
                assert_eq!((&got.key, &got.payload), (&record.key, &record.payload));
            }
        };
        check(&spool);
        drop(spool);
        check(&reopen_with(dir.path(), 64 << 20, direct));
    }
}

#[tokio::test]
async fn a_torn_write_is_cut_off_and_the_log_goes_on() {
    for direct in [true, false] {
        torn_write(direct).await;
    }
}

/// A 1 MiB spool in `dir` holding records 0 and 1, from one append.
async fn holding_two(dir: &Path, direct: bool) -> Spool {
    let spool = reopen_with(dir, 1 << 20, direct);
    spool
        .append(&[record(0), record(1)], false)
        .await
        .expect("append");
    spool
}

async fn torn_write(direct: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(holding_two(dir.path(), direct).await);
    let segment = segments(dir.path()).pop().expect("a segment");
    // The write filled its last block with zeros, which read as the log's
    // end: a reopen cuts them off, and nothing is amiss.
    let written = std::fs::metadata(&segment).expect("stat").len();
    drop(reopen_with(dir.path(), 1 << 20, direct));
    let intact = std::fs::metadata(&segment).expect("stat").len();
    assert!(intact < written && written.is_multiple_of(BLOCK as u64));
    assert_eq!(intact, on_disk(0) + on_disk(1));
    // A crash in the middle of the next write: half a record, then every cut of one.
    let mut torn = Vec::new();
    put_record(&mut torn, KIND_ITEM, 2, &encode(&record(2), 0));
    for cut in [1, HEADER - 1, HEADER, HEADER + 10, torn.len() - 1] {
        let mut bytes = std::fs::read(&segment).expect("read");
        bytes.truncate(intact as usize);
        bytes.extend_from_slice(&torn[..cut]);
        std::fs::write(&segment, &bytes).expect("write");
        let spool = reopen_with(dir.path(), 1 << 20, direct);
        assert_eq!(spool.damaged_at_open(), 0);
        assert_eq!(
            std::fs::metadata(&segment).expect("stat").len(),
            intact,
            "cut {cut}, direct {direct}"
        );
        assert_eq!(
            keys(&spool.oldest(10, u64::MAX).expect("read")),
            vec![record(0).key, record(1).key],
            "cut {cut}, direct {direct}"
        );
    }
    // Writing goes on in a new segment, and everything reads back after another restart.
    let spool = reopen_with(dir.path(), 1 << 20, direct);
    spool.append(&[record(5)], false).await.expect("append");
    drop(spool);
    let spool = reopen_with(dir.path(), 1 << 20, direct);
    assert_eq!(spool.damaged_at_open(), 0);
    assert_eq!(
        keys(&spool.oldest(10, u64::MAX).expect("read")),
        vec![record(0).key, record(1).key, record(5).key]
    );
}

#[tokio::test]
async fn a_damaged_header_loses_the_rest_of_its_segment_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path(), SMALL_SEGMENTS, Duration::ZERO, true).expect("open");
    let n = per_segment();
    append_each(&spool, 0..n + 2).await;
    drop(spool);
    let found = segments(dir.path());
    assert_eq!(found.len(), 2);
    let mut bytes = std::fs::read(&found[0]).expect("read");
    // The third record's header.
    let size = HEADER + encode(&plain(0), 0).len();
    bytes[2 * size + 9] ^= 0x40;
    std::fs::write(&found[0], &bytes).expect("write");
    let spool = reopen(dir.path(), SMALL_SEGMENTS);
    assert_eq!(spool.damaged_at_open(), 1);
    let keys = keys(&spool.oldest(usize::MAX, u64::MAX).expect("read"));
    let want: Vec<String> = [0, 1]
        .into_iter()
        .chain(n..n + 2)
        .map(|i| plain(i).key)
        .collect();
    assert_eq!(keys, want);
}

#[test]
fn an_earlier_versions_store_is_not_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("spool.redb"), b"old").expect("write");
    let e = Spool::open(dir.path(), 1 << 20, Duration::ZERO, true)
        .err()
        .expect("refused");
    assert!(e.message.contains("earlier edge-relay version"), "{e}");
}

#[tokio::test]
async fn a_damaged_record_is_reported_and_the_rest_still_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = holding(dir.path(), &[record(0), record(1)]).await;
    let mut damaged = encode(&record(2), 5);
    damaged[20] ^= 0xff;
    spool.append_raw(vec![damaged, Vec::new()]).await;
    spool
        .append(&[record(4)], false)
        .await
        .expect("append after the damage");
    let items = spool.oldest(100, u64::MAX).expect("read");
    let verdicts: Vec<_> = items
        .iter()
        .map(|s| s.record.as_ref().err().copied())
        .collect();
    assert_eq!(
        verdicts,
        vec![
            None,
            None,
            Some("checksum mismatch"),
            Some("truncated record"),
            None
        ]
    );
}

/// An item the disk will not give back is handed to the replay as damaged
/// (which counts and removes it), not an error that stops the replay for
/// good; the items around it still read.
#[tokio::test]
async fn an_item_that_cannot_be_read_is_reported_and_the_rest_still_read() {
    for direct in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = holding_two(dir.path(), direct).await;
        let last = spool.append(&[record(2)], false).await.expect("append");
        // The third item's bytes are gone from under the open file.
        let segment = segments(dir.path()).pop().expect("a segment");
        let file = OpenOptions::new().write(true).open(&segment).expect("open");
        file.set_len(on_disk(0) + on_disk(1) + HEADER as u64 + 10)
            .expect("truncate");
        let items = spool.oldest(10, u64::MAX).expect("read");
        let verdicts: Vec<_> = items
            .iter()
            .map(|s| (s.seq, s.record.as_ref().err().copied()))
            .collect();
        assert_eq!(
            verdicts,
            vec![(0, None), (1, None), (last.start, Some(UNREADABLE))],
            "direct {direct}"
        );
        // Removed as the replay removes a damaged item: nothing is left to stall on.
        spool.remove(&[last.start]);
        assert_eq!(spool.oldest(10, u64::MAX).expect("read").len(), 2);
    }
}

/// At open, a segment that cannot be read is counted and logged as damaged,
/// and the relay starts with the others, rather than not at all.
#[tokio::test]
async fn a_segment_that_cannot_be_opened_does_not_stop_the_start() {
    let dir = record_0_in_segment_5().await;
    // Opening it fails (it is a directory).
    std::fs::create_dir(segment_path(dir.path(), 2)).expect("mkdir");
    let spool = reopen(dir.path(), 1 << 20);
    assert_eq!(spool.damaged_at_open(), 1);
    assert_eq!(
        keys(&spool.oldest(10, u64::MAX).expect("read")),
        vec![record(0).key]
    );
    // Left in place, and numbered past: writing goes on in a new segment.
    spool.append(&[record(1)], false).await.expect("append");
    drop(spool);
    assert!(segment_path(dir.path(), 2).is_dir());
    let spool = reopen(dir.path(), 1 << 20);
    assert_eq!(
        keys(&spool.oldest(10, u64::MAX).expect("read")),
        vec![record(0).key, record(1).key]
    );
}

/// A read error part way through a segment at open keeps the items before
/// it, and leaves the file as it is: it is not a torn write to cut off.
#[tokio::test]
async fn a_read_error_at_open_keeps_what_was_read_and_cuts_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path(), 1 << 20, Duration::ZERO, false).expect("open");
    spool
        .append(&[record(0), record(1), record(2)], false)
        .await
        .expect("append");
    drop(spool);
    let path = segments(dir.path()).pop().expect("a segment");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open");
    let len = file.metadata().expect("stat").len();
    // The disk gives back only the first two items: reading the third's
    // header fails (here, an unexpected end of file).
    let readable = on_disk(0) + on_disk(1);
    file.set_len(readable).expect("truncate");
    let mut found = Vec::new();
    let read = read_segment(
        &path,
        &file,
        len,
        true,
        &mut 0,
        |seq, _, _| found.push(seq),
        &mut HashSet::new(),
    );
    assert!(matches!(read, Err((at, _)) if at == readable), "{read:?}");
    assert_eq!(found, vec![0, 1]);
    assert_eq!(file.metadata().expect("stat").len(), readable);
}

#[tokio::test]
async fn reads_stop_at_the_byte_budget_but_always_return_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = holding(dir.path(), &[record(0), record(1), record(2)]).await;
    assert_eq!(spool.oldest(10, 1).expect("read").len(), 1);
    let one = encode(&record(0), 0).len() as u64;
    assert_eq!(spool.oldest(10, one * 2).expect("read").len(), 2);
}

/// An idle writer wakes about once a second (to write removals), not in a
/// loop: it once counted its pause from the last write, which an idle spool
/// never makes, and spun a core.
#[test]
fn the_directory_is_made_with_its_parents() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a/b/spool");
    super::create_dir_durably(&dir).unwrap();
    assert!(dir.is_dir());
    super::create_dir_durably(&dir).unwrap();
    let file = root.path().join("a/file");
    std::fs::write(&file, b"x").unwrap();
    assert!(super::create_dir_durably(&file.join("spool")).is_err());
}

#[test]
fn an_idle_writer_does_not_spin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path(), 1 << 20, Duration::ZERO, true).expect("open");
    std::thread::sleep(Duration::from_millis(2500));
    let commits = spool.commits();
    assert!(commits <= 5, "{commits} commits in 2.5 s of idleness");
}

/// The pressure the relay reports picks the writer's delay: with CPU to
/// spare it is the light one. Here the pressed delay is an hour, so a writer
/// that waited it between the groups of concurrent appends below would
/// never answer them (the minute's guard turns that into a failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_s_pressure_picks_the_writer_s_commit_delay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let delays = CommitDelays {
        pressed: Duration::from_secs(3600),
        light: Duration::ZERO,
    };
    let spool = Spool::open(dir.path(), 1 << 20, delays, true).expect("open");
    assert_eq!(
        spool.commit_delay(),
        delays.pressed,
        "untold, it is pressed"
    );
    spool.set_pressure(false);
    assert_eq!(spool.commit_delay(), delays.light);
    let rounds = async {
        for round in 0..5 {
            let appends: Vec<_> = (0..8)
                .map(|i| {
                    let spool = spool.clone();
                    tokio::spawn(async move { spool.append(&[plain(round * 8 + i)], false).await })
                })
                .collect();
            for append in appends {
                append.await.expect("no panic").expect("appended");
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), rounds)
        .await
        .expect("the writer waited the pressed delay while told there was CPU to spare");
    assert_eq!(spool.usage().items, 40);
    spool.set_pressure(true);
    assert_eq!(spool.commit_delay(), delays.pressed);
}

/// With CPU to spare, announced appends (`Spool::announce`, a request on
/// its way) end the writer's wait once none is left on its way: waiting
/// longer would gather nothing. The delay here is an hour, so a writer that
/// waited it out would never answer (the minute's guard turns that into a
/// failure). Once the writer has seen appends arrive together, a round's
/// appends, all announced before the first is sent, share one flush: it
/// waits for them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_appends_end_the_commit_delay_once_none_is_on_its_way() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path(), 1 << 20, Duration::from_secs(3600), true).expect("open");
    spool.set_pressure(false);
    let mut last_round = 0;
    let rounds = async {
        for round in 0..5 {
            let before = spool.commits();
            let announced: Vec<_> = (0..8).map(|_| spool.announce()).collect();
            let appends: Vec<_> = announced
                .into_iter()
                .enumerate()
                .map(|(i, announced)| {
                    let spool = spool.clone();
                    tokio::spawn(async move {
                        spool
                            .append_announced(&[plain(round * 8 + i)], false, Some(announced))
                            .await
                    })
                })
                .collect();
            for append in appends {
                append.await.expect("no panic").expect("appended");
            }
            last_round = spool.commits() - before;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), rounds)
        .await
        .expect("the writer waited out its delay with nothing more on its way");
    assert_eq!(spool.usage().items, 40);
    assert_eq!(
        last_round, 1,
        "the last round's 8 appends took {last_round} flushes"
    );

    // An announcement dropped without an append (a request refused on the
    // way) counts out as well: the held one below delays nothing for ever.
    let refused = spool.announce();
    let late = spool.announce();
    drop(refused);
    tokio::time::timeout(
        Duration::from_secs(60),
        spool.append_announced(&[plain(40)], false, Some(late)),
    )
    .await
    .expect("a dropped announcement kept the writer waiting")
    .expect("appended");
}

#[test]
fn a_second_relay_cannot_share_a_spool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = Spool::open(dir.path(), 1 << 20, Duration::ZERO, true).expect("open");
    let second = Spool::open(dir.path(), 1 << 20, Duration::ZERO, true)
        .err()
        .expect("refused");
    assert!(second.message.contains("spool of its own"), "{second}");
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
    }
}

#[derive(Debug, Clone)]
enum Step {
    Append(usize),
    /// Removes the held item at this position (modulo how many are held).
    Remove(usize),
    Sync,
    /// Stops the writer as a crash would, leaves these bytes at the end of the
    /// newest segment (a torn write), and opens the spool again.
    Crash(Vec<u8>),
    /// Stops cleanly and opens again.
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1usize..4).prop_map(Step::Append),
        4 => any::<usize>().prop_map(Step::Remove),
        1 => Just(Step::Sync),
        1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Step::Crash),
        1 => Just(Step::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Against a model: every item answered Ok and not removed comes back
    /// after any stop, crash or torn write, in order, and intact; a removed
    /// item comes back only after a crash (its removal had not been written);
    /// nothing else ever appears, and nothing reads as damaged.
    #[test]
    fn the_log_keeps_what_it_acknowledged(
        direct in any::<bool>(),
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut spool = reopen_with(dir.path(), SMALL_SEGMENTS, direct);
            // Held items by sequence number, with their record's number.
            let mut held = std::collections::BTreeMap::new();
            // Removed, but a crash may bring them back.
            let mut may_return = std::collections::BTreeMap::new();
            let mut next = 0usize;
            for step in steps {
                match step {
                    Step::Append(n) => {
                        // Large enough that a few steps fill a 64 KiB segment.
                        let records: Vec<Record> = (next..next + n)
                            .map(|i| {
                                // Sizes repeat, so that records written over
                                // stale ones often line up with them.
                                let mut r = plain(i);
                                r.payload = Bytes::from(vec![b'x'; 6000 + i % 2]);
                                r
                            })
                            .collect();
                        let seqs = spool.append(&records, false).await.expect("append");
                        for (seq, i) in seqs.zip(next..) {
                            held.insert(seq, i);
                        }
                        next += n;
                    }
                    Step::Remove(at) if !held.is_empty() => {
                        let seq = *held.keys().nth(at % held.len()).expect("held");
                        spool.remove(&[seq]);
                        may_return.insert(seq, held.remove(&seq).expect("held"));
                    }
                    Step::Remove(_) => {}
                    Step::Sync => {
                        spool.sync().await.expect("sync");
                        may_return.clear();
                    }
                    Step::Crash(torn) => {
                        spool.crash();
                        spool = reopen_with(dir.path(), SMALL_SEGMENTS, direct);
                        drop(spool);
                        if let Some(newest) = segments(dir.path()).pop() {
                            let mut bytes = std::fs::read(&newest).expect("read");
                            bytes.extend_from_slice(&torn);
                            std::fs::write(&newest, bytes).expect("write");
                        }
                        spool = reopen_with(dir.path(), SMALL_SEGMENTS, direct);
                        let back: Vec<(u64, String)> = spool
                            .oldest(usize::MAX, u64::MAX)
                            .expect("read")
                            .into_iter()
                            .map(|s| (s.seq, s.record.expect("intact").key))
                            .collect();
                        for (seq, key) in &back {
                            let want = held.get(seq).or(may_return.get(seq)).map(|i| plain(*i).key);
                            prop_assert_eq!(Some(key), want.as_ref(), "item {} after a crash", seq);
                        }
                        // What came back is held again.
                        for (seq, _) in &back {
                            if let Some(i) = may_return.remove(seq) {
                                held.insert(*seq, i);
                            }
                        }
                        may_return.clear();
                    }
                    Step::Reopen => {
                        drop(spool);
                        spool = reopen_with(dir.path(), SMALL_SEGMENTS, direct);
                        may_return.clear();
                    }
                }
                prop_assert_eq!(spool.damaged_at_open(), 0);
                let seqs = replayable(&spool);
                prop_assert_eq!(seqs, held.keys().copied().collect::<Vec<_>>());
            }
            Ok(())
        })?;
    }
}
