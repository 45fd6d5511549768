//! Wiring: build every component from [`Settings`], connect them with channels,
//! spawn the tasks, and shut them down in order.
//!
//! Start-up problems (model, state directory, source, broker address) surface from
//! [`Daemon::build`] before anything runs; [`Daemon::run`] then runs until the
//! shutdown future resolves or a task fails.
//!
//! - [`status`]: the status topic, the summary line and systemd's watchdog;
//!   [`supervise`]: the tasks, watched together and stopped in order.

pub mod bundles;
pub mod manager;
mod status;
mod supervise;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::backbone::{EmbedError, Embedder, TractEmbedder};
use crate::classifier::Classifier;
use crate::config::runtime::RuntimeClassifiers;
use crate::config::{ClassifierConfig, ConfigError, Precision, Settings};
use crate::homeassistant::{self, Notifier};
use crate::learn::{self, Router};
use crate::mqtt::{self, broker, ClassifierTopics, Publisher};
use crate::pipeline::{Inference, MqttSink};
use crate::source::{self, CaptureError, SourceState};
use crate::stats::Stats;
use crate::store::state_dir::{self, StateDir};
use crate::store::{Store, StoreError, RECENT};
use crate::web;
use status::StatusReporter;
use supervise::{Ended, Stage, Supervisor};

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
    #[error(transparent)]
    Web(#[from] web::WebError),
    /// `learn.disabled_operations` names something that is no operation.
    #[error("{0}")]
    Disabled(String),
    #[error("the classifiers created or changed at run time ({file}) do not fit this configuration: {error}; fix the configuration or move that file away")]
    Runtime {
        file: std::path::PathBuf,
        error: ConfigError,
    },
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
    state: Arc<StateDir>,
    /// The run-time classifier definitions, and every classifier opened.
    runtime: RuntimeClassifiers,
    classifiers: Vec<manager::Starting>,
    router: Router,
    manager_rx: mpsc::Receiver<learn::Request>,
    opener: source::Opener,
    broker: Option<broker::EmbeddedBroker>,
    stats: Arc<Stats>,
    publisher: Publisher,
    connection: mqtt::Connection,
    notifier: Notifier,
    ha_rx: mpsc::Receiver<homeassistant::Event>,
    /// The console, bound (`None` when `web.enabled` is false).
    web: Option<web::Bound>,
}

/// Load the backbone described by the settings (seconds: the model is optimized).
pub fn load_backbone(settings: &Settings) -> Result<TractEmbedder, EmbedError> {
    let e = TractEmbedder::load(&settings.backbone)?;
    tracing::info!(
        backbone = %e.id(),
        dim = e.dim(),
        threads = e.threads,
        precision = ?e.precision,
        load_ms = e.load_time.as_millis() as u64,
        "backbone loaded"
    );
    if e.precision == Precision::F16 && !tract_linalg::has_fp16() {
        tracing::warn!(
            "backbone.precision = \"f16\" on a CPU without FP16 arithmetic: tract emulates \
             it, several times slower than f32; use \"auto\" or \"f32\""
        );
    }
    Ok(e)
}

/// The MQTT client id when `mqtt.client_id` is not set:
/// `edgehead-<device_id>-<installation id>`. A client that guesses
/// `edgehead-<device_id>` no longer takes the daemon's session over. When the id
/// cannot be kept (a full disk), one for this run.
fn client_id(device_id: &str, state: &StateDir) -> String {
    let id = state.installation_id().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot keep the installation id; the MQTT client id changes at every start until it can be saved");
        state_dir::random_hex().unwrap_or_else(|_| format!("{:016x}", std::process::id()))
    });
    format!("edgehead-{device_id}-{id}")
}

