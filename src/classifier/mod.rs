//! Classifiers: named questions about regions of the frame, each with its own
//! classes, samples, head, prediction settings and trigger. One backbone serves
//! them all.
//!
//! The classifier is the unit: adding one is configuration, not code. Its topics
//! ([`ClassifierTopics`]), its store directory ([`storage`]) and its Home
//! Assistant entities are derived from its name here and nowhere else.
//!
//! - [`region`]: the rectangle of the frame and cropping it.
//! - [`gate`]: the change measure and the trigger policy (run the backbone only
//!   when the answer can change).
//! - [`recent`]: recent crops worth a label (Frigate 0.17's "Recent classifications").
//! - [`storage`]: a store per classifier under `<state_dir>/classifiers/`, and the
//!   migration from the single-store layout of edgehead 0.1.

pub mod config;
pub mod gate;
pub mod recent;
pub mod region;
pub mod storage;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

use serde_json::{json, Map, Value};

use crate::config::{HeadConfig, PredictionConfig, UnknownThreshold};
use gate::{Run, Skip, TriggerConfig};
use recent::Recent;
use recent::RecentConfig;
use region::RegionConfig;

use crate::head::Head;

/// The handles of one classifier the tasks share: the inference task reads the head
/// and fills `recent` and `gate`; the learning task swaps the head in and serves
/// `recent`.
#[derive(Clone)]
pub struct Classifier {
    pub spec: Arc<ClassifierSpec>,
    pub head: Arc<ArcSwapOption<Head>>,
    pub recent: Arc<Mutex<Recent>>,
    pub gate: Arc<GateStats>,
}

impl Classifier {
    /// A classifier without a head (its topics are the publisher's, built by
    /// [`ClassifierTopics::new`]).
    pub fn new(spec: Arc<ClassifierSpec>) -> Self {
        Self {
            head: Arc::new(ArcSwapOption::empty()),
            recent: Arc::new(Mutex::new(Recent::new(spec.recent))),
            gate: Arc::new(GateStats::default()),
            spec,
        }
    }

    /// What `status` shows: gate counters, head, classes and recent crops.
    pub fn status(&self) -> Value {
        let head = self.head.load();
        let mut v = self.gate.json();
        v["head"] = json!(head.as_ref().map(|h| h.id()));
        v["classes"] = json!(head.as_ref().map(|h| h.classes.clone()).unwrap_or_default());
        v["recent"] = json!(self.recent.lock().map(|r| r.len()).unwrap_or(0));
        v
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
        })
    }
}

/// `name` made safe for Home Assistant's discovery topics and entity ids
/// (`[a-z0-9_]`): other characters become `_`, and a name that changed gets 8 hex
/// digits of its SHA-256 so that `garage door` and `garage_door` stay apart.
pub fn slug(name: &str) -> String {
    let s = ascii_slug(name);
    if s == name {
        s
    } else {
        format!("{s}_{}", hex_digest(name, 4))
    }
}

/// `name` with ASCII letters lower-cased, ASCII digits kept and every other
/// character replaced by `_` (one `_` per character).
pub fn ascii_slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The first `bytes` bytes of the SHA-256 of `name`, in lower-case hex.
pub fn hex_digest(name: &str, bytes: usize) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(name.as_bytes())
        .iter()
        .take(bytes)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The topics of one classifier, all below `<base>/<name>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifierTopics {
    pub name: String,
    /// One JSON message per published prediction.
    pub prediction: String,
    /// Retained description and quality of the head.
    pub head: String,
    /// Retained stable state for dashboards: `{"state", "label", "confidence",
    /// "seq", "since", "head", "classifier"}` (see [`crate::homeassistant`]).
    pub state: String,
    /// One JSON message per change of the stable state: `{"event_type",
    /// "previous", "confidence", "seq"}`.
    pub event: String,
    /// Retained JPEG of the latest crop, at a bounded rate.
    pub image: String,
    /// Retained plain-text label the dashboard's "Teach current frame" uses.
    pub teach_label: String,
    /// Retained summary of the last teaching request: `{"op", "status", "message", ...}`.
    pub last_result: String,
    /// `<base>/<name>`.
    base: String,
}

impl ClassifierTopics {
    /// Requests arrive on `<base>/<name>/request/#`, one subscription for all
    /// classifiers ([`crate::mqtt::Topics::classifier_request_filter`]).
    pub fn new(device_base: &str, name: &str) -> Self {
        let base = format!("{device_base}/{name}");
        Self {
            name: name.to_string(),
            prediction: format!("{base}/{}", crate::mqtt::topics::PREDICTION),
            head: format!("{base}/{}", crate::mqtt::topics::HEAD),
            state: format!("{base}/state"),
            event: format!("{base}/event"),
            image: format!("{base}/image"),
            teach_label: format!("{base}/teach_label"),
            last_result: format!("{base}/last_result"),
            base,
        }
    }

    /// The request topic of operation `op`: `<base>/<name>/request/<op>`.
    pub fn request(&self, op: &str) -> String {
        format!("{}/{}/{op}", self.base, crate::mqtt::topics::REQUEST)
    }
}

/// Counters of one classifier's gate: backbone runs by reason, skipped crops by
/// reason. Monotonic; shown in `status`.
#[derive(Debug, Default)]
pub struct GateStats {
    runs: [AtomicU64; Run::ALL.len()],
    skips: [AtomicU64; Skip::ALL.len()],
    pub predictions_published: AtomicU64,
}

impl GateStats {
    pub fn ran(&self, why: Run) {
        let i = Run::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.runs[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn skipped(&self, why: Skip) {
        let i = Skip::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.skips[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Backbone runs, all reasons.
    pub fn runs(&self) -> u64 {
        self.runs.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    /// Skipped crops, all reasons.
    pub fn skips(&self) -> u64 {
        self.skips.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }

    /// `{"backbone_runs": n, "runs": {reason: n}, "skipped": n, "skips": {reason: n}, ...}`.
    pub fn json(&self) -> Value {
        let runs: Map<String, Value> = Run::ALL
            .iter()
            .zip(&self.runs)
            .map(|(r, a)| (r.name().to_string(), a.load(Ordering::Relaxed).into()))
            .collect();
        let skips: Map<String, Value> = Skip::ALL
            .iter()
            .zip(&self.skips)
            .map(|(r, a)| (r.name().to_string(), a.load(Ordering::Relaxed).into()))
            .collect();
        json!({
            "backbone_runs": self.runs(),
            "runs": runs,
            "skipped": self.skips(),
            "skips": skips,
            "predictions_published": self.predictions_published.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn slugs_are_safe_for_home_assistant_and_keep_names_apart() {
        assert_eq!(super::slug("garage_door"), "garage_door");
        let spaced = super::slug("garage door");
        assert!(spaced.starts_with("garage_door_") && spaced.len() == "garage_door_".len() + 8);
        assert_ne!(spaced, super::slug("garage.door"));
        assert!(super::slug("Tür")
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }
}
