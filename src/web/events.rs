//! What the page is told without asking: a server-sent event stream
//! (`GET /api/events`) with a `tick` a second (every classifier's region, stable
//! label and confidence, its backbone runs and skipped crops so far, the source's
//! state, frames per second, MQTT) and a `classifiers` event when the set
//! changes; and the last hour's figures for the status charts ([`History`],
//! sampled every 15 s).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::Web;
use crate::stats::{self, Snapshot};

/// How often the page gets a tick.
const TICK: Duration = Duration::from_secs(1);
/// How often the history takes a sample, and how many it keeps (an hour).
const SAMPLE_EVERY: Duration = Duration::from_secs(15);
const SAMPLES: usize = 240;

/// Free and total bytes of the file system of `dir`.
pub fn disk(dir: &Path) -> Value {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return Value::Null;
    };
    // SAFETY: statvfs writes into the zeroed struct it is given; `c` is a valid
    // NUL-terminated path.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Value::Null;
    }
    let block = s.f_frsize as u64;
    json!({
        "free_bytes": s.f_bavail as u64 * block,
        "total_bytes": s.f_blocks as u64 * block,
    })
}

/// Every classifier as the page draws it now.
fn classifiers(web: &Web) -> Value {
    let list = web.handles.classifiers.borrow().clone();
    let out: Vec<Value> = list
        .iter()
        .map(|c| {
            let head = c.head.load();
            json!({
                "name": c.name(),
                "region": c.spec.region,
                "trigger": c.spec.trigger,
                "predictions": c.spec.predictions,
                "head": head.as_ref().map(|h| h.id()),
                "classes": head.as_ref().map(|h| h.classes.clone()).unwrap_or_default(),
                "latest": c.latest.load().as_deref(),
                "backbone_runs": c.gate.runs(),
                "skipped": c.gate.skips(),
                "recent_crops": c.recent.lock().map(|r| r.len()).unwrap_or(0),
                "recent": c.spec.recent,
            })
        })
        .collect();
    json!(out)
}

fn tick(web: &Web) -> Value {
    let frame = web.handles.frames.borrow().clone();
    json!({
        "classifiers": classifiers(web),
        "source": *web.handles.source.borrow(),
        "frame": frame.map(|f| json!({"seq": f.seq, "width": f.image.width(), "height": f.image.height()})),
        "mqtt_connected": web.handles.publisher.is_connected(),
        "rates": web.handles.status.borrow()["rates"].clone(),
    })
}

/// `GET /api/events`: `tick` every second, `classifiers` when the set changes,
/// `sample` when the history takes one; ends at shutdown.
pub async fn stream(State(web): State<Arc<Web>>) -> impl IntoResponse {
    let rx = web.handles.classifiers.clone();
    let mut samples = web.history.newest.subscribe();
    samples.mark_unchanged();
    let stream = futures_util::stream::unfold(
        (web, rx, samples, tokio::time::interval(TICK)),
        |(web, mut rx, mut samples, mut interval)| async move {
            let event = tokio::select! {
                _ = interval.tick() => Event::default().event("tick").data(tick(&web).to_string()),
                r = rx.changed() => {
                    r.ok()?;
                    Event::default().event("classifiers").data(classifiers(&web).to_string())
                }
                r = samples.changed() => {
                    r.ok()?;
                    let s = json!(*samples.borrow_and_update());
                    Event::default().event("sample").data(s.to_string())
                }
                _ = web.stop.cancelled() => return None,
            };
            Some((Ok::<_, Infallible>(event), (web, rx, samples, interval)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// One sample of the history.
#[derive(Debug, Clone, serde::Serialize)]
struct Sample {
    /// Seconds since the Unix epoch.
    at: u64,
    fps: f64,
    backbone_ms: Option<f64>,
    rss_mib: Option<f64>,
    /// Per classifier: backbone runs and skipped crops in the interval.
    classifiers: Vec<(String, u64, u64)>,
}

/// The last hour's figures, for the status page's charts.
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
    /// The newest sample, for the event streams.
    newest: watch::Sender<Option<Sample>>,
}

impl Default for History {
    fn default() -> Self {
        Self {
            samples: Mutex::new(VecDeque::with_capacity(SAMPLES)),
            newest: watch::channel(None).0,
        }
    }
}

impl History {
    /// `{"every_s": 15, "samples": [{"at", "fps", "backbone_ms", "rss_mib",
    /// "classifiers": [[name, runs, skips], ...]}, ...]}`, oldest first.
    pub fn json(&self) -> Value {
        let list: Vec<Sample> = self
            .samples
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        json!({ "every_s": SAMPLE_EVERY.as_secs(), "samples": list })
    }

    fn push(&self, s: Sample) {
        if let Ok(mut q) = self.samples.lock() {
            if q.len() == SAMPLES {
                q.pop_front();
            }
            q.push_back(s.clone());
        }
        self.newest.send_replace(Some(s));
    }
}

/// Take a history sample every 15 s until shutdown.
pub async fn sampler(web: Arc<Web>) {
    let mut interval = tokio::time::interval(SAMPLE_EVERY);
    interval.tick().await;
    let mut last = web.handles.stats.snapshot();
    let mut last_gate: Vec<(String, u64, u64)> = Vec::new();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = web.stop.cancelled() => return,
        }
        let now: Snapshot = web.handles.stats.snapshot();
        let d = now.since(&last);
        last = now;
        let secs = SAMPLE_EVERY.as_secs_f64();
        let gate: Vec<(String, u64, u64)> = web
            .handles
            .classifiers
            .borrow()
            .iter()
            .map(|c| (c.name().to_string(), c.gate.runs(), c.gate.skips()))
            .collect();
        let deltas = gate
            .iter()
            .map(|(n, r, s)| {
                let (r0, s0) = last_gate
                    .iter()
                    .find(|(m, _, _)| m == n)
                    .map(|(_, r, s)| (*r, *s))
                    .unwrap_or((*r, *s));
                (n.clone(), r.saturating_sub(r0), s.saturating_sub(s0))
            })
            .collect();
        last_gate = gate;
        web.history.push(Sample {
            at: crate::time::now_secs(),
            fps: (d.frames_captured as f64 / secs * 100.0).round() / 100.0,
            backbone_ms: d.mean_backbone_ms().map(|v| (v * 10.0).round() / 10.0),
            rss_mib: stats::rss_kib().map(|k| (k as f64 / 1024.0 * 10.0).round() / 10.0),
            classifiers: deltas,
        });
    }
}
