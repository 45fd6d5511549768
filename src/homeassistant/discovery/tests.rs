//! The discovery payloads against Home Assistant's documented MQTT schemas, and
//! their templates rendered (minijinja, Jinja2 semantics) on the payloads the
//! daemon publishes.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::*;
use crate::mqtt::ClassifierTopics;

/// The keys each platform's discovery schema accepts: Home Assistant's MQTT
/// platform documentation (sensor, binary_sensor, event, image, select, text,
/// button), as in the schemas of Home Assistant 2025.4, plus `default_entity_id`
/// (2025.10) and without the deprecated `object_id`.
fn allowed(component: &str) -> BTreeSet<&'static str> {
    let common = [
        "availability",
        "availability_mode",
        "availability_template",
        "availability_topic",
        "device",
        "enabled_by_default",
        "encoding",
        "entity_category",
        "entity_picture",
        "icon",
        "json_attributes_template",
        "json_attributes_topic",
        "name",
        "origin",
        "payload_available",
        "payload_not_available",
        "qos",
        "unique_id",
        "default_entity_id",
    ];
    let own: &[&str] = match component {
        "sensor" => &[
            "device_class",
            "expire_after",
            "force_update",
            "last_reset_value_template",
            "options",
            "state_class",
            "state_topic",
            "suggested_display_precision",
            "unit_of_measurement",
            "value_template",
        ],
        "binary_sensor" => &[
            "device_class",
            "expire_after",
            "force_update",
            "off_delay",
            "payload_off",
            "payload_on",
            "state_topic",
            "value_template",
        ],
        "event" => &[
            "device_class",
            "event_types",
            "state_topic",
            "value_template",
        ],
        "image" => &[
            "content_type",
            "image_encoding",
            "image_topic",
            "url_template",
            "url_topic",
        ],
        "select" => &[
            "command_template",
            "command_topic",
            "optimistic",
            "options",
            "retain",
            "state_topic",
            "value_template",
        ],
        "text" => &[
            "command_template",
            "command_topic",
            "max",
            "min",
            "mode",
            "optimistic",
            "pattern",
            "retain",
            "state_topic",
            "value_template",
        ],
        "button" => &[
            "command_template",
            "command_topic",
            "device_class",
            "payload_press",
            "retain",
        ],
        other => panic!("unexpected component {other}"),
    };
    common.iter().chain(own).copied().collect()
}

/// Keys a platform requires (Home Assistant's schemas).
fn required(component: &str) -> &'static [&'static str] {
    match component {
        "sensor" | "binary_sensor" => &["state_topic"],
        "event" => &["state_topic", "event_types"],
        "image" => &["image_topic"],
        "select" => &["command_topic", "options"],
        "text" | "button" => &["command_topic"],
        _ => &[],
    }
}

/// The device `cam1` of these tests (also the bridge's tests).
pub(crate) fn ctx() -> Context {
    Context {
        prefix: "homeassistant".into(),
        device_id: "cam1".into(),
        availability: "edgehead/cam1/availability".into(),
        status: "edgehead/cam1/status".into(),
        expire_after: 15,
        status_expire_after: 185,
        class_sensors: true,
        image: true,
        configuration_url: Some("http://cam1.local:8480/".into()),
    }
}

fn classes(states: &[&str], teach: &[&str]) -> Classes {
    Classes {
        states: states.iter().map(|s| s.to_string()).collect(),
        teach: teach.iter().map(|s| s.to_string()).collect(),
        device_classes: BTreeMap::new(),
    }
}

/// Every payload of a device with two classifiers, by topic.
fn all() -> BTreeMap<String, Value> {
    let c = ctx();
    let default = ClassifierTopics::new("edgehead/cam1", "default");
    let door = ClassifierTopics::new("edgehead/cam1", "door");
    let mut out: BTreeMap<String, Value> = device_entities(&c).into_iter().collect();
    out.extend(classifier_entities(
        &c,
        0,
        &default,
        &classes(&["hat", "shoes"], &["hat", "shoes"]),
    ));
    out.extend(classifier_entities(
        &c,
        1,
        &door,
        &classes(&["open", "closed"], &["open", "closed", "ajar"]),
    ));
    out
}

