//! `[[classifiers]]`: each a name, a region, a trigger and settings that default
//! to the top-level `[head]` and `[predictions]`; resolved into [`ClassifierSpec`]s.
//!
//! ```toml
//! [[classifiers]]
//! name = "garage_door"
//! region = { x = 0.55, y = 0.10, width = 0.30, height = 0.40 }   # fractions of the frame
//! trigger = { on_change = true, max_age_secs = 60 }
//! predictions = { publish = "on_change", smoothing_window = 3 }
//! head = { kind = "softmax" }
//! recent = { size = 30 }
//! device_classes = { open = "garage_door" }   # Home Assistant binary sensor of a class
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::check::Checker;
use super::head::{HeadConfig, HeadKind, PredictionConfig, PublishMode, UnknownThreshold};
use crate::names;
use crate::region::RegionConfig;

/// One `[[classifiers]]` entry as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct ClassifierConfig {
    /// Names the classifier in topics, the state directory and Home Assistant.
    pub name: String,
    /// The part of the frame classified (default: the whole frame).
    pub region: RegionConfig,
    pub trigger: TriggerConfig,
    /// Any `[head]` key; the others come from `[head]`.
    pub head: HeadOverrides,
    /// Any `[predictions]` key; the others come from `[predictions]`.
    pub predictions: PredictionOverrides,
    pub recent: RecentConfig,
    /// Home Assistant device class of a class's binary sensor, by class:
    /// `{ open = "door" }` makes `open`'s sensor a door (shown "Open"/"Closed").
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub device_classes: BTreeMap<String, String>,
}

/// The device classes of Home Assistant's binary sensor
/// (`homeassistant.components.binary_sensor.BinarySensorDeviceClass`).
pub const BINARY_SENSOR_DEVICE_CLASSES: &[&str] = &[
    "battery",
    "battery_charging",
    "carbon_monoxide",
    "cold",
    "connectivity",
    "door",
    "garage_door",
    "gas",
    "heat",
    "light",
    "lock",
    "moisture",
    "motion",
    "moving",
    "occupancy",
    "opening",
    "plug",
    "power",
    "presence",
    "problem",
    "running",
    "safety",
    "smoke",
    "sound",
    "tamper",
    "update",
    "vibration",
    "window",
];

/// `[head]` keys a classifier may set for itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct HeadOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<HeadKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_min_samples: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l2: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l2_auto: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_iterations: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_threshold: Option<String>,
}

/// `[predictions]` keys a classifier may set for itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct PredictionOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_interval_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smoothing_window: Option<usize>,
}

/// When a classifier runs the backbone on its region (`trigger` in its config);
/// the policy is [`crate::classifier::gate::decide`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TriggerConfig {
    /// Run on every frame (the gate is not consulted).
    pub every_frame: bool,
    /// Run when the region changed by at least `change_threshold` since its last run.
    pub on_change: bool,
    /// Grey levels per cell (see [`crate::classifier::gate::change`]); chosen on
    /// real footage, see docs/classifiers.md.
    pub change_threshold: f32,
    /// Also run at least this often (seconds; 0: off).
    pub interval_secs: f64,
    /// Run again when the last run is older than this, even if nothing changed, so
    /// slow drifts are caught (seconds; 0: never).
    pub max_age_secs: f64,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        Self {
            every_frame: false,
            on_change: true,
            change_threshold: DEFAULT_CHANGE_THRESHOLD,
            interval_secs: 0.0,
            max_age_secs: 60.0,
        }
    }
}

/// The default of `trigger.change_threshold` (see docs/classifiers.md, "Choosing
/// the change threshold", for the measurements behind it).
pub const DEFAULT_CHANGE_THRESHOLD: f32 = 8.0;

/// `recent` in a classifier's config: which crops are kept for labeling
/// ([`crate::classifier::recent`]).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RecentConfig {
    /// Most crops kept (0: none).
    pub size: usize,
    /// Crops whose frame confidence is below this are kept (0 to 1).
    pub below_confidence: f32,
    /// Least time between two low-confidence or unknown crops (seconds).
    pub min_gap_secs: f64,
    /// Most bytes of JPEG kept on disk (the oldest crops go first).
    pub max_bytes: usize,
}