/// Lock the state directory (migrating a layout of edgehead 0.1), lay the
/// run-time classifier definitions over the configuration's, and open every
/// classifier's store.
fn open_state(
    settings: &Settings,
    saved_ha: &homeassistant::Saved,
) -> Result<(StateDir, RuntimeClassifiers, Vec<manager::Starting>), StartError> {
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
    let runtime = state.runtime_classifiers()?;
    let effective = runtime.effective(&settings.classifier_file);
    let defs: Vec<ClassifierConfig> = effective.iter().map(|(c, _)| c.clone()).collect();
    let specs = settings.resolve(&defs).map_err(|e| StartError::Runtime {
        file: state.root.join(state_dir::RUNTIME),
        error: e,
    })?;
    let mut starting = Vec::new();
    for ((def, origin), spec) in effective.into_iter().zip(specs) {
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
        let topics = Arc::new(ClassifierTopics::new(&settings.topic_base, &spec.name));
        let classifier = Classifier::new(spec.clone(), topics);
        classifier.keep_recent_in(dir.join(RECENT));
        starting.push(manager::Starting {
            teach_label: saved_ha.teach_labels.get(&spec.name).cloned(),
            classifier,
            def,
            origin,
            store,
            report,
        });
    }
    if starting.iter().any(|s| s.report.disk_full) {
        tracing::warn!(dir = %settings.state_dir().display(), "the state directory's disk is full: edgehead runs and predicts, deleting works, but no sample can be added until space is freed");
    }
    Ok((state, runtime, starting))
}

impl Daemon {
    pub fn build(mut settings: Settings) -> Result<Self, StartError> {
        let embedder = Arc::new(load_backbone(&settings)?);
        let saved_ha = homeassistant::Saved::load(&homeassistant::saved_file(settings.state_dir()))
            .sanitize(&settings.homeassistant.prefix, &settings.device_id);
        let (state, runtime, classifiers) = open_state(&settings, &saved_ha)?;
        // The state directory names this daemon's processes (one daemon per
        // directory): what a killed predecessor's command source left goes now.
        #[cfg(target_os = "linux")]
        source::lineage::adopt(
            &std::fs::canonicalize(settings.state_dir())
                .unwrap_or_else(|_| settings.state_dir().to_path_buf())
                .display()
                .to_string(),
        );
        if settings.mqtt.client_id.is_empty() {
            settings.client_id = client_id(&settings.device_id, &state);
        }
        let opener = source::opener(&settings.source, &settings.learn)?;
        let broker = match settings.embedded_broker {
            Some(addr) => Some(broker::start(
                addr,
                settings.mqtt.embedded_broker.max_connections,
                settings.mqtt.max_packet_size,
                {
                    let b = &settings.mqtt.embedded_broker;
                    (!b.username.is_empty()).then(|| (b.username.clone(), b.password.clone()))
                },
            )?),
            None => None,
        };
        let stats = Arc::new(Stats::default());
        stats.disk_full.store(
            classifiers.iter().any(|s| s.report.disk_full),
            std::sync::atomic::Ordering::Relaxed,
        );
        // The routes are set when the manager starts the learners.
        let (manager_tx, manager_rx) = mpsc::channel(settings.learn.queue);
        let router = Router::new(Vec::new(), Some(manager_tx));
        router.disable(
            learn::ops::disabled_operations(&settings.learn.disabled_operations)
                .map_err(StartError::Disabled)?,
        );
        // The MQTT client is built here so that TLS files that cannot be read are a
        // start-up error; it connects once the daemon runs.
        let (publisher, connection) = mqtt::connect(
            &settings,
            broker.as_ref().map(|b| b.connect_addr),
            Box::new(router.clone()),
            stats.clone(),
        )?;
        let (notifier, ha_rx) = Notifier::channel();
        let web = settings
            .web_listen
            .map(|addr| web::bind(&settings, addr))
            .transpose()?;
        Ok(Self {
            settings,
            embedder,
            state: Arc::new(state),
            runtime,
            classifiers,
            router,
            manager_rx,
            opener,
            broker,
            stats,
            publisher,
            connection,
            notifier,
            ha_rx,
            web,
        })
    }

