//! `[[classifiers]]` in the configuration: each a name, a region, a trigger and
//! settings that default to the top-level `[head]` and `[predictions]`.
//!
//! ```toml
//! [[classifiers]]
//! name = "garage_door"
//! region = { x = 0.55, y = 0.10, width = 0.30, height = 0.40 }   # fractions of the frame
//! trigger = { on_change = true, max_age_secs = 60 }
//! predictions = { publish = "on_change", smoothing_window = 3 }
//! head = { kind = "softmax" }
//! recent = { size = 30 }
//! ```

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::gate::TriggerConfig;
use super::recent::RecentConfig;
use super::region::RegionConfig;
use super::ClassifierSpec;
use crate::config::{HeadConfig, HeadKind, PredictionConfig, PublishMode, RawConfig, SourceKind};

/// The classifier built in when the configuration names none: the whole frame.
pub const DEFAULT_NAME: &str = "default";

/// Names a classifier may not have: the device-level topic levels beside the
/// classifiers' (`<base>/<name>/...`).
pub const RESERVED_NAMES: &[&str] = &[
    "availability",
    "status",
    "request",
    "response",
    "prediction",
    "head",
    "classifiers",
];

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
}

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

/// A problem with one key (`classifiers[i].field`).
pub type Problem = (String, String);

/// The frame size when the source fixes it (camera and synthetic); other sources
/// are checked per frame.
fn frame_size(raw: &RawConfig) -> Option<(u32, u32)> {
    match raw.source.kind {
        SourceKind::Camera => Some((raw.source.camera.width, raw.source.camera.height)),
        SourceKind::Synthetic => Some((raw.source.synthetic.width, raw.source.synthetic.height)),
        _ => None,
    }
}

/// Resolve and check every classifier: the built-in one when none is configured.
/// `default_threshold` is `[head]`'s unknown threshold; `head_check` validates a resolved [`HeadConfig`] (the same rules as `[head]`)
/// and returns its unknown threshold, reporting problems under the given key.
pub fn resolve(
    raw: &RawConfig,
    problems: &mut Vec<Problem>,
    default_threshold: crate::config::UnknownThreshold,
    mut head_check: impl FnMut(&str, &HeadConfig, &mut Vec<Problem>) -> crate::config::UnknownThreshold,
) -> Vec<Arc<ClassifierSpec>> {
    let configured: Vec<ClassifierConfig> = if raw.classifiers.is_empty() {
        vec![ClassifierConfig {
            name: DEFAULT_NAME.into(),
            ..Default::default()
        }]
    } else {
        raw.classifiers.clone()
    };
    let mut out: Vec<Arc<ClassifierSpec>> = Vec::new();
    for (i, c) in configured.iter().enumerate() {
        let key = |field: &str| format!("classifiers[{i}].{field}");
        let mut ok = true;
        let mut fail = |k: String, m: String, problems: &mut Vec<Problem>| {
            ok = false;
            problems.push((k, m));
        };
        let name = match crate::learn::labels::normalize(&c.name) {
            Ok(n) if n.len() > 200 => {
                fail(
                    key("name"),
                    format!(
                        "{n:?} is {} bytes of UTF-8; a directory name allows 200",
                        n.len()
                    ),
                    problems,
                );
                n
            }
            Ok(n) if n.contains(['/', '+', '#']) => {
                fail(
                    key("name"),
                    format!("{n:?} must not contain /, + or #"),
                    problems,
                );
                n
            }
            Ok(n)
                if RESERVED_NAMES
                    .iter()
                    .any(|r| crate::learn::labels::same(r, &n)) =>
            {
                fail(
                    key("name"),
                    format!("{n:?} is reserved for device-level topics"),
                    problems,
                );
                n
            }
            Ok(n) => n,
            Err(e) => {
                fail(key("name"), format!("{:?}: {e}", c.name), problems);
                c.name.clone()
            }
        };
        if out
            .iter()
            .any(|o| crate::learn::labels::same(&o.name, &name))
        {
            fail(
                key("name"),
                format!("{name:?} is used by another classifier"),
                problems,
            );
        }
        if let Err((field, e)) = c.region.check(frame_size(raw)) {
            fail(key(&format!("region.{field}")), e.to_string(), problems);
        }
        let t = &c.trigger;
        if !(t.change_threshold.is_finite()
            && t.change_threshold > 0.0
            && t.change_threshold <= 255.0)
        {
            fail(
                key("trigger.change_threshold"),
                format!(
                    "{} must be above 0 and at most 255 (grey levels)",
                    t.change_threshold
                ),
                problems,
            );
        }
        for (f, v) in [
            ("interval_secs", t.interval_secs),
            ("max_age_secs", t.max_age_secs),
        ] {
            if !(v.is_finite() && (0.0..=86_400.0).contains(&v)) {
                fail(
                    key(&format!("trigger.{f}")),
                    format!("{v} must be 0 to 86400 seconds"),
                    problems,
                );
            }
        }
        if !t.every_frame && !t.on_change && t.interval_secs <= 0.0 {
            fail(
                key("trigger"),
                "nothing would run the classifier: set every_frame, on_change or interval_secs"
                    .into(),
                problems,
            );
        }
        let r = &c.recent;
        if r.size > 1000 {
            fail(
                key("recent.size"),
                format!("{} is above 1000", r.size),
                problems,
            );
        }
        if !(r.below_confidence.is_finite() && (0.0..=1.0).contains(&r.below_confidence)) {
            fail(
                key("recent.below_confidence"),
                format!("{} must be 0 to 1", r.below_confidence),
                problems,
            );
        }
        if !(r.min_gap_secs.is_finite() && (0.0..=86_400.0).contains(&r.min_gap_secs)) {
            fail(
                key("recent.min_gap_secs"),
                format!("{} must be 0 to 86400 seconds", r.min_gap_secs),
                problems,
            );
        }
        let head = c.head.over(&raw.head);
        // Only a classifier's own head keys are checked again (the rest were, as `[head]`).
        let unknown_threshold = if c.head == HeadOverrides::default() {
            default_threshold
        } else {
            head_check(&key("head"), &head, problems)
        };
        let predictions = c.predictions.over(&raw.predictions);
        // Only the classifier's own keys are checked again (the rest were, as `[predictions]`).
        if c.predictions != PredictionOverrides::default() {
            if predictions.top_k == 0 || predictions.top_k > 100 {
                fail(
                    key("predictions.top_k"),
                    format!("{} is out of range (1 to 100)", predictions.top_k),
                    problems,
                );
            }
            if predictions.smoothing_window == 0 || predictions.smoothing_window > 100 {
                fail(
                    key("predictions.smoothing_window"),
                    format!(
                        "{} is out of range (1 to 100)",
                        predictions.smoothing_window
                    ),
                    problems,
                );
            }
            if predictions.min_interval_ms > 3_600_000 {
                fail(
                    key("predictions.min_interval_ms"),
                    format!(
                        "{} is out of range (0 to 3600000)",
                        predictions.min_interval_ms
                    ),
                    problems,
                );
            }
        }
        let _ = ok;
        out.push(Arc::new(ClassifierSpec {
            name,
            region: c.region,
            trigger: c.trigger,
            head,
            unknown_threshold,
            predictions,
            recent: c.recent,
        }));
    }
    out
}
