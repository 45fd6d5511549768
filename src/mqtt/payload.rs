//! JSON payloads published on MQTT (answers to requests are [`crate::answer`]).
//! The schemas are documented in docs/mqtt.md; tests here pin the field names.

use serde::Serialize;

/// A score of one class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub label: String,
    pub score: f32,
}

/// Published on `<base>/prediction` for each frame that is published.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The stable label (after smoothing), `unknown`, or null while the head has no classes.
    pub label: Option<String>,
    /// Probability of `label` in this frame (0 for `unknown` or no head).
    pub confidence: f32,
    /// This frame's own label before smoothing.
    pub frame_label: Option<String>,
    /// Cosine similarity to the nearest class mean; `unknown` below the head's threshold.
    pub similarity: Option<f32>,
    /// The best `predictions.top_k` classes, best first.
    pub top: Vec<Score>,
    /// Frame sequence number since start; gaps are frames dropped before inference.
    pub seq: u64,
    /// When the frame was captured (RFC 3339, UTC).
    pub captured_at: String,
    /// Capture to prediction, milliseconds.
    pub latency_ms: f64,
    /// Backbone run alone (preprocessing excluded), milliseconds.
    pub inference_ms: f64,
    /// L2 norm of the feature vector: a cheap sign of life without a head.
    pub embedding_norm: f32,
    /// `<model file stem>@<feature identity prefix>` of the backbone (model and
    /// preprocessing).
    pub backbone: String,
    /// `<kind>-v<version>` of the head, null when none is trained.
    pub head: Option<String>,
    /// The file the frame came from (`files` source only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The classifier that made the prediction.
    pub classifier: String,
    /// Why the backbone ran on this crop (`first`, `changed`, `settling`,
    /// `interval`, `max_age`, `every_frame`), or `head_changed`: the last
    /// features classified again by a retrained head.
    pub trigger: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::timestamp;
    use std::time::{Duration, SystemTime};

    #[test]
    fn prediction_serializes_with_the_documented_fields() {
        let p = Prediction {
            label: Some("cat".into()),
            confidence: 0.75,
            frame_label: Some("cat".into()),
            similarity: Some(0.5),
            top: vec![Score {
                label: "cat".into(),
                score: 0.75,
            }],
            seq: 7,
            captured_at: timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(1_500)),
            latency_ms: 12.5,
            inference_ms: 10.0,
            embedding_norm: 3.0,
            backbone: "m@abc".into(),
            head: Some("ncm-v1".into()),
            image: None,
            classifier: "door".into(),
            trigger: "changed",
        };
        let v = serde_json::to_value(&p).expect("json");
        assert_eq!(v["label"], "cat");
        assert_eq!(v["top"][0]["score"], 0.75);
        assert_eq!(v["captured_at"], "1970-01-01T00:00:01.500Z");
        let mut keys: Vec<_> = v.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "backbone",
                "captured_at",
                "classifier",
                "confidence",
                "embedding_norm",
                "frame_label",
                "head",
                "inference_ms",
                "label",
                "latency_ms",
                "seq",
                "similarity",
                "top",
                "trigger"
            ]
        );
    }
}
