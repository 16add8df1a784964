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
