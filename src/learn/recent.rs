//! Requests on a classifier's recent crops ([`crate::classifier::recent`]):
//! `recent` lists them (`{"images": true}` adds each JPEG as base64),
//! `recent_image` fetches one, `label_recent` turns one into a sample of a class
//! (the same path as `add_sample`: dedupe, limits, embed, store, retrain) and
//! removes it from the list, `discard_recent` removes one.

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{bad, field, only_fields, Learner, RequestError};
use crate::classifier::recent::Entry;
use crate::source::decode::decode_image;
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

fn id_field(b: &Value) -> Result<u64, RequestError> {
    b.get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("the payload needs a numeric field \"id\" (from the recent list)"))
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

    pub(super) fn recent_list(&self, b: &Value) -> Result<Value, RequestError> {
        only_fields(b, &["images"])?;
        let images = match b.get("images") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(v)) => *v,
            Some(_) => return Err(bad("\"images\" must be true or false")),
        };
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
        Ok(v)
    }

    pub(super) fn recent_image(&self, b: &Value) -> Result<Value, RequestError> {
        only_fields(b, &["id"])?;
        let e = self.recent_entry(id_field(b)?)?;
        Ok(entry_json(&e, true))
    }

    pub(super) fn discard_recent(&mut self, b: &Value) -> Result<Value, RequestError> {
        only_fields(b, &["id"])?;
        let id = id_field(b)?;
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

    pub(super) async fn label_recent(&mut self, b: &Value) -> Result<Value, RequestError> {
        only_fields(b, &["id", "label"])?;
        let id = id_field(b)?;
        let label = self.class_name(field(b, "label")?)?;
        let entry = self.recent_entry(id)?;
        let sha256 = format!("{:x}", Sha256::digest(entry.jpeg.as_slice()));
        let limits = self.limits();
        let jpeg = entry.jpeg.clone();
        let mut answer = self
            .add_image(&label, Origin::Frame, sha256, move || {
                decode_image(&jpeg, &limits).map_err(|e| bad(e.to_string()))
            })
            .await?;
        self.drop_recent(id);
        tracing::info!(classifier = %self.classifier.spec.name, recent = id, sample = %answer["id"], label = %label, "recent crop labeled");
        answer["recent"] = json!(id);
        Ok(answer)
    }

    fn drop_recent(&self, id: u64) {
        if let Ok(mut r) = self.classifier.recent.lock() {
            r.remove(id);
        }
    }
}
