use std::io::Write;

use super::*;

const EVENT: &[u8] = br#"{"event_id":"0123456789abcdef0123456789abcdef","message":"hello"}"#;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = ::brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    ::zstd::encode_all(data, 3).unwrap()
}

type Encoder = fn(&[u8]) -> Vec<u8>;

fn all_encoders() -> [(Encoding, Encoder); 5] {
    [
        (Encoding::Gzip, gzip),
        (Encoding::Deflate, zlib),
        (Encoding::Deflate, raw_deflate),
        (Encoding::Brotli, brotli),
        (Encoding::Zstd, zstd),
    ]
}

#[test]
fn header_values_map_to_encodings() {
    assert_eq!(Encoding::from_header(None).unwrap(), Encoding::Identity);
    assert_eq!(Encoding::from_header(Some("")).unwrap(), Encoding::Identity);
    assert_eq!(
        Encoding::from_header(Some("identity")).unwrap(),
        Encoding::Identity
    );
    assert_eq!(
        Encoding::from_header(Some(" GZIP ")).unwrap(),
        Encoding::Gzip
    );
    assert_eq!(
        Encoding::from_header(Some("x-gzip")).unwrap(),
        Encoding::Gzip
    );
    assert_eq!(
        Encoding::from_header(Some("deflate")).unwrap(),
        Encoding::Deflate
    );
    assert_eq!(Encoding::from_header(Some("br")).unwrap(), Encoding::Brotli);
    assert_eq!(Encoding::from_header(Some("zstd")).unwrap(), Encoding::Zstd);
    assert!(matches!(
        Encoding::from_header(Some("compress")),
        Err(DecodeError::Unsupported(_))
    ));
    assert!(matches!(
        Encoding::from_header(Some("gzip, br")),
        Err(DecodeError::Unsupported(_))
    ));
}

#[test]
fn every_encoding_round_trips() {
    for (encoding, encode) in all_encoders() {
        let out = decode(encoding, Bytes::from(encode(EVENT)), 1 << 20).unwrap();
        assert_eq!(&out[..], EVENT, "{encoding:?}");
    }
    let out = decode(Encoding::Identity, Bytes::from_static(EVENT), 1 << 20).unwrap();
    assert_eq!(&out[..], EVENT);
}

#[test]
fn bombs_stop_at_the_cap() {
    // 64 MiB of zeros compresses to a few KiB in every format.
    let zeros = vec![0u8; 64 << 20];
    let limit = 1 << 20;
    for (encoding, encode) in all_encoders() {
        let bomb = encode(&zeros);
        assert!(
            bomb.len() < 200 << 10,
            "{encoding:?} bomb is {} bytes",
            bomb.len()
        );
        match decode(encoding, Bytes::from(bomb), limit) {
            Err(DecodeError::TooLarge { limit: l }) => assert_eq!(l, limit),
            other => panic!("{encoding:?}: expected TooLarge, got {other:?}"),
        }
    }
}

