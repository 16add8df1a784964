//! Readiness, broker outages at start, graceful shutdown, and the file sink.

use std::time::Duration;

use crate::support::*;

async fn send_one(client: &reqwest::Client, relay: &TestRelay) -> (reqwest::StatusCode, String) {
    let (status, id) = post_attachment(client.clone(), relay.envelope_url(), b"a".to_vec()).await;
    (reqwest::StatusCode::from_u16(status).expect("a status"), id)
}

/// Posts an event with this attachment; the status and the event id. Owns
/// its arguments, so that it can run on a task of its own.
async fn post_attachment(
    client: reqwest::Client,
    url: String,
    attachment: Vec<u8>,
) -> (u16, String) {
    let id = new_event_id();
    let r = client
        .post(url)
        .header("x-sentry-auth", auth_header(KEY))
        .body(envelope_with_attachment(&id, &attachment))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), id)
}

/// The broker is down when the relay starts: the relay is ready all the
/// same, says Kafka is down, and answers 200 once items are in the spool;
/// when the broker comes up, the spool is replayed into Kafka and new items
/// go straight to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_at_start_spools_then_replays() {
    let kafka = mock_kafka();
    kafka.broker_down(1).expect("mock broker goes down");
    let relay = TestRelay::start(&config_text(&kafka_section(&kafka.bootstrap_servers()))).await;
    let client = reqwest::Client::new();

    let readyz = client.get(relay.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), 200);
    let body = readyz.text().await.unwrap();
    assert!(body.contains("kafka: down"), "{body}");
    let (status, spooled) = send_one(&client, &relay).await;
    assert_eq!(status, 200);
    assert_eq!(
        relay.metric(
            "edge_relay_spool_written_total",
            &[("cause", "kafka_unavailable")]
        ),
        2.0,
        "the event and its attachment"
    );
    let metrics = relay.exported().await;
    assert!(metrics.contains("edge_relay_spool_items 2"), "{metrics}");
    assert!(
        metrics.contains("edge_relay_spool_max_bytes 1073741824"),
        "spool.max_size, the default: {metrics}"
    );
    assert!(metrics.contains("edge_relay_kafka_state{state=\"down\"} 1"));
    assert_eq!(
        relay.metric(
            "edge_relay_items_accepted_total",
            &[("project", "42"), ("category", "error")]
        ),
        1.0
    );

    kafka.broker_up(1).expect("mock broker comes up");
    relay.wait_ready().await;
    let (status, direct) = send_one(&client, &relay).await;
    assert_eq!(status, 200);
    let mut got: Vec<String> = consume_async(kafka.bootstrap_servers(), &["ingest-events"], 2)
        .await
        .into_iter()
        .map(|m| m.key)
        .collect();
    got.sort();
    let mut want = vec![spooled, direct];
    want.sort();
    assert_eq!(got, want);
    let attachments = consume_async(kafka.bootstrap_servers(), &["ingest-attachments"], 2).await;
    assert_eq!(attachments.len(), 2);
    assert_eq!(relay.metric("edge_relay_spool_replayed_total", &[]), 2.0);
    assert_eq!(relay.metric("edge_relay_kafka_up", &[]), 1.0);
}

/// Stopping while the broker is down: what was answered 200 stays in the
/// spool, with the outcome records that could not be produced (Kafka took
/// one before: the topic is there), and the stop report says how many
/// records the next start delivers; it delivers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_with_the_broker_down_reports_what_stays_spooled() {
    let kafka = mock_kafka();
    kafka.create_topic("outcomes", 1, 1).unwrap();
    let text =
        config_text(&kafka_section(&kafka.bootstrap_servers())) + "[outcomes]\nwindow = \"1s\"\n";
    let relay = TestRelay::start(&text).await;
    relay.wait_ready().await;
    let client = reqwest::Client::new();
    assert_eq!(send_one(&client, &relay).await.0, 200);
    // Its window's outcome records reach Kafka.
    let first = consume_async(kafka.bootstrap_servers(), &["outcomes"], 2).await;
    assert_eq!(first.len(), 2, "the error's and the attachment's");
    kafka.broker_down(1).expect("mock broker goes down");
    wait_until(
        "the relay never saw the broker down",
        Duration::from_millis(50),
        async || relay.metric("edge_relay_kafka_state", &[("state", "down")]) == 1.0,
    )
    .await;
    for _ in 0..3 {
        let (status, _) = send_one(&client, &relay).await;
        assert_eq!(status, 200);
    }
    let report = relay.stop(Duration::from_secs(2)).await;
    assert!(report.requests_finished);
    assert_eq!(report.undelivered, 0);
    assert_eq!(
        report.spooled, 8,
        "three events and their attachments, and an outcome record for each category"
    );

    // The next start, with the broker back, on the same spool.
    kafka.broker_up(1).expect("mock broker comes up");
    let relay = TestRelay::start(&text).await;
    let outcomes = consume_async(kafka.bootstrap_servers(), &["outcomes"], 4).await;
    let mut accepted = std::collections::BTreeMap::new();
    for m in &outcomes {
        let r: edge_relay::outcome::OutcomeRecord = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(r.outcome, "accepted");
        *accepted.entry(r.category).or_insert(0) += r.quantity;
    }
    assert_eq!(
        accepted,
        [("attachment".to_string(), 4), ("error".to_string(), 4)].into()
    );
    let items = consume_async(
        kafka.bootstrap_servers(),
        &["ingest-events", "ingest-attachments"],
        8,
    )
    .await;
    assert_eq!(items.len(), 8);
    assert_eq!(relay.metric("edge_relay_outcomes_lost_total", &[]), 0.0);
}

/// At shutdown with the brokers down and no outcome record ever taken
/// (the topic may not exist), the records are counted as lost rather than
/// spooled, where Kafka might never take them and the replay would stay
/// failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcome_records_never_taken_are_not_spooled() {
    let kafka = mock_kafka();
    kafka.broker_down(1).expect("mock broker goes down");
    let relay = TestRelay::start(&config_text(&kafka_section(&kafka.bootstrap_servers()))).await;
    assert_eq!(send_one(&reqwest::Client::new(), &relay).await.0, 200);
    let registry = relay.registry.clone();
    let report = relay.stop(Duration::from_secs(2)).await;
    assert_eq!(report.spooled, 2, "the event and its attachment only");
    assert_eq!(
        metric(&registry, "edge_relay_outcomes_lost_total", &[]),
        2.0
    );
}

