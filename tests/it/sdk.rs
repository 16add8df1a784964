//! The real Rust `sentry` SDK, configured with a DSN that points at the relay.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use sentry::protocol::{Event, Exception, Level, Values};

use crate::support::*;

/// A client and hub of its own, so tests in parallel do not share the global hub.
fn sdk_client(dsn: &str) -> Arc<sentry::Client> {
    let options = sentry::ClientOptions::new()
        .release("shop@2.4.1")
        .environment("production")
        .traces_sample_rate(1.0);
    let mut options = sentry::apply_defaults(options);
    options.dsn = Some(dsn.parse().expect("a valid DSN"));
    // The transport (HTTP, no TLS) comes from apply_defaults; without it the client sends nothing.
    assert!(options.transport.is_some());
    Arc::new(sentry::Client::from_config(options))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_events_and_transactions_reach_kafka_once() {
    let kafka = mock_kafka();
    let relay = TestRelay::with_kafka(&kafka.bootstrap_servers()).await;
    let dsn = relay.dsn();

    // The SDK's transport is blocking; drive it from a blocking thread.
    let (event_ids, transaction_ids) = tokio::task::spawn_blocking(move || {
        let client = sdk_client(&dsn);
        let hub = sentry::Hub::new(Some(client.clone()), Arc::new(sentry::Scope::default()));
        let mut events = Vec::new();
        for i in 0..20 {
            let event = Event {
                message: Some(format!("checkout failed for order {i}")),
                level: Level::Error,
                exception: Values::from(vec![Exception {
                    ty: "CardDeclinedError".into(),
                    value: Some("declined".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            };
            events.push(hub.capture_event(event).simple().to_string());
        }
        let mut transactions = Vec::new();
        for i in 0..3 {
            let ctx = sentry::TransactionContext::new(&format!("/checkout/{i}"), "http.server");
            let tx = hub.start_transaction(ctx);
            let span = tx.start_child("db", "SELECT 1");
            span.finish();
            transactions.push(tx.get_trace_context().trace_id.to_string());
            tx.finish();
        }
        assert!(
            client.flush(Some(Duration::from_secs(30))),
            "the SDK delivered everything"
        );
        (events, transactions)
    })
    .await
    .unwrap();

    let got = consume_async(
        kafka.bootstrap_servers(),
        &["ingest-events", "ingest-transactions"],
        23,
    )
    .await;
    let events: Vec<_> = got.iter().filter(|m| m.topic == "ingest-events").collect();
    let transactions: Vec<_> = got
        .iter()
        .filter(|m| m.topic == "ingest-transactions")
        .collect();
    assert_eq!(events.len(), event_ids.len(), "every event exactly once");
    assert_eq!(
        transactions.len(),
        transaction_ids.len(),
        "every transaction exactly once"
    );
    let mut keys: Vec<_> = events.iter().map(|m| m.key.clone()).collect();
    keys.sort();
    let mut want = event_ids.clone();
    want.sort();
    assert_eq!(keys, want);
    for m in &events {
        assert_eq!(m.headers["project_id"], "42");
        assert_eq!(m.headers["item_type"], "event");
        assert_eq!(m.headers["event_id"], m.key);
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(
            body["event_id"].as_str().map(|s| s.replace('-', "")),
            Some(m.key.clone())
        );
        assert_eq!(body["release"], "shop@2.4.1");
    }
    let mut traces: Vec<String> = transactions
        .iter()
        .map(|m| {
            assert_eq!(m.headers["item_type"], "transaction");
            let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            body["contexts"]["trace"]["trace_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    traces.sort();
    let mut want = transaction_ids;
    want.sort();
    assert_eq!(traces, want);
    assert_eq!(
        relay.metric(
            "edge_relay_items_accepted_total",
            &[("project", "42"), ("category", "error")]
        ),
        20.0
    );
    assert_eq!(
        relay.metric(
            "edge_relay_requests_total",
            &[("endpoint", "envelope"), ("status", "200")]
        ),
        23.0
    );
}

/// A DSN with a key of another project is refused, and nothing reaches Kafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_with_a_wrong_key_is_refused() {
    let kafka = mock_kafka();
    let relay = TestRelay::with_kafka(&kafka.bootstrap_servers()).await;
    let dsn = format!("http://{OTHER_KEY}@{}/{PROJECT}", relay.sdk);
    tokio::task::spawn_blocking(move || {
        let client = sdk_client(&dsn);
        let hub = sentry::Hub::new(Some(client.clone()), Arc::new(sentry::Scope::default()));
        hub.capture_message("should not pass", Level::Error);
        client.flush(Some(Duration::from_secs(30)));
    })
    .await
    .unwrap();
    assert_eq!(
        relay.metric(
            "edge_relay_requests_total",
            &[("endpoint", "envelope"), ("status", "403")]
        ),
        1.0
    );
    assert_eq!(
        relay.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", "42"),
                ("category", "envelope"),
                ("reason", "unauthorized")
            ]
        ),
        1.0
    );
    assert!(
        consume_async(kafka.bootstrap_servers(), &["ingest-events"], 0)
            .await
            .is_empty()
    );
}

/// Release health: the SDK's session updates reach `ingest-sessions` with
/// their `sid` intact (Sentry refuses a session whose id is not a UUID;
/// `sid` is a sensitive word in other keys, such as `connect.sid`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_sessions_keep_their_id() {
    let kafka = mock_kafka();
    let relay = TestRelay::with_kafka(&kafka.bootstrap_servers()).await;
    let dsn = relay.dsn();
    tokio::task::spawn_blocking(move || {
        let client = sdk_client(&dsn);
        let hub = sentry::Hub::new(Some(client.clone()), Arc::new(sentry::Scope::default()));
        hub.start_session();
        hub.end_session();
        assert!(
            client.flush(Some(Duration::from_secs(30))),
            "the SDK delivered everything"
        );
    })
    .await
    .unwrap();
    let got = consume_async(kafka.bootstrap_servers(), &["ingest-sessions"], 1).await;
    let session: serde_json::Value =
        serde_json::from_slice(&got[0].payload).expect("a session is JSON");
    let sid = session["sid"].as_str().expect("a session has a sid");
    assert!(uuid::Uuid::parse_str(sid).is_ok(), "{session}");
    assert_eq!(session["attrs"]["release"], "shop@2.4.1");
}

/// A rotated log the SDK attaches gzip'd (`app.log.1.gz`) leaves gzip'd and
/// scrubbed. A gzip'd attachment the relay cannot scrub is refused and
/// counted, never forwarded: one that does not inflate (`invalid`), and one
/// that inflates past `max_attachment_size` (`too_large`). Their events go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_gzipped_log_attachments_are_scrubbed_or_refused() {
    let kafka = mock_kafka();
    let text = config_text(&kafka_section(&kafka.bootstrap_servers())).replacen(
        "[[projects]]",
        "[limits]\nmax_attachment_size = \"64KiB\"\n\n[[projects]]",
        1,
    );
    let relay = TestRelay::start(&text).await;
    relay.wait_ready().await;
    let dsn = relay.dsn();

    let log = "2026-12-07T10:00:00Z INFO login alice.smith@example.com token=qtok-789\n\
               2026-12-07T10:00:01Z INFO order 4111111111111112 shipped\n";
    let good = gzip(log.as_bytes());
    let truncated = good[..good.len() - 12].to_vec();
    // 400 KiB of log lines: a few KiB gzip'd, past the limit inflated.
    let large = gzip(log.repeat(400 << 10 >> 7).as_bytes());
    assert!(large.len() < 64 << 10);
    let attachments = [
        (good.clone(), "app.log.1.gz"),
        (truncated, "app.log.2.gz"),
        (large, "app.log.3.gz"),
    ];
    let event_ids = tokio::task::spawn_blocking(move || {
        let client = sdk_client(&dsn);
        let hub = sentry::Hub::new(Some(client.clone()), Arc::new(sentry::Scope::default()));
        let mut ids = Vec::new();
        for (buffer, filename) in attachments {
            let attachment = sentry::protocol::Attachment {
                buffer,
                filename: filename.into(),
                content_type: Some("application/gzip".into()),
                ty: None,
            };
            let id = hub.with_scope(
                |scope| scope.add_attachment(attachment),
                || hub.capture_message(&format!("with {filename}"), Level::Error),
            );
            ids.push(id.simple().to_string());
        }
        assert!(client.flush(Some(Duration::from_secs(30))));
        ids
    })
    .await
    .unwrap();

    let got = consume_async(
        kafka.bootstrap_servers(),
        &["ingest-events", "ingest-attachments"],
        4,
    )
    .await;
    let events = got.iter().filter(|m| m.topic == "ingest-events").count();
    assert_eq!(events, 3, "every event goes on");
    let attachments: Vec<_> = got
        .iter()
        .filter(|m| m.topic == "ingest-attachments")
        .collect();
    assert_eq!(
        attachments.len(),
        1,
        "only the attachment that could be scrubbed"
    );
    assert_eq!(attachments[0].key, event_ids[0]);
    assert!(
        attachments[0].payload.starts_with(b"\x1f\x8b\x08"),
        "still gzip"
    );
    let mut inflated = String::new();
    flate2::read::MultiGzDecoder::new(&attachments[0].payload[..])
        .read_to_string(&mut inflated)
        .unwrap();
    assert_eq!(
        inflated,
        "2026-12-07T10:00:00Z INFO login [email] token=[Filtered]\n\
         2026-12-07T10:00:01Z INFO order 4111111111111112 shipped\n"
    );
    for reason in ["invalid", "too_large"] {
        assert_eq!(relay.dropped("attachment", reason), 1.0, "{reason}");
    }
    assert!(
        relay.metric(
            "edge_relay_scrub_redactions_total",
            &[("project", "42"), ("rule", "email")]
        ) >= 1.0
    );
}

/// A logged message's parameters and a console line's arguments, as SDKs
/// send them beside the joined text: the Rust SDK's `logentry` (template
/// and positional parameters) and breadcrumbs with `data.arguments`, as
/// the browser and Node SDKs record `console.log("token:", t)`. The
/// secrets among them never reach Kafka; the other parameters stay. The
/// event carries a log in Russian in UTF-16 without a byte-order mark,
/// which leaves scrubbed and in UTF-16.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_logged_parameters_and_console_arguments_are_scrubbed() {
    let kafka = mock_kafka();
    let relay = TestRelay::with_kafka(&kafka.bootstrap_servers()).await;
    let dsn = relay.dsn();
    let event_id = tokio::task::spawn_blocking(move || {
        let client = sdk_client(&dsn);
        let hub = sentry::Hub::new(Some(client.clone()), Arc::new(sentry::Scope::default()));
        hub.add_breadcrumb(sentry::Breadcrumb {
            category: Some("console".into()),
            message: Some("token: C0ns0leTok3n99".into()),
            data: [(
                "arguments".to_owned(),
                serde_json::json!(["token:", "C0ns0leTok3n99"]),
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        });
        // SQLAlchemy's message for a failed INSERT, with its parameters.
        let sql_error = "(sqlite3.IntegrityError) UNIQUE constraint failed: users.email\n\
            [SQL: INSERT INTO users (email, password) VALUES (?, ?)]\n\
            [parameters: ('bob@example.com', 'SqlPa55word')]";
        let event = Event {
            exception: Values::from(vec![Exception {
                ty: "IntegrityError".into(),
                value: Some(sql_error.into()),
                ..Default::default()
            }]),
            logentry: Some(sentry::protocol::LogEntry {
                message: "login failed password=%s for %s (attempt {})".into(),
                params: vec!["Hunt3rTwo!".into(), "bob".into(), 3.into()],
            }),
            level: Level::Error,
            ..Default::default()
        };
        let log = "Ошибка входа пользователя, повторите попытку позже.\r\n".repeat(5)
            + "2026-12-07 10:00 вход alice.smith@example.com token=qtok-789\r\n";
        let attachment = sentry::protocol::Attachment {
            buffer: edge_relay::scrub::utf16_bytes(&log, false),
            filename: "app-ru.log".into(),
            content_type: Some("application/octet-stream".into()),
            ty: None,
        };
        let id = hub.with_scope(
            |scope| scope.add_attachment(attachment),
            || hub.capture_event(event),
        );
        let id = id.simple().to_string();
        assert!(client.flush(Some(Duration::from_secs(30))));
        id
    })
    .await
    .unwrap();

    let attachments = consume_async(kafka.bootstrap_servers(), &["ingest-attachments"], 1).await;
    assert_eq!(attachments.len(), 1);
    let (log, big_endian) =
        edge_relay::scrub::utf16_text(&attachments[0].payload).expect("left as UTF-16");
    assert!(!big_endian);
    assert!(
        log.ends_with("2026-12-07 10:00 вход [email] token=[Filtered]\r\n"),
        "{log}"
    );
    let got = consume_async(kafka.bootstrap_servers(), &["ingest-events"], 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].key, event_id);
    let text = String::from_utf8_lossy(&got[0].payload);
    for secret in [
        "Hunt3rTwo!",
        "C0ns0leTok3n99",
        "SqlPa55word",
        "bob@example.com",
    ] {
        assert!(!text.contains(secret), "{secret} reached Kafka: {text}");
    }
    let event: serde_json::Value = serde_json::from_slice(&got[0].payload).unwrap();
    assert_eq!(
        event["logentry"]["params"],
        serde_json::json!(["[Filtered]", "bob", 3])
    );
    assert!(event["exception"]["values"][0]["value"]
        .as_str()
        .unwrap()
        .ends_with("[parameters: ('[email]', '[Filtered]')]"));
    let crumb = &event["breadcrumbs"]["values"][0];
    assert_eq!(crumb["message"], "token: [Filtered]");
    assert_eq!(
        crumb["data"]["arguments"],
        serde_json::json!(["token:", "[Filtered]"])
    );
}

/// Capability tokens in URL paths (a password-reset link, an invitation,
/// a webhook) reach Kafka redacted from where the SDK puts them: the
/// event's `request.url`, an HTTP breadcrumb, a route-less transaction's
/// name and its HTTP span's description; a link's one-time code in its
/// query; a URL in JSON with escaped slashes held in a string. So do a
/// database URL's password with a `/` in it and the address in Java's
/// `host/address:port`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_tokens_in_urls_are_scrubbed() {
    const RESET: &str = "c3k2lp-8f1e2d3c4b5a6978e0d1";
    const DB_PASSWORD: &str = "Xq7/k9+zR2=";
    const CLIENT: &str = "203.0.113.77";
    const CONFIRM: &str = "Q2ZESjhBTm1mSzd0VG5i";
    const ESCAPED_INVITE: &str = "Qk3vZ8pLmN2xR7tY9wE4uI";
    const INVITE: &str = "k8Jd92LmQp4xZr7Tn3Vb6Wc1";
    const ZAPIER: &str = "hooks.zapier.com/hooks/catch/1234567/3abcdef";
    let kafka = mock_kafka();
    let relay = TestRelay::with_kafka(&kafka.bootstrap_servers()).await;
    let dsn = relay.dsn();
    tokio::task::spawn_blocking(move || {
        let client = sdk_client(&dsn);
        let hub = sentry::Hub::new(Some(client.clone()), Arc::new(sentry::Scope::default()));
        hub.add_breadcrumb(sentry::Breadcrumb {
            ty: "http".into(),
            category: Some("http".into()),
            data: [
                ("method".to_owned(), "GET".into()),
                (
                    "url".to_owned(),
                    format!("https://app.example.com/invite/{INVITE}/accept").into(),
                ),
                ("status_code".to_owned(), 200.into()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        });
        hub.add_breadcrumb(sentry::Breadcrumb {
            ty: "http".into(),
            category: Some("http".into()),
            data: [(
                "url".to_owned(),
                format!("https://shop.example.com/Account/ConfirmEmail?userId=42&code={CONFIRM}")
                    .into(),
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        });
        // A PHP service's JSON answer, its slashes escaped, logged as a string.
        let answer =
            format!(r#"{{"invite_url":"https:\/\/app.example.com\/invite\/{ESCAPED_INVITE}"}}"#);
        let event = Event {
            extra: [("answer".to_owned(), answer.into())].into_iter().collect(),
            message: Some("password reset failed".into()),
            exception: Values::from(vec![Exception {
                ty: "OperationalError".into(),
                value: Some(format!(
                    "cannot reach postgres://app:{DB_PASSWORD}@db.internal:5432/orders \
                     from client/{CLIENT}:41822"
                )),
                ..Default::default()
            }]),
            request: Some(sentry::protocol::Request {
                url: Some(
                    format!("https://app.example.com/accounts/reset/MTIz/{RESET}/")
                        .parse()
                        .unwrap(),
                ),
                method: Some("GET".into()),
                ..Default::default()
            }),
            level: Level::Error,
            ..Default::default()
        };
        hub.capture_event(event);
        let name = format!("/accounts/reset/MTIz/{RESET}/");
        let tx = hub.start_transaction(sentry::TransactionContext::new(&name, "http.server"));
        let span = tx.start_child("http.client", &format!("POST https://{ZAPIER}/"));
        span.finish();
        tx.finish();
        assert!(client.flush(Some(Duration::from_secs(30))));
    })
    .await
    .unwrap();

    let got = consume_async(
        kafka.bootstrap_servers(),
        &["ingest-events", "ingest-transactions"],
        2,
    )
    .await;
    assert_eq!(got.len(), 2);
    for m in &got {
        let text = String::from_utf8_lossy(&m.payload);
        for secret in [
            RESET,
            INVITE,
            ZAPIER,
            DB_PASSWORD,
            CLIENT,
            CONFIRM,
            ESCAPED_INVITE,
        ] {
            assert!(!text.contains(secret), "{secret} reached Kafka: {text}");
        }
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        if m.topic == "ingest-events" {
            assert_eq!(
                body["request"]["url"],
                "https://app.example.com/accounts/reset/MTIz/[urltoken]/"
            );
            assert_eq!(
                body["breadcrumbs"]["values"][0]["data"]["url"],
                "https://app.example.com/invite/[urltoken]/accept"
            );
            assert_eq!(
                body["breadcrumbs"]["values"][1]["data"]["url"],
                "https://shop.example.com/Account/ConfirmEmail?userId=42&code=[Filtered]"
            );
            assert_eq!(
                body["extra"]["answer"],
                r#"{"invite_url":"https://app.example.com/invite/[urltoken]"}"#
            );
            assert_eq!(
                body["exception"]["values"][0]["value"],
                "cannot reach postgres://[urlauth]@db.internal:5432/orders \
                 from client/[ip]:41822"
            );
        } else {
            assert_eq!(body["transaction"], "/accounts/reset/MTIz/[urltoken]/");
            assert_eq!(body["spans"][0]["description"], "POST https://[cloudkey]/");
        }
    }
    assert!(
        relay.metric(
            "edge_relay_scrub_redactions_total",
            &[("project", "42"), ("rule", "urltoken")]
        ) >= 3.0
    );
}

/// A private JSON Web Key in `extra` and in a logged string, a Kubernetes
/// Secret's manifest, a YAML config
/// dump under a `secrets:` key, an SSN written with spaces after the word,
/// and an invitation token three segments after its word: none reaches
/// Kafka, and what is public beside them does (the key's modulus, the
/// dump's keys, the invitation's path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_private_keys_config_dumps_and_named_ssns_are_scrubbed() {
    const D: &str = "X4cTteJY_gn4FYPsXB8rdXix5vwsg1FLN5E3EaG6RJoVH-HLLKD9M7dx5oo7GURk";
    const P: &str = "83i-7IvMGXoMXCskv73TKr8637FiO7Z27zv8oj6pbWUQyLPQBQxtPVnwD20R";
    const N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86z";
    const EC_D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";
    const API_KEY: &str = "pk9X8c7V6b5N4m3Lq2";
    const DB_PASS: &str = "Correct-Horse-42";
    const SSN: &str = "123 45 6789";
    const INVITE: &str = "Xq7k9Pz2Lm4Nw8Rt";
    const TLS_KEY: &str = "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0t";
    let kafka = mock_kafka();
    let relay = TestRelay::with_kafka(&kafka.bootstrap_servers()).await;
    let dsn = relay.dsn();
    tokio::task::spawn_blocking(move || {
        let client = sdk_client(&dsn);
        let hub = sentry::Hub::new(Some(client.clone()), Arc::new(sentry::Scope::default()));
        hub.add_breadcrumb(sentry::Breadcrumb {
            category: Some("auth".into()),
            message: Some(format!(
                r#"loaded signing key {{"kty":"EC","crv":"P-256","x":"{N}","d":"{EC_D}"}}"#
            )),
            ..Default::default()
        });
        let jwk = serde_json::json!({"kty": "RSA", "n": N, "e": "AQAB", "d": D, "p": P,
            "q": P, "dp": P, "dq": P, "qi": P});
        let config = format!(
            "service: billing\nsecrets:\n  api: {API_KEY}\n  db:\n    - {DB_PASS}\nreplicas: 3\n"
        );
        let manifest = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "web-tls"}, "data": {"tls.key": TLS_KEY}});
        let event = Event {
            extra: [
                ("jwk".to_owned(), jwk),
                ("config".to_owned(), config.into()),
                ("manifest".to_owned(), manifest),
            ]
            .into_iter()
            .collect(),
            message: Some(format!("customer ssn {SSN} on file; invite failed")),
            request: Some(sentry::protocol::Request {
                url: Some(
                    format!("https://app.example.com/invite/acme/team/{INVITE}")
                        .parse()
                        .unwrap(),
                ),
                method: Some("GET".into()),
                ..Default::default()
            }),
            level: Level::Error,
            ..Default::default()
        };
        hub.capture_event(event);
        assert!(client.flush(Some(Duration::from_secs(30))));
    })
    .await
    .unwrap();

    let got = consume_async(kafka.bootstrap_servers(), &["ingest-events"], 1).await;
    assert_eq!(got.len(), 1);
    let text = String::from_utf8_lossy(&got[0].payload);
    for secret in [D, P, EC_D, API_KEY, DB_PASS, SSN, INVITE, TLS_KEY] {
        assert!(!text.contains(secret), "{secret} reached Kafka: {text}");
    }
    let body: serde_json::Value = serde_json::from_slice(&got[0].payload).unwrap();
    let key = &body["extra"]["jwk"];
    assert_eq!(
        (key["n"].as_str(), key["e"].as_str()),
        (Some(N), Some("AQAB"))
    );
    assert_eq!(
        (key["d"].as_str(), key["qi"].as_str()),
        (Some("[Filtered]"), Some("[Filtered]"))
    );
    assert_eq!(
        body["extra"]["config"],
        "service: billing\nsecrets:\n  api: [Filtered]\n  db:\n    - [Filtered]\nreplicas: 3\n"
    );
    assert_eq!(
        body["logentry"]["formatted"]
            .as_str()
            .or(body["message"].as_str()),
        Some("customer ssn *** ** **** on file; invite failed")
    );
    assert_eq!(
        body["request"]["url"],
        "https://app.example.com/invite/acme/team/[urltoken]"
    );
    assert_eq!(body["extra"]["manifest"]["metadata"]["name"], "web-tls");
    let crumb = body["breadcrumbs"]["values"][0]["message"]
        .as_str()
        .unwrap();
    assert!(
        crumb.contains(N) && crumb.contains(r#""d":"[pemkey]""#),
        "{crumb}"
    );
    for rule in ["pemkey", "usssn", "urltoken", "password"] {
        assert!(
            relay.metric(
                "edge_relay_scrub_redactions_total",
                &[("project", "42"), ("rule", rule)]
            ) >= 1.0,
            "{rule}"
        );
    }
}

/// A JSON attachment that a tree cannot hold (nested deeper than the
/// event's limit, as an app's state dump may be) is scrubbed string by
/// string: it reaches Kafka as the same JSON with only its secrets
/// changed, none of them run across a quote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_deep_json_attachments_stay_json() {
    let kafka = mock_kafka();
    let relay = TestRelay::with_kafka(&kafka.bootstrap_servers()).await;
    let dsn = relay.dsn();
    let mut state = serde_json::json!({"user": "mail alice@example.com"});
    for _ in 0..200 {
        state = serde_json::json!({"child": state});
    }
    let state = serde_json::json!([
        state,
        {"origin": "https://app.example.com", "path": "/account/settings", "user": "bob"},
        {"note": "sent \"https://app.example.com/reset/MTIz/c3k2lp-8f1e2d3c4b5a6978e0d1\" to bob"},
        {"name": "password", "value": "Hunt3rTwo!"},
        {"card": 4111111111111111u64},
    ])
    .to_string();
    let want = state
        .replace("mail alice@example.com", "mail [email]")
        .replace("c3k2lp-8f1e2d3c4b5a6978e0d1", "[urltoken]")
        .replace("\"Hunt3rTwo!\"", "\"[Filtered]\"")
        .replace("4111111111111111", "\"****************\"");
    let sent = state.clone();
    tokio::task::spawn_blocking(move || {
        let client = sdk_client(&dsn);
        let hub = sentry::Hub::new(Some(client.clone()), Arc::new(sentry::Scope::default()));
        let attachment = sentry::protocol::Attachment {
            buffer: sent.into_bytes(),
            filename: "state.json".into(),
            content_type: Some("application/json".into()),
            ty: None,
        };
        hub.with_scope(
            |scope| scope.add_attachment(attachment),
            || hub.capture_message("state dump", Level::Error),
        );
        assert!(client.flush(Some(Duration::from_secs(30))));
    })
    .await
    .unwrap();
    let got = consume_async(kafka.bootstrap_servers(), &["ingest-attachments"], 1).await;
    assert_eq!(got.len(), 1);
    let out = String::from_utf8(got[0].payload.clone()).unwrap();
    assert!(
        out == want,
        "not the same JSON with only its secrets changed: {out}"
    );
}
