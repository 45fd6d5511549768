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
//!   across restarts (the announced topics are kept in `<state_dir>/homeassistant.json`).
//!
//! Home Assistant checks a state against the enum sensor's `options` and an event
//! against the event entity's `event_types` as soon as it arrives, while it applies
//! a changed discovery config asynchronously. So a state or event that needs a
//! newly announced class waits [`SETTLE`] after the announcement, and a class that
//! is still shown stays in the options until the state moves on.
//!
//! The logic is a state machine ([`Bridge`]: events in, [`Out`] messages out, time
//! passed in) so that it is tested without a broker; [`run`] is the task around it.

pub mod discovery;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::classifier::ClassifierTopics;
use crate::head::UNKNOWN;
use crate::mqtt::Publisher;
use discovery::{Classes, Context};

/// The state shown for edgehead's `unknown` (a crop that matches no class well
/// enough): a real state, unlike Home Assistant's own `unknown` ("no data").
pub const UNRECOGNIZED: &str = "unrecognized";
/// The state shown while the classifier has no head (nothing taught yet).
pub const UNTRAINED: &str = "untrained";
/// How long a state or event that needs newly announced options waits.
pub const SETTLE: Duration = Duration::from_millis(1500);
/// Longest `last_result` message (Home Assistant's limit for a state), characters.
pub const MAX_STATE_CHARS: usize = 255;
/// Queue of events into the task; a full queue drops the event (the next
/// prediction or heartbeat brings the state again).
pub const QUEUE: usize = 256;

/// The Home Assistant state of a stable label: the class, [`UNRECOGNIZED`] for
/// edgehead's `unknown`, [`UNTRAINED`] without a head.
pub fn state_of(label: Option<&str>) -> &str {
    match label {
        None => UNTRAINED,
        Some(UNKNOWN) => UNRECOGNIZED,
        Some(l) => l,
    }
}

/// What the other tasks tell the bridge.
#[derive(Debug, Clone)]
pub enum Event {
    /// A prediction the publish rule let through (sent or, when disconnected,
    /// not) of classifier `classifier`.
    Prediction {
        /// Index of the classifier in the configuration (for every variant).
        classifier: usize,
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
        /// Index of the classifier.
        classifier: usize,
    },
    /// The latest crop.
    Image {
        /// Index of the classifier.
        classifier: usize,
        /// JPEG bytes.
        jpeg: Vec<u8>,
    },
    /// The head's classes now (after training, deleting, resetting).
    Head {
        /// Index of the classifier.
        classifier: usize,
        /// The head's classes, in its order; empty without a head.
        classes: Vec<String>,
    },
    /// The label the dashboard teaches was chosen (`select_label`).
    TeachLabel {
        /// Index of the classifier.
        classifier: usize,
        /// The normalized label (an existing class's spelling, or a new one).
        label: String,
    },
    /// A changing request was answered.
    Result {
        /// Index of the classifier.
        classifier: usize,
        /// The operation (`label_frame`, ...).
        op: String,
        /// The response envelope (`status`, `data`, `error`).
        reply: Value,
    },
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

/// What the bridge keeps across restarts, in `<state_dir>/homeassistant.json`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Saved {
    /// Every discovery config topic announced, sorted: those not announced at the
    /// next start are removed.
    pub discovery_topics: Vec<String>,
    /// The label each classifier's dashboard teaches, by classifier name.
    pub teach_labels: std::collections::BTreeMap<String, String>,
    /// The state each classifier showed at the last save, by classifier name: a
    /// class among them stays an option at the next start until the first state
    /// replaces it (its retained state may still say it).
    pub shown: std::collections::BTreeMap<String, String>,
}