/// Requests in flight when shutdown starts are answered and delivered;
/// `/readyz` turns 503 while draining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_and_flushes() {
    let kafka = mock_kafka();
    // A delivery timeout far beyond the broker's delay: this test is about draining.
    let text = config_text(&kafka_section_with(&kafka.bootstrap_servers(), "30s"));
    let relay = TestRelay::start(&text).await;
    relay.wait_ready().await;
    // Slow the broker down so requests are still waiting for acks at shutdown.
    kafka
        .broker_round_trip_time(1, Duration::from_secs(1))
        .expect("mock rtt");
    let client = reqwest::Client::new();
    let url = relay.envelope_url();
    let mut inflight = Vec::new();
    for _ in 0..8 {
        let (client, url) = (client.clone(), url.clone());
        inflight.push(tokio::spawn(async move {
            let id = new_event_id();
            let r = client
                .post(url)
                .header("x-sentry-auth", auth_header(KEY))
                .body(envelope_with_attachment(&id, b"a"))
                .send()
                .await
                .unwrap();
            (r.status(), id)
        }));
    }
    // Let the requests reach the producer before asking the relay to stop
    // (a scrape of /metrics refreshes the queue-depth gauge).
    wait_until(
        "requests never reached the producer",
        Duration::from_millis(5),
        async || {
            client
                .get(relay.admin_url("/metrics"))
                .send()
                .await
                .unwrap();
            // All 8 requests (16 items) are waiting for the broker's ack.
            relay.metric("edge_relay_producer_queue_depth", &[]) >= 16.0
        },
    )
    .await;
    let admin = relay.admin_url("/readyz");
    let stopping = tokio::spawn(relay.stop(Duration::from_secs(30)));
    // While draining, readiness is withdrawn (the admin port stays up until the end).
    let mut saw_draining = false;
    for _ in 0..200 {
        match client.get(&admin).send().await {
            Ok(r) if r.status() == 503 => {
                saw_draining = true;
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(_) => break,
        }
    }
    let mut ids = Vec::new();
    for task in inflight {
        let (status, id) = task.await.unwrap();
        assert_eq!(status, 200, "in-flight requests are answered");
        ids.push(id);
    }
    let report = stopping.await.unwrap();
    assert!(report.requests_finished);
    assert_eq!(report.undelivered, 0);
    assert_eq!(
        report.spooled, 0,
        "delivered, so nothing stays in the spool"
    );
    assert!(saw_draining, "/readyz reported draining");
    kafka
        .broker_round_trip_time(1, Duration::ZERO)
        .expect("mock rtt");
    let got = consume_async(kafka.bootstrap_servers(), &["ingest-events"], ids.len()).await;
    let mut keys: Vec<_> = got.iter().map(|m| m.key.clone()).collect();
    keys.sort();
    ids.sort();
    assert_eq!(keys, ids, "everything answered 200 is in Kafka, once");
}

/// With no `[kafka]` section the relay writes JSON lines with the headers as fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sink_writes_json_lines_with_headers() {
    let sink = sink_file();
    let relay = TestRelay::start(&config_text(&sink.section)).await;
    assert_eq!(
        reqwest::get(relay.admin_url("/readyz"))
            .await
            .unwrap()
            .status(),
        200,
        "the file sink is always ready"
    );
    let client = reqwest::Client::new();
    let (status, id) = send_one(&client, &relay).await;
    assert_eq!(status, 200);
    // A pretty-printed event (a string in it holds a line end) is one line too.
    let pretty = "{\r\n  \"message\": \"first\\nsecond\",\n  \"level\": \"error\"\n}\n";
    let r = client
        .post(relay.url(&format!("/api/{PROJECT}/store/")))
        .header("x-sentry-auth", auth_header(KEY))
        .body(pretty)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    relay.stop(Duration::from_secs(1)).await;
    let text = std::fs::read_to_string(&sink.path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "one line per item: {text}");
    assert_eq!(lines[2]["payload"]["message"], "first\nsecond");
    assert_eq!(lines[0]["topic"], "ingest-events");
    assert_eq!(lines[0]["key"], id.as_str());
    assert_eq!(lines[0]["event_id"], id.as_str());
    assert_eq!(lines[0]["project_id"], "42");
    assert_eq!(lines[0]["item_type"], "event");
    assert!(humantime::parse_rfc3339(lines[0]["received_at"].as_str().unwrap()).is_ok());
    assert_eq!(lines[0]["payload"], python_like_event(&id));
    assert_eq!(lines[1]["topic"], "ingest-attachments");
    assert_eq!(lines[1]["item_type"], "attachment");
    assert_eq!(lines[1]["payload_base64"], "YQ==");
}

/// A message that times out in the producer goes to the spool (the SDK gets
/// its 200) and is counted as a possible duplicate: the broker may have
/// stored it before the timeout. While the state is degraded new items go to
/// the spool; once the broker is fast again the spool drains into Kafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_timeouts_go_to_the_spool() {
    let kafka = mock_kafka();
    let text = config_text(&kafka_section_with(&kafka.bootstrap_servers(), "1s"));
    let relay = TestRelay::start(&text).await;
    relay.wait_ready().await;
    let client = reqwest::Client::new();
    // Warm the producer's connection, then make the broker answer too late.
    assert_eq!(send_one(&client, &relay).await.0, 200);
    kafka
        .broker_round_trip_time(1, Duration::from_secs(5))
        .expect("mock rtt");
    let (status, late) = send_one(&client, &relay).await;
    assert_eq!(status, 200);
    assert_eq!(
        relay.metric(
            "edge_relay_spool_written_total",
            &[("cause", "delivery_failed")]
        ),
        2.0
    );
    assert!(relay.metric("edge_relay_spool_possible_duplicates_total", &[]) >= 2.0);
    let readyz = reqwest::get(relay.admin_url("/readyz")).await.unwrap();
    let body = readyz.text().await.unwrap();
    assert!(body.contains("kafka: degraded"), "{body}");
    // Degraded: the next request is spooled without waiting for Kafka.
    let (status, during) = send_one(&client, &relay).await;
    assert_eq!(status, 200);
    assert!(
        relay.metric(
            "edge_relay_spool_written_total",
            &[("cause", "kafka_unavailable")]
        ) >= 2.0
            || relay.metric("edge_relay_kafka_state", &[("state", "degraded")]) == 0.0
    );
    assert_eq!(
        relay.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", "42"),
                ("category", "error"),
                ("reason", "kafka_error")
            ]
        ),
        0.0,
        "nothing was dropped"
    );

    kafka
        .broker_round_trip_time(1, Duration::ZERO)
        .expect("mock rtt");
    relay.wait_ready().await;
    let keys: std::collections::HashSet<String> =
        consume_async(kafka.bootstrap_servers(), &["ingest-events"], 3)
            .await
            .into_iter()
            .map(|m| m.key)
            .collect();
    assert!(keys.contains(&late), "the timed-out item reached Kafka");
    assert!(
        keys.contains(&during),
        "the item spooled while degraded reached Kafka"
    );
}

