//! Requests that read a classifier's samples and head without changing them:
//! a sample's thumbnail (`sample_image`), the trained heads so far (`history`),
//! and `classify`: an image through the backbone and the current head, nothing
//! stored (the console's "classify an image").

use base64::Engine;
use serde_json::{json, Value};

use super::ops::{bad, RequestError};
use super::Learner;
use crate::imaging::decode::decode_image;
use crate::names::UNKNOWN;

impl Learner {
    pub(super) fn sample_image(&self, id: u64) -> Result<Value, RequestError> {
        let meta = self
            .store
            .samples()
            .iter()
            .find(|s| s.id == id)
            .cloned()
            .ok_or_else(|| bad(format!("there is no sample {id}")))?;
        let jpeg = self
            .store
            .load_thumbnail(id)
            .map_err(|e| bad(format!("sample {id} has no image: {e}")))?;
        let mut v = json!(meta);
        v["image"] = json!(base64::engine::general_purpose::STANDARD.encode(jpeg));
        Ok(v)
    }

    pub(super) fn history_json(&self) -> Value {
        json!({ "classifier": self.classifier.spec.name, "history": self.store.history() })
    }

    /// The current head's answer for `image` (whole, not cropped): the label (or
    /// `unknown`), its confidence, the similarity to the nearest class, and every
    /// class's score, best first.
    pub(super) async fn classify(&self, image: bytes::Bytes) -> Result<Value, RequestError> {
        let Some(head) = self.classifier.head.load_full() else {
            return Err(bad(
                "the classifier has no head yet: teach it two classes first",
            ));
        };
        let limits = self.limits();
        let embedder = self.embedder().clone();
        let features = tokio::task::spawn_blocking(move || {
            let img = decode_image(&image, &limits).map_err(|e| bad(e.to_string()))?;
            embedder
                .embed(&img)
                .map(|e| e.features)
                .map_err(|e| bad(e.to_string()))
        })
        .await
        .map_err(|e| bad(format!("internal error: {e}")))??;
        let s = head.predict(&features);
        let top: Vec<Value> = s
            .ranked
            .iter()
            .map(|(c, p)| json!({ "label": head.classes[*c], "score": (p * 10_000.0).round() / 10_000.0 }))
            .collect();
        let (label, confidence) = match s.ranked.first() {
            Some(_) if s.unknown => (UNKNOWN.to_string(), 0.0),
            Some((c, p)) => (head.classes[*c].clone(), (p * 10_000.0).round() / 10_000.0),
            None => (UNKNOWN.to_string(), 0.0),
        };
        Ok(json!({
            "label": label,
            "confidence": confidence,
            "similarity": (s.similarity * 10_000.0).round() / 10_000.0,
            "unknown_below": head.unknown_below,
            "top": top,
            "head": head.id(),
        }))
    }
}
