//! Criterion benches per stage on a realistic corpus (Python-SDK error events
//! of about 2, 8 and 20 KB, in `benches/corpus/`): decompression for each
//! encoding, envelope parsing with event validation, and PII scrubbing with
//! the default rules (over the text, as the relay does, and over a tree)
//! against the cost of parsing and serializing the event, the grouping
//! fingerprint, and the quota and sampling decision with 10 000 projects and 100 000
//! fingerprints. The `growth` group shows how the cost of one event grows
//! with the event's size, the number of projects, of custom scrub rules and
//! of distinct fingerprints.
//!
//! Run: `cargo bench --bench pipeline`. Figures are in BENCHMARKS.md.

use std::io::Write;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edge_relay::config::Limits;
use edge_relay::decompress::{self, Encoding};
use edge_relay::envelope;

const CORPUS: [(&str, &[u8]); 3] = [
    ("2k", include_bytes!("corpus/event-2k.json")),
    ("8k", include_bytes!("corpus/event-8k.json")),
    ("20k", include_bytes!("corpus/event-20k.json")),
];

/// An envelope as the Python SDK writes it: header, sized event item.
fn envelope_of(event: &[u8]) -> Vec<u8> {
    let mut body = br#"{"event_id":"0123456789abcdef0123456789abcdef","sent_at":"2026-11-21T00:00:00Z","sdk":{"name":"sentry.python","version":"2.75.0"}}"#.to_vec();
    body.push(b'\n');
    body.extend_from_slice(
        format!(
            "{{\"type\":\"event\",\"length\":{},\"content_type\":\"application/json\"}}\n",
            event.len()
        )
        .as_bytes(),
    );
    body.extend_from_slice(event);
    body.push(b'\n');
    body
}

fn encode(encoding: Encoding, data: &[u8]) -> Vec<u8> {
    match encoding {
        // The Python SDK's levels: gzip 9, brotli 4.
        Encoding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(9));
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Encoding::Deflate => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Encoding::Brotli => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 4, 22);
                w.write_all(data).unwrap();
            }
            out
        }
        Encoding::Zstd => zstd::encode_all(data, 3).unwrap(),
        Encoding::Identity => data.to_vec(),
    }
}

fn bench_decompress(c: &mut Criterion) {
    let mut group = c.benchmark_group("decompress");
    for (size, event) in CORPUS {
        let body = envelope_of(event);
        group.throughput(Throughput::Bytes(body.len() as u64));
        for encoding in [
            Encoding::Gzip,
            Encoding::Deflate,
            Encoding::Brotli,
            Encoding::Zstd,
        ] {
            let wire = Bytes::from(encode(encoding, &body));
            group.bench_with_input(
                BenchmarkId::new(encoding.as_str(), size),
                &wire,
                |b, wire| b.iter(|| decompress::decode(encoding, wire.clone(), 50 << 20).unwrap()),
            );
        }
    }
    group.finish();
}

fn bench_parse(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("parse");
    for (size, event) in CORPUS {
        let body = Bytes::from(envelope_of(event));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("envelope", size), &body, |b, body| {
            b.iter(|| envelope::parse(body.clone(), &limits).unwrap())
        });
        group.bench_with_input(
            BenchmarkId::new("envelope+event", size),
            &body,
            |b, body| {
                b.iter(|| {
                    let env = envelope::parse(body.clone(), &limits).unwrap();
                    let (event, _) =
                        envelope::read_event(&env.items[0].payload, limits.max_json_depth).unwrap();
                    matches!(event, envelope::Event::View(..))
                })
            },
        );
    }
    group.finish();
}