/// A full spool refuses new items with 503 and counts them as `spool_full`;
/// what it holds is kept and delivered once Kafka is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_answers_503_and_keeps_what_it_holds() {
    let kafka = mock_kafka();
    kafka.broker_down(1).expect("mock broker goes down");
    let text = config_text(&format!(
        "{}max_size = \"1MiB\"\n",
        kafka_section(&kafka.bootstrap_servers())
    ));
    let relay = TestRelay::start(&text).await;
    let client = reqwest::Client::new();
    let attachment = vec![b'x'; 300 * 1024];
    let mut accepted = Vec::new();
    let mut refused = 0;
    for _ in 0..5 {
        let (status, id) =
            post_attachment(client.clone(), relay.envelope_url(), attachment.clone()).await;
        match status {
            200 => accepted.push(id),
            503 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(accepted.len(), 3, "three 300 KiB items fit in 1 MiB");
    assert_eq!(refused, 2);
    assert_eq!(
        relay.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", "42"),
                ("category", "attachment"),
                ("reason", "spool_full")
            ]
        ),
        2.0
    );
    let readyz = reqwest::get(relay.admin_url("/readyz")).await.unwrap();
    assert_eq!(readyz.status(), 200, "not full yet: small items still fit");
    // Smaller items until one is refused too: then the spool is full for
    // what it takes, though its bytes never reach the limit exactly.
    let small = vec![b'x'; 40 * 1024];
    let mut refused_small = false;
    for _ in 0..10 {
        let (status, id) =
            post_attachment(client.clone(), relay.envelope_url(), small.clone()).await;
        match status {
            200 => accepted.push(id),
            503 => {
                refused_small = true;
                break;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(refused_small, "a 1 MiB spool refuses at last");
    let readyz = reqwest::get(relay.admin_url("/readyz")).await.unwrap();
    assert_eq!(readyz.status(), 503);
    assert!(readyz.text().await.unwrap().contains("the spool is full"));

    kafka.broker_up(1).expect("mock broker comes up");
    let mut got: Vec<String> = consume_async(
        kafka.bootstrap_servers(),
        &["ingest-events"],
        accepted.len(),
    )
    .await
    .into_iter()
    .map(|m| m.key)
    .collect();
    got.sort();
    accepted.sort();
    assert_eq!(got, accepted);
}

/// An idempotent producer that fails fatally (here: the cluster refuses it a
/// producer id) can deliver nothing more: `/healthz` and `/readyz` say so and
/// a supervisor restarts the relay; what arrives meanwhile waits in the spool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_producer_error_fails_health() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let kafka = mock_kafka();
    kafka.request_errors(
        RDKafkaApiKey::InitProducerId,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED; 4],
    );
    let relay = TestRelay::start(&config_text(&kafka_section(&kafka.bootstrap_servers()))).await;
    let client = reqwest::Client::new();
    let health = eventually(PATIENCE, Duration::from_millis(100), async || {
        // Producing is what makes librdkafka ask for a producer id.
        let _ = send_one(&client, &relay).await;
        let health = client
            .get(relay.admin_url("/healthz"))
            .send()
            .await
            .unwrap();
        match health.status() {
            reqwest::StatusCode::SERVICE_UNAVAILABLE => Ok(health.text().await.unwrap()),
            _ => Err("the fatal error was never reported".to_owned()),
        }
    })
    .await;
    assert!(health.contains("fatal"), "{health}");
    assert_eq!(
        client
            .get(relay.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    // What still arrives is kept in the spool for the restarted relay.
    assert_eq!(send_one(&client, &relay).await.0, 200);
    assert!(
        relay.metric(
            "edge_relay_spool_written_total",
            &[("cause", "kafka_unavailable")]
        ) >= 2.0
    );
    assert_eq!(
        relay.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", "42"),
                ("category", "error"),
                ("reason", "kafka_error")
            ]
        ),
        0.0,
        "failed deliveries went to the spool"
    );
}

/// `/readyz`'s status and body.
async fn readyz(client: &reqwest::Client, relay: &TestRelay) -> (u16, String) {
    let r = client.get(relay.admin_url("/readyz")).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Asserts that `/readyz` answers 503 and says `why` first, with `error`.
async fn assert_unready(client: &reqwest::Client, relay: &TestRelay, why: &str, error: &str) {
    let (status, body) = readyz(client, relay).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with(why) && body.contains(error), "{body}");
}

/// A spool whose writes fail (a directory stands where its first segment
/// file goes: a real error from the OS) answers 500 and makes the relay
/// unready, with the error in `/readyz`; the relay is ready again once a
/// write succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_spool_writes_make_the_relay_unready() {
    let kafka = mock_kafka();
    let dir = spool_dir();
    let relay = TestRelay::start(&config_text(&format!(
        "[kafka]\nbrokers = \"{}\"\nhealth_interval = \"200ms\"\n\
         [spool]\npath = \"{}\"\n[delivery]\nack = \"spool\"\n",
        kafka.bootstrap_servers(),
        dir.display()
    )))
    .await;
    relay.wait_ready().await;
    let client = reqwest::Client::new();
    // The spool opened on an empty directory: its first segment is number 0.
    let first = dir.join(format!("{:020}.seg", 0));
    assert!(!first.exists(), "nothing written yet");
    std::fs::create_dir(&first).unwrap();
    assert_eq!(send_one(&client, &relay).await.0, 500);
    assert_unready(&client, &relay, "spool writes failing: ", "File exists").await;
    assert_eq!(relay.metric("edge_relay_ready", &[]), 0.0);
    std::fs::remove_dir(&first).unwrap();
    // The next write goes to a file that takes it.
    assert_eq!(send_one(&client, &relay).await.0, 200);
    let (status, body) = readyz(&client, &relay).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ready\n"), "{body}");
}

/// An idle relay has CPU to spare: its runtime gauge says so, and its
/// spool's writer uses the light commit delay, which the gauge shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_relay_flushes_its_spool_with_the_light_delay() {
    let kafka = mock_kafka();
    let dir = spool_dir();
    let relay = TestRelay::start(&config_text(&format!(
        "[kafka]\nbrokers = \"{}\"\n\
         [spool]\npath = \"{}\"\ncommit_delay = \"7ms\"\ncommit_delay_light = \"300us\"\n\
         [delivery]\nack = \"spool\"\n",
        kafka.bootstrap_servers(),
        dir.display()
    )))
    .await;
    relay.wait_ready().await;
    wait_until(
        "the light commit delay in the gauge",
        Duration::from_millis(20),
        async || relay.metric("edge_relay_spool_commit_delay_seconds", &[]) == 0.0003,
    )
    .await;
    let client = reqwest::Client::new();
    assert_eq!(send_one(&client, &relay).await.0, 200);
    let busy = relay.metric("edge_relay_runtime_busy_ratio", &[]);
    assert!((0.0..=1.0).contains(&busy), "busy ratio {busy}");
}

