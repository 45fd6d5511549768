//! The head: the small classifier the device learns from labeled samples.
//!
//! [`ncm`] keeps the mean of each class's L2-normalized features (usable from one
//! sample) and scores by cosine similarity; [`softmax`] fits a multinomial logistic
//! regression on features centred on the training mean. Training is a pure function
//! ([`train`]: samples in, [`Head`] out) that runs on the learning task, never on the
//! inference path. Whatever the model, the nearest class mean also gives the
//! similarity that decides `unknown`, and the leave-one-out quality report.
//!
//! The class means are not centred on the training mean: with few samples that
//! centre lies between the user's classes, so every frame, however unlike them,
//! looks close to one of them, and `unknown` never fires. Measured on
//! hymenoptera/clothing10 embeddings (10 draws per k): centring gave the same or
//! lower accuracy (1-shot hymenoptera 0.66 against 0.72 uncentred) and flagged 0% of
//! the other data set's images as unknown, against 46–99% uncentred.

/// Version of the head's feature space and file layout. A saved head of another
/// format is retrained from the stored samples at start-up.
/// 3: `auto` trains `combined` heads; a saved head of format 2 is retrained at start,
/// so a restored `softmax` head does not outlive the upgrade.
pub const FORMAT: u32 = 3;

pub mod math;
pub mod ncm;
pub mod softmax;

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backbone::BackboneId;
use crate::config::{HeadConfig, HeadKind, UnknownThreshold};

pub use crate::names::UNKNOWN;
pub use math::{
    distance, dot, l2_normalize, log_softmax, mean_of, ms, scaled_centered, softmax_of,
};

/// A trained head. Serialized as the saved head file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Head {
    /// [`FORMAT`] when trained; 0 for heads saved before the field existed.
    #[serde(default)]
    pub format: u32,
    /// Increases by one with every retrain; part of `id()`.
    pub version: u64,
    pub kind: ModelKind,
    /// Class names, in the order of the model's outputs.
    pub classes: Vec<String>,
    /// The backbone whose features this head was trained on.
    pub backbone: BackboneId,
    /// Mean of the training features, subtracted before the softmax model.
    pub center: Vec<f32>,
    /// Mean distance of the training features from `center`: the softmax model reads
    /// `(x - center) / scale`, so it keeps how far a frame lies from the centre.
    #[serde(default = "one")]
    pub scale: f32,
    /// L2-normalized class means of the L2-normalized features.
    pub means: Vec<Vec<f32>>,
    /// Softmax regression weights (classes × dim) and biases; empty for NCM.
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
    /// NCM: softmax temperature applied to cosine similarities; combined: that of
    /// the class-means prior ([`PRIOR_TEMPERATURE`] when trained).
    pub temperature: f32,
    /// Softmax and combined: the L2 penalty the regression was fitted with (chosen
    /// by cross-validation when `head.l2_auto`); `None` for NCM.
    #[serde(default)]
    pub l2: Option<f32>,
    /// Below this cosine similarity to the nearest class mean, predict `unknown`.
    pub unknown_below: Option<f32>,
    pub quality: Quality,
    /// Seconds since the Unix epoch.
    pub trained_at: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Ncm,
    Softmax,
    /// The softmax regression with the nearest class means as a prior: the product
    /// of both models' class probabilities, renormalized (a product of experts;
    /// the NCM side at [`PRIOR_TEMPERATURE`]).
    Combined,
}

/// Temperature of the nearest-class-mean prior in a [`ModelKind::Combined`] head:
/// softer than [`ncm::TEMPERATURE`], so the regression decides where it is
/// confident and the class means where it is not (chosen on hymenoptera and
/// clothing10 with `edgehead eval`, from 10, 20 and 40).
pub const PRIOR_TEMPERATURE: f32 = 10.0;