fn bench_scrub(c: &mut Criterion) {
    let config = edge_relay::Config::from_toml("").expect("the default config is valid");
    let scrubber = config.scrubber.clone();
    let mut group = c.benchmark_group("scrub");
    for (size, event) in CORPUS {
        group.throughput(Throughput::Bytes(event.len() as u64));
        // The floor: what any relay that touches the event pays.
        group.bench_with_input(
            BenchmarkId::new("parse+serialize", size),
            event,
            |b, event| {
                b.iter(|| {
                    let v: serde_json::Value = serde_json::from_slice(event).unwrap();
                    serde_json::to_vec(&v).unwrap()
                })
            },
        );
        // What the relay does: parse, scrub with the default rules, serialize.
        group.bench_with_input(
            BenchmarkId::new("parse+scrub+serialize", size),
            event,
            |b, event| {
                b.iter(|| {
                    let mut v: serde_json::Value = serde_json::from_slice(event).unwrap();
                    let redactions = scrubber.scrub_event(&mut v);
                    assert!(!redactions.is_empty());
                    serde_json::to_vec(&v).unwrap()
                })
            },
        );
        // What the relay does now: read the event (one serde pass, no
        // tree) and scrub over its text.
        group.bench_with_input(
            BenchmarkId::new("read+scrub-text", size),
            event,
            |b, event| {
                b.iter(|| {
                    let (read, _) = envelope::read_event(event, 128).unwrap();
                    assert!(matches!(read, envelope::Event::View(..)));
                    let text = std::str::from_utf8(event).unwrap();
                    let (out, redactions) = scrubber.scrub_event_text(text).unwrap().unwrap();
                    assert!(!redactions.is_empty());
                    out
                })
            },
        );
        // The scrubbing pass alone, on an already parsed tree.
        let parsed: serde_json::Value = serde_json::from_slice(event).unwrap();
        group.bench_with_input(
            BenchmarkId::new("scrub-only", size),
            &parsed,
            |b, parsed| {
                b.iter_batched(
                    || parsed.clone(),
                    |mut v| scrubber.scrub_event(&mut v),
                    criterion::BatchSize::SmallInput,
                )
            },
        );
    }
    group.finish();
}

/// The quota and sampling decision for one item, with 10 000 projects and
/// 100 000 distinct fingerprints live in the bucket table.
fn bench_quota_sample(c: &mut Criterion) {
    use edge_relay::envelope::DataCategory;
    use edge_relay::quota::{Buckets, Demand, Quota, Scope};
    use edge_relay::sample::{Context, Kind, Sampling};
    use std::time::Duration;

    let quotas = [
        Quota {
            categories: vec![DataCategory::Error],
            limit: 1_000_000,
            window: Duration::from_secs(60),
            burst: 1_000_000,
            scope: Scope::Project,
        },
        Quota {
            categories: vec![DataCategory::Error],
            limit: 1_000_000,
            window: Duration::from_secs(60),
            burst: 1_000_000,
            scope: Scope::Fingerprint,
        },
    ];
    let sampling = Sampling {
        error_rate: 0.5,
        transaction_rate: 0.1,
        rules: Vec::new(),
    };
    let fingerprints: Vec<String> = (0..100_000).map(|i| format!("{i:032x}")).collect();
    let buckets = Buckets::new(250_000);
    // Warm the table: every project and fingerprint has its bucket.
    for (i, fingerprint) in fingerprints.iter().enumerate() {
        let d = Demand {
            project: (i % 10_000) as u64,
            key: "a1b2c3d4e5f60718293a4b5c6d7e8f90",
            fingerprint: Some(fingerprint),
            category: DataCategory::Error,
            quantity: 1,
        };
        buckets.check(&quotas, d, Duration::ZERO).unwrap();
    }
    let mut group = c.benchmark_group("quota+sample");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("10k projects, 100k fingerprints", |b| {
        b.iter(|| {
            i = (i + 7919) % 100_000;
            let d = Demand {
                project: (i % 10_000) as u64,
                key: "a1b2c3d4e5f60718293a4b5c6d7e8f90",
                fingerprint: Some(&fingerprints[i]),
                category: DataCategory::Error,
                quantity: 1,
            };
            let allowed = buckets
                .check(&quotas, d, Duration::from_millis(i as u64))
                .is_ok();
            let cx = Context {
                trace_id: Some(&fingerprints[i]),
                ..Default::default()
            };
            (allowed, sampling.decide(Kind::Error, cx, 0.3))
        })
    });
    group.finish();
    assert!(buckets.len() <= 250_000);
}

