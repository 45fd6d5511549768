//! Parsing every operation from MQTT, and every refusal, without a learner.

use std::time::Duration;

use serde_json::json;

use super::*;

const LIMITS: Limits = Limits {
    max_image_bytes: 1000,
};

fn parse(op: &str, arg: Option<&str>, payload: &[u8]) -> Result<Op, String> {
    super::parse::parse(op, arg, payload, false, &LIMITS)
        .map(|e| e.op)
        .map_err(|r| r.error.0)
}

fn parse_json(op: &str, v: serde_json::Value) -> Result<Op, String> {
    parse(op, None, v.to_string().as_bytes())
}

fn refused(op: &str, arg: Option<&str>, payload: &[u8], expect: &str) {
    match parse(op, arg, payload) {
        Ok(o) => panic!(
            "{op} {:?} accepted as {o:?}",
            String::from_utf8_lossy(payload)
        ),
        Err(e) => assert!(
            e.contains(expect),
            "{op}: {e:?} does not mention {expect:?}"
        ),
    }
}

#[test]
fn names_and_properties_are_written_once() {
    for k in OpKind::ALL {
        assert_eq!(OpKind::from_name(k.name()), Some(k));
    }
    assert_eq!(OpKind::from_name("frobnicate"), None);
    let reading: Vec<_> = OpKind::ALL
        .into_iter()
        .filter(|k| !k.changes_state())
        .map(OpKind::name)
        .collect();
    assert_eq!(
        reading,
        [
            "classes",
            "samples",
            "head",
            "recent",
            "recent_image",
            "classifiers",
            "sample_image",
            "classify",
            "history"
        ]
    );
    let levels: Vec<_> = OpKind::ALL
        .into_iter()
        .filter(|k| k.takes_label_level())
        .map(OpKind::name)
        .collect();
    assert_eq!(levels, ["add_sample", "label_frame"]);
}

#[test]
fn add_sample_takes_raw_bytes_or_base64_and_normalizes_the_label() {
    assert_eq!(
        parse("add_sample", Some("cafe\u{301}"), b"\xff\xd8jpeg"),
        Ok(Op::AddSample {
            label: "caf\u{e9}".into(),
            image: Bytes::from_static(b"\xff\xd8jpeg"),
            apply_region: false
        })
    );
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b"png!");
    assert_eq!(
        parse_json(
            "add_sample",
            json!({"label": "Cat", "image": b64, "apply_region": true})
        ),
        Ok(Op::AddSample {
            label: "Cat".into(),
            image: Bytes::from_static(b"png!"),
            apply_region: true
        })
    );
    // The label in the topic and the payload may agree (in any case).
    assert!(parse(
        "add_sample",
        Some("cat"),
        json!({"label": "CAT", "image": b64}).to_string().as_bytes()
    )
    .is_ok());
}

#[test]
fn add_sample_refusals() {
    let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
    refused("add_sample", None, b"\xff\xd8", "no label");
    refused("add_sample", Some("cat"), b"", "empty");
    refused("add_sample", Some("a/b"), b"x", "label contains");
    refused("add_sample", Some("unknown"), b"x", "reserved");
    refused("add_sample", Some("cat"), &[0u8; 1001], "limit");
    let j = |v: serde_json::Value| v.to_string().into_bytes();
    refused(
        "add_sample",
        None,
        &j(json!({"image": b64(b"x")})),
        "no label",
    );
    refused(
        "add_sample",
        Some("dog"),
        &j(json!({"label": "cat", "image": b64(b"x")})),
        "give one",
    );
    refused(
        "add_sample",
        None,
        &j(json!({"label": "cat", "image": "!!"})),
        "base64",
    );
    refused(
        "add_sample",
        None,
        &j(json!({"label": "cat", "image": b64(&[1u8; 1400])})),
        "larger than",
    );
    refused(
        "add_sample",
        None,
        &j(json!({"label": "cat", "image": b64(b"x"), "x": 1})),
        "unknown field",
    );
    refused("add_sample", None, b"{oops", "not valid JSON");
    refused("add_sample", Some("a/b"), b"x", "label contains");
}

