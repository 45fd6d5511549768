//! The learning task of each classifier: answers teaching requests, keeps the
//! sample store, retrains the head (debounced) and swaps it in for inference.
//!
//! Requests arrive through a bounded channel from a [`Router`] (MQTT's
//! connection task, the console's HTTP handlers). Each is parsed into an
//! [`ops::Envelope`] before anything is stored, then applied ([`apply`]); every
//! failure is answered and leaves the store as it was. Changing requests are
//! idempotent ([`replies`]): a repeated `transaction`, or a QoS 1 redelivery,
//! gets the first answer again; the same image added to the same class again is
//! not stored twice. `label_frame` collects its frames in a task of its own
//! ([`samples`]), so short requests are answered while it waits between frames.
//!
//! - [`ops`]: the typed operations and their parsing; [`apply`]: carrying them
//!   out; [`samples`]: adding samples; [`train`]: the head; [`recent`]: recent
//!   crops; [`replies`]: idempotency; [`router`]: who gets a request.

pub mod apply;
pub mod ops;
mod query;
mod recent;
pub mod replies;
pub mod router;
pub mod samples;
#[cfg(test)]
mod tests;
pub mod train;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::answer;
use crate::backbone::Embedder;
use crate::classifier::Classifier;
use crate::config::LearnConfig;
use crate::head::TrainParams;
use crate::homeassistant::{Event, Notifier};
use crate::imaging::decode::ImageLimits;
use crate::mqtt::{Incoming, Publisher};
use crate::source::FrameRx;
use crate::stats::Stats;
use crate::store::Store;
pub use ops::{bad, Envelope, Op, OpKind, RequestError};
use replies::{Replies, Seen};
pub use router::Router;
use samples::Collecting;

/// A request on its way to a learner: what came in, and where the answer goes.
#[derive(Debug)]
pub struct Request {
    pub input: Input,
    pub reply: ReplyTo,
}

/// What came in: a request as it arrived (MQTT or HTTP), parsed by the learner
/// ([`ops::parse`]), or an envelope parsed already.
#[derive(Debug)]
pub enum Input {
    Raw(Raw),
    /// Boxed: an envelope is several times the size of a raw request.
    Parsed(Box<Envelope>),
}

/// A request as it arrived, not parsed yet.
#[derive(Debug, Clone)]
pub struct Raw {
    pub op: String,
    /// Further levels after the operation (`add_sample/<label>`).
    pub arg: Option<String>,
    pub payload: bytes::Bytes,
    /// MQTT's DUP flag: a possible redelivery.
    pub dup: bool,
}

impl Input {
    /// The operation's name as requested, and the parsed envelope or why it was
    /// refused.
    pub fn parse(self, limits: &ops::Limits) -> (String, Result<Envelope, ops::Refusal>) {
        match self {
            Input::Raw(m) => {
                let parsed = ops::parse(&m.op, m.arg.as_deref(), &m.payload, m.dup, limits);
                (m.op, parsed)
            }
            Input::Parsed(e) => (e.op.kind().name().to_string(), Ok(*e)),
        }
    }
}

impl From<Incoming> for Raw {
    fn from(m: Incoming) -> Self {
        Self {
            op: m.op,
            arg: m.arg,
            payload: m.payload,
            dup: m.dup,
        }
    }
}

/// Where a request's answer goes.
#[derive(Debug)]
pub enum ReplyTo {
    /// Published on `<base>/<op>` (MQTT: `<base>` is `.../response`).
    Topic { base: String, op: String },
    /// Handed to the HTTP handler waiting for it.
    Channel(oneshot::Sender<Value>),
}

/// What a learner is built from, besides its classifier and store.
#[derive(Clone)]
pub struct Shared {
    pub embedder: Arc<dyn Embedder>,
    pub frames: FrameRx,
    pub publisher: Publisher,
    pub notifier: Notifier,
    pub stats: Arc<Stats>,
    pub config: LearnConfig,
}

/// The learning task of one classifier: its requests, its store, its head.
pub struct Learner {
    requests_rx: mpsc::Receiver<Request>,
    store: Store,
    /// The classifier taught here.
    classifier: Classifier,
    shared: Shared,
    params: TrainParams,
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
    /// Why the last `select_label` was refused, when it was: the selection was
    /// dropped with it, so that "Teach" cannot store a frame under the class
    /// chosen before (the user meant another).
    teach_refused: Option<String>,
    /// Retrain at start even when the saved head matches the samples (its
    /// settings changed).
    retrain_at_start: bool,
}

impl Learner {
    /// The learner of `classifier`, serving `requests_rx`.
    pub fn new(
        requests_rx: mpsc::Receiver<Request>,
        store: Store,
        classifier: Classifier,
        shared: Shared,
    ) -> Self {
        let params =
            TrainParams::from_config(&classifier.spec.head, classifier.spec.unknown_threshold);
        Self {
            requests_rx,
            store,
            classifier,
            params,
            embeddings: HashMap::new(),
            retrain_at: None,
            replies: Replies::new(Duration::from_secs(shared.config.idempotency_window_secs)),
            collecting: None,
            teach_label: None,
            teach_refused: None,
            retrain_at_start: false,
            shared,
        }
    }