/// The file sink's writes fail (it is `/dev/full`): each request gets 500
/// and `/readyz` says why with 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_file_sink_writes_make_the_relay_unready() {
    let relay = TestRelay::start(&config_text("[file_sink]\npath = \"/dev/full\"\n")).await;
    let client = reqwest::Client::new();
    let (status, body) = readyz(&client, &relay).await;
    assert_eq!((status, body.as_str()), (200, "ready\noutput: file\n"));
    assert_eq!(send_one(&client, &relay).await.0, 500);
    assert_unready(
        &client,
        &relay,
        "file sink writes failing: ",
        "No space left",
    )
    .await;
}

/// Connections that send nothing are closed after `header_read_timeout`, so
/// idle clients cannot hold every connection slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_release_their_slots() {
    use tokio::io::AsyncReadExt;
    let sink = sink_file();
    let text = config_text_with_server(
        "max_connections = 2\nheader_read_timeout = \"500ms\"\n",
        &sink.section,
    );
    let relay = TestRelay::start(&text).await;
    // Two silent clients, one sending half an HTTP/2 preface: both slots taken.
    let mut silent = tokio::net::TcpStream::connect(relay.sdk).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(relay.sdk).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut half, b"PRI * HTTP/2")
        .await
        .unwrap();
    // The relay closes both (a read sees the end of the stream), within a bound.
    for stream in [&mut silent, &mut half] {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("the relay closed the idle connection")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    // And a real client is served.
    let client = reqwest::Client::new();
    let r = client
        .post(relay.envelope_url())
        .header("x-sentry-auth", auth_header(KEY))
        .body(envelope_with_attachment(&new_event_id(), b"a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A request with `Connection: close` on a socket of its own, read to the
/// relay's end of the stream: the answer's text.
async fn answered_and_closed(relay: &TestRelay) -> (tokio::net::TcpStream, String) {
    use tokio::io::AsyncReadExt;
    let body = envelope_with_attachment(&new_event_id(), b"x");
    let headers = format!("connection: close\r\ncontent-length: {}\r\n", body.len());
    let mut stream = raw_request(relay, &headers, &body).await;
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the relay answers and closes")
        .expect("the answer and a clean end of stream");
    (stream, String::from_utf8_lossy(&answer).into_owned())
}

/// When the relay closes a connection, what the client sends across the
/// close is read and thrown away (a lingering close), not answered with a
/// TCP reset, which can destroy an answer or GOAWAY the client has not read
/// yet. The linger ends when the client closes; one that never closes holds
/// its connection slot for `lingering_time` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_lingers_so_late_bytes_draw_no_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sink = sink_file();
    // One slot: a second client is served only once the first one's linger ended.
    let text = config_text_with_server(
        "max_connections = 1\nlingering_time = \"10m\"\n",
        &sink.section,
    );
    let relay = TestRelay::start(&text).await;
    let (mut late, answer) = answered_and_closed(&relay).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The client's next request crossed the relay's close. Were the socket
    // closed, the first write would draw a reset, and a later write or read
    // would fail (a broken pipe) instead of seeing the end of the stream.
    for _ in 0..3 {
        late.write_all(b"POST /api/42/envelope/ HTTP/1.1\r\n")
            .await
            .expect("the relay's side is still open: no reset");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut buf = [0u8; 64];
    assert_eq!(late.read(&mut buf).await.expect("no reset"), 0);
    // The client closes: the linger ends and frees the slot.
    drop(late);
    let (_, answer) = answered_and_closed(&relay).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    relay.stop(Duration::from_secs(30)).await;

    // A client that never closes holds the slot for `lingering_time` only.
    let text = config_text_with_server(
        "max_connections = 1\nlingering_time = \"300ms\"\n",
        &sink.section,
    );
    let relay = TestRelay::start(&text).await;
    let (_kept_open, answer) = answered_and_closed(&relay).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (_, answer) = answered_and_closed(&relay).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Starts a request on a socket of its own: the headers, then `body`
/// (which may be only the start of the body the headers announce).
async fn raw_request(relay: &TestRelay, headers: &str, body: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(relay.sdk).await.unwrap();
    let head = format!(
        "POST /api/{PROJECT}/envelope/ HTTP/1.1\r\nhost: relay\r\n\
         x-sentry-auth: {}\r\n{headers}\r\n",
        auth_header(KEY)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream
}

/// The status of the answer on this socket.
async fn status_of(stream: &mut tokio::net::TcpStream) -> u16 {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "the relay closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&answer);
    line.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line")
}

/// A client that shuts its side of the connection once its request is sent
/// (with a length, or chunked) still gets its answer, and what was accepted
/// is in the sink: answered, not accepted in silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_requests_are_answered() {
    use tokio::io::AsyncWriteExt;
    let sink = sink_file();
    let relay = TestRelay::start(&config_text(&sink.section)).await;
    let mut ids = Vec::new();
    for round in 0..10 {
        let id = new_event_id();
        let body = envelope_with_attachment(&id, b"a");
        let mut stream = if round % 2 == 0 {
            raw_request(
                &relay,
                &format!("content-length: {}\r\n", body.len()),
                &body,
            )
            .await
        } else {
            let mut chunked = format!("{:x}\r\n", body.len()).into_bytes();
            chunked.extend_from_slice(&body);
            chunked.extend_from_slice(b"\r\n0\r\n\r\n");
            raw_request(&relay, "transfer-encoding: chunked\r\n", &chunked).await
        };
        stream.shutdown().await.unwrap();
        assert_eq!(status_of(&mut stream).await, 200, "round {round}");
        ids.push(id);
    }
    let items = std::fs::read_to_string(&sink.path).unwrap();
    for id in &ids {
        assert!(
            items.contains(id.as_str()),
            "{id} answered 200 but not in the sink"
        );
    }
}

/// A client that resets the connection while its body is read gets no
/// answer; the request is counted all the same (a body-read drop), and its
/// body's memory is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_while_the_body_is_read_is_counted() {
    let sink = sink_file();
    let relay = TestRelay::start(&config_text(&sink.section)).await;
    let held = || relay.metric("edge_relay_body_memory_bytes", &[]);
    let stream = raw_request(&relay, "content-length: 1000\r\n", &[b'x'; 10]).await;
    wait_until(
        "the body's first bytes were never held",
        Duration::from_millis(20),
        async || held() >= 10.0,
    )
    .await;
    // A reset, not a close: the socket is dropped with a zero linger.
    stream.set_zero_linger().unwrap();
    drop(stream);
    wait_until(
        "the reset request was never counted",
        Duration::from_millis(20),
        async || relay.dropped("envelope", "invalid") >= 1.0,
    )
    .await;
    wait_until(
        "the body's memory was never given back",
        Duration::from_millis(20),
        async || held() == 0.0,
    )
    .await;
    assert_eq!(relay.dropped("envelope", "invalid"), 1.0, "counted once");
}

/// Request bodies in memory are bounded by `server.max_body_memory`, from
/// their read until their answer, counted as their bytes arrive: requests
/// that declare a length and send nothing hold nothing. While a slow upload
/// holds most of it, a request that declares a length past the rest is
/// refused with 503 before its body is read, a chunked one (no length)
/// once its body passes the bound, and a small compressed one once it
/// inflates past it; all count as `overloaded`. Small requests still fit. When the slow upload ends, it is accepted and the
/// memory is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_in_memory_are_bounded() {
    use tokio::io::AsyncWriteExt;
    let sink = sink_file();
    let text = config_text_with_server(
        "max_body_memory = \"1MiB\"\n",
        &format!(
            "{}[limits]\nmax_body_size = \"900KiB\"\nmax_inflated_size = \"1MiB\"\n",
            sink.section
        ),
    );
    let relay = TestRelay::start(&text).await;
    let held = || relay.metric("edge_relay_body_memory_bytes", &[]);
    let overloaded = || relay.dropped("envelope", "overloaded");
    let client = reqwest::Client::new();

    // Two requests declare 900 000 bytes each (together past the bound) and
    // send none: they hold nothing, and keep no one out.
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(raw_request(&relay, "content-length: 900000\r\n", b"").await);
    }
    let small = post_attachment(client.clone(), relay.envelope_url(), b"a".to_vec()).await;
    assert_eq!(small.0, 200);
    assert_eq!(
        held(),
        0.0,
        "declared lengths are not held before they arrive"
    );

    // A slow upload: its length is declared, most of its body sent.
    let slow_id = new_event_id();
    let slow_body = envelope_with_attachment(&slow_id, &vec![b'x'; 879_000]);
    let (first, rest) = slow_body.split_at(700_000);
    let mut slow = raw_request(
        &relay,
        &format!("content-length: {}\r\n", slow_body.len()),
        first,
    )
    .await;
    wait_until(
        "the slow upload's bytes were never held",
        Duration::from_millis(20),
        async || held() >= first.len() as f64,
    )
    .await;
    assert_eq!(held(), first.len() as f64, "what arrived, and only that");
    let room = (1 << 20) - first.len();

    // Declared past the room left: refused before the body is read.
    let mut declared = raw_request(&relay, &format!("content-length: {}\r\n", room + 1), b"").await;
    assert_eq!(status_of(&mut declared).await, 503);
    // Of unknown length: refused once what arrived passes the room.
    let mut chunk = format!("{:x}\r\n", room + 4096).into_bytes();
    chunk.extend(std::iter::repeat_n(b'x', room + 1));
    let mut chunked = raw_request(&relay, "transfer-encoding: chunked\r\n", &chunk).await;
    assert_eq!(status_of(&mut chunked).await, 503);
    // Inflated, a body takes its inflated size: a few KiB of gzip that
    // inflate past the room are refused once inflated.
    let inflating = envelope_with_attachment(&new_event_id(), &vec![b'z'; room + 1]);
    let r = client
        .post(relay.envelope_url())
        .header("x-sentry-auth", auth_header(KEY))
        .header("content-encoding", "gzip")
        .body(gzip(&inflating))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "inflated past the room");
    assert_eq!(overloaded(), 3.0);
    assert_eq!(held(), first.len() as f64, "the refused hold nothing");

    // A small event fits beside the slow upload.
    let small2 = post_attachment(client.clone(), relay.envelope_url(), b"b".to_vec()).await;
    assert_eq!(small2.0, 200);

    // The slow upload ends: accepted, and everything is given back.
    slow.write_all(rest).await.unwrap();
    assert_eq!(status_of(&mut slow).await, 200);
    assert_eq!(held(), 0.0);
    assert_eq!(overloaded(), 3.0);
    drop(idle);
    let large = post_attachment(client, relay.envelope_url(), vec![b'y'; 900_000]).await;
    assert_eq!(large.0, 200, "the room is back");
    let items = std::fs::read_to_string(&sink.path).unwrap();
    for id in [&slow_id, &small.1, &small2.1, &large.1] {
        assert!(
            items.contains(id.as_str()),
            "{id} accepted but not in the sink"
        );
    }
}

