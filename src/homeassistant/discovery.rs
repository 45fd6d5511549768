//! Home Assistant MQTT discovery payloads: pure functions from the device, a
//! classifier's topics and its classes to `(config topic, retained JSON)` pairs.
//!
//! Follows Home Assistant's MQTT discovery documentation
//! (<https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery>) and the
//! platform pages for `sensor`, `binary_sensor`, `event`, `image`, `select`,
//! `text` and `button`: one config topic per entity,
//! `<prefix>/<component>/<device_id>/<object>/config`, full key names (no
//! abbreviations), `origin` in every payload, `default_entity_id` (Home
//! Assistant 2025.10 and later; older versions ignore it and derive the same
//! entity id from the device and entity names), `unique_id`, and the device
//! block shared by every entity so they are grouped under one device.
//!
//! Entity ids: the first classifier keeps those of a single-classifier edgehead
//! (`sensor.edgehead_<device>_label`); the others add their name
//! (`sensor.edgehead_<device>_<name>_label`).

use serde_json::{json, Value};

use crate::mqtt::ClassifierTopics;
use crate::names::{slug, UNRECOGNIZED, UNTRAINED};

/// What every payload of one device shares.
#[derive(Debug, Clone)]
pub struct Context {
    /// Discovery prefix, `homeassistant` by default.
    pub prefix: String,
    /// The device id of the configuration (`device_id`), in topics and ids.
    pub device_id: String,
    /// `<base>/availability`: `online` / `offline` (the last will).
    pub availability: String,
    /// `<base>/status`: the retained daemon status the diagnostics read.
    pub status: String,
    /// Seconds after which a sensor fed by a live topic shows `unavailable` when
    /// no message came (0: never). The bridge re-publishes well within it while
    /// frames arrive.
    pub expire_after: u64,
    /// Seconds after which a sensor fed by `status` expires (3 status intervals).
    pub status_expire_after: u64,
    /// A binary sensor per class.
    pub class_sensors: bool,
    /// Announce the image entity.
    pub image: bool,
    /// The console's URL: the device page's "Visit" link (`configuration_url`).
    pub configuration_url: Option<String>,
}

impl Context {
    fn device(&self) -> Value {
        let mut d = json!({
            "identifiers": [format!("edgehead_{}", self.device_id)],
            "name": format!("edgehead {}", self.device_id),
            "model": "edgehead",
            "manufacturer": "edgehead",
            "sw_version": env!("CARGO_PKG_VERSION"),
        });
        if let Some(url) = &self.configuration_url {
            d["configuration_url"] = json!(url);
        }
        d
    }

    fn origin() -> Value {
        json!({ "name": "edgehead", "sw_version": env!("CARGO_PKG_VERSION") })
    }

    /// The entity-id part Home Assistant derives from the device name `edgehead
    /// <device_id>` and an entity name (lower case, runs of other characters as
    /// one `_`), so `default_entity_id` names what older versions create anyway.
    fn entity_slug(&self, name: &str) -> String {
        let mut out = String::new();
        for c in format!("edgehead {} {name}", self.device_id).chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_lowercase());
            } else if !out.ends_with('_') {
                out.push('_');
            }
        }
        out.trim_matches('_').to_string()
    }

    /// One entity's config: the common keys, then `extra`.
    fn entity(&self, component: &str, key: &str, name: &str, extra: Value) -> (String, Value) {
        self.entity_with_id(component, key, name, name, extra)
    }

    /// [`Context::entity`] whose `default_entity_id` is made from `id_name`
    /// rather than the display `name`.
    fn entity_with_id(
        &self,
        component: &str,
        key: &str,
        name: &str,
        id_name: &str,
        extra: Value,
    ) -> (String, Value) {
        let mut config = json!({
            "name": name,
            "unique_id": format!("edgehead_{}_{key}", self.device_id),
            "default_entity_id": format!("{component}.{}", self.entity_slug(id_name)),
            "availability_topic": self.availability,
            "payload_available": crate::mqtt::topics::ONLINE,
            "payload_not_available": crate::mqtt::topics::OFFLINE,
            "device": self.device(),
            "origin": Self::origin(),
        });
        if let (Some(cfg), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            cfg.extend(e.clone());
        }
        (
            format!(
                "{}/{component}/{}/{key}/config",
                self.prefix, self.device_id
            ),
            config,
        )
    }
}

/// A diagnostic few users watch: created disabled (one click enables it).
fn rarely_watched(mut v: Value) -> Value {
    v["enabled_by_default"] = json!(false);
    v
}

/// How many decimals Home Assistant shows by default.
fn precision(mut v: Value, digits: u8) -> Value {
    v["suggested_display_precision"] = json!(digits);
    v
}

