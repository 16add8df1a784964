//! The scrubbing corpus: events shaped as the Python, JavaScript, Java, Go,
//! .NET and PHP SDKs send them, seeded with every kind of secret in every
//! place secrets hide, plus look-alikes. Sent through the relay into the mock
//! cluster: no byte sequence of any secret may reach Kafka, and every
//! look-alike must.

use std::io::Read;

use serde_json::{json, Value};

use crate::support::*;

/// Secrets, each unique enough that finding it anywhere means a leak.
const SECRETS: &[&str] = &[
    "4111111111111111",                                      // card, no separators
    "5500 0000 0000 0004",                                   // card with spaces
    "alice.smith@example.com",                               // email
    "203.0.113.77",                                          // IPv4
    "2001:db8::7334",                                        // IPv6
    "DE89370400440532013000",                                // IBAN
    "123-45-6789",                                           // US SSN
    "bearerTok3nValue",                                      // bearer token
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl", // JWT
    "MIIEowIBAAKCAQEAsecretkeybody",                         // PEM key body
    "dbpass99",                                              // password in a URL
    "hunter2-secret-pw",                                     // password fields
    "AKIAIOSFODNN7EXAMPLE",                                  // AWS key id
    "sk_live_51HabcdefghijklmnopQRST",                       // Stripe
    "ghp_16C7e42F292c6912E7710c838347Ae178B4a",              // GitHub
    "xoxb-2637468212-secretslacktok",                        // Slack
    "jdoe_user",                                             // user name in home paths
    "sess-cookie-value-123",                                 // session cookie
    "csrf-token-val-456",                                    // CSRF token
    "qtok-789",                                              // token in a query string
    "os-secret-val",                                         // configured sensitive field
    "apikey-val-321",                                        // api key header
    "c3k2lp-8f1e2d3c4b5a6978e0d1",                           // password-reset link's token
    "Qm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo=",          // a password hash in a failing row
    "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI",           // a JSON Web Key's private `d`
    "yamlApiKey7Hq2", // a value in a YAML dump's secrets block
];

/// Look-alikes that must survive untouched.
const LOOK_ALIKES: &[&str] = &[
    "4111111111111112",                         // Luhn-invalid order number
    "shop@2.4.1",                               // release
    "2026-11-21T10:00:00Z",                     // timestamp
    "9ec79c33-ec99-42ab-8353-589fcb2e04dc",     // UUID
    "3f786850e387550fdab836ed7e6dc881de23001b", // hash in a frame
    "checkout failed for order",                // ordinary words
    "12:30:45",                                 // a time
    "CardDeclinedError",
];

const PEM: &str =
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAsecretkeybody\n-----END RSA PRIVATE KEY-----";

fn frames(paths: &[&str], with_vars: bool) -> Value {
    let frames: Vec<Value> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut f = json!({
                "filename": p, "abs_path": p, "function": format!("handle_{i}"),
                "module": "app.checkout", "lineno": 10 + i, "in_app": true,
                "context_line": "charge(card, user) # commit 3f786850e387550fdab836ed7e6dc881de23001b"
            });
            if with_vars {
                f["vars"] = json!({
                    "password": "hunter2-secret-pw",
                    "card": "4111111111111111",
                    "order_no": "4111111111111112",
                    "conn": "postgres://dbuser:dbpass99@db.internal:5432/shop",
                    "self": {"api_key": "apikey-val-321", "email": "alice.smith@example.com"},
                });
            }
            f
        })
        .collect();
    json!({ "frames": frames })
}