    /// Run until `shutdown` resolves (then stop in order) or a task fails.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
        let started = Instant::now();
        let grace = self.settings.shutdown_grace;
        let mut running = self.spawn()?;
        tracing::info!(
            topics = %running.topic_base,
            source = ?running.source_kind,
            console = running.console.as_deref().unwrap_or("off"),
            "edgehead running"
        );
        // systemd (Type=notify): ready now; watchdog pings while inference progresses.
        let _ = sd_notify::notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status("running"),
        ]);
        let failure = running.watch(shutdown).await;
        match &failure {
            None => tracing::info!("shutting down"),
            Some(e) => tracing::error!(error = %e, "shutting down after a failure"),
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        if let Err(stage) = running.stop(tokio::time::Instant::now() + grace).await {
            return Err(failure.unwrap_or(RunError::Stuck {
                grace,
                stuck: stage,
            }));
        }
        let s = running.stats.snapshot();
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

    /// Start every task.
    fn spawn(self) -> Result<Running, RunError> {
        let Daemon {
            settings,
            embedder,
            state,
            runtime,
            classifiers,
            router,
            manager_rx,
            opener,
            broker,
            stats,
            publisher,
            connection,
            notifier,
            ha_rx,
            web,
        } = self;
        let settings = Arc::new(settings);
        let mut tasks = Supervisor::default();
        let (frame_tx, frame_rx) = watch::channel(None);
        let demand = Arc::new(source::Demand::default());
        let (state_tx, state_rx) = watch::channel(SourceState::Starting);
        let embedder_dyn: Arc<dyn Embedder> = embedder.clone();
        let tokens = Tokens::default();
        let shared = learn::Shared {
            embedder: embedder_dyn.clone(),
            frames: frame_rx.clone(),
            publisher: publisher.clone(),
            notifier: notifier.clone(),
            stats: stats.clone(),
            config: settings.learn.clone(),
        };
        let (set_tx, set_rx) = watch::channel(Arc::new(Vec::new()));
        let console = web
            .as_ref()
            .map(|b| web::public_url(&settings.web, b.addr, &web::host_name()));
        spawn_home_assistant(
            &mut tasks,
            &settings,
            &publisher,
            &classifiers,
            ha_rx,
            console.clone(),
            tokens.ha.clone(),
        );
        let web_router = router.clone();
        let manager = manager::Manager::start(
            classifiers,
            manager_rx,
            router,
            settings.clone(),
            state,
            runtime,
            shared,
            set_tx,
        );
        tasks.spawn(Stage::Learn, manager.run(tokens.drain.clone()));
        tasks.spawn(
            Stage::Mqtt,
            done(connection.run(tokens.drain.clone(), tokens.finish.clone())),
        );
        let frame_rx_web = frame_rx.clone();
        let inference = Inference {
            frames: frame_rx,
            embedder: embedder_dyn,
            classifiers: set_rx.clone(),
            sink: MqttSink::new(publisher.clone(), notifier, &settings.homeassistant),
            stats: stats.clone(),
            demand: demand.clone(),
            recent_side: settings.learn.thumbnail_side,
        };
        tasks.spawn(Stage::Inference, async move {
            inference.run().await.map_err(|e| e.to_string())
        });
        let status_rx = spawn_status(
            &mut tasks,
            StatusReporter::new(
                publisher.clone(),
                stats.clone(),
                set_rx.clone(),
                embedder.id().to_string(),
                state_rx.clone(),
                Duration::from_secs(settings.log.summary_interval_secs),
            ),
            &stats,
            state_rx.clone(),
            tokens.status.clone(),
        );
        if let Some(bound) = web {
            let handles = web::Handles {
                router: web_router,
                classifiers: set_rx.clone(),
                frames: frame_rx_web,
                source: state_rx.clone(),
                status: status_rx,
                stats: stats.clone(),
                publisher: publisher.clone(),
                state_dir: settings.state_dir().to_path_buf(),
            };
            let run = web::run(bound, settings.clone(), handles, tokens.web.clone());
            tasks.spawn(Stage::Web, done(run));
        }
        let capture_stop = spawn_capture(
            &mut tasks, opener, &settings, frame_tx, state_tx, &stats, demand,
        )?;
        if let Some(b) = broker {
            tasks.spawn(Stage::Broker, async move {
                Err(b.ended.await.unwrap_or_else(|_| "gone".into()))
            });
        }
        Ok(Running {
            tasks,
            tokens,
            capture_stop,
            stats,
            topic_base: settings.topic_base.clone(),
            source_kind: settings.source.kind,
            console,
        })
    }
}

