//! A prediction from a classifier's head scores: the frame's label (or
//! `unknown`), its confidence, the top classes, timings and identities, as
//! published ([`crate::mqtt::payload::Prediction`]).

use std::time::Duration;

use crate::backbone::norm;
use crate::head::{Head, UNKNOWN};
use crate::mqtt::payload::{Prediction, Score};
use crate::source::Frame;
use crate::time::timestamp;

/// Turn head scores into the published prediction.
pub fn build_prediction(
    frame: &Frame,
    features: &[f32],
    inference: Duration,
    head: Option<&Head>,
    top_k: usize,
    backbone: &str,
) -> Prediction {
    let scores = head.map(|h| (h, h.predict(features)));
    let (frame_label, confidence, similarity, top) = match &scores {
        Some((h, s)) if !s.ranked.is_empty() => {
            let (best, p) = s.ranked[0];
            let label = if s.unknown {
                UNKNOWN.to_string()
            } else {
                h.classes[best].clone()
            };
            let top = s
                .ranked
                .iter()
                .take(top_k)
                .map(|(c, p)| Score {
                    label: h.classes[*c].clone(),
                    score: round4(*p),
                })
                .collect();
            let confidence = if s.unknown { 0.0 } else { round4(p) };
            (Some(label), confidence, Some(round4(s.similarity)), top)
        }
        _ => (None, 0.0, None, Vec::new()),
    };
    Prediction {
        label: frame_label.clone(),
        confidence,
        frame_label,
        similarity,
        top,
        seq: frame.seq,
        captured_at: timestamp(frame.captured_at),
        latency_ms: round3(frame.captured.elapsed().as_secs_f64() * 1000.0),
        inference_ms: round3(inference.as_secs_f64() * 1000.0),
        embedding_norm: round4(norm(features)),
        backbone: backbone.to_string(),
        head: head.map(Head::id),
        image: frame.name.clone(),
        classifier: String::new(),
        trigger: "",
    }
}

fn round4(v: f32) -> f32 {
    (v * 10_000.0).round() / 10_000.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
