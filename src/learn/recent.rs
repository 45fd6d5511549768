//! Requests on a classifier's recent crops ([`crate::classifier::recent`]):
//! `recent` lists them (with `images`, each JPEG as base64), `recent_image`
//! fetches one, `label_recent` turns one into a sample of a class (the same path
//! as `add_sample`: dedupe, limits, embed, store, retrain) and removes it from the
//! list, `discard_recent` removes one.

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::ops::{bad, RequestError};
use super::Learner;
use crate::classifier::recent::Entry;
use crate::imaging::decode::decode_image;
use crate::store::Origin;

/// Most base64 image bytes one `recent` answer carries (one MQTT message); the
/// newest crops first, the others are counted in `images_omitted` and can be
/// fetched one by one with `recent_image`.
pub const MAX_LIST_IMAGE_BYTES: usize = 1 << 20;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn entry_json(e: &Entry, image: bool) -> Value {
    let mut v = json!(e);
    if image {
        v["image"] = json!(b64(&e.jpeg));
    }
    v
}

impl Learner {
    fn recent_entry(&self, id: u64) -> Result<Entry, RequestError> {
        self.classifier
            .recent
            .lock()
            .map_err(|_| bad("internal error: the recent list is unavailable"))?
            .get(id)
            .ok_or_else(|| {
                bad(format!(
                    "there is no recent crop {id} in the list of classifier \"{}\" (each classifier has its own list)",
                    self.classifier.spec.name
                ))
            })
    }

    pub(super) fn recent_list(&self, images: bool) -> Value {
        let list = self
            .classifier
            .recent
            .lock()
            .map(|r| r.list())
            .unwrap_or_default();
        let (mut budget, mut omitted) = (MAX_LIST_IMAGE_BYTES, 0);
        let entries: Vec<Value> = list
            .iter()
            .map(|e| {
                let size = e.jpeg.len().div_ceil(3) * 4;
                let with = images && size <= budget;
                if with {
                    budget -= size;
                } else if images {
                    omitted += 1;
                }
                entry_json(e, with)
            })
            .collect();
        let mut v = json!({
            "classifier": self.classifier.spec.name,
            "recent": entries,
        });
        if images {
            v["images_omitted"] = json!(omitted);
        }
        v
    }

    pub(super) fn recent_image(&self, id: u64) -> Result<Value, RequestError> {
        Ok(entry_json(&self.recent_entry(id)?, true))
    }

    pub(super) fn discard_recent(&mut self, id: u64) -> Result<Value, RequestError> {
        let removed = self
            .classifier
            .recent
            .lock()
            .map(|mut r| r.remove(id))
            .unwrap_or(false);
        if !removed {
            return Err(bad(format!("there is no recent crop {id}")));
        }
        Ok(json!({ "discarded": id }))
    }

    pub(super) async fn label_recent(
        &mut self,
        id: u64,
        label: &str,
    ) -> Result<Value, RequestError> {
        let label = self.class_name(label);
        let entry = self.recent_entry(id)?;
        let sha256 = format!("{:x}", Sha256::digest(entry.jpeg.as_slice()));
        let limits = self.limits();
        let jpeg = entry.jpeg.clone();
        let mut answer = self
            .add_image(&label, Origin::Frame, sha256, move || {
                decode_image(&jpeg, &limits).map_err(|e| bad(e.to_string()))
            })
            .await?;
        if let Ok(mut r) = self.classifier.recent.lock() {
            r.remove(id);
        }
        tracing::info!(classifier = %self.classifier.spec.name, recent = id, sample = %answer["id"], label = %label, "recent crop labeled");
        answer["recent"] = json!(id);
        Ok(answer)
    }
}