#[test]
fn exactly_the_cap_is_allowed() {
    let data = vec![b'x'; 4096];
    for (encoding, encode) in all_encoders() {
        let out = decode(encoding, Bytes::from(encode(&data)), 4096).unwrap();
        assert_eq!(out.len(), 4096, "{encoding:?}");
        assert!(matches!(
            decode(encoding, Bytes::from(encode(&data)), 4095),
            Err(DecodeError::TooLarge { .. })
        ));
    }
    assert!(matches!(
        decode(Encoding::Identity, Bytes::from(data), 4095),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn truncated_streams_are_corrupt() {
    // A body big enough that every format spans several blocks.
    let body: Vec<u8> = (0..20_000u32)
        .flat_map(|i| format!("line {i} of text\n").into_bytes())
        .collect();
    for (encoding, encode) in all_encoders() {
        let full = encode(&body);
        for cut in [1, full.len() / 2, full.len() - 1] {
            let result = decode(encoding, Bytes::copy_from_slice(&full[..cut]), 1 << 24);
            assert!(
                matches!(result, Err(DecodeError::Corrupt { .. })),
                "{encoding:?} cut at {cut}/{}: {:?}",
                full.len(),
                result.map(|b| b.len())
            );
        }
    }
}

#[test]
fn a_bad_gzip_body_leaves_no_trace_for_the_next() {
    // The one-shot decompressor is kept per thread: whatever the last body
    // left behind (a bomb stopped at the cap, a stream cut short, garbage,
    // a wrong CRC), the next body reads as it would on a fresh thread.
    let other = br#"{"message":"a second, different event"}"#;
    let mut wrong_crc = gzip(EVENT);
    let at = wrong_crc.len() - 8;
    wrong_crc[at] ^= 1;
    let bomb = gzip(&vec![b'a'; 1 << 20]);
    let whole = gzip(EVENT);
    for bad in [
        bomb,
        whole[..whole.len() / 2].to_vec(),
        b"not gzip at all".to_vec(),
        wrong_crc,
    ] {
        assert!(decode(Encoding::Gzip, Bytes::from(bad), 1024).is_err());
        for body in [EVENT, other.as_slice()] {
            let out = decode(Encoding::Gzip, Bytes::from(gzip(body)), 1024).unwrap();
            assert_eq!(&out[..], body);
        }
    }
}

#[test]
fn garbage_is_corrupt_not_a_panic() {
    let garbage = Bytes::from_static(b"this is not compressed at all, just text");
    for encoding in [
        Encoding::Gzip,
        Encoding::Deflate,
        Encoding::Brotli,
        Encoding::Zstd,
    ] {
        assert!(
            matches!(
                decode(encoding, garbage.clone(), 1 << 20),
                Err(DecodeError::Corrupt { .. })
            ),
            "{encoding:?}"
        );
    }
}

#[test]
fn a_wrong_encoding_header_is_corrupt() {
    // gzip bytes labelled as zstd, brotli bytes labelled as gzip.
    assert!(matches!(
        decode(Encoding::Zstd, Bytes::from(gzip(EVENT)), 1 << 20),
        Err(DecodeError::Corrupt { .. })
    ));
    assert!(matches!(
        decode(Encoding::Gzip, Bytes::from(brotli(EVENT)), 1 << 20),
        Err(DecodeError::Corrupt { .. })
    ));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            for encoding in [Encoding::Gzip, Encoding::Deflate, Encoding::Brotli, Encoding::Zstd, Encoding::Identity] {
                if let Ok(out) = decode(encoding, Bytes::from(data.clone()), 1 << 16) {
                    prop_assert!(out.len() <= 1 << 16);
                }
            }
        }

        #[test]
        fn round_trips_any_payload(data in proptest::collection::vec(any::<u8>(), 1..4096)) {
            for (encoding, encode) in all_encoders() {
                let out = decode(encoding, Bytes::from(encode(&data)), 1 << 16).unwrap();
                prop_assert_eq!(&out[..], &data[..]);
            }
        }
    }
}

#[test]
fn zstd_frames_asking_for_huge_windows_are_refused() {
    // A frame whose header asks for a 128 MiB window: refused before that memory is allocated.
    let data = vec![7u8; 1 << 20];
    let mut encoder = ::zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
    encoder.include_contentsize(false).unwrap();
    encoder.window_log(27).unwrap();
    encoder.long_distance_matching(true).unwrap();
    std::io::Write::write_all(&mut encoder, &data).unwrap();
    let frame = encoder.finish().unwrap();
    assert!(matches!(
        decode(Encoding::Zstd, Bytes::from(frame), 64 << 20),
        Err(DecodeError::Corrupt { .. })
    ));
}

/// A gzip body with the header CRC-16 (FHCRC) that flate2's encoder never
/// writes: the header, its CRC-16, then the deflate stream and trailer of
/// `gzip(data)`.
fn gzip_with_header_crc(data: &[u8]) -> Vec<u8> {
    let plain = gzip(data);
    let mut header = plain[..10].to_vec();
    header[3] |= GZIP_FHCRC;
    let crc = crc32fast::hash(&header) as u16;
    let mut out = header;
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&plain[10..]);
    out
}

/// Sets a gzip body's trailer size (ISIZE).
fn with_size(mut body: Vec<u8>, size: u32) -> Vec<u8> {
    let at = body.len() - 4;
    body[at..].copy_from_slice(&size.to_le_bytes());
    body
}

#[test]
fn gzip_bodies_inflate_in_one_shot_as_the_stream_does() {
    let event = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/corpus/event-8k.json"
    ))
    .unwrap_or_else(|e| panic!("the benches' corpus event: {e}"));
    for data in [EVENT, event.as_bytes(), &[0u8; 1], &vec![b'x'; 300_000]] {
        let body = gzip(data);
        let one_shot = gunzip_one_shot(&body, 1 << 20).expect("taken in one shot");
        assert_eq!(one_shot, data);
        let streamed = gunzip_stream(&body, 1 << 20).unwrap();
        assert_eq!(&streamed[..], data);
        assert_eq!(
            &decode(Encoding::Gzip, Bytes::from(body), 1 << 20).unwrap()[..],
            data
        );
    }
}