fn common(event_id: &str, platform: &str) -> Value {
    json!({
        "event_id": event_id,
        "timestamp": "2026-11-21T10:00:00Z",
        "platform": platform,
        "level": "error",
        "release": "shop@2.4.1",
        "message": "checkout failed for order 4111111111111112 at 12:30:45, trace 9ec79c33-ec99-42ab-8353-589fcb2e04dc",
        "breadcrumbs": {"values": [
            {"category": "http", "data": {"url": "https://api.example.com/v1/pay?access_token=qtok-789&page=2", "method": "POST"}},
            {"category": "http", "data": {"url": "https://shop.example.com/accounts/reset/MTIz/c3k2lp-8f1e2d3c4b5a6978e0d1/", "method": "GET"}},
            {"category": "log", "message": "login by alice.smith@example.com from 203.0.113.77 / 2001:db8::7334"},
            {"category": "query", "message": "UPDATE users SET ssn = '123-45-6789', iban = 'DE89370400440532013000'"},
            {"category": "auth", "message": "Authorization: Bearer bearerTok3nValue"},
            {"category": "auth", "message": "retried with Bearer bearerTok3nValue"},
        ]},
        "contexts": {
            "cloud": {"aws_access_key_id": "AKIAIOSFODNN7EXAMPLE", "note": "key AKIAIOSFODNN7EXAMPLE rotated"},
            "ci": {"token_env": "ghp_16C7e42F292c6912E7710c838347Ae178B4a"},
        },
        "extra": {
            "order_secret": "os-secret-val",
            "stripe": "using sk_live_51HabcdefghijklmnopQRST",
            "slack": "posted with xoxb-2637468212-secretslacktok",
            "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl",
            "key_material": PEM,
            "card_spaced": "5500 0000 0000 0004",
            "jwk": {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "d": "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"},
            "settings_dump": "debug: false\nsecrets:\n  stripe: yamlApiKey7Hq2\n",
        },
        "tags": {"session": "sess-cookie-value-123", "shop": "eu-1", "error_class": "CardDeclinedError"},
        "user": {"id": "1042", "email": "alice.smith@example.com", "ip_address": "203.0.113.77", "username": "alice"},
    })
}

/// The Python SDK: frames with vars, WSGI request with env and a cookie string.
fn python(id: &str) -> Value {
    let mut e = common(id, "python");
    e["exception"] = json!({"values": [
        {"type": "IntegrityError", "value": "null value in column \"email\" violates not-null constraint\nDETAIL:  Failing row contains (7, pbkdf2_sha256$600000$Xk2LmQp4xZr7Tn3V$Qm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo=, null)."},
        {"type": "CardDeclinedError", "value": "declined for alice.smith@example.com",
        "stacktrace": frames(&["/home/jdoe_user/app/checkout.py", "app/payments.py"], true)}]});
    e["request"] = json!({
        "url": "https://shop.example.com/checkout", "method": "POST",
        "query_string": "step=2&token=qtok-789",
        "headers": {"Authorization": "Bearer bearerTok3nValue", "Cookie": "sessionid=sess-cookie-value-123; csrftoken=csrf-token-val-456", "X-Api-Key": "apikey-val-321"},
        "data": {"password": "hunter2-secret-pw", "card_number": "4111111111111111"},
        "env": {"REMOTE_ADDR": "203.0.113.77", "SERVER_NAME": "web-7"},
    });
    e
}

/// The browser JavaScript SDK: headers as a map, query string as pairs, no vars.
fn javascript(id: &str) -> Value {
    let mut e = common(id, "javascript");
    e["exception"] = json!({"values": [{"type": "TypeError", "value": "CardDeclinedError at https://dbuser:dbpass99@cdn.example.com/app.js",
        "stacktrace": frames(&["https://shop.example.com/static/app.js"], false)}]});
    e["request"] = json!({
        "url": "https://shop.example.com/checkout?token=qtok-789",
        "query_string": [["step", "2"], ["token", "qtok-789"]],
        "headers": {"Referer": "https://shop.example.com/?access_token=qtok-789", "User-Agent": "Mozilla/5.0"},
        "cookies": "_ga=GA1.2; session_id=sess-cookie-value-123",
    });
    e
}

/// The Java SDK: no vars, contexts and extra carry the secrets, headers as a map.
fn java(id: &str) -> Value {
    let mut e = common(id, "java");
    e["exception"] = json!({"values": [{"type": "CardDeclinedError", "module": "com.shop.payments",
        "value": "Card 4111111111111111 declined; user ssn 123-45-6789",
        "stacktrace": frames(&["Checkout.java", "Payments.java"], false)}]});
    e["request"] = json!({
        "url": "https://shop.example.com/api/pay", "method": "POST",
        "headers": {"authorization": "Basic ZGJ1c2VyOmRicGFzczk5", "x-csrf-token": "csrf-token-val-456"},
        "data": "{\"password\": \"hunter2-secret-pw\", \"iban\": \"DE89370400440532013000\"}",
    });
    e
}