    fn limits(&self) -> ImageLimits {
        ImageLimits::from_config(&self.shared.config)
    }

    fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.shared.embedder
    }

    /// Retrain at start whatever the saved head (its settings changed).
    pub fn retrain_at_start(&mut self) {
        self.retrain_at_start = true;
    }

    /// Start with the label the dashboard chose before the restart.
    pub fn set_teach_label(&mut self, label: Option<String>) {
        self.teach_label = label;
    }

    /// Serve requests until the request channel closes; returns the teach label,
    /// for the learner that takes over (a classifier edited or renamed at run time).
    pub async fn run(mut self) -> Option<String> {
        self.load_embeddings().await;
        if self.retrain_at_start || self.head_is_stale() {
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
        self.stop_collecting();
        if self.retrain_at.is_some() {
            self.retrain().await;
        }
        self.teach_label
    }

    /// Parse, check for a repeat, apply and answer one request.
    async fn handle(&mut self, r: Request) {
        let limits = ops::Limits {
            max_image_bytes: self.shared.config.max_image_bytes,
        };
        let (op_name, parsed) = r.input.parse(&limits);
        let envelope = match parsed {
            Ok(e) => e,
            Err(refusal) => {
                self.refused(&op_name, &refusal.error);
                if op_name == OpKind::SelectLabel.name() {
                    self.drop_selection(&refusal.error.0).await;
                }
                let reply = answer::error(&refusal.error.0, refusal.transaction.as_ref());
                // A refused change is shown where changes are (Home Assistant's
                // "last result"), so a refused "New label" is seen.
                let changing = OpKind::from_name(&op_name).is_some_and(OpKind::changes_state);
                self.answer(r.reply, &op_name, None, reply, changing);
                return;
            }
        };
        if envelope.idempotent() {
            match self
                .replies
                .check(&envelope.key, tokio::time::Instant::now())
            {
                Seen::New => {}
                Seen::Pending => {
                    tracing::info!(op = %op_name, dup = envelope.dup, "repeated request is still being carried out; its answer follows");
                    return;
                }
                Seen::Answered(first) => {
                    tracing::info!(op = %op_name, dup = envelope.dup, "repeated request: answering with the first answer");
                    self.deliver(r.reply, &op_name, first);
                    return;
                }
            }
        }
        let Envelope {
            op,
            transaction,
            key,
            ..
        } = envelope;
        let changing = op.kind().changes_state();
        let reply = match self.apply(op).await {
            Ok(apply::Applied::Answer(data)) => answer::ok(data, transaction.as_ref()),
            Ok(apply::Applied::Collect(c)) => {
                // Answered when the frames are in.
                self.start_collecting(c, r.reply, op_name, key, transaction);
                return;
            }
            Err(e) => {
                self.refused(&op_name, &e);
                if op_name == OpKind::SelectLabel.name() {
                    self.drop_selection(&e.0).await;
                }
                answer::error(&e.0, transaction.as_ref())
            }
        };
        self.answer(r.reply, &op_name, Some(&key), reply, changing);
    }

    /// A `select_label` was refused: nothing is selected until one succeeds,
    /// here and in Home Assistant (its select shows none, the saved label goes).
    async fn drop_selection(&mut self, why: &str) {
        if self.teach_label.take().is_some() {
            tracing::info!(classifier = %self.classifier.name(), "the teach label was refused: nothing is selected until one is chosen");
        }
        self.teach_refused = Some(why.to_string());
        self.shared
            .notifier
            .notify_wait(Event::TeachLabelCleared {
                classifier: self.classifier.name().to_string(),
            })
            .await;
    }

    /// Count and log a refused request.
    fn refused(&self, op: &str, e: &RequestError) {
        self.shared
            .stats
            .requests_failed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(op, error = %e, "request refused");
    }

    /// Send the answer to a request. For a changing request, remember a success
    /// under `key` for repeats (a refusal changed nothing and may be retried) and
    /// tell the Home Assistant bridge.
    fn answer(&mut self, to: ReplyTo, op: &str, key: Option<&str>, reply: Value, changing: bool) {
        if changing {
            if let Some(key) = key {
                if answer::is_ok(&reply) {
                    self.replies
                        .finish(key, &reply, tokio::time::Instant::now());
                } else {
                    self.replies.forget(key);
                }
            }
            self.shared.notifier.notify(Event::Result {
                classifier: self.classifier.name().to_string(),
                op: op.to_string(),
                reply: reply.clone(),
            });
        }
        self.deliver(to, op, reply);
    }

    /// Hand `reply` to where it goes.
    fn deliver(&self, to: ReplyTo, op: &str, reply: Value) {
        deliver(&self.shared.publisher, to, op, reply);
    }
}

/// Hand `reply` to the request's route: published on MQTT, or handed to the HTTP
/// handler waiting for it.
pub fn deliver(publisher: &Publisher, to: ReplyTo, op: &str, reply: Value) {
    match to {
        ReplyTo::Topic { base, op: name } => {
            publisher.respond(&base, &name, &reply);
        }
        ReplyTo::Channel(tx) => {
            if tx.send(reply).is_err() {
                tracing::debug!(op, "the HTTP client left before its answer");
            }
        }
    }
}
