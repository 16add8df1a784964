use serde_json::json;

use super::*;

fn settings() -> Settings {
    Settings {
        defaults: true,
        scrub_ip_addresses: true,
        sensitive_fields: vec!["order_secret".into()],
        safe_fields: vec!["extra.order_id".into()],
        hash_key: Some("test-key".into()),
        methods: vec![],
        rules: vec![CustomRule {
            name: "ticket".into(),
            pattern: "TCK-[0-9]{6}".into(),
            method: Method::Mask,
            paths: vec!["extra.**".into(), "message".into()],
        }],
    }
}

fn scrubber() -> Scrubber {
    Scrubber::new(&settings()).unwrap()
}

fn text(s: &str) -> String {
    scrubber()
        .scrub_text(s)
        .map_or_else(|| s.to_owned(), |(t, _)| t)
}

#[test]
fn each_detector_in_free_text() {
    let cases = [
        (
            "card 4111 1111 1111 1111 declined",
            "card **** **** **** **** declined",
        ),
        ("card 4111-1111-1111-1111", "card ****-****-****-****"),
        ("amex 378282246310005", "amex ***************"),
        ("mail alice@example.com now", "mail [email] now"),
        ("from 203.0.113.7 today", "from [ip] today"),
        ("v6 2001:db8::1 here", "v6 [ip] here"),
        (
            "iban DE89370400440532013000",
            "iban ****************************"[..27].to_owned().leak(),
        ),
        ("ssn 123-45-6789", "ssn ***-**-****"),
        (
            "Authorization: Bearer abc.def-123",
            "Authorization: [Filtered]",
        ),
        ("sent Bearer abc.def-123 then", "sent Bearer [bearer] then"),
        (
            "tok eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig end",
            "tok [jwt] end",
        ),
        (
            "https://bob:hunter2@db.example.com/x",
            "https://[urlauth]@db.example.com/x",
        ),
        ("key AKIAIOSFODNN7EXAMPLE", "key [cloudkey]"),
        (
            "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "stripe [cloudkey]",
        ),
        (
            "gh ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "gh [cloudkey]",
        ),
        ("slack xoxb-1234567890-abcdefghij", "slack [cloudkey]"),
        (
            "at /home/alice/app/main.py",
            "at /home/[userpath]/app/main.py",
        ),
        ("at /Users/bob/Library", "at /Users/[userpath]/Library"),
        (
            "at C:\\Users\\carol\\proj",
            "at C:\\Users\\[userpath]\\proj",
        ),
        (
            "GET /x?step=2&token=abc123&page=1",
            "GET /x?step=2&token=[Filtered]&page=1",
        ),
        ("password=hunter2", "password=[Filtered]"),
    ];
    for (input, want) in cases {
        assert_eq!(text(input), want, "{input}");
    }
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY-----";
    assert_eq!(
        text(&format!("key: {pem} done")),
        "key: [Filtered] [pemkey] done".replace("[Filtered] ", "")
    );
    assert_eq!(
        text("cut -----BEGIN PRIVATE KEY-----\nMIIE"),
        "cut [pemkey]"
    );
}

#[test]
fn look_alikes_survive() {
    for s in [
        "order 4111111111111112 shipped", // Luhn-invalid
        "id 1234567812345678",
        "release shop@2.4.1 on 3.12.1",
        "at 2026-11-21T00:00:00Z",
        "uuid 9ec79c33-ec99-42ab-8353-589fcb2e04dc",
        "sha 3f786850e387550fdab836ed7e6dc881de23001b",
        "std::vector<int> at 12:30:45",
        "mac 00:1a:2b:3c:4d:5e",
        "the author wrote a tokenizer",
        "version 10.0.19041.1",
        "ssn-like 000-12-3456",
        "ordinary words and numbers 42",
    ] {
        assert_eq!(text(s), s, "{s}");
    }
}

#[test]
fn sensitive_keys_anywhere_in_the_tree() {
    let mut event = json!({
        "extra": {"password": "hunter2", "order_secret": 1234, "nested": {"api_key": "k", "ok": "fine"}},
        "contexts": {"db": {"credentials": {"user": "u", "pass": "p"}}},
        "exception": {"values": [{"stacktrace": {"frames": [{"function": "login", "vars": {"pwd": "x", "user_id": 7}}]}}]},
        "request": {
            "headers": {"Authorization": "Basic dXNlcjpwYXNz", "Cookie": "sessionid=abc; theme=dark", "X-Api-Key": "k1", "Accept": "text/html"},
            "cookies": {"sessionid": "abc", "theme": "dark"},
            "query_string": [["step", "2"], ["token", "abc123"]],
            "data": {"card_number": "4111111111111111", "amount": "19.99"},
            "env": {"REMOTE_ADDR": "203.0.113.7", "SERVER_NAME": "web-7"}
        },
        "breadcrumbs": {"values": [{"data": {"url": "https://api.example.com/v1?access_token=xyz&page=2"}}]},
        "tags": {"session": "s1", "shop": "eu-1"},
        "user": {"id": "1042", "email": "alice@example.com", "ip_address": "203.0.113.7"}
    });
    let redactions = scrubber().scrub_event(&mut event);
    assert_eq!(event["extra"]["password"], "[Filtered]");
    assert_eq!(event["extra"]["order_secret"], "[Filtered]");
    assert_eq!(event["extra"]["nested"]["api_key"], "[Filtered]");
    assert_eq!(event["extra"]["nested"]["ok"], "fine");
    assert_eq!(
        event["contexts"]["db"]["credentials"],
        json!({"user": "[Filtered]", "pass": "[Filtered]"})
    );
    let frame = &event["exception"]["values"][0]["stacktrace"]["frames"][0];
    assert_eq!(frame["vars"]["pwd"], "[Filtered]");
    assert_eq!(frame["vars"]["user_id"], 7);
    assert_eq!(frame["function"], "login");
    let request = &event["request"];
    assert_eq!(request["headers"]["Authorization"], "[Filtered]");
    assert_eq!(request["headers"]["Cookie"], "[Filtered]");
    assert_eq!(request["headers"]["X-Api-Key"], "[Filtered]");
    assert_eq!(request["headers"]["Accept"], "text/html");
    assert_eq!(
        request["cookies"],
        json!({"sessionid": "[Filtered]", "theme": "[Filtered]"})
    );
    assert_eq!(
        request["query_string"],
        json!([["step", "2"], ["token", "[Filtered]"]])
    );
    assert_eq!(request["data"]["card_number"], "****************");
    assert_eq!(request["data"]["amount"], "19.99");
    assert_eq!(request["env"]["REMOTE_ADDR"], Value::Null);
    assert_eq!(request["env"]["SERVER_NAME"], "web-7");
    assert_eq!(
        event["breadcrumbs"]["values"][0]["data"]["url"],
        "https://api.example.com/v1?access_token=[Filtered]&page=2"
    );
    assert_eq!(event["tags"]["session"], "[Filtered]");
    assert_eq!(event["user"]["email"], "[email]");
    assert_eq!(event["user"]["ip_address"], Value::Null);
    assert_eq!(event["user"]["id"], "1042");

    // The record names rules and paths, never values.
    let listed = serde_json::to_string(&redactions).unwrap();
    for secret in ["hunter2", "abc123", "4111", "alice@", "203.0.113"] {
        assert!(!listed.contains(secret), "{secret} in {listed}");
        assert!(
            !event.to_string().contains(secret),
            "{secret} left in the event"
        );
    }
    assert!(redactions
        .iter()
        .any(|r| r.rule.as_ref() == "password" && r.path == "request.headers.Authorization"));
    assert!(redactions.iter().any(|r| r.rule.as_ref() == "ip"
        && r.path == "user.ip_address"
        && r.method == Method::Remove));
    assert_eq!(
        event["_meta"]["user"]["email"][""]["rem"],
        json!([["email", "s"]])
    );
    assert_eq!(
        event["_meta"]["request"]["query_string"]["1"]["1"][""]["rem"],
        json!([["password", "s"]])
    );
}

#[test]
fn custom_rules_obey_their_paths_and_safe_fields_win() {
    let mut event = json!({
        "message": "see TCK-123456",
        "extra": {"t": "TCK-654321", "order_id": "4111111111111111"},
        "tags": {"t": "TCK-111111"},
        "event_id": "4111111111111111",
        "sdk": {"name": "alice@example.com"}
    });
    scrubber().scrub_event(&mut event);
    assert_eq!(event["message"], "see ***-******");
    assert_eq!(event["extra"]["t"], "***-******");
    assert_eq!(event["tags"]["t"], "TCK-111111", "outside the rule's paths");
    assert_eq!(
        event["extra"]["order_id"], "4111111111111111",
        "configured safe field"
    );
    assert_eq!(event["event_id"], "4111111111111111", "built-in safe field");
    assert_eq!(
        event["sdk"]["name"], "alice@example.com",
        "built-in safe field"
    );
}

#[test]
fn methods_can_be_chosen_per_rule() {
    let mut s = settings();
    s.methods = vec![
        ("email".into(), Method::Hash),
        ("password".into(), Method::Remove),
    ];
    let scrubber = Scrubber::new(&s).unwrap();
    let mut a = json!({"user": {"email": "alice@example.com"}, "extra": {"password": "x"}});
    let mut b = json!({"contact": "alice@example.com"});
    scrubber.scrub_event(&mut a);
    scrubber.scrub_event(&mut b);
    let hashed = a["user"]["email"].as_str().unwrap();
    assert_eq!(hashed.len(), 64);
    assert_eq!(
        b["contact"], hashed,
        "the same value pseudonymises the same way"
    );
    assert_eq!(a["extra"]["password"], Value::Null);
    assert_eq!(
        a["_meta"]["extra"]["password"][""]["rem"],
        json!([["password", "x"]])
    );
}

#[test]
fn a_forged_meta_shields_nothing() {
    let mut e = json!({
        "extra": {"password": "hunter2", "note": "mail alice@example.com"},
        "_meta": {"extra": {"password": {"": {"rem": [["password", "s"]]}}, "note": {"": {"rem": [["email", "s"]]}}}}
    });
    scrubber().scrub_event(&mut e);
    assert_eq!(e["extra"]["password"], "[Filtered]");
    assert_eq!(e["extra"]["note"], "mail [email]");
}

#[test]
fn hashing_is_idempotent_too() {
    let mut s = settings();
    s.methods = vec![
        ("email".into(), Method::Hash),
        ("password".into(), Method::Hash),
    ];
    let scrubber = Scrubber::new(&s).unwrap();
    let mut once = json!({"user": {"email": "alice@example.com"}, "extra": {"password": "x", "note": "by bob@example.com"}});
    scrubber.scrub_event(&mut once);
    let mut twice = once.clone();
    assert!(scrubber.scrub_event(&mut twice).is_empty());
    assert_eq!(twice, once);
}

#[test]
fn switches_turn_rule_groups_off() {
    let mut s = settings();
    s.defaults = false;
    s.scrub_ip_addresses = false;
    let scrubber = Scrubber::new(&s).unwrap();
    let mut e = json!({"m": "alice@example.com 203.0.113.7", "password": "x", "order_secret": "y", "user": {"ip_address": "1.2.3.4"}});
    scrubber.scrub_event(&mut e);
    assert_eq!(e["m"], "alice@example.com 203.0.113.7");
    assert_eq!(e["password"], "x", "built-in key words are off");
    assert_eq!(
        e["order_secret"], "[Filtered]",
        "configured key words still apply"
    );
    assert_eq!(e["user"]["ip_address"], "1.2.3.4");
}

#[test]
fn strings_that_match_nothing_are_left_alone() {
    let mut e = json!({"message": "all fine", "n": 3, "list": [1, "two", null]});
    let before = e.clone();
    assert!(scrubber().scrub_event(&mut e).is_empty());
    assert_eq!(e, before, "no _meta either");
}

/// Scrubs `text` both ways; the text pass's result as a tree, or `None`
/// when it fell back. Asserts that both ways agree.
fn both_ways(scrubber: &Scrubber, text: &str) -> Option<Value> {
    let mut tree: Value = serde_json::from_str(text).unwrap();
    let mut by_tree = scrubber.scrub_event(&mut tree);
    let by_text = match scrubber.scrub_event_text(text) {
        Err(Fallback) => return None,
        Ok(None) => {
            assert!(
                by_tree.is_empty(),
                "only the tree pass redacted {by_tree:?}"
            );
            assert_eq!(tree, serde_json::from_str::<Value>(text).unwrap());
            return Some(tree);
        }
        Ok(Some((out, mut redactions))) => {
            let out: Value = serde_json::from_slice(&out).expect("the text pass writes JSON");
            assert_eq!(out, tree, "the two passes scrubbed differently");
            redactions.sort_by(|a, b| (&a.path, &a.rule).cmp(&(&b.path, &b.rule)));
            redactions
        }
    };
    by_tree.sort_by(|a, b| (&a.path, &a.rule).cmp(&(&b.path, &b.rule)));
    assert_eq!(by_text, by_tree);
    Some(tree)
}

#[test]
fn the_text_pass_scrubs_as_the_tree_pass() {
    let s = scrubber();
    let events = [
        json!({"message": "card 4111 1111 1111 1111", "user": {"ip_address": "1.2.3.4", "email": "a@b.co"}}),
        json!({"request": {"headers": [["Authorization", "Bearer abc"], ["X-Token", "t"]],
            "cookies": [["session", "s3cret"]], "query_string": "token=abc&x=1",
            "data": {"password": {"nested": [1, true, null, "x"]}}}}),
        json!({"extra": {"order_id": "alice@example.com", "order_secret": 5, "note": "TCK-123456"},
            "sdk": {"name": "alice@example.com"}, "event_id": "4111111111111111"}),
        json!({"breadcrumbs": {"values": [{"message": "line\nwith \"quotes\" and é, mail bob@example.org"}]}}),
        json!({"nothing": ["to", "see", 1.5, -2, {"here": null}], "empty": {}, "list": []}),
        json!({"pairs": [["password", "x"], ["ok", "203.0.113.9"]], "not_pairs": [["a", "b", "c"]]}),
    ];
    for event in events {
        for text in [
            serde_json::to_string(&event).unwrap(),
            serde_json::to_string_pretty(&event).unwrap(),
        ] {
            assert!(both_ways(&s, &text).is_some(), "fell back on {text}");
        }
    }
    // Escapes are read; untouched text keeps its own spelling.
    let text = r#"{"m": "caf\u00e9 \u0061lice@example.com", "k": "\u00e9"}"#;
    let (out, _) = s.scrub_event_text(text).unwrap().unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.starts_with(r#"{"m": "café [email]", "k": "\u00e9","_meta":"#),
        "{out}"
    );
}

/// A string under a sensitive key is redacted by the text pass without a
/// tree of its own: alike with every method, escaped or not, already
/// redacted or not, and beside values that are not strings.
#[test]
fn the_text_pass_redacts_secret_strings_as_the_tree_pass_with_every_method() {
    for method in [Method::Replace, Method::Mask, Method::Hash, Method::Remove] {
        let mut settings = settings();
        settings.methods = vec![("password".into(), method)];
        let s = Scrubber::new(&settings).unwrap();
        for text in [
            r#"{"extra": {"password": "hunter2", "order_secret": "s3cret"}}"#,
            r#"{"extra": {"password": "hun\"ter\u00e92", "token": "a\nb"}}"#,
            r#"{"extra": {"password": "[Filtered]", "api_key": "", "secret": "****"}}"#,
            r#"{"extra": {"password": ["x", 5, {"a": "y"}], "token": 12345, "secret": null}}"#,
            r#"{"request": {"data": {"password": "p@ss w0rd!", "next": "ok"}}}"#,
        ] {
            let scrubbed = both_ways(&s, text);
            assert!(scrubbed.is_some(), "fell back on {text} ({method:?})");
        }
    }
}