/// The Go SDK: headers as pairs-of-strings map, cookies as a string.
fn go(id: &str) -> Value {
    let mut e = common(id, "go");
    e["exception"] = json!({"values": [{"type": "*errors.errorString", "value": "pq: password authentication failed for postgres://dbuser:dbpass99@db/shop",
        "stacktrace": frames(&["/home/jdoe_user/go/src/shop/main.go"], false)}]});
    e["request"] = json!({
        "url": "https://shop.example.com/pay", "method": "POST",
        "headers": [["Authorization", "Bearer bearerTok3nValue"], ["X-Forwarded-For", "203.0.113.77"]],
        "cookies": "session=sess-cookie-value-123",
        "env": {"REMOTE_ADDR": "203.0.113.77"},
    });
    e
}

/// The .NET SDK: Windows paths with the user name, headers as a map.
fn dotnet(id: &str) -> Value {
    let mut e = common(id, "csharp");
    e["exception"] = json!({"values": [{"type": "System.InvalidOperationException", "value": "Key file C:\\Users\\jdoe_user\\keys\\id.pem unreadable",
        "stacktrace": frames(&["C:\\Users\\jdoe_user\\source\\Shop\\Checkout.cs"], true)}]});
    e["request"] = json!({
        "url": "https://shop.example.com/pay", "method": "POST",
        "headers": {"Cookie": ".AspNetCore.Session=sess-cookie-value-123", "RequestVerificationToken": "csrf-token-val-456"},
    });
    e
}

/// The PHP SDK: a form body as a string, cookies as a map.
fn php(id: &str) -> Value {
    let mut e = common(id, "php");
    e["exception"] = json!({"values": [{"type": "CardDeclinedError", "value": "declined",
        "stacktrace": frames(&["/home/jdoe_user/www/checkout.php"], true)}]});
    e["request"] = json!({
        "url": "https://shop.example.com/checkout.php", "method": "POST",
        "data": "email=alice.smith%40example.com&password=hunter2-secret-pw&card=4111111111111111",
        "cookies": {"PHPSESSID": "sess-cookie-value-123", "XSRF-TOKEN": "csrf-token-val-456"},
        "env": {"REMOTE_ADDR": "203.0.113.77", "HTTP_X_FORWARDED_FOR": "203.0.113.77"},
    });
    e
}

/// Builds one SDK's event for an event id.
type Shape = fn(&str) -> Value;

const LOG: &str = "2026-11-21T10:00:00Z INFO login alice.smith@example.com from 203.0.113.77\n\
    2026-11-21T10:00:01Z DEBUG POST /pay?token=qtok-789 card=4111111111111111 Authorization: Bearer bearerTok3nValue\n\
    2026-11-21T10:00:02Z WARN release shop@2.4.1 order 4111111111111112\n";

/// A line of a Windows program's log in Windows-1252 (Latin-1 here): its
/// password holds a `ü`, which as UTF-8 runs cut the value in two.
const LATIN1_LINE: &[u8] =
    b"2026-11-21T10:00:03Z INFO Gr\xfc\xdfe an J\xf6rg passwort=schl\xfcssel-geheim\n";
/// What the relay makes of it.
const LATIN1_SCRUBBED: &[u8] = b"Gr\xfc\xdfe an J\xf6rg passwort=[Filtered]\n";

/// Per envelope: the event and sixteen attachments (the log as UTF-8 twice,
/// as UTF-16 with its byte-order mark twice and without it twice, and
/// without it after lines in Russian twice, as Latin-1 twice, gzip'd
/// twice, a process's environment and command line, an image, and an
/// image gzip'd).
const ITEMS_PER_ENVELOPE: usize = 17;

/// Lines in Russian before the log, as a Windows program in Russian writes
/// its log in UTF-16 without a mark: mostly beyond ASCII.
const RUSSIAN: &str = "Ошибка оплаты заказа: пользователь не найден, повторите позже.\r\n\
                       Ошибка оплаты заказа: пользователь не найден, повторите позже.\r\n\
                       Ошибка оплаты заказа: пользователь не найден, повторите позже.\r\n\
                       Ошибка оплаты заказа: пользователь не найден, повторите позже.\r\n\
                       Ошибка оплаты заказа: пользователь не найден, повторите позже.\r\n";

