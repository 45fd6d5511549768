//! The learning task: answers teaching requests, keeps the sample store, retrains the
//! head (debounced) and swaps it in for inference.
//!
//! Requests arrive from the MQTT task through a bounded channel. Each is validated
//! before anything is stored; every failure is answered on the response topic and
//! leaves the store as it was. Changing requests are idempotent ([`replies`]): a
//! repeated `transaction`, or a QoS 1 redelivery, gets the first answer again; the
//! same image added to the same class again is not stored twice. `label_frame`
//! collects its frames in a task of its own, so short requests are answered while
//! it waits between frames.

pub mod labels;
mod recent;
pub mod replies;

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::Engine;
use image::RgbImage;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::backbone::Embedder;
use crate::classifier::{region, Classifier, ClassifierSpec};
use crate::config::LearnConfig;
use crate::head::{self, Head, TrainParams};
use crate::mqtt::payload::{response_error, response_ok};
use crate::mqtt::{Publisher, Request};
use crate::source::decode::{decode_image, ImageLimits};
use crate::source::{Frame, FrameRx};
use crate::store::{OpenReport, Origin, Store};
use replies::{Replies, Seen};

/// Operations that only read: every other operation changes the store or the
/// head and is idempotent by transaction.
pub const READ_ONLY_OPS: &[&str] = &[
    "classes",
    "samples",
    "head",
    "recent",
    "recent_image",
    "classifiers",
];

/// Operations understood on `<base>/request/<op>`.
pub const OPS: &[&str] = &[
    "add_sample",
    "label_frame",
    "classes",
    "samples",
    "remove_sample",
    "rename_class",
    "merge_class",
    "delete_class",
    "reset",
    "retrain",
    "head",
    "recent",
    "recent_image",
    "label_recent",
    "discard_recent",
    "classifiers",
    "select_label",
];

/// Most frames one `label_frame` request may take, and the longest spacing.
const MAX_FRAMES: u32 = 50;
const MAX_INTERVAL_MS: u64 = 10_000;
/// How long `label_frame` waits for a new frame.
const FRAME_WAIT: Duration = Duration::from_secs(5);

/// A request that cannot be carried out, with the reason the caller reads.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

