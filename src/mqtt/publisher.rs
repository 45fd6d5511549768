//! [`Publisher`]: the handle every task uses to send over MQTT. It never waits: a
//! full outgoing queue drops a prediction (counted), a retained message it
//! refuses is owed and sent later by the connection task ([`super::retained`]),
//! and answers wait in their own queue until the client's takes them
//! ([`super::answers`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::Value;

use super::answers::{Answer, Answers};
use super::client::Client;
use super::retained::{Owed, Retained};
use super::topics::Topics;
use crate::config::TopicOptions;
use crate::stats::Stats;

/// Sends messages without ever waiting; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    /// Replaced when the connection task switches protocol version.
    pub(super) client: Arc<ArcSwap<Client>>,
    pub topics: Arc<Topics>,
    pub(super) stats: Arc<Stats>,
    pub(super) connected: Arc<AtomicBool>,
    pub(super) predictions: TopicOptions,
    pub(super) status: TopicOptions,
    pub(super) responses: TopicOptions,
    pub(super) retained: Arc<Retained>,
    pub(super) answers: Arc<Answers>,
}

impl Publisher {
    /// Whether the client is connected to the broker now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Publish; a retained payload is also kept. While disconnected a retained
    /// message is only kept (the connect publishes every kept one), so nothing
    /// piles up in the client's queue during an outage; when the queue is full it
    /// is owed and sent by the connection task once there is room.
    fn try_send(&self, topic: &str, options: TopicOptions, payload: Vec<u8>) -> bool {
        if !options.retain {
            return self
                .client
                .load()
                .try_publish(topic, options.qos, false, payload);
        }
        self.retained.keep(topic, payload.clone());
        if !self.is_connected() {
            return true;
        }
        let sent = self
            .client
            .load()
            .try_publish(topic, options.qos, true, payload);
        if !sent {
            self.retained.owe(topic);
        }
        sent
    }

    /// Retained topics whose removal has not been sent yet.
    pub fn pending_clears(&self) -> Vec<String> {
        self.retained.pending_clears()
    }

    /// Send `topic`'s kept retained payload, or its removal when it is to be
    /// cleared; `true` when sent or when neither is owed any more.
    pub(super) fn send_kept(&self, topic: &str) -> bool {
        let client = self.client.load();
        match self.retained.owed(topic) {
            Owed::Payload(p) => client.try_publish(topic, 1, true, p),
            Owed::Nothing => true,
            Owed::Clear => {
                let sent = client.try_publish(topic, 1, true, Vec::new());
                if sent {
                    self.retained.cleared(topic);
                }
                sent
            }
        }
    }

    /// Publish `payload` retained on `topic` (QoS 1), and keep it for re-publishing.
    pub fn try_publish_retained(&self, topic: &str, payload: Vec<u8>) -> bool {
        self.try_send(
            topic,
            TopicOptions {
                qos: 1,
                retain: true,
            },
            payload,
        )
    }

    /// Remove the retained message of `topic` (an empty retained payload) and stop
    /// re-publishing it.
    ///
    /// While disconnected, or when the queue is full, the removal is owed and
    /// sent after the next connect (or when there is room).
    pub fn clear_retained(&self, topic: &str) {
        self.retained.clear(topic);
        if self.is_connected() && !self.send_kept(topic) {
            self.retained.owe(topic);
        }
    }

    /// Publish `payload` on `topic` once, not retained (QoS 1); dropped while
    /// disconnected (a late event would be wrong).
    pub fn try_publish_event(&self, topic: &str, payload: Vec<u8>) -> bool {
        self.is_connected() && self.client.load().try_publish(topic, 1, false, payload)
    }

    /// Publish one prediction on `topic` (`mqtt.predictions` QoS and retain);
    /// while disconnected, or when the queue is full, the prediction is dropped (a
    /// stale prediction is worth nothing) and counted.
    /// While answers wait for room (see [`super::answers`]) predictions are
    /// dropped, so that answers come first.
    pub fn try_publish_prediction(&self, topic: &str, payload: Vec<u8>) -> bool {
        let sent = self.is_connected()
            && !self.answers.any()
            && self.try_send(topic, self.predictions, payload);
        let counter = if sent {
            &self.stats.predictions_published
        } else {
            &self.stats.predictions_dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
        sent
    }

    /// Publish the daemon's status (`mqtt.status` QoS and retain).
    pub fn try_publish_status(&self, payload: &Value) -> bool {
        self.try_send(
            &self.topics.status,
            self.status,
            payload.to_string().into_bytes(),
        )
    }

    /// Publish a classifier's head description on its `head` topic (`mqtt.status`
    /// QoS and retain).
    pub fn try_publish_head(&self, topic: &str, payload: &Value) -> bool {
        self.try_send(topic, self.status, payload.to_string().into_bytes())
    }

    /// Answer a request on `<reply>/<op>` (`mqtt.responses` QoS and retain).
    /// The answer goes behind those waiting ([`super::answers`]) and out as soon
    /// as the client's queue takes it; `false` only when too many wait (it is
    /// then dropped, logged and counted).
    pub fn respond(&self, reply: &str, op: &str, payload: &Value) -> bool {
        let queued = self.answers.push(Answer {
            topic: format!("{reply}/{op}"),
            payload: payload.to_string().into_bytes(),
            qos: self.responses.qos,
            retain: self.responses.retain,
        });
        if !queued {
            self.stats.answers_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(op, "answer dropped: too many answers wait to be sent");
        }
        self.flush_answers();
        queued
    }

    /// Hand waiting answers to the client while its queue takes them (while
    /// connected; after a reconnect the connection task calls this again).
    pub(super) fn flush_answers(&self) {
        if !self.is_connected() {
            return;
        }
        let client = self.client.load();
        self.answers
            .flush(|a| client.try_publish(&a.topic, a.qos, a.retain, a.payload.clone()));
    }
}
