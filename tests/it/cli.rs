//! The command line: `--version`, `check-config`, and refusing a bad config before binding.

use std::process::Command;

use crate::support::*;

fn relay() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edge-relay"))
}

#[test]
fn version_prints_the_package_version() {
    let out = relay().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("edge-relay {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_accepts_the_shipped_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example");
    let out = relay()
        .args(["check-config", "--config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.starts_with("ok:"), "{summary}");
    assert!(
        summary.contains("file sink"),
        "the example runs without Kafka: {summary}"
    );
}

#[test]
fn check_config_names_the_bad_key_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        config_text("[kafka]\nbrokers = \"127.0.0.1:9092\"\ncompresion = \"lz4\"\n"),
    )
    .unwrap();
    let out = relay()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kafka.compresion"), "{err}");
    assert!(err.contains("unknown field"), "{err}");

    // `run` refuses it the same way, before binding anything.
    let out = relay()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));

    let out = relay()
        .args(["check-config", "--config", "/nonexistent/relay.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

/// SIGHUP is ignored for now (its default would kill the process); SIGINT stops it with exit 0.
#[test]
fn sighup_is_survived_and_sigint_exits_zero() {
    use crate::e2e_tansu::{signal_and_wait, start_relay};
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("items.jsonl");
    let text = config_text(&format!("[file_sink]\npath = \"{}\"\n", sink.display()));
    let mut relay = start_relay(dir.path(), &text);
    let pid = relay.process.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    relay.wait_for_log("SIGHUP");
    assert!(
        relay.process.0.try_wait().unwrap().is_none(),
        "SIGHUP ended the relay"
    );
    assert!(
        std::net::TcpStream::connect(relay.admin).is_ok(),
        "still serving after SIGHUP"
    );
    let status = signal_and_wait(&mut relay.process, "INT");
    assert!(status.success(), "exit status after SIGINT: {status}");
    relay.wait_for_log("SIGINT: fast shutdown");
}