/// An error event of about `size` bytes: a message, tags, a user and as many
/// breadcrumbs as it takes, every tenth carrying an email, a card and a token.
fn event_of_size(size: usize) -> Vec<u8> {
    let mut event = serde_json::json!({
        "event_id": "0123456789abcdef0123456789abcdef",
        "timestamp": 1795200010.5,
        "platform": "python",
        "level": "error",
        "message": "checkout failed for order 1042",
        "tags": {"shop": "eu-1", "release": "shop@2.4.1"},
        "user": {"id": "1042", "email": "alice@example.com"},
        "breadcrumbs": {"values": []},
    });
    let mut i = 0;
    while serde_json::to_vec(&event).unwrap().len() < size {
        let message = if i % 10 == 0 {
            format!("charge {i} for bob@example.com with card 4111 1111 1111 1111 token=abc{i}")
        } else {
            format!("SELECT * FROM orders WHERE id = {i} AND shop = 'eu-1'")
        };
        event["breadcrumbs"]["values"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "timestamp": 1795200000.0 + f64::from(i),
                "category": "query",
                "message": message,
                "data": {"url": format!("https://api.example.com/v1/items/{i}"), "status_code": 200},
            }));
        i += 1;
    }
    serde_json::to_vec(&event).unwrap()
}

