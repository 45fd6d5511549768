//! The classifier manager: the set of classifiers while the daemon runs. It runs a
//! learner per classifier and carries out the operations on the set
//! (`classifiers`, `create_classifier`, `update_classifier`, `rename_classifier`,
//! `delete_classifier`), from MQTT and the console alike.
//!
//! A change is checked against the whole list the way the configuration file is
//! ([`crate::config::Settings::resolve`]), saved in the state directory
//! ([`crate::config::runtime`]; a rename or delete of a store is journaled,
//! [`crate::store::state_dir`]), and then applied without a restart: the
//! classifier's learner is stopped and a new one started on the new definition
//! (its head, recent crops and counters stay), the [`Router`] and the pipeline's
//! classifier set are replaced, and the Home Assistant bridge is told the new list
//! (it removes the entities of a renamed or deleted classifier).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

use super::bundles::{self, Failed};
use super::supervise::Ended;
use crate::answer;
use crate::classifier::Classifier;
use crate::config::runtime::{Origin, RuntimeClassifiers};
use crate::config::{ClassifierConfig, ClassifierSpec, Settings};
use crate::homeassistant::event::Listed;
use crate::homeassistant::Event;
use crate::learn::ops::{self, bad, ClassifierChange, Op, RequestError};
use crate::learn::replies::{Replies, Seen};
use crate::learn::{self, Envelope, Learner, Request, Router};
use crate::mqtt::ClassifierTopics;
use crate::names;
use crate::store::bundle::Mode;
use crate::store::state_dir::StateDir;
use crate::store::{OpenReport, Store, RECENT};

/// One classifier while it runs: its handles, definition, origin and the queue of
/// its learner.
struct Live {
    classifier: Classifier,
    def: ClassifierConfig,
    origin: Origin,
    tx: mpsc::Sender<Request>,
}

/// A classifier whose learner was stopped: what starting it again takes
/// ([`Manager::resume`]).
struct Stopped {
    /// Its place in the list.
    at: usize,
    classifier: Classifier,
    def: ClassifierConfig,
    origin: Origin,
    teach_label: Option<String>,
}

impl Stopped {
    /// The origin once its definition is changed at run time.
    fn edited(&self) -> Origin {
        match self.origin {
            Origin::File => Origin::Edited,
            o => o,
        }
    }
}

/// A classifier's store opened at start, with its definition.
pub struct Starting {
    pub classifier: Classifier,
    pub def: ClassifierConfig,
    pub origin: Origin,
    pub store: Store,
    pub report: OpenReport,
    pub teach_label: Option<String>,
}

/// The manager task; see the module documentation.
pub struct Manager {
    requests_rx: mpsc::Receiver<Request>,
    router: Router,
    settings: Arc<Settings>,
    state: Arc<StateDir>,
    runtime: RuntimeClassifiers,
    shared: learn::Shared,
    set_tx: watch::Sender<Arc<Vec<Classifier>>>,
    live: Vec<Live>,
    learners: JoinSet<Option<String>>,
    /// Which learner task is which classifier's.
    tasks: HashMap<Id, String>,
    /// A learner that ended on its own (it panicked): the daemon fails.
    failed: Option<String>,
    replies: Replies,
}

