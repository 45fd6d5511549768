//! Carrying out a parsed [`Op`]: names are resolved against the store (which
//! existing class a label refers to), the change is made, and the answer's data
//! returned. A refusal changes nothing.

use serde_json::{json, Value};

use super::ops::{bad, LabelChoice, Op, RequestError, SampleRef};
use super::samples::Collect;
use super::Learner;
use crate::homeassistant::Event;
use crate::names;
use crate::store::Origin;

/// What applying an operation gave.
pub enum Applied {
    /// The answer's data.
    Answer(Value),
    /// `label_frame`: collect frames, then answer ([`Learner::start_collecting`]).
    Collect(Collect),
}

impl Learner {
    /// Carry out `op`.
    pub(super) async fn apply(&mut self, op: Op) -> Result<Applied, RequestError> {
        let data = match op {
            Op::AddSample {
                label,
                image,
                apply_region,
            } => self.add_sample(&label, image, apply_region).await?,
            Op::LabelFrame {
                label,
                count,
                interval,
                skip_similar,
            } => {
                return self
                    .label_frame(label, count, interval, skip_similar)
                    .map(Applied::Collect)
            }
            Op::Classes => self.classes_json(),
            Op::Samples { label } => self.samples_json(label.as_deref())?,
            Op::RemoveSample(which) => self.remove_sample(which)?,
            Op::RenameClass { from, to } => self.move_class(&from, &to, false).await?,
            Op::MergeClass { from, into } => self.move_class(&from, &into, true).await?,
            Op::DeleteClass { label } => self.delete_class(&label)?,
            Op::Reset => self.reset().await?,
            Op::Retrain => {
                self.retrain_at = None;
                self.retrain().await;
                self.head_json()
            }
            Op::Head => self.head_json(),
            Op::Recent { images } => self.recent_list(images),
            Op::RecentImage { id } => self.recent_image(id)?,
            Op::LabelRecent { ids, label } => self.label_recent(&ids, &label).await?,
            Op::DiscardRecent { ids } => self.discard_recent(&ids)?,
            Op::SampleImage { id } => self.sample_image(id)?,
            Op::MoveSample { id, label } => self.move_sample(id, &label).await?,
            Op::Classify { image } => self.classify(image).await?,
            Op::History => self.history_json(),
            Op::StopLabelFrame => self.stop_label_frame(),
            Op::SelectLabel { label } => self.select_label(&label).await?,
            Op::Classifiers
            | Op::CreateClassifier { .. }
            | Op::UpdateClassifier { .. }
            | Op::RenameClassifier { .. }
            | Op::DeleteClassifier { .. }
            | Op::ImportBundle { .. } => {
                return Err(bad(format!(
                    "{} is carried out by the classifier manager, not by a classifier",
                    op.kind().name()
                )))
            }
        };
        Ok(Applied::Answer(data))
    }

    /// Refuse changes to classes while `label_frame` adds to one.
    fn not_collecting(&self) -> Result<(), RequestError> {
        match &self.collecting {
            Some(c) => Err(bad(format!(
                "busy: a label_frame request is collecting frames of \"{}\"; try again when it is answered",
                c.label
            ))),
            None => Ok(()),
        }
    }

    /// The class a normalized `label` names: spelled like the existing class it
    /// matches without regard to case, or as given for a new class.
    ///
    /// A label that would make a new class must pass the rules for new classes
    /// ([`names::check_new_label`]); classes made before them keep working.
    pub(super) fn class_name(&self, label: &str) -> Result<String, RequestError> {
        let classes = self.store.classes();
        match names::existing(label, classes.iter().map(|c| c.0.as_str())) {
            Some(c) => Ok(c.to_string()),
            None => {
                names::check_new_label(label).map_err(|e| bad(e.0))?;
                Ok(label.to_string())
            }
        }
    }