fn component(topic: &str) -> &str {
    topic.split('/').nth(1).expect("component level")
}

#[test]
fn every_payload_has_only_documented_keys_and_what_each_platform_requires() {
    let all = all();
    let topic_re = |t: &str| {
        let parts: Vec<&str> = t.split('/').collect();
        parts.len() == 5
            && parts[0] == "homeassistant"
            && parts[2] == "cam1"
            && parts[4] == "config"
            && !parts[3].is_empty()
            && parts[3]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let mut unique_ids = BTreeSet::new();
    let mut entity_ids = BTreeSet::new();
    let mut components = BTreeSet::new();
    for (topic, v) in &all {
        assert!(
            topic_re(topic),
            "{topic}: not a discovery topic Home Assistant matches"
        );
        let comp = component(topic);
        components.insert(comp.to_string());
        let obj = v.as_object().expect("object");
        let ok = allowed(comp);
        for k in obj.keys() {
            assert!(ok.contains(k.as_str()), "{topic}: {k} is not a {comp} key");
        }
        for k in required(comp) {
            assert!(obj.contains_key(*k), "{topic}: {comp} requires {k}");
        }
        assert!(
            !obj.contains_key("object_id"),
            "{topic}: object_id is deprecated"
        );
        assert_eq!(v["origin"]["name"], "edgehead", "{topic}");
        assert_eq!(v["device"]["identifiers"][0], "edgehead_cam1", "{topic}");
        // The device page's "Visit" link opens the console.
        assert_eq!(
            v["device"]["configuration_url"], "http://cam1.local:8480/",
            "{topic}"
        );
        if comp == "sensor" && topic.ends_with("label/config") {
            // The label: the device's availability and its classifier's, both.
            let a = v["availability"].as_array().expect("availability list");
            assert_eq!(a[0]["topic"], "edgehead/cam1/availability");
            assert!(a[1]["topic"]
                .as_str()
                .is_some_and(|t| t.ends_with("/availability")));
            assert_eq!(v["availability_mode"], "all");
            assert!(v.get("availability_topic").is_none(), "{topic}");
            assert!(v.get("expire_after").is_none(), "{topic}: no flicker");
        } else {
            assert_eq!(v["availability_topic"], "edgehead/cam1/availability");
        }
        assert!(
            unique_ids.insert(v["unique_id"].to_string()),
            "{topic}: unique_id repeated"
        );
        let eid = v["default_entity_id"].as_str().expect("default_entity_id");
        assert!(eid.starts_with(&format!("{comp}.edgehead_cam1_")), "{eid}");
        assert!(entity_ids.insert(eid.to_string()), "{eid} repeated");
        if comp == "sensor"
            && v["state_topic"]
                .as_str()
                .is_some_and(|t| t.ends_with("/state"))
        {
            assert_eq!(v["expire_after"], 15, "{topic}: live sensors expire");
        }
        if comp == "binary_sensor" {
            assert!(v["expire_after"].as_u64().is_some(), "{topic}");
        }
    }
    let want: BTreeSet<String> = [
        "binary_sensor",
        "button",
        "event",
        "image",
        "select",
        "sensor",
        "text",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(components, want);
    // Diagnostics are marked, teaching controls are not.
    for key in [
        "samples",
        "classes",
        "head_version",
        "loo_accuracy",
        "unknown_threshold",
        "crops_skipped",
        "backbone_ms",
        "fps",
        "frames_dropped",
    ] {
        let t = format!("homeassistant/sensor/cam1/{key}/config");
        assert_eq!(all[&t]["entity_category"], "diagnostic", "{t}");
    }
    assert_eq!(
        all["homeassistant/binary_sensor/cam1/source/config"]["device_class"],
        "connectivity"
    );
    assert!(all["homeassistant/button/cam1/teach/config"]
        .get("entity_category")
        .is_none());
}

#[test]
fn the_first_classifier_keeps_its_entity_ids_and_the_others_add_their_name() {
    let all = all();
    let label = &all["homeassistant/sensor/cam1/label/config"];
    assert_eq!(label["default_entity_id"], "sensor.edgehead_cam1_label");
    assert_eq!(label["unique_id"], "edgehead_cam1_label");
    assert_eq!(label["name"], "Label");
    let door = &all["homeassistant/sensor/cam1/door_label/config"];
    assert_eq!(door["default_entity_id"], "sensor.edgehead_cam1_door_label");
    assert_eq!(door["name"], "door Label");
    assert_eq!(door["state_topic"], "edgehead/cam1/door/label");
    // A first classifier the user named says so, and keeps the bare ids.
    let garage = ClassifierTopics::new("edgehead/cam1", "garagecam");
    let first: BTreeMap<String, Value> =
        classifier_entities(&ctx(), 0, &garage, &classes(&["open"], &["open"]))
            .into_iter()
            .collect();
    let label = &first["homeassistant/sensor/cam1/label/config"];
    assert_eq!(label["name"], "garagecam Label");
    assert_eq!(label["default_entity_id"], "sensor.edgehead_cam1_label");
    let open = first
        .iter()
        .find(|(t, _)| t.contains("/class_open_"))
        .map(|(_, v)| v)
        .expect("open's sensor");
    assert_eq!(open["name"], "garagecam open");
    assert_eq!(
        open["default_entity_id"],
        "binary_sensor.edgehead_cam1_open"
    );
    assert_eq!(
        all["homeassistant/button/cam1/door_teach/config"]["command_topic"],
        "edgehead/cam1/door/request/label_frame"
    );
}

#[test]
fn the_label_is_an_enum_of_the_classes_and_edgeheads_own_states() {
    let all = all();
    let label = &all["homeassistant/sensor/cam1/label/config"];
    assert_eq!(label["device_class"], "enum");
    assert_eq!(
        label["options"],
        json!(["hat", "shoes", "unrecognized", "untrained"])
    );
    // Home Assistant refuses a unit or state class on an enum sensor.
    assert!(label.get("unit_of_measurement").is_none() && label.get("state_class").is_none());
    let event = &all["homeassistant/event/cam1/label_changed/config"];
    assert_eq!(event["event_types"], label["options"]);
    let select = &all["homeassistant/select/cam1/door_teach_label/config"];
    assert_eq!(select["options"], json!(["open", "closed", "ajar"]));
    // One binary sensor per class, none for the states that are not classes.
    let binary: Vec<&String> = all
        .keys()
        .filter(|t| t.starts_with("homeassistant/binary_sensor/cam1/class_"))
        .collect();
    assert_eq!(binary.len(), 2, "{binary:?}");
}

fn render(template: &str, value: &Value) -> String {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
    env.render_str(template, minijinja::context! { value_json => value })
        .unwrap_or_else(|e| panic!("{template}: {e}"))
}

fn tpl<'a>(all: &'a BTreeMap<String, Value>, topic: &str, key: &str) -> &'a str {
    all[topic][key]
        .as_str()
        .unwrap_or_else(|| panic!("{topic} has no {key}"))
}