#[test]
fn the_text_pass_leaves_the_rare_shapes_to_the_tree() {
    let s = scrubber();
    for text in [
        r#"{"_meta": {}, "m": "x"}"#,
        r#"{"k\u0065y": "x"}"#,
        r#"{"n": 1e309}"#,
        r#"{"a": {"n": [1, 2e400]}}"#,
        r#"{"m": "\ud800"}"#,
    ] {
        assert_eq!(s.scrub_event_text(text), Err(Fallback), "{text}");
    }
    // A `_meta` below the top is an ordinary key.
    assert!(both_ways(&s, r#"{"extra": {"_meta": "a@b.co"}}"#).is_some());
}

#[test]
fn the_text_pass_refuses_exactly_the_numbers_the_tree_refuses() {
    let s = scrubber();
    for number in [
        "1.7976931348623157e308",
        "1.7976931348623158e308",
        "1.7976931348623159e308",
        "1e309",
        "-1e309",
        "1e-400",
        "123456789012345678901234567890",
        &"9".repeat(400),
        "-0",
        "1E5",
        "1e-7",
    ] {
        let text = format!(r#"{{"n": {number}, "m": "a@b.co"}}"#);
        let tree_takes = serde_json::from_str::<Value>(&text).is_ok();
        let text_takes = s.scrub_event_text(&text).is_ok();
        assert_eq!(text_takes, tree_takes, "{number}");
    }
}

#[test]
fn pairs_nested_deeper_than_four_go_to_the_tree() {
    let s = scrubber();
    let nested = |levels: usize| {
        let mut v = json!([["password", "x"]]);
        for _ in 1..levels {
            v = json!([["k", v]]);
        }
        serde_json::to_string(&json!({ "extra": v })).unwrap()
    };
    assert!(both_ways(&s, &nested(4)).is_some());
    assert_eq!(s.scrub_event_text(&nested(5)), Err(Fallback));
    // Which still scrubs it.
    let mut tree: Value = serde_json::from_str(&nested(5)).unwrap();
    assert_eq!(s.scrub_event(&mut tree).len(), 1);
}

#[test]
fn many_redactions_are_all_recorded_once() {
    let items: Vec<Value> = (0..20_000)
        .map(|_| json!({"ip_address": "203.0.113.7"}))
        .collect();
    let text = serde_json::to_string(&json!({ "list": items })).unwrap();
    let s = scrubber();
    let event = both_ways(&s, &text).expect("the text pass takes it");
    assert_eq!(event["_meta"]["list"].as_object().unwrap().len(), 20_000);
    assert!(event["list"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["ip_address"].is_null()));
}

#[test]
fn a_key_repeated_in_the_text_is_recorded_once() {
    let members = vec![r#""ip_address": "203.0.113.7""#; 10_000].join(", ");
    let text = format!(r#"{{"user": {{{members}, "email": "a@b.co"}}}}"#);
    let (out, redactions) = scrubber().scrub_event_text(&text).unwrap().unwrap();
    let paths: Vec<&str> = redactions.iter().map(|r| r.path.as_str()).collect();
    // Sorted by path.
    assert_eq!(paths, ["user.email", "user.ip_address"]);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        out.matches(r#""ip_address": null"#).count(),
        10_000,
        "every copy is scrubbed"
    );
    let event: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        event["_meta"]["user"]["ip_address"][""]["rem"],
        json!([["ip", "x"]])
    );
}

#[test]
fn meta_written_directly_is_the_trees_bytes() {
    let r = |rule: &str, path: &[&str], method| {
        let ends = path
            .iter()
            .scan(0, |end, p| {
                let at = *end + p.len();
                *end = at + 1;
                Some(at)
            })
            .collect::<Ends>();
        (
            ends,
            Redaction {
                rule: rule.into(),
                path: path.join("."),
                method,
            },
        )
    };
    let found = vec![
        r("email", &["user", "email"], Method::Replace),
        r("password", &["extra", "b\"q"], Method::Mask),
        r("card", &["user", "email"], Method::Replace),
        r("ip", &["user"], Method::Remove),
        r("email", &["user", "email"], Method::Replace),
        r("email", &["a", "0", "1"], Method::Hash),
    ];
    let mut meta = Value::Object(Map::new());
    for (ends, redaction) in &found {
        record_meta(&mut meta, segments(ends, &redaction.path), redaction);
    }
    let mut out = Vec::new();
    assert!(write_meta(&mut out, &settle(found)));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        serde_json::to_string(&meta).unwrap()
    );
    assert!(!write_meta(
        &mut Vec::new(),
        &[r("email", &["a", ""], Method::Replace)]
    ));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn secretish() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "alice@example.com".to_owned(),
            "4111 1111 1111 1111".into(),
            "203.0.113.7".into(),
            "Bearer abc".into(),
            "token=xyz".into(),
            "/home/bob/x".into(),
            "TCK-123456".into(),
            "plain".into(),
            "2026-11-21".into(),
            "[Filtered]".into(),
            "--password".into(),
            "".into(),
        ])
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            // A card as a number; an argv flag whose value is the next item.
            Just(json!(4111111111111111u64)),
            Just(json!("--token")),
            (secretish(), secretish()).prop_map(|(a, b)| Value::String(format!("{a} {b}"))),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let key = prop::sample::select(vec![
                "password",
                "extra",
                "message",
                "user",
                "ip_address",
                "data",
                "x",
                "query_string",
                "t",
            ]);
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((key, inner), 0..5).prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Scrubbing twice equals scrubbing once, and the output is always valid JSON.
        #[test]
        fn idempotent_and_valid(v in json_value()) {
            let s = scrubber();
            let mut once = json!({"extra": v});
            s.scrub_event(&mut once);
            let text = serde_json::to_string(&once).unwrap();
            let reparsed: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(&reparsed, &once);
            let mut twice = once.clone();
            let again = s.scrub_event(&mut twice);
            prop_assert!(again.is_empty(), "second pass redacted {:?}", again);
            prop_assert_eq!(twice, once);
        }

        /// The text pass and the tree pass scrub alike, compact or pretty.
        #[test]
        fn text_pass_equals_tree_pass(v in json_value(), pretty in any::<bool>()) {
            let event = json!({"extra": v, "request": {"headers": [["Cookie", "a=b"]]}});
            let text = if pretty {
                serde_json::to_string_pretty(&event).unwrap()
            } else {
                serde_json::to_string(&event).unwrap()
            };
            prop_assert!(both_ways(&scrubber(), &text).is_some());
        }

        /// Arbitrary text never panics, and what comes out is never longer than a bound.
        #[test]
        fn arbitrary_text_never_panics(t in "\\PC{0,200}") {
            let _ = scrubber().scrub_text(&t);
        }
    }
}

/// Secrets in the shapes SDKs and libraries write them, each gone whole.
#[test]
fn secrets_in_every_shape_text_takes() {
    for (input, secrets) in [
        // Percent-encoded URLs, query strings and form bodies.
        (
            "https://x/c?email=bob%40example.com&card=4111%201111%201111%201111",
            &["bob", "4111"][..],
        ),
        (
            "user%5Bemail%5D=bob%40example.com&user%5Bpassword%5D=hunter2",
            &["bob", "hunter2"],
        ),
        // Auth schemes with their credentials (a python-requests message).
        (
            "headers {'Authorization': 'Basic dXNlcjpodW50ZXIy'}",
            &["dXNl"],
        ),
        ("Authorization: Token abc123def", &["abc123def"]),
        // Quoted values whole, however they are quoted.
        (
            r#"{"password":"correct horse battery staple"}"#,
            &["horse", "staple"],
        ),
        ("password: \"hunter 2\", next", &["hunter", "2\""]),
        (r#"{"password"=>"hunter2"}"#, &["hunter2"]),
        ("{'token': b'secret'}", &["secret'"]),
        (r#"{\"password\":\"hunter2\"}"#, &["hunter2"]),
        // Lists and objects whole.
        (r#"secret: ["a1b2","c3d4"]"#, &["a1b2", "c3d4"]),
        (r#"token: {"k":"v9v9"}"#, &["v9v9"]),
        // A URL's password with no user.
        ("redis://:s3cr3t@cache:6379/0", &["s3cr3t"]),
        // More vendors' keys, and PGP's key blocks.
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            &["MfKQ9r8GKYqrTwjUPD8I"],
        ),
        ("key sk-proj-Ab12Cd34Ef56Gh78Ij90KlMnOp", &["Ab12Cd34Ef56"]),
        ("key sk-ant-api03-Ab12Cd34Ef56Gh78Ij90Kl", &["Ab12Cd34Ef56"]),
        (
            "SG.abcdefghijklmnop1234.qrstuvwxyzABCDEF5678",
            &["qrstuvwxyz"],
        ),
        (
            "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX",
            &["XXXXXXXX"],
        ),
        (
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----",
            &["lQOYBF"],
        ),
        ("PHPSESSID=a1b2c3d4e5", &["a1b2c3d4e5"]),
        // Percent-escapes inside a value do not end it early.
        (
            "user=al&password=Summer%232024%21x&next=1",
            &["Summer", "2024", "21x"][..],
        ),
        (
            "postgres://app:Xq7%2Fk9%3Fz@db.internal/orders",
            &["Xq7", "k9", "3Fz"],
        ),
        // An `@` in a URL's password; commas and semicolons inside a value.
        ("postgres://app:p@ss@db:5432/app", &["p@ss", "ss@"]),
        ("password=abc,def;ghi next", &["abc", "def", "ghi"]),
        // Cards glued to `_`, or dotted.
        ("cc_4111111111111111_exp", &["4111", "1111"]),
        ("card 4111.1111.1111.1111", &["4111", "1111"]),
        // Windows user folders with spaces in their names.
        (r"C:\Users\John Smith\AppData\app.py", &["John", "Smith"]),
    ] {
        let out = text(input);
        for secret in secrets {
            assert!(!out.contains(secret), "{input} gave {out}");
        }
    }
}

/// What looks like a secret and is not stays, as consumers need it.
#[test]
fn versions_timestamps_and_token_counts_stay() {
    for input in [
        "Mozilla/5.0 (X11) AppleWebKit/537.36 Chrome/131.0.0.0 Safari/537.36",
        "at 1733450001230 ms",
        "100% done",
    ] {
        assert_eq!(text(input), input);
    }
    assert_eq!(text("from 10.1.2.3/24"), "from [ip]/24");
    // A list of pairs is still split at its commas and semicolons.
    assert_eq!(
        text("token=abc,user=bob; session=s1;Path=/, later"),
        "token=[Filtered],user=bob; session=[Filtered];Path=/, later"
    );
    assert_eq!(
        text("password=a1, retrying"),
        "password=[Filtered], retrying"
    );
    assert_eq!(
        text(r"C:\Users\John Smith wrote"),
        r"C:\Users\[userpath] Smith wrote",
        "a space ends a Windows user's name unless a folder follows"
    );
    assert_eq!(text("v2024.1231.0000.1234 ok"), "v2024.1231.0000.1234 ok");
    assert_eq!(text("http://10.1.2.3/x"), "http://[ip]/x");
    let s = scrubber();
    let mut event = json!({
        "release": "myapp@1.2.3.4",
        "dist": "1.0.0.1",
        "modules": {"django": "4.2.0.1"},
        "contexts": {
            "app": {"app_version": "4.1.0.2"},
            "browser": {"name": "Chrome", "version": "131.0.0.0"},
            "trace": {"parent_span_id": "4111111111111111"},
        },
        "spans": [{"data": {"gen_ai.usage.input_tokens": 120, "max_tokens": 4096,
            "access_tokens": ["t1"]}}],
    });
    let before = event.clone();
    s.scrub_event(&mut event);
    event.as_object_mut().unwrap().remove("_meta");
    let mut want = before;
    want["spans"][0]["data"]["access_tokens"] = json!(["[Filtered]"]);
    assert_eq!(event, want);
    let m = |key: &str| s.keys.is_sensitive(key);
    for key in [
        "basicAuth",
        "dbPwd",
        "userSsn",
        "access_tokens",
        "tokens_secret",
        "db_pass",
        "smtpPass",
        "pw",
        "connect.sid",
        "PHPSESSID",
        "api.key",
    ] {
        assert!(m(key), "{key}");
    }
    for key in [
        "input_tokens",
        "max_tokens",
        "ai.total_tokens.used",
        "authority",
        "passport",
        "compass_heading",
        "bypass",
        "side",
        "sidebar",
        "pwa",
    ] {
        assert!(!m(key), "{key}");
    }
}

/// A pair's key decides as it came, before its own secrets are redacted,
/// in both passes (`token@example.com` names a token; `[email]` would not).
#[test]
fn a_pairs_key_decides_as_it_came() {
    let s = scrubber();
    let text = r#"{"request":{"query_string":[["token@example.com","qtok-789"],["step","2"]]}}"#;
    let tree = both_ways(&s, text).expect("the text pass takes pairs");
    assert_eq!(
        tree["request"]["query_string"],
        json!([["[email]", "[Filtered]"], ["step", "2"]])
    );
}

/// Both strings of a `[string, value]` pair are text (lists of tuples), in
/// both passes.
#[test]
fn both_strings_of_a_pair_are_searched() {
    let s = scrubber();
    let text = r#"{"extra":{"r":[["bob@example.com","Bob"],["4111 1111 1111 1111","visa"],["password","x"]]}}"#;
    let tree = both_ways(&s, text).expect("the text pass takes pairs");
    assert_eq!(
        tree["extra"]["r"],
        json!([
            ["[email]", "Bob"],
            ["**** **** **** ****", "visa"],
            ["password", "[Filtered]"]
        ])
    );
}

/// Command lines: an argv list (Python's `sys.argv` in `extra`, Node's
/// `process.argv`) gives a sensitive flag's value as the next argument; a
/// command line in one string gives it after a space.
#[test]
fn command_line_options_hide_their_values() {
    let s = scrubber();
    let event = r#"{"extra":{"sys.argv":["manage.py","--password","hunter2","--db-token","-x","--user","bob","-secret","s3"],
        "args":["--token","--verbose","--api_key",7,"--token"]}}"#;
    let tree = both_ways(&s, event).expect("the text pass takes argv lists");
    assert_eq!(
        tree["extra"]["sys.argv"],
        json!([
            "manage.py",
            "--password",
            "[Filtered]",
            "--db-token",
            "-x",
            "--user",
            "bob",
            "-secret",
            "[Filtered]"
        ])
    );
    // A flag followed by another flag has no value; a number is a value too;
    // a flag at the end has nothing after it.
    assert_eq!(
        tree["extra"]["args"],
        json!(["--token", "--verbose", "--api_key", "[Filtered]", "--token"])
    );
    assert_eq!(
        text("mysql -u root --password hunter2 --host db"),
        "mysql -u root --password [Filtered] --host db"
    );
    assert_eq!(
        text("run --api-key \"a b c\" --token=t1"),
        "run --api-key \"[Filtered]\" --token=[Filtered]"
    );
    for untouched in [
        "run --password --verbose",
        "the token -- a word -- stays",
        "x--password y",
        "--passport ABC123",
    ] {
        assert_eq!(text(untouched), untouched);
    }
}

/// Card numbers written as JSON numbers are scrubbed in both passes, and
/// become strings; other numbers stay numbers.
#[test]
fn card_numbers_as_json_numbers() {
    let s = scrubber();
    let event = r#"{"extra":{"cc":4111111111111111,"ts":1733450001230,"n":[5555555555554444,42],
        "big":18446744073709551615,"float":4111111111111111.0,"neg":-4111111111111111,
        "order_id":5555555555554444}}"#;
    let tree = both_ways(&s, event).expect("the text pass takes numbers");
    assert_eq!(
        tree["extra"],
        json!({"cc": "****************", "ts": 1733450001230u64, "n": ["****************", 42],
            "big": 18446744073709551615u64, "float": 4111111111111111.0, "neg": -4111111111111111i64,
            "order_id": 5555555555554444u64})
    );
    assert!(tree["_meta"]["extra"]["cc"][""]["rem"].is_array(), "{tree}");
}

/// Session updates keep their id: `sid` is a sensitive word in other keys
/// (`connect.sid`), and Sentry refuses a session whose `sid` is not a UUID.
#[test]
fn session_updates_keep_their_id() {
    let s = scrubber();
    let session = r#"{"sid":"7c7b6585-5fea-4a9c-a3b0-9d5b8e6f1a2b","did":"u-42","status":"exited",
        "errors":0,"started":"2026-12-06T03:00:00Z","attrs":{"release":"shop@2.4.1","environment":"prod"},
        "extra":{"connect.sid":"s%3Aabc"}}"#;
    let tree = both_ways(&s, session).expect("the text pass takes sessions");
    assert_eq!(tree["sid"], "7c7b6585-5fea-4a9c-a3b0-9d5b8e6f1a2b");
    assert_eq!(tree["attrs"]["release"], "shop@2.4.1");
    assert_eq!(tree["extra"]["connect.sid"], "[Filtered]");
}

/// Text that is UTF-8 but for some stray bytes (a log file attachment cut
/// mid-character) keeps its other bytes as they came when a secret in it is
/// redacted. (Without the UTF-8 `é`, it would read as single-byte text.)
#[test]
fn bytes_that_are_not_utf8_stay_as_they_came() {
    let s = scrubber();
    let (out, redactions) = s
        .scrub_bytes(b"password=x \xff\xfe caf\xc3\xa9 bob@example.com\xc3")
        .unwrap();
    assert_eq!(
        out,
        b"password=[Filtered] \xff\xfe caf\xc3\xa9 [email]\xc3",
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(redactions.len(), 2);
    assert_eq!(s.scrub_bytes(b"nothing \xff here"), None);
    assert_eq!(
        s.scrub_bytes("caf\u{e9} a@b.co".as_bytes()).unwrap().0,
        "caf\u{e9} [email]".as_bytes()
    );
}

/// Card codes, one-time and recovery codes, Azure keys, framework master
/// keys, SAML responses and signed-URL signatures are secrets; so are more
/// vendors' tokens. Plural `tokens` are counts only when they are numbers.
#[test]
fn more_key_words_and_vendor_tokens() {
    let s = scrubber();
    let event = r#"{"request":{"data":{"cvc":"314","otp":"771204","passcode":"2468","recoveryCode":"a1b2"},
        "headers":{"Ocp-Apim-Subscription-Key":"3f9a1c0e","x-functions-key":"Qm9v"}},
        "extra":{"APP_KEY":"base64:Q2x9","RAILS_MASTER_KEY":"5f3c9a1e","API Key":"k-3ax6",
        "oauth_tokens":{"access":"ya29.x"},"input_tokens":120,"SAMLResponse":"PHNhbWxw","AccessKeyId":"x"}}"#;
    let tree = both_ways(&s, event).expect("the text pass takes it");
    for (section, key) in [
        ("request", "cvc"),
        ("request", "otp"),
        ("request", "passcode"),
        ("request", "recoveryCode"),
    ] {
        assert_eq!(tree[section]["data"][key], "[Filtered]", "{key}");
    }
    for key in ["Ocp-Apim-Subscription-Key", "x-functions-key"] {
        assert_eq!(tree["request"]["headers"][key], "[Filtered]", "{key}");
    }
    for key in [
        "APP_KEY",
        "RAILS_MASTER_KEY",
        "API Key",
        "SAMLResponse",
        "AccessKeyId",
    ] {
        assert_eq!(tree["extra"][key], "[Filtered]", "{key}");
    }
    assert_eq!(tree["extra"]["oauth_tokens"]["access"], "[Filtered]");
    assert_eq!(tree["extra"]["input_tokens"], 120);
    for (input, secret) in [
        (
            "AccountName=acme;AccountKey=q8Zr1kT7yP2mVbLw==;EndpointSuffix=core.windows.net",
            "q8Zr1k",
        ),
        (
            "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey=Zr1kT7yP2mV=",
            "Zr1kT7",
        ),
        ("https://a.blob.core.windows.net/c/f.pdf?sv=2022-11-02&sig=Xk9c3pWq7Lr2", "Xk9c3"),
        (
            "https://discord.com/api/webhooks/1187654321098765432/Xq9Z3kLw7TqP0vN4rS8uY2eH6jD5gF1aBcDeFgHiJkLmNoPq",
            "Xq9Z3k",
        ),
        (
            "https://api.telegram.org/bot7012345678:AAHk9Zq3kLw7TqP0vN4rS8uY2eH6jD5gF1a/sendMessage",
            "AAHk9Z",
        ),
        ("401 using hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567", "AbCdEf"),
        ("Authorization failed for ya29.a0AfB_byC1x9Zq3kLw7TqP0", "a0AfB"),
    ] {
        let out = text(input);
        assert!(!out.contains(secret), "{input} gave {out}");
    }
}