impl Default for RecentConfig {
    fn default() -> Self {
        Self {
            size: 30,
            below_confidence: 0.6,
            min_gap_secs: 30.0,
            max_bytes: 8 << 20,
        }
    }
}

impl HeadOverrides {
    fn over(&self, base: &HeadConfig) -> HeadConfig {
        HeadConfig {
            kind: self.kind.unwrap_or(base.kind),
            auto_min_samples: self.auto_min_samples.unwrap_or(base.auto_min_samples),
            l2: self.l2.unwrap_or(base.l2),
            l2_auto: self.l2_auto.unwrap_or(base.l2_auto),
            max_iterations: self.max_iterations.unwrap_or(base.max_iterations),
            unknown_threshold: self
                .unknown_threshold
                .clone()
                .unwrap_or_else(|| base.unknown_threshold.clone()),
        }
    }
}

impl PredictionOverrides {
    fn over(&self, base: &PredictionConfig) -> PredictionConfig {
        PredictionConfig {
            publish: self.publish.unwrap_or(base.publish),
            min_interval_ms: self.min_interval_ms.unwrap_or(base.min_interval_ms),
            top_k: self.top_k.unwrap_or(base.top_k),
            smoothing_window: self.smoothing_window.unwrap_or(base.smoothing_window),
        }
    }
}

/// A classifier's settings after validation, with the defaults from `[head]` and
/// `[predictions]` filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierSpec {
    pub name: String,
    pub region: RegionConfig,
    pub trigger: TriggerConfig,
    pub head: HeadConfig,
    pub unknown_threshold: UnknownThreshold,
    pub predictions: PredictionConfig,
    pub recent: RecentConfig,
    /// Checked: normalized class labels to binary sensor device classes.
    pub device_classes: BTreeMap<String, String>,
}

impl ClassifierSpec {
    /// A classifier with the built-in head, prediction and recent settings (for
    /// the measuring subcommands and tests).
    pub fn new(name: &str, region: RegionConfig, trigger: TriggerConfig) -> Self {
        Self {
            name: name.to_string(),
            region,
            trigger,
            head: HeadConfig::default(),
            unknown_threshold: UnknownThreshold::Auto,
            predictions: PredictionConfig::default(),
            recent: RecentConfig::default(),
            device_classes: BTreeMap::new(),
        }
    }

    /// What the `classifiers` request and `status` show about it.
    pub fn describe(&self) -> Value {
        json!({
            "name": self.name,
            "region": self.region,
            "trigger": self.trigger,
            "publish": self.predictions.publish,
            "smoothing_window": self.predictions.smoothing_window,
            "head_kind": self.head.kind,
            "recent_size": self.recent.size,
            "device_classes": self.device_classes,
        })
    }
}

/// The configured classifiers, or the built-in one over the whole frame when
/// none is configured.
pub fn configured(list: &[ClassifierConfig]) -> Vec<ClassifierConfig> {
    if list.is_empty() {
        vec![ClassifierConfig {
            name: names::DEFAULT_CLASSIFIER.into(),
            ..Default::default()
        }]
    } else {
        list.to_vec()
    }
}