/// How good the head is, computed when it is trained: what users read to decide
/// whether they have given enough samples.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Quality {
    pub samples: usize,
    pub per_class: Vec<ClassQuality>,
    /// Leave-one-out accuracy of the nearest-class-mean rule; `None` when no class
    /// has two samples.
    pub loo_accuracy: Option<f32>,
    /// Accuracy of the trained model on its own training samples.
    pub train_accuracy: f32,
    /// The pair of classes most often confused in leave-one-out, and how often.
    pub most_confused: Option<Confusion>,
    pub train_ms: f64,
    /// Plain-language advice: which classes need more samples.
    pub advice: Vec<String>,
    /// Leave-one-out outcomes: `confusion[actual][predicted]` counts, classes in
    /// the head's order (empty in heads saved before it was kept).
    #[serde(default)]
    pub confusion: Vec<Vec<usize>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassQuality {
    pub label: String,
    pub samples: usize,
    pub loo_accuracy: Option<f32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Confusion {
    /// Samples of `actual` ...
    pub actual: String,
    /// ... classified as `predicted` ...
    pub predicted: String,
    /// ... this many times.
    pub count: usize,
}

/// Training parameters, from `[head]`.
#[derive(Debug, Clone)]
pub struct TrainParams {
    pub kind: HeadKind,
    pub auto_min_samples: usize,
    pub l2: f32,
    /// Choose the L2 penalty by cross-validation around `l2` ([`softmax::choose_l2`]).
    pub l2_auto: bool,
    pub max_iterations: usize,
    pub unknown: UnknownThreshold,
}

impl TrainParams {
    pub fn from_config(c: &HeadConfig, unknown: UnknownThreshold) -> Self {
        Self {
            kind: c.kind,
            auto_min_samples: c.auto_min_samples,
            l2: c.l2,
            l2_auto: c.l2_auto,
            max_iterations: c.max_iterations,
            unknown,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TrainError {
    #[error("no samples to train on")]
    NoSamples,
    #[error("sample {index} has {got} features, expected {want}")]
    Dimension {
        index: usize,
        got: usize,
        want: usize,
    },
    #[error("sample {index} has class {class}, but there are only {classes} classes")]
    BadClass {
        index: usize,
        class: usize,
        classes: usize,
    },
    #[error("sample {0} has features that are not finite numbers")]
    NotFinite(usize),
}

/// One labeled feature vector.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub features: &'a [f32],
    pub class: usize,
}

/// Borrow `(features, class)` pairs as training samples.
pub fn samples(data: &[(Vec<f32>, usize)]) -> Vec<Sample<'_>> {
    data.iter()
        .map(|(features, class)| Sample {
            features,
            class: *class,
        })
        .collect()
}

/// A prediction for one feature vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// (class index, probability), best first.
    pub ranked: Vec<(usize, f32)>,
    /// Cosine similarity to the nearest class mean.
    pub similarity: f32,
    /// The similarity is below the head's threshold.
    pub unknown: bool,
}

/// Train a head. `classes` names the classes that `samples` index; classes with no
/// sample are dropped from the head (and from its class list). Errors: no sample,
/// vectors of different lengths, a class index out of range, a value that is not
/// finite.
pub fn train(
    samples: &[Sample<'_>],
    classes: &[String],
    backbone: &BackboneId,
    version: u64,
    params: &TrainParams,
) -> Result<Head, TrainError> {
    let started = Instant::now();
    let dim = check_samples(samples, classes.len())?;
    let (kept, labels, min_count) = present_classes(samples, classes);
    let center = mean_of(samples.iter().map(|s| s.features), dim);
    let z: Vec<Vec<f32>> = samples
        .iter()
        .map(|s| {
            let mut v = s.features.to_vec();
            l2_normalize(&mut v);
            v
        })
        .collect();
    let scale = mean_distance(samples, &center);
    let n_classes = kept.len();
    let model = ncm::fit(&z, &labels, n_classes);
    let loo = ncm::leave_one_out(&z, &labels, &model);
    let kind = match params.kind {
        HeadKind::Ncm => ModelKind::Ncm,
        HeadKind::Softmax => ModelKind::Softmax,
        HeadKind::Combined => ModelKind::Combined,
        HeadKind::Auto if min_count >= params.auto_min_samples && n_classes >= 2 => {
            ModelKind::Combined
        }
        HeadKind::Auto => ModelKind::Ncm,
    };
    let regression = (kind != ModelKind::Ncm && n_classes >= 2).then(|| {
        let u: Vec<Vec<f32>> = samples
            .iter()
            .map(|s| scaled_centered(s.features, &center, scale))
            .collect();
        let l2 = if params.l2_auto {
            softmax::choose_l2(&u, &labels, n_classes, params.l2, params.max_iterations)
        } else {
            params.l2
        };
        (
            softmax::fit(&u, &labels, n_classes, l2, params.max_iterations),
            l2,
        )
    });
    let (kind, weights, bias, l2) = match regression {
        Some((fit, l2)) => (kind, fit.weights, fit.bias, Some(l2)),
        None => (ModelKind::Ncm, Vec::new(), Vec::new(), None),
    };
    let unknown_below = match params.unknown {
        UnknownThreshold::Off => None,
        UnknownThreshold::Fixed(t) => Some(t),
        // One class and nothing to calibrate on: only what is nearly a copy of
        // its sample is recognized (the calibrated floor), not everything.
        UnknownThreshold::Auto if kept.len() == 1 => loo
            .calibrated_threshold()
            .or(Some(ncm::UNCALIBRATED_ONE_CLASS)),
        UnknownThreshold::Auto => loo.calibrated_threshold(),
    };
    let mut head = Head {
        format: FORMAT,
        version,
        kind,
        classes: kept,
        backbone: backbone.clone(),
        center,
        scale,
        means: model.means,
        weights,
        bias,
        temperature: if kind == ModelKind::Combined {
            PRIOR_TEMPERATURE
        } else {
            ncm::TEMPERATURE
        },
        l2,
        unknown_below,
        quality: Quality::default(),
        trained_at: crate::time::now_secs(),
    };
    let correct = samples
        .iter()
        .zip(&labels)
        .filter(|(s, l)| head.predict(s.features).ranked.first().map(|r| r.0) == Some(**l))
        .count();
    head.quality = loo.quality(
        &head.classes,
        correct as f32 / samples.len() as f32,
        started.elapsed(),
    );
    Ok(head)
}

/// Check the training input; returns the feature dimension.
fn check_samples(samples: &[Sample<'_>], classes: usize) -> Result<usize, TrainError> {
    let first = samples.first().ok_or(TrainError::NoSamples)?;
    let dim = first.features.len();
    for (index, s) in samples.iter().enumerate() {
        if s.features.len() != dim {
            return Err(TrainError::Dimension {
                index,
                got: s.features.len(),
                want: dim,
            });
        }
        if s.class >= classes {
            return Err(TrainError::BadClass {
                index,
                class: s.class,
                classes,
            });
        }
        if s.features.iter().any(|v| !v.is_finite()) {
            return Err(TrainError::NotFinite(index));
        }
    }
    Ok(dim)
}

/// The classes that have samples, in their original order; each sample's index
/// among them; the fewest samples a kept class has.
fn present_classes(samples: &[Sample<'_>], classes: &[String]) -> (Vec<String>, Vec<usize>, usize) {
    let mut counts = vec![0usize; classes.len()];
    for s in samples {
        counts[s.class] += 1;
    }
    let mut remap = vec![usize::MAX; classes.len()];
    let mut kept = Vec::new();
    for (i, name) in classes.iter().enumerate() {
        if counts[i] > 0 {
            remap[i] = kept.len();
            kept.push(name.clone());
        }
    }
    let labels = samples.iter().map(|s| remap[s.class]).collect();
    let min_count = counts
        .iter()
        .filter(|c| **c > 0)
        .min()
        .copied()
        .unwrap_or(0);
    (kept, labels, min_count)
}

/// The mean distance of the samples from `center` (the softmax model's scale);
/// 1 when it is not a positive number.
fn mean_distance(samples: &[Sample<'_>], center: &[f32]) -> f32 {
    let total: f64 = samples
        .iter()
        .map(|s| distance(s.features, center) as f64)
        .sum();
    let mean = (total / samples.len().max(1) as f64) as f32;
    if mean > 0.0 && mean.is_finite() {
        mean
    } else {
        1.0
    }
}

fn one() -> f32 {
    1.0
}

impl Head {
    /// A short identifier for predictions: `<kind>-v<version>`.
    pub fn id(&self) -> String {
        let kind = match self.kind {
            ModelKind::Ncm => "ncm",
            ModelKind::Softmax => "softmax",
            ModelKind::Combined => "combined",
        };
        format!("{kind}-v{}", self.version)
    }

    pub fn dim(&self) -> usize {
        self.center.len()
    }

    /// Classify a raw feature vector from the backbone.
    pub fn predict(&self, features: &[f32]) -> Scores {
        if features.len() != self.dim() || self.classes.is_empty() {
            return Scores {
                ranked: Vec::new(),
                similarity: 0.0,
                unknown: true,
            };
        }
        let norm = features.iter().map(|x| x * x).sum::<f32>().sqrt();
        // Cosine similarity to each class mean: dot with the normalized vector.
        let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        let sims: Vec<f32> = self.means.iter().map(|m| dot(features, m) * inv).collect();
        let similarity = sims.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let logits: Vec<f32> = match self.kind {
            ModelKind::Ncm => sims.iter().map(|s| s * self.temperature).collect(),
            ModelKind::Softmax | ModelKind::Combined => {
                let centered: Vec<f32> = features
                    .iter()
                    .zip(&self.center)
                    .map(|(a, c)| a - c)
                    .collect();
                let regression: Vec<f32> = self
                    .weights
                    .iter()
                    .zip(&self.bias)
                    .map(|(w, b)| dot(&centered, w) / self.scale + b)
                    .collect();
                if self.kind == ModelKind::Combined {
                    let prior: Vec<f32> = sims.iter().map(|s| s * self.temperature).collect();
                    log_softmax(&regression)
                        .into_iter()
                        .zip(log_softmax(&prior))
                        .map(|(a, b)| a + b)
                        .collect()
                } else {
                    regression
                }
            }
        };
        let probs = softmax_of(&logits);
        let mut ranked: Vec<(usize, f32)> = probs.into_iter().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        if self.means.len() == 1 {
            // One class: a probability over one class is always 1, whatever the
            // camera sees. The confidence is the similarity to the class instead.
            ranked = vec![(0, similarity.clamp(0.0, 1.0))];
        }
        Scores {
            ranked,
            similarity,
            unknown: self.unknown_below.is_some_and(|t| similarity < t),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