pub(crate) fn bad(msg: impl Into<String>) -> RequestError {
    RequestError(msg.into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddSample {
    label: Option<String>,
    /// Base64 of a JPEG or PNG file.
    image: String,
    /// The image is a whole frame: crop it to the classifier's region first.
    #[serde(default)]
    apply_region: bool,
    #[serde(default)]
    #[allow(dead_code)]
    transaction: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelFrame {
    label: Option<String>,
    /// Take the label chosen with `select_label` (the dashboard's button).
    #[serde(default)]
    selected_label: bool,
    #[serde(default = "one")]
    count: u32,
    #[serde(default = "default_interval")]
    interval_ms: u64,
    #[serde(default)]
    #[allow(dead_code)]
    transaction: Option<Value>,
}

fn one() -> u32 {
    1
}

fn default_interval() -> u64 {
    500
}

/// The JSON body of a request; an empty payload is an empty object.
fn body(payload: &[u8]) -> Result<Value, RequestError> {
    if payload.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(json!({}));
    }
    let v: Value = serde_json::from_slice(payload)
        .map_err(|e| bad(format!("the payload is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(bad("the payload must be a JSON object"));
    }
    Ok(v)
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a str, RequestError> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("the payload needs a string field \"{key}\"")))
}

fn only_fields(v: &Value, allowed: &[&str]) -> Result<(), RequestError> {
    if let Some(obj) = v.as_object() {
        if let Some(k) = obj
            .keys()
            .find(|k| *k != "transaction" && !allowed.contains(&k.as_str()))
        {
            return Err(bad(format!("unknown field \"{k}\"")));
        }
    }
    Ok(())
}

/// A decoded sample image, shrunk to the stored thumbnail.
pub struct Prepared {
    pub image: RgbImage,
    pub jpeg: Vec<u8>,
}

/// Shrink so the short side is at most `side`, and encode as JPEG.
pub fn thumbnail(img: RgbImage, side: u32) -> Result<Prepared, RequestError> {
    let (w, h) = img.dimensions();
    let short = w.min(h);
    let image = if short > side {
        let scale = side as f64 / short as f64;
        let (nw, nh) = (
            ((w as f64 * scale).round() as u32).max(1),
            ((h as f64 * scale).round() as u32).max(1),
        );
        image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Triangle)
    } else {
        img
    };
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(Cursor::new(&mut jpeg), 90)
        .encode_image(&image)
        .map_err(|e| bad(format!("cannot encode the thumbnail: {e}")))?;
    Ok(Prepared { image, jpeg })
}

/// The learning task of one classifier: its requests, its store, its head.
pub struct Learner {
    pub requests_rx: mpsc::Receiver<Request>,
    pub store: Store,
    pub embedder: Arc<dyn Embedder>,
    /// The classifier taught here, and its index (for the publisher).
    pub classifier: Classifier,
    pub index: usize,
    /// Every classifier, for the `classifiers` request.
    pub all: Arc<Vec<Arc<ClassifierSpec>>>,
    pub head: Arc<ArcSwapOption<Head>>,
    pub frames: FrameRx,
    pub publisher: Publisher,
    pub params: TrainParams,
    pub config: LearnConfig,
    /// Embeddings of the stored samples for the current backbone, by sample id.
    embeddings: HashMap<u64, Vec<f32>>,
    retrain_at: Option<tokio::time::Instant>,
    /// Answers to recent changing requests, for repeats.
    replies: Replies,
    /// The `label_frame` request collecting frames now, if any.
    collecting: Option<Collecting>,
    /// The label chosen with `select_label` (kept across restarts by the Home
    /// Assistant bridge, [`crate::homeassistant::Saved`]).
    teach_label: Option<String>,
}

/// A `label_frame` in progress: its frames arrive one by one from a collector task,
/// each is embedded and stored as it comes, and the answer goes out at the end.
struct Collecting {
    op: String,
    reply: String,
    transaction: Option<Value>,
    key: String,
    label: String,
    want: u32,
    ids: Vec<u64>,
    frames_rx: mpsc::Receiver<Result<Arc<Frame>, RequestError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Learner {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        requests_rx: mpsc::Receiver<Request>,
        store: Store,
        embedder: Arc<dyn Embedder>,
        (classifier, index, all): (Classifier, usize, Arc<Vec<Arc<ClassifierSpec>>>),
        frames: FrameRx,
        publisher: Publisher,
        params: TrainParams,
        config: LearnConfig,
    ) -> Self {
        Self {
            requests_rx,
            store,
            embedder,
            head: classifier.head.clone(),
            classifier,
            index,
            all,
            frames,
            publisher,
            params,
            embeddings: HashMap::new(),
            retrain_at: None,
            replies: Replies::new(Duration::from_secs(config.idempotency_window_secs)),
            collecting: None,
            teach_label: None,
            config,
        }
    }

    fn limits(&self) -> ImageLimits {
        ImageLimits::from_config(&self.config)
    }

    /// Load the saved head if it fits the backbone, so predictions use it at once.
    /// Called before the daemon starts inference.
    pub fn restore_head(&mut self, report: &OpenReport) {
        match self.store.load_head() {
            Ok(Some(h)) if h.format != crate::head::FORMAT => {
                tracing::info!(head = %h.id(), format = h.format, "the saved head was trained by another edgehead version; it will be retrained");
            }
            Ok(Some(h)) if h.backbone == *self.embedder.id() => {
                tracing::info!(head = %h.id(), classes = h.classes.len(), "restored the saved head");
                self.head.store(Some(Arc::new(h)));
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

    /// Load or recompute the embeddings of every stored sample for this backbone.
    async fn load_embeddings(&mut self) {
        let backbone = self.embedder.id().clone();
        let mut missing = Vec::new();
        for s in self.store.samples() {
            match self.store.load_embedding(s.id, &backbone) {
                Some(v) if v.len() == self.embedder.dim() => {
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
            let embedder = self.embedder.clone();
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

    /// Serve requests until the request channel closes.
    pub async fn run(mut self) {
        self.load_embeddings().await;
        let stale = match &*self.head.load() {
            None => !self.store.is_empty(),
            Some(h) => {
                let classes: Vec<String> = self.store.classes().into_iter().map(|c| c.0).collect();
                h.classes != classes || h.quality.samples != self.embeddings.len()
            }
        };
        if stale {
            self.retrain().await;
        }
        self.publish_head().await;
        loop {
            let deadline = self.retrain_at;
            let collecting = self.collecting.is_some();
            tokio::select! {
                request = self.requests_rx.recv() => match request {
                    Some(r) => self.handle(r).await,
                    None => break,
                },
                frame = async {
                    match self.collecting.as_mut() {
                        Some(c) => c.frames_rx.recv().await,
                        None => std::future::pending().await,
                    }
                }, if collecting => self.collected(frame).await,
                _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => {
                    self.retrain_at = None;
                    self.retrain().await;
                }
            }
        }
        if let Some(c) = self.collecting.take() {
            c.task.abort();
            let (op, reply, transaction, key) = (
                c.op.clone(),
                c.reply.clone(),
                c.transaction.clone(),
                c.key.clone(),
            );
            let answer = response_error(
                &format!(
                    "shutting down; stored {} of {} frames: {:?}",
                    c.ids.len(),
                    c.want,
                    c.ids
                ),
                transaction.as_ref(),
            );
            self.answer(&reply, &op, &key, &answer);
        }
        if self.retrain_at.is_some() {
            self.retrain().await;
        }
    }

    async fn handle(&mut self, r: Request) {
        let transaction = r.transaction();
        if transaction
            .as_ref()
            .is_some_and(|t| t.to_string().len() > replies::MAX_TRANSACTION_BYTES)
        {
            self.publisher.stats_request_failed();
            let msg = format!(
                "\"transaction\" is longer than {} bytes",
                replies::MAX_TRANSACTION_BYTES
            );
            self.publisher
                .try_respond(&r.reply, &r.op, &response_error(&msg, None));
            return;
        }
        let changing = OPS.contains(&r.op.as_str()) && !READ_ONLY_OPS.contains(&r.op.as_str());
        let topic = match &r.arg {
            Some(a) => format!("{}/{a}", r.op),
            None => r.op.clone(),
        };
        let key = replies::key(&r.op, transaction.as_ref(), &topic, &r.payload);
        if changing && (transaction.is_some() || r.dup) {
            match self.replies.check(&key, std::time::Instant::now()) {
                Seen::New => {}
                Seen::Pending => {
                    tracing::info!(op = %r.op, dup = r.dup, "repeated request is still being carried out; its answer follows");
                    return;
                }
                Seen::Answered(first) => {
                    tracing::info!(op = %r.op, dup = r.dup, "repeated request: answering with the first answer");
                    self.publisher.try_respond(&r.reply, &r.op, &first);
                    return;
                }
            }
        }
        let result = self.dispatch(&r, &key).await;
        let reply = match result {
            Ok(None) => return, // answered when the frames are in (label_frame)
            Ok(Some(data)) => response_ok(data, transaction.as_ref()),
            Err(e) => {
                self.publisher.stats_request_failed();
                tracing::info!(op = %r.op, error = %e, "request refused");
                response_error(&e.0, transaction.as_ref())
            }
        };
        if changing {
            self.answer(&r.reply, &r.op, &key, &reply);
        } else {
            self.publisher.try_respond(&r.reply, &r.op, &reply);
        }
    }

    /// Publish the answer to a changing request; remember it for repeats when it
    /// succeeded (a refusal changed nothing and may be retried).
    fn answer(&mut self, reply_to: &str, op: &str, key: &str, reply: &Value) {
        if reply["status"] == "ok" {
            self.replies.finish(key, reply, std::time::Instant::now());
        } else {
            self.replies.forget(key);
        }
        self.publisher.try_respond(reply_to, op, reply);
        self.publisher.notify(crate::homeassistant::Event::Result {
            classifier: self.index,
            op: op.to_string(),
            reply: reply.clone(),
        });
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

    /// The class `label` names: normalized, and spelled like the existing class it
    /// matches without regard to case.
    fn class_name(&self, label: &str) -> Result<String, RequestError> {
        let label = labels::normalize(label)?;
        let classes = self.store.classes();
        Ok(
            labels::existing(&label, classes.iter().map(|c| c.0.as_str()))
                .map(str::to_string)
                .unwrap_or(label),
        )
    }

    /// The existing class `label` names (any case, any normalization form).
    fn find_class(&self, label: &str) -> Result<String, RequestError> {
        let classes = self.store.classes();
        labels::existing(label, classes.iter().map(|c| c.0.as_str()))
            .map(str::to_string)
            .ok_or_else(|| bad(format!("there is no class \"{label}\"")))
    }

    /// Carry out one request. `Ok(None)`: the answer is sent later (`label_frame`).
    async fn dispatch(&mut self, r: &Request, key: &str) -> Result<Option<Value>, RequestError> {
        // Only the teaching operations take a label as a further topic level.
        if let Some(arg) = &r.arg {
            if OPS.contains(&r.op.as_str())
                && !matches!(r.op.as_str(), "add_sample" | "label_frame")
            {
                return Err(bad(format!(
                    "{} takes no further topic level (got \"{arg}\")",
                    r.op
                )));
            }
        }
        let data = match r.op.as_str() {
            "add_sample" => self.add_sample(r).await?,
            "label_frame" => return self.label_frame(r, key).map(|()| None),
            "classes" => {
                only_fields(&body(&r.payload)?, &[])?;
                self.classes_json()
            }
            "samples" => {
                let b = body(&r.payload)?;
                only_fields(&b, &["label"])?;
                let label = match b.get("label") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(l)) => Some(self.find_class(l)?),
                    Some(_) => return Err(bad("\"label\" must be a string")),
                };
                let list: Vec<_> = self
                    .store
                    .samples()
                    .iter()
                    .filter(|s| label.as_ref().is_none_or(|l| s.label == *l))
                    .collect();
                json!({ "samples": list })
            }
            "remove_sample" => {
                let b = body(&r.payload)?;
                only_fields(&b, &["id", "last"])?;
                let id = match (b.get("id"), b.get("last")) {
                    (Some(id), None) => id
                        .as_u64()
                        .ok_or_else(|| bad("\"id\" must be a sample id (a number)"))?,
                    (None, Some(Value::Bool(true))) => {
                        // Ids only grow: the newest sample has the largest.
                        self.store
                            .samples()
                            .iter()
                            .map(|s| s.id)
                            .max()
                            .ok_or_else(|| bad("there is no sample to remove"))?
                    }
                    _ => {
                        return Err(bad(
                            "the payload needs \"id\" (a sample id) or \"last\": true (the newest sample)",
                        ))
                    }
                };
                if !self.store.remove(id).map_err(|e| bad(e.to_string()))? {
                    return Err(bad(format!("there is no sample {id}")));
                }
                self.embeddings.remove(&id);
                self.schedule_retrain();
                json!({ "removed": id, "classes": self.classes_json()["classes"] })
            }
            "rename_class" | "merge_class" => {
                self.not_collecting()?;
                let merge = r.op == "merge_class";
                let b = body(&r.payload)?;
                let to_key = if merge { "into" } else { "to" };
                only_fields(&b, &["from", to_key])?;
                let from = self.find_class(field(&b, "from")?)?;
                let to = labels::normalize(field(&b, to_key)?)?;
                let classes = self.store.classes();
                // The class `to` names, other than `from` itself (a rename may only
                // change the spelling: cat → Cat).
                let target = labels::existing(
                    &to,
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
                    (false, None) => to,
                };
                let n = self
                    .store
                    .relabel(&from, &to)
                    .map_err(|e| bad(e.to_string()))?;
                self.schedule_retrain();
                // The dashboard's teach label follows its class.
                if self.teach_label.as_deref() == Some(from.as_str()) {
                    self.teach_label = Some(to.clone());
                    self.publisher
                        .notify_wait(crate::homeassistant::Event::TeachLabel {
                            classifier: self.index,
                            label: to.clone(),
                        })
                        .await;
                }
                json!({ "moved": n, "classes": self.classes_json()["classes"] })
            }
            "delete_class" => {
                self.not_collecting()?;
                let b = body(&r.payload)?;
                only_fields(&b, &["label"])?;
                let label = self.find_class(field(&b, "label")?)?;
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
                before.iter().for_each(|id| {
                    self.embeddings.remove(id);
                });
                self.schedule_retrain();
                json!({ "deleted": n, "classes": self.classes_json()["classes"] })
            }
            "reset" => {
                let b = body(&r.payload)?;
                only_fields(&b, &["confirm"])?;
                if b.get("confirm") != Some(&Value::Bool(true)) {
                    return Err(bad(
                        "reset deletes every sample and the head: send {\"confirm\": true}",
                    ));
                }
                self.not_collecting()?;
                let n = self.store.reset().map_err(|e| bad(e.to_string()))?;
                self.embeddings.clear();
                self.retrain_at = None;
                self.head.store(None);
                self.publish_head().await;
                json!({ "deleted": n })
            }
            "retrain" => {
                only_fields(&body(&r.payload)?, &[])?;
                self.retrain_at = None;
                self.retrain().await;
                self.head_json()
            }
            "head" => {
                only_fields(&body(&r.payload)?, &[])?;
                self.head_json()
            }
            "recent" => self.recent_list(&body(&r.payload)?)?,
            "recent_image" => self.recent_image(&body(&r.payload)?)?,
            "label_recent" => self.label_recent(&body(&r.payload)?).await?,
            "discard_recent" => self.discard_recent(&body(&r.payload)?)?,
            "select_label" => {
                // A plain-text label (Home Assistant's select and text entities
                // send the option as it is) or {"label": "..."}.
                let label = if r.payload.first() == Some(&b'{') {
                    let b = body(&r.payload)?;
                    only_fields(&b, &["label", "transaction"])?;
                    field(&b, "label")?.to_string()
                } else {
                    std::str::from_utf8(&r.payload)
                        .map_err(|_| bad("the label is not UTF-8"))?
                        .trim()
                        .to_string()
                };
                let label = self.class_name(&label)?;
                self.teach_label = Some(label.clone());
                self.publisher
                    .notify_wait(crate::homeassistant::Event::TeachLabel {
                        classifier: self.index,
                        label: label.clone(),
                    })
                    .await;
                let exists = self.store.classes().iter().any(|c| c.0 == label);
                json!({ "label": label, "new_class": !exists })
            }
            "classifiers" => {
                only_fields(&body(&r.payload)?, &[])?;
                json!({ "classifiers": self.all.iter().map(|c| c.describe()).collect::<Vec<_>>() })
            }
            other => {
                return Err(bad(format!(
                    "unknown operation \"{other}\"; known: {}",
                    OPS.join(", ")
                )))
            }
        };
        Ok(Some(data))
    }

    fn classes_json(&self) -> Value {
        let classes: Vec<Value> = self
            .store
            .classes()
            .into_iter()
            .map(|(label, n)| json!({ "label": label, "samples": n }))
            .collect();
        json!({ "classes": classes, "samples": self.store.len() })
    }

    fn head_json(&self) -> Value {
        match &*self.head.load() {
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

    async fn publish_head(&self) {
        self.publisher
            .try_publish_head(self.index, &self.head_json());
        let classes = self
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
        self.publisher
            .notify_wait(crate::homeassistant::Event::Head {
                classifier: self.index,
                classes,
            })
            .await;
    }

    /// Start with the label the dashboard chose before the restart.
    pub fn set_teach_label(&mut self, label: Option<String>) {
        self.teach_label = label;
    }

    fn schedule_retrain(&mut self) {
        self.retrain_at =
            Some(tokio::time::Instant::now() + Duration::from_millis(self.config.debounce_ms));
    }

    /// Check that a sample of `label` may be added.
    fn check_room(&self, label: &str, adding: usize) -> Result<(), RequestError> {
        if self.store.len() + adding > self.config.max_samples {
            return Err(bad(format!(
                "the store holds {} samples, the limit (learn.max_samples) is {}",
                self.store.len(),
                self.config.max_samples
            )));
        }
        let classes = self.store.classes();
        if !classes.iter().any(|c| c.0 == label) && classes.len() >= self.config.max_classes {
            return Err(bad(format!(
                "there are already {} classes, the limit (learn.max_classes)",
                classes.len()
            )));
        }
        Ok(())
    }

    async fn add_sample(&mut self, r: &Request) -> Result<Value, RequestError> {
        let max_bytes = self.config.max_image_bytes;
        let mut apply_region = false;
        let (label, bytes) = if r.payload.first() == Some(&b'{') {
            let req: AddSample = serde_json::from_slice(&r.payload)
                .map_err(|e| bad(format!("bad add_sample request: {e}")))?;
            let label = one_label(req.label, r.arg.as_deref())?
                .or_else(|| r.arg.clone())
                .ok_or_else(|| {
                    bad("no label: put it in the topic (add_sample/<label>) or in \"label\"")
                })?;
            if req.image.len() > max_bytes / 3 * 4 + 4 {
                return Err(bad(format!(
                    "the image is larger than {max_bytes} bytes (learn.max_image_bytes)"
                )));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(req.image.trim())
                .map_err(|e| bad(format!("\"image\" is not base64: {e}")))?;
            apply_region = req.apply_region;
            (label, bytes)
        } else {
            let label = r
                .arg
                .clone()
                .ok_or_else(|| bad("no label: publish the image to add_sample/<label>"))?;
            (label, r.payload.to_vec())
        };
        let label = self.class_name(&label)?;
        if bytes.len() > max_bytes {
            return Err(bad(format!(
                "the image is {} bytes, the limit (learn.max_image_bytes) is {max_bytes}",
                bytes.len()
            )));
        }
        if bytes.is_empty() {
            return Err(bad("the image is empty"));
        }
        // The digest names what is stored: the image as sent, or the image and the
        // region it is cropped to.
        let sha256 = if apply_region {
            let mut h = Sha256::new();
            h.update(&bytes);
            h.update(serde_json::to_vec(&self.classifier.spec.region).unwrap_or_default());
            format!("{:x}", h.finalize())
        } else {
            format!("{:x}", Sha256::digest(&bytes))
        };
        let limits = self.limits();
        let region = apply_region.then_some(self.classifier.spec.region);
        self.add_image(&label, Origin::Image, sha256, move || {
            let image = decode_image(&bytes, &limits).map_err(|e| bad(e.to_string()))?;
            match region {
                Some(r) => crop_to(&image, &r),
                None => Ok(image),
            }
        })
        .await
    }

    /// Store an image as a sample of `label` (`add_sample`, `label_recent`): the
    /// sample that has the same digest in that class is answered `duplicate`;
    /// otherwise the limits are checked, the image made by `image` is embedded and
    /// stored, and a retrain scheduled. The answer: `id`, `label`, `class_samples`,
    /// and `duplicate: true` or `retrain_in_ms`.
    async fn add_image(
        &mut self,
        label: &str,
        origin: Origin,
        sha256: String,
        image: impl FnOnce() -> Result<RgbImage, RequestError> + Send + 'static,
    ) -> Result<Value, RequestError> {
        if let Some(existing) = self.store.find_image(label, &sha256) {
            return Ok(json!({
                "id": existing.id,
                "label": label,
                "class_samples": self.class_count(label),
                "duplicate": true,
            }));
        }
        self.check_room(label, 1)?;
        let (prepared, features) = self.embed_sample(image).await?;
        let id = self.store_sample(label, origin, &prepared.jpeg, features, Some(sha256))?;
        Ok(json!({
            "id": id,
            "label": label,
            "class_samples": self.class_count(label),
            "retrain_in_ms": self.config.debounce_ms,
        }))
    }

    /// On the blocking pool: get the image, shrink it to the stored thumbnail and
    /// embed that (the thumbnail is what a new backbone will re-embed).
    async fn embed_sample(
        &self,
        image: impl FnOnce() -> Result<RgbImage, RequestError> + Send + 'static,
    ) -> Result<(Prepared, Vec<f32>), RequestError> {
        let side = self.config.thumbnail_side;
        let embedder = self.embedder.clone();
        tokio::task::spawn_blocking(move || {
            let prepared = thumbnail(image()?, side)?;
            let e = embedder
                .embed(&prepared.image)
                .map_err(|e| bad(e.to_string()))?;
            Ok((prepared, e.features))
        })
        .await
        .map_err(|e| bad(format!("internal error: {e}")))?
    }

    fn store_sample(
        &mut self,
        label: &str,
        origin: Origin,
        jpeg: &[u8],
        features: Vec<f32>,
        sha256: Option<String>,
    ) -> Result<u64, RequestError> {
        let meta = self
            .store
            .add(label, origin, jpeg, self.embedder.id(), &features, sha256)
            .map_err(|e| {
                if crate::store::is_disk_full(&e) {
                    self.publisher.set_disk_full(true);
                    bad(format!("the disk is full: cannot store the sample ({e}); delete samples or free space"))
                } else {
                    bad(format!("cannot store the sample: {e}"))
                }
            })?;
        self.publisher.set_disk_full(false);
        self.embeddings.insert(meta.id, features);
        self.schedule_retrain();
        Ok(meta.id)
    }

    /// The job that crops a frame to this classifier's region (for `label_frame`).
    fn region_of(
        &self,
        frame: Arc<Frame>,
    ) -> impl FnOnce() -> Result<RgbImage, RequestError> + Send + 'static {
        let r = self.classifier.spec.region;
        move || crop_to(&frame.image, &r)
    }

    fn class_count(&self, label: &str) -> usize {
        self.store
            .samples()
            .iter()
            .filter(|s| s.label == label)
            .count()
    }

    /// Validate a `label_frame` request and start collecting its frames; the
    /// answer is sent by [`Learner::collected`] once the last frame is stored.
    fn label_frame(&mut self, r: &Request, key: &str) -> Result<(), RequestError> {
        let req: LabelFrame = if r.payload.iter().all(|b| b.is_ascii_whitespace()) {
            LabelFrame {
                label: None,
                selected_label: false,
                count: 1,
                interval_ms: default_interval(),
                transaction: None,
            }
        } else {
            serde_json::from_slice(&r.payload)
                .map_err(|e| bad(format!("bad label_frame request: {e}")))?
        };
        let label = one_label(req.label, r.arg.as_deref())?.or_else(|| r.arg.clone());
        let label = match (label, req.selected_label) {
            (Some(_), true) => {
                return Err(bad(
                    "give a label or \"selected_label\": true, not both",
                ))
            }
            (Some(l), false) => l,
            (None, true) => self.teach_label.clone().ok_or_else(|| {
                bad("no label is selected: choose one with select_label (Home Assistant: \"Teach label\" or \"New label\")")
            })?,
            (None, false) => {
                return Err(bad(
                    "no label: put it in the topic (label_frame/<label>), in \"label\", or send \"selected_label\": true",
                ))
            }
        };
        let label = self.class_name(&label)?;
        if req.count == 0 || req.count > MAX_FRAMES {
            return Err(bad(format!("count must be 1 to {MAX_FRAMES}")));
        }
        if req.interval_ms > MAX_INTERVAL_MS {
            return Err(bad(format!(
                "interval_ms must be at most {MAX_INTERVAL_MS}"
            )));
        }
        if self.collecting.is_some() {
            return Err(bad(
                "busy: another label_frame request is collecting frames; try again when it is answered",
            ));
        }
        self.check_room(&label, req.count as usize)?;
        // One frame in flight: the collector waits until the learner has taken it,
        // so memory stays at one frame whatever `count` is.
        let (frames_tx, frames_rx) = mpsc::channel(1);
        let task = tokio::spawn(collect_frames(
            self.frames.clone(),
            req.count,
            Duration::from_millis(req.interval_ms),
            frames_tx,
        ));
        self.replies.start(key, std::time::Instant::now());
        self.collecting = Some(Collecting {
            op: r.op.clone(),
            reply: r.reply.clone(),
            transaction: r.transaction(),
            key: key.to_string(),
            label,
            want: req.count,
            ids: Vec::new(),
            frames_rx,
            task,
        });
        Ok(())
    }

    /// One frame (or the end, or an error) from the `label_frame` collector.
    async fn collected(&mut self, frame: Option<Result<Arc<Frame>, RequestError>>) {
        let Some(c) = self.collecting.as_ref() else {
            return;
        };
        let label = c.label.clone();
        let outcome = match frame {
            Some(Ok(frame)) => {
                let stored = match self.check_room(&label, 1) {
                    Ok(()) => match self.embed_sample(self.region_of(frame)).await {
                        Ok((prepared, features)) => {
                            self.store_sample(&label, Origin::Frame, &prepared.jpeg, features, None)
                        }
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                match stored {
                    Ok(id) => {
                        let c = self.collecting.as_mut().expect("checked above");
                        c.ids.push(id);
                        if c.ids.len() < c.want as usize {
                            return;
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Some(Err(e)) => Err(e),
            None => Err(bad("the frame collector stopped")),
        };
        let Some(c) = self.collecting.take() else {
            return;
        };
        c.task.abort();
        let reply = match outcome {
            Ok(()) => response_ok(
                json!({
                    "ids": c.ids,
                    "label": c.label,
                    "class_samples": self.class_count(&c.label),
                    "retrain_in_ms": self.config.debounce_ms,
                }),
                c.transaction.as_ref(),
            ),
            Err(e) => {
                self.publisher.stats_request_failed();
                tracing::info!(op = %c.op, error = %e, stored = c.ids.len(), "label_frame ended early");
                let msg = if c.ids.is_empty() {
                    e.0
                } else {
                    format!(
                        "{}; {} of {} frames were stored: {:?}",
                        e.0,
                        c.ids.len(),
                        c.want,
                        c.ids
                    )
                };
                response_error(&msg, c.transaction.as_ref())
            }
        };
        self.answer(&c.reply, &c.op, &c.key, &reply);
    }

    /// Train a head on every stored sample, save it and swap it in.
    async fn retrain(&mut self) {
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
            if self.head.load().is_some() {
                self.head.store(None);
                if let Err(e) = self.store.delete_head() {
                    tracing::warn!(error = %e, "cannot delete the saved head");
                }
                self.publish_head().await;
            }
            return;
        }
        // Versions only grow in a state directory, across restarts and resets.
        let version = self
            .head
            .load()
            .as_ref()
            .map(|h| h.version + 1)
            .unwrap_or(0)
            .max(self.store.next_head_version());
        let backbone = self.embedder.id().clone();
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
        self.head.store(Some(Arc::new(head)));
        self.publisher
            .try_publish_head(self.index, &self.head_json());
    }
}

/// The label of the payload, refused when the topic names another one.
fn one_label(payload: Option<String>, topic: Option<&str>) -> Result<Option<String>, RequestError> {
    match (payload, topic) {
        (Some(p), Some(t)) if !labels::same(&p, t) => Err(bad(format!(
            "the topic names the label \"{t}\" and the payload \"{p}\": give one"
        ))),
        (p, _) => Ok(p),
    }
}

/// `image` cropped to `region`; an error when a pixel region does not fit it.
fn crop_to(image: &RgbImage, region: &region::RegionConfig) -> Result<RgbImage, RequestError> {
    let (w, h) = image.dimensions();
    let rect = region
        .rect(w, h)
        .map_err(|e| bad(format!("cannot apply the classifier's region: {e}")))?;
    Ok(region::crop(image, rect))
}

/// Take `count` new frames from the source, `interval` apart, and hand each to the
/// learner; ends early with the error when no new frame comes within 5 s.
async fn collect_frames(
    mut frames: FrameRx,
    count: u32,
    interval: Duration,
    frames_tx: mpsc::Sender<Result<Arc<Frame>, RequestError>>,
) {
    let mut last_seq = frames.borrow().as_ref().map(|f| f.seq).unwrap_or(0);
    // The first frame may be the current one, if there is one.
    last_seq = last_seq.saturating_sub(1);
    for i in 0..count {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        let frame = match tokio::time::timeout(
            FRAME_WAIT,
            frames.wait_for(|f| f.as_ref().is_some_and(|f| f.seq > last_seq)),
        )
        .await
        {
            Err(_) => Err(bad("no new frame from the source within 5 s")),
            Ok(Err(_)) => Err(bad("the frame source has stopped")),
            Ok(Ok(f)) => f.clone().ok_or_else(|| bad("no frame from the source yet")),
        };
        let failed = frame.is_err();
        if let Ok(f) = &frame {
            last_seq = f.seq;
        }
        if frames_tx.send(frame).await.is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_are_json_objects_with_known_fields() {
        assert_eq!(body(b"").expect("empty"), json!({}));
        assert!(body(b"[1,2]").is_err());
        assert!(body(b"{oops").is_err());
        let v = body(br#"{"id": 3, "transaction": "t"}"#).expect("json");
        assert!(only_fields(&v, &["id"]).is_ok());
        assert!(only_fields(&v, &["label"]).is_err());
    }

    #[test]
    fn a_label_in_the_topic_and_another_in_the_payload_is_refused() {
        assert_eq!(
            one_label(Some("Cat".into()), Some("cat")),
            Ok(Some("Cat".into()))
        );
        assert_eq!(one_label(None, Some("cat")), Ok(None));
        assert!(one_label(Some("dog".into()), Some("cat")).is_err());
    }

    #[test]
    fn thumbnails_shrink_to_the_short_side() {
        let img = RgbImage::from_pixel(1000, 500, image::Rgb([1, 2, 3]));
        let p = thumbnail(img, 320).expect("thumb");
        assert_eq!(p.image.dimensions(), (640, 320));
        assert_eq!(&p.jpeg[..2], &[0xFF, 0xD8]);
        let small = RgbImage::from_pixel(100, 50, image::Rgb([1, 2, 3]));
        assert_eq!(
            thumbnail(small, 320).expect("thumb").image.dimensions(),
            (100, 50)
        );
    }
}
