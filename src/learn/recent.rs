//! Requests on a classifier's recent crops ([`crate::classifier::recent`]):
//! `recent` lists them (with `images`, each JPEG as base64; each with its
//! near-duplicate `group`), `recent_image` fetches one, `label_recent` turns
//! crops into samples of a class (the same path as `add_sample`: dedupe, limits,
//! embed, store, retrain; of several near-duplicates only the first is stored)
//! and removes them from the list, `discard_recent` removes some.

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::ops::{bad, RequestError};
use super::Learner;
use crate::classifier::recent::{distinct, groups, Entry};
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
        let group = groups(&list);
        let (mut budget, mut omitted) = (MAX_LIST_IMAGE_BYTES, 0);
        let entries: Vec<Value> = list
            .iter()
            .zip(group)
            .map(|(e, g)| {
                let size = e.jpeg.len().div_ceil(3) * 4;
                let with = images && size <= budget;
                if with {
                    budget -= size;
                } else if images {
                    omitted += 1;
                }
                let mut v = entry_json(e, with);
                v["group"] = json!(g);
                v
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

    /// The entries of `ids`, in that order; refused (nothing changed) when one is
    /// not in the list.
    fn recent_entries(&self, ids: &[u64]) -> Result<Vec<Entry>, RequestError> {
        ids.iter().map(|id| self.recent_entry(*id)).collect()
    }

    pub(super) fn discard_recent(&mut self, ids: &[u64]) -> Result<Value, RequestError> {
        self.recent_entries(ids)?;
        let removed = self
            .classifier
            .recent
            .lock()
            .map(|mut r| r.remove_all(ids))
            .unwrap_or(0);
        if removed == 0 {
            return Err(bad(format!("there is no recent crop {}", ids[0])));
        }
        Ok(match ids {
            [one] => json!({ "discarded": one }),
            many => json!({ "discarded": many }),
        })
    }

    /// Crops `ids` (in order) become samples of `label`; a near-duplicate of a crop
    /// stored by this request is not stored again. All of them leave the list.
    /// The answer: `id` (the first sample), `ids` (every sample), `label`,
    /// `class_samples`, `recent` (the crop, or the crops stored), and
    /// `skipped_similar` (the crops not stored).
    pub(super) async fn label_recent(
        &mut self,
        ids: &[u64],
        label: &str,
    ) -> Result<Value, RequestError> {
        let label = self.class_name(label)?;
        let entries = self.recent_entries(ids)?;
        let (kept, skipped) = distinct(&entries);
        self.check_room(&label, kept.len())?;
        let mut answer = Value::Null;
        let mut samples = Vec::new();
        let mut stored = Vec::new();
        for entry in kept {
            let sha256 = format!("{:x}", Sha256::digest(entry.jpeg.as_slice()));
            let limits = self.limits();
            let jpeg = entry.jpeg.clone();
            let one = self
                .add_image(&label, Origin::Frame, sha256, move || {
                    decode_image(&jpeg, &limits).map_err(|e| bad(e.to_string()))
                })
                .await;
            let one = match one {
                Ok(v) => v,
                // What was stored stays; the rest of the crops stay in the list.
                Err(e) if !stored.is_empty() => {
                    answer["error_after"] = json!(e.0);
                    break;
                }
                Err(e) => return Err(e),
            };
            samples.push(one["id"].clone());
            stored.push(entry.id);
            if answer.is_null() {
                answer = one;
            }
        }
        let skipped_ids: Vec<u64> = skipped.iter().map(|e| e.id).collect();
        if let Ok(mut r) = self.classifier.recent.lock() {
            r.remove_all(&stored);
            r.remove_all(&skipped_ids);
        }
        tracing::info!(classifier = %self.classifier.spec.name, stored = stored.len(), skipped = skipped_ids.len(), label = %label, "recent crops labeled");
        answer["ids"] = json!(samples);
        answer["class_samples"] = json!(self.class_count(&label));
        answer["recent"] = match ids {
            [one] => json!(one),
            _ => json!(stored),
        };
        answer["skipped_similar"] = json!(skipped_ids);
        Ok(answer)
    }
}