/// What [`decode`] should make of a body.
#[derive(Debug)]
enum Expect {
    Inflates(usize),
    TooLarge,
    Corrupt,
}

#[test]
fn the_one_shot_path_leaves_what_it_cannot_trust_to_the_stream() {
    use Expect::{Corrupt, Inflates, TooLarge};
    let big = vec![b'a'; 2 << 20];
    let cases: [(&str, Vec<u8>, usize, Expect); 7] = [
        // Inflates past the cap: the stream says so.
        ("over the cap", gzip(&big), 1 << 20, TooLarge),
        // Past ONE_SHOT_MAX but within the cap: the stream inflates it.
        ("over 1 MiB", gzip(&big), 4 << 20, Inflates(big.len())),
        // A trailer that lies, either way: corrupt, as the stream finds.
        (
            "size too small",
            with_size(gzip(EVENT), 10),
            1 << 20,
            Corrupt,
        ),
        (
            "size too large",
            with_size(gzip(EVENT), 1000),
            1 << 20,
            Corrupt,
        ),
        // More than any deflate stream of this length can inflate to
        // (refused before allocating, which this cannot see): corrupt.
        (
            "size past deflate's ratio",
            with_size(gzip(EVENT), 1 << 19),
            1 << 20,
            Corrupt,
        ),
        // A header CRC libdeflate would not check: the stream checks it.
        (
            "header CRC",
            gzip_with_header_crc(EVENT),
            1 << 20,
            Inflates(EVENT.len()),
        ),
        // An empty member: corrupt, as for every encoding.
        ("empty", gzip(b""), 1 << 20, Corrupt),
    ];
    for (what, body, limit, expected) in cases {
        assert!(
            gunzip_one_shot(&body, limit).is_none(),
            "{what}: taken in one shot"
        );
        let got = decode(Encoding::Gzip, Bytes::from(body), limit);
        match (expected, got) {
            (Inflates(len), Ok(out)) => assert_eq!(out.len(), len, "{what}"),
            (TooLarge, Err(DecodeError::TooLarge { .. }))
            | (Corrupt, Err(DecodeError::Corrupt { .. })) => {}
            (expected, got) => panic!("{what}: expected {expected:?}, got {got:?}"),
        }
    }
    // A wrong header CRC: the stream refuses what libdeflate would take.
    let mut bad_header = gzip_with_header_crc(EVENT);
    bad_header[10] ^= 1;
    assert!(matches!(
        decode(Encoding::Gzip, Bytes::from(bad_header), 1 << 20),
        Err(DecodeError::Corrupt { .. })
    ));
}

