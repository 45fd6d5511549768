//! Wiring: build every component from [`Settings`], connect them with channels,
//! spawn the tasks, and shut them down in order.
//!
//! Start-up problems (model, state directory, source, broker address) surface from
//! [`Daemon::build`] before anything runs; [`Daemon::run`] then runs until the
//! shutdown future resolves or a task fails.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::backbone::{EmbedError, Embedder, TractEmbedder};
use crate::backoff::Backoff;
use crate::classifier::storage::StateDir;
use crate::classifier::Classifier;
use crate::config::Settings;
use crate::head::TrainParams;
use crate::learn::Learner;
use crate::mqtt::{self, broker, Publisher};
use crate::pipeline::Inference;
use crate::source::{self, CaptureError, SourceState};
use crate::stats::{self, Snapshot, Stats};
use crate::store::{OpenReport, Store, StoreError};

/// Problems found before the daemon starts: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Model(#[from] EmbedError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("frame source: {0}")]
    Source(#[from] CaptureError),
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    #[error("MQTT: {0}")]
    Mqtt(#[from] mqtt::MqttError),
}

/// Why a running daemon stopped with an error: exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("task {task} failed: {why}")]
    TaskFailed { task: &'static str, why: String },
    #[error("shutdown grace period ({grace:?}) ran out; still running: {stuck}")]
    Stuck {
        grace: Duration,
        stuck: &'static str,
    },
}

/// Everything built and checked, nothing running yet.
pub struct Daemon {
    settings: Settings,
    embedder: Arc<TractEmbedder>,
    /// Held (locked) while the daemon runs.
    _state: StateDir,
    /// Per classifier, in configuration order: handles, store, what opening found,
    /// its request queue.
    classifiers: Vec<(Classifier, Store, OpenReport, mpsc::Receiver<mqtt::Request>)>,
    opener: source::Opener,
    broker: Option<broker::EmbeddedBroker>,
    stats: Arc<Stats>,
    publisher: Publisher,
    connection: mqtt::Connection,
    ha_rx: mpsc::Receiver<crate::homeassistant::Event>,
}

/// Load the backbone described by the settings (seconds: the model is optimized).
pub fn load_backbone(settings: &Settings) -> Result<TractEmbedder, EmbedError> {
    let e = TractEmbedder::load(&settings.raw.backbone)?;
    tracing::info!(
        backbone = %e.id(),
        dim = e.dim(),
        threads = e.threads,
        precision = ?e.precision,
        load_ms = e.load_time.as_millis() as u64,
        "backbone loaded"
    );
    if e.precision == crate::config::Precision::F16 && !tract_linalg::has_fp16() {
        tracing::warn!(
            "backbone.precision = \"f16\" on a CPU without FP16 arithmetic: tract emulates \
             it, several times slower than f32; use \"auto\" or \"f32\""
        );
    }
    Ok(e)
}

impl Daemon {
    pub fn build(settings: Settings) -> Result<Self, StartError> {
        let embedder = Arc::new(load_backbone(&settings)?);
        let first = settings
            .classifiers
            .first()
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let (state, migrated) = StateDir::open(settings.state_dir(), &first)?;
        if let Some(m) = &migrated {
            tracing::info!(dir = %settings.state_dir().display(), into = %m.into, moved = %m.moved.join(","), "moved the single sample store of edgehead 0.1 into a classifier");
            if !settings.classifiers.iter().any(|c| c.name == m.into) {
                tracing::warn!(into = %m.into, "an interrupted move finished into a classifier that is no longer configured: rename its directory under classifiers/ to the classifier that should have the samples");
            }
        }
        let mut disk_full = false;
        let mut opened = Vec::new();
        for spec in &settings.classifiers {
            let dir = state.classifier_dir(&spec.name);
            let (store, report) = Store::open(&dir)?;
            let classes = store.classes();
            tracing::info!(
                classifier = %spec.name,
                dir = %dir.display(),
                samples = report.samples,
                classes = report.classes,
                by_class = %classes.iter().map(|(l, n)| format!("{l}:{n}")).collect::<Vec<_>>().join(","),
                orphans_removed = report.removed_orphans,
                missing_thumbnails = report.missing_thumbnails.len(),
                head_version = report.head_version.unwrap_or(0),
                dropped_without_files = report.dropped_missing.len(),
                "sample store opened"
            );
            disk_full |= report.disk_full;
            opened.push((spec.clone(), store, report));
        }
        if disk_full {
            tracing::warn!(dir = %settings.state_dir().display(), "the state directory's disk is full: edgehead runs and predicts, deleting works, but no sample can be added until space is freed");
        }
        let opener = source::opener(&settings.raw)?;
        let broker = match settings.embedded_broker {
            Some(addr) => Some(broker::start(
                addr,
                settings.raw.mqtt.embedded_broker.max_connections,
                settings.raw.mqtt.max_packet_size,
            )?),
            None => None,
        };
        // The MQTT client is built here so that TLS files that cannot be read are a
        // start-up error; it connects once the daemon runs.
        let stats = Arc::new(Stats::default());
        stats
            .disk_full
            .store(disk_full, std::sync::atomic::Ordering::Relaxed);
        let mut requests_tx = Vec::new();
        let mut classifiers = Vec::new();
        for (spec, store, report) in opened {
            let (tx, rx) = mpsc::channel(settings.raw.learn.queue);
            requests_tx.push(tx);
            classifiers.push((Classifier::new(spec), store, report, rx));
        }
        let (ha_tx, ha_rx) = mpsc::channel(crate::homeassistant::QUEUE);
        let (publisher, connection) = mqtt::connect(
            &settings,
            broker.as_ref().map(|b| b.connect_addr),
            requests_tx,
            stats.clone(),
            ha_tx,
        )?;
        Ok(Self {
            settings,
            embedder,
            _state: state,
            classifiers,
            opener,
            broker,
            stats,
            publisher,
            connection,
            ha_rx,
        })
    }

    /// Run until `shutdown` resolves (then stop in order) or a task fails.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
        let Daemon {
            settings,
            embedder,
            _state,
            classifiers,
            opener,
            broker,
            stats,
            publisher,
            connection,
            ha_rx,
        } = self;
        let started = Instant::now();
        let (frame_tx, frame_rx) = watch::channel(None);
        let demand = Arc::new(source::Demand::default());
        let (state_tx, state_rx) = watch::channel(SourceState::Starting);
        let embedder_dyn: Arc<dyn Embedder> = embedder.clone();
        let drain = CancellationToken::new();
        let finish = CancellationToken::new();
        let mut mqtt_task = tokio::spawn(connection.run(drain.clone(), finish.clone()));

        let ha_file = crate::homeassistant::saved_file(settings.state_dir());
        let saved_ha = crate::homeassistant::Saved::load(&ha_file)
            .sanitize(&settings.raw.homeassistant.prefix, &settings.device_id);
        let all = Arc::new(settings.classifiers.clone());
        let handles: Vec<Classifier> = classifiers.iter().map(|c| c.0.clone()).collect();
        let mut learners = tokio::task::JoinSet::new();
        for (index, (classifier, store, report, requests_rx)) in classifiers.into_iter().enumerate()
        {
            let name = classifier.spec.name.clone();
            let params =
                TrainParams::from_config(&classifier.spec.head, classifier.spec.unknown_threshold);
            let mut learner = Learner::new(
                requests_rx,
                store,
                embedder_dyn.clone(),
                (classifier, index, all.clone()),
                frame_rx.clone(),
                publisher.clone(),
                params,
                settings.raw.learn.clone(),
            );
            learner.restore_head(&report);
            learner.set_teach_label(saved_ha.teach_labels.get(&name).cloned());
            learners.spawn(learner.run());
        }
        let stop_ha = CancellationToken::new();
        let mut ha_task = tokio::spawn(crate::homeassistant::run(
            home_assistant_bridge(&settings, &publisher, &handles, saved_ha),
            ha_rx,
            publisher.clone(),
            ha_file,
            stop_ha.clone(),
        ));
        let mut learn_task = tokio::spawn(async move {
            // One learner per classifier; the first to panic fails the daemon.
            while let Some(r) = learners.join_next().await {
                r?;
            }
            Ok::<(), tokio::task::JoinError>(())
        });

        let inference = Inference {
            frames: frame_rx,
            embedder: embedder_dyn.clone(),
            classifiers: handles.clone(),
            sink: publisher.clone(),
            stats: stats.clone(),
            demand: demand.clone(),
            recent_side: settings.raw.learn.thumbnail_side,
        };
        let mut infer_task = tokio::spawn(inference.run());

        let stop_status = CancellationToken::new();
        let status_source = state_rx.clone();
        let status = StatusReporter {
            publisher: publisher.clone(),
            stats: stats.clone(),
            classifiers: handles,
            backbone: embedder.id().to_string(),
            source: state_rx,
            started,
            interval: Duration::from_secs(settings.raw.log.summary_interval_secs),
            rates: json!({
                "interval_s": null, "fps_captured": null, "fps_inferred": null,
                "backbone_ms": null, "backbone_runs": null, "crops_skipped": null,
                "frames_dropped": null,
            }),
        };
        let mut status_task = tokio::spawn(status.run(stop_status.clone()));

        let src = &settings.raw.source;
        let backoff = match src.kind {
            crate::config::SourceKind::Command => {
                Backoff::from_millis(src.command.restart_min_ms, src.command.restart_max_ms)
            }
            crate::config::SourceKind::Http => {
                Backoff::from_millis(src.http.reconnect_min_ms, src.http.reconnect_max_ms)
            }
            _ => Backoff::from_millis(src.camera.reconnect_min_ms, src.camera.reconnect_max_ms),
        };
        let capture = source::spawn(opener, backoff, frame_tx, state_tx, stats.clone(), demand)
            .map_err(|e| RunError::TaskFailed {
                task: "capture",
                why: e.to_string(),
            })?;
        let capture_stop = capture.stop.clone();
        let mut capture_done = capture.done;
        let mut broker_ended = broker.map(|b| b.ended);
        tracing::info!(
            topics = %publisher.topics.base,
            source = ?settings.raw.source.kind,
            "edgehead running"
        );
        // systemd (Type=notify): ready now; watchdog pings while inference progresses.
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status("running"),
        ]);
        if let Some(period) = sd_notify::watchdog_enabled() {
            tokio::spawn(watchdog(
                period / 2,
                stats.clone(),
                status_source.clone(),
                stop_status.clone(),
            ));
        }

        // Wait for the shutdown signal, or the first task to fail.
        tokio::pin!(shutdown);
        let mut capture_finished = false;
        let mut infer_finished = false;
        let failure: Option<RunError> = loop {
            tokio::select! {
                _ = &mut shutdown => break None,
                r = &mut capture_done, if !capture_finished => {
                    capture_finished = true;
                    match r {
                        Ok(Ok(())) => tracing::info!("capture finished; the daemon keeps serving MQTT requests"),
                        Ok(Err(e)) => break Some(RunError::TaskFailed { task: "capture", why: e.to_string() }),
                        Err(_) => break Some(RunError::TaskFailed { task: "capture", why: "thread ended without a result".into() }),
                    }
                }
                r = &mut infer_task, if !infer_finished => {
                    infer_finished = true;
                    match r {
                        Ok(Ok(())) if capture_finished => {}
                        Ok(Ok(())) => break Some(RunError::TaskFailed { task: "inference", why: "ended early".into() }),
                        Ok(Err(e)) => break Some(RunError::TaskFailed { task: "inference", why: e.to_string() }),
                        Err(e) => break Some(RunError::TaskFailed { task: "inference", why: e.to_string() }),
                    }
                }
                r = &mut learn_task => break Some(RunError::TaskFailed { task: "learn", why: join_why(r) }),
                r = &mut mqtt_task => break Some(RunError::TaskFailed { task: "mqtt", why: join_why(r) }),
                r = &mut status_task => break Some(RunError::TaskFailed { task: "status", why: join_why(r) }),
                r = &mut ha_task => break Some(RunError::TaskFailed { task: "homeassistant", why: join_why(r) }),
                r = async { match broker_ended.as_mut() { Some(rx) => rx.await.unwrap_or_else(|_| "gone".into()), None => std::future::pending().await } } => {
                    break Some(RunError::TaskFailed { task: "embedded broker", why: r });
                }
            }
        };
        match &failure {
            None => tracing::info!("shutting down"),
            Some(e) => tracing::error!(error = %e, "shutting down after a failure"),
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);

        // Stop in order: capture, inference, learning, status, then MQTT (offline, disconnect).
        let grace = settings.shutdown_grace();
        let deadline = tokio::time::Instant::now() + grace;
        let stuck = |stuck| RunError::Stuck { grace, stuck };
        capture_stop.stop();
        // Tasks that already ended (and were awaited in the loop above) are skipped.
        let ordered = async {
            if !capture_finished {
                within(deadline, "capture", &mut capture_done).await?;
            }
            if !infer_finished && !infer_task.is_finished() {
                within(deadline, "inference", &mut infer_task).await?;
            }
            drain.cancel();
            if !learn_task.is_finished() {
                within(deadline, "learn", &mut learn_task).await?;
            }
            stop_status.cancel();
            if !status_task.is_finished() {
                within(deadline, "status", &mut status_task).await?;
            }
            stop_ha.cancel();
            if !ha_task.is_finished() {
                within(deadline, "homeassistant", &mut ha_task).await?;
            }
            finish.cancel();
            if !mqtt_task.is_finished() {
                within(deadline, "mqtt", &mut mqtt_task).await?;
            }
            Ok(())
        };
        if let Err(stage) = ordered.await {
            return Err(failure.unwrap_or(stuck(stage)));
        }
        let s = stats.snapshot();
        tracing::info!(
            frames_captured = s.frames_captured,
            frames_inferred = s.frames_inferred,
            frames_dropped = s.frames_dropped,
            predictions_published = s.predictions_published,
            uptime_s = started.elapsed().as_secs(),
            "stopped"
        );
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Ping systemd's watchdog every `every` while frames are being inferred, or while
/// there is nothing to infer (camera reconnecting, source ended, no new frame
/// since the last inferred one: a snapshot camera asked once a minute). A hung
/// backbone or a stuck runtime stops the pings, and systemd restarts the daemon.
/// The Home Assistant bridge of this configuration, with each classifier's
/// restored classes (so that the first announcement keeps the entities of the
/// classes that exist) and what the last run saved.
fn home_assistant_bridge(
    settings: &Settings,
    publisher: &Publisher,
    classifiers: &[Classifier],
    saved: crate::homeassistant::Saved,
) -> crate::homeassistant::Bridge {
    let ha = &settings.raw.homeassistant;
    let ctx = ha
        .discovery
        .then(|| crate::homeassistant::discovery::Context {
            prefix: ha.prefix.clone(),
            device_id: settings.device_id.clone(),
            availability: publisher.topics.availability.clone(),
            status: publisher.topics.status.clone(),
            expire_after: ha.expire_after_secs,
            status_expire_after: 3 * settings.raw.log.summary_interval_secs.max(1) + 5,
            class_sensors: ha.class_sensors,
            image: ha.image_interval_secs > 0.0,
        });
    let classes = classifiers
        .iter()
        .map(|c| {
            c.head
                .load()
                .as_ref()
                .map(|h| h.classes.clone())
                .unwrap_or_default()
        })
        .collect();
    let heartbeat = match ha.expire_after_secs {
        0 => Duration::from_secs(60),
        s => Duration::from_secs_f64(s as f64 / 3.0),
    };
    crate::homeassistant::Bridge::new(
        ctx,
        publisher.classifiers.to_vec(),
        classes,
        saved,
        heartbeat,
    )
}

