//! What the other tasks tell the bridge ([`Event`]), what the bridge asks to have
//! sent ([`Out`]), and the [`Notifier`] handle the tasks tell it through.

use serde_json::Value;
use tokio::sync::mpsc;

use super::saved::Saved;

/// What the other tasks tell the bridge.
#[derive(Debug, Clone)]
pub enum Event {
    /// A prediction the publish rule let through (sent or, when disconnected,
    /// not) of classifier `classifier`.
    Prediction {
        /// The classifier's name (for every variant).
        classifier: String,
        /// The stable label (`unknown`, or `None` without a head).
        label: Option<String>,
        /// Probability of `label`, 0 to 1.
        confidence: f32,
        /// The frame's sequence number.
        seq: u64,
        /// When the frame was captured, RFC 3339.
        captured_at: String,
        /// `<kind>-v<version>` of the head that made it.
        head: Option<String>,
    },
    /// The classifier looked at a frame (ran or skipped it as unchanged): its
    /// state is still current.
    Alive {
        /// The classifier's name.
        classifier: String,
    },
    /// The latest crop.
    Image {
        /// The classifier's name.
        classifier: String,
        /// JPEG bytes.
        jpeg: Vec<u8>,
    },
    /// The head's classes now (after training, deleting, resetting).
    Head {
        /// The classifier's name.
        classifier: String,
        /// The head's classes, in its order; empty without a head.
        classes: Vec<String>,
    },
    /// A `select_label` was refused: nothing is selected until one succeeds
    /// (the select shows none).
    TeachLabelCleared {
        /// The classifier's name.
        classifier: String,
    },
    /// The label the dashboard teaches was chosen (`select_label`).
    TeachLabel {
        /// The classifier's name.
        classifier: String,
        /// The normalized label (an existing class's spelling, or a new one).
        label: String,
    },
    /// The classifiers now, in order (one was created, edited, renamed or
    /// deleted at run time): entities of classifiers no longer listed are
    /// removed, new ones announced.
    Classifiers { list: Vec<Listed> },
    /// A changing request was answered.
    Result {
        /// The classifier's name.
        classifier: String,
        /// The operation (`label_frame`, ...).
        op: String,
        /// The response envelope (`status`, `data`, `error`).
        reply: Value,
    },
}

/// One classifier as the bridge is told of it: its topics and its head's classes.
#[derive(Debug, Clone)]
pub struct Listed {
    pub topics: std::sync::Arc<crate::mqtt::ClassifierTopics>,
    pub classes: Vec<String>,
    /// Its `device_classes` (class → binary sensor device class).
    pub device_classes: std::collections::BTreeMap<String, String>,
}

/// A message the bridge wants sent (or its topic list saved).
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// Publish retained (and keep it for re-publishing after a reconnect).
    Retain { topic: String, payload: Vec<u8> },
    /// Remove a retained message: an empty retained payload.
    Clear { topic: String },
    /// Publish without retain.
    Send { topic: String, payload: Vec<u8> },
    /// What must survive a restart changed (the announced discovery topics, the
    /// teach labels): save it.
    Save(Saved),
}

/// The handle other tasks tell the bridge through; `app` hands one to each.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Event>,
}

impl Notifier {
    /// A notifier and the bridge's end of its queue ([`super::QUEUE`] events).
    pub fn channel() -> (Self, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(super::QUEUE);
        (Self { tx }, rx)
    }

    /// Tell the bridge; a full queue drops the event (the next prediction or
    /// heartbeat carries the state again).
    pub fn notify(&self, event: Event) {
        let _ = self.tx.try_send(event);
    }

    /// Tell the bridge, waiting for room in its queue (for events nothing would
    /// repeat: classes, the teach label, results).
    pub async fn notify_wait(&self, event: Event) {
        let _ = self.tx.send(event).await;
    }
}