    /// The existing class `label` names (any case, any normalization form).
    fn find_class(&self, label: &str) -> Result<String, RequestError> {
        let classes = self.store.classes();
        names::existing(label, classes.iter().map(|c| c.0.as_str()))
            .map(str::to_string)
            .ok_or_else(|| bad(format!("there is no class \"{label}\"")))
    }

    pub(super) fn classes_json(&self) -> Value {
        let classes: Vec<Value> = self
            .store
            .classes()
            .into_iter()
            .map(|(label, n)| json!({ "label": label, "samples": n }))
            .collect();
        json!({ "classes": classes, "samples": self.store.len() })
    }

    fn samples_json(&self, label: Option<&str>) -> Result<Value, RequestError> {
        let label = label.map(|l| self.find_class(l)).transpose()?;
        let list: Vec<_> = self
            .store
            .samples()
            .iter()
            .filter(|s| label.as_ref().is_none_or(|l| s.label == *l))
            .collect();
        Ok(json!({ "samples": list }))
    }

    fn remove_sample(&mut self, which: SampleRef) -> Result<Value, RequestError> {
        let id = match which {
            SampleRef::Id(id) => id,
            // Ids only grow: the newest sample has the largest.
            SampleRef::Last => self
                .store
                .samples()
                .iter()
                .map(|s| s.id)
                .max()
                .ok_or_else(|| bad("there is no sample to remove"))?,
        };
        let label = self
            .store
            .samples()
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.label.clone());
        if !self.store.remove(id).map_err(|e| bad(e.to_string()))? {
            return Err(bad(format!("there is no sample {id}")));
        }
        self.embeddings.remove(&id);
        self.schedule_retrain();
        Ok(json!({ "removed": id, "label": label, "classes": self.classes_json()["classes"] }))
    }

    /// `rename_class` (`merge` false) or `merge_class`: every sample of `from`
    /// becomes one of `to`.
    async fn move_class(
        &mut self,
        from: &str,
        to: &str,
        merge: bool,
    ) -> Result<Value, RequestError> {
        self.not_collecting()?;
        let from = self.find_class(from)?;
        let classes = self.store.classes();
        // The class `to` names, other than `from` itself (a rename may only change
        // the spelling: cat → Cat).
        let target = names::existing(
            to,
            classes.iter().map(|c| c.0.as_str()).filter(|c| *c != from),
        )
        .map(str::to_string);
        if from == to {
            return Err(bad("from and to are the same class"));
        }
        let to = match (merge, target) {
            (true, Some(t)) => t,
            (true, None) => {
                return Err(bad(format!(
                    "there is no class \"{to}\" to merge into; use rename_class"
                )))
            }
            (false, Some(t)) => {
                return Err(bad(format!(
                    "class \"{t}\" exists; use merge_class to merge"
                )))
            }
            (false, None) => {
                names::check_new_label(to).map_err(|e| bad(e.0))?;
                to.to_string()
            }
        };
        let n = self
            .store
            .relabel(&from, &to)
            .map_err(|e| bad(e.to_string()))?;
        self.schedule_retrain();
        // The dashboard's teach label follows its class.
        if self.teach_label.as_deref() == Some(from.as_str()) {
            self.set_selected(to.clone()).await;
        }
        Ok(json!({ "moved": n, "classes": self.classes_json()["classes"] }))
    }

    fn delete_class(&mut self, label: &str) -> Result<Value, RequestError> {
        self.not_collecting()?;
        let label = self.find_class(label)?;
        let before: Vec<u64> = self
            .store
            .samples()
            .iter()
            .filter(|s| s.label == label)
            .map(|s| s.id)
            .collect();
        let n = self
            .store
            .delete_class(&label)
            .map_err(|e| bad(e.to_string()))?;
        for id in &before {
            self.embeddings.remove(id);
        }
        self.schedule_retrain();
        Ok(json!({ "deleted": n, "classes": self.classes_json()["classes"] }))
    }

    async fn reset(&mut self) -> Result<Value, RequestError> {
        self.not_collecting()?;
        let n = self.store.reset().map_err(|e| bad(e.to_string()))?;
        self.embeddings.clear();
        self.retrain_at = None;
        self.classifier.head.store(None);
        self.publish_head().await;
        Ok(json!({ "deleted": n }))
    }

    /// `move_sample`: sample `id` to class `label` (new or existing).
    async fn move_sample(&mut self, id: u64, label: &str) -> Result<Value, RequestError> {
        self.not_collecting()?;
        let label = self.class_name(label)?;
        let from = self
            .store
            .samples()
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.label.clone())
            .ok_or_else(|| bad(format!("there is no sample {id}")))?;
        if from == label {
            return Err(bad(format!(
                "sample {id} is a sample of \"{label}\" already"
            )));
        }
        self.check_room(&label, 0)?;
        self.store
            .relabel_sample(id, &label)
            .map_err(|e| bad(e.to_string()))?;
        self.schedule_retrain();
        Ok(
            json!({ "id": id, "from": from, "label": label, "classes": self.classes_json()["classes"] }),
        )
    }

    async fn select_label(&mut self, label: &str) -> Result<Value, RequestError> {
        let label = self.class_name(label)?;
        self.set_selected(label.clone()).await;
        let exists = self.store.classes().iter().any(|c| c.0 == label);
        // The choice is best-effort state (docs/mqtt.md): kept across restarts
        // when it can be written. Say so when it cannot.
        let disk_full = self
            .shared
            .stats
            .disk_full
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut v =
            json!({ "label": label, "new_class": !exists, "kept_across_restarts": !disk_full });
        if disk_full {
            v["note"] = json!("the disk is full: this choice holds until the daemon restarts");
        }
        Ok(v)
    }

    /// Choose the label the dashboard teaches, and tell the bridge.
    async fn set_selected(&mut self, label: String) {
        self.teach_label = Some(label.clone());
        self.teach_refused = None;
        self.shared
            .notifier
            .notify_wait(Event::TeachLabel {
                classifier: self.classifier.name().to_string(),
                label,
            })
            .await;
    }

    /// Validate a `label_frame`: which label, and room for its frames.
    fn label_frame(
        &mut self,
        label: LabelChoice,
        count: u32,
        interval: std::time::Duration,
        skip_similar: Option<f32>,
    ) -> Result<Collect, RequestError> {
        let label = match label {
            LabelChoice::Given(l) => self.class_name(&l)?,
            LabelChoice::Selected => match (&self.teach_label, &self.teach_refused) {
                (Some(l), _) => l.clone(),
                (None, Some(why)) => {
                    return Err(bad(format!(
                        "no label is selected: the last one given was refused ({why}); choose a label again (Home Assistant: \"Teach label\" or \"New label\")"
                    )))
                }
                (None, None) => {
                    return Err(bad("no label is selected: choose one with select_label (Home Assistant: \"Teach label\" or \"New label\")"))
                }
            },
        };
        if self.collecting.is_some() {
            return Err(bad(
                "busy: another label_frame request is collecting frames; try again when it is answered",
            ));
        }
        self.check_room(&label, count as usize)?;
        Ok(Collect {
            label,
            count,
            interval,
            skip_similar,
        })
    }

    /// `add_sample`: `image` (encoded) as a sample of `label`, cropped to the
    /// classifier's region first when `apply_region`.
    async fn add_sample(
        &mut self,
        label: &str,
        image: bytes::Bytes,
        apply_region: bool,
    ) -> Result<Value, RequestError> {
        let label = self.class_name(label)?;
        // The digest names what is stored: the image as sent, or the image and the
        // region it is cropped to.
        let region = apply_region.then_some(self.classifier.spec.region);
        let sha256 = super::samples::digest(&image, region.as_ref());
        let limits = self.limits();
        self.add_image(&label, Origin::Image, sha256, move || {
            let decoded = crate::imaging::decode::decode_image(&image, &limits)
                .map_err(|e| bad(e.to_string()))?;
            match region {
                Some(r) => super::samples::crop_to(&decoded, &r),
                None => Ok(decoded),
            }
        })
        .await
    }
}