/// Tell systemd's watchdog the daemon is alive while frames are inferred (or the
/// source is not running, or every captured frame is accounted for).
async fn watchdog(
    every: Duration,
    stats: Arc<Stats>,
    source: watch::Receiver<SourceState>,
    stop: CancellationToken,
) {
    use std::sync::atomic::Ordering;
    let mut tick = tokio::time::interval(every);
    let mut last = stats.frames_inferred.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                let now = stats.frames_inferred.load(Ordering::Relaxed);
                let waiting = !matches!(*source.borrow(), SourceState::Running);
                // Every captured frame is accounted for: nothing waits for a hung
                // backbone (a source may send a frame a minute, or less).
                let accounted = now
                    + stats.frames_dropped.load(Ordering::Relaxed)
                    + stats.frame_errors.load(Ordering::Relaxed);
                let idle = stats.frames_captured.load(Ordering::Relaxed) <= accounted;
                if now != last || waiting || idle {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
                last = now;
            }
        }
    }
}

/// Wait for `fut` until `deadline`; `Err(name)` when it is still running then.
async fn within<F: Future>(
    deadline: tokio::time::Instant,
    name: &'static str,
    fut: F,
) -> Result<(), &'static str> {
    tokio::time::timeout_at(deadline, fut)
        .await
        .map(|_| ())
        .map_err(|_| name)
}