/// Start the status reporter and systemd's watchdog; the status as the reporter
/// publishes it, for the console.
fn spawn_status(
    tasks: &mut Supervisor,
    reporter: StatusReporter,
    stats: &Arc<Stats>,
    source: watch::Receiver<SourceState>,
    stop: CancellationToken,
) -> watch::Receiver<serde_json::Value> {
    let rx = reporter.latest();
    if let Some(period) = sd_notify::watchdog_enabled() {
        tokio::spawn(status::watchdog(
            period / 2,
            stats.clone(),
            source,
            stop.clone(),
        ));
    }
    tasks.spawn(Stage::Status, done(reporter.run(stop)));
    rx
}

/// Start the Home Assistant bridge with what the last run saved.
fn spawn_home_assistant(
    tasks: &mut Supervisor,
    settings: &Settings,
    publisher: &Publisher,
    classifiers: &[manager::Starting],
    events: mpsc::Receiver<homeassistant::Event>,
    console: Option<String>,
    stop: CancellationToken,
) {
    let file = homeassistant::saved_file(settings.state_dir());
    let saved = homeassistant::Saved::load(&file)
        .sanitize(&settings.homeassistant.prefix, &settings.device_id);
    let bridge = home_assistant_bridge(settings, publisher, classifiers, saved, console);
    tasks.spawn(
        Stage::HomeAssistant,
        done(homeassistant::run(
            bridge,
            events,
            publisher.clone(),
            file,
            stop,
        )),
    );
}

/// Start the capture thread, watched as a task; returns its stop handle.
fn spawn_capture(
    tasks: &mut Supervisor,
    opener: source::Opener,
    settings: &Settings,
    frame_tx: watch::Sender<Option<Arc<source::Frame>>>,
    state_tx: watch::Sender<SourceState>,
    stats: &Arc<Stats>,
    demand: Arc<source::Demand>,
) -> Result<Arc<source::Stop>, RunError> {
    let capture = source::spawn(
        opener,
        source::backoff(&settings.source),
        frame_tx,
        state_tx,
        stats.clone(),
        demand,
    )
    .map_err(|e| RunError::TaskFailed {
        task: "capture",
        why: e.to_string(),
    })?;
    let done = capture.done;
    tasks.spawn(Stage::Capture, async move {
        match done.await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("thread ended without a result".into()),
        }
    });
    Ok(capture.stop)
}

/// A task that only returns when it is done: it ends `Ok`.
async fn done(task: impl Future<Output = ()>) -> Ended {
    task.await;
    Ok(())
}

/// What stops each stage (capture has its own [`source::Stop`]; inference ends
/// when capture's frames end).
#[derive(Default)]
struct Tokens {
    /// The console stops serving (first: no request arrives while the rest stops).
    web: CancellationToken,
    /// The MQTT task stops handing out requests: the learners end.
    drain: CancellationToken,
    status: CancellationToken,
    ha: CancellationToken,
    /// The MQTT task publishes `offline` and disconnects.
    finish: CancellationToken,
}

/// The running daemon.
struct Running {
    tasks: Supervisor,
    tokens: Tokens,
    capture_stop: Arc<source::Stop>,
    stats: Arc<Stats>,
    topic_base: String,
    source_kind: crate::config::SourceKind,
    /// The console's URL, when it runs.
    console: Option<String>,
}