#[test]
fn label_frame_takes_a_label_or_the_selected_one() {
    assert_eq!(
        parse("label_frame", Some("open"), b""),
        Ok(Op::LabelFrame {
            label: LabelChoice::Given("open".into()),
            count: 1,
            interval: Duration::from_millis(DEFAULT_INTERVAL_MS),
            skip_similar: None,
        })
    );
    assert_eq!(
        parse_json(
            "label_frame",
            json!({"selected_label": true, "count": 3, "interval_ms": 100})
        ),
        Ok(Op::LabelFrame {
            label: LabelChoice::Selected,
            count: 3,
            interval: Duration::from_millis(100),
            skip_similar: None,
        })
    );
    let j = |v: serde_json::Value| v.to_string().into_bytes();
    refused("label_frame", None, b"", "no label");
    refused(
        "label_frame",
        None,
        &j(json!({"label": "a", "selected_label": true})),
        "not both",
    );
    refused(
        "label_frame",
        None,
        &j(json!({"label": "a", "count": 0})),
        "count",
    );
    refused(
        "label_frame",
        None,
        &j(json!({"label": "a", "count": 51})),
        "count",
    );
    refused(
        "label_frame",
        None,
        &j(json!({"label": "a", "interval_ms": 10_001})),
        "interval_ms",
    );
    refused(
        "label_frame",
        None,
        &j(json!({"label": "a", "colour": 1})),
        "unknown field",
    );
    refused(
        "label_frame",
        None,
        &j(json!({"label": "null"})),
        "reserved",
    );
}

#[test]
fn the_json_operations_and_their_refusals() {
    let ok = [
        ("classes", json!({}), Op::Classes),
        ("retrain", json!({}), Op::Retrain),
        ("head", json!({}), Op::Head),
        ("classifiers", json!({}), Op::Classifiers),
        ("samples", json!({}), Op::Samples { label: None }),
        (
            "samples",
            json!({"label": "hat"}),
            Op::Samples {
                label: Some("hat".into()),
            },
        ),
        (
            "remove_sample",
            json!({"id": 7}),
            Op::RemoveSample(SampleRef::Id(7)),
        ),
        (
            "remove_sample",
            json!({"last": true}),
            Op::RemoveSample(SampleRef::Last),
        ),
        (
            "rename_class",
            json!({"from": "a", "to": "b"}),
            Op::RenameClass {
                from: "a".into(),
                to: "b".into(),
            },
        ),
        (
            "merge_class",
            json!({"from": "a", "into": "b"}),
            Op::MergeClass {
                from: "a".into(),
                into: "b".into(),
            },
        ),
        (
            "delete_class",
            json!({"label": "a"}),
            Op::DeleteClass { label: "a".into() },
        ),
        ("reset", json!({"confirm": true}), Op::Reset),
        ("recent", json!({}), Op::Recent { images: false }),
        (
            "recent",
            json!({"images": true}),
            Op::Recent { images: true },
        ),
        ("recent_image", json!({"id": 3}), Op::RecentImage { id: 3 }),
        (
            "label_recent",
            json!({"id": 3, "label": "b"}),
            Op::LabelRecent {
                ids: vec![3],
                label: "b".into(),
            },
        ),
        (
            "discard_recent",
            json!({"id": 3}),
            Op::DiscardRecent { ids: vec![3] },
        ),
        (
            "select_label",
            json!({"label": "open"}),
            Op::SelectLabel {
                label: "open".into(),
            },
        ),
    ];
    for (op, body, want) in ok {
        assert_eq!(parse_json(op, body.clone()), Ok(want), "{op} {body}");
    }
    // An empty payload is an empty object.
    assert_eq!(parse("classes", None, b" "), Ok(Op::Classes));
    let j = |v: serde_json::Value| v.to_string().into_bytes();
    for (op, body, expect) in [
        ("classes", json!({"x": 1}), "unknown field"),
        ("samples", json!({"label": 3}), "must be a string"),
        ("remove_sample", json!({}), "needs \"id\""),
        ("remove_sample", json!({"id": "3"}), "must be a sample id"),
        (
            "remove_sample",
            json!({"id": 3, "last": true}),
            "needs \"id\"",
        ),
        ("remove_sample", json!({"last": false}), "needs \"id\""),
        ("rename_class", json!({"from": "a"}), "\"to\""),
        (
            "rename_class",
            json!({"from": "a", "to": "x/y"}),
            "label contains",
        ),
        (
            "merge_class",
            json!({"from": "a", "to": "b"}),
            "unknown field",
        ),
        ("delete_class", json!({}), "\"label\""),
        ("reset", json!({}), "confirm"),
        ("reset", json!({"confirm": "yes"}), "confirm"),
        ("recent", json!({"images": 1}), "true or false"),
        ("recent_image", json!({"id": -1}), "numeric field \"id\""),
        ("label_recent", json!({"id": 1}), "\"label\""),
        ("label_recent", json!({"id": 1, "label": ""}), "empty"),
        ("discard_recent", json!({}), "\"id\" or \"ids\""),
        (
            "select_label",
            json!({"label": "half/open"}),
            "label contains",
        ),
    ] {
        refused(op, None, &j(body), expect);
    }
    refused("classes", None, b"[1, 2]", "JSON object");
    refused("classes", None, b"{oops", "not valid JSON");
}