fn join_why<T: std::fmt::Debug>(r: Result<T, tokio::task::JoinError>) -> String {
    match r {
        Ok(v) => format!("ended unexpectedly ({v:?})"),
        Err(e) if e.is_panic() => format!("panicked: {e}"),
        Err(e) => e.to_string(),
    }
}

/// Publishes the retained status and logs the periodic summary.
struct StatusReporter {
    publisher: Publisher,
    stats: Arc<Stats>,
    classifiers: Vec<Classifier>,
    backbone: String,
    source: watch::Receiver<SourceState>,
    started: Instant,
    interval: Duration,
    /// Rates over the last summary interval (`status.rates`).
    rates: Value,
}

impl StatusReporter {
    fn status(&self) -> serde_json::Value {
        let classifiers: Map<String, Value> = self
            .classifiers
            .iter()
            .map(|c| (c.spec.name.clone(), c.status()))
            .collect();
        // The first classifier's head and classes also at the top (single-classifier
        // readers of edgehead 0.1).
        let first = self
            .classifiers
            .first()
            .and_then(|c| classifiers.get(&c.spec.name))
            .cloned()
            .unwrap_or_default();
        json!({
            "state": "running",
            "version": env!("CARGO_PKG_VERSION"),
            "source": *self.source.borrow(),
            "backbone": self.backbone,
            "head": first["head"],
            "classes": first["classes"],
            "classifiers": classifiers,
            "uptime_s": self.started.elapsed().as_secs(),
            "stats": self.stats.snapshot(),
            "disk_full": self.stats.disk_full.load(std::sync::atomic::Ordering::Relaxed),
            "rss_kib": stats::rss_kib(),
            "rates": self.rates,
        })
    }

