//! The daemon's status: the retained `status` topic and the periodic summary
//! line ([`StatusReporter`]), and systemd's watchdog ([`watchdog`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::classifier::Classifier;
use crate::mqtt::Publisher;
use crate::source::SourceState;
use crate::stats::{self, Snapshot, Stats};

/// Tell systemd's watchdog the daemon is alive while frames are inferred (or the
/// source is not running, or every captured frame is accounted for).
pub(super) async fn watchdog(
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

/// Publishes the retained status and logs the periodic summary.
pub(super) struct StatusReporter {
    publisher: Publisher,
    stats: Arc<Stats>,
    /// The classifiers now.
    classifiers: watch::Receiver<Arc<Vec<Classifier>>>,
    backbone: String,
    source: watch::Receiver<SourceState>,
    started: Instant,
    interval: Duration,
    /// Rates over the last summary interval (`status.rates`).
    rates: Value,
    /// The counters at the last summary, and when it was.
    last: (Snapshot, (u64, u64), Instant),
    /// The status as last published, for the console.
    latest: watch::Sender<Value>,
}

impl StatusReporter {
    /// A reporter publishing through `publisher` every `interval`.
    pub(super) fn new(
        publisher: Publisher,
        stats: Arc<Stats>,
        classifiers: watch::Receiver<Arc<Vec<Classifier>>>,
        backbone: String,
        source: watch::Receiver<SourceState>,
        interval: Duration,
    ) -> Self {
        Self {
            publisher,
            stats,
            classifiers,
            backbone,
            source,
            started: Instant::now(),
            interval,
            rates: json!({
                "interval_s": null, "fps_captured": null, "fps_inferred": null,
                "backbone_ms": null, "backbone_runs": null, "crops_skipped": null,
                "frames_dropped": null,
            }),
            last: (Snapshot::default(), (0, 0), Instant::now()),
            latest: watch::channel(Value::Null).0,
        }
    }

    /// The status as last published (the console's `GET /api/status`).
    pub(super) fn latest(&self) -> watch::Receiver<Value> {
        self.latest.subscribe()
    }

    fn status(&self) -> Value {
        let list = self.classifiers.borrow().clone();
        let classifiers: Map<String, Value> = list
            .iter()
            .map(|c| (c.spec.name.clone(), c.status()))
            .collect();
        // The first classifier's head and classes also at the top (single-classifier
        // readers of edgehead 0.1).
        let first = list
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
        let status = self.status();
        self.publisher.try_publish_status(&status);
        self.latest.send_replace(status);
    }

    /// Log the summary of the interval since the last one and update the rates.
    fn summarize(&mut self) {
        let (last, last_gate, last_at) = &self.last;
        let now = self.stats.snapshot();
        let d = now.since(last);
        let secs = last_at.elapsed().as_secs_f64().max(1e-9);
        let gate = self
            .classifiers
            .borrow()
            .iter()
            .fold((0, 0), |(r, s), c| (r + c.gate.runs(), s + c.gate.skips()));
        tracing::info!(
            backbone_runs = gate.0.saturating_sub(last_gate.0),
            crops_skipped = gate.1.saturating_sub(last_gate.1),
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
            "backbone_runs": gate.0.saturating_sub(last_gate.0),
            "crops_skipped": gate.1.saturating_sub(last_gate.1),
            "frames_dropped": d.frames_dropped,
        });
        self.last = (now, gate, Instant::now());
    }

    /// Publish at every change of the source's state and every interval, until
    /// `stop`.
    pub(super) async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.tick().await;
        self.last.2 = Instant::now();
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
                    self.summarize();
                    self.publish();
                }
            }
        }
    }
}
