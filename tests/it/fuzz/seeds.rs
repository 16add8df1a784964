//! The seed corpus under `tests/fuzz-corpus/`: realistic envelopes,
//! compressed bodies, auth headers and DSNs, config files and events with
//! personal data. The test checks that the committed corpus holds every seed
//! made here; after changing a seed here, write them (the compressed seeds
//! need the brotli and zstd encoders, so this is Rust rather than a script):
//!
//! ```text
//! RELAY_FUZZ_WRITE_SEEDS=1 cargo test --test it fuzz::seeds
//! ```
//!
//! It only adds and overwrites the files it makes: inputs saved from fuzz
//! failures and put in the corpus by hand stay.

use std::io::Write;
use std::path::Path;

use crate::support::{KEY, OTHER_KEY};

const EVENT_ID: &str = "9ec79c33ec9942ab8353589fcb2e04dc";
const DSN: &str = "https://a1b2c3d4e5f60718293a4b5c6d7e8f90@o1.ingest.example.com/42";

#[test]
fn the_committed_corpus_holds_every_seed() {
    let write = std::env::var_os("RELAY_FUZZ_WRITE_SEEDS").is_some();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus");
    let mut total = 0;
    for (target, files) in [
        ("envelope", envelopes()),
        ("decode", compressed()),
        ("auth", auth()),
        ("config", configs()),
        ("scrub", events()),
    ] {
        let dir = root.join(target);
        for (name, bytes) in files {
            total += bytes.len();
            let path = dir.join(&name);
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, bytes).unwrap();
            } else if name != "example.toml" {
                // (The example config changes with the code; its seed need not follow.)
                assert!(
                    std::fs::read(&path).is_ok_and(|b| b == bytes),
                    "{} is missing or stale: RELAY_FUZZ_WRITE_SEEDS=1 cargo test --test it fuzz::seeds",
                    path.display()
                );
            }
        }
    }
    assert!(
        total < 200 * 1024,
        "the corpus should stay small: {total} bytes"
    );
    if write {
        println!("wrote {total} bytes of seeds under {}", root.display());
    }
}

type Files = Vec<(String, Vec<u8>)>;

/// One envelope item: its header JSON and payload, with or without `length`.
struct Item<'a> {
    header: String,
    payload: &'a [u8],
    sized: bool,
}

fn item<'a>(ty: &str, extra: &str, payload: &'a [u8]) -> Item<'a> {
    let header = format!(r#"{{"type":"{ty}","length":{}{extra}}}"#, payload.len());
    Item {
        header,
        payload,
        sized: true,
    }
}

fn unsized_item<'a>(ty: &str, payload: &'a [u8]) -> Item<'a> {
    Item {
        header: format!(r#"{{"type":"{ty}"}}"#),
        payload,
        sized: false,
    }
}

