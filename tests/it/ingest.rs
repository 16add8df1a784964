//! Raw HTTP, as SDKs send it, into librdkafka's mock cluster: every encoding,
//! both endpoints, HTTP/1.1 and h2c, CORS, and every kind of refusal.

use crate::support::*;

type Encoder = fn(&[u8]) -> Vec<u8>;

fn identity(data: &[u8]) -> Vec<u8> {
    data.to_vec()
}

/// `None` sends no header at all; `""` sends `Content-Encoding:` with an empty value.
const ENCODINGS: [(&str, Encoder); 7] = [
    ("none", identity),
    ("", identity),
    ("identity", identity),
    ("gzip", gzip),
    ("deflate", deflate),
    ("br", brotli),
    ("zstd", zstd),
];

async fn post(
    client: &reqwest::Client,
    url: &str,
    encoding: &str,
    body: Vec<u8>,
    key: Option<&str>,
) -> reqwest::Response {
    let mut req = client
        .post(url)
        .header("content-type", "application/x-sentry-envelope")
        .body(body);
    if encoding != "none" {
        req = req.header("content-encoding", encoding);
    }
    if let Some(key) = key {
        req = req.header("x-sentry-auth", auth_header(key));
    }
    req.send().await.expect("the relay answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_encoding_reaches_kafka_exactly_once_with_headers() {
    let kafka = mock_kafka();
    let relay = TestRelay::with_kafka(&kafka.bootstrap_servers()).await;
    let client = reqwest::Client::new();
    let attachment: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let mut sent = Vec::new();
    for (encoding, encode) in ENCODINGS {
        let id = new_event_id();
        let body = encode(&envelope_with_attachment(&id, &attachment));
        let r = post(&client, &relay.envelope_url(), encoding, body, Some(KEY)).await;
        assert_eq!(r.status(), 200, "encoding {encoding:?}");
        let answer: serde_json::Value = r.json().await.unwrap();
        assert_eq!(answer["id"], id.as_str());
        sent.push(id);
    }

    let got = consume_async(
        kafka.bootstrap_servers(),
        &["ingest-events", "ingest-attachments"],
        sent.len() * 2,
    )
    .await;
    assert_eq!(got.len(), sent.len() * 2, "every item exactly once");
    for id in &sent {
        let event: Vec<_> = got
            .iter()
            .filter(|m| m.key == *id && m.topic == "ingest-events")
            .collect();
        let attach: Vec<_> = got
            .iter()
            .filter(|m| m.key == *id && m.topic == "ingest-attachments")
            .collect();
        assert_eq!((event.len(), attach.len()), (1, 1), "event {id}");
        let payload: serde_json::Value = serde_json::from_slice(&event[0].payload).unwrap();
        assert_eq!(payload, python_like_event(id));
        assert_eq!(attach[0].payload, attachment);
        for (m, ty) in [(event[0], "event"), (attach[0], "attachment")] {
            assert_eq!(m.headers["project_id"], PROJECT.to_string());
            assert_eq!(m.headers["event_id"], *id);
            assert_eq!(m.headers["item_type"], ty);
            humantime::parse_rfc3339(&m.headers["received_at"]).expect("received_at is RFC 3339");
        }
    }
    assert_eq!(
        relay.metric(
            "edge_relay_items_accepted_total",
            &[("project", "42"), ("category", "error")]
        ),
        sent.len() as f64
    );
    assert_eq!(
        relay.metric(
            "edge_relay_items_accepted_total",
            &[("project", "42"), ("category", "attachment")]
        ),
        sent.len() as f64
    );
    let report = relay.stop(std::time::Duration::from_secs(5)).await;
    assert_eq!(report.undelivered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_endpoint_query_auth_dsn_auth_and_h2c() {
    let kafka = mock_kafka();
    let relay = TestRelay::with_kafka(&kafka.bootstrap_servers()).await;
    let client = reqwest::Client::new();

    // Legacy store endpoint, key in the query string, no trailing slash.
    let store_id = new_event_id();
    let r = client
        .post(relay.url(&format!(
            "/api/{PROJECT}/store?sentry_key={KEY}&sentry_version=7"
        )))
        .header("content-type", "text/plain")
        .body(serde_json::to_vec(&python_like_event(&store_id)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["id"],
        store_id.as_str()
    );

    // Key only in the envelope header's DSN.
    let dsn_id = new_event_id();
    let event = serde_json::to_vec(&python_like_event(&dsn_id)).unwrap();
    let mut body = format!(
        "{{\"event_id\":\"{dsn_id}\",\"dsn\":\"{}\"}}\n{{\"type\":\"event\"}}\n",
        relay.dsn()
    )
    .into_bytes();
    body.extend_from_slice(&event);
    let r = post(&client, &relay.envelope_url(), "gzip", gzip(&body), None).await;
    assert_eq!(r.status(), 200);

    // HTTP/2 with prior knowledge (h2c).
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let h2_id = new_event_id();
    let r = post(
        &h2,
        &relay.envelope_url(),
        "br",
        brotli(&envelope_with_attachment(&h2_id, b"x")),
        Some(KEY),
    )
    .await;
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);

    let got = consume_async(kafka.bootstrap_servers(), &["ingest-events"], 3).await;
    let mut keys: Vec<_> = got.iter().map(|m| m.key.clone()).collect();
    keys.sort();
    let mut want = vec![store_id, dsn_id, h2_id];
    want.sort();
    assert_eq!(keys, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_exposed_headers() {
    let sink = sink_file();
    let relay = TestRelay::start(&config_text(&sink.section)).await;
    let client = reqwest::Client::new();
    let r = client
        .request(reqwest::Method::OPTIONS, relay.envelope_url())
        .header("origin", "https://shop.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(r.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    for h in ["x-sentry-rate-limits", "retry-after", "x-sentry-error"] {
        assert!(exposed.contains(h), "{exposed}");
    }
    // Error answers carry the CORS headers and the reason in X-Sentry-Error.
    let r = post(&client, &relay.envelope_url(), "", b"{}\n".to_vec(), None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(r.headers()["x-sentry-error"]
        .to_str()
        .unwrap()
        .contains("missing public key"));
    assert!(r.json::<serde_json::Value>().await.unwrap()["detail"].is_string());
    // So does a path the relay does not serve (a newer SDK's endpoint).
    let r = client
        .request(reqwest::Method::OPTIONS, relay.url("/api/42/minidump/"))
        .header("origin", "https://shop.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
}

/// `/store/` and envelopes take and refuse the same events: an odd `type`
/// or a repeated `event_id` is taken by both, a lone surrogate escape or a
/// number out of range refused by both (400, counted as `invalid`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_envelopes_judge_events_alike() {
    let sink = sink_file();
    let relay = TestRelay::start(&config_text(&sink.section)).await;
    let client = reqwest::Client::new();
    let id = new_event_id();
    let cases = [
        (r#"{"message":"fine"}"#.to_string(), 200),
        (r#"{"type":5,"message":"an odd type"}"#.to_string(), 200),
        (format!(r#"{{"event_id":"{id}","event_id":"{id}"}}"#), 200),
        (r#"{"message":"\ud800 alone"}"#.to_string(), 400),
        (r#"{"extra":{"n":1e999}}"#.to_string(), 400),
    ];
    let invalid = || relay.dropped("error", "invalid") + relay.dropped("envelope", "invalid");
    for (event, want) in cases {
        let before = invalid();
        let store = client
            .post(relay.url(&format!("/api/{PROJECT}/store/")))
            .header("x-sentry-auth", auth_header(KEY))
            .body(event.clone())
            .send()
            .await
            .unwrap();
        let envelope = post(
            &client,
            &relay.envelope_url(),
            "none",
            format!("{{}}\n{{\"type\":\"event\"}}\n{event}\n").into_bytes(),
            Some(KEY),
        )
        .await;
        assert_eq!(
            (store.status().as_u16(), envelope.status().as_u16()),
            (want, want),
            "{event}"
        );
        let refused = if want == 200 { 0.0 } else { 2.0 };
        assert_eq!(invalid() - before, refused, "{event}");
    }
}

/// (name, url, content encoding, body, key, expected status, project label, drop reason)
type BadCase<'a> = (
    &'a str,
    String,
    &'a str,
    Vec<u8>,
    Option<&'a str>,
    u16,
    &'a str,
    &'a str,
);

/// Every bad input gets its status and a counted reason, and the relay keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_refused_counted_and_harmless() {
    let sink = sink_file();
    let text = config_text(&format!(
        "{}[limits]\nmax_body_size = \"64KiB\"\nmax_inflated_size = \"256KiB\"\nmax_items = 5\n",
        sink.section
    ));
    let relay = TestRelay::start(&text).await;
    let client = reqwest::Client::new();
    let good = || envelope_with_attachment(&new_event_id(), b"ok");
    let bomb = gzip(&vec![0u8; 64 << 20]);
    let many_items = {
        let mut b = b"{}\n".to_vec();
        for _ in 0..10 {
            b.extend_from_slice(b"{\"type\":\"attachment\",\"length\":1}\nx\n");
        }
        b
    };
    let deep = format!(
        "{{}}\n{{\"type\":\"event\"}}\n{}1{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let envelope_url = relay.envelope_url();
    let ten_thousand_items = gzip(&{
        let mut b = b"{}\n".to_vec();
        for _ in 0..10_000 {
            b.extend_from_slice(b"{\"type\":\"attachment\",\"length\":1}\nx\n");
        }
        b
    });
    let huge_header_line = gzip(format!("{{\"pad\":\"{}\"}}\n", "x".repeat(200_000)).as_bytes());
    // A raw NUL inside a JSON string is not JSON (control characters must be escaped).
    let nul_in_event = b"{}\n{\"type\":\"event\"}\n{\"message\":\"a\x00b\"}\n".to_vec();
    let cases: Vec<BadCase> = vec![
        (
            "missing key",
            envelope_url.clone(),
            "",
            good(),
            None,
            401,
            "42",
            "unauthorized",
        ),
        (
            "unknown key",
            envelope_url.clone(),
            "",
            good(),
            Some("ffffffffffffffffffffffffffffffff"),
            403,
            "42",
            "unauthorized",
        ),
        (
            "key of another project",
            envelope_url.clone(),
            "",
            good(),
            Some(OTHER_KEY),
            403,
            "42",
            "unauthorized",
        ),
        (
            "unknown project",
            relay.url("/api/999/envelope/"),
            "",
            good(),
            Some(KEY),
            403,
            "unknown",
            "unauthorized",
        ),
        (
            "truncated gzip",
            envelope_url.clone(),
            "gzip",
            gzip(&good())[..40].to_vec(),
            Some(KEY),
            400,
            "42",
            "invalid",
        ),
        (
            "gzip labelled zstd",
            envelope_url.clone(),
            "zstd",
            gzip(&good()),
            Some(KEY),
            400,
            "42",
            "invalid",
        ),
        (
            "unsupported encoding",
            envelope_url.clone(),
            "compress",
            good(),
            Some(KEY),
            415,
            "42",
            "invalid",
        ),
        (
            "gzip bomb",
            envelope_url.clone(),
            "gzip",
            bomb,
            Some(KEY),
            413,
            "42",
            "too_large",
        ),
        (
            "oversized on the wire",
            envelope_url.clone(),
            "",
            vec![b' '; 100 << 10],
            Some(KEY),
            413,
            "42",
            "too_large",
        ),
        (
            "too many items",
            envelope_url.clone(),
            "",
            many_items,
            Some(KEY),
            413,
            "42",
            "too_large",
        ),
        (
            "10 000 items",
            envelope_url.clone(),
            "gzip",
            ten_thousand_items,
            Some(KEY),
            413,
            "42",
            "too_large",
        ),
        (
            "a 200 KB header line",
            envelope_url.clone(),
            "gzip",
            huge_header_line,
            Some(KEY),
            413,
            "42",
            "too_large",
        ),
        (
            "not an envelope",
            envelope_url.clone(),
            "",
            b"hello world\n".to_vec(),
            Some(KEY),
            400,
            "42",
            "invalid",
        ),
        (
            "length past the end",
            envelope_url.clone(),
            "",
            b"{}\n{\"type\":\"event\",\"length\":999}\n{}\n".to_vec(),
            Some(KEY),
            400,
            "42",
            "invalid",
        ),
        (
            "two event items",
            envelope_url.clone(),
            "",
            b"{}\n{\"type\":\"event\"}\n{\"message\":\"a\"}\n{\"type\":\"event\"}\n{\"message\":\"b\"}\n"
                .to_vec(),
            Some(KEY),
            400,
            "42",
            "invalid",
        ),
        (
            "bytes after a zlib stream",
            envelope_url.clone(),
            "deflate",
            [deflate(&good()), b"junk".to_vec()].concat(),
            Some(KEY),
            400,
            "42",
            "invalid",
        ),
        (
            "a dsn naming another project",
            envelope_url.clone(),
            "",
            format!("{{\"dsn\":\"http://{KEY}@relay/7\"}}\n{{\"type\":\"event\"}}\n{{}}\n").into_bytes(),
            Some(KEY),
            403,
            "42",
            "unauthorized",
        ),
        (
            "non-UTF-8 header",
            envelope_url.clone(),
            "",
            b"{\"x\":\"\xff\xfe\"}\n".to_vec(),
            Some(KEY),
            400,
            "42",
            "invalid",
        ),
    ];
    for (name, url, encoding, body, key, status, project, reason) in cases {
        let before = relay.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", project),
                ("category", "envelope"),
                ("reason", reason),
            ],
        );
        let r = post(&client, &url, encoding, body, key).await;
        assert_eq!(r.status().as_u16(), status, "{name}");
        if ["unknown key", "oversized on the wire"].contains(&name) {
            // Refused unread: the client is told the connection ends.
            assert_eq!(
                r.headers().get("connection").map(|v| v.as_bytes()),
                Some(&b"close"[..]),
                "{name}"
            );
        }
        let detail = r.json::<serde_json::Value>().await.unwrap();
        assert!(
            detail["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{name}: {detail}"
        );
        let after = relay.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", project),
                ("category", "envelope"),
                ("reason", reason),
            ],
        );
        assert_eq!(after - before, 1.0, "{name} is counted once as {reason}");
        // The next good request is unaffected.
        let r = post(&client, &envelope_url, "", good(), Some(KEY)).await;
        assert_eq!(r.status(), 200, "good request after {name}");
    }

    // Headers: an encoding that is not text, or given on two lines (two
    // encodings), is unsupported, not taken for none; an auth header that is
    // not text is refused as such; two auth headers with different keys are.
    let dropped = |reason: &str| {
        relay.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", "42"),
                ("category", "envelope"),
                ("reason", reason),
            ],
        )
    };
    let (invalid, unauthorized) = (dropped("invalid"), dropped("unauthorized"));
    let with_headers = |headers: &[(&str, &[u8])]| {
        let mut request = client.post(&envelope_url).body(good());
        for (name, value) in headers {
            request = request.header(
                *name,
                reqwest::header::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        request.send()
    };
    let auth = auth_header(KEY);
    let r = with_headers(&[
        ("x-sentry-auth", auth.as_bytes()),
        ("content-encoding", b"gz\xffip"),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 415, "a content-encoding that is not text");
    let request = client
        .post(&envelope_url)
        .header("x-sentry-auth", &auth)
        .body(gzip(&good()));
    let mut headers = reqwest::header::HeaderMap::new();
    headers.append("content-encoding", "gzip".parse().unwrap());
    headers.append("content-encoding", "br".parse().unwrap());
    let r = request.headers(headers).send().await.unwrap();
    assert_eq!(
        r.status(),
        415,
        "two content-encoding lines are two encodings"
    );
    assert_eq!(dropped("invalid") - invalid, 2.0);
    let r = with_headers(&[("x-sentry-auth", b"Sentry sentry_key=\xff")])
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("not text"));
    let other = format!("Sentry sentry_key={OTHER_KEY}");
    let r = with_headers(&[
        ("x-sentry-auth", auth.as_bytes()),
        ("authorization", other.as_bytes()),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 401, "two auth headers, two keys");
    assert_eq!(dropped("unauthorized") - unauthorized, 2.0);
    // A proxy's own Authorization beside X-Sentry-Auth is no key.
    let r = with_headers(&[
        ("x-sentry-auth", auth.as_bytes()),
        ("authorization", b"Basic dXNlcjpwdw=="),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 200);

    // Item-level problems: the bad item is dropped and counted (with the
    // attachment that belongs to it), the rest goes through.
    let before_ok = relay.metric(
        "edge_relay_items_accepted_total",
        &[("project", "42"), ("category", "session")],
    );
    let mut mixed = b"{}\n{\"type\":\"event\"}\n{not json\n".to_vec();
    mixed.extend_from_slice(b"{\"type\":\"attachment\",\"length\":2}\nok\n");
    mixed.extend_from_slice(b"{\"type\":\"session\",\"length\":2}\n{}\n");
    let r = post(&client, &envelope_url, "", mixed, Some(KEY)).await;
    assert_eq!(r.status(), 200, "the session was accepted");
    assert_eq!(
        relay.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", "42"),
                ("category", "attachment"),
                ("reason", "invalid")
            ]
        ),
        1.0
    );
    assert_eq!(
        relay.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", "42"),
                ("category", "error"),
                ("reason", "invalid")
            ]
        ),
        1.0
    );
    assert_eq!(
        relay.metric(
            "edge_relay_items_accepted_total",
            &[("project", "42"), ("category", "session")]
        ),
        before_ok + 1.0
    );
    // Only a deeply nested event: 400, counted as an invalid error item.
    let r = post(
        &client,
        &envelope_url,
        "gzip",
        gzip(deep.as_bytes()),
        Some(KEY),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        relay.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", "42"),
                ("category", "error"),
                ("reason", "invalid")
            ]
        ),
        2.0
    );

    // A NUL byte inside the event: the only item is invalid, so 400, counted,
    // and the answer says which item and why.
    let r = post(&client, &envelope_url, "", nul_in_event, Some(KEY)).await;
    assert_eq!(r.status(), 400);
    let detail = r.json::<serde_json::Value>().await.unwrap()["detail"].to_string();
    assert!(
        detail.contains("item 0 (event): event is not a valid JSON object"),
        "{detail}"
    );
    assert_eq!(
        relay.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", "42"),
                ("category", "error"),
                ("reason", "invalid")
            ]
        ),
        3.0
    );

    // Wrong paths and methods.
    assert_eq!(
        client
            .get(relay.envelope_url())
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    assert_eq!(
        client
            .post(relay.url("/api/abc/envelope/"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        relay.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", "unknown"),
                ("category", "envelope"),
                ("reason", "invalid")
            ]
        ),
        1.0,
        "a bad project id is counted"
    );
    assert_eq!(
        client
            .post(relay.url("/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let metrics = relay.exported().await;
    assert!(
        metrics.contains("edge_relay_requests_total{endpoint=\"envelope\",status=\"413\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("edge_relay_request_duration_seconds_bucket"));
    assert!(metrics.contains("edge_relay_producer_queue_depth"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reports_are_counted_not_forwarded() {
    let sink = sink_file();
    let relay = TestRelay::start(&config_text(&sink.section)).await;
    // What SDKs send: item and byte categories, an entry the relay does not
    // understand (a negative quantity) among good ones, and an older SDK's
    // legacy lists.
    let report = br#"{"timestamp":1795200000,"discarded_events":[{"reason":"queue_overflow","category":"error","quantity":3},{"reason":"made_up","category":"nonsense","quantity":2},{"reason":"buffer_overflow","category":"log_byte","quantity":4096},{"reason":"buffer_overflow","category":"log_item","quantity":7},{"reason":"sample_rate","category":"profile_chunk","quantity":5},{"reason":"send_error","category":"error","quantity":-1},{"reason":"send_error","category":"metric_bucket","quantity":6}],"rate_limited_events":[{"reason":"key_quota","category":"transaction","quantity":11}],"filtered_sampling_events":[{"reason":"Sampled:0","category":"transaction","quantity":13}]}"#;
    let mut body = b"{}\n{\"type\":\"client_report\"}\n".to_vec();
    body.extend_from_slice(report);
    body.push(b'\n');
    let r = post(
        &reqwest::Client::new(),
        &relay.envelope_url(),
        "",
        body,
        Some(KEY),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        relay.metric(
            "edge_relay_client_discarded_total",
            &[
                ("project", "42"),
                ("category", "error"),
                ("reason", "queue_overflow")
            ]
        ),
        3.0
    );
    assert_eq!(
        relay.metric(
            "edge_relay_client_discarded_total",
            &[
                ("project", "42"),
                ("category", "other"),
                ("reason", "other")
            ]
        ),
        2.0
    );
    let discarded = |category: &str, reason: &str| {
        relay.metric(
            "edge_relay_client_discarded_total",
            &[
                ("project", "42"),
                ("category", category),
                ("reason", reason),
            ],
        )
    };
    // Bytes of logs are not log items; profile chunks are not profiles.
    assert_eq!(discarded("log_byte", "buffer_overflow"), 4096.0);
    assert_eq!(discarded("log_item", "buffer_overflow"), 7.0);
    assert_eq!(discarded("profile_chunk", "sample_rate"), 5.0);
    assert_eq!(discarded("profile", "sample_rate"), 0.0);
    assert_eq!(discarded("metric_bucket", "send_error"), 6.0);
    // The entry with a negative quantity is skipped; the rest are counted.
    assert_eq!(discarded("error", "send_error"), 0.0);
    // The legacy lists, by what they stand for.
    assert_eq!(discarded("transaction", "rate_limited"), 11.0);
    assert_eq!(discarded("transaction", "filtered_sampling"), 13.0);
    assert_eq!(
        relay.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", "42"),
                ("category", "client_report"),
                ("reason", "invalid")
            ]
        ),
        0.0,
        "the report was read"
    );
    relay.stop(std::time::Duration::from_secs(1)).await;
    assert_eq!(
        std::fs::read_to_string(&sink.path).unwrap_or_default(),
        "",
        "nothing forwarded"
    );
}

/// An envelope of one item of type `ty` (with these extra header fields) and
/// this payload, with its length.
fn one_item(ty: &str, extra: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "{{}}\n{{\"type\":\"{ty}\",\"length\":{}{extra}}}\n",
        payload.len()
    )
    .into_bytes();
    body.extend_from_slice(payload);
    body.push(b'\n');
    body
}

/// JSON items other than events are parsed into a tree to be scrubbed: they
/// are held to the event's size and depth limits first, and refused as an
/// oversized or too-deep event is (413 `too_large`, 400 `invalid`), rather
/// than built into a tree of millions of values. JSON attachments (by their
/// name) are attachments: taken up to `max_attachment_size`, and scrubbed as
/// text past the event's size. A large identity body is taken as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_items_are_held_to_the_event_limits() {
    let sink = sink_file();
    let relay = TestRelay::start(&config_text(&format!(
        "{}[limits]\nmax_json_depth = 16\n",
        sink.section
    )))
    .await;
    let client = reqwest::Client::new();
    // 2 MiB of `[0,0,...]`: twice max_event_size, a tenth of max_attachment_size.
    let zeros = {
        let mut z = b"[0".to_vec();
        while z.len() < 2 << 20 {
            z.extend_from_slice(b",0");
        }
        z.push(b']');
        z
    };
    let deep = format!("{}1{}", "{\"a\":".repeat(20), "}".repeat(20)).into_bytes();
    let shallow = format!("{}1{}", "{\"a\":".repeat(10), "}".repeat(10)).into_bytes();
    let cases = [
        ("span", "", "span"),
        ("log", "", "log_item"),
        ("check_in", "", "monitor"),
        ("session", "", "session"),
        ("profile", "", "profile"),
        ("replay_event", "", "replay"),
        ("user_report", "", "user_report"),
    ];
    for (ty, extra, category) in cases {
        for (what, payload, status, reason) in [
            ("2 MiB", &zeros, 413, "too_large"),
            ("20 deep", &deep, 400, "invalid"),
        ] {
            let before = relay.dropped(category, reason);
            let r = post(
                &client,
                &relay.envelope_url(),
                "gzip",
                gzip(&one_item(ty, extra, payload)),
                Some(KEY),
            )
            .await;
            assert_eq!(r.status().as_u16(), status, "a {what} {ty} item");
            assert_eq!(
                relay.dropped(category, reason) - before,
                1.0,
                "a {what} {ty} item is counted as {category}/{reason}"
            );
        }
        let r = post(
            &client,
            &relay.envelope_url(),
            "gzip",
            gzip(&one_item(ty, extra, &shallow)),
            Some(KEY),
        )
        .await;
        assert_eq!(r.status(), 200, "a 10 deep {ty} item is taken");
    }
    // A `.json` attachment past the event's size, with an email at its end,
    // and one deeper than max_json_depth: both taken, the first scrubbed string by string.
    let json_attachment = ",\"filename\":\"state.json\"";
    let mut large_json = zeros.clone();
    large_json.pop();
    large_json.extend_from_slice(b",\"alice@example.com\"]");
    for payload in [&large_json, &deep] {
        let r = post(
            &client,
            &relay.envelope_url(),
            "gzip",
            gzip(&one_item("attachment", json_attachment, payload)),
            Some(KEY),
        )
        .await;
        assert_eq!(r.status(), 200, "a .json attachment is an attachment");
    }
    // A large binary attachment, uncompressed, is taken whole.
    let id = new_event_id();
    let r = post(
        &client,
        &relay.envelope_url(),
        "",
        envelope_with_attachment(&id, &vec![7u8; 3 << 20]),
        Some(KEY),
    )
    .await;
    assert_eq!(r.status(), 200, "a 3 MiB identity body");
    relay.stop(std::time::Duration::from_secs(5)).await;
    let sink = std::fs::read_to_string(&sink.path).unwrap();
    assert_eq!(
        sink.lines().count(),
        cases.len() + 4,
        "the shallow items, the .json attachments, the event and its attachment, nothing else"
    );
    assert!(
        sink.contains(",0,0,0,"),
        "the large .json attachment is there"
    );
    assert!(
        !sink.contains("alice@example.com"),
        "the large .json attachment was scrubbed string by string"
    );
}

/// A legacy `/store/` body (base64 of zlib) that inflates past
/// `max_inflated_size` is refused as any body is: 413, `too_large`. One that
/// inflates within it, past the inline 1 MiB, is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_store_bodies_are_capped_like_any_body() {
    use base64::Engine as _;
    let sink = sink_file();
    let relay = TestRelay::start(&config_text(&format!(
        "{}[limits]\nmax_body_size = \"1MiB\"\nmax_inflated_size = \"2MiB\"\nmax_event_size = \"2MiB\"\n",
        sink.section
    )))
    .await;
    let client = reqwest::Client::new();
    let legacy = |message_len: usize| {
        let event = format!("{{\"message\":\"{}\"}}", "a".repeat(message_len));
        base64::engine::general_purpose::STANDARD.encode(deflate(event.as_bytes()))
    };
    let store = async |body: String| {
        client
            .post(relay.url(&format!("/api/{PROJECT}/store/")))
            .header("x-sentry-auth", auth_header(KEY))
            .body(body)
            .send()
            .await
            .expect("the relay answers")
    };

    let bomb = legacy(3 << 20);
    assert!(bomb.len() < 64 << 10, "{} bytes on the wire", bomb.len());
    let r = store(bomb).await;
    assert_eq!(r.status(), 413);
    assert_eq!(relay.dropped("envelope", "too_large"), 1.0);
    assert_eq!(relay.dropped("envelope", "invalid"), 0.0);

    let r = store(legacy(1536 << 10)).await;
    assert_eq!(r.status(), 200, "a legacy body of 1.5 MiB inflated");
    let r = store("not base64, not JSON".into()).await;
    assert_eq!(r.status(), 400);
    assert_eq!(relay.dropped("envelope", "invalid"), 1.0);
}

/// A client report is read only up to `max_event_size` and its first 1000
/// entries: a larger one is dropped and counted (`client_report`,
/// `too_large`), and entries past the 1000th are not read at all (one that
/// is malformed there does not spoil the report).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reports_are_read_within_bounds() {
    let sink = sink_file();
    let relay = TestRelay::start(&config_text(&sink.section)).await;
    let client = reqwest::Client::new();
    let discarded = || {
        relay.metric(
            "edge_relay_client_discarded_total",
            &[
                ("project", "42"),
                ("category", "error"),
                ("reason", "queue_overflow"),
            ],
        )
    };
    let entry = r#"{"reason":"queue_overflow","category":"error","quantity":1}"#;

    let mut entries = vec![entry; 1000];
    entries.push(r#"{"reason":5}"#);
    let report = format!("{{\"discarded_events\":[{}]}}", entries.join(","));
    let r = post(
        &client,
        &relay.envelope_url(),
        "",
        one_item("client_report", "", report.as_bytes()),
        Some(KEY),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(discarded(), 1000.0, "the first 1000 entries are counted");

    let report = format!(
        "{{\"pad\":\"{}\",\"discarded_events\":[{entry}]}}",
        "x".repeat(1 << 20)
    );
    let r = post(
        &client,
        &relay.envelope_url(),
        "gzip",
        gzip(&one_item("client_report", "", report.as_bytes())),
        Some(KEY),
    )
    .await;
    assert_eq!(r.status(), 413, "an oversized client report");
    assert_eq!(relay.dropped("client_report", "too_large"), 1.0);
    assert_eq!(discarded(), 1000.0, "an oversized report is not read");

    // Riding along with an item, an oversized report does not decide the
    // answer: the item does (here an event that is not an object, 400).
    let mut body = one_item("event", "", b"[1]");
    body.extend_from_slice(
        format!(
            "{{\"type\":\"client_report\",\"length\":{}}}\n",
            report.len()
        )
        .as_bytes(),
    );
    body.extend_from_slice(report.as_bytes());
    body.push(b'\n');
    let r = post(
        &client,
        &relay.envelope_url(),
        "gzip",
        gzip(&body),
        Some(KEY),
    )
    .await;
    assert_eq!(r.status(), 400, "the event's drop decides");
    assert_eq!(relay.dropped("client_report", "too_large"), 2.0);
    assert_eq!(relay.dropped("error", "invalid"), 1.0);

    // A report that is not one is dropped and counted, not ignored.
    let r = post(
        &client,
        &relay.envelope_url(),
        "",
        one_item("client_report", "", b"not json"),
        Some(KEY),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(relay.dropped("client_report", "invalid"), 1.0);
    relay.stop(std::time::Duration::from_secs(1)).await;
    assert_eq!(std::fs::read_to_string(&sink.path).unwrap_or_default(), "");
}

/// Sentry endpoints the relay does not take (minidumps, security reports,
/// OTLP) are refused with 404 and a reason, and counted as dropped
/// (`unsupported`) under the project, or `unknown`; other paths are a plain
/// 404; envelopes go on being taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_sentry_endpoints_are_refused_and_counted() {
    let sink = sink_file();
    let relay = TestRelay::start(&config_text(&sink.section)).await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", relay.sdk);
    for (path, project) in [
        (format!("/api/{PROJECT}/minidump/?sentry_key={KEY}"), "42"),
        (format!("/api/{PROJECT}/security/?sentry_key={KEY}"), "42"),
        ("/api/999/otlp/v1/traces".to_string(), "unknown"),
    ] {
        let before = relay.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", project),
                ("category", "envelope"),
                ("reason", "unsupported"),
            ],
        );
        let r = client
            .post(format!("{base}{path}"))
            .body(b"MDMP\x93\xa7 not a real dump".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(
            r.headers()["x-sentry-error"]
                .to_str()
                .unwrap()
                .contains("does not take"),
            "{path}"
        );
        assert_eq!(
            relay.metric(
                "edge_relay_items_dropped_total",
                &[
                    ("project", project),
                    ("category", "envelope"),
                    ("reason", "unsupported")
                ],
            ),
            before + 1.0,
            "{path}"
        );
    }
    assert_eq!(
        relay.metric(
            "edge_relay_requests_total",
            &[("endpoint", "unsupported"), ("status", "404")]
        ),
        3.0
    );
    // Not Sentry's: a plain 404, no drop.
    let r = client
        .post(format!("{base}/api/42/nonsense/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        relay.metric(
            "edge_relay_requests_total",
            &[("endpoint", "other"), ("status", "404")]
        ),
        1.0
    );
    let r = post(
        &client,
        &relay.envelope_url(),
        "none",
        envelope_with_attachment(&new_event_id(), b"a"),
        Some(KEY),
    )
    .await;
    assert_eq!(r.status(), 200);
}

/// A session replay's recording, as the JavaScript SDK sends it beside its
/// replay event: a header line, then the rrweb events zlib'd. The page's
/// URL (a password-reset link), a request's `Authorization` header, an
/// input's value beside its name, a `<meta>` CSRF token, and console
/// messages with an email and a quoted link reach Kafka scrubbed, however
/// deep the DOM nests, and its stylesheets as they came; the
/// recording is still its header line and a zlib stream of the same JSON
/// with only those strings changed. A gzip'd one leaves gzip'd; one with
/// nothing to redact, or a header alone, leaves byte for byte (a header's
/// own secrets scrubbed); one whose stream does not inflate, without its
/// header line, or whose events are not JSON, is refused and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_recordings_are_scrubbed_and_compressed_again() {
    use std::io::Read;
    const TOKEN: &str = "c3k2lp-8f1e2d3c4b5a6978e0d1";
    let kafka = mock_kafka();
    let relay = TestRelay::with_kafka(&kafka.bootstrap_servers()).await;
    let client = reqwest::Client::new();
    let replay_id = new_event_id();
    let reset = format!("https://app.example.com/accounts/reset/MTIz/{TOKEN}/");
    let quoted_link = format!("sent \"https://app.example.com/reset/MTIz/{TOKEN}\" to bob");
    let mut events = serde_json::json!([
        {"type": 4, "timestamp": 1733580000000u64,
         "data": {"href": reset, "width": 1280, "height": 800}},
        {"type": 5, "timestamp": 1733580000100u64, "data": {"tag": "performanceSpan", "payload": {
            "op": "resource.fetch", "description": "https://api.example.com/v1/me",
            "data": {"method": "GET", "statusCode": 200,
                     "request": {"headers": {"authorization": "Bearer 9Xk2LmQp4xZr7Tn3"}}}}}},
        {"type": 5, "timestamp": 1733580000300u64, "data": {"tag": "breadcrumb", "payload": {
            "category": "console", "message": "signed in as alice@example.com"}}},
        {"type": 5, "timestamp": 1733580000400u64, "data": {"tag": "breadcrumb", "payload": {
            "category": "console", "message": quoted_link}}},
        {"type": 3, "timestamp": 1733580000500u64, "data": {"source": 0, "adds": [{"node": {
            "type": 2, "tagName": "input",
            "attributes": {"value": "Hunt3rTwo!", "type": "text", "name": "password"}}}]}},
        {"origin": "https://app.example.com", "path": "/account/settings", "user": "bob"},
        // The head: a stylesheet (left alone: it reads as `key: value`) and
        // the CSRF token a `<meta>` carries.
        {"type": 2, "tagName": "style",
         "attributes": {"_cssText": ".cookie-consent__btn:hover{background:#0055ff}"}},
        {"type": 2, "tagName": "meta", "attributes": {"name": "csrf-token", "content": "MetaCsrf9Xk2LmQp"}},
        // A password field known by its type alone (React forms often have no name).
        {"type": 2, "tagName": "input", "attributes": {"type": "password", "value": "TypedPw77"}},
        // A card's number as it is typed (an SDK set to record inputs):
        // one digit short, it fails Luhn.
        {"type": 3, "timestamp": 1733580000600u64,
         "data": {"source": 5, "text": "4111 1111 1111 111", "isChecked": false, "id": 57}},
        // A card's security code typed into a field its snapshot names:
        // the input event names the field by its id alone.
        {"type": 2, "tagName": "input", "attributes": {"name": "cvc", "type": "text"},
         "childNodes": [], "id": 61},
        {"type": 3, "timestamp": 1733580000700u64,
         "data": {"source": 5, "text": "737", "isChecked": false, "id": 61}},
    ]);
    // A DOM 300 elements deep: 600 levels of JSON, past any tree's limit.
    let mut node = serde_json::json!({"type": 3, "textContent": "mail alice@example.com"});
    for _ in 0..300 {
        node = serde_json::json!({"type": 2, "tagName": "div", "childNodes": [node]});
    }
    events
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": 2, "data": {"node": node}}));
    let text = events.to_string();
    // What the relay must write: the same text, only these strings changed.
    let mut want = text.clone();
    for (from, to) in [
        (
            reset.clone(),
            "https://app.example.com/accounts/reset/MTIz/[urltoken]/".to_owned(),
        ),
        (
            "Bearer 9Xk2LmQp4xZr7Tn3".to_owned(),
            "[Filtered]".to_owned(),
        ),
        (
            "signed in as alice@example.com".to_owned(),
            "signed in as [email]".to_owned(),
        ),
        (
            quoted_link.clone(),
            "sent \"https://app.example.com/reset/MTIz/[urltoken]\" to bob".to_owned(),
        ),
        ("Hunt3rTwo!".to_owned(), "[Filtered]".to_owned()),
        ("MetaCsrf9Xk2LmQp".to_owned(), "[Filtered]".to_owned()),
        ("TypedPw77".to_owned(), "[Filtered]".to_owned()),
        (
            "4111 1111 1111 111".to_owned(),
            "**** **** **** ***".to_owned(),
        ),
        ("737".to_owned(), "[Filtered]".to_owned()),
        (
            "mail alice@example.com".to_owned(),
            "mail [email]".to_owned(),
        ),
    ] {
        let (from, to) = (
            serde_json::to_string(&from).unwrap(),
            serde_json::to_string(&to).unwrap(),
        );
        assert!(want.contains(&from), "{from}");
        want = want.replace(&from, &to);
    }
    let envelope = |recording: &[u8]| {
        let replay_event = serde_json::json!({
            "type": "replay_event", "replay_id": replay_id, "segment_id": 0,
            "urls": [format!("https://app.example.com/accounts/reset/MTIz/{TOKEN}/")],
        })
        .to_string();
        let mut body = format!(
            "{{\"event_id\":\"{replay_id}\"}}\n{{\"type\":\"replay_event\",\"length\":{}}}\n{replay_event}\n\
             {{\"type\":\"replay_recording\",\"length\":{}}}\n",
            replay_event.len(),
            recording.len()
        )
        .into_bytes();
        body.extend_from_slice(recording);
        body
    };
    let header = b"{\"segment_id\":0}\n";
    let zlibbed = [&header[..], &deflate(text.as_bytes())].concat();
    let gzipped = [&header[..], &gzip(text.as_bytes())].concat();
    let clean = [
        &header[..],
        br#"[{"type":3,"timestamp":1,"data":{"source":1}}]"#,
    ]
    .concat();
    let header_alone = b"{\"segment_id\":1}".to_vec();
    // A header line is a client's JSON too.
    let odd_header = format!("{{\"segment_id\":2,\"href\":\"{reset}\"}}").into_bytes();
    for recording in [&zlibbed, &gzipped, &clean, &header_alone, &odd_header] {
        let r = post(
            &client,
            &relay.envelope_url(),
            "gzip",
            gzip(&envelope(recording)),
            Some(KEY),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    // Refused: a stream that does not inflate, no header line, not JSON.
    let broken = [&header[..], &[0x78, 0x9c, 1, 2, 3, 4, 5, 6]].concat();
    let headless = deflate(text.as_bytes());
    let not_json = [&header[..], &deflate(b"mail alice@example.com")].concat();
    for recording in [&broken, &headless, &not_json] {
        let before = relay.dropped("replay", "invalid");
        let r = post(
            &client,
            &relay.envelope_url(),
            "gzip",
            gzip(&one_item("replay_recording", "", recording)),
            Some(KEY),
        )
        .await;
        assert_eq!(r.status(), 400);
        assert_eq!(relay.dropped("replay", "invalid") - before, 1.0);
    }

    let got = consume_async(kafka.bootstrap_servers(), &["ingest-replays"], 10).await;
    assert_eq!(got.len(), 10, "five replay events and five recordings");
    let recordings: Vec<&Consumed> = got
        .iter()
        .filter(|m| m.headers["item_type"] == "replay_recording")
        .collect();
    assert_eq!(recordings.len(), 5);
    assert!(recordings.iter().any(|m| m.payload
        == b"{\"segment_id\":2,\"href\":\"https://app.example.com/accounts/reset/MTIz/[urltoken]/\"}"));
    assert!(
        recordings.iter().any(|m| m.payload == clean),
        "the recording with nothing to redact, byte for byte"
    );
    assert!(recordings.iter().any(|m| m.payload == header_alone));
    let mut compressed = Vec::new();
    for m in recordings {
        let Some(body) = m.payload.strip_prefix(&header[..]) else {
            continue;
        };
        let mut inflated = String::new();
        if body.starts_with(&[0x1f, 0x8b]) {
            flate2::read::GzDecoder::new(body)
                .read_to_string(&mut inflated)
                .expect("gzip");
            compressed.push("gzip");
        } else if body.starts_with(&[0x78]) {
            flate2::read::ZlibDecoder::new(body)
                .read_to_string(&mut inflated)
                .expect("zlib");
            compressed.push("zlib");
        } else {
            continue;
        }
        assert!(
            inflated == want,
            "not the text with only the secrets changed: {inflated}"
        );
    }
    compressed.sort();
    assert_eq!(compressed, ["gzip", "zlib"], "each compressed as it came");
    for m in got
        .iter()
        .filter(|m| m.headers["item_type"] == "replay_event")
    {
        assert!(!String::from_utf8_lossy(&m.payload).contains(TOKEN));
    }
    assert!(
        relay.metric(
            "edge_relay_scrub_redactions_total",
            &[("project", "42"), ("rule", "urltoken")]
        ) >= 3.0
    );
}