/// What a review probe found over-scrubbed, or missed, around paths,
/// emails, versions and key words.
#[test]
fn paths_emails_versions_and_descriptions() {
    for (input, secret) in [
        (
            r"[Errno 2] No such file: 'C:\\Users\\j.doe\\AppData\\acme.ini'",
            "j.doe",
        ),
        ("file:///C:/Users/bob/proj/app.js", "bob"),
        ("at file:///home/carol/app.py", "carol"),
        ("PATH=/usr/bin:/home/dave/bin", "dave"),
        (
            "/srv/exports/report_alice.smith@example.com_2024-05-01.csv",
            "alice",
        ),
        ("https://ipinfo.io/203.0.113.77/json", "113.77"),
        ("ALTER ROLE etl WITH PASSWORD 'Rep0rt!ng'", "Rep0rt"),
        ("CREATE USER 'etl'@'%' IDENTIFIED BY 'Etl-Pa55'", "Etl-Pa55"),
        (
            "<Login><user>alice</user><password>Hunter2!x</password></Login>",
            "Hunter2",
        ),
        (
            r#"<soap:Body><ns:apiKey type="x">9f86d081884c</ns:apiKey>"#,
            "9f86d0",
        ),
        ("Authorization: bearer 9f86d081884c7d65", "9f86d0"),
        (
            "GET / HTTP/1.1\nCookie: _ga=GA1.2.3; uid=u-4411; theme=dark\nHost: x",
            "u-4411",
        ),
        ("curl -u deploy:S3cr3t https://x/api", "S3cr3t"),
        (
            "Server=db;Database=app;User Id=app;Password=my pass phrase;Encrypt=true",
            "phrase",
        ),
    ] {
        let out = text(input);
        assert!(!out.contains(secret), "{input} gave {out}");
    }
    for input in [
        "https://api.example.com/api/Users/8812/orders",
        "webpack://shop/./src/pages/home/FeedList.tsx",
        "app:///src/pages/home/FeedList.tsx",
        "Failed to load https://cdn.example.com/img/logo@2x.png",
        "Could not load 'Newtonsoft.Json, Version=13.0.0.0, Culture=neutral'",
        "built with v1.2.3.4",
        r"Call to undefined method App\Models\Feed::add()",
        "missing bearer token in header",
        "io.jsonwebtoken.ExpiredJwtException: JWT expired at 2024-05-01T10:00:00Z",
        "Max retries exceeded with url https://auth.acme.io:8443/oauth/token?grant_type=client_credentials",
        "PublicKeyToken=30ad4fe6b2a6aeed",
        "<user>alice</user><passwordHint/><token_type>Bearer</token_type>",
        "SyntaxError: Unexpected token: <",
        "token: ' '",
    ] {
        assert_eq!(text(input), input);
    }
    let s = scrubber();
    let event = r#"{"tags":{"auth.provider":"google-oauth2","session.sampled":"true","app.version":"3.12.0.1"},
        "extra":{"token_type":"Bearer","signature_algorithm":"RS256","tokenizer":"cl100k_base",
        "access_token":"t0k3n","x-auth-token":"t1"},"spans":[{"data":{"llm.token_count.prompt":812}}]}"#;
    let tree = both_ways(&s, event).expect("the text pass takes it");
    assert_eq!(tree["tags"]["auth.provider"], "google-oauth2");
    assert_eq!(tree["tags"]["session.sampled"], "true");
    assert_eq!(tree["tags"]["app.version"], "3.12.0.1");
    assert_eq!(tree["extra"]["token_type"], "Bearer");
    assert_eq!(tree["extra"]["signature_algorithm"], "RS256");
    assert_eq!(tree["extra"]["tokenizer"], "cl100k_base");
    assert_eq!(tree["extra"]["access_token"], "[Filtered]");
    assert_eq!(tree["extra"]["x-auth-token"], "[Filtered]");
    assert_eq!(tree["spans"][0]["data"]["llm.token_count.prompt"], 812);
    // Ids of digits alone stay, whatever their checksum; a card under
    // another key, or inside an id's text, does not.
    let event = r#"{"tags":{"shopify.order_id":"5543210987651","orderId":"4111111111111111"},
        "extra":{"paid":"4111111111111111","valid":"4111111111111111","id_note":"card 4111111111111111"}}"#;
    let tree = both_ways(&s, event).expect("the text pass takes it");
    assert_eq!(tree["tags"]["shopify.order_id"], "5543210987651");
    assert_eq!(tree["tags"]["orderId"], "4111111111111111");
    assert_eq!(tree["extra"]["paid"], "****************");
    assert_eq!(tree["extra"]["valid"], "****************");
    assert_eq!(tree["extra"]["id_note"], "card ****************");
}

/// Leaks found by the fifteenth session's probe: lowercase IBANs,
/// zero-padded addresses, passwords set through a SQL function, and the
/// fields of multipart forms and HTML inputs named by a sensitive key.
#[test]
fn ibans_addresses_sql_functions_and_named_fields() {
    let form = "------WebKitFormBoundary7MA4\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nhunter2 x!\r\n------WebKitFormBoundary7MA4\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nalice\r\n------WebKitFormBoundary7MA4--";
    for (input, secret) in [
        ("refund to de89 3704 0044 0532 0130 00 failed", "0532"),
        ("account gb82west12345698765432 closed", "west1234"),
        ("IBAN DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX", "0532"),
        ("connect from 010.000.000.001 refused", "000.001"),
        (
            "UPDATE users SET password = crypt('Hunter2x', gen_salt('bf'))",
            "Hunter2x",
        ),
        ("SET PASSWORD FOR 'app'@'%' = PASSWORD('S3cure!')", "S3cure"),
        (form, "hunter2"),
        (
            "Content-Disposition: form-data; name=\"api_key\"\n\nk-77a1",
            "77a1",
        ),
        (
            r#"<form><input type="password" name="password" value="Hunter2!x"></form>"#,
            "Hunter2",
        ),
        ("<input value='tok_9f86d0' name='api_key'/>", "9f86d0"),
        ("<input name=password value=Hunter2x>", "Hunter2x"),
    ] {
        let out = text(input);
        assert!(!out.contains(secret), "{input} gave {out}");
    }
    let out = text(form);
    assert!(out.contains("name=\"username\"\r\n\r\nalice\r\n"), "{out}");
    assert!(out.ends_with("------WebKitFormBoundary7MA4--"), "{out}");
    for input in [
        "Content-Disposition: form-data; name=\"username\"\r\n\r\nalice",
        r#"<input type="password" name="password" placeholder="Password">"#,
        "<label>name: password</label>",
        "token De89370400440532013000x",
        "IBAN DE65 3704 0044 0532 0130 0012 is too long",
        "build 1.02.003.4444",
    ] {
        assert_eq!(text(input), input);
    }
}

/// Over-scrubs the fifteenth session's probe found: code in a frame's
/// context lines, and a DSN's public key taken for an email.
#[test]
fn code_and_dsn_keys_are_kept() {
    for input in [
        "    token = getToken()",
        "  const apiKey = this.apiKey;",
        "        password = self.password_hash",
        "    session = auth.session_for(user)",
        "sentry_sdk.init(dsn=\"https://a1b2c3d4e5f60718293a4b5c6d7e8f90@o1.ingest.sentry.io/42\")",
    ] {
        assert_eq!(text(input), input);
    }
    for (input, secret) in [
        ("token = 'tok_9f86d081'", "9f86d0"),
        ("token = encrypt('Hunter2x')", "Hunter2x"),
        ("token=abc123()x", "abc123"),
        ("https://bob.smith@example.com/", "bob.smith"),
        ("see https://a1b2c3d4@example.com/", "a1b2c3d4"),
    ] {
        let out = text(input);
        assert!(!out.contains(secret), "{input} gave {out}");
    }
}

/// What the fifteenth session's second probe found, in events as SDKs
/// send them: releases outside the top level, typed attributes of logs and
/// spans, pair lists with one odd entry, `{name, value}` lists, flags and
/// times under sensitive keys, token usage figures, SQL placeholders, and
/// prose after a key.
#[test]
fn releases_attributes_pairs_and_prose() {
    let s = scrubber();
    let event = r#"{"tags":{"release":"web-frontend@1.4.0-beta.hotfix"},
        "attrs":{"release":"WpfApp@1.0.0.0","environment":"production"},
        "contexts":{"trace":{"data":{"sentry.release":"MyApp@2.1.0.5"}}},
        "items":[{"attributes":{
            "sentry.release":{"value":"WpfApp@1.0.0.0","type":"string"},
            "app.version":{"value":"1.2.3.4","type":"string"},
            "http.request.header.authorization":{"value":"Bearer abcdefghijklmnop1","type":"string"},
            "gen_ai.usage.input_tokens":{"value":120,"type":"integer"},
            "user.id":{"value":"4532015112830366","type":"string"}}}],
        "request":{"headers":[["Authorization","Token 9f8e7d6c5b4a3"],["X-Api-Key","k9f8e7d6c5b4a"],["DNT"],null]},
        "extra":{"form":[{"name":"password","value":"hunter2"},{"name":"user","value":"alice"},{"value":"t0k","name":"api_key"}],
            "user":{"has_password":true,"password_changed_at":"2024-01-01T00:00:00Z","session_duration":1234,
                "secret_name":"prod/db","access_key":"Zq81mX0pLk2Vb7","pin":4821},
            "usage":{"prompt_tokens":10,"completion_tokens_details":{"reasoning_tokens":5},"token_usage":{"input":3}}}}"#;
    let mut tree: Value = serde_json::from_str(event).unwrap();
    s.scrub_event(&mut tree);
    assert_eq!(tree["tags"]["release"], "web-frontend@1.4.0-beta.hotfix");
    assert_eq!(tree["attrs"]["release"], "WpfApp@1.0.0.0");
    assert_eq!(
        tree["contexts"]["trace"]["data"]["sentry.release"],
        "MyApp@2.1.0.5"
    );
    let attributes = &tree["items"][0]["attributes"];
    assert_eq!(attributes["sentry.release"]["value"], "WpfApp@1.0.0.0");
    assert_eq!(attributes["app.version"]["value"], "1.2.3.4");
    let auth = &attributes["http.request.header.authorization"];
    assert_eq!(auth["value"], "[Filtered]");
    assert_eq!(auth["type"], "string");
    assert_eq!(attributes["gen_ai.usage.input_tokens"]["value"], 120);
    assert_eq!(attributes["gen_ai.usage.input_tokens"]["type"], "integer");
    assert_eq!(attributes["user.id"]["value"], "4532015112830366");
    let headers = &tree["request"]["headers"];
    assert_eq!(headers[0][1], "[Filtered]");
    assert_eq!(headers[1][1], "[Filtered]");
    assert_eq!(headers[2][0], "DNT");
    let form = &tree["extra"]["form"];
    assert_eq!(form[0]["value"], "[Filtered]");
    assert_eq!(form[1]["value"], "alice");
    assert_eq!(form[2]["value"], "[Filtered]");
    let user = &tree["extra"]["user"];
    assert_eq!(user["has_password"], true);
    assert_eq!(user["password_changed_at"], "2024-01-01T00:00:00Z");
    assert_eq!(user["session_duration"], 1234);
    assert_eq!(user["secret_name"], "prod/db");
    assert_eq!(user["access_key"], "[Filtered]");
    assert_eq!(user["pin"], "[Filtered]");
    let usage = &tree["extra"]["usage"];
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 5);
    assert_eq!(usage["token_usage"]["input"], 3);
    // The text pass agrees, where it takes the event; a value before its
    // sensitive name goes to the tree.
    assert!(s.scrub_event_text(event).is_err());
    let in_order = event.replace(
        r#"{"value":"t0k","name":"api_key"}"#,
        r#"{"name":"api_key","value":"t0k"}"#,
    );
    let by_text = both_ways(&s, &in_order).expect("the text pass takes it");
    assert_eq!(by_text["extra"]["form"][2]["value"], "[Filtered]");
    assert_eq!(
        by_text["items"][0]["attributes"]["http.request.header.authorization"]["type"],
        "string"
    );

    for input in [
        "password: This field is required.",
        "token: invalid signature",
        "JSON.parse: unexpected token: u at line 1",
        r#"SELECT "django_session"."session_key" FROM "django_session" WHERE ("django_session"."session_key" = %s) LIMIT 21"#,
        "UPDATE users SET reset_password_token = $1, password = :password WHERE id = ?",
        "WHERE auth_token=%(auth_token)s AND session = @p1",
        "git@github.com:acme/backend.git: Permission denied (publickey)",
        "scp deploy@db.internal:/srv/app.tar . failed",
    ] {
        assert_eq!(text(input), input);
    }
    for (input, secret) in [
        ("password: hunter2 expired", "hunter2"),
        ("login failed, password: hunter", "hunter"),
        ("token: 9f86d081884c7d65 rejected", "9f86d0"),
        ("mail bob@example.com: bounced", "bob@"),
        // An address in a cache key, and before a `:` and a word.
        ("GET user:alice.smith@example.com:prefs", "alice"),
        (
            "login failed for alice.smith@example.com:invalid password",
            "alice",
        ),
        ("\"alice@example.com\":\"x\"", "alice"),
    ] {
        let out = text(input);
        assert!(!out.contains(secret), "{input} gave {out}");
    }
}

/// Passwords given on command lines without a `=` (`mysql -phunter2`,
/// `sshpass -p`, `redis-cli -a`, `docker login -p`), in Redis commands
/// (`AUTH`, `CONFIG SET requirepass`) and MySQL's `SET PASSWORD FOR`; a
/// lone `-p` (a prompt) and prose that mentions AUTH are kept.
#[test]
fn command_line_and_redis_passwords() {
    let cases = [
        (
            "mysql -u root -phunter2 -h db app",
            "mysql -u root -p[Filtered] -h db app",
        ),
        (
            "mysqldump -uroot -p'hunter2' app",
            "mysqldump -uroot -p[Filtered] app",
        ),
        (
            "sshpass -p hunter2 ssh bob@host",
            "sshpass -p [Filtered] ssh bob@host",
        ),
        (
            "sshpass -p'hunter2' ssh host",
            "sshpass -p[Filtered] ssh host",
        ),
        (
            "redis-cli -h cache -a hunter2 ping",
            "redis-cli -h cache -a [Filtered] ping",
        ),
        (
            "docker login -u bob -p hunter2 registry",
            "docker login -u bob -p [Filtered] registry",
        ),
        ("AUTH hunter2", "AUTH [Filtered]"),
        ("AUTH default hunter2", "AUTH default [Filtered]"),
        ("AUTH hunter2\r\nPING", "AUTH [Filtered]\r\nPING"),
        (
            "SET PASSWORD FOR 'bob'@'%' = \"hunter2\"",
            "SET PASSWORD FOR 'bob'@'%' = \"[Filtered]\"",
        ),
        (
            "CONFIG SET requirepass hunter2",
            "CONFIG SET requirepass [Filtered]",
        ),
        (
            "config set masterauth hunter2",
            "config set masterauth [Filtered]",
        ),
        (
            "SET PASSWORD FOR 'bob'@'%' = 'hunter2'",
            "SET PASSWORD FOR 'bob'@'%' = '[Filtered]'",
        ),
        // Kept.
        ("mysql -u root -p -h db app", "mysql -u root -p -h db app"),
        (
            "mysql --protocol tcp -P 3306",
            "mysql --protocol tcp -P 3306",
        ),
        (
            "Login failed: AUTH failed for user",
            "Login failed: AUTH failed for user",
        ),
        (
            "docker login registry.example.com",
            "docker login registry.example.com",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(text(input), want, "{input}");
    }
}

/// Four numbers under a version or build key are a version, in a tag pair
/// as in an object, and after the word `build` as after `version`; an
/// address elsewhere is still one.
#[test]
fn versions_in_pairs_builds_and_prose() {
    let s = scrubber();
    let mut tree: Value = serde_json::from_str(
        r#"{"tags":[["app.version","1.2.3.4"],["build_number","1.0.0.1"],["client_ip","10.1.2.3"],["peer","10.1.2.3"]],
            "extra":{"build_number":"1.0.0.1","buildNumber":"2.0.0.1","build_host":"10.0.0.12","builderIp":"10.0.0.13"},
            "query":[["release","jane@example.com"],["dist",{"password":"x"}],["bob@example.com","1.2.3.4"]]}"#,
    )
    .unwrap();
    let redactions = s.scrub_event(&mut tree);
    assert_eq!(tree["tags"][0][1], "1.2.3.4");
    assert_eq!(tree["tags"][1][1], "1.0.0.1");
    assert_eq!(tree["tags"][3][1], "[ip]");
    assert_eq!(tree["extra"]["build_number"], "1.0.0.1");
    assert_eq!(tree["extra"]["buildNumber"], "2.0.0.1");
    // Other keys that mention a build hold addresses.
    assert_eq!(tree["extra"]["build_host"], "[ip]");
    assert_eq!(tree["extra"]["builderIp"], "[ip]");
    // A pair's key names its value for versions only: a `release` pair is
    // scrubbed as any other (a release is safe as an object key alone).
    assert_eq!(tree["query"][0][1], "[email]");
    assert_eq!(tree["query"][1][1]["password"], "[Filtered]");
    // A key that was itself a secret names nothing.
    assert_eq!(tree["query"][2][0], "[email]");
    assert_eq!(tree["query"][2][1], "[ip]");
    // The redaction's path is the pair's index, as before.
    assert!(
        redactions.iter().any(|r| r.path == "tags.3.1"),
        "{redactions:?}"
    );
    // The text pass agrees (an escaped key goes to the tree: same result).
    let body = r#"{"tags":[["app.version","1.2.3.4"],["peer","10.1.2.3"],["app.version","1.2.3.4"],["bob@example.com","1.2.3.4"]]}"#;
    let out = both_ways(&s, body).expect("the text pass takes it");
    assert_eq!(out["tags"][0][1], "1.2.3.4");
    assert_eq!(out["tags"][1][1], "[ip]");
    assert_eq!(out["tags"][2][1], "1.2.3.4");
    assert_eq!(out["tags"][3][1], "[ip]");
    for (input, want) in [
        ("build 1.0.0.1 deployed", "build 1.0.0.1 deployed"),
        ("Build: 1.0.0.1", "Build: 1.0.0.1"),
        ("from 10.1.2.3 at noon", "from [ip] at noon"),
        ("rebuild 10.0.0.5 now", "rebuild [ip] now"),
    ] {
        assert_eq!(text(input), want, "{input}");
    }
}

/// Addresses with letters beyond ASCII (in the local part or the domain)
/// and with an apostrophe are redacted whole, not in part; the quotes and
/// words around an address stay.
#[test]
fn addresses_with_other_letters_and_apostrophes() {
    for (input, want) in [
        ("mail jörg@example.de now", "mail [email] now"),
        ("Ответ от иван.петров@пример.рф", "Ответ от [email]"),
        ("o'neil@example.com wrote", "[email] wrote"),
        ("bob@müller.de", "[email]"),
        ("name='bob@example.com'", "name='[email]'"),
        ("it's bob@example.com", "it's [email]"),
    ] {
        assert_eq!(text(input), want, "{input}");
    }
}

