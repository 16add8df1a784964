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
    let spool = Spool::open(dir.path(), 1 << 20, 1 << 20).expect("open");
    for i in 0..5 {
        spool
            .append(&[record(i * 2), record(i * 2 + 1)])
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
    spool
        .remove(first.iter().map(|s| s.seq).collect())
        .await
        .expect("remove");
    // A removal reaches the disk with the next append.
    spool.append(&[record(10)]).await.expect("append");
    let before = spool.usage();
    drop(spool);

    // The writer thread lets go of the file once the spool is dropped.
    let spool = loop {
        match Spool::open(dir.path(), 1 << 20, 1 << 20) {
            Ok(s) => break s,
            Err(e) if e.message.contains("another process") => std::thread::yield_now(),
            Err(e) => panic!("reopen: {e}"),
        }
    };
    assert_eq!(spool.usage(), before);
    let rest = spool.oldest(100, u64::MAX).expect("read");
    assert_eq!(
        keys(&rest),
        (4..11).map(|i| record(i).key).collect::<Vec<_>>()
    );
    // Numbering resumes after the last item: new items sort after the old ones.
    spool.append(&[record(11)]).await.expect("append");
    let all = spool.oldest(100, u64::MAX).expect("read");
    assert_eq!(
        all.last().map(|s| keys(std::slice::from_ref(s))),
        Some(vec![record(11).key])
    );
}

#[tokio::test]
async fn a_full_spool_refuses_whole_requests_and_keeps_what_it_has() {
    let dir = tempfile::tempdir().expect("tempdir");
    let one = encode(&record(0), 0).len() as u64;
    let spool = Spool::open(dir.path(), one * 3, 1 << 20).expect("open");
    spool
        .append(&[record(0), record(2)])
        .await
        .expect("two fit");
    // Two more would pass the limit: neither is taken.
    assert!(matches!(
        spool.append(&[record(4), record(6)]).await,
        Err(SpoolError::Full)
    ));
    assert_eq!(spool.usage().items, 2);
    spool.append(&[record(8)]).await.expect("one fits");
    assert!(matches!(
        spool.append(&[record(10)]).await,
        Err(SpoolError::Full)
    ));
    // Removing makes room again.
    let oldest = spool.oldest(1, u64::MAX).expect("read");
    spool.remove(vec![oldest[0].seq]).await.expect("remove");
    spool.append(&[record(10)]).await.expect("room again");
    assert_eq!(spool.usage().items, 3);
}

#[tokio::test]
async fn a_damaged_record_is_reported_and_the_rest_still_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path(), 1 << 20, 1 << 20).expect("open");
    spool.append(&[record(0), record(1)]).await.expect("append");
    let mut damaged = encode(&record(2), 5);
    damaged[20] ^= 0xff;
    // Beyond the writer's numbering, so that its next append does not overwrite them.
    spool.insert_raw(100, &damaged);
    spool.insert_raw(101, b"");
    spool
        .append(&[record(4)])
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
            None,
            Some("checksum mismatch"),
            Some("truncated record")
        ]
    );
}

#[tokio::test]
async fn reads_stop_at_the_byte_budget_but_always_return_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path(), 1 << 20, 1 << 20).expect("open");
    spool
        .append(&[record(0), record(1), record(2)])
        .await
        .expect("append");
    assert_eq!(spool.oldest(10, 1).expect("read").len(), 1);
    let one = encode(&record(0), 0).len() as u64;
    assert_eq!(spool.oldest(10, one * 2).expect("read").len(), 2);
}

#[test]
fn a_second_relay_cannot_share_a_spool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = Spool::open(dir.path(), 1 << 20, 1 << 20).expect("open");
    let second = Spool::open(dir.path(), 1 << 20, 1 << 20)
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