impl Saved {
    /// Read `path`; a missing file is the default, an unreadable or damaged one
    /// too (logged: configs of deleted entities may then stay behind).
    pub fn load(path: &std::path::Path) -> Self {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Self::default(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the saved Home Assistant state");
                return Self::default();
            }
        };
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), error = %e, "the saved Home Assistant state is damaged; ignored");
            Self::default()
        })
    }

    /// Drop what this device could not have saved: discovery topics that are not
    /// `<prefix>/<component>/<device_id>/<key>/config` of an edgehead component
    /// (at most [`MAX_SAVED_TOPICS`]), teach labels and shown states that are not
    /// valid labels (or edgehead's own states). A file edited by hand or damaged
    /// can then neither clear other retained topics nor announce bad options.
    pub fn sanitize(mut self, prefix: &str, device_id: &str) -> Self {
        let before = (
            self.discovery_topics.len(),
            self.teach_labels.len(),
            self.shown.len(),
        );
        let ours = |t: &String| {
            let Some(rest) = t.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
                return false;
            };
            let levels: Vec<&str> = rest.split('/').collect();
            levels.len() == 4
                && COMPONENTS.contains(&levels[0])
                && levels[1] == device_id
                && (1..=200).contains(&levels[2].len())
                && levels[2]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                && levels[3] == "config"
        };
        self.discovery_topics.retain(ours);
        self.discovery_topics.truncate(MAX_SAVED_TOPICS);
        let valid = |l: &String| crate::learn::labels::normalize(l).is_ok_and(|n| n == *l);
        self.teach_labels.retain(|_, l| valid(l));
        self.shown
            .retain(|_, s| valid(s) || s == UNRECOGNIZED || s == UNTRAINED);
        let after = (
            self.discovery_topics.len(),
            self.teach_labels.len(),
            self.shown.len(),
        );
        if after != before {
            tracing::warn!(
                dropped_topics = before.0 - after.0,
                dropped_teach_labels = before.1 - after.1,
                dropped_states = before.2 - after.2,
                "ignored entries of the saved Home Assistant state that this device could not have written"
            );
        }
        self
    }
}

/// Most discovery topics read back from the saved state.
pub const MAX_SAVED_TOPICS: usize = 20_000;
/// The discovery components edgehead announces.
pub const COMPONENTS: &[&str] = &[
    "sensor",
    "binary_sensor",
    "event",
    "image",
    "select",
    "text",
    "button",
];

#[derive(Debug, Clone, PartialEq)]
struct Shown {
    state: String,
    label: Option<String>,
    confidence: f32,
    /// Sequence number and capture time of the prediction that brought the state.
    seq: u64,
    since: String,
    head: Option<String>,
}

impl Shown {
    fn percent(&self) -> i64 {
        (self.confidence * 100.0).round() as i64
    }
}

#[derive(Debug, Default)]
struct Entry {
    head_classes: Vec<String>,
    teach: Option<String>,
    /// The state shown before the restart, until the first state replaces it.
    restored: Option<String>,
    /// Published on the state topic.
    shown: Option<Shown>,
    /// Waiting for [`SETTLE`].
    pending: Option<Shown>,
    teach_pending: bool,
    /// What the configs were last built with, and when a config last changed.
    announced: Classes,
    changed_at: Option<Instant>,
    configs: serde_json::Map<String, Value>,
    last_sent: Option<Instant>,
}

/// The state machine: see the module documentation.
pub struct Bridge {
    /// `None`: discovery is off (the state topics are still published).
    ctx: Option<Context>,
    topics: Vec<Arc<ClassifierTopics>>,
    entries: Vec<Entry>,
    device_configs: serde_json::Map<String, Value>,
    /// Re-publish the state this often while frames arrive.
    heartbeat: Duration,
    saved: Saved,
    /// Inside [`Bridge::start`]: save once at its end.
    starting: bool,
}

fn is_class(state: &str) -> bool {
    state != UNRECOGNIZED && state != UNTRAINED
}

impl Bridge {
    /// `classes`: each classifier's head classes at start; `saved`: what the last
    /// run saved; `heartbeat`: how often a current state is re-published (a third
    /// of `expire_after`).
    pub fn new(
        ctx: Option<Context>,
        topics: Vec<Arc<ClassifierTopics>>,
        classes: Vec<Vec<String>>,
        saved: Saved,
        heartbeat: Duration,
    ) -> Self {
        let entries = topics
            .iter()
            .enumerate()
            .map(|(i, t)| Entry {
                head_classes: classes.get(i).cloned().unwrap_or_default(),
                teach: saved.teach_labels.get(&t.name).cloned(),
                restored: saved.shown.get(&t.name).cloned(),
                ..Entry::default()
            })
            .collect();
        Self {
            ctx,
            topics,
            entries,
            device_configs: Default::default(),
            heartbeat,
            saved,
            starting: false,
        }
    }

