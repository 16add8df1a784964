//! Quotas, sampling and fingerprints through the real relay, into the mock
//! cluster, with the real Rust SDK backing off after a 429.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

fn with_project_settings(kafka: &str, settings: &str) -> String {
    // The test config's first project is 42; its tables follow it directly.
    config_text(&kafka_section(kafka)).replacen(
        &format!("public_keys = [\"{KEY}\"]\n"),
        &format!("public_keys = [\"{KEY}\"]\n{settings}"),
        1,
    )
}

fn event_envelope(id: &str, event: serde_json::Value) -> Vec<u8> {
    let event = serde_json::to_vec(&event).unwrap();
    let mut body = format!(
        "{{\"event_id\":\"{id}\"}}\n{{\"type\":\"event\",\"length\":{}}}\n",
        event.len()
    )
    .into_bytes();
    body.extend_from_slice(&event);
    body.push(b'\n');
    body
}

fn transaction_envelope(id: &str, trace_id: &str) -> Vec<u8> {
    let tx = serde_json::to_vec(&serde_json::json!({
        "event_id": id, "type": "transaction", "transaction": "/checkout",
        "contexts": {"trace": {"trace_id": trace_id, "span_id": "00f067aa0ba902b7"}}, "spans": []
    }))
    .unwrap();
    let mut body = format!(
        "{{\"event_id\":\"{id}\",\"trace\":{{\"trace_id\":\"{trace_id}\",\"public_key\":\"{KEY}\",\"sample_rate\":\"0.5\"}}}}\n{{\"type\":\"transaction\",\"length\":{}}}\n",
        tx.len()
    )
    .into_bytes();
    body.extend_from_slice(&tx);
    body.push(b'\n');
    body
}

/// A relay on a fresh mock cluster, with these settings for project 42, ready.
async fn relay_with_settings(
    settings: &str,
) -> (
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    TestRelay,
) {
    let kafka = mock_kafka();
    let relay =
        TestRelay::start(&with_project_settings(&kafka.bootstrap_servers(), settings)).await;
    relay.wait_ready().await;
    (kafka, relay)
}

async fn post(client: &reqwest::Client, relay: &TestRelay, body: Vec<u8>) -> reqwest::Response {
    client
        .post(relay.envelope_url())
        .header("x-sentry-auth", auth_header(KEY))
        .body(body)
        .send()
        .await
        .unwrap()
}

/// After a 429 naming the error category, the Rust SDK sends no more errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_backs_off_after_a_429() {
    let (kafka, relay) = relay_with_settings(
        "[[projects.quotas]]\ncategories = [\"error\"]\nlimit = 1\nwindow_secs = 60\n",
    )
    .await;
    let dsn = relay.dsn();
    tokio::task::spawn_blocking(move || {
        let mut options = sentry::apply_defaults(sentry::ClientOptions::new());
        options.dsn = Some(dsn.parse().unwrap());
        let client = Arc::new(sentry::Client::from_config(options));
        let hub = sentry::Hub::new(Some(client.clone()), Arc::new(sentry::Scope::default()));
        for i in 0..5 {
            hub.capture_message(&format!("failure {i}"), sentry::Level::Error);
            // One at a time, so the SDK has read each answer before the next.
            client.flush(Some(Duration::from_secs(30)));
        }
    })
    .await
    .unwrap();
    assert_eq!(
        relay.metric(
            "edge_relay_requests_total",
            &[("endpoint", "envelope"), ("status", "429")]
        ),
        1.0
    );
    assert_eq!(
        relay.metric(
            "edge_relay_items_accepted_total",
            &[("project", "42"), ("category", "error")]
        ),
        1.0
    );
    assert_eq!(
        relay.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", "42"),
                ("category", "error"),
                ("reason", "rate_limited")
            ]
        ),
        1.0,
        "three of five events never reached the relay: the SDK obeyed the header"
    );
    // And the SDK says so itself, in its client reports.
    assert!(
        relay.metric(
            "edge_relay_client_discarded_total",
            &[
                ("project", "42"),
                ("category", "error"),
                ("reason", "ratelimit_backoff")
            ]
        ) >= 2.0
    );
    let got = consume_async(kafka.bootstrap_servers(), &["ingest-events"], 1).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].headers.contains_key("fingerprint"));
}

