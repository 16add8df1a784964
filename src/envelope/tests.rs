use super::*;

fn limits() -> Limits {
    Limits::default()
}

fn parse_str(s: &str) -> Result<Envelope, EnvelopeError> {
    parse(Bytes::copy_from_slice(s.as_bytes()), &limits())
}

const ID: &str = "9ec79c33ec9942ab8353589fcb2e04dc";

#[test]
fn items_with_and_without_length() {
    let mut body = format!("{{\"event_id\":\"{ID}\",\"dsn\":\"https://k@h/1\"}}\n").into_bytes();
    body.extend_from_slice(b"{\"type\":\"attachment\",\"length\":10,\"filename\":\"a.txt\"}\n");
    body.extend_from_slice(b"\xef\xbb\xbfhello\n\n");
    body.extend_from_slice(b"{\"type\":\"event\"}\n{\"message\":\"hi\"}\n");
    let body = String::from_utf8(body).unwrap();
    let env = parse_str(&body).unwrap();
    assert_eq!(env.header.event_id.as_deref(), Some(ID));
    assert_eq!(env.header.dsn.as_deref(), Some("https://k@h/1"));
    assert_eq!(env.items.len(), 2);
    assert_eq!(env.items[0].ty, ItemType::Attachment);
    assert_eq!(&env.items[0].payload[..], "\u{feff}hello\n\n".as_bytes());
    assert_eq!(env.items[1].ty, ItemType::Event);
    assert_eq!(&env.items[1].payload[..], br#"{"message":"hi"}"#);
}

#[test]
fn binary_payloads_with_newlines_and_nuls() {
    let payload: Vec<u8> = (0..=255u8).chain([b'\n', 0, b'\n']).collect();
    let mut body = b"{}\n".to_vec();
    body.extend_from_slice(
        format!("{{\"type\":\"attachment\",\"length\":{}}}\n", payload.len()).as_bytes(),
    );
    body.extend_from_slice(&payload);
    let env = parse(Bytes::from(body), &limits()).unwrap();
    assert_eq!(&env.items[0].payload[..], &payload[..]);
}

#[test]
fn tolerates_sloppy_sdks() {
    // No final newline.
    let env = parse_str("{}\n{\"type\":\"event\"}\n{\"a\":1}").unwrap();
    assert_eq!(&env.items[0].payload[..], br#"{"a":1}"#);
    // CRLF line ends and trailing blank lines.
    let env = parse_str("{}\r\n{\"type\":\"event\"}\r\n{\"a\":1}\r\n\r\n\n").unwrap();
    assert_eq!(&env.items[0].payload[..], br#"{"a":1}"#);
    // Sized payload without a newline after it, at the end.
    let env = parse_str("{}\n{\"type\":\"event\",\"length\":7}\n{\"a\":1}").unwrap();
    assert_eq!(&env.items[0].payload[..], br#"{"a":1}"#);
    // A header-only envelope.
    assert!(parse_str("{}").unwrap().items.is_empty());
    assert!(parse_str("{}\n").unwrap().items.is_empty());
    // Empty payload of an unsized item.
    let env = parse_str("{}\n{\"type\":\"attachment\"}\n\n{\"type\":\"event\"}\n{}\n").unwrap();
    assert_eq!(env.items.len(), 2);
    assert!(env.items[0].payload.is_empty());
}

#[test]
fn zero_length_items() {
    let env = parse_str(
        "{}\n{\"type\":\"attachment\",\"length\":0}\n{\"type\":\"event\",\"length\":2}\n{}\n",
    )
    .unwrap();
    assert_eq!(env.items.len(), 2);
    assert!(env.items[0].payload.is_empty());
    assert_eq!(&env.items[1].payload[..], b"{}");
}

#[test]
fn malformed_envelopes_are_errors_not_panics() {
    assert_eq!(parse_str("").unwrap_err(), EnvelopeError::Empty);
    assert_eq!(parse_str("\n\n").unwrap_err(), EnvelopeError::Empty);
    assert!(matches!(
        parse_str("not json\n").unwrap_err(),
        EnvelopeError::BadHeader(_)
    ));
    assert!(matches!(
        parse_str("[1,2]\n").unwrap_err(),
        EnvelopeError::BadHeader(_)
    ));
    assert!(matches!(
        parse_str("{}\n{\"length\":2}\n{}\n").unwrap_err(),
        EnvelopeError::BadItemHeader { index: 0, .. }
    ));
    assert!(matches!(
        parse_str("{}\n{\"type\":7}\n{}\n").unwrap_err(),
        EnvelopeError::BadItemHeader { .. }
    ));
    assert!(matches!(
        parse_str("{}\n{\"type\":\"event\",\"length\":-1}\n").unwrap_err(),
        EnvelopeError::BadItemHeader { .. }
    ));
    assert_eq!(
        parse_str("{}\n{\"type\":\"event\",\"length\":100}\n{}\n").unwrap_err(),
        EnvelopeError::LengthPastEnd {
            index: 0,
            length: 100
        }
    );
    assert_eq!(
        parse_str("{}\n{\"type\":\"event\",\"length\":18446744073709551615}\n{}\n").unwrap_err(),
        EnvelopeError::LengthPastEnd {
            index: 0,
            length: u64::MAX
        }
    );
    assert!(matches!(
        parse_str("{\"event_id\":\"nope\"}\n").unwrap_err(),
        EnvelopeError::BadEventId(_)
    ));
    assert!(matches!(
        parse(Bytes::from_static(b"{\"a\":\"\xff\"}\n"), &limits()).unwrap_err(),
        EnvelopeError::BadHeader(_)
    ));
}

#[test]
fn limits_on_items_and_header_lines() {
    let small = Limits {
        max_items: 3,
        max_header_line_size: 64,
        ..Limits::default()
    };
    let many = "{}\n".to_owned() + &"{\"type\":\"span\"}\n{}\n".repeat(4);
    assert_eq!(
        parse(Bytes::from(many), &small).unwrap_err(),
        EnvelopeError::TooManyItems { limit: 3 }
    );
    let three = "{}\n".to_owned() + &"{\"type\":\"span\"}\n{}\n".repeat(3);
    assert_eq!(parse(Bytes::from(three), &small).unwrap().items.len(), 3);
    let long_header = format!("{{\"sdk\":\"{}\"}}\n", "x".repeat(100));
    assert!(parse(Bytes::from(long_header), &small)
        .unwrap_err()
        .is_too_large());
    let long_item = format!(
        "{{}}\n{{\"type\":\"event\",\"pad\":\"{}\"}}\n{{}}\n",
        "x".repeat(100)
    );
    assert!(parse(Bytes::from(long_item), &small)
        .unwrap_err()
        .is_too_large());
    // A huge header line without any newline is refused after reading the limit.
    let endless = "{".to_owned() + &"x".repeat(10_000);
    assert_eq!(
        parse(Bytes::from(endless), &small).unwrap_err(),
        EnvelopeError::HeaderTooLong { limit: 64 }
    );
}

#[test]
fn item_types_map_to_categories() {
    let table = [
        ("event", Some(DataCategory::Error)),
        ("transaction", Some(DataCategory::Transaction)),
        ("attachment", Some(DataCategory::Attachment)),
        ("session", Some(DataCategory::Session)),
        ("sessions", Some(DataCategory::Session)),
        ("client_report", None),
        ("user_report", Some(DataCategory::UserReport)),
        ("feedback", Some(DataCategory::Feedback)),
        ("check_in", Some(DataCategory::Monitor)),
        ("span", Some(DataCategory::Span)),
        ("log", Some(DataCategory::LogItem)),
        ("profile", Some(DataCategory::Profile)),
        ("replay_event", Some(DataCategory::Replay)),
        ("replay_recording", Some(DataCategory::Replay)),
        ("something_new", Some(DataCategory::Default)),
    ];
    for (name, category) in table {
        assert_eq!(ItemType::from_name(name).category(), category, "{name}");
    }
    for (i, c) in DataCategory::ALL.iter().enumerate() {
        assert_eq!(c.index(), i);
        assert_eq!(DataCategory::from_name(c.as_str()), Some(*c));
    }
}

#[test]
fn event_ids_normalize() {
    assert_eq!(normalize_event_id(ID).as_deref(), Some(ID));
    assert_eq!(
        normalize_event_id("9EC79C33-EC99-42AB-8353-589FCB2E04DC").as_deref(),
        Some(ID)
    );
    assert_eq!(normalize_event_id("9ec79c33ec9942ab8353589fcb2e04d"), None);
    assert_eq!(
        normalize_event_id("9ec79c33_ec99_42ab_8353_589fcb2e04dc"),
        None
    );
    assert_eq!(normalize_event_id("zzc79c33ec9942ab8353589fcb2e04dc"), None);
    // A dash elsewhere too: 31 digits once the dashes are gone, not an id.
    assert_eq!(
        normalize_event_id("9ec79c33-ec99-42ab-8353-589fcb2e04-c"),
        None
    );
    assert_eq!(
        normalize_event_id("9ec79c33-ec99-42ab-8353-589fcb2e04d-"),
        None
    );
    assert_eq!(
        normalize_event_id("-ec79c33ec9942ab8353589fcb2e04dc"),
        None,
        "32 characters with a dash"
    );
    assert_eq!(
        normalize_event_id("9EC79C33EC9942AB8353589FCB2E04DC").as_deref(),
        Some(ID)
    );
}

#[test]
fn reading_events() {
    let payload =
        format!(r#"{{"event_id":"{ID}","type":"transaction","x":[1,{{}}]}}"#).into_bytes();
    let (event, id) = read_event(&payload, 128).unwrap();
    assert_eq!(id.as_deref(), Some(ID));
    assert_eq!(
        event
            .with_view(|v| v.ty.as_str().map(str::to_owned))
            .as_deref(),
        Some("transaction")
    );
    let (event, id) = read_event(b"{}", 128).unwrap();
    assert_eq!(
        (id, event.with_view(|v| v.ty.as_str().is_none())),
        (None, true)
    );
    assert!(matches!(read_event(b"[]", 128), Err(EventError::NotObject)));
    assert!(matches!(
        read_event(b"\"text\"", 128),
        Err(EventError::NotObject)
    ));
    assert!(matches!(
        read_event(b"{\"a\":", 128),
        Err(EventError::NotJson(_))
    ));
    assert!(matches!(
        read_event(b"{\"a\":\"\xc3\x28\"}", 128),
        Err(EventError::NotUtf8(_))
    ));
    assert!(matches!(
        read_event(br#"{"event_id":"x"}"#, 128),
        Err(EventError::BadEventId)
    ));
    let deep = "{\"a\":".repeat(100_000) + "1" + &"}".repeat(100_000);
    assert!(matches!(
        read_event(deep.as_bytes(), 128),
        Err(EventError::TooDeep(128))
    ));
    let arrays = "[".repeat(200) + &"]".repeat(200);
    assert!(matches!(
        read_event(format!("{{\"a\":{arrays}}}").as_bytes(), 128),
        Err(EventError::TooDeep(128))
    ));
    // Brackets inside strings, escaped quotes included, do not count.
    let in_string = format!("{{\"a\":\"\\\"{}\"}}", "[{".repeat(500));
    assert!(read_event(in_string.as_bytes(), 128).is_ok(), "{in_string}");
    let ok_depth = "{\"a\":".repeat(100) + "1" + &"}".repeat(100);
    assert!(read_event(ok_depth.as_bytes(), 128).is_ok());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn item() -> impl Strategy<Value = (String, Vec<u8>, bool)> {
        (
            prop::sample::select(vec![
                "event",
                "attachment",
                "session",
                "transaction",
                "weird",
            ]),
            prop::collection::vec(any::<u8>(), 0..300),
            any::<bool>(),
        )
            .prop_map(|(ty, payload, sized)| (ty.to_owned(), payload, sized))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..1024)) {
            let _ = parse(Bytes::from(data), &limits());
        }

        #[test]
        fn arbitrary_lines_never_panic(lines in prop::collection::vec("[{}\\[\\]\":a-z0-9,\\n ]{0,40}", 0..12)) {
            let _ = parse(Bytes::from(lines.join("\n")), &limits());
        }

        /// Serialize items the way SDKs do, parse, and get them back.
        #[test]
        fn written_envelopes_parse_back(items in prop::collection::vec(item(), 0..8)) {
            let mut body = format!("{{\"event_id\":\"{ID}\"}}\n").into_bytes();
            let mut expected = Vec::new();
            for (ty, payload, sized) in &items {
                // Unsized payloads run to the next newline, so they cannot contain one.
                let payload: Vec<u8> = if *sized { payload.clone() } else {
                    payload.iter().copied().filter(|b| *b != b'\n' && *b != b'\r').collect()
                };
                if *sized {
                    body.extend_from_slice(format!("{{\"type\":\"{ty}\",\"length\":{}}}\n", payload.len()).as_bytes());
                } else {
                    body.extend_from_slice(format!("{{\"type\":\"{ty}\"}}\n").as_bytes());
                }
                body.extend_from_slice(&payload);
                body.push(b'\n');
                expected.push((ty.clone(), payload));
            }
            // A second event item refuses the envelope, naming it.
            let events: Vec<usize> = items.iter().enumerate()
                .filter(|(_, (ty, _, _))| ty == "event" || ty == "transaction")
                .map(|(i, _)| i)
                .collect();
            if let Some(&second) = events.get(1) {
                let refused = parse(Bytes::from(body), &limits()).unwrap_err();
                prop_assert_eq!(refused, EnvelopeError::DuplicateEvent { index: second, type_name: items[second].0.clone() });
                return Ok(());
            }
            let env = parse(Bytes::from(body), &limits()).unwrap();
            let got: Vec<(String, Vec<u8>)> = env.items.iter().map(|i| (i.type_name.clone(), i.payload.to_vec())).collect();
            // An unsized empty payload followed by blank lines is indistinguishable; compare the rest.
            prop_assert_eq!(got, expected);
        }
    }
}

#[test]
fn depth_counts_brackets_outside_strings_only() {
    assert!(!json_depth_exceeds(br#"{"a":"[[[\"[[[{{","b":[1]}"#, 2));
    assert!(json_depth_exceeds(br#"{"a":"\\","b":[[1]]}"#, 2));
    assert!(
        !json_depth_exceeds(br#"{"a":"\"#, 1),
        "an unterminated string ends the scan"
    );
    assert!(json_depth_exceeds(b"[[[", 2));
}

#[test]
fn json_items_are_held_to_what_the_tree_takes() {
    let nested = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n)).into_bytes();
    assert!(!nests_deeper_than(&nested(16), 16));
    assert!(nests_deeper_than(&nested(17), 16));
    // The tree refuses its 128th level whatever the configured limit.
    assert!(!nests_deeper_than(&nested(127), 128));
    assert!(nests_deeper_than(&nested(128), 128));
    assert!(serde_json::from_slice::<serde_json::Value>(&nested(127)).is_ok());
    assert!(serde_json::from_slice::<serde_json::Value>(&nested(128)).is_err());
}

#[test]
fn read_event_and_parse_event_agree_on_depth() {
    let nested =
        |depth: usize| "{\"a\":".to_owned() + &"[".repeat(depth - 1) + &"]".repeat(depth - 1) + "}";
    for (max, depths) in [(128, [126, 127, 128, 129]), (5, [4, 5, 6, 7])] {
        for depth in depths {
            let text = nested(depth);
            let read = read_event(text.as_bytes(), max)
                .map(|(_, id)| id)
                .map_err(|e| e.to_string());
            let tree = parse_event(text.as_bytes(), max)
                .map(|(_, id)| id)
                .map_err(|e| e.to_string());
            assert_eq!(read, tree, "depth {depth}, max {max}");
        }
    }
    assert!(read_event(nested(127).as_bytes(), 128).is_ok());
    assert!(read_event(nested(128).as_bytes(), 128).is_err());
    // The same depths under a frame that the view reads, in a value it
    // passes over: serde_json's limit counts the levels the view reads too.
    let in_frame = |depth: usize| {
        format!(
            r#"{{"exception":{{"values":[{{"stacktrace":{{"frames":[{{"function":"f","vars":{}{}}}]}}}}]}}}}"#,
            "[".repeat(depth - 7),
            "]".repeat(depth - 7)
        )
    };
    for depth in [126, 127, 128, 129] {
        let text = in_frame(depth);
        assert_eq!(
            nests_deeper_than(text.as_bytes(), 128),
            depth > 127,
            "the text nests {depth} deep"
        );
        let read = read_event(text.as_bytes(), 128).map(|(e, _)| matches!(e, Event::View(..)));
        let tree = parse_event(text.as_bytes(), 128).map(|_| true);
        assert_eq!(read.is_ok(), depth <= 127, "depth {depth}");
        assert_eq!(read.is_ok(), tree.is_ok(), "depth {depth}");
        if let Ok(view) = read {
            assert!(view, "depth {depth}: read as a view");
        }
    }
}

#[test]
fn read_event_refuses_what_only_a_tree_checks_as_parse_event_does() {
    for (text, takes) in [
        (r#"{"x": {"y": "\ud800"}}"#, false),
        (r#"{"x": ["\udc00 alone"]}"#, false),
        (r#"{"x": "\ud83d\u0041"}"#, false),
        (r#"{"x": "\ud83d"}"#, false),
        (r#"{"x": "\u12"}"#, false),
        (r#"{"x": [1e309]}"#, false),
        (r#"{"x": {"n": 1.7976931348623158e308}}"#, false),
        // In a key; where the view reads a field leniently and drops it
        // (an object where a string was expected); beside the fields it
        // reads of a frame, a fingerprint and an exception.
        (r#"{"\ud800": 1}"#, false),
        (r#"{"release": {"a": "\ud800"}}"#, false),
        (r#"{"message": ["\udc00"]}"#, false),
        (r#"{"fingerprint": [{"n": 1e400}]}"#, false),
        (
            r#"{"exception": {"values": [{"type": "E", "stacktrace": {"frames": [{"function": "f", "vars": {"s": "\ud800"}}]}}]}}"#,
            false,
        ),
        (
            r#"{"exception": {"values": [{"type": "E", "mechanism": {"data": [-1e999]}}]}}"#,
            false,
        ),
        (
            r#"{"contexts": {"trace": {"trace_id": "ab", "data": "\udfff"}}}"#,
            false,
        ),
        (
            r#"{"exception": {"values": [{"type": "E", "stacktrace": {"frames": [{"function": "f", "vars": {"s": "\ud83d\ude00", "n": 1e308}}]}}]}}"#,
            true,
        ),
        (r#"{"x": "\ud83d\ude00 \u00e9 \\u \\ud800 \" \n"}"#, true),
        (
            r#"{"x": [1.5, -0, 1E5, 1e-7, 123456789012345678901234567890]}"#,
            true,
        ),
    ] {
        let read = read_event(text.as_bytes(), 128);
        let tree = parse_event(text.as_bytes(), 128);
        assert_eq!(read.is_ok(), takes, "{text}");
        assert_eq!(tree.is_ok(), takes, "{text}");
        if let Ok((event, _)) = read {
            assert!(matches!(event, Event::View(..)), "{text}");
        }
    }
}

#[test]
fn a_second_event_item_is_refused() {
    for (first, second) in [
        ("event", "event"),
        ("event", "transaction"),
        ("transaction", "feedback"),
    ] {
        let text = format!("{{}}\n{{\"type\":\"{first}\"}}\n{{}}\n{{\"type\":\"attachment\"}}\nx\n{{\"type\":\"{second}\"}}\n{{}}\n");
        assert_eq!(
            parse_str(&text).unwrap_err(),
            EnvelopeError::DuplicateEvent {
                index: 2,
                type_name: second.into()
            }
        );
    }
    // One event with anything else is fine.
    let env = parse_str(
        "{}\n{\"type\":\"event\"}\n{}\n{\"type\":\"session\"}\n{}\n{\"type\":\"session\"}\n{}\n",
    )
    .unwrap();
    assert_eq!(env.items.len(), 3);
}

#[test]
fn a_length_shorter_than_its_payload_is_named() {
    let e = parse_str("{}\n{\"type\":\"attachment\",\"length\":2}\nabcdef\n").unwrap_err();
    assert!(
        e.to_string()
            .contains("does item 0's length match its payload?"),
        "{e}"
    );
    let e = parse_str("{}\n{\"type\":\"attachment\"}\nabc\nnot a header\n").unwrap_err();
    assert!(!e.to_string().contains("length"), "{e}");
}