impl Running {
    /// Wait for `shutdown` (`None`) or the first task to fail (its error).
    async fn watch(&mut self, shutdown: impl Future<Output = ()>) -> Option<RunError> {
        tokio::pin!(shutdown);
        loop {
            let (stage, ended) = tokio::select! {
                _ = &mut shutdown => return None,
                next = self.tasks.next() => next?,
            };
            let why = match (stage, ended) {
                (Stage::Capture, Ok(())) => {
                    tracing::info!("capture finished; the daemon keeps serving MQTT requests");
                    continue;
                }
                (Stage::Inference, Ok(())) if self.tasks.has_ended(Stage::Capture) => continue,
                (Stage::Inference, Ok(())) => "ended early".to_string(),
                (_, Ok(())) => "ended unexpectedly".to_string(),
                (_, Err(why)) => why,
            };
            return Some(RunError::TaskFailed {
                task: stage.name(),
                why,
            });
        }
    }

    /// Stop in order: the console, capture, inference, learning, status, Home
    /// Assistant, then MQTT (`offline`, disconnect), each within `deadline`;
    /// `Err(stage)` names the first still running then. Tasks that already ended
    /// are skipped.
    async fn stop(&mut self, deadline: tokio::time::Instant) -> Result<(), &'static str> {
        self.tokens.web.cancel();
        self.tasks.wait(Stage::Web, deadline).await?;
        self.capture_stop.stop();
        self.tasks.wait(Stage::Capture, deadline).await?;
        self.tasks.wait(Stage::Inference, deadline).await?;
        let t = &self.tokens;
        for (token, stage) in [
            (t.drain.clone(), Stage::Learn),
            (t.status.clone(), Stage::Status),
            (t.ha.clone(), Stage::HomeAssistant),
            (t.finish.clone(), Stage::Mqtt),
        ] {
            token.cancel();
            self.tasks.wait(stage, deadline).await?;
        }
        Ok(())
    }
}

/// The Home Assistant bridge of this configuration, with each classifier's
/// restored classes (so that the first announcement keeps the entities of the
/// classes that exist) and what the last run saved.
fn home_assistant_bridge(
    settings: &Settings,
    publisher: &Publisher,
    classifiers: &[manager::Starting],
    saved: homeassistant::Saved,
    console: Option<String>,
) -> homeassistant::Bridge {
    let ha = &settings.homeassistant;
    let ctx = ha.discovery.then(|| homeassistant::discovery::Context {
        prefix: ha.prefix.clone(),
        device_id: settings.device_id.clone(),
        availability: publisher.topics.availability.clone(),
        status: publisher.topics.status.clone(),
        expire_after: ha.expire_after_secs,
        status_expire_after: 3 * settings.log.summary_interval_secs.max(1) + 5,
        class_sensors: ha.class_sensors,
        image: ha.image_interval_secs > 0.0,
        configuration_url: console,
    });
    // The saved heads' classes (the learners restore them as they start).
    let (topics, classes) = classifiers
        .iter()
        .map(|s| {
            let classes = s
                .store
                .load_head()
                .ok()
                .flatten()
                .map(|h| h.classes)
                .unwrap_or_default();
            (s.classifier.topics.clone(), classes)
        })
        .unzip();
    let heartbeat = match ha.expire_after_secs {
        0 => Duration::from_secs(60),
        s => Duration::from_secs_f64(s as f64 / 3.0),
    };
    let device_classes = classifiers
        .iter()
        .map(|s| s.classifier.spec.device_classes.clone())
        .collect();
    homeassistant::Bridge::new(ctx, topics, classes, saved, heartbeat)
        .with_device_classes(device_classes)
        .with_stale_after(
            (ha.expire_after_secs > 0).then(|| Duration::from_secs(ha.expire_after_secs)),
        )
}