/// A reload swaps projects, quotas and scrub rules at once; buckets of
/// unchanged quotas keep their state; an invalid configuration is refused,
/// counted, and the running one keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_projects_and_rules_and_keeps_buckets() {
    let sink = sink_file();
    let base = config_text(&sink.section).replacen(
        &format!("public_keys = [\"{KEY}\"]\n"),
        &format!("public_keys = [\"{KEY}\"]\n[[projects.quotas]]\ncategories = [\"error\"]\nlimit = 1\nwindow_secs = 3600\n"),
        1,
    );
    let relay = TestRelay::start(&base).await;
    let client = reqwest::Client::new();
    let send = |project: u64, key: &'static str, event: serde_json::Value| {
        let client = client.clone();
        let url = relay.url(&format!("/api/{project}/envelope/"));
        async move {
            let event = serde_json::to_vec(&event).unwrap();
            let mut body =
                format!("{{}}\n{{\"type\":\"event\",\"length\":{}}}\n", event.len()).into_bytes();
            body.extend_from_slice(&event);
            client
                .post(url)
                .header("x-sentry-auth", auth_header(key))
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    const NEW_KEY: &str = "99999999999999999999999999999999";
    assert_eq!(
        send(PROJECT, KEY, serde_json::json!({"message": "a"})).await,
        200
    );
    assert_eq!(
        send(PROJECT, KEY, serde_json::json!({"message": "b"})).await,
        429
    );
    assert_eq!(
        send(99, NEW_KEY, serde_json::json!({"message": "c"})).await,
        403
    );

    // A new project and a new sensitive field; project 42's quota unchanged.
    let reloaded = base.replacen(
        "[[projects]]",
        "[scrub]\nsensitive_fields = [\"order_ref\"]\n\n[[projects]]",
        1,
    ) + &format!("[[projects]]\nid = 99\npublic_keys = [\"{NEW_KEY}\"]\n");
    assert!(relay
        .handle
        .reload(edge_relay::Config::from_toml(&reloaded)));
    assert_eq!(
        relay.metric("edge_relay_config_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        send(
            99,
            NEW_KEY,
            serde_json::json!({"extra": {"order_ref": "R-1"}})
        )
        .await,
        200
    );
    assert_eq!(
        send(PROJECT, KEY, serde_json::json!({"message": "d"})).await,
        429,
        "the unchanged quota kept its bucket"
    );
    assert_eq!(
        relay.metric(
            "edge_relay_scrub_redactions_total",
            &[("project", "99"), ("rule", "password")]
        ),
        1.0
    );

    // An invalid file is refused; the running configuration stays. Its
    // series was exported at 0 before, so that alerts see the first failure.
    let exported = relay.exported().await;
    assert!(
        exported.contains("edge_relay_config_reloads_total{result=\"error\"} 0"),
        "{exported}"
    );
    assert!(!relay
        .handle
        .reload(edge_relay::Config::from_toml("[server]\nlistn = 1\n")));
    assert_eq!(
        relay.metric("edge_relay_config_reloads_total", &[("result", "error")]),
        1.0
    );
    assert_eq!(
        send(99, NEW_KEY, serde_json::json!({"message": "e"})).await,
        200
    );
    relay.stop(Duration::from_secs(2)).await;
    let lines = std::fs::read_to_string(&sink.path).unwrap();
    assert!(!lines.contains("R-1"), "the new rule applied");
}