/// How the cost of one event grows: with its size (the whole CPU path of an
/// event as the relay runs it: gunzip, envelope parse, event read,
/// fingerprint, scrub over the text),
/// with the number of projects and of distinct fingerprints (the project
/// lookup and quota check), and with the number of custom scrub rules.
fn bench_growth(c: &mut Criterion) {
    use edge_relay::envelope::DataCategory;
    use edge_relay::quota::{Buckets, Demand};
    use std::time::Duration;

    let limits = Limits::default();
    let mut group = c.benchmark_group("growth");
    let config = edge_relay::Config::from_toml("").expect("the default config is valid");
    let scrubber = config.scrubber.clone();
    for size in [1_000, 10_000, 100_000] {
        let event = event_of_size(size);
        let body = encode(Encoding::Gzip, &envelope_of(&event));
        group.throughput(Throughput::Bytes(event.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("event-size", format!("{}k", size / 1000)),
            &Bytes::from(body),
            |b, body| {
                b.iter(|| {
                    let raw = decompress::decode(Encoding::Gzip, body.clone(), 50 << 20).unwrap();
                    let env = envelope::parse(raw, &limits).unwrap();
                    let item = &env.items[0];
                    let (event, _) =
                        envelope::read_event(&item.payload, limits.max_json_depth).unwrap();
                    let fingerprint = event.fingerprint();
                    let text = std::str::from_utf8(&item.payload).unwrap();
                    (scrubber.scrub_event_text(text).unwrap(), fingerprint)
                })
            },
        );
    }

    // Projects: the lookup by id and the project's quota check.
    group.throughput(Throughput::Elements(1));
    for projects in [1u64, 100, 10_000] {
        let mut text = String::new();
        for id in 1..=projects {
            text.push_str(&format!(
                "[[projects]]\nid = {id}\npublic_keys = [\"{id:032x}\"]\n\
                 [[projects.quotas]]\nlimit = 1000000000\nwindow_secs = 60\n"
            ));
        }
        let config = edge_relay::Config::from_toml(&text).expect("a valid config");
        let buckets = Buckets::new(100_000);
        let mut i = 0u64;
        group.bench_function(BenchmarkId::new("projects", projects), |b| {
            b.iter(|| {
                i = (i + 7919) % projects;
                let project = config.projects.get(i + 1).unwrap();
                let key = &project.public_keys[0];
                let d = Demand {
                    project: project.id,
                    key,
                    fingerprint: None,
                    category: DataCategory::Error,
                    quantity: 1,
                };
                buckets.check(&project.quotas, d, Duration::ZERO).is_ok()
            })
        });
    }

    // Distinct fingerprints, each with a bucket of its own: the table stays
    // bounded (100 000 buckets, the default), evicting idle ones first.
    let quotas = edge_relay::Config::from_toml(
        "[[projects]]\nid = 1\npublic_keys = [\"a1b2c3d4e5f60718293a4b5c6d7e8f90\"]\n\
         [[projects.quotas]]\nlimit = 1000000000\nwindow_secs = 60\nscope = \"fingerprint\"\n",
    )
    .expect("a valid config")
    .projects
    .get(1)
    .unwrap()
    .quotas
    .clone();
    for distinct in [1usize, 1_000, 1_000_000] {
        let fingerprints: Vec<String> = (0..distinct.min(200_000))
            .map(|i| format!("{i:032x}"))
            .collect();
        let buckets = Buckets::new(100_000);
        let mut i = 0usize;
        let mut n = 0u64;
        group.bench_function(BenchmarkId::new("fingerprints", distinct), |b| {
            b.iter(|| {
                i = (i + 7919) % distinct;
                n += 1;
                // Past 200 000 strings, the index itself is the distinct part.
                let fingerprint = match fingerprints.get(i) {
                    Some(f) => std::borrow::Cow::Borrowed(f.as_str()),
                    None => std::borrow::Cow::Owned(format!("{i:032x}")),
                };
                let d = Demand {
                    project: 1,
                    key: "a1b2c3d4e5f60718293a4b5c6d7e8f90",
                    fingerprint: Some(&fingerprint),
                    category: DataCategory::Error,
                    quantity: 1,
                };
                buckets.check(&quotas, d, Duration::from_micros(n)).is_ok()
            })
        });
        assert!(buckets.len() <= 100_000, "the table is bounded");
    }

    // Custom scrub rules on top of the built-in ones, on the 8 KB event.
    let event = CORPUS[1].1;
    group.throughput(Throughput::Bytes(event.len() as u64));
    for rules in [0usize, 10, 100] {
        let mut text = String::from("[scrub]\n");
        for r in 0..rules {
            text.push_str(&format!(
                "[[scrub.rules]]\nname = \"rule{r}\"\npattern = 'T{r}K-[0-9]{{6}}'\n"
            ));
        }
        let scrubber = edge_relay::Config::from_toml(&text)
            .expect("a valid config")
            .scrubber;
        group.bench_with_input(
            BenchmarkId::new("custom-rules", rules),
            event,
            |b, event| {
                b.iter(|| {
                    let text = std::str::from_utf8(event).unwrap();
                    envelope::read_event(event, 128).unwrap();
                    scrubber.scrub_event_text(text).unwrap()
                })
            },
        );
    }
    group.finish();
}

/// The grouping fingerprint of an event already read: exception types and
/// in-app frames for the corpus events, the normalized text for a message.
fn bench_fingerprint(c: &mut Criterion) {
    let mut group = c.benchmark_group("fingerprint");
    let message = br#"{"message": "user 1234 not found at 10.0.0.1 (order 9ec79c33-ec99-42ab-8353-589fcb2e04dc, took 1.5s)"}"#;
    for (name, event) in CORPUS.iter().copied().chain([("message", &message[..])]) {
        let (read, _) = envelope::read_event(event, 128).unwrap();
        assert!(read.fingerprint().is_some());
        group.bench_with_input(BenchmarkId::new("of", name), &read, |b, read| {
            b.iter(|| read.fingerprint())
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_decompress,
    bench_parse,
    bench_scrub,
    bench_fingerprint,
    bench_quota_sample,
    bench_growth
);
criterion_main!(benches);