/// The image of every envelope, and the image gzip'd: binary inside gzip.
const IMAGE: &[u8] = b"\x89PNG\r\n\x1a\nBINARY-MARKER";

/// A process's environment and command line as Linux writes them
/// (`/proc/self/environ`, `/proc/self/cmdline`: entries each ended by a
/// NUL), with secrets and the look-alikes that every attachment carries.
const NUL_SEPARATED: [&[&str]; 2] = [
    &[
        "HOME=/home/jdoe_user",
        "DB_PASSWORD=hunter2-secret-pw",
        "API_KEY=apikey-val-321",
        "ORDER=4111111111111112",
        "RELEASE=shop@2.4.1",
        "STARTED=2026-11-21T10:00:00Z",
        "CONTACT=alice.smith@example.com",
    ],
    &[
        "/usr/bin/shop",
        "--password",
        "hunter2-secret-pw",
        "--token=qtok-789",
        "--order",
        "4111111111111112",
        "shop@2.4.1",
        "2026-11-21T10:00:00Z",
    ],
];

fn nul_separated(entries: &[&str]) -> Vec<u8> {
    entries
        .iter()
        .flat_map(|e| [e.as_bytes(), b"\0"].concat())
        .collect()
}

fn envelope(event: &[u8], id: &str) -> Vec<u8> {
    let binary: Vec<u8> = IMAGE.to_vec();
    let mut body = format!("{{\"event_id\":\"{id}\"}}\n").into_bytes();
    body.extend_from_slice(
        format!("{{\"type\":\"event\",\"length\":{}}}\n", event.len()).as_bytes(),
    );
    body.extend_from_slice(event);
    body.extend_from_slice(
        format!("\n{{\"type\":\"attachment\",\"length\":{},\"filename\":\"app.log\",\"content_type\":\"text/plain\"}}\n", LOG.len())
            .as_bytes(),
    );
    body.extend_from_slice(LOG.as_bytes());
    // The same log as the Java, .NET and Cocoa SDKs label a file: no
    // extension that says text, `application/octet-stream`.
    body.extend_from_slice(
        format!("\n{{\"type\":\"attachment\",\"length\":{},\"filename\":\"logcat\",\"content_type\":\"application/octet-stream\"}}\n", LOG.len())
            .as_bytes(),
    );
    body.extend_from_slice(LOG.as_bytes());
    // The same log in UTF-16 with its byte-order mark, as Windows tools write
    // "Unicode" files: little-endian and labelled text, big-endian and not.
    // Then without the mark (little-endian, as .NET's `Encoding.Unicode`
    // gives bytes), labelled text and not; and so after lines in Russian.
    for (big_endian, mark, filename, content_type) in [
        (false, "\u{FEFF}", "app-utf16.log", "text/plain"),
        (true, "\u{FEFF}", "export", "application/octet-stream"),
        (false, "", "app-utf16-nomark.log", "text/plain"),
        (false, "", "export-nomark", "application/octet-stream"),
        (false, RUSSIAN, "app-ru.log", "text/plain"),
        (true, RUSSIAN, "export-ru", "application/octet-stream"),
    ] {
        let log = edge_relay::scrub::utf16_bytes(&format!("{mark}{LOG}"), big_endian);
        body.extend_from_slice(
            format!("\n{{\"type\":\"attachment\",\"length\":{},\"filename\":\"{filename}\",\"content_type\":\"{content_type}\"}}\n", log.len())
                .as_bytes(),
        );
        body.extend_from_slice(&log);
    }
    // The same log in a single-byte encoding, with a line that needs it.
    let latin1 = [LOG.as_bytes(), LATIN1_LINE].concat();
    for (filename, content_type) in [
        ("app-cp1252.log", "text/plain"),
        ("winlog", "application/octet-stream"),
    ] {
        body.extend_from_slice(
            format!("\n{{\"type\":\"attachment\",\"length\":{},\"filename\":\"{filename}\",\"content_type\":\"{content_type}\"}}\n", latin1.len())
                .as_bytes(),
        );
        body.extend_from_slice(&latin1);
    }
    // The log gzip'd, as a rotated log is attached: named and typed as gzip,
    // then typed as what it holds, without a name that says gzip. And an
    // image gzip'd: binary inside.
    let gzipped_log = gzip(LOG.as_bytes());
    for (bytes, filename, content_type) in [
        (&gzipped_log, "app.log.1.gz", "application/gzip"),
        (&gzipped_log, "logs", "text/plain"),
        (&gzip(IMAGE), "shot.png.gz", "application/x-gzip"),
    ] {
        body.extend_from_slice(
            format!("\n{{\"type\":\"attachment\",\"length\":{},\"filename\":\"{filename}\",\"content_type\":\"{content_type}\"}}\n", bytes.len())
                .as_bytes(),
        );
        body.extend_from_slice(bytes);
    }
    // The environment and the command line, labelled as files with no type.
    for (entries, filename) in NUL_SEPARATED.iter().zip(["environ", "cmdline"]) {
        let bytes = nul_separated(entries);
        body.extend_from_slice(
            format!("\n{{\"type\":\"attachment\",\"length\":{},\"filename\":\"{filename}\",\"content_type\":\"application/octet-stream\"}}\n", bytes.len())
                .as_bytes(),
        );
        body.extend_from_slice(&bytes);
    }
    body.extend_from_slice(
        format!("\n{{\"type\":\"attachment\",\"length\":{},\"filename\":\"shot.png\",\"content_type\":\"image/png\"}}\n", binary.len())
            .as_bytes(),
    );
    body.extend_from_slice(&binary);
    body.push(b'\n');
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_from_any_sdk_shape_reaches_kafka() {
    let kafka = mock_kafka();
    let text = config_text(&kafka_section(&kafka.bootstrap_servers())).replacen(
        "[[projects]]",
        "[scrub]\nsensitive_fields = [\"order_secret\"]\n\n[[projects]]",
        1,
    );
    let relay = TestRelay::start(&text).await;
    relay.wait_ready().await;
    let client = reqwest::Client::new();
    let shapes: [(&str, Shape); 6] = [
        ("python", python),
        ("javascript", javascript),
        ("java", java),
        ("go", go),
        ("dotnet", dotnet),
        ("php", php),
    ];
    // Two more that the relay scrubs as a tree, not over the text: one with
    // the `_meta` the Python SDK sends for trimmed values, one with an
    // escaped key.
    let with_meta = |id: &str| {
        let mut event = python(id);
        event["_meta"] = json!({"request": {"data": {"": {"len": 5000}}}});
        serde_json::to_string(&event).unwrap()
    };
    let escaped_key = |id: &str| {
        let text = serde_json::to_string(&javascript(id)).unwrap();
        format!(
            r#"{{"esc\u0061ped":"mail alice@example.com",{}"#,
            &text[1..]
        )
    };
    let mut events: Vec<(String, String, String)> = Vec::new();
    for (name, shape) in shapes {
        let id = new_event_id();
        events.push((
            name.into(),
            id.clone(),
            serde_json::to_string(&shape(&id)).unwrap(),
        ));
    }
    let id = new_event_id();
    events.push(("python with _meta".into(), id.clone(), with_meta(&id)));
    let id = new_event_id();
    events.push(("escaped key".into(), id.clone(), escaped_key(&id)));
    for (name, id, raw) in &events {
        serde_json::from_str::<Value>(raw).expect("each event is JSON");
        // The corpus really carries its secrets before scrubbing.
        let seeded = SECRETS.iter().filter(|s| raw.contains(**s)).count();
        assert!(seeded >= 15, "{name} carries {seeded} secrets");
        let r = client
            .post(relay.envelope_url())
            .header("x-sentry-auth", auth_header(KEY))
            .body(envelope(raw.as_bytes(), id))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
    }

    let got = consume_async(
        kafka.bootstrap_servers(),
        &["ingest-events", "ingest-attachments"],
        ITEMS_PER_ENVELOPE * events.len(),
    )
    .await;
    assert_eq!(got.len(), ITEMS_PER_ENVELOPE * events.len());
    let mut utf16_seen = 0;
    let mut latin1_seen = 0;
    let mut nul_separated_seen = 0;
    let mut gzipped_seen = 0;
    let mut saw_incoming_meta = false;
    for m in &got {
        // A gzip'd attachment leaves gzip'd: read inflated. The image inside
        // gzip leaves as it came, byte for byte.
        let mut m = m.clone();
        if m.payload.starts_with(b"\x1f\x8b\x08") {
            gzipped_seen += 1;
            let mut inflated = Vec::new();
            flate2::read::MultiGzDecoder::new(&m.payload[..])
                .read_to_end(&mut inflated)
                .expect("a gzip'd attachment leaves as gzip");
            if inflated == IMAGE {
                assert_eq!(
                    m.payload,
                    gzip(IMAGE),
                    "binary inside gzip passes untouched"
                );
                continue;
            }
            m.payload = inflated;
        }
        // The environment and command line leave with an entry per NUL, as they came.
        let entries = NUL_SEPARATED
            .iter()
            .find(|e| m.payload.starts_with(&e[0].as_bytes()[..5]));
        if let Some(entries) = entries {
            nul_separated_seen += 1;
            assert_eq!(
                m.payload.iter().filter(|&&b| b == 0).count(),
                entries.len(),
                "one NUL per entry: {:?}",
                String::from_utf8_lossy(&m.payload)
            );
            assert!(m.payload.ends_with(b"\0"));
        }
        if m.payload.ends_with(b"BINARY-MARKER") {
            assert_eq!(
                m.payload, b"\x89PNG\r\n\x1a\nBINARY-MARKER",
                "binary attachments pass untouched"
            );
            continue;
        }
        // A UTF-16 attachment leaves as UTF-16, its mark kept (or not added), and a Latin-1
        // one as Latin-1, its other bytes as they came: read as such.
        let payload = match edge_relay::scrub::utf16_text(&m.payload) {
            Some((text, _)) => {
                utf16_seen += 1;
                std::borrow::Cow::Owned(text)
            }
            None => match edge_relay::scrub::latin1_text(&m.payload) {
                Some(text) => {
                    latin1_seen += 1;
                    assert!(
                        m.payload.ends_with(LATIN1_SCRUBBED),
                        "the Latin-1 line left as {:?}",
                        String::from_utf8_lossy(&m.payload)
                    );
                    std::borrow::Cow::Owned(text)
                }
                None => String::from_utf8_lossy(&m.payload),
            },
        };
        // ASCII in UTF-16 that was not read as such has a NUL between its
        // letters: without them, a secret in it still shows.
        let flat = payload.replace('\0', "");
        for secret in SECRETS {
            assert!(
                !flat.contains(secret),
                "{secret:?} reached Kafka in {} {}: {payload:?}",
                m.topic,
                m.key
            );
        }
        for (i, look_alike) in LOOK_ALIKES.iter().enumerate() {
            // The log attachment carries only some of them.
            if m.topic == "ingest-attachments" && i != 0 && i != 1 && i != 2 {
                continue;
            }
            assert!(
                payload.contains(look_alike),
                "look-alike {look_alike:?} was scrubbed in {}: {payload}",
                m.topic
            );
        }
        if m.topic == "ingest-events" {
            let event: Value =
                serde_json::from_slice(&m.payload).expect("scrubbed events are JSON");
            assert!(
                event["_meta"].is_object(),
                "the event records what was redacted"
            );
            assert!(!event["_meta"].to_string().contains("hunter2"));
            if event.get("escaped").is_some() {
                assert_eq!(event["escaped"], "mail [email]");
            }
            if event["_meta"]["request"]["data"][""]["len"] == 5000 {
                saw_incoming_meta = true;
            }
        }
    }
    assert!(
        saw_incoming_meta,
        "an incoming _meta is kept beside the new redactions"
    );
    assert_eq!(
        utf16_seen,
        6 * events.len(),
        "UTF-16 attachments stay UTF-16"
    );
    assert_eq!(
        latin1_seen,
        2 * events.len(),
        "Latin-1 attachments stay Latin-1"
    );
    assert_eq!(
        gzipped_seen,
        3 * events.len(),
        "gzip'd attachments stay gzip'd"
    );
    assert_eq!(
        nul_separated_seen,
        2 * events.len(),
        "the environment and command line arrive, their NULs kept"
    );
    for rule in edge_relay::scrub::rules::BUILTIN_NAMES {
        assert!(
            relay.metric(
                "edge_relay_scrub_redactions_total",
                &[("project", "42"), ("rule", rule)]
            ) > 0.0,
            "rule {rule} never fired"
        );
    }
}

/// gzip'd attachments at their edges, over raw HTTP: what a gzip'd log
/// holds is judged as the log would be (by its name without `.gz`, so a log
/// with NULs and control bytes in it is still text), every member of a
/// multi-member gzip is read, one with nothing to redact leaves byte for
/// byte, gzip inside gzip is refused, and the envelope's gzip'd attachments
/// together inflate to at most `max_inflated_size` (the rest `too_large`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzipped_attachments_at_their_edges() {
    let kafka = mock_kafka();
    let text = config_text(&kafka_section(&kafka.bootstrap_servers())).replacen(
        "[[projects]]",
        "[limits]\nmax_body_size = \"1MiB\"\nmax_inflated_size = \"1MiB\"\n\
         max_attachment_size = \"512KiB\"\n\n[[projects]]",
        1,
    );
    let relay = TestRelay::start(&text).await;
    relay.wait_ready().await;
    let secret_line = "2026-12-07 login alice.smith@example.com token=qtok-789\n";
    // A crash log: a run of NULs and a bell before the secret.
    let crashed = [
        b"2026-12-07 started\n".as_slice(),
        &[0u8; 64],
        b"\x07\n",
        secret_line.as_bytes(),
    ]
    .concat();
    let two_members = [
        gzip(b"2026-12-07 first member\n"),
        gzip(secret_line.as_bytes()),
    ]
    .concat();
    let quiet = gzip(b"2026-12-07 all quiet\n");
    let nested = gzip(&gzip(secret_line.as_bytes()));
    // 400 KiB of log lines, a few KiB gzip'd: two fit in the envelope's 1 MiB, the third not.
    let large = gzip(
        secret_line
            .repeat((400 << 10) / secret_line.len())
            .as_bytes(),
    );
    let id = new_event_id();
    let event = format!("{{\"event_id\":\"{id}\",\"message\":\"with logs\"}}");
    let mut body = format!("{{\"event_id\":\"{id}\"}}\n").into_bytes();
    let mut item = |bytes: &[u8], header: String| {
        body.extend_from_slice(header.as_bytes());
        body.push(b'\n');
        body.extend_from_slice(bytes);
        body.push(b'\n');
    };
    item(
        event.as_bytes(),
        format!("{{\"type\":\"event\",\"length\":{}}}", event.len()),
    );
    let attachment = |name: &str, len: usize| {
        format!("{{\"type\":\"attachment\",\"length\":{len},\"filename\":\"{name}\",\"content_type\":\"application/gzip\"}}")
    };
    for (bytes, name) in [
        (&gzip(&crashed), "crash.log.gz"),
        (&two_members, "app.log.gz"),
        (&quiet, "quiet.log.gz"),
        (&nested, "app.log.gz.gz"),
        (&large, "big-1.log.gz"),
        (&large, "big-2.log.gz"),
        (&large, "big-3.log.gz"),
    ] {
        item(bytes, attachment(name, bytes.len()));
    }
    let r = reqwest::Client::new()
        .post(relay.envelope_url())
        .header("x-sentry-auth", auth_header(KEY))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);

    let got = consume_async(kafka.bootstrap_servers(), &["ingest-attachments"], 5).await;
    assert_eq!(
        got.len(),
        5,
        "all but the nested one and the third large one"
    );
    let inflated: Vec<String> = got
        .iter()
        .map(|m| {
            let mut text = String::new();
            flate2::read::MultiGzDecoder::new(&m.payload[..])
                .read_to_string(&mut text)
                .expect("each leaves gzip'd");
            text
        })
        .collect();
    for text in &inflated {
        assert!(!text.contains("alice.smith@example.com"), "{text:?}");
        assert!(!text.contains("qtok-789"), "{text:?}");
    }
    assert!(
        inflated
            .iter()
            .any(|t| t.contains('\u{7}') && t.contains("[email]")),
        "the crash log, its control bytes kept"
    );
    assert!(inflated
        .iter()
        .any(|t| t.starts_with("2026-12-07 first member\n") && t.contains("[email]")));
    assert!(
        got.iter().any(|m| m.payload == quiet),
        "nothing to redact: byte for byte"
    );
    for reason in ["invalid", "too_large"] {
        assert_eq!(relay.dropped("attachment", reason), 1.0, "{reason}");
    }
}