/// A string as a Jinja string literal (JSON's escaping is valid Jinja).
fn jinja_str(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// The device's own entities, fed by the retained `status` topic (diagnostics).
pub fn device_entities(ctx: &Context) -> Vec<(String, Value)> {
    let exp = ctx.status_expire_after;
    let diag = |unit: Option<&str>, template: &str, icon: &str, class: &str| {
        let mut v = json!({
            "state_topic": ctx.status,
            "value_template": template,
            "entity_category": "diagnostic",
            "icon": icon,
            "state_class": class,
            "expire_after": exp,
        });
        if let Some(u) = unit {
            v["unit_of_measurement"] = json!(u);
        }
        v
    };
    vec![
        ctx.entity(
            "binary_sensor",
            "source",
            "Source",
            json!({
                "state_topic": ctx.status,
                "value_template": "{{ 'ON' if value_json.source.state == 'running' else 'OFF' }}",
                "json_attributes_topic": ctx.status,
                "json_attributes_template": "{{ value_json.source | tojson }}",
                "device_class": "connectivity",
                "entity_category": "diagnostic",
                "expire_after": exp,
            }),
        ),
        ctx.entity(
            "sensor",
            "backbone_ms",
            "Backbone time",
            precision(
                diag(
                    Some("ms"),
                    "{{ value_json.rates.backbone_ms if value_json.rates is defined and value_json.rates is mapping and value_json.rates.backbone_ms is not none else none }}",
                    "mdi:timer-outline",
                    "measurement",
                ),
                1,
            ),
        ),
        ctx.entity(
            "sensor",
            "fps",
            "Frames per second",
            precision(
                diag(
                    Some("fps"),
                    "{{ value_json.rates.fps_captured if value_json.rates is defined and value_json.rates is mapping and value_json.rates.fps_captured is not none else none }}",
                    "mdi:camera-timer",
                    "measurement",
                ),
                1,
            ),
        ),
        ctx.entity(
            "sensor",
            "frames_dropped",
            "Dropped frames",
            rarely_watched(diag(
                None,
                "{{ value_json.stats.frames_dropped }}",
                "mdi:camera-off-outline",
                "total_increasing",
            )),
        ),
    ]
}

/// Entity-id and topic key of classifier `index`'s entity `what`: the first
/// classifier's keys are bare (`label`), the others' carry a slug of the name.
fn key(index: usize, topics: &ClassifierTopics, what: &str) -> String {
    if index == 0 {
        what.to_string()
    } else {
        format!("{}_{what}", slug(&topics.name))
    }
}

/// The display name of an entity of classifier `index`: it says which
/// classifier ("door Label"), except for the built-in `default` ("Label": it
/// names nothing the user chose).
fn name(index: usize, topics: &ClassifierTopics, what: &str) -> String {
    if index == 0 && topics.name == crate::names::DEFAULT_CLASSIFIER {
        what.to_string()
    } else {
        format!("{} {what}", topics.name)
    }
}

/// What classifier `index`'s entity ids are made from: the first classifier's
/// are bare (`sensor.edgehead_cam1_label`, as in a single-classifier set-up),
/// whatever its name. Home Assistant keeps the id of an entity it knows, and
/// from 2025.10 takes a new one's from `default_entity_id`; before 2025.10 a
/// new entity's id comes from its name.
fn id_name(index: usize, topics: &ClassifierTopics, what: &str) -> String {
    if index == 0 {
        what.to_string()
    } else {
        format!("{} {what}", topics.name)
    }
}

/// The classes a classifier's entities are announced with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classes {
    /// What the label sensor may show and the event entity may fire, besides
    /// [`UNRECOGNIZED`] and [`UNTRAINED`]: the head's classes and any class still
    /// shown.
    pub states: Vec<String>,
    /// The select's options: the head's classes and the label chosen to teach.
    pub teach: Vec<String>,
    /// The device class of a class's binary sensor (the classifier's
    /// `device_classes`).
    pub device_classes: std::collections::BTreeMap<String, String>,
}

impl Classes {
    /// The label sensor's `options` and the event entity's `event_types`.
    pub fn options(&self) -> Vec<String> {
        let mut o = self.states.clone();
        o.push(UNRECOGNIZED.into());
        o.push(UNTRAINED.into());
        o
    }
}

/// The entities of classifier `index` (configuration order): its state, its
/// teaching controls, its diagnostics and a binary sensor per class.
pub fn classifier_entities(
    ctx: &Context,
    index: usize,
    t: &ClassifierTopics,
    classes: &Classes,
) -> Vec<(String, Value)> {
    let e = Entities {
        ctx,
        index,
        t,
        classes,
    };
    let mut out = e.state();
    out.extend(e.controls());
    out.extend(e.diagnostics());
    out.extend(e.class_sensors());
    out
}