#[test]
fn one_compiler_shares_what_it_compiled_and_keeps_each_scrubbers_rules() {
    let mut compiler = Compiler::default();
    let rule = |name: &str, pattern: &str| CustomRule {
        name: name.into(),
        pattern: pattern.into(),
        method: Method::Replace,
        paths: vec![],
    };
    let with = |fields: &[&str], rules: Vec<CustomRule>| Settings {
        sensitive_fields: fields.iter().map(|f| f.to_string()).collect(),
        rules,
        ..settings()
    };
    let a = compiler
        .scrubber(&with(&["zzq_a"], vec![rule("ticket", "TCK-[0-9]{6}")]))
        .unwrap();
    // The same rules under other key words: the pattern set is shared.
    let b = compiler
        .scrubber(&with(&["zzq_b"], vec![rule("ticket", "TCK-[0-9]{6}")]))
        .unwrap();
    // Another rule list, and the same pattern under another name.
    let c = compiler
        .scrubber(&with(&[], vec![rule("order", "ORD-[0-9]{4}")]))
        .unwrap();
    let d = compiler
        .scrubber(&with(&[], vec![rule("case", "TCK-[0-9]{6}")]))
        .unwrap();
    assert_eq!(compiler.sets.len(), 2, "one set per distinct pattern list");
    assert_eq!(
        compiler.custom.len(),
        2,
        "one regex per distinct custom pattern"
    );
    assert!(compiler.builtins.iter().all(Option::is_some));

    let scrub = |s: &Scrubber, event: Value| {
        let mut event = event;
        s.scrub_event(&mut event);
        event
    };
    let event = || {
        json!({"message": "TCK-123456 ORD-1234 alice@example.com",
               "extra": {"zzq_a": "x", "zzq_b": "y"}})
    };
    let out = scrub(&a, event());
    assert_eq!(out["message"], "[ticket] ORD-1234 [email]");
    assert_eq!(out["extra"]["zzq_a"], FILTERED);
    assert_eq!(out["extra"]["zzq_b"], "y");
    let out = scrub(&b, event());
    assert_eq!(out["message"], "[ticket] ORD-1234 [email]");
    assert_eq!(out["extra"]["zzq_a"], "x");
    assert_eq!(out["extra"]["zzq_b"], FILTERED);
    let out = scrub(&c, event());
    assert_eq!(out["message"], "TCK-123456 [order] [email]");
    let out = scrub(&d, event());
    assert_eq!(out["message"], "[case] ORD-1234 [email]");
    // Each scrubber is what compiling it alone gives.
    for (s, settings) in [
        (&a, with(&["zzq_a"], vec![rule("ticket", "TCK-[0-9]{6}")])),
        (&c, with(&[], vec![rule("order", "ORD-[0-9]{4}")])),
    ] {
        let alone = Scrubber::new(&settings).unwrap();
        assert_eq!(scrub(s, event()), scrub(&alone, event()));
        assert_eq!(s.rule_names(), alone.rule_names());
    }
}

#[test]
fn past_the_fast_key_matchers_own_words_beside_the_shared_ones_find_the_same_keys() {
    let mut compiler = Compiler::default();
    let event = |i: usize| {
        json!({"extra": {format!("own_{i}"): "x", "own_other": "y", "api_key": "z",
                         "input_tokens": 12, "token_type": "bearer"}})
    };
    for i in 0..FAST_KEY_MATCHERS + 5 {
        let settings = Settings {
            sensitive_fields: vec![format!("own_{i}")],
            ..settings()
        };
        let mut out = event(i);
        compiler.scrubber(&settings).unwrap().scrub_event(&mut out);
        let extra = &out["extra"];
        assert_eq!(extra[format!("own_{i}")], FILTERED, "{i}");
        assert_eq!(extra["own_other"], "y", "{i}");
        assert_eq!(extra["api_key"], FILTERED, "{i}");
        assert_eq!(extra["input_tokens"], 12, "{i}");
        assert_eq!(extra["token_type"], "bearer", "{i}");
    }
    // Each list, and the built-in words alone that the last five share.
    assert_eq!(compiler.keys.len(), FAST_KEY_MATCHERS + 5 + 1);
}

/// Login and sign-up forms name their password field in the site's
/// language: those keys are secrets in the event's tree, and as keys of
/// `key=value` pairs in text; the other fields of the form stay.
#[test]
fn password_fields_in_other_languages() {
    let s = scrubber();
    let event = r#"{"request":{"data":{"benutzername":"alice","passwort":"Geheim123",
        "contraseña":"Secreto9","senha":"segredo1","mot_de_passe":"motsecret",
        "wachtwoord":"geheim2","пароль":"секрет1","パスワード":"himitsu3","parola":"segreto4",
        "Paßwort":"Geheim456","mật_khẩu":"bimat5","kata_sandi":"rahasia6","סיסמה":"sod7",
        "पासवर्ड":"gupt8","รหัสผ่าน":"khwamlap9"}}}"#;
    let tree = both_ways(&s, event).expect("the text pass takes it");
    let data = &tree["request"]["data"];
    for key in [
        "passwort",
        "contraseña",
        "senha",
        "mot_de_passe",
        "wachtwoord",
        "пароль",
        "パスワード",
        "parola",
        "Paßwort",
        "mật_khẩu",
        "kata_sandi",
        "סיסמה",
        "पासवर्ड",
        "รหัสผ่าน",
    ] {
        assert_eq!(data[key], "[Filtered]", "{key}");
    }
    assert_eq!(data["benutzername"], "alice");
    for (input, secret) in [
        ("benutzer=alice&kennwort=Geheim123", "Geheim123"),
        ("login failed: usuario=bob contrasena=Secreto9", "Secreto9"),
        ("mdp=motsecret2 pour alice", "motsecret2"),
        // Keys beyond ASCII in free text, as logs write them.
        ("login failed: usuario=bob contraseña=Secreto9", "Secreto9"),
        ("вход: логин=alice пароль=Секрет42", "Секрет42"),
        ("ユーザー=alice パスワード: himitsu77", "himitsu77"),
        ("Benutzer=alice Paßwort=Geheim456", "Geheim456"),
        ("tài_khoản=alice mật_khẩu=bimat55", "bimat55"),
    ] {
        let out = text(input);
        assert!(!out.contains(secret), "{input} gave {out}");
        assert!(
            out.contains("alice") || out.contains("bob"),
            "{input} gave {out}"
        );
    }
}

/// PHP's `var_dump` output in a message or an extra: the value of a
/// sensitive key, on the line after its `=>`, is hidden whatever its kind
/// (a string by the length PHP gives, quotes inside included; a number; a
/// nested array or object whole), for public, protected and private
/// properties alike; other keys' values stay.
#[test]
fn php_var_dump() {
    let dump = "object(App\\Models\\User)#12 (4) {\n  [\"name\"]=>\n  string(5) \"alice\"\n  \
        [\"password\":protected]=>\n  string(9) \"hun\"ter2!\"\n  \
        [\"apiToken\":\"App\\Models\\User\":private]=>\n  string(6) \"tk_9x7\"\n  \
        [\"pin\"]=>\n  int(4321)\n  [\"credentials\"]=>\n  array(1) {\n    [\"secret\"]=>\n    \
        string(6) \"s3cr3t\"\n  }\n  [\"visits\"]=>\n  int(3)\n}\n";
    let out = text(dump);
    for secret in ["hun\"ter2", "tk_9x7", "4321", "s3cr3t"] {
        assert!(!out.contains(secret), "{secret} in {out}");
    }
    for kept in [
        "string(5) \"alice\"",
        "int(3)",
        "[\"password\":protected]=>",
    ] {
        assert!(out.contains(kept), "{kept} lost from {out}");
    }
    // A string's length goes with it: it would tell the secret's.
    assert!(
        out.contains("[\"password\":protected]=>\n  [Filtered]\n"),
        "{out}"
    );
    assert!(
        !out.contains("string(9)") && !out.contains("string(6)"),
        "{out}"
    );
    // The same, held in an event: both passes agree.
    let event = serde_json::json!({"extra": {"user": dump}}).to_string();
    let tree = both_ways(&scrubber(), &event).expect("the text pass takes it");
    assert_eq!(tree["extra"]["user"], out);
}

/// A password with a quote in it, escaped as JSON, JavaScript and Python
/// escape it, in JSON or a repr held in a string: hidden whole, not cut at
/// the escaped quote.
#[test]
fn escaped_quotes_inside_a_quoted_secret() {
    for (input, secret) in [
        (
            r#"payload {"user": "bob", "password": "hun\"ter2"}"#,
            "ter2",
        ),
        (r#"{'user': 'bob', 'password': 'it\'s-s3cret'}"#, "s3cret"),
        (r#"token="a\\\"b-tail" next"#, "tail"),
    ] {
        let out = text(input);
        assert!(!out.contains(secret), "{input} gave {out}");
        assert!(
            out.contains("bob") || out.contains("next"),
            "{input} gave {out}"
        );
    }
}

/// A text attachment in a single-byte encoding (Latin-1, Windows-1252: the
/// logs of Windows programs in Western Europe) is scrubbed as the text it
/// is. Read as UTF-8 runs, a value with an accented letter was cut in two
/// at it and only its first part redacted (`passwort=[Filtered]\xfcssel`).
/// What is not redacted leaves byte for byte.
#[test]
fn single_byte_text_is_scrubbed_as_text() {
    let s = scrubber();
    let log = b"2026-12-07 Anmeldung j\xf6rg@example.com passwort=schl\xfcssel Gr\xfc\xdfe \x93ok\x94\r\n";
    let (out, redactions) = s.scrub_bytes(log).expect("secrets found");
    assert_eq!(
        out,
        b"2026-12-07 Anmeldung [email] passwort=[Filtered] Gr\xfc\xdfe \x93ok\x94\r\n",
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(redactions.iter().any(|r| &*r.rule == "email"));
    assert!(s.scrub_bytes(b"nothing secret in Gr\xfc\xdfe").is_none());
    // Every byte reads as one character and writes back as itself.
    let all: Vec<u8> = (0..=255).collect();
    let text = crate::scrub::latin1_text(&all).expect("not UTF-8: single-byte text");
    assert_eq!(crate::scrub::latin1_bytes(&text), Some(all));
    // UTF-8 with a stray byte is no single-byte text, nor is UTF-8 itself.
    assert!(crate::scrub::latin1_text("caf\u{e9} \u{ff}".as_bytes()).is_none());
    assert!(crate::scrub::latin1_text(b"caf\xc3\xa9 \xff").is_none());
    assert_eq!(crate::scrub::latin1_bytes("\u{100}"), None);
}

/// A text attachment in UTF-16 with its byte-order mark (Windows' "Unicode"
/// logs) is scrubbed as the text it is and written back in the same
/// encoding, mark included; without a secret it is left as it came.
#[test]
fn utf16_text_is_scrubbed_as_text() {
    let s = scrubber();
    let log = "\u{FEFF}2026-12-06 login alice@example.com password=hunter2 user=bob\r\n";
    for big_endian in [false, true] {
        let encode = |t: &str| crate::scrub::utf16_bytes(t, big_endian);
        let (out, redactions) = s.scrub_bytes(&encode(log)).expect("secrets found");
        let (text, was_big) = crate::scrub::utf16_text(&out).expect("still UTF-16, marked");
        assert_eq!(was_big, big_endian);
        assert_eq!(
            text,
            "\u{FEFF}2026-12-06 login [email] password=[Filtered] user=bob\r\n"
        );
        assert!(redactions.iter().any(|r| &*r.rule == "email"));
        assert!(s.scrub_bytes(&encode("\u{FEFF}nothing here")).is_none());
    }
    // A lone surrogate is no UTF-16 text: the bytes are scrubbed as they are.
    assert!(crate::scrub::utf16_text(&[0xFF, 0xFE, 0x00, 0xD8]).is_none());
    assert!(crate::scrub::utf16_text(&[0xFF, 0xFE, 0x41]).is_none());
}

/// UTF-16 without its byte-order mark (some Windows programs and exports
/// write it so): every other byte a NUL, it is valid UTF-8 to a check of
/// bytes, and no rule would match it. Recognised when it is mostly ASCII
/// in one byte order, scrubbed as text and written back as it came,
/// unmarked; other bytes with NULs are not taken for it.
#[test]
fn unmarked_utf16_text_is_scrubbed_as_text() {
    let s = scrubber();
    // Letters beyond ASCII, before and after the units sampled, decode too.
    let log = format!(
        "{}login alice@example.com passwort=schlüssel-geheim user=bob\r\n{}",
        "2026-12-07 INFO start\r\n".repeat(20),
        "Grüße, Jörg. ".repeat(40)
    );
    for big_endian in [false, true] {
        let bytes = crate::scrub::utf16_bytes(&log, big_endian);
        let (out, redactions) = s.scrub_bytes(&bytes).expect("secrets found");
        let (text, was_big) = crate::scrub::utf16_text(&out).expect("still UTF-16");
        assert_eq!(was_big, big_endian);
        assert!(!text.starts_with('\u{FEFF}'), "no mark is added");
        assert!(text.contains("login [email] passwort=[Filtered] user=bob\r\n"));
        assert!(text.ends_with("Grüße, Jörg. "));
        assert!(redactions.iter().any(|r| &*r.rule == "email"));
        let plain = crate::scrub::utf16_bytes("nothing here, nothing at all", big_endian);
        assert!(
            std::str::from_utf8(&plain).is_ok(),
            "ASCII in UTF-16 is UTF-8 to a check"
        );
        assert!(crate::scrub::utf16_text(&plain).is_some());
        assert!(s.scrub_bytes(&plain).is_none());
    }
    // Not UTF-16: text without NULs; NUL-separated UTF-8 (`/proc/PID/environ`);
    // binary (a minidump's header); mostly ASCII that decodes to control
    // characters; an odd length; a lone surrogate.
    assert!(crate::scrub::utf16_text(b"plain text, even length").is_none());
    assert!(crate::scrub::utf16_text(b"HOME=/root\0PASSWORD=hunter2\0USER=bob\0\0").is_none());
    let mut dump = b"MDMP\x93\xa7\0\0\x0d\0\0\0\x20\0\0\0".to_vec();
    dump.extend((0..=255u8).flat_map(|b| [b, b.wrapping_mul(7), 0, 1]));
    assert!(crate::scrub::utf16_text(&dump).is_none());
    assert!(crate::scrub::utf16_text(b"a\0b\0\x01\0c\0").is_none());
    assert!(crate::scrub::utf16_text(b"a\0b\0c\0d").is_none());
    assert!(crate::scrub::utf16_text(b"a\0b\0\0\xd8c\0").is_none());
}

/// A process's environment or command line as Linux writes them
/// (`/proc/PID/environ`, `/proc/PID/cmdline`): entries each ended by a
/// NUL. Each entry is scrubbed on its own: a value ends at its NUL (the
/// next variable is not taken for part of it), an option's value is the
/// next argument, and the NULs stay where they were.
#[test]
fn nul_separated_entries_are_scrubbed_each() {
    let s = scrubber();
    let environ = b"HOME=/home/jdoe\0DB_PASSWORD=hunter2\0LANG=C.UTF-8\0MAIL=alice@example.com\0";
    let (out, redactions) = s.scrub_bytes(environ).expect("secrets found");
    assert_eq!(
        out,
        b"HOME=/home/[userpath]\0DB_PASSWORD=[Filtered]\0LANG=C.UTF-8\0MAIL=[email]\0"
    );
    assert!(redactions.iter().any(|r| &*r.rule == "password"));
    let cmdline = b"/usr/bin/app\0--password\0hunter2\0--verbose\0--token=abc123\0";
    let (out, _) = s.scrub_bytes(cmdline).expect("secrets found");
    assert_eq!(
        out,
        b"/usr/bin/app\0--password\0[Filtered]\0--verbose\0--token=[Filtered]\0"
    );
    // An entry may hold a line end; an option's value may look like an option.
    let multiline = b"GREETING=hi\nthere\0PASSWORD=hunter2\0--password\0--verbose\0";
    let (out, _) = s.scrub_bytes(multiline).expect("secrets found");
    assert_eq!(
        out,
        b"GREETING=hi\nthere\0PASSWORD=[Filtered]\0--password\0--verbose\0"
    );
    assert!(s
        .scrub_bytes(b"HOME=/root\0LANG=C\0--verbose\0yes\0")
        .is_none());
    // An entry written back decoded (its decoding held the secret) keeps its
    // `%00` as it came: a NUL would split it.
    let (out, _) = s
        .scrub_bytes(b"A=1\0Q=%00+alice%40example.com\0")
        .expect("secrets found");
    assert_eq!(out, b"A=1\0Q=%00[email]\0");

    use crate::scrub::is_nul_separated;
    assert!(is_nul_separated(b"A=1\0B=2\0"));
    assert!(is_nul_separated(b"A=1\0B=2"));
    assert!(!is_nul_separated(b"no NUL at all"));
    assert!(!is_nul_separated(b"\0A=1\0"), "none first");
    assert!(!is_nul_separated(b"A=1\0\0B=2"), "none beside another");
    assert!(
        !is_nul_separated(b"name.txt\0\0\0\0\0\x000000644\0"),
        "a tar header's padding"
    );
}

/// Scrubbers whose settings differ only in their one sensitive key, `field{i}`.
fn scrubbers_each_with_a_key(n: usize) -> Vec<Scrubber> {
    (0..n)
        .map(|i| {
            let mut settings = settings();
            settings.sensitive_fields = vec![format!("field{i}")];
            Scrubber::new(&settings).unwrap()
        })
        .collect()
}

/// The keys of `extra` that the text pass redacted.
fn redacted_keys(scrubber: &Scrubber, text: &str) -> Vec<String> {
    let (out, _) = scrubber.scrub_event_text(text).unwrap().unwrap_or_default();
    let out: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
    let mut keys: Vec<String> = out["extra"]
        .as_object()
        .map(|extra| {
            extra
                .iter()
                .filter(|(_, v)| *v != "plain")
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    keys
}

#[test]
fn key_classes_kept_across_events_are_kept_apart_by_scrubber() {
    // More scrubbers than a thread keeps classes for, used in turns on one
    // thread: each must redact its own key only, whatever ran before.
    let n = text::CACHED_SCRUBBERS + 2;
    let scrubbers = scrubbers_each_with_a_key(n);
    let fields: Vec<String> = (0..n).map(|i| format!(r#""field{i}": "plain""#)).collect();
    let event = format!(r#"{{"extra": {{{}}}}}"#, fields.join(", "));
    for round in 0..3 {
        for i in (0..n).chain((0..n).rev()).chain([0, n - 1, 0, 1, 0]) {
            assert_eq!(
                redacted_keys(&scrubbers[i], &event),
                vec![format!("field{i}")],
                "scrubber {i}, round {round}"
            );
        }
    }
    // A scrubber built again from the same settings (a reload) is another.
    let again = scrubbers_each_with_a_key(1).remove(0);
    assert_ne!(again.id, scrubbers[0].id);
}

#[test]
fn the_classes_kept_are_bounded() {
    let s = scrubber();
    // More distinct keys than are kept, then keys that must still be found;
    // a key too long to keep, twice.
    let long = format!("{}_password", "x".repeat(text::MAX_CACHED_KEY));
    let many: Vec<String> = (0..text::CACHED_KEYS + 10)
        .map(|i| format!(r#""item{i}": "plain""#))
        .collect();
    let event = format!(
        r#"{{"extra": {{{}, "password": "hunter2", "{long}": "hunter2"}}}}"#,
        many.join(", ")
    );
    for _ in 0..2 {
        assert_eq!(
            redacted_keys(&s, &event),
            vec!["password".to_owned(), long.clone()]
        );
    }
    text::KEY_CLASSES.with(|cache| {
        let cache = cache.borrow();
        assert!(cache.lists.len() <= text::CACHED_SCRUBBERS);
        for (_, classes) in &cache.lists {
            assert!(classes.len() <= text::CACHED_KEYS, "{}", classes.len());
            assert!(classes.keys().all(|k| k.len() <= text::MAX_CACHED_KEY));
        }
    });
}

#[test]
fn the_most_recently_used_scrubber_s_classes_stay() {
    let mut cache = text::KeyClasses::default();
    for id in 0..text::CACHED_SCRUBBERS as u64 + 2 {
        cache.of(id);
    }
    cache.of(3);
    let ids: Vec<u64> = cache.lists.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [3, 5, 4, 2]);
    // Each keeps its own list.
    cache
        .of(5)
        .insert("k".into(), text::KeyClass::of(&scrubber(), "password"));
    assert!(cache.of(3).is_empty());
    assert_eq!(cache.of(5).len(), 1);
}

/// A logged message's parameters, sent beside its template: Python's
/// logging integration (`logentry`: `message`, `formatted`, `params`; a
/// mapping for `%(name)s`), Java's (`message` as an object, `{}` slots),
/// and Sentry logs (`sentry.message.template`, `sentry.message.parameter.N`,
/// the template after the parameters, as the Python SDK writes them). A
/// parameter in a secret slot is redacted whole; the others are scrubbed
/// as any value is.
#[test]
fn log_parameters_in_secret_slots_are_redacted() {
    let s = scrubber();
    let event = r#"{"logentry":{"message":"login failed password=%s for %s from %s","formatted":"login failed password=Hunt3rTwo! for bob from 10.1.2.3",
        "params":["Hunt3rTwo!","bob","10.1.2.3"]},
        "extra":{"job":{"message":"retry %(user)s with --token %(token)s","params":{"user":"bob","token":"tk-99-secret"}}}}"#;
    let tree = both_ways(&s, event).expect("the text pass takes log parameters");
    assert_eq!(
        tree["logentry"]["params"],
        json!(["[Filtered]", "bob", "[ip]"])
    );
    assert_eq!(
        tree["logentry"]["formatted"],
        "login failed password=[Filtered] for bob from [ip]"
    );
    assert_eq!(
        tree["extra"]["job"]["params"],
        json!({"user": "bob", "token": "[Filtered]"})
    );
    assert!(tree["_meta"]["logentry"]["params"]["0"][""]["rem"][0][0] == "password");

    let java = r#"{"message":{"message":"user={} password={} url=https://{}:{}@db/app","formatted":"...",
        "params":["bob","J4vaLogPw","app","DbPw9"]}}"#;
    let tree = both_ways(&s, java).expect("the text pass takes log parameters");
    // `urlauth` takes a URL's `user:pass` whole, so both of its slots.
    assert_eq!(
        tree["message"]["params"],
        json!(["bob", "[Filtered]", "[Filtered]", "[Filtered]"])
    );

    // Sentry logs: the parameters come before their template.
    let logs = r#"{"items":[{"body":"user bob password=Hunt3rTwo!","attributes":{
        "sentry.message.parameter.0":{"value":"bob","type":"string"},
        "sentry.message.parameter.1":{"value":"Hunt3rTwo!","type":"string"},
        "sentry.message.parameter.2":{"value":7,"type":"integer"},
        "sentry.message.template":{"value":"user %s password=%s attempt %d","type":"string"}}},
        {"body":"Authorization: Bearer abc123xyz","attributes":{"sentry.message.template":"Authorization: {scheme} {credentials}",
        "sentry.message.parameter.scheme":"Bearer","sentry.message.parameter.credentials":"abc123xyz"}}]}"#;
    let tree = both_ways(&s, logs).expect("the text pass takes log parameters");
    let attrs = &tree["items"][0]["attributes"];
    assert_eq!(attrs["sentry.message.parameter.0"]["value"], "bob");
    assert_eq!(
        attrs["sentry.message.parameter.1"],
        json!({"value": "[Filtered]", "type": "string"})
    );
    assert_eq!(attrs["sentry.message.parameter.2"]["value"], 7);
    assert_eq!(
        tree["items"][1]["attributes"]["sentry.message.parameter.credentials"],
        "[Filtered]"
    );

    // Nothing secret in the template: the parameters are scrubbed as values.
    let plain = r#"{"logentry":{"message":"order %s for %s: {} items, 100%% done, {{literal}}","params":["A-1","alice@example.com","3"]}}"#;
    let tree = both_ways(&s, plain).expect("the text pass takes log parameters");
    assert_eq!(tree["logentry"]["params"], json!(["A-1", "[email]", "3"]));
    assert!(s.secret_slots("user %s did %s at {}").is_empty());
}

/// The slots a template has, and what names their parameters go by.
#[test]
fn template_slots_are_read_as_printf_and_braces_write_them() {
    use crate::scrub::template::slots;
    let names = |t: &str| -> Vec<Vec<String>> { slots(t).into_iter().map(|(_, n)| n).collect() };
    assert_eq!(
        names("a %s b %5.2f c %-3d %%s %(key)r"),
        [vec!["0"], vec!["1"], vec!["2"], vec!["key"]]
    );
    assert_eq!(
        names("{} {1} {name} {user:>8} {{x}} {@Id}"),
        [
            vec!["0".to_owned()],
            vec!["1".to_owned()],
            vec!["name".to_owned(), "1".to_owned()],
            vec!["user".to_owned(), "2".to_owned()],
            vec!["Id".to_owned(), "3".to_owned()],
        ]
    );
    // JSON or code in a message has no slot; nor has a lone `%` or `{`.
    assert!(names(r#"payload {"a": 1} at 50% { x"#).is_empty());
    let s = scrubber();
    assert!(s.secret_slots("password=%s").has_index(0));
    assert!(s.secret_slots("--api-key {}").has_index(0));
    assert!(s
        .secret_slots("password={secret} user={user}")
        .has("secret"));
    assert!(!s.secret_slots("password={secret} user={user}").has("user"));
}

/// A console line's arguments (`console.log("token:", t)`), which the
/// browser and Node SDKs keep in a breadcrumb's `data.arguments` beside the
/// joined `message`: a key alone with its separator names the next
/// argument, as a flag alone does in an argv list.
#[test]
fn console_arguments_after_a_sensitive_key_are_redacted() {
    let s = scrubber();
    let event = r#"{"breadcrumbs":{"values":[{"category":"console","message":"token: C0ns0leTok3n99",
        "data":{"arguments":["token:","C0ns0leTok3n99"],"logger":"console"}},
        {"category":"console","data":{"arguments":["password =",{"value":"pw9"},"Status:","ok","Session:","-1"]}}]}}"#;
    let tree = both_ways(&s, event).expect("the text pass takes console arguments");
    let crumbs = &tree["breadcrumbs"]["values"];
    assert_eq!(crumbs[0]["message"], "token: [Filtered]");
    assert_eq!(
        crumbs[0]["data"]["arguments"],
        json!(["token:", "[Filtered]"])
    );
    assert_eq!(
        crumbs[1]["data"]["arguments"],
        json!(["password =", {"value": "[Filtered]"}, "Status:", "ok", "Session:", "-1"])
    );
    use crate::scrub::rules::flag_name;
    assert_eq!(flag_name("token:"), Some("token"));
    assert_eq!(flag_name("API key :"), Some("API key"));
    assert_eq!(flag_name("token: abc"), None);
    assert_eq!(flag_name("--password="), None);
    assert_eq!(flag_name(":"), None);
}

