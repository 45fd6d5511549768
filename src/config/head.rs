//! `[head]` and `[predictions]`: what the heads learn and how their predictions
//! are published; the defaults of every classifier, which may set its own keys
//! ([`super::classifiers`]).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HeadConfig {
    /// `ncm` (nearest class mean), `softmax` (logistic regression), `combined` or `auto`
    /// (class means until every class has `auto_min_samples`, then `combined`:
    /// the regression with the class means as a prior).
    pub kind: HeadKind,
    pub auto_min_samples: usize,
    /// Softmax regression: L2 penalty (on features centred and scaled to a mean
    /// norm of 1, the mean cross-entropy plus `l2/2 |W|²`) and iteration cap.
    pub l2: f32,
    /// Choose the L2 penalty on the samples by 3-fold cross-validation over
    /// `l2 × {0.1, 1, 10, 100}` when every class has 3 samples (else `l2`).
    pub l2_auto: bool,
    pub max_iterations: usize,
    /// Predict `unknown` when the frame is less similar than this to every class;
    /// `auto` calibrates it on the stored samples, `off` disables it, or a number.
    pub unknown_threshold: String,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            kind: HeadKind::Auto,
            auto_min_samples: 5,
            l2: 1e-3,
            l2_auto: true,
            max_iterations: 300,
            unknown_threshold: "auto".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HeadKind {
    Ncm,
    Softmax,
    /// Softmax regression with the class means as a prior (see
    /// [`crate::head::ModelKind::Combined`]).
    Combined,
    Auto,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PredictionConfig {
    /// `every_frame`, or `on_change` (only when the stable label changes).
    pub publish: PublishMode,
    /// Never publish predictions more often than this (0: no limit).
    pub min_interval_ms: u64,
    /// How many scores the `top` list carries.
    pub top_k: usize,
    /// Majority vote over the last N frames before a label counts as stable (1: off).
    pub smoothing_window: usize,
}

impl Default for PredictionConfig {
    fn default() -> Self {
        Self {
            publish: PublishMode::EveryFrame,
            min_interval_ms: 0,
            top_k: 3,
            smoothing_window: 1,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PublishMode {
    EveryFrame,
    OnChange,
}

impl std::str::FromStr for HeadKind {
    type Err = String;
    /// The names of the configuration file (serde's), for the command line.
    fn from_str(s: &str) -> Result<Self, String> {
        super::from_name(s)
    }
}

/// When a frame counts as far from every class (`head.unknown_threshold`, parsed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnknownThreshold {
    Off,
    Auto,
    Fixed(f32),
}
