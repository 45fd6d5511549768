//! Home Assistant, and the dashboard topics any MQTT client can use: a task that
//! owns what Home Assistant is told about each classifier.
//!
//! Per classifier it publishes
//! - `<base>/<name>/state` (retained): the stable label as a Home Assistant state,
//!   re-published while frames arrive so that `expire_after` only fires when the
//!   source ends or the daemon hangs;
//! - `<base>/<name>/event`: one message per change of the stable state;
//! - `<base>/<name>/image` (retained): the latest crop as JPEG;
//! - `<base>/<name>/teach_label` (retained): the label "Teach current frame" uses;
//! - `<base>/<name>/last_result` (retained): the last teaching request's answer;
//! - the discovery configs ([`discovery`]), updated when classes change, and
//!   removed (empty retained message) for entities that no longer exist, also
//!   across restarts (the announced topics are kept in `<state_dir>/homeassistant.json`,
//!   [`saved`]).
//!
//! The logic is a state machine ([`bridge::Bridge`]: events in, [`Out`] messages
//! out, time passed in) so that it is tested without a broker; [`run`] is the
//! task around it, fed through a [`Notifier`].

pub mod bridge;
pub mod discovery;
pub mod event;
pub mod saved;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::mqtt::Publisher;
use crate::names::{UNKNOWN, UNRECOGNIZED, UNTRAINED};
pub use bridge::{last_result, Bridge};
pub use event::{Event, Notifier, Out};
pub use saved::{saved_file, Saved};

/// How long a state or event that needs newly announced options waits.
pub const SETTLE: Duration = Duration::from_millis(1500);
/// Longest `last_result` message (Home Assistant's limit for a state), characters.
pub const MAX_STATE_CHARS: usize = 255;
/// Queue of events into the task; a full queue drops the event (the next
/// prediction or heartbeat brings the state again).
pub const QUEUE: usize = 256;
/// `<state_dir>/homeassistant.json` is written at most this often when only
/// the teach labels or shown states changed (the last state wins; a pending one
/// is written at stop): a client choosing teach labels in a loop cannot wear out
/// an SD card. A change of the announced discovery topics is written at once.
pub const SAVE_EVERY: Duration = Duration::from_secs(5);

/// The Home Assistant state of a stable label: the class, [`UNRECOGNIZED`] for
/// edgehead's `unknown`, [`UNTRAINED`] without a head.
pub fn state_of(label: Option<&str>) -> &str {
    match label {
        None => UNTRAINED,
        Some(UNKNOWN) => UNRECOGNIZED,
        Some(l) => l,
    }
}

/// Sends the bridge's messages. A retained message or removal the MQTT queue
/// refuses is not lost: the publisher keeps it and the connection task sends it
/// later (with the payload of that moment); an event is dropped.
struct Sender {
    publisher: Publisher,
    file: PathBuf,
    /// A state to save once [`SAVE_EVERY`] has passed since the last save.
    pending: Option<Saved>,
    last_save: Option<Instant>,
    /// The announced discovery topics last written: a change of them is
    /// written at once (a crash must not forget a config to remove).
    written_topics: Option<Vec<String>>,
}

impl Sender {
    fn execute(&mut self, out: Vec<Out>) {
        for o in out {
            match o {
                Out::Retain { topic, payload } => {
                    self.publisher.try_publish_retained(&topic, payload);
                }
                Out::Clear { topic } => self.publisher.clear_retained(&topic),
                Out::Send { topic, payload } => {
                    if !self.publisher.try_publish_event(&topic, payload) {
                        tracing::debug!(topic, "event dropped: MQTT disconnected or queue full");
                    }
                }
                Out::Save(saved) => self.save_soon(saved),
            }
        }
    }

    /// Save `saved` now, or when [`SAVE_EVERY`] has passed since the last save.
    fn save_soon(&mut self, saved: Saved) {
        let topics_changed = self.written_topics.as_ref() != Some(&saved.discovery_topics);
        match self.last_save {
            Some(t) if t.elapsed() < SAVE_EVERY && !topics_changed => self.pending = Some(saved),
            _ => self.save_now(saved),
        }
    }

    fn save_now(&mut self, saved: Saved) {
        self.pending = None;
        self.last_save = Some(Instant::now());
        self.written_topics = Some(saved.discovery_topics.clone());
        self.save(saved);
    }

    /// When a pending save is due.
    fn save_due(&self) -> Option<Instant> {
        self.pending.as_ref()?;
        Some(self.last_save.map_or_else(Instant::now, |t| t + SAVE_EVERY))
    }

    /// Write a pending save if it is due.
    fn save_if_due(&mut self) {
        if self.save_due().is_some_and(|d| d <= Instant::now()) {
            if let Some(s) = self.pending.take() {
                self.save_now(s);
            }
        }
    }

    /// Save `saved`, keeping the topics whose removal is still owed.
    fn save(&self, mut saved: Saved) {
        let prefix_of_configs = |t: &String| t.ends_with("/config");
        saved.discovery_topics.extend(
            self.publisher
                .pending_clears()
                .into_iter()
                .filter(prefix_of_configs),
        );
        saved.discovery_topics.sort();
        saved.discovery_topics.dedup();
        let body = match serde_json::to_vec(&saved) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode the Home Assistant state");
                return;
            }
        };
        if let Err(e) = crate::store::fsio::write_atomic(&self.file, &body) {
            tracing::warn!(file = %self.file.display(), error = %e, "cannot save the Home Assistant state (entities of deleted classes may stay in Home Assistant)");
        }
    }
}

/// The bridge task: runs until `stop`, then saves the shown states.
pub async fn run(
    mut bridge: Bridge,
    mut rx: mpsc::Receiver<Event>,
    publisher: Publisher,
    file: PathBuf,
    stop: CancellationToken,
) {
    let mut sender = Sender {
        publisher,
        file,
        pending: None,
        last_save: None,
        written_topics: None,
    };
    sender.execute(bridge.start(Instant::now()));
    loop {
        let deadline = [bridge.deadline(), sender.save_due()]
            .into_iter()
            .flatten()
            .min();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            ev = rx.recv() => match ev {
                Some(ev) => {
                    let out = bridge.on_event(ev, Instant::now());
                    sender.execute(out);
                }
                None => break,
            },
            _ = sleep => {
                let out = bridge.tick(Instant::now());
                sender.execute(out);
                sender.save_if_due();
            }
        }
    }
    sender.save(bridge.saved());
}

#[cfg(test)]
mod tests;
