//! The head of a learner's classifier: restored at start when it fits the
//! backbone, the samples' embeddings loaded (or recomputed for a new backbone),
//! retrained on every stored sample after changes (debounced), saved, swapped in
//! for inference and described on the classifier's `head` topic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::Learner;
use crate::head;
use crate::homeassistant::Event;
use crate::imaging::decode::decode_image;
use crate::store::OpenReport;

impl Learner {
    /// Load the saved head if it fits the backbone, so predictions use it at once.
    /// Called before the daemon starts inference.
    pub fn restore_head(&mut self, report: &OpenReport) {
        match self.store.load_head() {
            Ok(Some(h)) if h.format != head::FORMAT => {
                tracing::info!(head = %h.id(), format = h.format, "the saved head was trained by another edgehead version; it will be retrained");
            }
            Ok(Some(h)) if h.backbone == *self.embedder().id() => {
                tracing::info!(head = %h.id(), classes = h.classes.len(), "restored the saved head");
                self.classifier.head.store(Some(Arc::new(h)));
            }
            Ok(Some(h)) => {
                tracing::info!(head = %h.id(), trained_on = %h.backbone, "the saved head belongs to another backbone; it will be retrained");
            }
            Ok(None) if report.samples > 0 => {
                tracing::info!("no saved head; training one from the stored samples");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the saved head; it will be retrained")
            }
        }
    }

    /// Whether the head in use does not match the stored samples (none while
    /// there are samples, other classes, another sample count).
    pub(super) fn head_is_stale(&self) -> bool {
        match &*self.classifier.head.load() {
            None => !self.store.is_empty(),
            Some(h) => {
                let classes: Vec<String> = self.store.classes().into_iter().map(|c| c.0).collect();
                h.classes != classes || h.quality.samples != self.embeddings.len()
            }
        }
    }

    /// Load or recompute the embeddings of every stored sample for this backbone.
    pub(super) async fn load_embeddings(&mut self) {
        let backbone = self.embedder().id().clone();
        let dim = self.embedder().dim();
        let mut missing = Vec::new();
        for s in self.store.samples() {
            match self.store.load_embedding(s.id, &backbone) {
                Some(v) if v.len() == dim => {
                    self.embeddings.insert(s.id, v);
                }
                _ => missing.push(s.id),
            }
        }
        if missing.is_empty() {
            return;
        }
        tracing::info!(
            samples = missing.len(),
            "re-embedding samples for this backbone"
        );
        let started = Instant::now();
        let mut done = 0;
        for id in missing {
            let thumb = match self.store.load_thumbnail(id) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(id, error = %e, "sample cannot be re-embedded: thumbnail missing");
                    continue;
                }
            };
            let embedder = self.embedder().clone();
            let limits = self.limits();
            let result = tokio::task::spawn_blocking(move || {
                let img = decode_image(&thumb, &limits).map_err(|e| e.to_string())?;
                embedder.embed(&img).map_err(|e| e.to_string())
            })
            .await;
            match result {
                Ok(Ok(e)) => {
                    if let Err(err) = self.store.save_embedding(id, &backbone, &e.features) {
                        tracing::warn!(id, error = %err, "cannot save the new embedding");
                    }
                    self.embeddings.insert(id, e.features);
                    done += 1;
                }
                Ok(Err(e)) => tracing::warn!(id, error = %e, "sample cannot be re-embedded"),
                Err(e) => tracing::error!(id, error = %e, "re-embedding panicked"),
            }
        }
        tracing::info!(
            samples = done,
            took_ms = started.elapsed().as_millis() as u64,
            "re-embedded"
        );
    }

    /// Train a head on every stored sample, save it and swap it in; without
    /// samples, drop the head.
    pub(super) async fn retrain(&mut self) {
        let classes: Vec<String> = self.store.classes().into_iter().map(|c| c.0).collect();
        let index: HashMap<&str, usize> = classes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i))
            .collect();
        let data: Vec<(Vec<f32>, usize)> = self
            .store
            .samples()
            .iter()
            .filter_map(|s| {
                let f = self.embeddings.get(&s.id)?;
                Some((f.clone(), *index.get(s.label.as_str())?))
            })
            .collect();
        if data.is_empty() {
            if self.classifier.head.load().is_some() {
                self.classifier.head.store(None);
                if let Err(e) = self.store.delete_head() {
                    tracing::warn!(error = %e, "cannot delete the saved head");
                }
                self.publish_head().await;
            }
            return;
        }
        // Versions only grow in a state directory, across restarts and resets.
        let version = self
            .classifier
            .head
            .load()
            .as_ref()
            .map(|h| h.version + 1)
            .unwrap_or(0)
            .max(self.store.next_head_version());
        let backbone = self.embedder().id().clone();
        let params = self.params.clone();
        let trained = tokio::task::spawn_blocking(move || {
            head::train(&head::samples(&data), &classes, &backbone, version, &params)
        })
        .await;
        let head = match trained {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "training failed; keeping the previous head");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "training panicked; keeping the previous head");
                return;
            }
        };
        if let Err(e) = self.store.save_head(&head) {
            tracing::error!(error = %e, "cannot save the head; it is used but will be retrained after a restart");
        }
        tracing::info!(
            head = %head.id(),
            classes = head.classes.len(),
            samples = head.quality.samples,
            loo_accuracy = head.quality.loo_accuracy.unwrap_or(f32::NAN),
            train_ms = head.quality.train_ms,
            "head retrained"
        );
        // The bridge hears of the classes before the head is swapped in (so its
        // options are announced before states use them), once.
        self.announce_classes(head.classes.clone()).await;
        self.classifier.head.store(Some(Arc::new(head)));
        self.shared
            .publisher
            .try_publish_head(&self.classifier.topics.head, &self.head_json());
    }

    /// The head's description: version, kind, classes, backbone, threshold,
    /// penalty, quality; `{"head": null}` without one.
    pub(super) fn head_json(&self) -> Value {
        match &*self.classifier.head.load() {
            None => json!({ "head": null, "samples": self.store.len() }),
            Some(h) => json!({
                "samples": self.store.len(),
                "head": h.id(),
                "version": h.version,
                "kind": h.kind,
                "classes": h.classes,
                "backbone": h.backbone.to_string(),
                "unknown_below": h.unknown_below,
                "l2": h.l2,
                "trained_at": h.trained_at,
                "quality": h.quality,
            }),
        }
    }

    /// Publish the head's description and tell the bridge its classes.
    pub(super) async fn publish_head(&self) {
        self.shared
            .publisher
            .try_publish_head(&self.classifier.topics.head, &self.head_json());
        let classes = self
            .classifier
            .head
            .load()
            .as_ref()
            .map(|h| h.classes.clone())
            .unwrap_or_default();
        self.announce_classes(classes).await;
    }

    /// Tell the Home Assistant bridge the head's classes (before the head is
    /// swapped in, so that its options are announced before states use them).
    async fn announce_classes(&self, classes: Vec<String>) {
        self.shared
            .notifier
            .notify_wait(Event::Head {
                classifier: self.classifier.name().to_string(),
                classes,
            })
            .await;
    }
}