/// Opens an HTTP/2 connection (prior knowledge) and posts one envelope
/// down it, answered 200; returns the connection's sender and its task.
async fn h2_envelope(
    sdk: std::net::SocketAddr,
    url: &str,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(sdk).await.unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let request = hyper::Request::post(url)
        .header("x-sentry-auth", auth_header(KEY))
        .body(())
        .unwrap();
    let (answer, mut body) = h2.send_request(request, false).unwrap();
    body.send_data(
        envelope_with_attachment(&new_event_id(), b"h2").into(),
        true,
    )
    .unwrap();
    assert_eq!(answer.await.unwrap().status(), 200);
    (h2, conn)
}

/// On shutdown, readiness is withdrawn at once while the listener keeps
/// accepting for the drain delay: a client that has not noticed yet is
/// served, and told to take its next request elsewhere (`Connection: close`
/// on HTTP/1; a GOAWAY, then the close, on an HTTP/2 connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_delay_keeps_accepting_after_readiness_is_withdrawn() {
    let sink = sink_file();
    let text = config_text(&format!(
        "{}[shutdown]\ngrace_period = \"30s\"\ndrain_delay = \"10s\"\n",
        sink.section
    ));
    let relay = TestRelay::start(&text).await;
    let client = reqwest::Client::new();
    let admin = relay.admin_url("/readyz");
    let url = relay.envelope_url();
    // An HTTP/2 connection open before the stop, one request answered on it.
    let (h2, h2_conn) = h2_envelope(relay.sdk, &url).await;

    let sdk = relay.sdk;
    let stopping = tokio::spawn(relay.stop(Duration::from_secs(30)));
    wait_until(
        "readiness was never withdrawn",
        Duration::from_millis(10),
        async || client.get(&admin).send().await.unwrap().status() == 503,
    )
    .await;
    // The HTTP/2 connection is sent a GOAWAY and, with nothing in flight,
    // closed, while the listener still accepts (below).
    h2_conn
        .await
        .unwrap()
        .expect("the relay ends its HTTP/2 connection cleanly");
    assert!(
        h2.ready().await.is_err(),
        "the ended connection takes no new request"
    );
    // An HTTP/2 client that connects during the drain is answered too (its
    // connection is told to go away once the request is served), several
    // times over: the drain must not catch a connection mid-handshake.
    for _ in 0..4 {
        let (_late, late_conn) = h2_envelope(sdk, &url).await;
        late_conn.await.unwrap().expect("ended cleanly");
    }
    // Not ready, yet still accepting: a late client gets its answer, and is
    // told not to send the next one down this connection.
    let r = client
        .post(&url)
        .header("x-sentry-auth", auth_header(KEY))
        .body(envelope_with_attachment(&new_event_id(), b"a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers().get("connection").map(|v| v.to_str().unwrap()),
        Some("close")
    );
    let report = stopping.await.unwrap();
    assert!(report.requests_finished);
    assert_eq!(
        std::fs::read_to_string(&sink.path).unwrap().lines().count(),
        12
    );
}

/// Connections that have not sent a byte yet (an HTTP client's spare
/// connection; half an HTTP/2 preface) do not hold up the stop: nothing was
/// asked on them, so they are closed at once rather than at the end of
/// `header_read_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_asked_nothing_do_not_hold_up_the_stop() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sink = sink_file();
    let text = config_text_with_server("header_read_timeout = \"10m\"\n", &sink.section);
    let relay = TestRelay::start(&text).await;
    let mut silent = tokio::net::TcpStream::connect(relay.sdk).await.unwrap();
    let mut half_preface = tokio::net::TcpStream::connect(relay.sdk).await.unwrap();
    half_preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    // Accepted in order: once a later connection is answered, both are open in the relay.
    let (status, _) = send_one(&reqwest::Client::new(), &relay).await;
    assert_eq!(status, 200);
    let report = relay.stop(Duration::from_secs(60)).await;
    assert!(
        report.requests_finished,
        "the stop waited out its grace period"
    );
    for stream in [&mut silent, &mut half_preface] {
        let mut buf = [0u8; 16];
        // Closed by the relay; with bytes it did not read, the close is a reset.
        match stream.read(&mut buf).await {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("the connection stays open: {other:?}"),
        }
    }
}