    /// The first messages: every discovery config, the removal of the configs
    /// announced before (in the saved list) that no longer exist, and the saved
    /// teach labels.
    pub fn start(&mut self, now: Instant) -> Vec<Out> {
        let previous = self.saved.discovery_topics.clone();
        self.starting = true;
        let mut out = Vec::new();
        if let Some(ctx) = &self.ctx {
            self.device_configs = discovery::device_entities(ctx).into_iter().collect();
            for (t, v) in &self.device_configs {
                out.push(Out::Retain {
                    topic: t.clone(),
                    payload: v.to_string().into_bytes(),
                });
            }
        }
        for i in 0..self.entries.len() {
            self.announce(i, now, &mut out);
            self.send_teach(i, &mut out);
        }
        let current = self.all_topics();
        for old in &previous {
            if !current.contains(old) {
                out.push(Out::Clear { topic: old.clone() });
            }
        }
        self.starting = false;
        self.save_if_changed(&mut out);
        out
    }

    fn all_topics(&self) -> Vec<String> {
        let mut all: Vec<String> = self.device_configs.keys().cloned().collect();
        for e in &self.entries {
            all.extend(e.configs.keys().cloned());
        }
        all.sort();
        all
    }

    /// What to save now.
    pub fn saved(&self) -> Saved {
        let mut s = Saved {
            discovery_topics: self.all_topics(),
            ..Saved::default()
        };
        for (t, e) in self.topics.iter().zip(&self.entries) {
            if let Some(l) = &e.teach {
                s.teach_labels.insert(t.name.clone(), l.clone());
            }
            if let Some(st) = e.shown.as_ref().map(|x| &x.state).or(e.restored.as_ref()) {
                s.shown.insert(t.name.clone(), st.clone());
            }
        }
        s
    }

    /// Save when the topics or teach labels changed (the shown states are saved
    /// with them, and at the end: not at every change of state).
    fn save_if_changed(&mut self, out: &mut Vec<Out>) {
        if self.starting {
            return;
        }
        let now = self.saved();
        if now.discovery_topics != self.saved.discovery_topics
            || now.teach_labels != self.saved.teach_labels
        {
            self.saved = now.clone();
            out.push(Out::Save(now));
        }
    }

    /// The classes classifier `i`'s entities should be announced with now.
    fn classes(&self, i: usize) -> Classes {
        let e = &self.entries[i];
        let mut states = e.head_classes.clone();
        let shown = [&e.shown, &e.pending]
            .into_iter()
            .flatten()
            .map(|s| &s.state)
            .chain(&e.restored);
        for s in shown {
            if is_class(s) && !states.contains(s) {
                states.push(s.clone());
            }
        }
        let mut teach = e.head_classes.clone();
        if let Some(t) = &e.teach {
            if !teach.contains(t) {
                teach.push(t.clone());
            }
        }
        Classes { states, teach }
    }

    /// Announce classifier `i` with its current classes: changed configs are
    /// published, configs of entities that went away are removed.
    fn announce(&mut self, i: usize, now: Instant, out: &mut Vec<Out>) {
        let classes = self.classes(i);
        let Some(ctx) = &self.ctx else {
            self.entries[i].announced = classes;
            return;
        };
        let fresh: serde_json::Map<String, Value> =
            discovery::classifier_entities(ctx, i, &self.topics[i], &classes)
                .into_iter()
                .collect();
        let e = &mut self.entries[i];
        let before = out.len();
        for (t, v) in &fresh {
            if e.configs.get(t) != Some(v) {
                out.push(Out::Retain {
                    topic: t.clone(),
                    payload: v.to_string().into_bytes(),
                });
            }
        }
        for t in e.configs.keys() {
            if !fresh.contains_key(t) {
                out.push(Out::Clear { topic: t.clone() });
            }
        }
        let set_changed =
            e.configs.len() != fresh.len() || e.configs.keys().any(|t| !fresh.contains_key(t));
        e.configs = fresh;
        if out.len() > before {
            // Home Assistant applies a changed config a moment later, and then
            // counts the sensor as expired until the next state: states that need
            // the new options, and the shown state again, follow after SETTLE.
            e.changed_at = Some(now);
            if e.pending.is_none() {
                e.pending = e.shown.clone();
            }
        }
        e.announced = classes;
        if set_changed {
            self.save_if_changed(out);
        }
    }

