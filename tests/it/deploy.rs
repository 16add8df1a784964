//! The deploy artefacts name only metrics the relay exports, and the README's
//! catalog lists every one of them.

use std::collections::BTreeSet;

use edge_relay::metrics::Metrics;

fn exported() -> BTreeSet<String> {
    let metrics = Metrics::new(&prometheus::Registry::new()).unwrap();
    metrics.series_names().into_iter().collect()
}

/// Every `edge_relay_*` name in a text.
fn named_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("edge_relay_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn alerts_and_dashboard_use_only_exported_metrics() {
    let exported = exported();
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/edge-relay.json",
    ] {
        let named = named_in(&read(file));
        assert!(named.len() >= 5, "{file} names {named:?}");
        let unknown: Vec<_> = named.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics the relay does not export: {unknown:?}"
        );
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/edge-relay.json")).unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 8);
}

#[test]
fn the_readme_catalog_lists_every_metric() {
    let readme = named_in(&read("README.md"));
    for name in exported() {
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count")
            .to_owned();
        assert!(
            readme.contains(&base) || readme.contains(&name),
            "README does not describe {name}"
        );
    }
}

/// The `expr` of one alert in `alerts.yml` (one-line expressions).
fn alert_expr(name: &str) -> String {
    let alerts = read("deploy/prometheus/alerts.yml");
    let at = alerts
        .find(&format!("alert: {name}\n"))
        .unwrap_or_else(|| panic!("no alert {name}"));
    let line = alerts[at..]
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("expr:"))
        .unwrap();
    line["expr:".len()..].trim().to_owned()
}

/// Evaluates `name == N` or `name{label="value"} == N` against a relay's
/// series: whether the alert would fire (its `for` aside).
fn fires(expr: &str, relay: &crate::support::TestRelay) -> bool {
    let (series, value) = expr.split_once(" == ").expect("a comparison");
    let value: f64 = value.trim().parse().expect("a number");
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => {
            let (k, v) = rest.trim_end_matches('}').split_once('=').unwrap();
            (name, vec![(k, v.trim_matches('"'))])
        }
        None => (series, vec![]),
    };
    relay.metric(name, &labels) == value
}

/// `EdgeRelayKafkaDown` pages when the relay cannot reach its brokers, and
/// stays quiet on a relay writing to the file sink (which has none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_alert_fires_on_a_broker_down_not_on_the_file_sink() {
    use crate::support::*;
    let expr = alert_expr("EdgeRelayKafkaDown");
    let sink = sink_file();
    let relay = TestRelay::start(&config_text(&sink.section)).await;
    relay.wait_ready().await;
    assert!(!fires(&expr, &relay), "{expr} fires on the file sink");
    relay.stop(std::time::Duration::from_secs(5)).await;

    let kafka = mock_kafka();
    kafka.broker_down(1).expect("mock broker goes down");
    let relay = TestRelay::start(&config_text(&kafka_section(&kafka.bootstrap_servers()))).await;
    wait_until(
        "the relay never saw the broker down",
        std::time::Duration::from_millis(50),
        async || fires(&expr, &relay),
    )
    .await;
}

/// `systemctl reload` checks the file before the SIGHUP, the file
/// `ExecStart` runs with: a refused reload fails the command.
#[test]
fn the_systemd_reload_checks_the_file_first() {
    let unit = read("systemd/edge-relay.service");
    let value = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(key))
            .map(str::to_owned)
            .collect()
    };
    let start = value("ExecStart=");
    let config = start[0].split("--config ").nth(1).expect("a --config");
    let reload = value("ExecReload=");
    assert_eq!(reload.len(), 2, "{reload:?}");
    assert!(
        reload[0].ends_with(&format!("edge-relay check-config --config {config}")),
        "{reload:?}"
    );
    assert!(reload[1].contains("kill -HUP $MAINPID"), "{reload:?}");
}