#[test]
fn every_gzip_member_and_zstd_frame_is_read() {
    let second = br#"{"message":"a second member, longer than the first one by a fair margin"}"#;
    let mut want = EVENT.to_vec();
    want.extend_from_slice(second);
    let mut body = gzip(EVENT);
    body.extend_from_slice(&gzip(second));
    assert_eq!(gunzip_one_shot(&body, 1 << 20), None, "left to the stream");
    assert_eq!(&gunzip_stream(&body, 1 << 20).unwrap()[..], &want[..]);
    assert_eq!(
        &decode(Encoding::Gzip, Bytes::from(body), 1 << 20).unwrap()[..],
        &want[..]
    );
    // A last member that repeats the first has the same trailer: still two.
    let mut twice = gzip(EVENT);
    twice.extend_from_slice(&gzip(EVENT));
    let out = decode(Encoding::Gzip, Bytes::from(twice), 1 << 20).unwrap();
    assert_eq!(&out[..], [EVENT, EVENT].concat());
    let mut frames = zstd(EVENT);
    frames.extend_from_slice(&zstd(second));
    assert_eq!(
        &decode(Encoding::Zstd, Bytes::from(frames), 1 << 20).unwrap()[..],
        &want[..]
    );
    // Together they are still held to the cap.
    let mut members = gzip(&vec![b'a'; 700]);
    members.extend_from_slice(&gzip(&vec![b'b'; 700]));
    assert!(matches!(
        decode(Encoding::Gzip, Bytes::from(members), 1024),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn bytes_after_the_stream_are_corrupt() {
    for (encoding, encode) in all_encoders() {
        if encoding == Encoding::Identity {
            continue;
        }
        // A few bytes after it, and more than the brotli reader's buffer.
        for junk in [b"trailing junk".to_vec(), vec![b'j'; 20_000]] {
            let mut body = encode(EVENT);
            body.extend_from_slice(&junk);
            let result = decode(encoding, Bytes::from(body), 1 << 20);
            assert!(
                matches!(result, Err(DecodeError::Corrupt { .. })),
                "{encoding:?} with {} bytes after: {result:?}",
                junk.len()
            );
        }
        // A body larger than that buffer, with nothing after it, is whole.
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let out = decode(encoding, Bytes::from(encode(&big)), 1 << 20).unwrap();
        assert_eq!(&out[..], &big[..], "{encoding:?}");
    }
}

mod one_shot_properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever is done to a gzip body (a byte changed, cut short,
        /// bytes after it, a trailer that lies), the one-shot path never
        /// takes a body the stream refuses, nor reads it differently.
        #[test]
        fn the_one_shot_path_agrees_with_the_stream(
            data in proptest::collection::vec(any::<u8>(), 1..4096),
            header_crc in any::<bool>(),
            change in 0usize..4,
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            size in any::<u32>(),
        ) {
            let mut body = if header_crc { gzip_with_header_crc(&data) } else { gzip(&data) };
            match change {
                0 => {
                    let i = at.index(body.len());
                    body[i] = byte;
                }
                1 => body.truncate(at.index(body.len())),
                2 => body.extend_from_slice(&[byte; 9]),
                _ => body = with_size(body, size % (1 << 17)),
            }
            let limit = 1 << 16;
            if let Some(out) = gunzip_one_shot(&body, limit) {
                let streamed = gunzip_stream(&body, limit);
                prop_assert!(streamed.is_ok(), "the stream refused what the one shot took: {streamed:?}");
                prop_assert_eq!(&streamed.unwrap()[..], &out[..]);
            }
        }

        #[test]
        fn whole_gzip_bodies_take_the_one_shot_path(data in proptest::collection::vec(any::<u8>(), 1..4096)) {
            prop_assert_eq!(gunzip_one_shot(&gzip(&data), 1 << 16), Some(data));
        }
    }
}

#[test]
fn legacy_store_bodies_decode_under_the_cap() {
    use base64::Engine as _;
    let b64 = |data: &[u8]| Bytes::from(base64::engine::general_purpose::STANDARD.encode(data));
    for body in [b64(&zlib(EVENT)), b64(&raw_deflate(EVENT)), b64(EVENT)] {
        assert!(is_legacy_store(&body));
        let decoded = decode_legacy_store(body, 1 << 20).unwrap();
        assert_eq!(&decoded[..], EVENT);
    }
    // Line breaks inside the base64, as some old SDKs wrap it.
    let wrapped: Vec<u8> = b64(&zlib(EVENT))
        .chunks(16)
        .flat_map(|c| c.iter().copied().chain(*b"\r\n"))
        .collect();
    let decoded = decode_legacy_store(Bytes::from(wrapped), 1 << 20).unwrap();
    assert_eq!(&decoded[..], EVENT);
    // Past the cap: too large, as any body that inflates past it.
    let big = format!("{{\"message\":\"{}\"}}", "a".repeat(1 << 20));
    assert!(matches!(
        decode_legacy_store(b64(&zlib(big.as_bytes())), 1 << 20),
        Err(DecodeError::TooLarge { limit }) if limit == 1 << 20
    ));
    // Not base64: left as it came, to the event parser. JSON text is not legacy at all.
    assert_eq!(
        &decode_legacy_store(Bytes::from_static(b"not json"), 1 << 20).unwrap()[..],
        b"not json"
    );
    assert!(!is_legacy_store(b"  {\"message\":\"hi\"}"));
    assert!(!is_legacy_store(b" \n"));
}

#[test]
fn gzip_output_is_gzip_that_any_reader_inflates() {
    let log = b"2026-12-07 10:00:01 INFO user=alice token=abc123\n".repeat(200);
    let out = super::gzip(&log);
    assert!(is_gzip(&out));
    assert!(
        out.len() < log.len() / 10,
        "compressed: {} bytes",
        out.len()
    );
    // Read back by this module, and by flate2's stream as a consumer would.
    assert_eq!(
        &decode(Encoding::Gzip, Bytes::from(out.clone()), 1 << 20).unwrap()[..],
        &log[..]
    );
    let mut back = Vec::new();
    MultiGzDecoder::new(&out[..])
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, log);
    assert!(is_gzip(&super::gzip(b"")));
}

#[test]
fn gzip_is_told_by_its_magic_and_method() {
    assert!(is_gzip(&gzip(b"text")));
    // Magic alone, another method byte, a zlib stream, text, too short.
    for bytes in [
        &b"\x1f\x8b"[..],
        b"\x1f\x8b\x07\x00",
        &zlib(b"text"),
        b"1f8b08 is text",
        b"",
    ] {
        assert!(!is_gzip(bytes), "{bytes:?}");
    }
}
