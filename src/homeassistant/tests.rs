//! The bridge's state machine: what it sends, in which order, and when.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::mqtt::ClassifierTopics;
use discovery::tests::ctx;

const HEARTBEAT: Duration = Duration::from_secs(5);

fn bridge(discovery: bool, classes: &[&str]) -> Bridge {
    saved_bridge(discovery, classes, Saved::default())
}

fn saved_bridge(discovery: bool, classes: &[&str], saved: Saved) -> Bridge {
    Bridge::new(
        discovery.then(ctx),
        vec![Arc::new(ClassifierTopics::new("edgehead/cam1", "default"))],
        vec![classes.iter().map(|c| c.to_string()).collect()],
        saved,
        HEARTBEAT,
    )
}

fn saves(out: &[Out]) -> Vec<Saved> {
    out.iter()
        .filter_map(|o| match o {
            Out::Save(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn prediction(label: Option<&str>, confidence: f32, seq: u64) -> Event {
    Event::Prediction {
        classifier: "default".into(),
        label: label.map(str::to_string),
        confidence,
        seq,
        captured_at: format!("t{seq}"),
        head: Some("ncm-v1".into()),
    }
}

fn retained<'a>(out: &'a [Out], topic: &str) -> Option<&'a [u8]> {
    out.iter().rev().find_map(|o| match o {
        Out::Retain { topic: t, payload } if t == topic => Some(payload.as_slice()),
        _ => None,
    })
}

fn json_of(out: &[Out], topic: &str) -> Option<Value> {
    retained(out, topic).map(|p| serde_json::from_slice(p).expect("json"))
}

fn events(out: &[Out]) -> Vec<Value> {
    out.iter()
        .filter_map(|o| match o {
            Out::Send { topic, payload } if topic == "edgehead/cam1/default/event" => {
                Some(serde_json::from_slice(payload).expect("json"))
            }
            _ => None,
        })
        .collect()
}

const STATE: &str = "edgehead/cam1/default/state";
const LABEL: &str = "homeassistant/sensor/cam1/label/config";

#[test]
fn a_state_that_needs_a_new_option_waits_until_home_assistant_has_it() {
    let t0 = Instant::now();
    let mut b = bridge(true, &[]);
    let start = b.start(t0);
    assert_eq!(
        json_of(&start, LABEL).expect("label config")["options"],
        json!(["unrecognized", "untrained"])
    );
    let later = t0 + Duration::from_secs(10);
    let out = b.on_event(prediction(None, 0.0, 1), later);
    assert_eq!(json_of(&out, STATE).expect("state")["state"], "untrained");
    assert!(events(&out).is_empty(), "no event for the first state");

    // A class the options do not have yet: announced now, shown SETTLE later.
    let t1 = later + Duration::from_secs(1);
    let out = b.on_event(prediction(Some("hat"), 0.9, 2), t1);
    let config = json_of(&out, LABEL).expect("re-announced");
    assert_eq!(
        config["options"],
        json!(["hat", "unrecognized", "untrained"])
    );
    assert!(
        retained(&out, STATE).is_none(),
        "the state waits for the options"
    );
    assert_eq!(b.deadline(), Some(t1 + SETTLE));
    // A later frame of the same class keeps waiting, with its confidence.
    assert!(retained(
        &b.on_event(prediction(Some("hat"), 0.95, 3), t1 + SETTLE / 2),
        STATE
    )
    .is_none());
    assert!(b.tick(t1 + SETTLE / 2).is_empty());
    let out = b.tick(t1 + SETTLE);
    let state = json_of(&out, STATE).expect("state after SETTLE");
    assert_eq!(state["state"], "hat");
    assert_eq!(state["seq"], 2, "the prediction that brought the state");
    assert_eq!(state["confidence"], json!(0.95_f32));
    let ev = events(&out);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["event_type"], "hat");
    assert_eq!(ev[0]["previous"], "untrained");
    // Nothing waits now but the staleness of the last frame.
    assert_eq!(b.deadline(), Some(t1 + SETTLE / 2 + HEARTBEAT * 3));
}

#[test]
fn the_label_is_available_while_frames_arrive_and_a_new_class_does_not_expire_it() {
    let avail = "edgehead/cam1/default/availability";
    let t0 = Instant::now();
    let mut b = bridge(true, &["hat"]);
    // At start, until a frame comes: not current.
    let started = b.start(t0);
    assert_eq!(retained(&started, avail), Some(&b"offline"[..]));
    let t = t0 + Duration::from_secs(1);
    let out = b.on_event(prediction(Some("hat"), 0.9, 1), t);
    assert_eq!(retained(&out, avail), Some(&b"online"[..]));
    // The label reads its copy of the state, with no expire_after: a new class
    // changes its config and leaves it available.
    let label = json_of(&started, LABEL).expect("label config");
    assert!(label.get("expire_after").is_none(), "{label}");
    assert_eq!(label["availability_mode"], "all");
    let out = b.on_event(
        Event::Head {
            classifier: "default".into(),
            classes: vec!["hat".into(), "scarf".into()],
        },
        t + Duration::from_secs(1),
    );
    assert!(json_of(&out, LABEL).is_some(), "options changed");
    assert!(retained(&out, avail).is_none(), "availability untouched");
    // Frames keep it online; once they stop for three heartbeats, offline.
    let mut now = t;
    for seq in 2..6 {
        now += HEARTBEAT;
        let out = b.on_event(prediction(Some("hat"), 0.9, seq), now);
        assert!(retained(&out, avail).is_none());
        assert!(retained(&b.tick(now), avail).is_none());
    }
    assert_eq!(b.deadline(), Some(now + HEARTBEAT * 3));
    assert!(retained(&b.tick(now + HEARTBEAT * 2), avail).is_none());
    assert_eq!(
        retained(&b.tick(now + HEARTBEAT * 3), avail),
        Some(&b"offline"[..])
    );
    // And the next frame brings it back.
    let out = b.on_event(prediction(Some("hat"), 0.9, 9), now + HEARTBEAT * 4);
    assert_eq!(retained(&out, avail), Some(&b"online"[..]));
}

#[test]
fn edgeheads_unknown_is_unrecognized_and_a_flicker_back_is_no_change() {
    let t0 = Instant::now();
    let mut b = bridge(true, &["hat"]);
    b.start(t0);
    let t = t0 + Duration::from_secs(5);
    let out = b.on_event(prediction(Some("hat"), 0.8, 1), t);
    assert_eq!(json_of(&out, STATE).expect("state")["state"], "hat");
    let out = b.on_event(prediction(Some(crate::names::UNKNOWN), 0.0, 2), t);
    let s = json_of(&out, STATE).expect("state");
    assert_eq!(
        (s["state"].as_str(), s["label"].as_str()),
        (Some("unrecognized"), Some("unknown"))
    );
    assert_eq!(events(&out)[0]["previous"], "hat");
    // Same state, same rounded confidence: nothing to send.
    assert!(b
        .on_event(prediction(Some(crate::names::UNKNOWN), 0.001, 3), t)
        .is_empty());
    // Same state, another confidence: the state again, without an event, and
    // with the seq of the change.
    let out = b.on_event(prediction(Some("hat"), 0.8, 4), t);
    let out2 = b.on_event(prediction(Some("hat"), 0.6, 5), t);
    assert_eq!(events(&out).len(), 1);
    assert!(events(&out2).is_empty());
    assert_eq!(json_of(&out2, STATE).expect("state")["seq"], 4);
}

#[test]
fn the_state_is_published_again_only_while_frames_arrive() {
    let t0 = Instant::now();
    let mut b = bridge(true, &["hat"]);
    b.start(t0);
    let t = t0 + Duration::from_secs(5);
    b.on_event(prediction(Some("hat"), 0.8, 1), t);
    let alive = Event::Alive {
        classifier: "default".into(),
    };
    assert!(b.on_event(alive.clone(), t + HEARTBEAT / 2).is_empty());
    let out = b.on_event(alive.clone(), t + HEARTBEAT);
    assert_eq!(json_of(&out, STATE).expect("heartbeat")["state"], "hat");
    assert!(events(&out).is_empty());
    assert!(b
        .on_event(alive, t + HEARTBEAT + Duration::from_secs(1))
        .is_empty());
}

#[test]
fn a_deleted_class_leaves_the_options_once_it_is_no_longer_shown() {
    let t0 = Instant::now();
    let mut b = bridge(true, &["hat", "shoes"]);
    let start = b.start(t0);
    let hat_sensor = start
        .iter()
        .find_map(|o| match o {
            Out::Retain { topic, .. } if topic.contains("/class_hat_") => Some(topic.clone()),
            _ => None,
        })
        .expect("hat binary sensor");
    let t = t0 + Duration::from_secs(5);
    b.on_event(prediction(Some("hat"), 0.9, 1), t);
    // hat deleted while shown: still an option (Home Assistant would refuse the
    // state otherwise).
    let out = b.on_event(
        Event::Head {
            classifier: "default".into(),
            classes: vec!["shoes".into()],
        },
        t,
    );
    if let Some(c) = json_of(&out, LABEL) {
        assert!(c["options"]
            .as_array()
            .expect("options")
            .contains(&json!("hat")));
    }
    let out = b.on_event(prediction(Some("shoes"), 0.9, 2), t + SETTLE * 2);
    // The state first, then the options without hat, and the sensor removed.
    let state_at = out
        .iter()
        .position(|o| matches!(o, Out::Retain { topic, .. } if topic == STATE));
    let config_at = out
        .iter()
        .position(|o| matches!(o, Out::Retain { topic, .. } if topic == LABEL));
    assert!(
        state_at.is_some() && config_at.is_some() && state_at < config_at,
        "{out:?}"
    );
    assert_eq!(
        json_of(&out, LABEL).expect("config")["options"],
        json!(["shoes", "unrecognized", "untrained"])
    );
    assert!(out.contains(&Out::Clear { topic: hat_sensor }));
    assert_eq!(saves(&out).len(), 1);
}

#[test]
fn start_removes_the_configs_of_entities_that_went_away_while_stopped() {
    let t0 = Instant::now();
    let gone = "homeassistant/binary_sensor/cam1/class_shoes_123456/config".to_string();
    let mut b = saved_bridge(
        true,
        &["hat"],
        Saved {
            discovery_topics: vec![gone.clone(), LABEL.to_string()],
            ..Saved::default()
        },
    );
    let out = b.start(t0);
    assert!(out.contains(&Out::Clear {
        topic: gone.clone()
    }));
    assert!(!out.contains(&Out::Clear {
        topic: LABEL.into()
    }));
    let saved = saves(&out);
    assert_eq!(saved.len(), 1, "saved once, at the end of start");
    let topics = &saved[0].discovery_topics;
    assert!(topics.contains(&LABEL.to_string()) && !topics.contains(&gone));
    // The same set again: nothing to remove, nothing to save.
    let mut again = saved_bridge(true, &["hat"], saved[0].clone());
    let out = again.start(t0);
    assert!(saves(&out).is_empty());
    assert!(
        !out.iter().any(|o| matches!(o, Out::Clear { .. })),
        "{out:?}"
    );
}

#[test]
fn the_teach_label_and_a_class_still_shown_survive_a_restart() {
    let t0 = Instant::now();
    let mut b = bridge(true, &["hat", "scarf"]);
    b.start(t0);
    let t = t0 + Duration::from_secs(5);
    let out = b.on_event(
        Event::TeachLabel {
            classifier: "default".into(),
            label: "hat".into(),
        },
        t,
    );
    assert_eq!(saves(&out)[0].teach_labels["default"], "hat");
    b.on_event(prediction(Some("scarf"), 0.9, 1), t);
    b.on_event(
        Event::Head {
            classifier: "default".into(),
            classes: vec!["hat".into()],
        },
        t,
    );
    // Stopped now: scarf (deleted) is still the retained state on the broker.
    let saved = b.saved();
    assert_eq!(saved.shown["default"], "scarf");
    let mut next = saved_bridge(true, &["hat"], saved);
    let out = next.start(t0);
    assert_eq!(
        retained(&out, "edgehead/cam1/default/teach_label"),
        Some(&b"hat"[..])
    );
    let options = json_of(&out, LABEL).expect("label config")["options"].clone();
    assert_eq!(
        options,
        json!(["hat", "scarf", "unrecognized", "untrained"])
    );
    // The first state replaces it, and scarf leaves the options.
    let out = next.on_event(prediction(Some("hat"), 0.9, 1), t0 + SETTLE * 2);
    assert_eq!(
        json_of(&out, LABEL).expect("label config")["options"],
        json!(["hat", "unrecognized", "untrained"])
    );
}

#[test]
fn a_flicker_keeps_the_time_the_shown_state_began() {
    let t0 = Instant::now();
    let mut b = bridge(true, &["hat", "shoes"]);
    b.start(t0);
    let t = t0 + Duration::from_secs(5);
    b.on_event(prediction(Some("hat"), 0.9, 1), t);
    // shoes, announced long ago, is shown at once; a class announced just now
    // would wait: make shoes wait by announcing a new class first.
    b.on_event(
        Event::Head {
            classifier: "default".into(),
            classes: vec!["hat".into(), "shoes".into(), "scarf".into()],
        },
        t,
    );
    assert!(retained(&b.on_event(prediction(Some("shoes"), 0.9, 2), t), STATE).is_none());
    assert!(retained(&b.on_event(prediction(Some("hat"), 0.5, 3), t), STATE).is_none());
    // After SETTLE: hat again (Home Assistant counts a reconfigured sensor as
    // expired until the next state), with the time hat began, and no event.
    let out = b.tick(t + SETTLE);
    let s = json_of(&out, STATE).expect("the shown state again");
    assert_eq!(
        (s["state"].as_str(), s["seq"].as_u64(), s["since"].as_str()),
        (Some("hat"), Some(1), Some("t1"))
    );
    assert!(events(&out).is_empty(), "the waiting change was void");
}

#[test]
fn discovery_off_removes_every_config_and_keeps_the_state_topics() {
    let t0 = Instant::now();
    let mut b = saved_bridge(
        false,
        &["hat"],
        Saved {
            discovery_topics: vec![LABEL.to_string()],
            ..Saved::default()
        },
    );
    let out = b.start(t0);
    assert!(out.contains(&Out::Clear {
        topic: LABEL.into()
    }));
    assert!(!out
        .iter()
        .any(|o| matches!(o, Out::Retain { topic, .. } if topic.starts_with("homeassistant/"))));
    let out = b.on_event(prediction(Some("shoes"), 0.7, 1), t0);
    assert_eq!(json_of(&out, STATE).expect("state")["state"], "shoes");
}

#[test]
fn a_new_teach_label_is_an_option_of_the_select_before_it_is_selected() {
    let t0 = Instant::now();
    let mut b = bridge(true, &["hat"]);
    b.start(t0);
    let t = t0 + Duration::from_secs(5);
    let teach = "edgehead/cam1/default/teach_label";
    let select = "homeassistant/select/cam1/teach_label/config";
    let out = b.on_event(
        Event::TeachLabel {
            classifier: "default".into(),
            label: "scarf".into(),
        },
        t,
    );
    assert_eq!(
        json_of(&out, select).expect("select")["options"],
        json!(["hat", "scarf"])
    );
    assert!(retained(&out, teach).is_none());
    let out = b.tick(t + SETTLE);
    assert_eq!(retained(&out, teach), Some(&b"scarf"[..]));
    // Back to an existing class: scarf leaves the options, and hat is sent once
    // the select has them.
    let out = b.on_event(
        Event::TeachLabel {
            classifier: "default".into(),
            label: "hat".into(),
        },
        t + SETTLE * 3,
    );
    assert_eq!(
        json_of(&out, select).expect("select")["options"],
        json!(["hat"])
    );
    assert_eq!(retained(&b.tick(t + SETTLE * 4), teach), Some(&b"hat"[..]));
}

#[test]
fn a_burst_of_teach_labels_makes_one_announcement_and_one_save_per_settle() {
    let t0 = Instant::now();
    let mut b = bridge(true, &["hat"]);
    b.start(t0);
    let t = t0 + Duration::from_secs(5);
    let teach = "edgehead/cam1/default/teach_label";
    let select = "homeassistant/select/cam1/teach_label/config";
    let mut all = Vec::new();
    // 300 new labels, 10 ms apart (3 s): not 300 configs and 300 saves.
    for n in 0..300u32 {
        let now = t + Duration::from_millis(10 * u64::from(n));
        all.extend(b.on_event(
            Event::TeachLabel {
                classifier: "default".into(),
                label: format!("label {n}"),
            },
            now,
        ));
        all.extend(b.tick(now));
    }
    // Then it settles: the last label is an option, selected and saved.
    let end = t + Duration::from_secs(3);
    for k in 1..=3 {
        all.extend(b.tick(end + SETTLE * k));
    }
    let configs: Vec<Value> = all
        .iter()
        .filter_map(|o| match o {
            Out::Retain { topic, payload } if topic == select => {
                Some(serde_json::from_slice(payload).expect("json"))
            }
            _ => None,
        })
        .collect();
    let per_settle = (3_000 / SETTLE.as_millis() + 2) as usize;
    assert!(
        configs.len() <= per_settle,
        "{} announcements",
        configs.len()
    );
    assert!(
        saves(&all).len() <= per_settle,
        "{} saves",
        saves(&all).len()
    );
    let options = &configs.last().expect("announced")["options"];
    assert!(
        options
            .as_array()
            .expect("options")
            .contains(&json!("label 299")),
        "{options}"
    );
    assert_eq!(retained(&all, teach), Some(&b"label 299"[..]));
    assert_eq!(
        b.saved().teach_labels.get("default").map(String::as_str),
        Some("label 299")
    );
    assert_eq!(
        saves(&all)
            .last()
            .and_then(|s| s.teach_labels.get("default").cloned())
            .as_deref(),
        Some("label 299")
    );
}

#[test]
fn a_refused_label_clears_the_selection_in_home_assistant_and_the_saved_state() {
    let t0 = Instant::now();
    let mut b = bridge(true, &["hat"]);
    b.start(t0);
    let teach = "edgehead/cam1/default/teach_label";
    let t = t0 + Duration::from_secs(5);
    b.on_event(
        Event::TeachLabel {
            classifier: "default".into(),
            label: "hat".into(),
        },
        t,
    );
    assert_eq!(
        b.saved().teach_labels.get("default").map(String::as_str),
        Some("hat")
    );
    let out = b.on_event(
        Event::TeachLabelCleared {
            classifier: "default".into(),
        },
        t + Duration::from_secs(5),
    );
    assert_eq!(retained(&out, teach), Some(&b"None"[..]));
    assert!(b.saved().teach_labels.is_empty());
    assert!(
        !saves(&out).is_empty(),
        "saved, so a restart does not bring it back"
    );
}

#[test]
fn the_last_result_fits_a_home_assistant_state() {
    let long = "x".repeat(1000);
    let v = last_result(
        "label_frame",
        &json!({"status": "error", "error": long, "data": null}),
    );
    let m = v["message"].as_str().expect("message");
    assert_eq!(m.chars().count(), MAX_STATE_CHARS);
    assert!(m.starts_with("Teach refused: xxx"));
    let ok = last_result(
        "add_sample",
        &json!({"status": "ok", "data": {"label": "hat", "class_samples": 3}}),
    );
    assert_eq!(ok["message"], "Stored a sample of “hat” (3 samples now)");
    assert_eq!(ok["data"]["label"], "hat");
}

#[test]
fn answers_read_as_sentences_and_undo_names_its_class() {
    let said = |op: &str, data: Value| {
        last_result(op, &json!({"status": "ok", "data": data}))["message"]
            .as_str()
            .expect("message")
            .to_string()
    };
    assert_eq!(
        said(
            "remove_sample",
            json!({"removed": 7, "label": "closed", "classes": [{"label": "closed", "samples": 1}]})
        ),
        "Removed a sample of “closed” (1 sample left)"
    );
    assert_eq!(
        said("select_label", json!({"label": "open", "new_class": true})),
        "Teaching “open”, a new class: press Teach to store its first sample"
    );
    assert_eq!(
        said(
            "label_frame",
            json!({"ids": [1, 2], "label": "open", "class_samples": 2, "skipped_similar": 3})
        ),
        "Stored 2 frames as “open” (2 samples now); 3 near-identical skipped"
    );
    assert_eq!(said("move_sample", json!({})), "Move sample done");
    let refused = last_result(
        "select_label",
        &json!({"status": "error", "error": "the label contains '/'"}),
    );
    assert_eq!(
        refused["message"],
        "Label choice refused: the label contains '/'"
    );
    for (op, data) in [
        ("remove_sample", json!({})),
        ("select_label", json!({})),
        ("add_sample", json!({"label": "x"})),
    ] {
        let m = said(op, data);
        assert!(!m.contains(": ok"), "{op}: {m}");
    }
}

#[test]
fn a_saved_state_this_device_could_not_have_written_is_ignored() {
    let mut saved = Saved {
        discovery_topics: vec![
            LABEL.into(),
            "homeassistant/sensor/other/label/config".into(),
            "edgehead/cam1/default/state".into(),
            "homeassistant/light/cam1/x/config".into(),
            "homeassistant/sensor/cam1/a/b/config".into(),
            format!("homeassistant/sensor/cam1/{}/config", "k".repeat(201)),
        ],
        ..Saved::default()
    };
    saved.teach_labels.insert("default".into(), "a/b #+".into());
    saved.teach_labels.insert("door".into(), "open".into());
    saved.shown.insert("default".into(), "x".repeat(70_000));
    saved.shown.insert("door".into(), "unrecognized".into());
    let s = saved.sanitize("homeassistant", "cam1");
    assert_eq!(s.discovery_topics, [LABEL]);
    assert_eq!(s.teach_labels.len(), 1);
    assert_eq!(s.teach_labels["door"], "open");
    assert_eq!(s.shown.len(), 1);
    assert_eq!(s.shown["door"], "unrecognized");
}