/// Resolve and check every classifier of `list`, reporting problems under
/// `classifiers[i].<field>`. `head` and
/// `predictions` are the top-level sections (already checked), `default_threshold`
/// `[head]`'s unknown threshold, and `frame` the frame size when the source fixes
/// it (camera, synthetic).
pub(super) fn resolve(
    c: &mut Checker,
    list: &[ClassifierConfig],
    head: &HeadConfig,
    predictions: &PredictionConfig,
    default_threshold: UnknownThreshold,
    frame: Option<(u32, u32)>,
) -> Vec<Arc<ClassifierSpec>> {
    let mut out: Vec<Arc<ClassifierSpec>> = Vec::new();
    for (i, cc) in list.iter().enumerate() {
        let key = |field: &str| format!("classifiers[{i}].{field}");
        let name = match names::normalize_classifier_name(&cc.name) {
            Ok(n) => n,
            Err(e) => {
                c.problem(&key("name"), e.to_string());
                cc.name.clone()
            }
        };
        c.check(
            !out.iter().any(|o| names::same(&o.name, &name)),
            &key("name"),
            || format!("{name:?} is used by another classifier"),
        );
        if let Err((field, e)) = cc.region.check(frame) {
            c.problem(&key(&format!("region.{field}")), e.to_string());
        }
        check_trigger(c, &key("trigger"), &cc.trigger);
        check_recent(c, &key("recent"), &cc.recent);
        let device_classes = check_device_classes(c, &key("device_classes"), &cc.device_classes);
        let resolved_head = cc.head.over(head);
        // Only a classifier's own keys are checked again (the rest were, as
        // `[head]` and `[predictions]`).
        let unknown_threshold = if cc.head == HeadOverrides::default() {
            default_threshold
        } else {
            c.head(&key("head"), &resolved_head)
        };
        let resolved_predictions = cc.predictions.over(predictions);
        if cc.predictions != PredictionOverrides::default() {
            c.predictions(&key("predictions"), &resolved_predictions);
        }
        out.push(Arc::new(ClassifierSpec {
            name,
            region: cc.region,
            trigger: cc.trigger,
            head: resolved_head,
            unknown_threshold,
            predictions: resolved_predictions,
            recent: cc.recent,
            device_classes,
        }));
    }
    out
}

/// Check `device_classes` under `key`: each a valid label and one of
/// [`BINARY_SENSOR_DEVICE_CLASSES`]; returns them with normalized labels.
fn check_device_classes(
    c: &mut Checker,
    key: &str,
    map: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (label, class) in map {
        match names::normalize_label(label) {
            Ok(l) => {
                out.insert(l, class.clone());
            }
            Err(e) => c.problem(&format!("{key}.{label}"), e.to_string()),
        }
        c.check(
            BINARY_SENSOR_DEVICE_CLASSES.contains(&class.as_str()),
            &format!("{key}.{label}"),
            || {
                format!(
                    "{class:?} is not a binary sensor device class of Home Assistant: {}",
                    BINARY_SENSOR_DEVICE_CLASSES.join(", ")
                )
            },
        );
    }
    out
}

/// Check a classifier's `trigger` table under `key`.
fn check_trigger(c: &mut Checker, key: &str, t: &TriggerConfig) {
    c.check(
        t.change_threshold.is_finite() && t.change_threshold > 0.0 && t.change_threshold <= 255.0,
        &format!("{key}.change_threshold"),
        || {
            format!(
                "{} must be above 0 and at most 255 (grey levels)",
                t.change_threshold
            )
        },
    );
    for (f, v) in [
        ("interval_secs", t.interval_secs),
        ("max_age_secs", t.max_age_secs),
    ] {
        c.check(
            v.is_finite() && (0.0..=86_400.0).contains(&v),
            &format!("{key}.{f}"),
            || format!("{v} must be 0 to 86400 seconds"),
        );
    }
    c.check(
        t.every_frame || t.on_change || t.interval_secs > 0.0,
        key,
        || "nothing would run the classifier: set every_frame, on_change or interval_secs".into(),
    );
}

/// Check a classifier's `recent` table under `key`.
fn check_recent(c: &mut Checker, key: &str, r: &RecentConfig) {
    c.check(r.size <= 1000, &format!("{key}.size"), || {
        format!("{} is above 1000", r.size)
    });
    c.check(
        r.below_confidence.is_finite() && (0.0..=1.0).contains(&r.below_confidence),
        &format!("{key}.below_confidence"),
        || format!("{} must be 0 to 1", r.below_confidence),
    );
    c.check(
        r.min_gap_secs.is_finite() && (0.0..=86_400.0).contains(&r.min_gap_secs),
        &format!("{key}.min_gap_secs"),
        || format!("{} must be 0 to 86400 seconds", r.min_gap_secs),
    );
    c.range(&format!("{key}.max_bytes"), r.max_bytes, 64 << 10, 1 << 30);
}