fn envelope(header: &str, items: &[Item<'_>], eol: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(eol.as_bytes());
    for i in items {
        debug_assert!(i.sized || !i.payload.contains(&b'\n'));
        out.extend_from_slice(i.header.as_bytes());
        out.extend_from_slice(eol.as_bytes());
        out.extend_from_slice(i.payload);
        out.extend_from_slice(eol.as_bytes());
    }
    out
}

fn python_event() -> String {
    format!(
        r#"{{"event_id":"{EVENT_ID}","timestamp":"2026-11-21T10:00:00.123456Z","platform":"python","level":"error","logger":"django.request","server_name":"web-7","release":"shop@2.4.1","environment":"production","sdk":{{"name":"sentry.python.django","version":"2.19.0","integrations":["django","logging"]}},"exception":{{"values":[{{"type":"CardDeclinedError","value":"card 4111 1111 1111 1111 declined for alice@example.com","module":"shop.payments","stacktrace":{{"frames":[{{"filename":"shop/views.py","abs_path":"/home/deploy/shop/views.py","function":"checkout","module":"shop.views","lineno":88,"in_app":true,"context_line":"    charge(card, user)","vars":{{"password":"hunter2","card":"4111111111111111","order_no":"4111111111111112","self":"<CheckoutView>"}}}}]}}}}]}},"request":{{"url":"https://shop.example.com/checkout?step=2&token=abc123","method":"POST","headers":{{"Cookie":"sessionid=s3cr3t; theme=dark","X-Forwarded-For":"203.0.113.7","Authorization":"Bearer abc.def-123","Accept":"text/html"}},"env":{{"REMOTE_ADDR":"203.0.113.7","SERVER_NAME":"web-7"}},"data":{{"card_number":"4111 1111 1111 1111","amount":"19.99"}}}},"user":{{"id":"1042","email":"alice@example.com","ip_address":"203.0.113.7"}},"breadcrumbs":{{"values":[{{"timestamp":1732183200.5,"category":"httplib","data":{{"url":"https://api.example.com/v1?access_token=xyz&page=2","status_code":200}}}}]}},"contexts":{{"trace":{{"trace_id":"3f786850e387550fdab836ed7e6dc881","span_id":"8c3f2e6a9b1d4f70"}},"runtime":{{"name":"CPython","version":"3.12.1"}}}},"tags":{{"shop":"eu-1"}},"extra":{{"order_id":4242,"note":"ssn 123-45-6789"}}}}"#
    )
}

fn transaction() -> String {
    format!(
        r#"{{"event_id":"{EVENT_ID}","type":"transaction","transaction":"/checkout","start_timestamp":1732183200.0,"timestamp":1732183200.25,"platform":"javascript","contexts":{{"trace":{{"trace_id":"3f786850e387550fdab836ed7e6dc881","span_id":"8c3f2e6a9b1d4f70","op":"http.server","status":"ok"}}}},"spans":[{{"span_id":"1a2b3c4d5e6f7081","parent_span_id":"8c3f2e6a9b1d4f70","op":"db.query","description":"SELECT * FROM users WHERE email = 'bob@example.com'","start_timestamp":1732183200.01,"timestamp":1732183200.02,"data":{{"db.system":"postgresql","url":"postgres://shop:dbpass99@db.internal:5432/shop"}}}}],"measurements":{{"lcp":{{"value":812.5,"unit":"millisecond"}}}}}}"#
    )
}

fn envelopes() -> Files {
    let header = format!(
        r#"{{"event_id":"{EVENT_ID}","dsn":"{DSN}","sent_at":"2026-11-21T10:00:01.000Z","sdk":{{"name":"sentry.python","version":"2.19.0"}}}}"#
    );
    let event = python_event();
    let tx = transaction();
    let mut minidump = b"MDMP\x93\xa7\x00\x00\x0d\x00\x00\x00 \x00\x00\x00".to_vec();
    minidump.extend_from_slice(b"\n\r\n\0\xff{\"type\":\"event\"}\n");
    minidump.extend((0u8..=64).map(|b| b.wrapping_mul(37)));
    let log = b"2026-11-21 10:00:00 INFO login user=alice@example.com from 203.0.113.7\n2026-11-21 10:00:01 WARN retry token=abc123\n";
    let session = br#"{"sid":"7c5a3b2e1f0d4c6b9a8e7d6c5b4a3928","did":"1042","init":true,"started":"2026-11-21T10:00:00Z","timestamp":"2026-11-21T10:05:00Z","status":"exited","errors":0,"duration":300.5,"attrs":{"release":"shop@2.4.1","environment":"production","ip_address":"203.0.113.7","user_agent":"Mozilla/5.0"}}"#;
    let sessions = br#"{"aggregates":[{"started":"2026-11-21T10:00:00Z","exited":12,"errored":1,"abnormal":0,"crashed":0}],"attrs":{"release":"shop@2.4.1","environment":"production"}}"#;
    let report = br#"{"timestamp":1732183200,"discarded_events":[{"reason":"queue_overflow","category":"error","quantity":3},{"reason":"sample_rate","category":"transaction","quantity":40},{"reason":"ratelimit_backoff","category":"attachment","quantity":65536}]}"#;
    let profile = br#"{"version":"1","platform":"python","event_id":"0123456789abcdef0123456789abcdef","samples":[{"stack_id":0,"thread_id":"1","elapsed_since_start_ns":"1000"}],"stacks":[[0]],"frames":[{"function":"checkout","filename":"/home/deploy/shop/views.py"}]}"#;
    let check_in = br#"{"check_in_id":"0123456789abcdef0123456789abcdef","monitor_slug":"nightly-report","status":"ok","duration":12.5,"environment":"production"}"#;
    let user_report = format!(
        r#"{{"event_id":"{EVENT_ID}","name":"Alice","email":"alice@example.com","comments":"It broke after I typed my card 4111111111111111"}}"#
    );
    let feedback = format!(
        r#"{{"event_id":"0123456789abcdef0123456789abcdef","type":"feedback","contexts":{{"feedback":{{"message":"checkout is broken","contact_email":"bob@example.com","associated_event_id":"{EVENT_ID}"}}}}}}"#
    );
    let span = br#"{"trace_id":"3f786850e387550fdab836ed7e6dc881","span_id":"1a2b3c4d5e6f7081","op":"http.client","description":"GET https://api.example.com/v1?api_key=k1","start_timestamp":1732183200.0,"timestamp":1732183200.1}"#;
    let logs = br#"{"items":[{"timestamp":1732183200.5,"level":"info","body":"user alice@example.com logged in","trace_id":"3f786850e387550fdab836ed7e6dc881","attributes":{"ip":{"value":"203.0.113.7","type":"string"}}}]}"#;
    let replay_event = format!(
        r#"{{"type":"replay_event","replay_id":"{EVENT_ID}","segment_id":0,"timestamp":1732183200,"urls":["https://shop.example.com/checkout?token=abc123"]}}"#
    );
    let recording = b"{\"segment_id\":0}\n[{\"type\":4,\"data\":{\"href\":\"https://shop.example.com/\"},\"timestamp\":1732183200000}]";
    let deep = format!(
        r#"{{"event_id":"{EVENT_ID}","extra":{{"deep":{}1{}}}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    let dsc = format!(
        r#"{{"event_id":"{EVENT_ID}","sent_at":"2026-11-21T10:00:01Z","trace":{{"trace_id":"3f786850e387550fdab836ed7e6dc881","public_key":"{KEY}","sample_rate":"0.25","sampled":"true","environment":"production","release":"shop@2.4.1","transaction":"/checkout"}}}}"#
    );

    let mut files: Vec<(&str, Vec<u8>)> = vec![
        (
            "event.envelope",
            envelope(&header, &[item("event", "", event.as_bytes())], "\n"),
        ),
        (
            "event-no-length.envelope",
            envelope(
                &format!(r#"{{"event_id":"{EVENT_ID}"}}"#),
                &[unsized_item("event", event.as_bytes())],
                "\n",
            ),
        ),
        (
            "event-attachments.envelope",
            envelope(
                &header,
                &[
                    item("event", "", event.as_bytes()),
                    item(
                        "attachment",
                        r#","filename":"crash.dmp","attachment_type":"event.minidump","content_type":"application/octet-stream""#,
                        &minidump,
                    ),
                    item(
                        "attachment",
                        r#","filename":"app.log","content_type":"text/plain""#,
                        log,
                    ),
                ],
                "\n",
            ),
        ),
        (
            "transaction-profile.envelope",
            envelope(
                &dsc,
                &[
                    item("transaction", "", tx.as_bytes()),
                    item("profile", "", profile),
                ],
                "\n",
            ),
        ),
        (
            "sessions.envelope",
            envelope(
                r#"{"sent_at":"2026-11-21T10:05:00Z","sdk":{"name":"sentry.javascript.browser","version":"8.0.0"}}"#,
                &[item("session", "", session), item("sessions", "", sessions)],
                "\n",
            ),
        ),
        (
            "client-report.envelope",
            envelope(
                "{}",
                &[unsized_item("client_report", report)],
                "\n",
            ),
        ),
        (
            "mixed-types.envelope",
            envelope(
                &format!(r#"{{"dsn":"{DSN}"}}"#),
                &[
                    item("check_in", "", check_in),
                    item("user_report", "", user_report.as_bytes()),
                    item("feedback", "", feedback.as_bytes()),
                    item("span", "", span),
                    item(
                        "log",
                        r#","item_count":1,"content_type":"application/vnd.sentry.items.log+json""#,
                        logs,
                    ),
                    item("replay_event", "", replay_event.as_bytes()),
                    item("replay_recording", "", recording),
                    item("statsd", "", b"shop.checkout:1|c|#region:eu"),
                ],
                "\n",
            ),
        ),
        (
            "deep-event.envelope",
            envelope("{}", &[item("event", "", deep.as_bytes())], "\n"),
        ),
        (
            "crlf.envelope",
            envelope(
                &format!(r#"{{"event_id":"{EVENT_ID}","sent_at":"2026-11-21T10:00:01Z"}}"#),
                &[
                    item("event", "", br#"{"message":"hello","level":"info"}"#),
                    unsized_item("client_report", br#"{"discarded_events":[]}"#),
                ],
                "\r\n",
            ),
        ),
        ("header-only.envelope", b"{}\n".to_vec()),
        ("header-no-newline.envelope", format!("{{\"dsn\":\"{DSN}\"}}").into_bytes()),
        (
            "unicode.envelope",
            envelope(
                r#"{"sdk":{"name":"sentry.dotnet","version":"5.0.0"}}"#,
                &[
                    item(
                        "attachment",
                        r#","filename":"r\u00e9sum\u00e9 \ud83d\udcce.txt","content_type":"text/plain; charset=utf-8""#,
                        "Grüße, José — ✓ 📎\n".as_bytes(),
                    ),
                    item(
                        "event",
                        "",
                        r#"{"message":"Fehler für Jürgen \u00fc \ud83d\ude00","logentry":{"formatted":"ünïcödé"}}"#
                            .as_bytes(),
                    ),
                ],
                "\n",
            ),
        ),
        (
            "invalid-length-past-end.envelope",
            b"{}\n{\"type\":\"attachment\",\"length\":4096}\nshort\n".to_vec(),
        ),
        (
            "invalid-header-array.envelope",
            b"[\"not\",\"an\",\"object\"]\n{\"type\":\"event\"}\n{}\n".to_vec(),
        ),
        (
            "invalid-event-id.envelope",
            b"{\"event_id\":\"not-a-uuid\"}\n{\"type\":\"event\",\"length\":2}\n{}\n".to_vec(),
        ),
        (
            "invalid-item-header.envelope",
            b"{}\n{\"length\":2}\n{}\n".to_vec(),
        ),
    ];
    // Empty items: a sized item of length 0, unsized items with nothing
    // before the newline, blank lines between items, no final newline.
    let mut empty = b"{}\n{\"type\":\"attachment\",\"length\":0}\n\n\n{\"type\":\"event\"}\n\n{\"type\":\"attachment\",\"length\":0}".to_vec();
    empty.extend_from_slice(b"\n{\"type\":\"session\",\"length\":2}\n{}");
    files.push(("empty-items.envelope", empty));
    files.into_iter().map(|(n, b)| (n.to_owned(), b)).collect()
}

/// Plaintexts, each also compressed with every encoding the relay accepts.
fn compressed() -> Files {
    let event = python_event().into_bytes();
    let envelope = envelopes()
        .into_iter()
        .find(|(n, _)| n == "event-attachments.envelope")
        .expect("the envelope seed exists")
        .1;
    let log = b"2026-11-21 10:00:00 INFO GET /checkout 200 12ms\n2026-11-21 10:00:01 ERROR payment failed for alice@example.com\n".to_vec();
    let mut breadcrumbs = String::from(r#"{"breadcrumbs":{"values":["#);
    for i in 0..60 {
        breadcrumbs.push_str(&format!(
            r#"{{"timestamp":17321832{i:02}.5,"category":"ui.click","message":"button#checkout-{i}"}},"#
        ));
    }
    breadcrumbs.push_str(r#"{}]}}"#);
    let plains: [(&str, Vec<u8>); 5] = [
        ("event", event.clone()),
        ("envelope", envelope),
        ("log", log),
        ("breadcrumbs", breadcrumbs.into_bytes()),
        ("x", b"x".to_vec()),
    ];
    let mut files = Files::new();
    for (stem, plain) in &plains {
        files.push((format!("{stem}.plain"), plain.clone()));
        files.push((format!("{stem}.gz"), gzip(plain)));
        files.push((format!("{stem}.zlib"), zlib(plain, 6)));
        files.push((format!("{stem}.deflate"), raw_deflate(plain)));
        files.push((format!("{stem}.br"), brotli(plain, 5)));
        files.push((format!("{stem}.zstd"), zstd(plain, 3)));
    }
    // Variants a decoder meets in the wild: a gzip header with a name,
    // comment and extra field; stored (uncompressed) deflate blocks; other
    // levels; a body in two gzip members and in two zstd frames (the relay
    // decodes them all).
    let mut named = flate2::GzBuilder::new()
        .filename("event.json")
        .comment("from sentry-sdk")
        .extra(b"AB\x02\x00hi".to_vec())
        .mtime(1_732_183_200)
        .write(Vec::new(), flate2::Compression::best());
    named.write_all(&event).unwrap();
    files.push(("event.named.gz".into(), named.finish().unwrap()));
    files.push(("log.stored.zlib".into(), zlib(&plains[2].1, 0)));
    files.push(("breadcrumbs.q11.br".into(), brotli(&plains[3].1, 11)));
    files.push(("breadcrumbs.q0.br".into(), brotli(&plains[3].1, 0)));
    files.push(("event.level19.zstd".into(), zstd(&event, 19)));
    let (head, tail) = event.split_at(event.len() / 2);
    files.push(("event.members.gz".into(), [gzip(head), gzip(tail)].concat()));
    files.push((
        "event.frames.zstd".into(),
        [zstd(head, 1), zstd(tail, 1)].concat(),
    ));
    files
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli(data: &[u8], quality: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, quality, 22);
        w.write_all(data).unwrap();
    }
    out
}

fn zstd(data: &[u8], level: i32) -> Vec<u8> {
    zstd::encode_all(data, level).unwrap()
}

/// `X-Sentry-Auth` / `Authorization` values, `sentry_key` query strings and DSNs.
fn auth() -> Files {
    let files = [
        ("header-python.txt", format!("Sentry sentry_version=7, sentry_client=sentry.python/2.19.0, sentry_key={KEY}")),
        ("header-js.txt", format!("Sentry sentry_key={KEY}, sentry_version=7, sentry_client=sentry.javascript.browser/8.0.0")),
        ("header-secret-timestamp.txt", format!("Sentry sentry_version=7,sentry_timestamp=1732183200.5,sentry_client=raven-php/1.0,sentry_key={OTHER_KEY},sentry_secret=fedcba9876543210fedcba9876543210")),
        ("header-lowercase-quoted.txt", format!("sentry sentry_key=\"{}\", sentry_version=\"7\"", KEY.to_uppercase())),
        ("header-garbage-pairs.txt", format!("Sentry garbage, =, sentry_key=, ,sentry_key = {KEY} ,trailing")),
        ("header-empty-key.txt", "Sentry sentry_key=, sentry_version=7".into()),
        ("header-bearer.txt", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig".into()),
        ("header-basic.txt", "Basic dXNlcjpwYXNz".into()),
        ("query-browser.txt", format!("sentry_version=7&sentry_key={KEY}&sentry_client=sentry.javascript.browser%2F8.0.0")),
        ("query-encoded.txt", "sentry_key=%41%31b2c3d4e5f60718293a4b5c6d7e8f90+&x=%zz&=".into()),
        ("query-repeated.txt", format!("sentry_key=&sentry_key={OTHER_KEY}&sentry_key={KEY}")),
        ("dsn-https.txt", DSN.into()),
        ("dsn-secret-port.txt", format!("http://{KEY}:fedcba9876543210@127.0.0.1:3000/42")),
        ("dsn-path-prefix.txt", format!("https://{OTHER_KEY}@sentry.example.com/prefix/path/7")),
        ("dsn-ipv6.txt", format!("http://{KEY}@[::1]:3000/42")),
        ("dsn-no-key.txt", "http://relay:3000/path@x/42".into()),
    ];
    files
        .into_iter()
        .map(|(n, s)| (n.to_owned(), s.into_bytes()))
        .collect()
}

/// `config.toml.example` and small variants; `invalid-*` ones must be refused.
fn configs() -> Files {
    let example =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example")).unwrap();
    let project = format!("[[projects]]\nid = 42\npublic_keys = [\"{KEY}\"]\n");
    let files = [
        ("minimal.toml", project.clone()),
        (
            "two-projects.toml",
            format!(
                "[server]\nlisten = \"0.0.0.0:0\"\n[admin]\nlisten = \"[::1]:0\"\n\n{project}\n[[projects]]\nid = 7\npublic_keys = [\"{OTHER_KEY}\", \"ffffffffffffffffffffffffffffffff\"]\n"
            ),
        ),
        (
            "kafka.toml",
            format!(
                "[kafka]\nbrokers = \"kafka-1:9092,kafka-2:9092\"\ndelivery_timeout = \"5s\"\ncompression = \"zstd\"\nhealth_interval = \"500ms\"\n\n[kafka.topics]\nerror = \"ingest-events\"\ntransaction = \"ingest-transactions\"\noutcomes = \"outcomes-v2\"\n\n[kafka.producer]\n\"linger.ms\" = \"5\"\n\"sasl.username\" = \"edge-relay\"\n\"sasl.password\" = \"kafkaSEKRITpassword01\"\n\n[outcomes]\nenabled = true\nwindow = \"10s\"\n\n{project}"
            ),
        ),
        (
            "scrub.toml",
            format!(
                "[scrub]\ndefaults = true\nscrub_ip_addresses = false\nsensitive_fields = [\"order_secret\", \"pin\"]\nsafe_fields = [\"extra.order_id\", \"**.frames.*.vars.self\"]\nhash_key = \"hashSEKRITkey0001\"\nmethods = {{ email = \"hash\", creditcard = \"remove\" }}\n\n[[scrub.rules]]\nname = \"ticket\"\npattern = 'TCK-[0-9]{{6}}'\nmethod = \"mask\"\npaths = [\"extra.**\", \"message\"]\n\n{project}\n[projects.scrub]\nscrub_ip_addresses = true\nhash_key = \"projectSEKRITkey02\"\nmethods = {{ password = \"hash\" }}\n"
            ),
        ),
        (
            "quotas-sampling.toml",
            format!(
                "[defaults]\n[[defaults.quotas]]\nlimit = 1000\nwindow_secs = 60\n[defaults.sampling]\nerror_rate = 1.0\ntransaction_rate = 0.5\n\n{project}\n[[projects.quotas]]\ncategories = [\"error\", \"transaction\"]\nlimit = 100\nwindow_secs = 60\nburst = 150\nscope = \"key\"\n[[projects.quotas]]\ncategories = [\"error\"]\nlimit = 0\nwindow_secs = 1\nscope = \"fingerprint\"\n[projects.sampling]\nerror_rate = 0.5\n[[projects.sampling.rules]]\nenvironment = \"production\"\nrelease = \"shop@2.*\"\ntransaction = \"/health*\"\nrate = 0.0\n"
            ),
        ),
        (
            "file-sink.toml",
            format!(
                "[file_sink]\npath = \"/var/lib/edge-relay/items.jsonl\"\n\n[limits]\nmax_body_size = \"1MiB\"\nmax_inflated_size = \"4MiB\"\nmax_event_size = 65536\nmax_items = 10\nmax_header_line_size = \"1KiB\"\nmax_json_depth = 32\nmax_quota_buckets = 10\n\n[shutdown]\ngrace_period = \"10s\"\nfast_grace_period = \"1s\"\ndrain_delay = \"2s\"\n\n[log]\nlevel = \"edge_relay=debug,info\"\nformat = \"json\"\n\n{project}"
            ),
        ),
        (
            "env.toml",
            format!(
                "[server]\nlisten = \"${{LISTEN}}\"\n[scrub]\nhash_key = \"${{HASH_KEY}}\"\nsensitive_fields = [\"$${{literal}}\"]\n\n{project}"
            ),
        ),
        ("invalid-unknown-key.toml", format!("[server]\nlisten = \"127.0.0.1:3000\"\nlisten_backlog = 5\n\n{project}")),
        ("invalid-listen.toml", format!("[server]\nlisten = \"localhost\"\n\n{project}")),
        ("invalid-same-ports.toml", format!("[server]\nlisten = \"127.0.0.1:3000\"\n[admin]\nlisten = \"127.0.0.1:3000\"\n\n{project}")),
        ("invalid-depth.toml", format!("[limits]\nmax_json_depth = 200\n\n{project}")),
        ("invalid-kafka-and-sink.toml", format!("[kafka]\n[file_sink]\npath = \"x.jsonl\"\n\n{project}")),
        ("invalid-syntax.toml", format!("[server\nlisten = 127.0.0.1:3000\n\n{project}")),
        ("invalid-key.toml", "[[projects]]\nid = 1\npublic_keys = [\"not-hex\"]\n".into()),
    ];
    let mut out: Files = files
        .into_iter()
        .map(|(n, s)| (n.to_owned(), s.into_bytes()))
        .collect();
    out.push(("example.toml".into(), example));
    out
}

/// Events shaped as SDKs send them, with personal data in the places it
/// hides, and a text log for `scrub_text`.
fn events() -> Files {
    let files = [
        ("python-django.json", python_event()),
        ("transaction.json", transaction()),
        (
            "javascript-browser.json",
            r#"{"event_id":"0123456789abcdef0123456789abcdef","platform":"javascript","message":"Failed to fetch https://bob:hunter2@api.example.com/v1/orders?api_key=k1&page=2","request":{"url":"https://shop.example.com/account?email=carol@example.com","headers":[["User-Agent","Mozilla/5.0"],["Cookie","_ga=GA1.2.3; csrftoken=csrf-token-val-456"],["X-Api-Key","apikey-val-321"]],"query_string":[["step","2"],["token","qtok-789"]]},"user":{"ip_address":"{{auto}}","email":"carol@example.com"},"breadcrumbs":{"values":[{"category":"xhr","data":{"method":"POST","url":"/api/login","status_code":401},"message":"login as dave@example.org"},{"category":"console","message":"jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl"}]},"contexts":{"browser":{"name":"Chrome","version":"131.0.0"}},"exception":{"values":[{"type":"TypeError","value":"Cannot read properties of undefined","stacktrace":{"frames":[{"filename":"/Users/jdoe_user/dev/shop/app.js","function":"submitOrder","module":"app","lineno":12,"colno":7}]}}]}}"#.to_owned(),
        ),
        (
            "java-spring.json",
            r#"{"event_id":"1a2b3c4d5e6f708192a3b4c5d6e7f809","platform":"java","logentry":{"message":"Login failed for %s from %s","params":["erin@example.com","2001:db8::7334"],"formatted":"Login failed for erin@example.com from 2001:db8::7334"},"exception":{"values":[{"type":"java.sql.SQLException","value":"jdbc:postgresql://app:dbpass99@db.internal/shop refused; IBAN DE89370400440532013000","stacktrace":{"frames":[{"module":"com.example.shop.PaymentService","function":"charge","filename":"PaymentService.java","lineno":88,"vars":{"creditCard":"5500 0000 0000 0004","apiToken":"sk_live_51HabcdefghijklmnopQRST"}}]}}]},"extra":{"aws":"AKIAIOSFODNN7EXAMPLE","github":"ghp_16C7e42F292c6912E7710c838347Ae178B4a","slack":"xoxb-2637468212-secretslacktok","pem":"-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAsecretkeybody\n-----END RSA PRIVATE KEY-----","ticket":"TCK-123456"},"tags":{"session":"sess-cookie-value-123"}}"#.to_owned(),
        ),
        (
            "dotnet-windows.json",
            r#"{"event_id":"2b3c4d5e6f708192a3b4c5d6e7f8091a","platform":"csharp","message":{"formatted":"Could not open C:\\Users\\carol\\AppData\\shop.db"},"user":{"id":"42","username":"carol","ip_address":"198.51.100.23"},"request":{"env":{"REMOTE_ADDR":"198.51.100.23","HTTP_X_FORWARDED_FOR":"198.51.100.23, 10.0.0.1"},"cookies":{"ASP.NET_SessionId":"abc","theme":"dark"}},"contexts":{"os":{"name":"Windows","version":"10.0.19041.1"},"device":{"mac":"00:1a:2b:3c:4d:5e"}}}"#.to_owned(),
        ),
        (
            "already-scrubbed.json",
            r#"{"event_id":"3c4d5e6f708192a3b4c5d6e7f8091a2b","user":{"email":"[email]","ip_address":null},"extra":{"password":"[Filtered]","card":"**** **** **** ****","hashed":"5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"},"request":{"query_string":[["token","[Filtered]"]]},"_meta":{"user":{"email":{"":{"rem":[["email","s"]]}}},"extra":{"password":{"":{"rem":[["password","s"]]}},"hashed":{"":{"rem":[["password","p"]]}}}}}"#.to_owned(),
        ),
        (
            "odd-shapes.json",
            r#"{"":{"password":"x","":"alice@example.com"},"a.b":{"token":"t1"},"a":{"b":{"token":"t2"}},"0":[["password","p"],["pin",1234],["x"],[1,2],[]],"extra":{"secret":{"nested":[true,false,null,1.5,-7,{"k":"v"}]},"api_key":12345678901234567890,"auth":true,"order_secret":null,"credentials":[]},"sdk":{"name":"alice@example.com"},"message":"\u0000 \ud83d\ude00 é alice@example.com ü 4111-1111-1111-1111 ✓","list":[1,"two",null,[["token","abc"]]]}"#.to_owned(),
        ),
        (
            "app.log.txt",
            "2026-11-21T10:00:00Z INFO login user=alice@example.com ip=203.0.113.7 session=sess-1; password=hunter2\n2026-11-21T10:00:01Z DEBUG GET https://bob:pw@api.example.com/x?access_token=xyz&page=2 Authorization: Bearer abc.def-123\n2026-11-21T10:00:02Z WARN card 4111 1111 1111 1111 ssn 123-45-6789 at /home/alice/app/main.py\n".to_owned(),
        ),
        (
            "php-dump.log.txt",
            "object(App\\User)#3 (3) {\n  [\"name\"]=>\n  string(5) \"alice\"\n  [\"password\":protected]=>\n  string(8) \"hun\"ter2\"\n  [\"roles\":\"App\\User\":private]=>\n  array(1) {\n    [0]=>\n    string(5) \"admin\"\n  }\n}\nlogin {\"user\": \"bob\", \"passwort\": \"it\\\"s\"} 'token': 'a\\'b'\n".to_owned(),
        ),
    ];
    files
        .into_iter()
        .map(|(n, s)| (n.to_owned(), s.into_bytes()))
        .collect()
}
