//! Classifiers: named questions about regions of the frame, each with its own
//! classes, samples, head, prediction settings and trigger. One backbone serves
//! them all.
//!
//! The classifier is the unit: adding one is configuration, not code. Its
//! settings are a [`ClassifierSpec`] (resolved by [`crate::config`]), its topics
//! [`crate::mqtt::topics::ClassifierTopics`], its store directory
//! [`crate::store::state_dir`], and its Home Assistant entities
//! [`crate::homeassistant::discovery`]; each derived from its name in one place.
//!
//! - [`gate`]: the change measure and the trigger policy (run the backbone only
//!   when the answer can change).
//! - [`recent`]: recent crops worth a label (Frigate 0.17's "Recent classifications").

pub mod gate;
pub mod recent;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

use serde_json::{json, Map, Value};

use crate::config::ClassifierSpec;
use crate::head::Head;
use crate::mqtt::ClassifierTopics;
use gate::{Run, Skip};
use recent::Recent;

/// The handles of one classifier the tasks share: the inference task reads the head
/// and fills `recent` and `gate`; the learning task swaps the head in and serves
/// `recent`. Cheap to clone: every clone shares the head, the recent crops and
/// the counters.
#[derive(Clone)]
pub struct Classifier {
    pub spec: Arc<ClassifierSpec>,
    /// Where its predictions, states and answers go.
    pub topics: Arc<ClassifierTopics>,
    pub head: Arc<ArcSwapOption<Head>>,
    pub recent: Arc<Mutex<Recent>>,
    pub gate: Arc<GateStats>,
    /// The last prediction made (published or not), for the console.
    pub latest: Arc<ArcSwapOption<Latest>>,
}

/// A classifier's last prediction, as the console shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Latest {
    /// The stable label (`unknown`, or `None` without a head).
    pub label: Option<String>,
    /// This frame's own label.
    pub frame_label: Option<String>,
    pub confidence: f32,
    pub similarity: Option<f32>,
    /// RFC 3339 capture time of the frame.
    pub captured_at: String,
    pub seq: u64,
    /// Why the backbone ran, or `head_changed`.
    pub trigger: &'static str,
}

impl Classifier {
    /// A classifier without a head, publishing on `topics`.
    pub fn new(spec: Arc<ClassifierSpec>, topics: Arc<ClassifierTopics>) -> Self {
        Self {
            head: Arc::new(ArcSwapOption::empty()),
            recent: Arc::new(Mutex::new(Recent::new(spec.recent))),
            gate: Arc::new(GateStats::default()),
            latest: Arc::new(ArcSwapOption::empty()),
            spec,
            topics,
        }
    }

    /// The same classifier (head, recent crops, counters) with another definition
    /// (edited or renamed at run time).
    pub fn redefined(&self, spec: Arc<ClassifierSpec>, topics: Arc<ClassifierTopics>) -> Self {
        if let Ok(mut r) = self.recent.lock() {
            r.reconfigure(spec.recent);
        }
        Self {
            spec,
            topics,
            ..self.clone()
        }
    }

    /// Keep the recent crops in `dir` (loading those kept there before).
    pub fn keep_recent_in(&self, dir: std::path::PathBuf) {
        if let Ok(mut r) = self.recent.lock() {
            r.keep_in(dir);
        }
    }

    /// The classifier's name.
    pub fn name(&self) -> &str {
        &self.spec.name
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