/// Keys that name passwords and keys without the usual words: a web
/// form's `psw`, a PHP config's `$dbpass`, second-factor codes, and an
/// environment variable ending in `_KEY`, in a tree and in text.
#[test]
fn more_key_names_hide_their_values() {
    let s = scrubber();
    let event = r#"{"request":{"data":"uname=bob&psw=Hunt3rTwo!"},
        "extra":{"environ":{"OPENAI_KEY":"sk-T3Blbk","AIRFLOW__CORE__FERNET_KEY":"Fern3tK3y=","PATH":"/usr/bin"},
            "vars":{"dbpass":"x1","cardCode":"737","totp_code":"481516","creds":"('admin', 'x')","cache_key":"user:42"}},
        "message":"boot with MAILGUN_KEY=key-0123abcd and OTHER=1"}"#;
    let tree = both_ways(&s, event).expect("the text pass takes these");
    assert_eq!(tree["request"]["data"], "uname=bob&psw=[Filtered]");
    let environ = &tree["extra"]["environ"];
    assert_eq!(environ["OPENAI_KEY"], "[Filtered]");
    assert_eq!(environ["AIRFLOW__CORE__FERNET_KEY"], "[Filtered]");
    assert_eq!(environ["PATH"], "/usr/bin");
    let vars = &tree["extra"]["vars"];
    for key in ["dbpass", "cardCode", "totp_code", "creds"] {
        assert_eq!(vars[key], "[Filtered]", "{key}");
    }
    assert_eq!(vars["cache_key"], "user:42");
    assert_eq!(
        tree["message"],
        "boot with MAILGUN_KEY=[Filtered] and OTHER=1"
    );
}

/// Vendors' keys and tokens in free text, told by their own prefixes and
/// shapes (no key before them): Sentry's own auth tokens among them.
#[test]
fn more_vendor_tokens_in_text() {
    let hex = |n: usize| "0123456789abcdef".repeat(8)[..n].to_owned();
    let alnum = |n: usize| "Ab3dEf7hIj9kLm2nOp4qRs6tUv8wXy1z".repeat(8)[..n].to_owned();
    let cases = [
        format!(
            "sntrys_eyJpYXQiOjE3MDAwMDAwMDAsInVybCI6Imh0dHBzOi8vc2VudHJ5LmlvIn0_{}",
            alnum(43)
        ),
        format!("sntryu_{}", hex(64)),
        format!("sk-{}", alnum(48)),
        format!("sk-None-{}", alnum(40)),
        format!("shpat_{}", hex(32)),
        format!("hvs.{}", alnum(90)),
        format!("dop_v1_{}", hex(64)),
        format!("GOCSPX-{}", alnum(28)),
        format!("pypi-AgEIcHlwaS5vcmc{}", alnum(60)),
        format!("ATATT3x{}", alnum(120)),
        format!("lin_api_{}", alnum(40)),
        format!("PMAK-{}-{}", hex(24), hex(34)),
        format!("glsa_{}_{}", alnum(32), hex(8)),
        format!("NRAK-{}", "A1B2C3D4E5F6G7H8I9J0K1L2M3N"),
        format!("gsk_{}", alnum(52)),
        format!("sbp_{}", hex(40)),
        format!("dapi{}", hex(32)),
        format!(
            "AGE-SECRET-KEY-1{}",
            "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L".repeat(2)[..58].to_owned()
        ),
        format!("xoxe-1-{}", alnum(60)),
        format!("AAAAbcD3fG5:APA91b{}", alnum(120)),
    ];
    for token in &cases {
        let input = format!("request failed using {token} (retrying)");
        let out = text(&input);
        assert_eq!(out, "request failed using [cloudkey] (retrying)", "{token}");
    }
    // Look-alikes: a word, a short hex id, a commit, a UUID.
    for input in [
        "skip sk-learn and key-value stores",
        "commit 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b by dapi",
        "request 123e4567-e89b-12d3-a456-426614174000 of SKU SK-1234",
        // Identifiers of the shapes of keys that are not secret: a Twilio
        // key's SID, a lock's key of a hex digest.
        "twilio key SK0123456789abcdef0123456789abcdef",
        "took lock-key-0123456789abcdef0123456789abcdef",
    ] {
        assert_eq!(text(input), input);
    }
}

/// A password's `#`, `&` or `?` is part of it outside a query string; in
/// a query string `&` and `#` still end a value. A log template's slots
/// are no values.
#[test]
fn values_run_over_hash_and_ampersand_outside_query_strings() {
    for (input, want) in [
        (
            "Server=db;Database=app;User Id=sa;Password=P@ss#word1;",
            "Server=db;Database=app;User Id=sa;Password=[Filtered];",
        ),
        ("DB_PASSWORD=Sup3r#Secr3t&more", "DB_PASSWORD=[Filtered]"),
        (
            "DB_PASSWORD=abc?Secr3tTail next",
            "DB_PASSWORD=[Filtered] next",
        ),
        (
            "GET /cb?token=abc123&state=xyz#top",
            "GET /cb?token=[Filtered]&state=xyz#top",
        ),
        (
            "https://a.example/?x=1&api_key=k9f8#frag",
            "https://a.example/?x=1&api_key=[Filtered]#frag",
        ),
        ("password=abc&user=bob", "password=[Filtered]&user=bob"),
        ("token=what? no", "token=[Filtered]? no"),
        // Templates: slots stay.
        (
            "retry with --api-key %s for %s",
            "retry with --api-key %s for %s",
        ),
        (
            "login password={password} user={0}",
            "login password={password} user={0}",
        ),
    ] {
        assert_eq!(text(input), want, "{input}");
    }
}

/// `key:` after a word that makes it a secret's name, in prose and in a
/// Python dict's repr: `API key`, `Secret Key`.
#[test]
fn qualified_keys_in_prose_hide_their_values() {
    for (input, want) in [
        (
            "Invalid API key: 3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c",
            "Invalid API key: [Filtered]",
        ),
        (
            "{'API Key': 'k3yv4lue1234', 'Secret Key': 'secr3tv4lue567', 'Sort Key': 'name'}",
            "{'API Key': '[Filtered]', 'Secret Key': '[Filtered]', 'Sort Key': 'name'}",
        ),
        ("License key: ABCD-1234-EFGH", "License key: [Filtered]"),
        ("cache key: user:42", "cache key: user:42"),
        ("key: value", "key: value"),
    ] {
        assert_eq!(text(input), want, "{input}");
    }
}

/// Oracle's `user/password@` in a JDBC URL and on its tools' command lines.
#[test]
fn oracle_credentials_are_urlauth() {
    for (input, want) in [
        (
            "Cannot connect to jdbc:oracle:thin:scott/T1gerPass@dbhost:1521:ORCL",
            "Cannot connect to jdbc:oracle:thin:[urlauth]@dbhost:1521:ORCL",
        ),
        (
            "sqlplus system/Orac1ePwd@//db:1521/XE failed",
            "sqlplus [urlauth]@//db:1521/XE failed",
        ),
        (
            "SQL> connect app/S3cret@prod",
            "SQL> connect [urlauth]@prod",
        ),
        // No password: nothing to hide.
        (
            "jdbc:oracle:thin:@dbhost:1521:ORCL",
            "jdbc:oracle:thin:@dbhost:1521:ORCL",
        ),
        ("cannot connect to db/1@2x", "cannot connect to db/1@2x"),
    ] {
        assert_eq!(text(input), want, "{input}");
    }
}

/// Review cases of the log parameters: a template read in one syntax
/// (`50% done` beside braces is prose), parameters still walked as lists
/// (a pair among them), one mapping formatted whole by a `%s`, Serilog's
/// `{$name}` and printf's `%2$s`, a template given twice (the tree
/// decides), and a console key of several words named by its last.
#[test]
fn log_parameters_review_cases() {
    let s = scrubber();
    let cases = [
        (
            r#"{"message":{"message":"Upload 50% done, token={}","params":["abc123"]}}"#,
            json!({"message": "Upload 50% done, token={}", "params": ["[Filtered]"]}),
        ),
        (
            r#"{"logentry":{"message":"password=%s h=%s","params":["pw",["token","abc123"]]}}"#,
            json!({"message": "password=%s h=%s", "params": ["[Filtered]", ["token", "[Filtered]"]]}),
        ),
        (
            r#"{"logentry":{"message":"token=%s","params":{"a":"abc123"}}}"#,
            json!({"message": "token=%s", "params": {"a": "[Filtered]"}}),
        ),
        (
            r#"{"logentry":{"message":"{$User} password={Pwd}","params":["bob","pw1"]}}"#,
            // (A slot named otherwise than its key is taken for a value in
            // the template itself: ODBC's `PWD={Summer24}` is a password.)
            json!({"message": "{$User} password=[Filtered]", "params": ["bob", "[Filtered]"]}),
        ),
        (
            r#"{"logentry":{"message":"user %1$s password=%2$s","params":["bob","pw1"]}}"#,
            json!({"message": "user %1$s password=%2$s", "params": ["bob", "[Filtered]"]}),
        ),
    ];
    for (event, want) in cases {
        let tree = both_ways(&s, event).expect("the text pass takes it");
        let entry = tree.get("logentry").unwrap_or(&tree["message"]);
        assert_eq!(entry["message"], want["message"], "{event}");
        assert_eq!(entry["params"], want["params"], "{event}");
    }
    // A template given twice: the text pass declines, the tree decides.
    let twice = r#"{"logentry":{"message":"hi %s","message":"password=%s","params":["pw"]}}"#;
    assert!(s.scrub_event_text(twice).is_err());
    let mut tree: Value = serde_json::from_str(twice).unwrap();
    s.scrub_event(&mut tree);
    assert_eq!(tree["logentry"]["params"], json!(["[Filtered]"]));
    // Console keys: an escaped separator; prose before a `:`.
    let console = r#"{"data":{"arguments":["token\u003a","abc123","Auth failed:",{"code":401},"API key:","k-9"]}}"#;
    let tree = both_ways(&s, console).expect("the text pass takes it");
    assert_eq!(
        tree["data"]["arguments"],
        json!(["token:", "[Filtered]", "Auth failed:", {"code": 401}, "API key:", "[Filtered]"])
    );
}

