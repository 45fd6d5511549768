//! Home Assistant's side of the daemon, against a real mosquitto and the real
//! backbone: discovery of every entity, teaching with the select/text and button
//! entities' messages, the order of options and states, the image, removal of a
//! deleted class's entity, and the answer to Home Assistant's birth message.
//! (Home Assistant itself is run by `tools/ha-check`.)

use std::time::Duration;

use serde_json::Value;

use crate::harness::{config_file, Client, Mosquitto, Msg, Process};

const BASE: &str = "edgehead/it/default";
const LABEL: &str = "homeassistant/sensor/it/label/config";
const SELECT: &str = "homeassistant/select/it/teach_label/config";

fn position(seen: &[Msg], pred: impl Fn(&Msg) -> bool) -> Option<usize> {
    seen.iter().position(pred)
}

fn options(m: &Msg) -> Vec<String> {
    m.json()["options"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn answer(c: &mut Client, op: &str) -> Value {
    c.wait_for(&format!("{BASE}/response/{op}"), 60, |_| true)
        .await
        .json()
}

#[tokio::test(flavor = "multi_thread")]
async fn home_assistant_entities_follow_teaching_from_the_dashboard() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(
        dir.path(),
        broker.port,
        "[homeassistant]\nimage_interval_secs = 1.0\nimage_max_side = 200\n",
    );
    let mut c = Client::connect(broker.port, &["homeassistant/#", "edgehead/it/#"]).await;
    let _daemon = Process::start(&config);

    // Discovery: untaught, the label can only be edgehead's own states.
    let label = c.wait_for(LABEL, 60, |m| !m.payload.is_empty()).await;
    assert_eq!(options(&label), ["unrecognized", "untrained"]);
    assert_eq!(label.json()["state_topic"], format!("{BASE}/label"));
    let state = c
        .wait_for(&format!("{BASE}/state"), 60, |_| true)
        .await
        .json();
    assert_eq!(state["state"], "untrained", "{state}");
    let mut components: Vec<String> = c
        .seen
        .iter()
        .filter(|m| m.topic.starts_with("homeassistant/") && m.topic.ends_with("/config"))
        .filter_map(|m| m.topic.split('/').nth(1).map(str::to_string))
        .collect();
    components.sort();
    components.dedup();
    for want in [
        "binary_sensor",
        "button",
        "event",
        "image",
        "select",
        "sensor",
        "text",
    ] {
        assert!(
            components.iter().any(|c| c == want),
            "no {want} in {components:?}"
        );
    }

    // The image: a JPEG no larger than image_max_side.
    let jpeg = c
        .wait_for(&format!("{BASE}/image"), 30, |m| !m.payload.is_empty())
        .await;
    let img = image::load_from_memory(&jpeg.payload).expect("a JPEG");
    assert!(
        img.width().max(img.height()) <= 200,
        "{}x{}",
        img.width(),
        img.height()
    );

    // The text entity sends the new label as plain text: it becomes an option of
    // the select before it is the select's state.
    c.publish(&format!("{BASE}/request/select_label"), "hat")
        .await;
    let r = answer(&mut c, "select_label").await;
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["data"]["new_class"], true);
    c.wait_for(&format!("{BASE}/teach_label"), 20, |m| m.text() == "hat")
        .await;
    let select_at = position(&c.seen, |m| {
        m.topic == SELECT && options(m).contains(&"hat".into())
    });
    let teach_at = position(&c.seen, |m| {
        m.topic == format!("{BASE}/teach_label") && m.text() == "hat"
    });
    assert!(
        select_at.is_some() && select_at < teach_at,
        "{select_at:?} {teach_at:?}"
    );

    // The button: the current frame as the selected label; the answer shows in
    // last_result.
    c.publish(
        &format!("{BASE}/request/label_frame"),
        r#"{"selected_label": true}"#,
    )
    .await;
    let r = answer(&mut c, "label_frame").await;
    assert_eq!(r["status"], "ok", "{r}");
    let last = c
        .wait_for(&format!("{BASE}/last_result"), 20, |m| {
            m.json()["op"] == "label_frame"
        })
        .await
        .json();
    assert_eq!(last["status"], "ok");
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Stored 1 frame as “hat”")),
        "{last}"
    );

    // The taught class: an option before any state says it, a binary sensor, an
    // event when the state changes.
    let hat_state = c
        .wait_for(&format!("{BASE}/state"), 60, |m| m.json()["state"] == "hat")
        .await;
    assert_eq!(hat_state.json()["label"], "hat");
    let option_at = position(&c.seen, |m| {
        m.topic == LABEL && options(m).contains(&"hat".into())
    });
    let state_at = position(&c.seen, |m| {
        m.topic == format!("{BASE}/state") && m.json()["state"] == "hat"
    });
    assert!(
        option_at.is_some() && option_at < state_at,
        "{option_at:?} {state_at:?}"
    );
    // The event follows the state it announces.
    let event = c
        .wait_for(&format!("{BASE}/event"), 10, |m| {
            m.json()["event_type"] == "hat"
        })
        .await
        .json();
    // Before: nothing taught, or (one class, one sample: only near copies of
    // the taught frame are hat) a frame of something else.
    assert!(
        event["previous"] == "untrained" || event["previous"] == "unrecognized",
        "{event}"
    );
    let hat_sensor = c
        .seen
        .iter()
        .find(|m| {
            m.topic
                .starts_with("homeassistant/binary_sensor/it/class_hat_")
        })
        .map(|m| m.topic.clone())
        .expect("a binary sensor for hat");

    // Undo the only sample: no class is left, and once the state has moved on,
    // hat's binary sensor is removed (an empty retained config), perhaps
    // before the answer arrives.
    let mark = c.mark();
    c.publish(
        &format!("{BASE}/request/remove_sample"),
        r#"{"last": true}"#,
    )
    .await;
    let r = answer(&mut c, "remove_sample").await;
    assert_eq!(r["status"], "ok", "{r}");
    c.wait_since(mark, &hat_sensor, 60, |m| m.payload.is_empty())
        .await;
    // The label's options lost hat in the same step (just before).
    let label = c
        .seen
        .iter()
        .rev()
        .find(|m| m.topic == LABEL)
        .expect("label config");
    assert_eq!(options(label), ["unrecognized", "untrained"]);
    // Saved at most every SAVE_EVERY (5 s): the list follows within it.
    let saved_topics = || -> Vec<Value> {
        let saved: Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("state/homeassistant.json")).expect("topics saved"),
        )
        .expect("json");
        saved["discovery_topics"].as_array().expect("list").clone()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut topics = saved_topics();
    while topics
        .iter()
        .any(|t| t == &Value::String(hat_sensor.clone()))
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        topics = saved_topics();
    }
    assert!(topics.iter().any(|t| t == LABEL));
    assert!(!topics
        .iter()
        .any(|t| t == &Value::String(hat_sensor.clone())));

    // Home Assistant's birth message: discovery and the states again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = c.seen.len();
    c.publish("homeassistant/status", "online").await;
    c.wait_for(LABEL, 20, |m| !m.payload.is_empty()).await;
    c.wait_for(&format!("{BASE}/state"), 20, |_| true).await;
    assert!(c.seen.len() > before);
}

/// The bridge keeps publishing (heartbeats, images) while the broker is away:
/// nothing may pile up in the client's queue, and the subscriptions made at the
/// reconnect must not be lost to a full queue (requests would go unanswered).
#[tokio::test(flavor = "multi_thread")]
async fn after_a_broker_outage_requests_are_answered_again() {
    let mut broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(
        dir.path(),
        broker.port,
        "[homeassistant]\nimage_interval_secs = 0.5\n",
    );
    crate::harness::edit_config(&config, |t| {
        t.replace("keep_alive_secs = 5", "keep_alive_secs = 5\nqueue = 8")
    });
    let _daemon = Process::start(&config);
    let mut c = Client::connect(broker.port, &["edgehead/it/availability"]).await;
    c.wait_for("edgehead/it/availability", 60, |m| m.text() == "online")
        .await;
    drop(c);
    broker.stop();
    tokio::time::sleep(Duration::from_secs(8)).await;
    broker.restart();
    let mut c = Client::connect(broker.port, &["edgehead/it/#"]).await;
    c.wait_for("edgehead/it/availability", 60, |m| m.text() == "online")
        .await;
    let r = c.request(BASE, "classes", serde_json::json!({})).await;
    assert_eq!(r["status"], "ok", "{r}");
}