impl Manager {
    /// Start a learner for each of `starting` (in order) and publish the set on
    /// `set_tx`; the manager's own requests come on `requests_rx`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        starting: Vec<Starting>,
        requests_rx: mpsc::Receiver<Request>,
        router: Router,
        settings: Arc<Settings>,
        state: Arc<StateDir>,
        runtime: RuntimeClassifiers,
        shared: learn::Shared,
        set_tx: watch::Sender<Arc<Vec<Classifier>>>,
    ) -> Self {
        let mut m = Self {
            requests_rx,
            router,
            replies: Replies::new(std::time::Duration::from_secs(
                settings.learn.idempotency_window_secs,
            )),
            settings,
            state,
            runtime,
            shared,
            set_tx,
            live: Vec::new(),
            learners: JoinSet::new(),
            tasks: HashMap::new(),
            failed: None,
        };
        for s in starting {
            m.spawn(s, false);
        }
        // At start the bridge's queue is empty: the list cannot be dropped.
        m.shared.notifier.notify(m.publish_set());
        m
    }

    /// Start the learner of `s` and add it to the set (not yet published).
    fn spawn(&mut self, s: Starting, retrain: bool) {
        let (tx, rx) = mpsc::channel(self.settings.learn.queue);
        let mut learner = Learner::new(rx, s.store, s.classifier.clone(), self.shared.clone());
        learner.restore_head(&s.report);
        learner.set_teach_label(s.teach_label);
        if retrain {
            learner.retrain_at_start();
        }
        let handle = self.learners.spawn(learner.run());
        self.tasks
            .insert(handle.id(), s.classifier.name().to_string());
        self.live.push(Live {
            classifier: s.classifier,
            def: s.def,
            origin: s.origin,
            tx,
        });
    }

    /// Tell the router and the pipeline the set now; returns the event that
    /// tells the bridge (see [`Manager::announce_set`]).
    fn publish_set(&self) -> Event {
        self.router.set_classifiers(
            self.live
                .iter()
                .map(|l| (l.classifier.name().to_string(), l.tx.clone()))
                .collect(),
        );
        self.set_tx.send_replace(Arc::new(
            self.live.iter().map(|l| l.classifier.clone()).collect(),
        ));
        let list = self
            .live
            .iter()
            .map(|l| Listed {
                topics: l.classifier.topics.clone(),
                device_classes: l.classifier.spec.device_classes.clone(),
                classes: l
                    .classifier
                    .head
                    .load()
                    .as_ref()
                    .map(|h| h.classes.clone())
                    .unwrap_or_default(),
            })
            .collect();
        Event::Classifiers { list }
    }

    /// Tell everyone the set now, waiting for room in the bridge's queue: a
    /// dropped list would leave a deleted classifier's entities in Home
    /// Assistant (nothing repeats it).
    async fn announce_set(&self) {
        let event = self.publish_set();
        self.shared.notifier.notify_wait(event).await;
    }

    /// Serve the manager's requests until `drain`; then close every learner's
    /// queue and wait for them. A learner that panics fails the daemon.
    pub async fn run(mut self, drain: CancellationToken) -> Ended {
        loop {
            tokio::select! {
                _ = drain.cancelled() => break,
                r = self.requests_rx.recv() => match r {
                    Some(r) => self.handle(r).await,
                    None => break,
                },
                Some(ended) = self.learners.join_next_with_id() => self.ended(ended),
            }
            if let Some(why) = self.failed.take() {
                return Err(why);
            }
        }
        self.router.close();
        self.live.clear();
        while let Some(ended) = self.learners.join_next_with_id().await {
            self.ended(ended);
        }
        self.failed.take().map_or(Ok(()), Err)
    }

    /// A learner task ended: fine when its classifier was stopped, a failure when
    /// it panicked.
    fn ended(&mut self, ended: Result<(Id, Option<String>), tokio::task::JoinError>) {
        match ended {
            Ok((id, _)) => {
                self.tasks.remove(&id);
            }
            Err(e) => {
                let name = self.tasks.remove(&e.id()).unwrap_or_default();
                self.failed = Some(format!("the learner of classifier \"{name}\" failed: {e}"));
            }
        }
    }

    /// Stop the learner of `live[i]` (its queue closes, its last requests are
    /// answered) and wait for it; returns what starting it again takes.
    async fn stop(&mut self, i: usize) -> Stopped {
        let live = self.live.remove(i);
        drop(live.tx);
        let teach_label = self.join(live.classifier.name()).await;
        Stopped {
            at: i,
            classifier: live.classifier,
            def: live.def,
            origin: live.origin,
            teach_label,
        }
    }

    /// Tell the router the set without the stopped classifier, wait for the
    /// learner of `name` to end; its teach label.
    async fn join(&mut self, name: &str) -> Option<String> {
        self.router.set_classifiers(
            self.live
                .iter()
                .map(|l| (l.classifier.name().to_string(), l.tx.clone()))
                .collect(),
        );
        let id = self
            .tasks
            .iter()
            .find_map(|(id, n)| (n == name).then_some(*id))?;
        while let Some(ended) = self.learners.join_next_with_id().await {
            let this = match &ended {
                Ok((eid, _)) => *eid == id,
                Err(e) => e.id() == id,
            };
            let teach = ended.as_ref().ok().and_then(|(_, t)| t.clone());
            self.ended(ended);
            if this {
                return teach;
            }
        }
        None
    }

    /// Parse (from MQTT), check for a repeat, apply and answer one request.
    async fn handle(&mut self, r: Request) {
        let publisher = self.shared.publisher.clone();
        let limits = ops::Limits {
            max_image_bytes: self.settings.learn.max_image_bytes,
        };
        let (op_name, parsed) = r.input.parse(&limits);
        let envelope: Envelope = match parsed {
            Ok(e) => e,
            Err(refusal) => {
                let reply = answer::error(&refusal.error.0, refusal.transaction.as_ref());
                learn::deliver(&publisher, r.reply, &op_name, reply);
                return;
            }
        };
        if envelope.idempotent() {
            match self
                .replies
                .check(&envelope.key, tokio::time::Instant::now())
            {
                Seen::New | Seen::Pending => {}
                Seen::Answered(first) => {
                    learn::deliver(&publisher, r.reply, &op_name, first);
                    return;
                }
            }
        }
        let reply = match self.apply(envelope.op).await {
            Ok(data) => answer::ok(data, envelope.transaction.as_ref()),
            Err(e) => {
                tracing::info!(op = %op_name, error = %e, "request refused");
                answer::error(&e.0, envelope.transaction.as_ref())
            }
        };
        if answer::is_ok(&reply) {
            self.replies
                .finish(&envelope.key, &reply, tokio::time::Instant::now());
        }
        learn::deliver(&publisher, r.reply, &op_name, reply);
    }

    async fn apply(&mut self, op: Op) -> Result<Value, RequestError> {
        // A change of the set written down but not finished (an import whose
        // move failed) is finished at the next start with the definitions it
        // journaled: a change made meanwhile would be lost then.
        if op.kind().changes_state() && self.state.journal_pending() {
            return Err(bad(
                "a change of the classifiers could not be finished (see the log): restart edgehead to finish it first",
            ));
        }
        match op {
            Op::Classifiers => Ok(self.list()),
            Op::CreateClassifier { def } => self.create(def).await,
            Op::UpdateClassifier { name, change } => self.update(&name, change).await,
            Op::RenameClassifier { from, to } => self.rename(&from, &to).await,
            Op::DeleteClassifier { name } => self.delete(&name).await,
            Op::ImportBundle {
                bundle,
                as_name,
                mode,
            } => self.import(bundle, as_name.as_deref(), mode).await,
            other => Err(bad(format!(
                "{} is carried out by a classifier, not by the manager",
                other.kind().name()
            ))),
        }
    }

    /// The `classifiers` answer: every classifier's definition, in order.
    fn list(&self) -> Value {
        let list: Vec<Value> = self
            .live
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut v = l.classifier.spec.describe();
                v["origin"] = json!(l.origin);
                v["first"] = json!(i == 0);
                v["definition"] = json!(l.def);
                v
            })
            .collect();
        json!({ "classifiers": list })
    }

    /// The running classifier `name` (exact, else without regard to case).
    fn find(&self, name: &str) -> Result<usize, RequestError> {
        self.live
            .iter()
            .position(|l| l.classifier.name() == name)
            .or_else(|| {
                self.live
                    .iter()
                    .position(|l| names::same(l.classifier.name(), name))
            })
            .ok_or_else(|| bad(format!("there is no classifier \"{name}\"")))
    }

    /// Check `runtime`'s effective list as the configuration is
    /// ([`super::bundles::check`]).
    fn check(
        &self,
        runtime: &RuntimeClassifiers,
        name: &str,
    ) -> Result<Arc<ClassifierSpec>, RequestError> {
        super::bundles::check(&self.settings, runtime, name)
    }

    fn topics(&self, name: &str) -> Arc<ClassifierTopics> {
        Arc::new(ClassifierTopics::new(&self.settings.topic_base, name))
    }

    fn save(&self, runtime: &RuntimeClassifiers) -> Result<(), RequestError> {
        self.state
            .save_runtime_classifiers(runtime)
            .map_err(|e| bad(format!("cannot save the classifiers: {e}")))
    }

    /// Open classifier `name`'s store (creating it).
    fn open(&self, name: &str) -> Result<(Store, OpenReport), RequestError> {
        Store::open(&self.state.classifier_dir(name))
            .map_err(|e| bad(format!("cannot open the classifier's store: {e}")))
    }

    async fn create(&mut self, def: ClassifierConfig) -> Result<Value, RequestError> {
        let mut runtime = self.runtime.clone();
        runtime
            .create(&self.settings.classifier_file, def.clone())
            .map_err(|e| bad(e.0))?;
        let spec = self.check(&runtime, &def.name)?;
        let (store, report) = self.open(&def.name)?;
        self.save(&runtime)?;
        self.runtime = runtime;
        let classifier = Classifier::new(spec.clone(), self.topics(&def.name));
        classifier.keep_recent_in(self.state.classifier_dir(&def.name).join(RECENT));
        tracing::info!(classifier = %def.name, "classifier created");
        self.spawn(
            Starting {
                classifier,
                def,
                origin: Origin::Created,
                store,
                report,
                teach_label: None,
            },
            false,
        );
        self.announce_set().await;
        Ok(spec.describe())
    }

    async fn update(
        &mut self,
        name: &str,
        change: ClassifierChange,
    ) -> Result<Value, RequestError> {
        let i = self.find(name)?;
        let name = self.live[i].classifier.name().to_string();
        let def = change.apply(self.live[i].def.clone());
        let mut runtime = self.runtime.clone();
        runtime
            .replace(&self.settings.classifier_file, &name, def.clone())
            .map_err(|e| bad(e.0))?;
        let spec = self.check(&runtime, &name)?;
        self.save(&runtime)?;
        self.runtime = runtime;
        let retrain = spec.head != self.live[i].classifier.spec.head
            || spec.unknown_threshold != self.live[i].classifier.spec.unknown_threshold;
        let classifier = self.live[i]
            .classifier
            .redefined(spec.clone(), self.live[i].classifier.topics.clone());
        self.restart(i, classifier, def, retrain).await?;
        tracing::info!(classifier = %name, "classifier changed");
        Ok(spec.describe())
    }

    /// Replace `live[i]` by `classifier` with definition `def`: its learner is
    /// stopped and a new one started on its store, in the same place.
    async fn restart(
        &mut self,
        i: usize,
        classifier: Classifier,
        def: ClassifierConfig,
        retrain: bool,
    ) -> Result<(), RequestError> {
        let stopped = self.stop(i).await;
        let origin = stopped.edited();
        self.resume(
            Stopped {
                classifier,
                def,
                origin,
                ..stopped
            },
            retrain,
        )
        .await
    }

    /// Open the store of `s`'s classifier, start its learner in its place and
    /// tell the router, the pipeline and the bridge.
    async fn resume(&mut self, s: Stopped, retrain: bool) -> Result<(), RequestError> {
        let (store, report) = self.open(s.classifier.name())?;
        self.spawn(
            Starting {
                classifier: s.classifier,
                def: s.def,
                origin: s.origin,
                store,
                report,
                teach_label: s.teach_label,
            },
            retrain,
        );
        // `spawn` appends: move it to its place.
        if let Some(l) = self.live.pop() {
            self.live.insert(s.at.min(self.live.len()), l);
        }
        self.announce_set().await;
        Ok(())
    }

    /// Import a bundle ([`super::bundles`]): the classifier of the same name (if
    /// merged into or replaced) is stopped while its store is swapped, and
    /// started again, on the old store when the bundle is refused.
    async fn import(
        &mut self,
        bundle: bytes::Bytes,
        as_name: Option<&str>,
        mode: Mode,
    ) -> Result<Value, RequestError> {
        let settings = self.settings.clone();
        let b = bundle.clone();
        let def = tokio::task::spawn_blocking(move || bundles::peek(&b[..], &settings))
            .await
            .unwrap_or_else(|e| Err(bad(format!("the import failed: {e}"))))?;
        let target = bundles::target(&self.settings, &self.runtime, def, as_name, mode)?;
        let stopped = match target.exists {
            true => {
                let i = self.find(&target.name)?;
                Some(self.stop(i).await)
            }
            false => None,
        };
        let recent = stopped.as_ref().map(|s| s.classifier.recent.clone());
        let (state, settings, t) = (self.state.clone(), self.settings.clone(), target.clone());
        let installed = tokio::task::spawn_blocking(move || {
            bundles::install(&state, &settings, &t, &bundle[..], mode, recent.as_deref())
        })
        .await
        .unwrap_or_else(|e| Err(Failed::Refused(bad(format!("the import failed: {e}")))));
        let staged = match installed {
            Ok(s) => s,
            Err(Failed::Refused(e)) => {
                // Refused: the old store is untouched; its learner starts again.
                if let Some(s) = stopped {
                    self.resume(s, false).await?;
                }
                return Err(e);
            }
            Err(Failed::Unfinished(e)) => {
                // Half moved: the classifier stays stopped (a learner would
                // recreate its directory) until the next start finishes it.
                tracing::error!(classifier = %target.name, error = %e.0, "an import could not be finished: restart edgehead");
                self.announce_set().await;
                return Err(e);
            }
        };
        self.runtime = target.runtime.clone();
        let spec = self.check(&self.runtime, &target.name)?;
        let resumed = match stopped {
            Some(s) => Stopped {
                classifier: s.classifier.redefined(spec, s.classifier.topics.clone()),
                def: target.def.clone(),
                origin: match mode {
                    Mode::Replace => s.edited(),
                    _ => s.origin,
                },
                ..s
            },
            None => {
                let c = Classifier::new(spec, self.topics(&target.name));
                c.keep_recent_in(self.state.classifier_dir(&target.name).join(RECENT));
                Stopped {
                    at: self.live.len(),
                    classifier: c,
                    def: target.def.clone(),
                    origin: Origin::Created,
                    teach_label: None,
                }
            }
        };
        tracing::info!(classifier = %target.name, ?mode, added = staged.added, duplicates = staged.duplicates, samples = staged.samples, "bundle imported");
        self.resume(resumed, true).await?;
        Ok(json!({
            "classifier": target.name,
            "mode": mode,
            "added": staged.added,
            "duplicates": staged.duplicates,
            "samples": staged.samples,
            "classes": staged.classes,
            "backbone": staged.backbone,
        }))
    }

    async fn rename(&mut self, from: &str, to: &str) -> Result<Value, RequestError> {
        let i = self.find(from)?;
        let from = self.live[i].classifier.name().to_string();
        if from == to {
            return Err(bad("from and to are the same name"));
        }
        let def = ClassifierConfig {
            name: to.to_string(),
            ..self.live[i].def.clone()
        };
        let mut runtime = self.runtime.clone();
        runtime
            .replace(&self.settings.classifier_file, &from, def.clone())
            .map_err(|e| bad(e.0))?;
        let spec = self.check(&runtime, to)?;
        let stopped = self.stop(i).await;
        // The pipeline may still be pushing a recent crop: the list's lock is
        // held while the store moves, so none lands in the old directory.
        let moved = {
            let mut recent = stopped
                .classifier
                .recent
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let moved = self.state.rename_classifier(&from, to, &runtime);
            if moved.is_ok() {
                recent.moved_to(self.state.classifier_dir(to).join(RECENT));
            }
            moved
        };
        if let Err(e) = moved {
            // Nothing moved: the classifier goes on under its old name, in its place.
            self.resume(stopped, false).await?;
            return Err(bad(format!("cannot rename the classifier's store: {e}")));
        }
        self.runtime = runtime;
        let teach_label = stopped.teach_label.clone();
        let origin = stopped.edited();
        let classifier = stopped.classifier.redefined(spec.clone(), self.topics(to));
        self.resume(
            Stopped {
                classifier,
                def,
                origin,
                ..stopped
            },
            false,
        )
        .await?;
        if let Some(label) = teach_label {
            self.shared
                .notifier
                .notify_wait(Event::TeachLabel {
                    classifier: to.to_string(),
                    label,
                })
                .await;
        }
        tracing::info!(from = %from, to, "classifier renamed");
        Ok(spec.describe())
    }

    async fn delete(&mut self, name: &str) -> Result<Value, RequestError> {
        let i = self.find(name)?;
        let name = self.live[i].classifier.name().to_string();
        if self.live.len() == 1 {
            return Err(bad(
                "this is the only classifier: the daemon needs one; create another first",
            ));
        }
        let mut runtime = self.runtime.clone();
        runtime
            .delete(&self.settings.classifier_file, &name)
            .map_err(|e| bad(e.0))?;
        let stopped = self.stop(i).await;
        // As in a rename: no recent crop may recreate the deleted directory.
        let deleted = {
            let mut recent = stopped
                .classifier
                .recent
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let deleted = self.state.delete_classifier(&name, &runtime);
            if deleted.is_ok() {
                recent.forget_files();
            }
            deleted
        };
        if let Err(e) = deleted {
            // Nothing was deleted: the classifier goes on, in its place.
            self.resume(stopped, false).await?;
            return Err(bad(format!("cannot delete the classifier's store: {e}")));
        }
        self.runtime = runtime;
        self.announce_set().await;
        tracing::info!(classifier = %name, "classifier deleted");
        Ok(json!({ "deleted": name }))
    }
}