    /// Re-announce classifier `i` when its classes changed.
    fn reannounce(&mut self, i: usize, now: Instant, out: &mut Vec<Out>) {
        if self.classes(i) != self.entries[i].announced {
            self.announce(i, now, out);
        }
    }

    /// Whether states that need classifier `i`'s newest options must still wait.
    fn settling(&self, i: usize, now: Instant) -> bool {
        self.ctx.is_some() && self.entries[i].changed_at.is_some_and(|t| now < t + SETTLE)
    }

    /// The earliest time [`Bridge::tick`] has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        self.entries
            .iter()
            .filter(|e| e.pending.is_some() || e.teach_pending)
            .filter_map(|e| e.changed_at.map(|t| t + SETTLE))
            .min()
    }

    /// Publish what waited for [`SETTLE`].
    pub fn tick(&mut self, now: Instant) -> Vec<Out> {
        let mut out = Vec::new();
        for i in 0..self.entries.len() {
            if self.settling(i, now) {
                continue;
            }
            if let Some(p) = self.entries[i].pending.take() {
                self.show(i, p, now, &mut out);
            }
            if std::mem::take(&mut self.entries[i].teach_pending) {
                self.send_teach(i, &mut out);
            }
        }
        out
    }

    fn send_teach(&self, i: usize, out: &mut Vec<Out>) {
        if let Some(t) = &self.entries[i].teach {
            out.push(Out::Retain {
                topic: self.topics[i].teach_label.clone(),
                payload: t.clone().into_bytes(),
            });
        }
    }

    /// Publish state `s` of classifier `i`, with an event when the state changed.
    fn show(&mut self, i: usize, s: Shown, now: Instant, out: &mut Vec<Out>) {
        let t = &self.topics[i];
        out.push(Out::Retain {
            topic: t.state.clone(),
            payload: json!({
                "state": s.state,
                "label": s.label,
                "confidence": s.confidence,
                "seq": s.seq,
                "since": s.since,
                "head": s.head,
                "classifier": t.name,
            })
            .to_string()
            .into_bytes(),
        });
        let e = &mut self.entries[i];
        if let Some(prev) = &e.shown {
            if prev.state != s.state {
                out.push(Out::Send {
                    topic: t.event.clone(),
                    payload: json!({
                        "event_type": s.state,
                        "previous": prev.state,
                        "label": s.label,
                        "confidence": s.confidence,
                        "seq": s.seq,
                    })
                    .to_string()
                    .into_bytes(),
                });
            }
        }
        e.shown = Some(s);
        e.restored = None;
        e.last_sent = Some(now);
        // A class that is no longer trained and no longer shown leaves the options.
        self.reannounce(i, now, out);
    }

    /// Handle one event at `now`.
    pub fn on_event(&mut self, event: Event, now: Instant) -> Vec<Out> {
        let mut out = Vec::new();
        match event {
            Event::Prediction {
                classifier: i,
                label,
                confidence,
                seq,
                captured_at,
                head,
            } => {
                if i >= self.entries.len() {
                    return out;
                }
                let state = state_of(label.as_deref()).to_string();
                let e = &self.entries[i];
                // Back to the shown state (a waiting change was a flicker): it
                // keeps the seq and time of the prediction that brought it.
                let current = match (&e.pending, &e.shown) {
                    (_, Some(s)) if s.state == state => Some(s),
                    (p, s) => p.as_ref().or(s.as_ref()),
                };
                let next = match current {
                    Some(c) if c.state == state => Shown {
                        confidence,
                        head,
                        ..c.clone()
                    },
                    _ => Shown {
                        state: state.clone(),
                        label,
                        confidence,
                        seq,
                        since: captured_at,
                        head,
                    },
                };
                let changed = e.shown.as_ref().is_none_or(|s| s.state != state);
                if !changed {
                    // Back to what is shown: a waiting change is void. While a
                    // new config settles, the shown state waits to be sent again.
                    if self.settling(i, now) {
                        self.entries[i].pending = Some(next);
                        return out;
                    }
                    let shown = self.entries[i].shown.clone();
                    self.entries[i].pending = None;
                    if shown.is_some_and(|s| s.percent() != next.percent() || s.head != next.head) {
                        self.show(i, next, now, &mut out);
                    }
                    return out;
                }
                self.entries[i].pending = Some(next);
                self.reannounce(i, now, &mut out);
                if !self.settling(i, now) {
                    if let Some(p) = self.entries[i].pending.take() {
                        self.show(i, p, now, &mut out);
                    }
                }
            }
            Event::Alive { classifier: i } => {
                if let Some(e) = self.entries.get(i) {
                    if let (Some(s), Some(at)) = (&e.shown, e.last_sent) {
                        if now.duration_since(at) >= self.heartbeat {
                            let s = s.clone();
                            self.show(i, s, now, &mut out);
                        }
                    }
                }
            }
            Event::Image {
                classifier: i,
                jpeg,
            } => {
                if let Some(t) = self.topics.get(i) {
                    out.push(Out::Retain {
                        topic: t.image.clone(),
                        payload: jpeg,
                    });
                }
            }
            Event::Head {
                classifier: i,
                classes,
            } => {
                if i < self.entries.len() {
                    self.entries[i].head_classes = classes;
                    self.reannounce(i, now, &mut out);
                }
            }
            Event::TeachLabel {
                classifier: i,
                label,
            } => {
                if i < self.entries.len() {
                    self.entries[i].teach = Some(label);
                    self.reannounce(i, now, &mut out);
                    self.save_if_changed(&mut out);
                    if self.settling(i, now) {
                        self.entries[i].teach_pending = true;
                    } else {
                        self.send_teach(i, &mut out);
                    }
                }
            }
            Event::Result {
                classifier: i,
                op,
                reply,
            } => {
                if let Some(t) = self.topics.get(i) {
                    out.push(Out::Retain {
                        topic: t.last_result.clone(),
                        payload: last_result(&op, &reply).to_string().into_bytes(),
                    });
                }
            }
        }
        out
    }
}