#[test]
fn templates_render_the_states_from_the_payloads_the_daemon_publishes() {
    let all = all();
    let state = json!({"state": "hat", "label": "hat", "confidence": 0.934, "seq": 12,
        "since": "2026-11-29T10:00:00.000Z", "head": "ncm-v3", "classifier": "default"});
    let label = "homeassistant/sensor/cam1/label/config";
    // The label reads its copy of the state.
    assert_eq!(all[label]["state_topic"], "edgehead/cam1/default/label");
    assert_eq!(
        all[label]["json_attributes_topic"],
        "edgehead/cam1/default/label"
    );
    assert_eq!(render(tpl(&all, label, "value_template"), &state), "hat");
    let attrs: Value = serde_json::from_str(&render(
        tpl(&all, label, "json_attributes_template"),
        &state,
    ))
    .expect("attributes are JSON");
    // The attributes change only with the state: no confidence in them.
    assert_eq!(
        attrs,
        json!({"label": "hat", "seq": 12, "since": "2026-11-29T10:00:00.000Z",
        "head": "ncm-v3", "classifier": "default"})
    );
    let conf = render(
        tpl(
            &all,
            "homeassistant/sensor/cam1/confidence/config",
            "value_template",
        ),
        &state,
    );
    assert_eq!(conf.parse::<f64>().ok(), Some(93.0));
    let hat = all
        .keys()
        .find(|t| t.contains("/class_hat_"))
        .expect("hat sensor");
    let shoes = all
        .keys()
        .find(|t| t.contains("/class_shoes_"))
        .expect("shoes sensor");
    assert_eq!(render(tpl(&all, hat, "value_template"), &state), "ON");
    assert_eq!(render(tpl(&all, shoes, "value_template"), &state), "OFF");
    let unrecognized = json!({"state": "unrecognized", "label": "unknown", "confidence": 0.0});
    assert_eq!(
        render(tpl(&all, label, "value_template"), &unrecognized),
        "unrecognized"
    );
    assert_eq!(
        render(tpl(&all, hat, "value_template"), &unrecognized),
        "OFF"
    );

    // The head topic, with and without a head.
    let head = json!({"samples": 9, "head": "ncm-v3", "version": 3, "classes": ["hat", "shoes"],
        "unknown_below": 0.41234, "quality": {"loo_accuracy": 0.875, "advice": ["add more shoes"],
        "most_confused": null, "per_class": []}});
    let none = json!({"head": null, "samples": 0});
    let h = |key: &str, v: &Value| {
        render(
            tpl(
                &all,
                &format!("homeassistant/sensor/cam1/{key}/config"),
                "value_template",
            ),
            v,
        )
    };
    assert_eq!(h("samples", &head), "9");
    assert_eq!(h("classes", &head), "2");
    assert_eq!(h("classes", &none), "0");
    assert_eq!(h("head_version", &head), "3");
    assert_eq!(h("head_version", &none), "0");
    assert_eq!(h("loo_accuracy", &head), "87.5");
    assert!(matches!(h("loo_accuracy", &none).as_str(), "none" | "None"));
    assert_eq!(h("unknown_threshold", &head), "0.412");
    let loo_attrs: Value = serde_json::from_str(&render(
        tpl(
            &all,
            "homeassistant/sensor/cam1/loo_accuracy/config",
            "json_attributes_template",
        ),
        &head,
    ))
    .expect("JSON");
    assert_eq!(loo_attrs["advice"], json!(["add more shoes"]));

    // The status topic.
    let status = json!({"source": {"state": "running"}, "stats": {"frames_dropped": 4},
        "rates": {"backbone_ms": 26.4, "fps_captured": 2.0},
        "classifiers": {"default": {"skipped": 5}, "door": {"skipped": 7}}});
    let source = |v: &Value| {
        render(
            tpl(
                &all,
                "homeassistant/binary_sensor/cam1/source/config",
                "value_template",
            ),
            v,
        )
    };
    assert_eq!(source(&status), "ON");
    let ended = json!({"source": {"state": "ended"}});
    assert_eq!(source(&ended), "OFF");
    assert_eq!(h("backbone_ms", &status), "26.4");
    assert_eq!(h("fps", &status), "2.0");
    assert_eq!(h("frames_dropped", &status), "4");
    assert_eq!(h("door_crops_skipped", &status), "7");
}