/// Limited items are dropped and counted, the rest of the envelope goes
/// through, and the answer carries the headers SDKs parse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_headers_and_partial_envelopes() {
    let (kafka, relay) = relay_with_settings(
        "[[projects.quotas]]\ncategories = [\"attachment\"]\nlimit = 0\nwindow_secs = 30\n",
    )
    .await;
    let client = reqwest::Client::new();
    let id = new_event_id();
    let r = post(&client, &relay, envelope_with_attachment(&id, b"attached")).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "30");
    assert_eq!(
        r.headers()["x-sentry-rate-limits"],
        "30:attachment:project:quota_exceeded"
    );
    let got = consume_async(
        kafka.bootstrap_servers(),
        &["ingest-events", "ingest-attachments"],
        1,
    )
    .await;
    assert_eq!(got.len(), 1, "the event went through");
    assert_eq!(got[0].topic, "ingest-events");
    assert_eq!(
        relay.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", "42"),
                ("category", "attachment"),
                ("reason", "rate_limited")
            ]
        ),
        1.0
    );
}

/// Spike protection per issue: one error storming past its fingerprint's
/// quota is dropped, other errors pass, and the SDK is not told to back off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprint_quotas_stop_one_storm_only() {
    let (kafka, relay) = relay_with_settings("[[projects.quotas]]\ncategories = [\"error\"]\nlimit = 2\nwindow_secs = 3600\nscope = \"fingerprint\"\n").await;
    let client = reqwest::Client::new();
    for i in 0..5 {
        let event = serde_json::json!({"message": format!("user {i} not found")});
        let r = post(&client, &relay, event_envelope(&new_event_id(), event)).await;
        assert_eq!(r.status(), 200, "storm event {i}");
        assert!(r.headers().get("x-sentry-rate-limits").is_none());
    }
    let other = serde_json::json!({"message": "payment service down"});
    assert_eq!(
        post(&client, &relay, event_envelope(&new_event_id(), other))
            .await
            .status(),
        200
    );
    let got = consume_async(kafka.bootstrap_servers(), &["ingest-events"], 3).await;
    assert_eq!(got.len(), 3, "two of the storm and the other error");
    let storm: Vec<_> = got
        .iter()
        .filter(|m| String::from_utf8_lossy(&m.payload).contains("not found"))
        .collect();
    assert_eq!(storm.len(), 2);
    assert_eq!(
        storm[0].headers["fingerprint"], storm[1].headers["fingerprint"],
        "the storm groups together"
    );
    assert_eq!(
        relay.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", "42"),
                ("category", "error"),
                ("reason", "rate_limited")
            ]
        ),
        3.0
    );
}

