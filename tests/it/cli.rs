//! The command line: `--version`, `check-config`, and refusing a bad config before binding.

use std::process::Command;

use crate::support::*;

fn relay() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edge-relay"))
}

/// Runs `check-config` as set up in `command`; its summary, once it passed.
fn checked(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
    let summary = checked(relay().args(["check-config", "--config", example]));
    assert!(summary.starts_with("ok:"), "{summary}");
    assert!(
        summary.contains("file sink"),
        "the example runs without Kafka: {summary}"
    );
}

/// What the README says to do: uncomment `[kafka]` (its three tables, one
/// `# ` off each line) in a copy of the example. That must give a Kafka
/// configuration with the defaults, and nothing the reader did not ask for
/// (once, the SASL example lines came alive and asked for a password).
#[test]
fn check_config_accepts_the_example_with_kafka_uncommented() {
    let example = include_str!("../../config.toml.example");
    let start = example.find("\n# [kafka]\n").expect("a commented [kafka]") + 1;
    let end = example[start..]
        .find("\n\n")
        .map(|n| start + n)
        .expect("a blank line after the [kafka] tables");
    let uncommented: String = example[start..end]
        .lines()
        .map(|line| {
            line.strip_prefix("# ")
                .or_else(|| line.strip_prefix('#'))
                .unwrap_or(line)
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(uncommented.contains("[kafka.producer]"), "{uncommented}");
    let text = format!("{}{uncommented}{}", &example[..start], &example[end..]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, text).unwrap();
    let summary = checked(
        relay()
            .args(["check-config", "--config"])
            .arg(&path)
            .env_remove("KAFKA_PASSWORD"),
    );
    assert!(summary.contains("127.0.0.1:9092"), "{summary}");
    assert!(!summary.contains("SASL"), "{summary}");
}

/// The Kubernetes example's configuration, with the environment its pod
/// gives the relay: the variables it sets, and those Kubernetes adds for a
/// Service named `edge-relay` in the namespace (service links). Once, the
/// hash key's variable was read as an override and the sidecar never started.
#[test]
fn check_config_accepts_the_sidecar_example_in_its_pod_environment() {
    let manifest = include_str!("../../deploy/kubernetes/sidecar.yaml");
    let start = manifest
        .find("config.toml: |\n")
        .expect("the ConfigMap's config.toml")
        + "config.toml: |\n".len();
    let block = &manifest[start..manifest[start..].find("\n---").unwrap() + start];
    let indent = block.len() - block.trim_start().len();
    let text: String = block
        .lines()
        .map(|line| line.get(indent..).unwrap_or("").to_owned() + "\n")
        .collect();
    assert!(text.contains("[[projects]]"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let mut command = relay();
    command.args(["check-config", "--config"]).arg(&path);
    for name in ["KAFKA_BROKERS", "EDGE_RELAY_HASH_KEY"] {
        assert!(manifest.contains(&format!("- name: {name}")), "{name}");
    }
    command
        .env("KAFKA_BROKERS", "kafka-0.kafka:9092")
        .env("EDGE_RELAY_HASH_KEY", "0123456789abcdef0123456789abcdef")
        .env("EDGE_RELAY_SERVICE_HOST", "10.0.0.7")
        .env("EDGE_RELAY_SERVICE_PORT", "3000")
        .env("EDGE_RELAY_PORT", "tcp://10.0.0.7:3000")
        .env("EDGE_RELAY_PORT_3000_TCP_ADDR", "10.0.0.7");
    assert!(checked(&mut command).contains("kafka-0.kafka:9092"));
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

/// SIGHUP reloads the file: a new project is served at once; an invalid
/// file is refused and the old configuration keeps serving; SIGINT exits 0.
#[test]
fn sighup_reloads_and_sigint_exits_zero() {
    use crate::e2e_tansu::{signal_and_wait, start_relay};
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("items.jsonl");
    let text = config_text(&format!("[file_sink]\npath = \"{}\"\n", sink.display()));
    let mut relay = start_relay(dir.path(), &text);
    let config = dir.path().join("relay.toml");
    let pid = relay.process.0.id().to_string();
    let hup = || {
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success())
    };
    let post = |sdk: std::net::SocketAddr, project: u64, key: &str| -> u16 {
        let body = b"{}\n{\"type\":\"event\"}\n{\"message\":\"hi\"}\n";
        let mut stream = std::net::TcpStream::connect(sdk).unwrap();
        let request = format!(
            "POST /api/{project}/envelope/ HTTP/1.1\r\nHost: x\r\nX-Sentry-Auth: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            auth_header(key),
            body.len()
        );
        std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
        std::io::Write::write_all(&mut stream, body).unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
        answer[9..12].parse().unwrap()
    };
    const NEW_KEY: &str = "99999999999999999999999999999999";
    assert_eq!(post(relay.sdk, 99, NEW_KEY), 403);

    std::fs::write(
        &config,
        format!("{text}[[projects]]\nid = 99\npublic_keys = [\"{NEW_KEY}\"]\n"),
    )
    .unwrap();
    hup();
    relay.wait_for_log("configuration reloaded");
    assert_eq!(post(relay.sdk, 99, NEW_KEY), 200);

    std::fs::write(&config, "[server]\nlisten = \"nowhere\"\n").unwrap();
    hup();
    relay.wait_for_log("configuration reload refused");
    assert!(
        relay.process.0.try_wait().unwrap().is_none(),
        "an invalid file does not stop the relay"
    );
    assert_eq!(
        post(relay.sdk, 99, NEW_KEY),
        200,
        "the previous configuration keeps serving"
    );

    let status = signal_and_wait(&mut relay.process, "INT");
    assert!(status.success(), "exit status after SIGINT: {status}");
    relay.wait_for_log("SIGINT: fast shutdown");
}

/// Started from a shell whose soft limit on open files is low, the relay
/// raises it to the hard limit (each connection takes two descriptors);
/// when even the hard limit is short of `max_connections`, it says so.
#[test]
fn the_open_file_limit_is_raised_to_the_hard_one() {
    use crate::e2e_tansu::{signal_and_wait, spawn_relay};
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("items.jsonl");
    let config = dir.path().join("relay.toml");
    let text = config_text(&format!("[file_sink]\npath = \"{}\"\n", sink.display()));
    std::fs::write(&config, text).unwrap();
    let under = |limits: &str| {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("{limits} && exec \"$0\" run --config \"$1\""))
            .arg(env!("CARGO_BIN_EXE_edge-relay"))
            .arg(&config);
        spawn_relay(command, "info")
    };
    let open_files = |pid: u32| -> (String, String) {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("a line for open files")
            .to_owned();
        let mut fields = line["Max open files".len()..].split_whitespace();
        (
            fields.next().unwrap().to_owned(),
            fields.next().unwrap().to_owned(),
        )
    };

    let logged = |relay: &crate::e2e_tansu::RelayProcess, text: &str| {
        relay.started.iter().any(|line| line.contains(text))
    };
    for (limits, expected, raised, short) in [
        // A soft limit of 200 under a hard one of 4096: raised to 4096.
        ("ulimit -Sn 200 && ulimit -Hn 4096", "4096", true, false),
        // Both at 512, below the default 1024 connections' need: a warning.
        ("ulimit -n 512", "512", false, true),
    ] {
        let mut relay = under(limits);
        assert_eq!(
            logged(&relay, "raised the open-file limit"),
            raised,
            "{limits}: {:?}",
            relay.started
        );
        assert_eq!(
            logged(
                &relay,
                "open-file limit is below what server.max_connections needs"
            ),
            short,
            "{limits}: {:?}",
            relay.started
        );
        assert_eq!(
            open_files(relay.process.0.id()),
            (expected.to_owned(), expected.to_owned()),
            "{limits}"
        );
        assert!(signal_and_wait(&mut relay.process, "TERM").success());
    }
}

/// `edge-relay scrub` shows operators what a rule set does to an event.
#[test]
fn scrub_prints_the_scrubbed_event_and_the_redactions() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    let text = config_text(
        "[scrub]\nsensitive_fields = [\"order_secret\"]\n[[scrub.rules]]\nname = \"ticket\"\npattern = 'TCK-[0-9]{6}'\nmethod = \"mask\"\n",
    ) + "[projects.scrub]\ndefaults = false\n";
    std::fs::write(&path, text).unwrap();
    let event = r#"{"message":"TCK-123456 for alice@example.com","extra":{"order_secret":"s3"}}"#;
    let run = |project: Option<&str>| {
        let mut cmd = relay();
        cmd.args(["scrub", "--config"]).arg(&path);
        if let Some(p) = project {
            cmd.args(["--project", p]);
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(event.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let global = run(None);
    assert_eq!(global["event"]["message"], "***-****** for [email]");
    assert_eq!(global["event"]["extra"]["order_secret"], "[Filtered]");
    let rules: Vec<&str> = global["redactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert!(
        rules.contains(&"ticket") && rules.contains(&"email") && rules.contains(&"password"),
        "{rules:?}"
    );
    assert!(!global.to_string().contains("alice@"));
    // The last project (id 7 in the test config) turns the built-in rules off.
    let project = run(Some("7"));
    assert_eq!(
        project["event"]["message"],
        "***-****** for alice@example.com"
    );
    // An unknown project is an error, not a silent default.
    let out = relay()
        .args(["scrub", "--config"])
        .arg(&path)
        .args(["--project", "999"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65));
}

/// `edge-relay probe` is the container HEALTHCHECK: 0 for a 200, 1 otherwise.
#[test]
fn probe_reports_readiness() {
    use crate::e2e_tansu::{signal_and_wait, start_relay};
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("items.jsonl");
    let mut relay = start_relay(
        dir.path(),
        &config_text(&format!("[file_sink]\npath = \"{}\"\n", sink.display())),
    );
    let probe = |path: &str| relay_probe(&format!("http://{}{path}", relay.admin));
    assert!(probe("/readyz"), "ready");
    assert!(probe("/healthz"), "alive");
    assert!(!probe("/nope"), "a 404 is not healthy");
    assert!(signal_and_wait(&mut relay.process, "TERM").success());
    assert!(!probe("/healthz"), "nothing listens after the stop");
}

/// `server.worker_threads` sets how many threads serve requests, which
/// `/metrics` reports; 0 leaves the count to the runtime (one per CPU).
#[test]
fn worker_threads_set_the_request_threads() {
    use crate::e2e_tansu::{signal_and_wait, start_relay};
    let workers = |threads: usize| {
        let dir = tempfile::tempdir().unwrap();
        let sink = dir.path().join("items.jsonl");
        let mut relay = start_relay(
            dir.path(),
            &config_text_with_server(
                &format!("worker_threads = {threads}\n"),
                &format!("[file_sink]\npath = \"{}\"\n", sink.display()),
            ),
        );
        let url = format!("http://{}/metrics", relay.admin);
        let metrics = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() });
        assert!(signal_and_wait(&mut relay.process, "TERM").success());
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("edge_relay_runtime_workers "))
            .unwrap_or_else(|| panic!("no edge_relay_runtime_workers in {metrics}"))
            .parse::<usize>()
            .unwrap()
    };
    assert_eq!(workers(3), 3);
    assert_eq!(workers(1), 1);
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(workers(0), cpus, "one per CPU");
}

fn relay_probe(url: &str) -> bool {
    relay()
        .args(["probe", "--url", url])
        .status()
        .unwrap()
        .success()
}

/// Under systemd (`Type=notify`): READY=1 once listening, watchdog pings
/// while healthy, STOPPING=1 when the drain starts; then exit 0.
#[test]
fn systemd_notifications() {
    use std::io::{BufRead as _, BufReader};
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let config = dir.path().join("relay.toml");
    let sink = dir.path().join("items.jsonl");
    std::fs::write(
        &config,
        config_text(&format!("[file_sink]\npath = \"{}\"\n", sink.display())),
    )
    .unwrap();
    let mut child = relay()
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
    let mut received = Vec::new();
    let next = || {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification arrives");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    while !received.iter().any(|m: &String| m.contains("WATCHDOG=1")) {
        received.push(next());
    }
    assert!(received[0].contains("READY=1"), "{received:?}");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    loop {
        let m = next();
        if m.contains("STOPPING=1") {
            break;
        }
        assert!(m.contains("WATCHDOG=1"), "unexpected {m}");
    }
    assert!(child.wait().unwrap().success());
}

/// No event payload and no secret reaches the logs, even at trace level,
/// over HTTP/1.1 and h2c, for accepted and refused requests alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_carry_payloads_or_secrets() {
    use crate::e2e_tansu::{signal_and_wait, start_relay_with_log_level};
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("items.jsonl");
    let text = config_text(&format!("[file_sink]\npath = \"{}\"\n", sink.display()));
    let mut relay = start_relay_with_log_level(dir.path(), &text, "trace");
    let secret_body = br#"{}
{"type":"event"}
{"message":"payload-marker-7731","extra":{"password":"hunter2-log-secret"}}
"#;
    for client in [
        reqwest::Client::new(),
        reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap(),
    ] {
        for key in [KEY, "ffffffffffffffffffffffffffffffff"] {
            let _ = client
                .post(format!("http://{}/api/{PROJECT}/envelope/", relay.sdk))
                .header("x-sentry-auth", auth_header(key))
                .header("authorization", "Bearer auth-header-secret-55")
                .header("cookie", "sessionid=cookie-secret-66")
                .body(secret_body.to_vec())
                .send()
                .await
                .unwrap();
        }
    }
    assert!(signal_and_wait(&mut relay.process, "TERM").success());
    let logs: Vec<String> = relay.logs.try_iter().collect();
    assert!(logs.len() > 5, "trace logging was on: {} lines", logs.len());
    // The last line's report is in fields of its own, not a Debug dump.
    assert!(
        logs.iter().any(|l| l.contains("edge-relay stopped")
            && l.contains("requests_finished=true")
            && l.contains("undelivered=0")
            && l.contains("spooled=0")),
        "{logs:?}"
    );
    for secret in [
        "payload-marker-7731",
        "hunter2-log-secret",
        "auth-header-secret-55",
        "cookie-secret-66",
        KEY,
    ] {
        let leaks: Vec<&String> = logs.iter().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret} in the logs: {leaks:?}");
    }
}