#[test]
fn labels_with_quotes_of_any_script_stay_string_literals_in_templates() {
    let c = ctx();
    let t = ClassifierTopics::new("edgehead/cam1", "default");
    for label in ["Tür offen", "बिल्ली", "a.b-c_d"] {
        let msgs = classifier_entities(&c, 0, &t, &classes(&[label], &[label]));
        let (_, v) = msgs
            .iter()
            .find(|(topic, _)| topic.contains("/class_"))
            .expect("class sensor");
        let tpl = v["value_template"].as_str().expect("template");
        assert_eq!(render(tpl, &json!({"label": label})), "ON", "{label}");
        assert_eq!(render(tpl, &json!({"label": "x"})), "OFF", "{label}");
    }
}

#[test]
fn similar_labels_get_their_own_class_sensors() {
    assert_ne!(class_key("a b"), class_key("a_b"));
    assert_ne!(class_key("Tür"), class_key("Tur"));
    assert!(class_key("Tür")
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_'));
}

#[test]
fn class_sensors_and_the_image_can_be_left_out() {
    let mut c = ctx();
    c.class_sensors = false;
    c.image = false;
    let t = ClassifierTopics::new("edgehead/cam1", "default");
    let msgs = classifier_entities(&c, 0, &t, &classes(&["hat"], &["hat"]));
    assert!(msgs
        .iter()
        .all(|(t, _)| !t.contains("/class_") && !t.contains("/image/")));
}

#[test]
fn rarely_watched_diagnostics_start_disabled_and_retrain_is_a_config_button() {
    let all = all();
    let get = |component: &str, key: &str| {
        all.get(&format!("homeassistant/{component}/cam1/{key}/config"))
            .unwrap_or_else(|| panic!("{component} {key}"))
    };
    for (component, key) in [
        ("sensor", "head_version"),
        ("sensor", "unknown_threshold"),
        ("sensor", "crops_skipped"),
        ("sensor", "frames_dropped"),
        ("sensor", "door_head_version"),
    ] {
        assert_eq!(get(component, key)["enabled_by_default"], false, "{key}");
    }
    // What users watch stays enabled.
    for key in ["label", "confidence", "samples", "loo_accuracy", "fps"] {
        assert!(
            get("sensor", key).get("enabled_by_default").is_none(),
            "{key}"
        );
    }
    assert_eq!(get("button", "retrain")["entity_category"], "config");
    assert!(get("button", "teach").get("entity_category").is_none());
    assert_eq!(
        get("sensor", "confidence")["suggested_display_precision"],
        0
    );
    assert_eq!(
        get("sensor", "loo_accuracy")["suggested_display_precision"],
        1
    );
    assert_eq!(
        get("sensor", "unknown_threshold")["suggested_display_precision"],
        3
    );
}

#[test]
fn a_class_can_be_a_door_in_home_assistant() {
    let c = ctx();
    let door = ClassifierTopics::new("edgehead/cam1", "door");
    let mut cl = classes(&["open", "closed"], &["open", "closed"]);
    cl.device_classes
        .insert("open".into(), "garage_door".into());
    let all: BTreeMap<String, Value> = classifier_entities(&c, 1, &door, &cl).into_iter().collect();
    let sensors: Vec<&Value> = all
        .iter()
        .filter(|(t, _)| t.starts_with("homeassistant/binary_sensor/"))
        .map(|(_, v)| v)
        .collect();
    let open = sensors
        .iter()
        .find(|v| v["name"] == "door open")
        .expect("open's sensor");
    assert_eq!(open["device_class"], "garage_door");
    assert!(open.get("icon").is_none());
    let closed = sensors
        .iter()
        .find(|v| v["name"] == "door closed")
        .expect("closed's sensor");
    assert!(closed.get("device_class").is_none());
}