/// The entities of one classifier, built from its topics and classes.
struct Entities<'a> {
    ctx: &'a Context,
    index: usize,
    t: &'a ClassifierTopics,
    classes: &'a Classes,
}

impl Entities<'_> {
    /// One entity of this classifier: its key and display name are the
    /// classifier's ([`key`], [`name`]).
    fn entity(&self, component: &str, what: &str, display: &str, extra: Value) -> (String, Value) {
        self.ctx.entity_with_id(
            component,
            &key(self.index, self.t, what),
            &name(self.index, self.t, display),
            &id_name(self.index, self.t, display),
            extra,
        )
    }

    /// What the classifier sees: the label, its confidence, the change event, the
    /// crop.
    fn state(&self) -> Vec<(String, Value)> {
        let (t, exp) = (self.t, self.ctx.expire_after);
        let mut out = vec![
            self.label(),
            self.entity(
                "sensor",
                "confidence",
                "Confidence",
                json!({
                    "state_topic": t.state,
                    "value_template": "{{ (value_json.confidence * 100) | round(0) }}",
                    "unit_of_measurement": "%",
                    "suggested_display_precision": 0,
                    "state_class": "measurement",
                    "icon": "mdi:percent",
                    "expire_after": exp,
                }),
            ),
            self.entity(
                "event",
                "label_changed",
                "Label changed",
                json!({
                    "state_topic": t.event,
                    "event_types": self.classes.options(),
                    "icon": "mdi:swap-horizontal",
                }),
            ),
        ];
        if self.ctx.image {
            out.push(self.entity(
                "image",
                "image",
                "Image",
                json!({ "image_topic": t.image, "content_type": "image/jpeg" }),
            ));
        }
        out
    }

    /// The label: an enum sensor of the classes. Its options change as classes
    /// are taught, and Home Assistant treats a sensor with `expire_after` as
    /// expired after every config change until its next state (the label would
    /// flicker `unavailable`); so the label is not current by `expire_after` but
    /// by availability: the device's (the last will) and the classifier's own
    /// (`<base>/<name>/availability`, `offline` once its frames stop for
    /// `expire_after_secs`), both required. It reads `<base>/<name>/label`, a
    /// copy of `state`: the sensors that read `state` keep `expire_after`.
    fn label(&self) -> (String, Value) {
        let t = self.t;
        let topic = |topic: &str| {
            json!({
                "topic": topic,
                "payload_available": crate::mqtt::topics::ONLINE,
                "payload_not_available": crate::mqtt::topics::OFFLINE,
            })
        };
        let (key, mut config) = self.entity(
            "sensor",
            "label",
            "Label",
            json!({
                "state_topic": t.label,
                "value_template": "{{ value_json.state }}",
                "json_attributes_topic": t.label,
                "json_attributes_template": "{{ {'label': value_json.label, 'seq': value_json.seq, 'since': value_json.since, 'head': value_json.head, 'classifier': value_json.classifier} | tojson }}",
                "device_class": "enum",
                "options": self.classes.options(),
                "icon": "mdi:eye",
                "availability": [topic(&self.ctx.availability), topic(&t.availability)],
                "availability_mode": "all",
            }),
        );
        if let Some(c) = config.as_object_mut() {
            for k in [
                "availability_topic",
                "payload_available",
                "payload_not_available",
            ] {
                c.remove(k);
            }
        }
        (key, config)
    }

    /// Teaching from the dashboard: the label to teach (chosen or typed), Teach,
    /// Retrain, Undo, and the last result.
    fn controls(&self) -> Vec<(String, Value)> {
        let t = self.t;
        vec![
            self.entity(
                "select",
                "teach_label",
                "Teach label",
                json!({
                    "command_topic": t.request("select_label"),
                    "state_topic": t.teach_label,
                    "options": self.classes.teach,
                    "icon": "mdi:tag-outline",
                }),
            ),
            self.entity(
                "text",
                "new_label",
                "New label",
                json!({
                    "command_topic": t.request("select_label"),
                    "state_topic": t.teach_label,
                    "min": 1,
                    "max": crate::names::MAX_LABEL_CHARS,
                    "icon": "mdi:tag-plus-outline",
                }),
            ),
            self.entity(
                "button",
                "teach",
                "Teach current frame",
                json!({
                    "command_topic": t.request("label_frame"),
                    "payload_press": "{\"selected_label\": true}",
                    "icon": "mdi:school-outline",
                }),
            ),
            self.entity(
                "button",
                "retrain",
                "Retrain",
                json!({
                    "command_topic": t.request("retrain"),
                    "payload_press": "{}",
                    "entity_category": "config",
                    "icon": "mdi:refresh",
                }),
            ),
            self.entity(
                "button",
                "undo",
                "Undo last sample",
                json!({
                    "command_topic": t.request("remove_sample"),
                    "payload_press": "{\"last\": true}",
                    "icon": "mdi:undo",
                }),
            ),
            self.entity(
                "sensor",
                "last_result",
                "Last teaching result",
                json!({
                    "state_topic": t.last_result,
                    "value_template": "{{ value_json.message }}",
                    "json_attributes_topic": t.last_result,
                    "icon": "mdi:message-reply-text-outline",
                }),
            ),
        ]
    }

    /// A diagnostic sensor of the retained `head` topic.
    fn head_diagnostic(&self, unit: Option<&str>, template: &str, icon: &str) -> Value {
        let mut v = json!({
            "state_topic": self.t.head,
            "value_template": template,
            "entity_category": "diagnostic",
            "icon": icon,
        });
        if let Some(u) = unit {
            v["unit_of_measurement"] = json!(u);
            v["state_class"] = json!("measurement");
        }
        v
    }

    /// Diagnostics: the head (retained `head` topic) and the gate (`status`).
    fn diagnostics(&self) -> Vec<(String, Value)> {
        let d = |unit, template, icon| self.head_diagnostic(unit, template, icon);
        let mut loo = d(
            Some("%"),
            "{{ (value_json.quality.loo_accuracy * 100) | round(1) if value_json.quality is defined and value_json.quality.loo_accuracy is not none else none }}",
            "mdi:check-decagram-outline",
        );
        loo["json_attributes_topic"] = json!(self.t.head);
        loo["json_attributes_template"] = json!(
            "{{ {'advice': value_json.quality.advice, 'most_confused': value_json.quality.most_confused, 'per_class': value_json.quality.per_class} | tojson if value_json.quality is defined else '{}' }}"
        );
        let gate = format!(
            "{{{{ value_json.classifiers[{}].skipped }}}}",
            jinja_str(&self.t.name)
        );
        vec![
            self.entity(
                "sensor",
                "samples",
                "Samples",
                d(None, "{{ value_json.samples }}", "mdi:image-multiple-outline"),
            ),
            self.entity(
                "sensor",
                "classes",
                "Classes",
                d(
                    None,
                    "{{ value_json.classes | length if value_json.classes is defined else 0 }}",
                    "mdi:shape-outline",
                ),
            ),
            self.entity(
                "sensor",
                "head_version",
                "Head version",
                rarely_watched(d(
                    None,
                    "{{ value_json.version if value_json.version is defined else 0 }}",
                    "mdi:source-commit",
                )),
            ),
            self.entity("sensor", "loo_accuracy", "LOO accuracy", precision(loo, 1)),
            self.entity(
                "sensor",
                "unknown_threshold",
                "Unknown threshold",
                precision(
                    rarely_watched(d(
                        None,
                        "{{ value_json.unknown_below | round(3) if value_json.unknown_below is defined and value_json.unknown_below is not none else none }}",
                        "mdi:tune-vertical",
                    )),
                    3,
                ),
            ),
            self.entity(
                "sensor",
                "crops_skipped",
                "Crops skipped",
                json!({
                    "state_topic": self.ctx.status,
                    "value_template": gate,
                    "entity_category": "diagnostic",
                    "state_class": "total_increasing",
                    "icon": "mdi:debug-step-over",
                    "expire_after": self.ctx.status_expire_after,
                    "enabled_by_default": false,
                }),
            ),
        ]
    }

    /// A binary sensor per class ("is it `open` now?"), when configured.
    fn class_sensors(&self) -> Vec<(String, Value)> {
        if !self.ctx.class_sensors {
            return Vec::new();
        }
        self.classes
            .states
            .iter()
            .map(|class| {
                let mut config = json!({
                    "state_topic": self.t.state,
                    "value_template": format!(
                        "{{{{ 'ON' if value_json.label == {} else 'OFF' }}}}",
                        jinja_str(class)
                    ),
                    "icon": "mdi:eye-check-outline",
                    "expire_after": self.ctx.expire_after,
                });
                let device_class = self
                    .classes
                    .device_classes
                    .iter()
                    .find(|(l, _)| crate::names::same(l, class));
                if let Some((_, dc)) = device_class {
                    // The device class draws its own icon and words ("Open").
                    config["device_class"] = json!(dc);
                    if let Some(c) = config.as_object_mut() {
                        c.remove("icon");
                    }
                }
                self.entity(
                    "binary_sensor",
                    &format!("class_{}", class_key(class)),
                    class,
                    config,
                )
            })
            .collect()
    }
}

/// A class's part of its binary sensor's key: the slug and a hash of the label,
/// so `a b` and `a_b` stay apart.
fn class_key(label: &str) -> String {
    format!(
        "{}_{}",
        crate::names::ascii_slug(label),
        crate::names::hex_digest(label, 3)
    )
}

#[cfg(test)]
pub(crate) mod tests;