/// Two relays keep or drop the same traces; kept ones carry the rate they
/// survived (the SDK's 0.5 times the relay's), dropped ones are `sampled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_sampled_per_trace_consistently_across_relays() {
    let kafka_a = mock_kafka();
    let kafka_b = mock_kafka();
    let settings = "[projects.sampling]\ntransaction_rate = 0.5\n";
    let relay_a = TestRelay::start(&with_project_settings(
        &kafka_a.bootstrap_servers(),
        settings,
    ))
    .await;
    let relay_b = TestRelay::start(&with_project_settings(
        &kafka_b.bootstrap_servers(),
        settings,
    ))
    .await;
    relay_a.wait_ready().await;
    relay_b.wait_ready().await;
    let client = reqwest::Client::new();
    let traces: Vec<String> = (0..40).map(|_| new_event_id()).collect();
    for trace in &traces {
        for relay in [&relay_a, &relay_b] {
            let r = post(&client, relay, transaction_envelope(&new_event_id(), trace)).await;
            assert_eq!(r.status(), 200, "sampled-out items are not errors");
        }
    }
    let dropped = |relay: &TestRelay| {
        relay.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", "42"),
                ("category", "transaction"),
                ("reason", "sampled"),
            ],
        )
    };
    let kept_a = 40.0 - dropped(&relay_a);
    assert!(kept_a > 5.0 && kept_a < 35.0, "about half kept: {kept_a}");
    assert_eq!(dropped(&relay_a), dropped(&relay_b));
    let got_a = consume_async(
        kafka_a.bootstrap_servers(),
        &["ingest-transactions"],
        kept_a as usize,
    )
    .await;
    let got_b = consume_async(
        kafka_b.bootstrap_servers(),
        &["ingest-transactions"],
        kept_a as usize,
    )
    .await;
    let traces_of = |got: &[Consumed]| {
        let mut t: Vec<String> = got
            .iter()
            .map(|m| {
                assert_eq!(m.headers["sample_rate"], "0.25");
                let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
                v["contexts"]["trace"]["trace_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        t.sort();
        t
    };
    assert_eq!(
        traces_of(&got_a),
        traces_of(&got_b),
        "the same traces survive on both relays"
    );
}

/// For every category, items received = accepted + dropped, and the metrics,
/// the outcomes topic and Kafka's contents agree exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_outcomes_topic_and_kafka_agree() {
    use std::collections::BTreeMap;
    let kafka = mock_kafka();
    kafka.create_topic("outcomes", 1, 1).unwrap();
    let text = with_project_settings(
        &kafka.bootstrap_servers(),
        "[[projects.quotas]]\ncategories = [\"transaction\"]\nlimit = 0\nwindow_secs = 60\n\
         [projects.sampling]\nerror_rate = 1.0\n[[projects.sampling.rules]]\nenvironment = \"staging\"\nrate = 0.0\n",
    ) + "[outcomes]\nwindow = \"1s\"\n";
    let relay = TestRelay::start(&text).await;
    relay.wait_ready().await;
    let client = reqwest::Client::new();
    // What the test sends, per category: (received, accepted).
    // 3 events with an attachment each: accepted.
    for _ in 0..3 {
        assert_eq!(
            post(
                &client,
                &relay,
                envelope_with_attachment(&new_event_id(), b"att")
            )
            .await
            .status(),
            200
        );
    }
    // 2 staging events with an attachment each: sampled out, attachments follow.
    for _ in 0..2 {
        let event = serde_json::json!({"message": "x", "environment": "staging"});
        let mut body = event_envelope(&new_event_id(), event);
        body.extend_from_slice(b"{\"type\":\"attachment\",\"length\":3}\natt\n");
        assert_eq!(post(&client, &relay, body).await.status(), 200);
    }
    // 2 transactions: rate limited (limit 0).
    for _ in 0..2 {
        let r = post(
            &client,
            &relay,
            transaction_envelope(&new_event_id(), &new_event_id()),
        )
        .await;
        assert_eq!(r.status(), 429);
    }
    // 1 invalid event with its attachment: both dropped.
    let mut mixed = b"{}\n{\"type\":\"event\"}\n{broken\n".to_vec();
    mixed.extend_from_slice(b"{\"type\":\"attachment\",\"length\":2}\nok\n");
    assert_eq!(post(&client, &relay, mixed).await.status(), 400);
    // 1 envelope with an unknown key: refused whole.
    let r = client
        .post(relay.envelope_url())
        .header(
            "x-sentry-auth",
            auth_header("ffffffffffffffffffffffffffffffff"),
        )
        .body(envelope_with_attachment(&new_event_id(), b"x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let expected_received: BTreeMap<&str, f64> = [
        ("error", 6.0),
        ("attachment", 6.0),
        ("transaction", 2.0),
        ("envelope", 1.0),
    ]
    .into();
    let expected_accepted: BTreeMap<&str, f64> = [("error", 3.0), ("attachment", 3.0)].into();

    // The shutdown produces every outcome of open windows too.
    let registry = relay.registry.clone();
    relay.stop(Duration::from_secs(10)).await;
    let outcomes = consume_async(kafka.bootstrap_servers(), &["outcomes"], 1).await;
    let mut from_topic: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    for m in &outcomes {
        let r: edge_relay::outcome::OutcomeRecord = serde_json::from_slice(&m.payload).unwrap();
        let key = (
            r.category.clone(),
            r.outcome.clone(),
            r.reason.clone().unwrap_or_default(),
        );
        *from_topic.entry(key).or_default() += r.quantity as f64;
        assert!(humantime::parse_rfc3339(&r.timestamp).is_ok());
    }
    for (category, received) in &expected_received {
        // The unknown key was sent to project 42: refused there, as a whole envelope.
        let project = "42";
        let accepted = metric(
            &registry,
            "edge_relay_items_accepted_total",
            &[("project", project), ("category", category)],
        );
        assert_eq!(
            accepted,
            expected_accepted.get(category).copied().unwrap_or(0.0),
            "{category} accepted"
        );
        let mut dropped = 0.0;
        for reason in edge_relay::outcome::DropReason::ALL.map(|r| r.as_str()) {
            let n = metric(
                &registry,
                "edge_relay_items_dropped_total",
                &[
                    ("project", project),
                    ("category", category),
                    ("reason", reason),
                ],
            );
            let topic = from_topic
                .get(&(category.to_string(), "dropped".into(), reason.into()))
                .copied()
                .unwrap_or(0.0);
            assert_eq!(
                n, topic,
                "{category}/{reason}: metric and outcomes topic agree"
            );
            dropped += n;
        }
        let topic_accepted = from_topic
            .get(&(category.to_string(), "accepted".into(), String::new()))
            .copied()
            .unwrap_or(0.0);
        assert_eq!(
            accepted, topic_accepted,
            "{category}: accepted in metric and topic"
        );
        assert_eq!(
            accepted + dropped,
            *received,
            "{category}: received = accepted + dropped"
        );
    }
    // Kafka's contents: exactly the accepted items.
    let items = consume_async(
        kafka.bootstrap_servers(),
        &["ingest-events", "ingest-attachments", "ingest-transactions"],
        6,
    )
    .await;
    assert_eq!(
        items.iter().filter(|m| m.topic == "ingest-events").count(),
        3
    );
    assert_eq!(
        items
            .iter()
            .filter(|m| m.topic == "ingest-attachments")
            .count(),
        3
    );
    assert_eq!(
        items
            .iter()
            .filter(|m| m.topic == "ingest-transactions")
            .count(),
        0
    );
}

/// An envelope's attachments and user report belong to its event: when the
/// event is dropped (over its quota, or invalid) they are dropped with it,
/// for the same reason, wherever they stand in the envelope; items that do
/// not belong to it (a session) keep their own fate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_of_a_dropped_event_are_dropped_with_it() {
    let (kafka, relay) = relay_with_settings(
        "[[projects.quotas]]\ncategories = [\"error\"]\nlimit = 1\nwindow_secs = 60\n",
    )
    .await;
    let client = reqwest::Client::new();
    let envelope = |id: &str, event: &[u8]| {
        let report = serde_json::to_vec(&serde_json::json!({
            "event_id": id, "name": "Jane", "comments": "it broke"
        }))
        .unwrap();
        let session = br#"{"sid":"7c7b6e2a1c3e4b5f8a9d0e1f2a3b4c5d","init":true,"status":"ok","attrs":{"release":"app@1.0"}}"#;
        let mut body = format!("{{\"event_id\":\"{id}\"}}\n").into_bytes();
        for (header, payload) in [
            (
                "{\"type\":\"attachment\",\"filename\":\"log.txt\",\"length\":5}".to_string(),
                &b"hello"[..],
            ),
            (
                format!("{{\"type\":\"event\",\"length\":{}}}", event.len()),
                event,
            ),
            (
                format!("{{\"type\":\"user_report\",\"length\":{}}}", report.len()),
                &report,
            ),
            (
                format!("{{\"type\":\"session\",\"length\":{}}}", session.len()),
                &session[..],
            ),
        ] {
            body.extend_from_slice(header.as_bytes());
            body.push(b'\n');
            body.extend_from_slice(payload);
            body.push(b'\n');
        }
        body
    };
    let event = |id: &str| {
        serde_json::to_vec(&serde_json::json!({"event_id": id, "message": "m"})).unwrap()
    };

    // Within the quota: all four go through.
    let id = new_event_id();
    let r = post(&client, &relay, envelope(&id, &event(&id))).await;
    assert_eq!(r.status(), 200);
    for category in ["error", "attachment", "user_report", "session"] {
        assert_eq!(
            relay.metric(
                "edge_relay_items_accepted_total",
                &[("project", "42"), ("category", category)]
            ),
            1.0,
            "{category}"
        );
    }

    // Over the error quota: the attachment (before the event) and the user
    // report go with it; the session is accepted.
    let id = new_event_id();
    let r = post(&client, &relay, envelope(&id, &event(&id))).await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers()["x-sentry-rate-limits"],
        "60:error:project:quota_exceeded"
    );
    for category in ["error", "attachment", "user_report"] {
        assert_eq!(relay.dropped(category, "rate_limited"), 1.0, "{category}");
    }
    assert_eq!(
        relay.metric(
            "edge_relay_items_accepted_total",
            &[("project", "42"), ("category", "session")]
        ),
        2.0
    );

    // An event that is no JSON object: its items are dropped as invalid.
    let id = new_event_id();
    let r = post(&client, &relay, envelope(&id, b"[1,2]")).await;
    assert_eq!(r.status(), 200, "the session was accepted");
    for category in ["error", "attachment", "user_report"] {
        assert_eq!(relay.dropped(category, "invalid"), 1.0, "{category}");
        assert_eq!(
            relay.metric(
                "edge_relay_items_accepted_total",
                &[("project", "42"), ("category", category)]
            ),
            1.0,
            "{category}: only the first envelope's"
        );
    }
    let got = consume_async(
        kafka.bootstrap_servers(),
        &["ingest-attachments", "ingest-sessions"],
        4,
    )
    .await;
    assert_eq!(
        got.iter()
            .filter(|m| m.topic == "ingest-attachments")
            .count(),
        1,
        "only the first envelope's attachment was produced"
    );
}