/// Upper-case names ending in `_KEY` are secrets but for keys of data and
/// public keys, and only with the built-in words on.
#[test]
fn environment_keys_but_not_keys_of_data() {
    let s = scrubber();
    let event = r#"{"extra":{"OPENAI_KEY":"sk-x1","PRIMARY_KEY":"id","CACHE_KEY":"user:42","GPG_KEY":"A035C8C1","S3_KEY":"reports/a.csv","aes_key_size":256,"license_key_status":"active"}}"#;
    let tree = both_ways(&s, event).expect("the text pass takes it");
    let extra = &tree["extra"];
    assert_eq!(extra["OPENAI_KEY"], "[Filtered]");
    for key in ["PRIMARY_KEY", "CACHE_KEY", "GPG_KEY", "S3_KEY"] {
        assert_ne!(extra[key], "[Filtered]", "{key}");
    }
    assert_eq!(extra["aes_key_size"], 256);
    assert_eq!(extra["license_key_status"], "active");
    let mut settings = settings();
    settings.defaults = false;
    let off = Scrubber::new(&settings).unwrap();
    let mut tree: Value = serde_json::from_str(event).unwrap();
    off.scrub_event(&mut tree);
    assert_eq!(tree["extra"]["OPENAI_KEY"], "sk-x1");
}

/// UTF-16 without its mark in scripts beyond ASCII (a Windows program's
/// log in Russian, Chinese, Greek): recognised in the right byte order,
/// scrubbed, and written back as it came. Random bytes, with NULs among
/// them, are not taken for it.
#[test]
fn unmarked_utf16_beyond_ascii_is_text() {
    use crate::scrub::{utf16_bytes, utf16_text};
    let s = scrubber();
    let russian = "Ошибка оплаты заказа: пользователь не найден, повторите позже. ".repeat(6)
        + "2026-12-07 10:00 вход alice.smith@example.com пароль=секрет123\r\n";
    let chinese = "支付失败，用户未找到，请稍后重试。".repeat(12)
        + "\n2026-12-07 10:00 登录 bob@example.com 来自 203.0.113.7\n";
    let greek = "Σφάλμα πληρωμής παραγγελίας: ο χρήστης δεν βρέθηκε. ".repeat(6)
        + "token=9f86d081884c7d65\n";
    for (text, secrets) in [
        (&russian, &["alice.smith", "секрет123"][..]),
        (&chinese, &["bob@", "203.0.113.7"][..]),
        (&greek, &["9f86d0"][..]),
    ] {
        for big_endian in [false, true] {
            let bytes = utf16_bytes(text, big_endian);
            assert_eq!(
                utf16_text(&bytes).map(|(_, be)| be),
                Some(big_endian),
                "{big_endian} {text}"
            );
            let (out, _) = s.scrub_bytes(&bytes).expect("secrets found");
            let (scrubbed, be) = utf16_text(&out).expect("left as UTF-16");
            assert_eq!(be, big_endian);
            for secret in secrets {
                assert!(!scrubbed.contains(secret), "{secret} in {scrubbed}");
            }
            let head: String = text.chars().take(20).collect();
            assert!(scrubbed.starts_with(&head));
        }
    }
    // Random bytes (a NUL in each sample, as the test asks for): never
    // text, in 4 000 samples of 128 to 1 024 bytes.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..4000 {
        let len = 128 + 2 * (next() as usize % 449);
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let nul = next() as usize % 128;
        bytes[nul] = 0;
        assert!(utf16_text(&bytes).is_none(), "{bytes:?}");
    }
}

/// SQLAlchemy's message for a failed statement (its default shows the
/// parameters), as the Python SDK sends it in an exception's value: a
/// parameter is redacted when its placeholder fills a sensitive column of
/// an INSERT, or stands where a rule redacts a value.
#[test]
fn sqlalchemy_parameters_of_sensitive_columns_are_redacted() {
    let s = scrubber();
    let event = r#"{"exception":{"values":[{"type":"IntegrityError","value":"(sqlite3.IntegrityError) UNIQUE constraint failed: users.email\n[SQL: INSERT INTO users (name, email, password_hash, api_token) VALUES (?, ?, ?, ?)]\n[parameters: ('bob', 'bob@example.com', 'pbkdf2:sha256:600000$Xq9$abc', 'tk_live_9f8e')]\n(Background on this error at: https://sqlalche.me/e/20/gkpj)"},
        {"type":"OperationalError","value":"(psycopg2.OperationalError) deadlock\n[SQL: UPDATE users SET password = %s, reset_token = %s WHERE id = %s]\n[parameters: ('N3wPass!', 'rst-77', 42)]"}]}}"#;
    let tree = both_ways(&s, event).expect("the text pass takes it");
    let values = &tree["exception"]["values"];
    let first = values[0]["value"].as_str().unwrap();
    assert!(
        first.contains("[parameters: ('bob', '[email]', '[Filtered]', '[Filtered]')]"),
        "{first}"
    );
    let second = values[1]["value"].as_str().unwrap();
    assert!(
        second.contains("[parameters: ('[Filtered]', '[Filtered]', 42)]"),
        "{second}"
    );
    // The statement itself keeps its placeholders.
    assert!(second.contains("SET password = %s, reset_token = %s WHERE id = %s"));
}

/// Entries that name their value by another key than `name`: Postman's
/// variables (`key`/`value`), AWS tags (`Key`/`Value`), CloudFormation's
/// parameters (`ParameterKey`/`ParameterValue`).
#[test]
fn values_named_by_a_key_or_a_parameter_key() {
    let s = scrubber();
    let event = r#"{"extra":{"postman":[{"key":"password","value":"pm-pw-1"},{"key":"baseUrl","value":"https://api.example.com"}],
        "tags":[{"Key":"DB_PASSWORD","Value":"aws-pw-2"},{"Key":"team","Value":"payments"}],
        "stack":[{"ParameterKey":"DbPassword","ParameterValue":"cfn-pw-3"},{"ParameterKey":"Env","ParameterValue":"prod"}]}}"#;
    let tree = both_ways(&s, event).expect("the text pass takes it");
    let extra = &tree["extra"];
    assert_eq!(extra["postman"][0]["value"], "[Filtered]");
    assert_eq!(extra["postman"][1]["value"], "https://api.example.com");
    assert_eq!(extra["tags"][0]["Value"], "[Filtered]");
    assert_eq!(extra["tags"][1]["Value"], "payments");
    assert_eq!(extra["stack"][0]["ParameterValue"], "[Filtered]");
    assert_eq!(extra["stack"][1]["ParameterValue"], "prod");
    // Two names that name secrets: the tree decides.
    let two = r#"{"a":{"name":"password","key":"token","value":"x1"}}"#;
    assert!(s.scrub_event_text(two).is_err());
}

/// An OAuth callback's authorization code (with its `state`), and PKCE's
/// and OAuth 1's verifiers; a `code` elsewhere is no secret.
#[test]
fn oauth_codes_and_verifiers_are_redacted() {
    for (input, want) in [
        (
            "https://app.example.com/oauth/callback?code=4/0AeaYSHDq8zQ9xYz&state=abc",
            "https://app.example.com/oauth/callback?code=[Filtered]&state=abc",
        ),
        (
            "POST /token grant_type=authorization_code&code_verifier=dBjftJeZ4CVP&client_id=app",
            "POST /token grant_type=authorization_code&code_verifier=[Filtered]&client_id=app",
        ),
        (
            "/callback?oauth_token=t1&oauth_verifier=v9",
            "/callback?oauth_token=[Filtered]&oauth_verifier=[Filtered]",
        ),
        (
            "GET /items?code=SKU-1&page=2",
            "GET /items?code=SKU-1&page=2",
        ),
        ("exit code=1 state=done", "exit code=1 state=done"),
    ] {
        assert_eq!(text(input), want, "{input}");
    }
}