/// The `last_result` payload: `message` (at most [`MAX_STATE_CHARS`] characters,
/// the sensor's state), `op`, `status`, `error`, `at`, and the answer's `data`
/// when it is small (under 2 KiB).
pub fn last_result(op: &str, reply: &Value) -> Value {
    let ok = reply["status"] == "ok";
    let data = &reply["data"];
    let mut message = if ok {
        let mut m = format!("{op}: ok");
        if let Some(l) = data["label"].as_str() {
            m.push_str(&format!(" ({l})"));
        }
        if let Some(n) = data["samples"].as_u64() {
            m.push_str(&format!(", {n} samples"));
        }
        m
    } else {
        format!(
            "{op} refused: {}",
            reply["error"].as_str().unwrap_or("unknown error")
        )
    };
    if message.chars().count() > MAX_STATE_CHARS {
        message = message.chars().take(MAX_STATE_CHARS - 1).collect();
        message.push('…');
    }
    let mut v = json!({
        "message": message,
        "op": op,
        "status": reply["status"],
        "error": reply["error"],
        "at": crate::mqtt::payload::timestamp(std::time::SystemTime::now()),
    });
    if data.to_string().len() < 2048 {
        v["data"] = data.clone();
    }
    v
}

/// Where the bridge keeps what survives a restart ([`Saved`]).
pub fn saved_file(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("homeassistant.json")
}

/// Sends the bridge's messages. A retained message or removal the MQTT queue
/// refuses is not lost: the publisher keeps it and the connection task sends it
/// later (with the payload of that moment); an event is dropped.
struct Sender {
    publisher: Publisher,
    file: PathBuf,
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
                Out::Save(saved) => self.save(saved),
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
        if let Err(e) = crate::store::write_atomic(&self.file, &body) {
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
    let mut sender = Sender { publisher, file };
    sender.execute(bridge.start(Instant::now()));
    loop {
        let deadline = bridge.deadline();
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
            }
        }
    }
    sender.save(bridge.saved());
}

#[cfg(test)]
mod tests;
