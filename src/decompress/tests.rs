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
fn one_threads_gzip_decoder_starts_afresh_after_every_body() {
    // The decoder is kept per thread: whatever the last body left it in
    // (a bomb stopped at the cap, a stream cut short, garbage, a wrong CRC),
    // the next body reads as it would on a fresh thread.
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