/// Review cases of the night's second review: SQLAlchemy's messages twice
/// in one text, `executemany`'s list of tuples, a placeholder inside a call,
/// `$n` by number; ODBC's braced password; HTML's `&amp;`; unmarked UTF-16
/// with Arabic punctuation and decomposed accents.
#[test]
fn second_review_cases() {
    let s = scrubber();
    let log = "(IntegrityError) dup\n[SQL: INSERT INTO users (email, password) VALUES (%s, crypt(%s, gen_salt('bf')))]\n[parameters: ('a@example.com', 'Crypt3d!')]\n\
               (IntegrityError) dup\n[SQL: INSERT INTO users (name, api_token) VALUES (?, ?)]\n[parameters: [('bob', 'tok-1'), ('eve', 'tok-2')]]\n\
               (DBAPIError) x\n[SQL: UPDATE users SET password = $2 WHERE id = $1]\n[parameters: (7, 'Dollar2!')]";
    let out = text(log);
    for secret in ["Crypt3d!", "tok-1", "tok-2", "Dollar2!"] {
        assert!(!out.contains(secret), "{secret} in {out}");
    }
    assert!(
        out.contains("('bob', '[Filtered]'), ('eve', '[Filtered]')"),
        "{out}"
    );
    assert!(out.contains("[parameters: (7, '[Filtered]')]"), "{out}");
    // `executemany`'s list alone in a message.
    let many = text("x\n[SQL: INSERT INTO users (name, api_token) VALUES (?, ?)]\n[parameters: [('bob', 'tok-3')]]");
    assert!(
        many.ends_with("[parameters: [('bob', '[Filtered]')]]"),
        "{many}"
    );
    assert_eq!(
        text("Driver={ODBC Driver 18};Server=db;UID=sa;PWD={Summer2024};"),
        "Driver={ODBC Driver 18};Server=db;UID=sa;PWD=[Filtered];"
    );
    assert_eq!(
        text(r#"<a href="/r?token=abc&amp;uid=7">"#),
        r#"<a href="/r?token=[Filtered]&amp;uid=7">"#
    );
    let arabic = "خطأ في الدفع، المستخدم غير موجود. ".repeat(8) + "token=9f86d081884c7d65\n";
    let decomposed =
        "Cafe\u{301} fermé, réessayez plus tard. ".repeat(8) + "token=9f86d081884c7d65\n";
    for text in [arabic, decomposed] {
        let bytes = crate::scrub::utf16_bytes(&text, false);
        let (out, _) = s.scrub_bytes(&bytes).expect("read as UTF-16");
        let (out, _) = crate::scrub::utf16_text(&out).expect("left as UTF-16");
        assert!(!out.contains("9f86d0"), "{out}");
    }
}

/// Capability tokens in a URL's path (`urltoken`), and vendors' webhook
/// URLs, from `request.url`, HTTP breadcrumbs and route-less transaction
/// names; what only looks like them stays.
#[test]
fn tokens_in_url_paths_are_redacted() {
    for (input, want) in [
        (
            "https://app.example.com/accounts/reset/MTIz/c3k2lp-8f1e2d3c4b5a69780f1e2d3c4b5a6978/",
            "https://app.example.com/accounts/reset/MTIz/[urltoken]/",
        ),
        (
            "/user/reset/12/1733580000/Qk3vZ8pLmN2xR7tY9wE4uI1oA6sD5fG0hJ",
            "/user/reset/12/1733580000/[urltoken]",
        ),
        (
            "GET https://app.example.com/invite/k8Jd92LmQp4xZr7Tn3Vb6Wc1/accept [200]",
            "GET https://app.example.com/invite/[urltoken]/accept [200]",
        ),
        (
            "https://app.example.com/Magic-Link/login/f3a9c81b7e2d4056a1b2c3d4e5f60718?next=/",
            "https://app.example.com/Magic-Link/login/[urltoken]?next=/",
        ),
        (
            "https://x.webhook.office.com/webhookb2/7a3b1c2d-1111-2222-3333-444455556666@9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff/IncomingWebhook/0123456789abcdef0123456789abcdef/1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d",
            "https://x.webhook.office.com/webhookb2/7a3b1c2d-1111-2222-3333-444455556666@9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff/IncomingWebhook/[urltoken]",
        ),
        (
            "POST https://chat.example.com/hooks/xk3p9q2m7r8s4t6u1v5w0y2z3a",
            "POST https://chat.example.com/hooks/[urltoken]",
        ),
        // Three segments after the word, not four: a fourth is more often
        // a resource's id than a token.
        (
            "https://app.example.com/invite/acme/team/Xq7k9Pz2Lm4Nw8Rt?ref=mail",
            "https://app.example.com/invite/acme/team/[urltoken]?ref=mail",
        ),
        (
            "/api/keys/signing/versions/7/3f2a9c1e-1b2c-4d5e-8f90-abcdef123456",
            "/api/keys/signing/versions/7/3f2a9c1e-1b2c-4d5e-8f90-abcdef123456",
        ),
        (
            "https://example.com/email/unsubscribe/ZmxvYmJlclBhcnNlckNvbXBvbmVudA",
            "https://example.com/email/unsubscribe/[urltoken]",
        ),
        (
            "https://hooks.zapier.com/hooks/catch/1234567/3abcdef/",
            "https://[cloudkey]/",
        ),
        (
            "https://maker.ifttt.com/trigger/door_open/with/key/dGhpc2lzYXNlY3JldGtleTEy",
            "https://[cloudkey]",
        ),
        // Not generated, or not after a capability word: kept.
        (
            "/accounts/reset/{uidb64}/{token}/ and /invite/:token",
            "/accounts/reset/{uidb64}/{token}/ and /invite/:token",
        ),
        (
            "https://app.example.com/users/8f1e2d3c-4b5a-6978-0f1e-2d3c4b5a6978/orders/42",
            "https://app.example.com/users/8f1e2d3c-4b5a-6978-0f1e-2d3c4b5a6978/orders/42",
        ),
        (
            "/share/2024-annual-report-final and /verify/ResetPasswordDoneView and /keys/12345678901234567",
            "/share/2024-annual-report-final and /verify/ResetPasswordDoneView and /keys/12345678901234567",
        ),
        (
            "/accounts/password_reset/done/ /resetting/abc123def456ghi789",
            "/accounts/password_reset/done/ /resetting/abc123def456ghi789",
        ),
    ] {
        assert_eq!(text(input), want, "{input}");
    }
    // In an event, both passes alike, and `_meta` names the rule.
    let s = scrubber();
    let event = json!({
        "request": {"url": "https://app.example.com/accounts/reset/MTIz/c3k2lp-8f1e2d3c4b5a6978/"},
        "breadcrumbs": {"values": [{"type": "http", "data": {
            "url": "https://app.example.com/api/tokens/tok_9Xk2LmQp4xZr7Tn3Vb6W", "method": "DELETE"}}]},
    });
    let tree = both_ways(&s, &event.to_string()).expect("no fallback");
    assert_eq!(
        tree["request"]["url"],
        "https://app.example.com/accounts/reset/MTIz/[urltoken]/"
    );
    assert_eq!(
        tree["breadcrumbs"]["values"][0]["data"]["url"],
        "https://app.example.com/api/tokens/[urltoken]"
    );
    assert_eq!(tree["_meta"]["request"]["url"][""]["rem"][0][0], "urltoken");
}

/// A URL's password with a `/` in it (a generated, base64 one), and Java's
/// `host/address:port`: both were kept.
#[test]
fn slashed_url_passwords_and_java_socket_addresses() {
    for (input, want) in [
        (
            "DATABASE_URL postgres://app:Xq7/k9+zR2=@db.internal:5432/orders",
            "DATABASE_URL postgres://[urlauth]@db.internal:5432/orders",
        ),
        (
            "redis://:aB3/cD4/eF5@cache:6379/0",
            "redis://[urlauth]@cache:6379/0",
        ),
        (
            "Connection to client/203.0.113.77:5432 refused",
            "Connection to client/[ip]:5432 refused",
        ),
        // A port before the path, or no password: no `urlauth`.
        (
            "https://example.com:8443/users/bob/@mentions",
            "https://example.com:8443/users/bob/@mentions",
        ),
        (
            "ftp://mirror.example.com:21/pub/pkg@latest",
            "ftp://mirror.example.com:21/pub/pkg@latest",
        ),
        ("https://example.com:/a/b@c", "https://example.com:/a/b@c"),
        // A product's version in a user agent stays.
        (
            "Mozilla/5.0 (X11) Chrome/131.0.0.0 Safari/537.36",
            "Mozilla/5.0 (X11) Chrome/131.0.0.0 Safari/537.36",
        ),
    ] {
        assert_eq!(text(input), want, "{input}");
    }
}

/// A review of `urltoken` and `urlauth`: framework links it missed, files
/// and folders it damaged, and the ways a URL hides (JSON's escaped
/// slashes, percent-encoding twice, a link's query).
#[test]
fn url_review_cases() {
    for (input, want) in [
        // Missed: words, vendors, shapes.
        (
            "https://app.example.com/passwords/eyJfcmFpbHMiOnsiZGF0YSI6MX19--3c9b8a7d6e5f4a3b2c1d/edit",
            "https://app.example.com/passwords/[urltoken]/edit",
        ),
        (
            "/password_resets/Qk3vZ8pLmN2xR7tY9wE4uI/edit",
            "/password_resets/[urltoken]/edit",
        ),
        (
            "https://forum.example.com/session/email-login/0123456789abcdef0123456789abcdef",
            "https://forum.example.com/session/email-login/[urltoken]",
        ),
        (
            "https://acme.okta.com/welcome/drpFRsYtyZ5aX3d-VPGe",
            "https://acme.okta.com/welcome/[urltoken]",
        ),
        (
            "https://join.slack.com/t/acme-dev/shared_invite/zt-2abc3def4-Xq9Z3kLw7TqP0vN4rS8uYw",
            "https://join.slack.com/t/acme-dev/shared_invite/[urltoken]",
        ),
        (
            "https://api.telegram.org/bot7123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage",
            "https://api.telegram.org/[cloudkey]/sendMessage",
        ),
        (
            "POST https://hooks.slack.com/triggers/T0123ABCD/7890123456789/0123456789abcdef0123456789abcdef",
            "POST https://[cloudkey]",
        ),
        (
            "https://events.pagerduty.com/integration/0123456789abcdef0123456789abcdef/enqueue",
            "https://[cloudkey]/enqueue",
        ),
        ("/invite/QwErTy-UiOpAsD_fGhJkLz", "/invite/[urltoken]"),
        ("/invite/Kp8Xz2Qa", "/invite/[urltoken]"),
        (
            "/rails/active_storage/blobs/redirect/eyJfcmFpbHMiOnsibWVzc2FnZSI6IkJBaHBCcz09In19--0a9c4a4c7e3f/invoice.pdf",
            "/rails/active_storage/blobs/redirect/[urltoken]/invoice.pdf",
        ),
        // Damaged before: files, folders, public ids, IPv6 hosts.
        (
            "https://app.example.com/_next/static/chunks/app/(auth)/reset-password/page-8f2c1a9b3d4e5f60.js",
            "https://app.example.com/_next/static/chunks/app/(auth)/reset-password/page-8f2c1a9b3d4e5f60.js",
        ),
        (
            "webpack://acme-web/./src/hooks/useOAuth2Callback.ts",
            "webpack://acme-web/./src/hooks/useOAuth2Callback.ts",
        ),
        (
            "/srv/app/.local/share/virtualenvs/shop-backend-Qx7bZ2kF/lib/python3.11/site.py",
            "/srv/app/.local/share/virtualenvs/shop-backend-Qx7bZ2kF/lib/python3.11/site.py",
        ),
        (
            "https://api.etherscan.io/token/0xdAC17F958D2ee523a2206206994597C13D831ec7",
            "https://api.etherscan.io/token/0xdAC17F958D2ee523a2206206994597C13D831ec7",
        ),
        ("GET http://localhost:5173/@vite/client", "GET http://localhost:5173/@vite/client"),
        (
            "https://example.com/verify/ResetPasswordDoneView",
            "https://example.com/verify/ResetPasswordDoneView",
        ),
        // Java's single-label hosts, each address of them.
        (
            "Connect to api:443 [api/203.0.113.7, api/203.0.113.8] failed",
            "Connect to api:443 [api/[ip], api/[ip]] failed",
        ),
        // A link's one-time code in its query.
        (
            "https://shop.example.com/Account/ConfirmEmail?userId=42&code=Q2ZESjhBTm1mSzd0VG5i",
            "https://shop.example.com/Account/ConfirmEmail?userId=42&code=[Filtered]",
        ),
        (
            "https://acme.auth0.com/lo/reset?ticket=Xk9c3pWq7Lr2Zq3kLw7T#",
            "https://acme.auth0.com/lo/reset?ticket=[Filtered]#",
        ),
        (
            "https://app.example.com/__/auth/action?mode=resetPassword&oobCode=Xk9c3pWq7Lr2",
            "https://app.example.com/__/auth/action?mode=resetPassword&oobCode=[Filtered]",
        ),
        (
            "https://www.dropbox.com/scl/fi/abc/report.pdf?rlkey=k8Jd92LmQp4x&dl=0",
            "https://www.dropbox.com/scl/fi/abc/report.pdf?rlkey=[Filtered]&dl=0",
        ),
        // Not a link's: an HTTP status, an error's code, a host's name.
        (
            "GET https://api.example.com/orders?code=404 failed",
            "GET https://api.example.com/orders?code=404 failed",
        ),
        (
            "https://login.example.com/static/app.js?hash=8f2c1a",
            "https://login.example.com/static/app.js?hash=8f2c1a",
        ),
        // A later word's token, after a first word's plain segments.
        (
            "/api/keys/list/all/x/reset/Qk3vZ8pLmN2xR7tY9wE4uI",
            "/api/keys/list/all/x/reset/[urltoken]",
        ),
    ] {
        assert_eq!(text(input), want, "{input}");
    }
    // JSON with escaped slashes held in a string (PHP's json_encode).
    let out = text(
        r#"Guzzle: {"invite_url":"https:\/\/app.example.com\/invite\/k8Jd92LmQp4xZr7Tn3Vb6Wc1","db":"mysql:\/\/root:hunter2secret@db\/app"}"#,
    );
    assert_eq!(
        out,
        r#"Guzzle: {"invite_url":"https://app.example.com/invite/[urltoken]","db":"mysql://[urlauth]@db/app"}"#
    );
    // Encoded twice: a redirect's URL inside another's query.
    let out = text("https://login.example.com/?fromURI=https%253A%252F%252Fapp.example.com%252Finvite%252Fk8Jd92LmQp4xZr7Tn3Vb6Wc1%253Fu%253Dalice%2540example.com");
    assert!(!out.contains("k8Jd92"), "{out}");
    assert!(!out.contains("alice"), "{out}");
    // In an event, both passes alike.
    let s = scrubber();
    let event = json!({
        "request": {"url": "https://shop.example.com/Account/ResetPassword?code=Q2ZESjhBTm1mSzd0VG5i"},
        "extra": {"body": r#"{"next":"https:\/\/app.example.com\/password_resets\/Qk3vZ8pLmN2xR7tY9wE4uI\/edit"}"#},
    });
    let tree = both_ways(&s, &event.to_string()).expect("no fallback");
    assert_eq!(
        tree["request"]["url"],
        "https://shop.example.com/Account/ResetPassword?code=[Filtered]"
    );
    assert_eq!(
        tree["extra"]["body"],
        r#"{"next":"https://app.example.com/password_resets/[urltoken]/edit"}"#
    );
}

/// Password hashes (a database's error about a row, a dumped user, a
/// shadow or htpasswd line) and `.netrc` entries.
#[test]
fn password_hashes_and_netrc_entries() {
    for (input, want) in [
        (
            "null value in column \"email\" violates not-null constraint\nDETAIL:  Failing row contains (7, pbkdf2_sha256$600000$Xk2LmQp4xZr7Tn3Vb6Wc1a$Qm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo=, null, f, bob).",
            "null value in column \"email\" violates not-null constraint\nDETAIL:  Failing row contains (7, [Filtered], null, f, bob).",
        ),
        (
            "Duplicate entry '$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy' for key 'x'",
            "Duplicate entry '[Filtered]' for key 'x'",
        ),
        (
            "row: $argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG end",
            "row: [Filtered] end",
        ),
        (
            "root:$6$rounds=5000$usesomesillystri$D4IrlXatmP7rx3P3InaxBeoomnAihCKRVQP22JZ6EY47Wc6BkroIuUUBOov1i.S5KPgErtP/EN5mcO.ChWQW21:19000:0:99999:7:::",
            "root:[Filtered]:19000:0:99999:7:::",
        ),
        ("bob:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/", "bob:[Filtered]"),
        (
            "stored scrypt:32768:8:1$Xk2LmQp4xZr7Tn3V$0123456789abcdef0123456789abcdef0123456789abcdef",
            "stored [Filtered]",
        ),
        (
            "machine api.example.com login bob password hunter2secret\n",
            "machine api.example.com login bob password [Filtered]\n",
        ),
        (
            "machine github.com\n  login bob\n  password ghx_notreal_9Xk2LmQp4\n",
            "machine github.com\n  login bob\n  password [Filtered]\n",
        ),
        // Kept: shell and template dollars, prose.
        (
            "echo $1$2 and cost $5$ each; set the machine password policy",
            "echo $1$2 and cost $5$ each; set the machine password policy",
        ),
    ] {
        assert_eq!(text(input), want, "{input}");
    }
}

/// A GraphQL operation's variables are named, not given, in its text: the
/// declaration (`$password: String!`) and the reference (`password:
/// $password`) stay; a value written in the query does not. A shell's
/// reference to a variable stays too; PHP's assignment of a literal does not.
#[test]
fn graphql_variables_and_shell_references_are_no_secrets() {
    for (input, want) in [
        (
            "mutation Login($password: String!, $token: [ID!]!) { login(password: $password, token: $token) { id } }",
            "mutation Login($password: String!, $token: [ID!]!) { login(password: $password, token: $token) { id } }",
        ),
        (
            "mutation { login(password: \"hunter2\") { id } }",
            "mutation { login(password: \"[Filtered]\") { id } }",
        ),
        (
            "export DB_PASSWORD=$DB_PASS API_TOKEN=${API_TOKEN}",
            "export DB_PASSWORD=$DB_PASS API_TOKEN=${API_TOKEN}",
        ),
        ("$password = \"hunter2\";", "$password = \"[Filtered]\";"),
    ] {
        assert_eq!(text(input), want, "{input}");
    }
    let s = scrubber();
    let event = json!({"breadcrumbs": {"values": [{"category": "graphql",
        "message": "mutation Login($password: String!) { login(password: $password) { id } }"}]}});
    let tree = both_ways(&s, &event.to_string()).expect("no fallback");
    assert_eq!(tree, event);
}

/// Sampling options name a secret's word but hold a rate: the Replay
/// SDK's `sessionSampleRate` in a recording's options event, and in an event.
#[test]
fn sample_rates_are_no_secrets() {
    let s = scrubber();
    let event = json!({"extra": {"sessionSampleRate": 0.1, "session_sample_rate": 1,
        "session_id": "s3ss10n-9f2"}});
    let tree = both_ways(&s, &event.to_string()).expect("no fallback");
    assert_eq!(tree["extra"]["sessionSampleRate"], 0.1);
    assert_eq!(tree["extra"]["session_sample_rate"], 1);
    assert_eq!(tree["extra"]["session_id"], "[Filtered]");
    let options = br#"[{"type":5,"data":{"tag":"options","payload":{"sessionSampleRate":1,"errorSampleRate":1}}}]"#;
    assert_eq!(s.scrub_json_strings(options), Ok(None));
}

/// A JSON Web Key's private members (`d`, the primes and their exponents,
/// a symmetric key's `k`) are secrets beside a `kty` that names a key
/// type, as an object in either pass, in the string-by-string scan (its
/// members sorted before `kty` too), and as JSON held in text; its public
/// members stay, and so do `d` and `k` of objects that are no key.
#[test]
fn json_web_keys_lose_their_private_members() {
    let s = scrubber();
    let d = "X4cTteJY_gn4FYPsXB8rdXix5vwsg1FLN5E3EaG6RJoVH-HLLKD9M7dx5oo7GURk";
    let p = "83i-7IvMGXoMXCskv73TKr8637FiO7Z27zv8oj6pbWUQyLPQBQxtPVnwD20R";
    let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86z";
    let rsa = json!({"kty": "RSA", "n": n, "e": "AQAB", "d": d, "p": p, "q": p, "dp": p,
        "dq": p, "qi": p, "oth": [{"r": p, "d": d, "t": p}]});
    let event = json!({"extra": {"jwk": rsa, "oct": {"kty": "oct", "k": "GawgguFyGrWKav7AX4VKUg"},
        "plain": {"d": "2024-01-01", "k": "cache_key_name_1234567"}}});
    // As a key is written (`kty` first; `json!` sorts its keys).
    let kty_first = format!(
        r#"{{"extra": {{"jwk": {{"kty": "RSA", "n": "{n}", "e": "AQAB", "d": "{d}", "p": "{p}", "q": "{p}", "dp": "{p}", "dq": "{p}", "qi": "{p}", "oth": [{{"r": "{p}", "d": "{d}", "t": "{p}"}}]}}, "oct": {{"kty": "oct", "k": "GawgguFyGrWKav7AX4VKUg"}}, "plain": {{"d": "2024-01-01", "k": "cache_key_name_1234567"}}}}}}"#
    );
    assert_eq!(serde_json::from_str::<Value>(&kty_first).unwrap(), event);
    let tree = both_ways(&s, &kty_first).expect("kty first: no fallback");
    let jwk = &tree["extra"]["jwk"];
    for member in ["d", "p", "q", "dp", "dq", "qi"] {
        assert_eq!(jwk[member], "[Filtered]", "{member}");
    }
    assert_eq!(jwk["oth"][0]["r"], "[Filtered]");
    assert_eq!(
        (&jwk["n"], &jwk["e"], &jwk["kty"]),
        (&json!(n), &json!("AQAB"), &json!("RSA"))
    );
    assert_eq!(tree["extra"]["oct"]["k"], "[Filtered]");
    assert_eq!(tree["extra"]["plain"], event["extra"]["plain"]);
    // Each namer names its own kind, alike in both passes: a `d` beside a
    // sensitive name is a metric's, a `value` beside a `kty` no key's.
    let crossed = r#"{"extra": {"a": {"kty": "oct", "value": "v4lue-x"}, "b": {"name": "password_reset", "d": "2024-06-01", "k": "weekly", "value": "s3cr3t"}}}"#;
    let tree = both_ways(&s, crossed).expect("no fallback");
    assert_eq!(tree["extra"]["a"]["value"], "v4lue-x");
    assert_eq!(
        (
            &tree["extra"]["b"]["d"],
            &tree["extra"]["b"]["k"],
            &tree["extra"]["b"]["value"]
        ),
        (&json!("2024-06-01"), &json!("weekly"), &json!("[Filtered]"))
    );
    let (out, _) = s.scrub_json_strings(crossed.as_bytes()).unwrap().unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["extra"], tree["extra"]);
    // Members sorted before `kty` (a serializer's key order): the text
    // pass hands the object to the tree, which reads it whole.
    let sorted =
        format!(r#"{{"extra": {{"jwk": {{"d": "{d}", "e": "AQAB", "kty": "RSA", "n": "{n}"}}}}}}"#);
    assert_eq!(s.scrub_event_text(&sorted), Err(Fallback));
    let mut tree: Value = serde_json::from_str(&sorted).unwrap();
    s.scrub_event(&mut tree);
    assert_eq!(tree["extra"]["jwk"]["d"], "[Filtered]");
    assert_eq!(tree["extra"]["jwk"]["n"], n);
    // The string-by-string scan, either order.
    for json in [sorted.clone(), event.to_string(), kty_first] {
        let (out, _) = s.scrub_json_strings(json.as_bytes()).unwrap().unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains(d) && !out.contains(p), "{out}");
        assert!(out.contains(n), "{out}");
        assert_eq!(
            out.contains("2024-01-01"),
            json.contains("2024-01-01"),
            "{out}"
        );
    }
    // In text: a logged key, JSON held in JSON, a Python repr.
    for (input, want) in [
        (
            format!(r#"loaded {{"kty":"EC","crv":"P-256","x":"{n}","d":"{d}"}}"#),
            format!(r#"loaded {{"kty":"EC","crv":"P-256","x":"{n}","d":"[pemkey]"}}"#),
        ),
        (
            format!(r#"{{\"kty\":\"RSA\",\"d\":\"{d}\"}}"#),
            r#"{\"kty\":\"RSA\",\"d\":\"[pemkey]\"}"#.to_owned(),
        ),
        (
            "{'kty': 'oct', 'k': 'GawgguFyGrWKav7AX4VKUg'}".to_owned(),
            "{'kty': 'oct', 'k': '[pemkey]'}".to_owned(),
        ),
        // No key type named: any `d`.
        (format!(r#"{{"d":"{d}"}}"#), format!(r#"{{"d":"{d}"}}"#)),
        // Other languages' prints.
        (
            format!("{{ kty: 'EC', crv: 'P-256', x: '{n}', d: '{d}' }}"),
            format!("{{ kty: 'EC', crv: 'P-256', x: '{n}', d: '[pemkey]' }}"),
        ),
        (
            format!("jwk:\n  kty: EC\n  d: {d}\n"),
            "jwk:\n  kty: EC\n  d: [pemkey]\n".to_owned(),
        ),
        (
            format!(r#"{{"kty"=>"EC", "d"=>"{d}"}}"#),
            r#"{"kty"=>"EC", "d"=>"[pemkey]"}"#.to_owned(),
        ),
        (
            format!("map[crv:P-256 d:{d} kty:EC]"),
            "map[crv:P-256 d:[pemkey] kty:EC]".to_owned(),
        ),
        (
            "JWK{kty=oct, k=c2VjcmV0Zm9v+/==}".to_owned(),
            "JWK{kty=oct, k=[pemkey]}".to_owned(),
        ),
        // Lists between `kty` and the member (WebCrypto's export, sorted).
        (
            r#"{"alg":"A256GCM","ext":true,"k":"Y0zt37HgOx-BY7SQjYVmrqhPkO44Ii2Jcb9yydUDPfE","key_ops":["encrypt","decrypt"],"kty":"oct"}"#.to_owned(),
            r#"{"alg":"A256GCM","ext":true,"k":"[pemkey]","key_ops":["encrypt","decrypt"],"kty":"oct"}"#.to_owned(),
        ),
        (
            format!("Array\n(\n    [kty] => EC\n    [d] => {d}\n)"),
            "Array\n(\n    [kty] => EC\n    [d] => [pemkey]\n)".to_owned(),
        ),
        (
            "jwks fetched (kty=RSA); cache k=user-profile-12345".to_owned(),
            "jwks fetched (kty=RSA); cache k=user-profile-12345".to_owned(),
        ),
        // A `kty` in other braces names no member here.
        (
            r#"jwks refreshed (kty=RSA); stats {"d": "2024-06-01T12-30-00Z", "k": "cache_hit_ratio_daily"}"#.to_owned(),
            r#"jwks refreshed (kty=RSA); stats {"d": "2024-06-01T12-30-00Z", "k": "cache_hit_ratio_daily"}"#.to_owned(),
        ),
    ] {
        assert_eq!(text(&input), want, "{input}");
    }
}

/// A YAML block under a sensitive key (a config dump, a manifest in a log
/// line) loses each value and keeps its keys; a value on the next line is
/// taken only under a key that starts its own line.
#[test]
fn yaml_blocks_under_sensitive_keys() {
    for (input, want) in [
        (
            "secrets:\n  api: sk9X8c7V6b5N4m3\n  db:\n    - hunter2\n    - other pass\nname: app\n",
            "secrets:\n  api: [Filtered]\n  db:\n    - [Filtered]\n    - [Filtered]\nname: app\n",
        ),
        (
            "spec:\n  - credentials:\n      user: bob\n      key: \"abc def\"\n  - name: web\n",
            "spec:\n  - credentials:\n      user: [Filtered]\n      key: [Filtered]\n  - name: web\n",
        ),
        // A list at the key's own indent, as YAML allows; a comment after
        // the key; Windows line ends.
        (
            "passwords: # rotated\r\n- t0k3nAAA111\r\n- t0k3nBBB222\r\nport: 80",
            "passwords: # rotated\r\n- [Filtered]\r\n- [Filtered]\r\nport: 80",
        ),
        ("password:\n    hunter2secret\n", "password:\n    [Filtered]\n"),
        // A line of prose after a key is not its value; a token is.
        (
            "SyntaxError: Unexpected token:\n    at JSON.parse (<anonymous>)",
            "SyntaxError: Unexpected token:\n    at JSON.parse (<anonymous>)",
        ),
        (
            "Token:\n    at verify (/app/verify.js:75:21)",
            "Token:\n    at verify (/app/verify.js:75:21)",
        ),
        (
            "Generated password:\n  Xy7kq2Lm9pQr\nINFO bootstrap: initial root token:\n    s.AbCdEf123456xyz",
            "Generated password:\n  [Filtered]\nINFO bootstrap: initial root token:\n    [Filtered]",
        ),
        // Block scalars, an anchor, a comment first, environment lines.
        (
            "password: |\n  correct-horse-battery\n  staple\nclient_secret: >-\n  a8f5f167f44f4964\nport: 1",
            "password: |\n  [Filtered]\n  [Filtered]\nclient_secret: >-\n  [Filtered]\nport: 1",
        ),
        (
            "secrets: &secrets\n  # production values\n  db: hunter2\n  env:\n    DB=hunter3\n    MAILGUN=key-3ax6\n",
            "secrets: &secrets\n  # production values\n  db: [Filtered]\n  env:\n    DB=[Filtered]\n    MAILGUN=[Filtered]\n",
        ),
        // What names where a secret is kept, or says it in words, stays.
        (
            "secrets:\n  db_password:\n    file: ./db_password.txt\n  npm: ${{ secrets.NPM_TOKEN }}\n  api_key:\n    external: true\n",
            "secrets:\n  db_password:\n    file: ./db_password.txt\n  npm: ${{ secrets.NPM_TOKEN }}\n  api_key:\n    external: true\n",
        ),
        (
            "password:\n  - This password is too common.\n  - correct horse battery staple\n",
            "password:\n  - This password is too common.\n  - [Filtered]\n",
        ),
        (
            "API_KEY: ${{ secrets.API_KEY }}\nsecrets: inherit",
            "API_KEY: ${{ secrets.API_KEY }}\nsecrets: inherit",
        ),
        // Not sensitive: untouched.
        ("database:\n  host: db.internal\n  port: 5432\n", "database:\n  host: db.internal\n  port: 5432\n"),
    ] {
        assert_eq!(text(input), want, "{input:?}");
    }
}

/// An SSN written with spaces or none is nine digits like any other: it is
/// masked after the words that say what it is, and only there. Keys that
/// spell it out are sensitive keys.
#[test]
fn ssns_named_in_text_are_masked_however_written() {
    let s = scrubber();
    let event = json!({"request": {"data": {"socialSecurityNumber": "123456789",
        "social_security_number": "123 45 6789", "taxpayerId": "123456789",
        "destination": "Lisbon", "thong_tin": "don hang", "syntaxId": "x1", "taxid": 9606}}});
    let tree = both_ways(&s, &event.to_string()).expect("no fallback");
    let data = &tree["request"]["data"];
    for key in [
        "socialSecurityNumber",
        "social_security_number",
        "taxpayerId",
    ] {
        assert_eq!(data[key], "[Filtered]", "{key}");
    }
    // `tin` is Vietnamese for information; `taxid` NCBI's taxonomy.
    for key in ["destination", "thong_tin", "syntaxId", "taxid"] {
        assert_eq!(data[key], event["request"]["data"][key], "{key}");
    }
    assert_eq!(
        text("<SocialSecurityNumber>123456789</SocialSecurityNumber>"),
        "<SocialSecurityNumber>[Filtered]</SocialSecurityNumber>"
    );
    for (input, want) in [
        (
            "customer ssn 123 45 6789 on file",
            "customer ssn *** ** **** on file",
        ),
        (
            "Social Security Number: 123456789.",
            "Social Security Number: *********.",
        ),
        (
            "social security no. is 234 56 7890",
            "social security no. is *** ** ****",
        ),
        ("SSN number: 123456789", "SSN number: *********"),
        ("SSN (verified): 123-45-6789", "SSN (verified): ***-**-****"),
        (
            "Social Security #: 123 - 45 - 6789",
            "Social Security #: *** - ** - ****",
        ),
        ("SSN:\n  123 45 6789", "SSN:\n  *** ** ****"),
        ("SSN 123.45.6789", "SSN ***.**.****"),
        (
            "ITIN 912701234; Tax ID: 12-3456789",
            "ITIN *********; Tax ID: **-*******",
        ),
        (
            "Tin nhắn 123456789 đã được gửi",
            "Tin nhắn 123456789 đã được gửi",
        ),
        // No such words, or no possible SSN (area 000, 666, 9xx).
        (
            "call 555 12 3456 or id 123456789",
            "call 555 12 3456 or id 123456789",
        ),
        (
            "ssn 000 12 3456; ssn 912 34 5678",
            "ssn 000 12 3456; ssn 912 34 5678",
        ),
    ] {
        assert_eq!(text(input), want, "{input}");
    }
}

/// A value that says what state a secret is in (an error message's
/// `Token: expired.`, a config dump's `password: null`) hides nothing and
/// stays; anything else after the key is still redacted.
#[test]
fn status_words_after_a_key_stay() {
    for (input, want) in [
        ("Token: expired.", "Token: expired."),
        ("password: required", "password: required"),
        (
            "{'password': None, 'token': 'abc123'}",
            "{'password': None, 'token': '[Filtered]'}",
        ),
        (
            "secret=undefined&api_key=xyz",
            "secret=undefined&api_key=[Filtered]",
        ),
        (
            "secrets:\n  api: null\n  db: hunter2\n",
            "secrets:\n  api: null\n  db: [Filtered]\n",
        ),
        ("password: expired1", "password: [Filtered]"),
        ("token: nullify", "token: [Filtered]"),
    ] {
        assert_eq!(text(input), want, "{input}");
    }
}

/// A Kubernetes Secret's `data` and `stringData` hold its secrets under
/// keys of any name: redacted beside `kind: Secret`, as an object in
/// either pass and the string-by-string scan, and as a manifest in text;
/// a ConfigMap's stay. A container's `env` names its secrets by `name`,
/// with the `value` on the next line; a kubeconfig's client key is one.
#[test]
fn kubernetes_secrets_lose_their_data() {
    let s = scrubber();
    let event = json!({"extra": {"manifest": {"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "app-tls"}, "data": {"tls.key": "LS0tLS1CRUdJTiBQUklW"},
        "stringData": {"DATABASE_URL": "cG9zdGdyZXM6"}},
        "config": {"kind": "ConfigMap", "data": {"LOG_LEVEL": "debug"}}}});
    // As a manifest is written (`kind` first; `json!` sorts its keys).
    let written = r#"{"extra": {"manifest": {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-tls"}, "data": {"tls.key": "LS0tLS1CRUdJTiBQUklW"}, "stringData": {"DATABASE_URL": "cG9zdGdyZXM6"}}, "config": {"kind": "ConfigMap", "data": {"LOG_LEVEL": "debug"}}}}"#;
    assert_eq!(serde_json::from_str::<Value>(written).unwrap(), event);
    let tree = both_ways(&s, written).expect("kind before data: no fallback");
    // Sorted, the text pass hands the manifest to the tree.
    assert_eq!(s.scrub_event_text(&event.to_string()), Err(Fallback));
    let mut sorted = event.clone();
    s.scrub_event(&mut sorted);
    assert_eq!(sorted["extra"], tree["extra"]);
    let manifest = &tree["extra"]["manifest"];
    assert_eq!(manifest["data"]["tls.key"], "[Filtered]");
    assert_eq!(manifest["stringData"]["DATABASE_URL"], "[Filtered]");
    assert_eq!(manifest["metadata"]["name"], "app-tls");
    assert_eq!(tree["extra"]["config"], event["extra"]["config"]);
    let (out, _) = s
        .scrub_json_strings(event.to_string().as_bytes())
        .unwrap()
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        !out.contains("LS0tLS1CRUdJTiBQUklW") && !out.contains("cG9zdGdyZXM6"),
        "{out}"
    );
    assert!(out.contains("debug") && out.contains("app-tls"), "{out}");
    for (input, want) in [
        (
            "kind: Secret\nmetadata:\n  name: app-secrets\ndata:\n  tls.key: LS0tLS1CRUdJTi\nstringData:\n  STRIPE: whsk_live_x1\n",
            "kind: Secret\nmetadata:\n  name: app-secrets\ndata:\n  tls.key: [Filtered]\nstringData:\n  STRIPE: [Filtered]\n",
        ),
        (
            r#"{"kind":"Secret","data":{"tls.key":"LS0tLS1CRUdJTi"}}"#,
            r#"{"kind":"Secret","data":[Filtered]}"#,
        ),
        ("kind: ConfigMap\ndata:\n  LOG_LEVEL: debug\n", "kind: ConfigMap\ndata:\n  LOG_LEVEL: debug\n"),
        // A ConfigMap beside a Secret: in another document, another object.
        (
            "kind: Secret\ndata:\n  k: czNjcjN0\n---\nkind: ConfigMap\ndata:\n  LOG_LEVEL: debug\n",
            "kind: Secret\ndata:\n  k: [Filtered]\n---\nkind: ConfigMap\ndata:\n  LOG_LEVEL: debug\n",
        ),
        (
            r#"{"kind":"List","items":[{"kind":"Secret","data":{"k":"czNjcjN0"}},{"kind":"ConfigMap","data":{"LOG_LEVEL":"debug"}}]}"#,
            r#"{"kind":"List","items":[{"kind":"Secret","data":[Filtered]},{"kind":"ConfigMap","data":{"LOG_LEVEL":"debug"}}]}"#,
        ),
        (
            "not found for kind: Secret in chart\ndata:\n  LOG_LEVEL: info\n",
            "not found for kind: Secret in chart\ndata:\n  LOG_LEVEL: info\n",
        ),
        (
            "env:\n  - name: DB_PASSWORD\n    value: hunter2hunter2\n  - name: LOG_LEVEL\n    value: debug\n",
            "env:\n  - name: DB_PASSWORD\n    value: [Filtered]\n  - name: LOG_LEVEL\n    value: debug\n",
        ),
        (
            "users:\n- name: admin\n  user:\n    client-key-data: LS0tLS1CRUdJTiBSU0Eg\n",
            "users:\n- name: admin\n  user:\n    client-key-data: [Filtered]\n",
        ),
    ] {
        assert_eq!(text(input), want, "{input}");
    }
}

/// A secret found in a URL's decoded form is redacted where it lies in
/// the URL as it came: the rest keeps its escapes, and so its meaning (a
/// decoded `%26` or `%3D` would add a parameter to the query).
#[test]
fn percent_decoded_secrets_are_redacted_in_place() {
    for (input, want) in [
        (
            "https://app.example.com/cb?next=%2Fhome%3Fa%3D1%26b%3D2&email=bob%40example.com",
            "https://app.example.com/cb?next=%2Fhome%3Fa%3D1%26b%3D2&email=[email]",
        ),
        // Encoded twice: the whole escape of the secret goes.
        (
            "/login?r=%2Fauth%3Fuser%3Dalice%2540example.com%26x%3D1",
            "/login?r=%2Fauth%3Fuser%3D[email]%26x%3D1",
        ),
    ] {
        assert_eq!(text(input), want, "{input}");
    }
}

/// A stack frame's file and line is no `key: value`, whatever the file's
/// name says (`TokenService.java:88`).
#[test]
fn stack_frames_keep_their_line_numbers() {
    for input in [
        "at com.acme.auth.TokenService.refresh(TokenService.java:88)",
        "at verify (/app/src/auth.js:10:5)",
        "/go/src/app/auth.go:52 +0x1d",
        "app/controllers/sessions_controller.rb:14:in `create'",
    ] {
        assert_eq!(text(input), input);
    }
    assert_eq!(text("token.txt: abc123XYZ"), "token.txt: [Filtered]");
}

/// A Secret's base64 that starts with `/` is no file's path.
#[test]
fn base64_in_a_block_is_no_path() {
    assert_eq!(
        text("kind: Secret\ndata:\n  tls.key: /9j4AAQSkZJRgABAQEASABIAADxyz==\n  cfg: /run/secrets/app.conf\n"),
        "kind: Secret\ndata:\n  tls.key: [Filtered]\n  cfg: /run/secrets/app.conf\n"
    );
}

/// The second red-team pass: a YAML block after a log line's prefix; a
/// singular key's mapping holds settings, not secrets; what follows a key
/// on a later line is its value only when indented under it and neither a
/// stack frame nor markup; a URL path's last segment is no key.
#[test]
fn yaml_after_log_prefixes_settings_and_later_lines() {
    for (input, want) in [
        (
            "2024-05-01T10:00:00Z DEBUG secrets:\n  db: Xk29sLqp\n  api: abc123XYZ\n",
            "2024-05-01T10:00:00Z DEBUG secrets:\n  db: [Filtered]\n  api: [Filtered]\n",
        ),
        (
            "token:\n  issuer: https://auth.example.com\n  ttl: 3600\npassword:\n  min_length: 12\n",
            "token:\n  issuer: https://auth.example.com\n  ttl: 3600\npassword:\n  min_length: 12\n",
        ),
        (
            "env:\n  - name: DB\n    valueFrom:\n      secretKeyRef:\n        name: db-credentials\n        optional: false\n",
            "env:\n  - name: DB\n    valueFrom:\n      secretKeyRef:\n        name: db-credentials\n        optional: false\n",
        ),
        (
            "Failed to refresh token:\nTraceback (most recent call last):\n  File \"app.py\", line 3",
            "Failed to refresh token:\nTraceback (most recent call last):\n  File \"app.py\", line 3",
        ),
        (
            "Unexpected token:\n    at <anonymous>:1:6\nUnexpected token:\n  <!DOCTYPE html>",
            "Unexpected token:\n    at <anonymous>:1:6\nUnexpected token:\n  <!DOCTYPE html>",
        ),
        (
            "POST https://auth.example.com/oauth/token: 401\n{\"error\": \"invalid_grant\"}",
            "POST https://auth.example.com/oauth/token: 401\n{\"error\": \"invalid_grant\"}",
        ),
        (
            "Your new API key:\n    a8f5f167f44f4964e6c998dee827110c",
            "Your new API key:\n    [Filtered]",
        ),
    ] {
        assert_eq!(text(input), want, "{input:?}");
    }
}

/// A field's name that names a secret gives the value beside it, in every
/// shape tools print pairs in: JSON in text (either order), YAML's flow
/// and block styles, a Terraform plan, CloudFormation, .NET's config, an
/// HTML input; the name itself stays.
#[test]
fn named_values_in_every_shape_of_text() {
    for (input, want) in [
        (
            r#"[{"name":"api","environment":[{"name":"DB_PASSWORD","value":"hunter2Xk"},{"name":"LOG","value":"debug"}]}]"#,
            r#"[{"name":"api","environment":[{"name":"DB_PASSWORD","value":"[Filtered]"},{"name":"LOG","value":"debug"}]}]"#,
        ),
        (
            r#"{"value": "hunter2Xa", "name": "DB_PASSWORD"}"#,
            r#"{"value": "[Filtered]", "name": "DB_PASSWORD"}"#,
        ),
        (
            "env:\n  - {name: DB_PASSWORD, value: hunter2Xb}\n",
            "env:\n  - {name: DB_PASSWORD, value: [Filtered]}\n",
        ),
        (
            "+ name  = \"DB_PASSWORD\"\n+ value = \"hunter2Xc\"",
            "+ name  = \"DB_PASSWORD\"\n+ value = \"[Filtered]\"",
        ),
        (
            r#"{"ParameterKey":"DbPassword","ParameterValue":"hunter2Xd"}"#,
            r#"{"ParameterKey":"DbPassword","ParameterValue":"[Filtered]"}"#,
        ),
        // Braces that do not close, a letter beyond ASCII last (a fuzzer's find).
        (
            r#"{"ParameterKey": "DbPassword", "ParameterValue": "hunter2ñ"#,
            r#"{"ParameterKey": "DbPassword", "ParameterValue": "[Filtered]"#,
        ),
        // A key before it with letters beyond ASCII (a fuzzer's find).
        (
            r#"{"ParameterKey": "DbPassword", "Parámetervalue": "cfn", "ParameterValue": "hunter2Xd"}"#,
            r#"{"ParameterKey": "DbPassword", "Parámetervalue": "cfn", "ParameterValue": "[Filtered]"}"#,
        ),
        (
            r#"<add key="DbPassword" value="hunter2Xe" />"#,
            r#"<add key="DbPassword" value="[Filtered]" />"#,
        ),
        (
            "- name: DB_PASSWORD\n  value: hunter2Xf\n- name: LOG_LEVEL\n  value: debug",
            "- name: DB_PASSWORD\n  value: [Filtered]\n- name: LOG_LEVEL\n  value: debug",
        ),
    ] {
        assert_eq!(text(input), want, "{input}");
    }
}

/// The code review's finds: a custom rule that matches nothing (`$`) with
/// percent-escapes in the text; a key named `key` whose value names a
/// secret but has no value beside it (`API key: my_secret_...` is still a
/// secret); a `value` word inside a string before the member; a token
/// before a no-break space; a decoded `path=value` pair in a query.
#[test]
fn review_finds_of_the_day() {
    let mut settings = settings();
    settings.rules.push(CustomRule {
        name: "end".into(),
        pattern: "$".into(),
        method: Method::Replace,
        paths: vec![],
    });
    let s = Scrubber::new(&settings).unwrap();
    for input in ["go to a%20b", "%41", "x%2Fy end"] {
        let _ = s.scrub_text(input);
    }
    for (input, want) in [
        (
            "Invalid API key: my_secret_abc123XYZ",
            "Invalid API key: [Filtered]",
        ),
        ("Private key: hunter2password", "Private key: [Filtered]"),
        (
            r#"{"name":"password","description":"some value: kept","value":"hunter2"}"#,
            r#"{"name":"password","description":"some value: kept","value":"[Filtered]"}"#,
        ),
        ("/reset/Ab12Cd34Ef\u{a0}now", "/reset/[urltoken]\u{a0}now"),
        ("q=%2Fpassword%3Dhunter2", "q=%2Fpassword%3D[Filtered]"),
    ] {
        assert_eq!(text(input), want, "{input}");
    }
}