    fn publish(&self) {
        self.publisher.try_publish_status(&self.status());
    }

    async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.tick().await;
        let mut last = Snapshot::default();
        let mut last_gate = (0, 0);
        let mut last_at = Instant::now();
        let mut source_open = true;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                changed = self.source.changed(), if source_open => {
                    if changed.is_err() {
                        source_open = false;
                    }
                    self.publish();
                }
                _ = tick.tick() => {
                    let now = self.stats.snapshot();
                    let d = now.since(&last);
                    let secs = last_at.elapsed().as_secs_f64().max(1e-9);
                    let gate = self.classifiers.iter().fold((0, 0), |(r, s), c| (r + c.gate.runs(), s + c.gate.skips()));
                    tracing::info!(
                        backbone_runs = gate.0 - last_gate.0,
                        crops_skipped = gate.1 - last_gate.1,
                        fps_captured = format!("{:.1}", d.frames_captured as f64 / secs),
                        fps_inferred = format!("{:.1}", d.frames_inferred as f64 / secs),
                        frames_dropped = d.frames_dropped,
                        frame_errors = d.frame_errors,
                        published = d.predictions_published,
                        publish_dropped = d.predictions_dropped,
                        requests = d.requests,
                        mean_latency_ms = format!("{:.1}", d.mean_latency_ms()),
                        rss_mib = stats::rss_kib().unwrap_or(0) / 1024,
                        "summary"
                    );
                    self.rates = json!({
                        "interval_s": (secs * 10.0).round() / 10.0,
                        "fps_captured": (d.frames_captured as f64 / secs * 100.0).round() / 100.0,
                        "fps_inferred": (d.frames_inferred as f64 / secs * 100.0).round() / 100.0,
                        "backbone_ms": d.mean_backbone_ms().map(|v| (v * 10.0).round() / 10.0),
                        "backbone_runs": gate.0 - last_gate.0,
                        "crops_skipped": gate.1 - last_gate.1,
                        "frames_dropped": d.frames_dropped,
                    });
                    last = now;
                    last_gate = gate;
                    last_at = Instant::now();
                    self.publish();
                }
            }
        }
    }
}
