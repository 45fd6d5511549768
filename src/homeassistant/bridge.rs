//! The bridge's state machine ([`Bridge`]): events in, [`Out`] messages out, time
//! passed in, no I/O; the task around it is [`super::run`].
//!
//! Home Assistant checks a state against the enum sensor's `options` and an event
//! against the event entity's `event_types` as soon as it arrives, while it applies
//! a changed discovery config asynchronously. So a state or event that needs a
//! newly announced class waits [`SETTLE`] after the announcement, and a class that
//! is still shown stays in the options until the state moves on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::discovery::{self, Classes, Context};
use super::event::{Event, Listed, Out};
use super::saved::Saved;
use super::{state_of, MAX_STATE_CHARS, SETTLE};
use crate::mqtt::ClassifierTopics;
use crate::names::{UNRECOGNIZED, UNTRAINED};

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
    /// The teach label changed while a config was settling: its options are
    /// announced once, with the last label, when it has settled (a burst of
    /// `select_label` makes one announcement per [`SETTLE`], not one each).
    reannounce_pending: bool,
    /// What the configs were last built with, and when a config last changed.
    announced: Classes,
    changed_at: Option<Instant>,
    configs: serde_json::Map<String, Value>,
    last_sent: Option<Instant>,
    /// When the last frame of this classifier went through the pipeline.
    last_frame: Option<Instant>,
    /// What its availability topic says: `None` before the start.
    online: Option<bool>,
    /// The classifier's `device_classes`.
    device_classes: std::collections::BTreeMap<String, String>,
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
    /// A classifier whose frames stopped this long ago is `offline` (its label
    /// unavailable); `None`: never (`expire_after_secs = 0`).
    stale_after: Option<Duration>,
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
    /// of `expire_after`; a classifier without frames for three heartbeats goes
    /// `offline`; zero: never).
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
            stale_after: (!heartbeat.is_zero()).then_some(heartbeat * 3),
            saved,
            starting: false,
        }
    }

    /// How long without a frame before a classifier is `offline`: `None` never
    /// (`expire_after_secs = 0`). Default: three heartbeats.
    pub fn with_stale_after(mut self, stale_after: Option<Duration>) -> Self {
        self.stale_after = stale_after;
        self
    }

    /// Each classifier's `device_classes`, in the order of the topics given to
    /// [`Bridge::new`].
    pub fn with_device_classes(
        mut self,
        device_classes: Vec<std::collections::BTreeMap<String, String>>,
    ) -> Self {
        for (e, d) in self.entries.iter_mut().zip(device_classes) {
            e.device_classes = d;
        }
        self
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
            // Until its first frame (a label retained from the last run is not
            // current).
            self.set_online(i, false, &mut out);
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
        Classes {
            states,
            teach,
            device_classes: e.device_classes.clone(),
        }
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
        let settled = self
            .entries
            .iter()
            .filter(|e| e.pending.is_some() || e.teach_pending || e.reannounce_pending)
            .filter_map(|e| e.changed_at.map(|t| t + SETTLE));
        let stale = self
            .entries
            .iter()
            .filter(|e| e.online == Some(true))
            .filter_map(|e| Some(e.last_frame? + self.stale_after?));
        settled.chain(stale).min()
    }

    /// Publish classifier `i`'s availability when it changes.
    fn set_online(&mut self, i: usize, online: bool, out: &mut Vec<Out>) {
        let e = &mut self.entries[i];
        if e.online != Some(online) {
            e.online = Some(online);
            out.push(Out::Retain {
                topic: self.topics[i].availability.clone(),
                payload: if online {
                    crate::mqtt::topics::ONLINE
                } else {
                    crate::mqtt::topics::OFFLINE
                }
                .as_bytes()
                .to_vec(),
            });
        }
    }

    /// A frame of classifier `i` went through the pipeline: it is current.
    fn frame_seen(&mut self, i: usize, now: Instant, out: &mut Vec<Out>) {
        self.entries[i].last_frame = Some(now);
        self.set_online(i, true, out);
    }

    /// Publish what waited for [`SETTLE`].
    pub fn tick(&mut self, now: Instant) -> Vec<Out> {
        let mut out = Vec::new();
        for i in 0..self.entries.len() {
            let e = &self.entries[i];
            let stale = e.online == Some(true)
                && matches!((e.last_frame, self.stale_after), (Some(t), Some(d)) if now >= t + d);
            if stale {
                // No frame for expire_after: the label is no longer current.
                self.set_online(i, false, &mut out);
            }
            if self.settling(i, now) {
                continue;
            }
            if std::mem::take(&mut self.entries[i].reannounce_pending) {
                self.reannounce(i, now, &mut out);
                self.save_if_changed(&mut out);
                if self.settling(i, now) {
                    // The new options first; the state and teach label after.
                    continue;
                }
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
        let payload = json!({
            "state": s.state,
            "label": s.label,
            "confidence": s.confidence,
            "seq": s.seq,
            "since": s.since,
            "head": s.head,
            "classifier": t.name,
        })
        .to_string()
        .into_bytes();
        // The label sensor's copy: its state and attributes from one message.
        out.push(Out::Retain {
            topic: t.label.clone(),
            payload: payload.clone(),
        });
        out.push(Out::Retain {
            topic: t.state.clone(),
            payload,
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

    /// The position of classifier `name` in the list.
    fn index(&self, name: &str) -> Option<usize> {
        self.topics.iter().position(|t| t.name == name)
    }

    /// Handle one event at `now`.
    pub fn on_event(&mut self, event: Event, now: Instant) -> Vec<Out> {
        let mut out = Vec::new();
        if let Event::Classifiers { list } = event {
            self.set_classifiers(list, now, &mut out);
            return out;
        }
        let name = match &event {
            Event::Prediction { classifier, .. }
            | Event::Alive { classifier }
            | Event::Image { classifier, .. }
            | Event::Head { classifier, .. }
            | Event::TeachLabel { classifier, .. }
            | Event::TeachLabelCleared { classifier }
            | Event::Result { classifier, .. } => classifier.clone(),
            Event::Classifiers { .. } => return out,
        };
        // Events of a classifier that was just removed are dropped.
        let Some(i) = self.index(&name) else {
            return out;
        };
        match event {
            Event::Prediction {
                label,
                confidence,
                seq,
                captured_at,
                head,
                ..
            } => {
                let state = state_of(label.as_deref()).to_string();
                let fresh = Shown {
                    state,
                    label,
                    confidence,
                    seq,
                    since: captured_at,
                    head,
                };
                self.frame_seen(i, now, &mut out);
                self.on_prediction(i, fresh, now, &mut out);
            }
            Event::Alive { .. } => {
                self.frame_seen(i, now, &mut out);
                self.on_alive(i, now, &mut out);
            }
            Event::Image { jpeg, .. } => out.push(Out::Retain {
                topic: self.topics[i].image.clone(),
                payload: jpeg,
            }),
            Event::Head { classes, .. } => {
                self.entries[i].head_classes = classes;
                self.reannounce(i, now, &mut out);
            }
            Event::TeachLabel { label, .. } => self.on_teach_label(i, label, now, &mut out),
            Event::TeachLabelCleared { .. } => {
                let e = &mut self.entries[i];
                e.teach = None;
                e.teach_pending = false;
                // Home Assistant's select reads "None" as no option chosen.
                out.push(Out::Retain {
                    topic: self.topics[i].teach_label.clone(),
                    payload: b"None".to_vec(),
                });
                self.reannounce(i, now, &mut out);
                self.save_if_changed(&mut out);
            }
            Event::Result { op, reply, .. } => out.push(Out::Retain {
                topic: self.topics[i].last_result.clone(),
                payload: last_result(&op, &reply).to_string().into_bytes(),
            }),
            Event::Classifiers { .. } => {}
        }
        out
    }

    /// The classifiers changed at run time: keep what is known of those still
    /// listed, remove everything of those no longer listed (discovery configs and
    /// retained topics), announce the list in its new order (the first
    /// classifier's entities have the bare keys).
    fn set_classifiers(&mut self, list: Vec<Listed>, now: Instant, out: &mut Vec<Out>) {
        let mut old: Vec<(Arc<ClassifierTopics>, Entry)> = std::mem::take(&mut self.topics)
            .into_iter()
            .zip(std::mem::take(&mut self.entries))
            .collect();
        for l in list {
            let entry = match old.iter().position(|(t, _)| *t == l.topics) {
                Some(p) => {
                    let (_, mut e) = old.remove(p);
                    e.head_classes = l.classes;
                    e.device_classes = l.device_classes;
                    e
                }
                None => Entry {
                    head_classes: l.classes,
                    device_classes: l.device_classes,
                    teach: self.saved.teach_labels.get(&l.topics.name).cloned(),
                    ..Entry::default()
                },
            };
            self.topics.push(l.topics);
            self.entries.push(entry);
        }
        for (t, e) in old {
            for topic in e.configs.keys() {
                out.push(Out::Clear {
                    topic: topic.clone(),
                });
            }
            for topic in [
                &t.state,
                &t.label,
                &t.availability,
                &t.image,
                &t.teach_label,
                &t.last_result,
                &t.head,
            ] {
                out.push(Out::Clear {
                    topic: topic.clone(),
                });
            }
        }
        for i in 0..self.entries.len() {
            // The keys depend on the position: announce every classifier again
            // (only configs that changed are sent).
            self.announce(i, now, out);
            self.send_teach(i, out);
            if self.entries[i].online.is_none() {
                // A new classifier: not current until its first frame.
                self.set_online(i, false, out);
            }
        }
        self.save_if_changed(out);
    }

    /// A prediction of classifier `i` with the state `fresh` would bring.
    fn on_prediction(&mut self, i: usize, fresh: Shown, now: Instant, out: &mut Vec<Out>) {
        let e = &self.entries[i];
        let state = fresh.state.clone();
        // Back to the shown state (a waiting change was a flicker): it keeps the
        // seq and time of the prediction that brought it.
        let current = match (&e.pending, &e.shown) {
            (_, Some(s)) if s.state == state => Some(s),
            (p, s) => p.as_ref().or(s.as_ref()),
        };
        let next = match current {
            Some(c) if c.state == state => Shown {
                confidence: fresh.confidence,
                head: fresh.head,
                ..c.clone()
            },
            _ => fresh,
        };
        let changed = e.shown.as_ref().is_none_or(|s| s.state != state);
        if !changed {
            // Back to what is shown: a waiting change is void. While a new config
            // settles, the shown state waits to be sent again.
            if self.settling(i, now) {
                self.entries[i].pending = Some(next);
                return;
            }
            let shown = self.entries[i].shown.clone();
            self.entries[i].pending = None;
            if shown.is_some_and(|s| s.percent() != next.percent() || s.head != next.head) {
                self.show(i, next, now, out);
            }
            return;
        }
        self.entries[i].pending = Some(next);
        self.reannounce(i, now, out);
        if !self.settling(i, now) {
            if let Some(p) = self.entries[i].pending.take() {
                self.show(i, p, now, out);
            }
        }
    }

    /// Classifier `i` looked at a frame: re-publish its state once a heartbeat.
    fn on_alive(&mut self, i: usize, now: Instant, out: &mut Vec<Out>) {
        if let Some(e) = self.entries.get(i) {
            if let (Some(s), Some(at)) = (&e.shown, e.last_sent) {
                if now.duration_since(at) >= self.heartbeat {
                    let s = s.clone();
                    self.show(i, s, now, out);
                }
            }
        }
    }

    /// Classifier `i`'s dashboard chose `label` to teach.
    fn on_teach_label(&mut self, i: usize, label: String, now: Instant, out: &mut Vec<Out>) {
        self.entries[i].teach = Some(label);
        if self.settling(i, now) {
            // A config went out less than SETTLE ago: announce (and save) once
            // it has settled, with whatever label is chosen by then.
            self.entries[i].reannounce_pending = true;
            self.entries[i].teach_pending = true;
            return;
        }
        self.reannounce(i, now, out);
        self.save_if_changed(out);
        if self.settling(i, now) {
            self.entries[i].teach_pending = true;
        } else {
            self.send_teach(i, out);
        }
    }
}

/// What a user did, as the dashboard names it.
fn action(op: &str) -> String {
    match op {
        "label_frame" => "Teach".into(),
        "remove_sample" => "Undo".into(),
        "select_label" => "Label choice".into(),
        "add_sample" => "Add sample".into(),
        other => {
            let words = other.replace('_', " ");
            let mut c = words.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        }
    }
}

/// A successful answer as a sentence for the dashboard (the answer's own
/// fields, in words).
fn sentence(op: &str, data: &Value) -> String {
    let label = data["label"].as_str().unwrap_or("?");
    let count = |n: u64| {
        if n == 1 {
            "1 sample".to_string()
        } else {
            format!("{n} samples")
        }
    };
    let of_class = data["class_samples"].as_u64().map(count);
    match op {
        "add_sample" if data["duplicate"] == true => {
            format!("That image is already a sample of “{label}”")
        }
        "add_sample" => format!(
            "Stored a sample of “{label}” ({} now)",
            of_class.unwrap_or_default()
        ),
        "label_frame" => {
            let stored = data["ids"].as_array().map_or(0, Vec::len) as u64;
            let mut m = format!(
                "Stored {} as “{label}” ({} now)",
                if stored == 1 {
                    "1 frame".to_string()
                } else {
                    format!("{stored} frames")
                },
                of_class.unwrap_or_default()
            );
            if let Some(n) = data["skipped_similar"].as_u64().filter(|n| *n > 0) {
                m.push_str(&format!("; {n} near-identical skipped"));
            }
            m
        }
        "remove_sample" => {
            let left = data["classes"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["label"] == label))
                .and_then(|c| c["samples"].as_u64())
                .unwrap_or(0);
            format!("Removed a sample of “{label}” ({} left)", count(left))
        }
        "select_label" if data["new_class"] == true => {
            format!("Teaching “{label}”, a new class: press Teach to store its first sample")
        }
        "select_label" => format!("Teaching “{label}”"),
        "delete_class" => format!("Deleted {}", count(data["deleted"].as_u64().unwrap_or(0))),
        "reset" => format!(
            "Reset: deleted {}",
            count(data["deleted"].as_u64().unwrap_or(0))
        ),
        "retrain" => "Retrained".into(),
        other => format!("{} done", action(other)),
    }
}

/// The `last_result` payload: `message` (at most [`MAX_STATE_CHARS`] characters,
/// the sensor's state), `op`, `status`, `error`, `at`, and the answer's `data`
/// when it is small (under 2 KiB).
pub fn last_result(op: &str, reply: &Value) -> Value {
    let ok = reply["status"] == "ok";
    let data = &reply["data"];
    let mut message = if ok {
        sentence(op, data)
    } else {
        format!(
            "{} refused: {}",
            action(op),
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
        "at": crate::time::timestamp(std::time::SystemTime::now()),
    });
    if data.to_string().len() < 2048 {
        v["data"] = data.clone();
    }
    v
}