/// An attachment larger than its quota's whole burst can never pass: it is
/// dropped as `too_large` (413 when nothing else got through), and the SDK
/// is not told to back off the category, so smaller attachments still pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attachment_larger_than_the_burst_is_too_large_not_rate_limited() {
    let (_kafka, relay) = relay_with_settings(
        "[[projects.quotas]]\ncategories = [\"attachment\"]\nlimit = 1000\nwindow_secs = 60\n",
    )
    .await;
    let client = reqwest::Client::new();
    let attachment = |bytes: &[u8]| {
        let mut body = b"{}\n".to_vec();
        body.extend_from_slice(
            format!(
                "{{\"type\":\"attachment\",\"filename\":\"dump.bin\",\"length\":{}}}\n",
                bytes.len()
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.push(b'\n');
        body
    };
    let r = post(&client, &relay, attachment(&[7u8; 2000])).await;
    assert_eq!(r.status(), 413);
    assert!(r.headers().get("x-sentry-rate-limits").is_none());
    assert!(r.headers().get("retry-after").is_none());
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("larger than the quota's burst"),
        "the answer says why"
    );
    assert_eq!(relay.dropped("attachment", "too_large"), 1.0);
    assert_eq!(relay.dropped("attachment", "rate_limited"), 0.0);

    // With its event: the event goes through (200), the attachment does not.
    let id = new_event_id();
    let r = post(&client, &relay, envelope_with_attachment(&id, &[7u8; 2000])).await;
    assert_eq!(r.status(), 200);
    assert_eq!(relay.dropped("attachment", "too_large"), 2.0);

    // The bucket was not charged: two attachments of 500 bytes fill it, the
    // third is rate limited as usual.
    for _ in 0..2 {
        assert_eq!(
            post(&client, &relay, attachment(&[1u8; 500]))
                .await
                .status(),
            200
        );
    }
    let r = post(&client, &relay, attachment(&[1u8; 500])).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("x-sentry-rate-limits").is_some());
    assert_eq!(relay.dropped("attachment", "rate_limited"), 1.0);
}