/// Slow clients: headers dribbled past `header_read_timeout` get the
/// connection closed; a body dribbled past `body_read_timeout` gets 408 and
/// is counted; other clients are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_and_bodies_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sink = sink_file();
    let text = config_text_with_server(
        "header_read_timeout = \"1s\"\nbody_read_timeout = \"1s\"\n",
        &sink.section,
    );
    let relay = TestRelay::start(&text).await;

    // Headers, one byte at a time, never finished.
    let mut slow_headers = tokio::net::TcpStream::connect(relay.sdk).await.unwrap();
    slow_headers
        .write_all(b"POST /api/42/envelope/ HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // A body promised in full and dribbled.
    let mut slow_body = tokio::net::TcpStream::connect(relay.sdk).await.unwrap();
    let head = format!(
        "POST /api/{PROJECT}/envelope/ HTTP/1.1\r\nHost: x\r\nX-Sentry-Auth: {}\r\nContent-Length: 1000\r\n\r\n{{}}\n",
        auth_header(KEY)
    );
    slow_body.write_all(head.as_bytes()).await.unwrap();

    // Meanwhile a normal client is served.
    let r = reqwest::Client::new()
        .post(relay.envelope_url())
        .header("x-sentry-auth", auth_header(KEY))
        .body(envelope_with_attachment(&new_event_id(), b"a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, slow_body.read_to_end(&mut answer))
        .await
        .expect("the relay answers the slow body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(PATIENCE, slow_headers.read_to_end(&mut rest))
        .await
        .expect("the relay closes the slow headers")
        .unwrap_or(0);
    assert!(
        n == 0 || String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(
        relay.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", "42"),
                ("category", "envelope"),
                ("reason", "invalid")
            ]
        ),
        1.0,
        "the timed-out body is counted"
    );
}

/// When producing falls behind (the broker answers slowly), the bytes waiting
/// for acks reach `delivery.max_in_flight` and new requests are refused with
/// 503 before their body is read, counted as `overloaded`; the accepted ones
/// are delivered, and the relay takes work again once the backlog clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_early_with_503() {
    let kafka = mock_kafka();
    let text = config_text(&format!(
        "{}[delivery]\nmax_in_flight = \"1MiB\"\n",
        kafka_section_with(&kafka.bootstrap_servers(), "30s")
    ));
    let relay = TestRelay::start(&text).await;
    relay.wait_ready().await;
    let client = reqwest::Client::new();
    assert_eq!(send_one(&client, &relay).await.0, 200);
    kafka
        .broker_round_trip_time(1, Duration::from_secs(10))
        .expect("mock rtt");
    let attachment = vec![b'x'; 128 * 1024];
    let post = |attachment: Vec<u8>| {
        tokio::spawn(post_attachment(
            client.clone(),
            relay.envelope_url(),
            attachment,
        ))
    };
    // Ten requests wait for the slow broker: 1.25 MiB in flight. Each is
    // held or shed before the next is sent, so that none is shed later,
    // among the five below.
    let mut waiting = Vec::new();
    for _ in 0..10 {
        let held = relay.metric("edge_relay_in_flight_bytes", &[]);
        let r = post(attachment.clone());
        wait_until(
            "a waiting request was neither held nor shed",
            Duration::from_millis(20),
            async || r.is_finished() || relay.metric("edge_relay_in_flight_bytes", &[]) > held,
        )
        .await;
        waiting.push(r);
    }
    wait_until(
        "the backlog never built up",
        Duration::from_millis(20),
        async || relay.metric("edge_relay_in_flight_bytes", &[]) >= (1 << 20) as f64,
    )
    .await;
    // Now new work is shed at once, whatever its size.
    let overloaded = || relay.dropped("envelope", "overloaded");
    let before = overloaded();
    for _ in 0..5 {
        let (status, _) = post(b"small".to_vec()).await.unwrap();
        assert_eq!(status, 503);
    }
    assert_eq!(overloaded() - before, 5.0);
    // The waiting ones are answered from the broker or the spool; the last of
    // them may themselves have come after the bound was reached, and been shed.
    let mut accepted = Vec::new();
    for r in waiting {
        let (status, id) = r.await.unwrap();
        match status {
            200 => accepted.push(id),
            503 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(accepted.len() >= 8, "1 MiB holds eight 128 KiB attachments");
    // Every 503 of the test, and nothing else, is counted as overloaded.
    assert_eq!(overloaded(), 5.0 + (10 - accepted.len()) as f64);
    assert_eq!(relay.metric("edge_relay_in_flight_bytes", &[]), 0.0);
    kafka
        .broker_round_trip_time(1, Duration::ZERO)
        .expect("mock rtt");
    relay.wait_ready().await;
    assert_eq!(send_one(&client, &relay).await.0, 200);
    let got: std::collections::HashSet<String> = consume_async(
        kafka.bootstrap_servers(),
        &["ingest-events"],
        accepted.len() + 2,
    )
    .await
    .into_iter()
    .map(|m| m.key)
    .collect();
    for id in &accepted {
        assert!(got.contains(id), "{id} accepted but not in Kafka");
    }
}

/// `ack = "spool"` answers after the spool write and the replay delivers;
/// `ack = "memory"` answers at once, and a delivery that then fails goes to
/// the spool and is delivered from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_and_memory_ack_modes_deliver() {
    let kafka = mock_kafka();
    let client = reqwest::Client::new();
    let mut want = Vec::new();

    let spool = TestRelay::start(&config_text(&format!(
        "{}[delivery]\nack = \"spool\"\n",
        kafka_section(&kafka.bootstrap_servers())
    )))
    .await;
    let readyz = reqwest::get(spool.admin_url("/readyz")).await.unwrap();
    assert!(readyz.text().await.unwrap().contains("ack: spool"));
    for _ in 0..3 {
        let (status, id) = send_one(&client, &spool).await;
        assert_eq!(status, 200);
        want.push(id);
    }
    assert_eq!(
        spool.metric("edge_relay_spool_written_total", &[("cause", "ack_spool")]),
        6.0
    );
    // One flush at least per answer (requests one after the other), each timed.
    let flushes = spool.metric("edge_relay_spool_flush_duration_seconds", &[]);
    assert!(
        flushes >= 3.0,
        "{flushes} flushes timed for 3 spooled requests"
    );

    let memory = TestRelay::start(&config_text(&format!(
        "{}[delivery]\nack = \"memory\"\n",
        kafka_section_with(&kafka.bootstrap_servers(), "1s")
    )))
    .await;
    memory.wait_ready().await;
    let (status, id) = send_one(&client, &memory).await;
    assert_eq!(status, 200);
    want.push(id);
    // A broker too slow for the delivery timeout: answered 200 all the same,
    // then spooled when the delivery fails, and replayed once it is fast again.
    kafka
        .broker_round_trip_time(1, Duration::from_secs(3))
        .expect("mock rtt");
    let (status, late) = send_one(&client, &memory).await;
    assert_eq!(status, 200);
    want.push(late);
    wait_until(
        "the failed delivery was not spooled",
        Duration::from_millis(50),
        async || {
            memory.metric(
                "edge_relay_spool_written_total",
                &[("cause", "delivery_failed")],
            ) >= 2.0
        },
    )
    .await;
    kafka
        .broker_round_trip_time(1, Duration::ZERO)
        .expect("mock rtt");
    let got: std::collections::HashSet<String> =
        consume_async(kafka.bootstrap_servers(), &["ingest-events"], want.len())
            .await
            .into_iter()
            .map(|m| m.key)
            .collect();
    for id in &want {
        assert!(got.contains(id), "{id} answered 200 but not in Kafka");
    }
    assert_eq!(memory.metric("edge_relay_delivery_lost_total", &[]), 0.0);
}

/// A connection with no request in flight for `idle_timeout` is closed and
/// counted, whatever its protocol: an HTTP/2 client that sent its preface
/// and settings and then nothing (it would answer keep-alive pings forever),
/// and an HTTP/1.1 keep-alive connection after its request was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sink = sink_file();
    let text = config_text_with_server("idle_timeout = \"1s\"\n", &sink.section);
    let relay = TestRelay::start(&text).await;

    // HTTP/2: the preface and an empty SETTINGS frame, then silence.
    let mut h2 = tokio::net::TcpStream::connect(relay.sdk).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    // HTTP/1.1: one request answered, then the connection kept open.
    let mut h1 = tokio::net::TcpStream::connect(relay.sdk).await.unwrap();
    let body = envelope_with_attachment(&new_event_id(), b"x");
    h1.write_all(
        format!(
            "POST /api/{PROJECT}/envelope/ HTTP/1.1\r\nHost: x\r\nX-Sentry-Auth: {}\r\n\
             Content-Length: {}\r\n\r\n",
            auth_header(KEY),
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    h1.write_all(&body).await.unwrap();

    // Both are closed by the relay: read until the end of the stream.
    for (name, stream) in [("h2", &mut h2), ("http/1.1", &mut h1)] {
        let mut got = Vec::new();
        let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "the idle {name} connection was never closed");
        if name == "http/1.1" {
            let text = String::from_utf8_lossy(&got);
            assert!(text.starts_with("HTTP/1.1 200"), "answered first: {text}");
        }
    }
    assert_eq!(
        relay.metric(
            "edge_relay_connections_refused_total",
            &[("reason", "idle")]
        ),
        2.0
    );
}

/// An item larger than Kafka takes can never be delivered: answered 413
/// `too_large` when Kafka refuses it directly, and when it was spooled first
/// (Kafka down), removed from the spool and counted rather than blocking the
/// replay of everything behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_kafka_refuses_for_good_do_not_block_the_spool() {
    let kafka = mock_kafka();
    kafka.broker_down(1).expect("mock broker goes down");
    // A producer that takes at most 100 KB per message.
    let text = config_text(&format!(
        "{}[kafka.producer]\n\"message.max.bytes\" = \"100000\"\n",
        kafka_section(&kafka.bootstrap_servers())
    ));
    let relay = TestRelay::start(&text).await;
    let client = reqwest::Client::new();
    let big = vec![b'x'; 300 * 1024];
    let post =
        |attachment: Vec<u8>| post_attachment(client.clone(), relay.envelope_url(), attachment);
    // Kafka down: both items go to the spool, the SDK gets its 200.
    let (status, spooled) = post(big.clone()).await;
    assert_eq!(status, 200);
    kafka.broker_up(1).expect("mock broker comes up");
    relay.wait_ready().await;
    // The replay delivers the event and removes the attachment it cannot deliver.
    let got = consume_async(kafka.bootstrap_servers(), &["ingest-events"], 1).await;
    assert_eq!(got[0].key, spooled);
    wait_until(
        "the big item blocks the spool",
        Duration::from_millis(50),
        async || relay.metric("edge_relay_spool_undeliverable_total", &[]) >= 1.0,
    )
    .await;
    // Directly: the attachment is refused with 413, the event still goes through.
    let (status, direct) = post(big).await;
    assert_eq!(status, 200, "the event was accepted, so the answer is 200");
    assert_eq!(
        relay.metric(
            "edge_relay_items_dropped_total",
            &[
                ("project", "42"),
                ("category", "attachment"),
                ("reason", "too_large")
            ]
        ),
        1.0
    );
    let got = consume_async(kafka.bootstrap_servers(), &["ingest-events"], 2).await;
    assert!(got.iter().any(|m| m.key == direct));
    let readyz = reqwest::get(relay.admin_url("/readyz")).await.unwrap();
    let body = readyz.text().await.unwrap();
    assert!(
        body.contains("kafka: up") && body.contains("spool: 0 items"),
        "{body}"
    );
}

/// Log rotation: once the sink's file was moved away, a reload (SIGHUP)
/// opens the path again; the lines before the move stay in the moved file,
/// the later ones go to the new file, none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reopens_the_file_sink_after_rotation() {
    let sink = sink_file();
    let text = config_text(&sink.section);
    let relay = TestRelay::start(&text).await;
    let client = reqwest::Client::new();
    assert_eq!(send_one(&client, &relay).await.0, 200);
    let rotated = sink.path.with_extension("jsonl.1");
    std::fs::rename(&sink.path, &rotated).unwrap();
    // Before the reload, lines go on into the moved file (it is still open).
    assert_eq!(send_one(&client, &relay).await.0, 200);
    assert!(relay.handle.reload(edge_relay::Config::from_toml(&text)));
    assert_eq!(send_one(&client, &relay).await.0, 200);
    relay.stop(Duration::from_secs(2)).await;
    let lines = |path: &std::path::Path| std::fs::read_to_string(path).unwrap().lines().count();
    assert_eq!(lines(&rotated), 4, "two events and their attachments");
    assert_eq!(lines(&sink.path), 2, "the last event and its attachment");
}

/// At shutdown with the brokers up but refusing the outcome records (no
/// `outcomes` topic), the records are not spooled, where they would block
/// the replay of the items behind them: they are counted as lost, and the
/// items themselves were delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcome_records_kafka_refuses_at_shutdown_are_counted_lost() {
    use rdkafka::types::RDKafkaRespErr;
    let kafka = mock_kafka();
    // (The mock cluster creates topics on demand; this one it refuses.)
    kafka
        .topic_error(
            "outcomes",
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        )
        .unwrap();
    let text = config_text(&kafka_section_with(&kafka.bootstrap_servers(), "2s"));
    let relay = TestRelay::start(&text).await;
    relay.wait_ready().await;
    let (status, _) = send_one(&reqwest::Client::new(), &relay).await;
    assert_eq!(status, 200);
    let registry = relay.registry.clone();
    let report = relay.stop(Duration::from_secs(10)).await;
    assert_eq!(report.spooled, 0, "nothing waits in the spool");
    assert_eq!(report.undelivered, 0);
    assert_eq!(
        metric(&registry, "edge_relay_outcomes_lost_total", &[]),
        2.0,
        "the error's and the attachment's accepted records"
    );
}