#[test]
fn select_label_takes_plain_text() {
    assert_eq!(
        parse("select_label", None, b"  Open door \n"),
        Ok(Op::SelectLabel {
            label: "Open door".into()
        })
    );
    refused("select_label", None, b"half/open", "label contains");
    refused("select_label", None, b"\xff\xfe", "not UTF-8");
}

#[test]
fn unknown_operations_extra_levels_and_long_transactions_are_refused() {
    refused("frobnicate", None, b"{}", "unknown operation");
    refused("classes", Some("x"), b"{}", "takes no further topic level");
    refused(
        "reset",
        Some("all"),
        br#"{"confirm": true}"#,
        "no further topic level",
    );
    let long = format!(r#"{{"transaction": "{}"}}"#, "t".repeat(300));
    let r =
        super::parse::parse("classes", None, long.as_bytes(), false, &LIMITS).expect_err("long");
    assert!(r.error.0.contains("transaction"), "{}", r.error);
    assert_eq!(r.transaction, None, "a long transaction is not echoed");
}

#[test]
fn the_transaction_is_echoed_and_keys_a_repeat() {
    let e = super::parse::parse(
        "delete_class",
        None,
        br#"{"label": "a", "transaction": 42}"#,
        false,
        &LIMITS,
    )
    .expect("parse");
    assert_eq!(e.transaction, Some(json!(42)));
    assert!(e.idempotent());
    let again = super::parse::parse(
        "delete_class",
        None,
        br#"{"label": "a", "transaction": 42}"#,
        false,
        &LIMITS,
    )
    .expect("parse");
    assert_eq!(e.key, again.key);
    // A refusal echoes the transaction it could read.
    let r = super::parse::parse("reset", None, br#"{"transaction": "t1"}"#, false, &LIMITS)
        .expect_err("no confirm");
    assert_eq!(r.transaction, Some(json!("t1")));
    // Reading operations are never remembered; a redelivery of a change is.
    let read = super::parse::parse("classes", None, br#"{"transaction": 1}"#, true, &LIMITS)
        .expect("parse");
    assert!(!read.idempotent());
    let dup = super::parse::parse("retrain", None, b"", true, &LIMITS).expect("parse");
    assert!(dup.idempotent());
    let plain = super::parse::parse("retrain", None, b"", false, &LIMITS).expect("parse");
    assert!(!plain.idempotent());
}

#[test]
fn the_consoles_operations_parse_and_refuse_like_the_others() {
    // Several recent crops at once, bounded.
    assert_eq!(
        parse_json("label_recent", json!({"ids": [1, 2, 3], "label": "b"})),
        Ok(Op::LabelRecent {
            ids: vec![1, 2, 3],
            label: "b".into()
        })
    );
    assert_eq!(
        parse_json("discard_recent", json!({"ids": [7]})),
        Ok(Op::DiscardRecent { ids: vec![7] })
    );
    let many: Vec<u64> = (0..=MAX_IDS as u64).collect();
    let j = |v: serde_json::Value| v.to_string().into_bytes();
    refused(
        "discard_recent",
        None,
        &j(json!({"ids": many})),
        "at most 1000",
    );
    refused(
        "discard_recent",
        None,
        &j(json!({"ids": []})),
        "non-empty list",
    );
    refused(
        "discard_recent",
        None,
        &j(json!({"ids": ["1"]})),
        "list of recent crop ids",
    );
    refused(
        "label_recent",
        None,
        &j(json!({"id": 1, "ids": [2], "label": "b"})),
        "\"id\" or \"ids\"",
    );
    // Hold to record: near-duplicates skipped, the threshold checked.
    assert_eq!(
        parse_json(
            "label_frame",
            json!({"label": "a", "count": 20, "interval_ms": 250, "skip_similar": 0.97})
        ),
        Ok(Op::LabelFrame {
            label: LabelChoice::Given("a".into()),
            count: 20,
            interval: Duration::from_millis(250),
            skip_similar: Some(0.97),
        })
    );
    refused(
        "label_frame",
        None,
        &j(json!({"label": "a", "skip_similar": 1.5})),
        "skip_similar",
    );
    refused(
        "label_frame",
        None,
        &j(json!({"label": "a", "skip_similar": 0.1})),
        "skip_similar",
    );
    assert_eq!(
        parse_json("stop_label_frame", json!({})),
        Ok(Op::StopLabelFrame)
    );
    refused(
        "stop_label_frame",
        None,
        &j(json!({"label": "a"})),
        "unknown field",
    );
    // A sample to another class; its image; the heads so far.
    assert_eq!(
        parse_json("move_sample", json!({"id": 4, "label": "Open"})),
        Ok(Op::MoveSample {
            id: 4,
            label: "Open".into()
        })
    );
    refused(
        "move_sample",
        None,
        &j(json!({"id": 4, "label": "a/b"})),
        "label contains",
    );
    assert_eq!(
        parse_json("sample_image", json!({"id": 9})),
        Ok(Op::SampleImage { id: 9 })
    );
    assert_eq!(parse_json("history", json!({})), Ok(Op::History));
    // Classify: raw bytes or base64, within the image limit; nothing else.
    assert_eq!(
        parse("classify", None, &[0xff, 0xd8, 0xff]),
        Ok(Op::Classify {
            image: bytes::Bytes::from_static(&[0xff, 0xd8, 0xff])
        })
    );
    assert_eq!(
        parse_json("classify", json!({"image": "/9j/"})),
        Ok(Op::Classify {
            image: bytes::Bytes::from_static(&[0xff, 0xd8, 0xff])
        })
    );
    refused("classify", None, &vec![0xff; 1001], "limit");
    refused("classify", None, b"", "empty");
    refused(
        "classify",
        Some("hat"),
        &[0xff, 0xd8],
        "no further topic level",
    );
    // Which operations the manager carries out, and which change state.
    assert!(OpKind::CreateClassifier.is_manager() && !OpKind::MoveSample.is_manager());
    assert!(OpKind::StopLabelFrame.changes_state() && OpKind::MoveSample.changes_state());
    assert!(!OpKind::Classify.changes_state() && !OpKind::SampleImage.changes_state());
    assert!(OpKind::ALL
        .iter()
        .all(|k| OpKind::from_name(k.name()) == Some(*k)));
}
