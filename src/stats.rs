//! Counters shared by the tasks, read by the periodic summary and the status topic.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;

/// Monotonic counters; every task adds, nobody resets.
#[derive(Debug, Default)]
pub struct Stats {
    pub frames_captured: AtomicU64,
    pub frames_inferred: AtomicU64,
    /// Frames on which the backbone ran for at least one classifier (the rest were
    /// skipped by the change gate); the mean latency is over these.
    pub frames_embedded: AtomicU64,
    /// Frames replaced by a newer one before inference took them.
    pub frames_dropped: AtomicU64,
    pub frame_errors: AtomicU64,
    pub predictions_published: AtomicU64,
    /// Predictions not sent because the outgoing MQTT queue was full or the client down.
    pub predictions_dropped: AtomicU64,
    /// Sum of capture-to-prediction latencies, microseconds, for the mean.
    pub latency_us_total: AtomicU64,
    /// Backbone runs (one per crop) and their summed time, microseconds.
    pub crops_embedded: AtomicU64,
    pub backbone_us_total: AtomicU64,
    pub requests: AtomicU64,
    pub requests_failed: AtomicU64,
    pub mqtt_connects: AtomicU64,
    /// Answers not sent because too many were waiting (see `mqtt::answers`).
    pub answers_dropped: AtomicU64,
    /// The state directory's file system was full at the last write (or at start):
    /// samples cannot be added until space is freed. Shown on the status topic.
    pub disk_full: AtomicBool,
}

/// A copy of the counters at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct Snapshot {
    pub frames_captured: u64,
    pub frames_inferred: u64,
    pub frames_embedded: u64,
    pub frames_dropped: u64,
    pub frame_errors: u64,
    pub predictions_published: u64,
    pub predictions_dropped: u64,
    pub latency_us_total: u64,
    /// See [`Stats::crops_embedded`] and [`Stats::backbone_us_total`].
    pub crops_embedded: u64,
    pub backbone_us_total: u64,
    pub requests: u64,
    pub requests_failed: u64,
    pub mqtt_connects: u64,
    pub answers_dropped: u64,
}

impl Stats {
    pub fn snapshot(&self) -> Snapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            frames_captured: g(&self.frames_captured),
            frames_inferred: g(&self.frames_inferred),
            frames_embedded: g(&self.frames_embedded),
            frames_dropped: g(&self.frames_dropped),
            frame_errors: g(&self.frame_errors),
            predictions_published: g(&self.predictions_published),
            predictions_dropped: g(&self.predictions_dropped),
            latency_us_total: g(&self.latency_us_total),
            crops_embedded: g(&self.crops_embedded),
            backbone_us_total: g(&self.backbone_us_total),
            requests: g(&self.requests),
            requests_failed: g(&self.requests_failed),
            mqtt_connects: g(&self.mqtt_connects),
            answers_dropped: g(&self.answers_dropped),
        }
    }
}

impl Snapshot {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            frames_captured: self.frames_captured - earlier.frames_captured,
            frames_inferred: self.frames_inferred - earlier.frames_inferred,
            frames_embedded: self.frames_embedded - earlier.frames_embedded,
            frames_dropped: self.frames_dropped - earlier.frames_dropped,
            frame_errors: self.frame_errors - earlier.frame_errors,
            predictions_published: self.predictions_published - earlier.predictions_published,
            predictions_dropped: self.predictions_dropped - earlier.predictions_dropped,
            latency_us_total: self.latency_us_total - earlier.latency_us_total,
            crops_embedded: self.crops_embedded - earlier.crops_embedded,
            backbone_us_total: self.backbone_us_total - earlier.backbone_us_total,
            requests: self.requests - earlier.requests,
            requests_failed: self.requests_failed - earlier.requests_failed,
            mqtt_connects: self.mqtt_connects - earlier.mqtt_connects,
            answers_dropped: self.answers_dropped - earlier.answers_dropped,
        }
    }

    /// Mean backbone time per crop, milliseconds; `None` without a run.
    pub fn mean_backbone_ms(&self) -> Option<f64> {
        (self.crops_embedded > 0)
            .then(|| self.backbone_us_total as f64 / self.crops_embedded as f64 / 1000.0)
    }

    /// Mean capture-to-prediction latency in milliseconds, over the frames the
    /// backbone ran on.
    pub fn mean_latency_ms(&self) -> f64 {
        if self.frames_embedded == 0 {
            0.0
        } else {
            self.latency_us_total as f64 / self.frames_embedded as f64 / 1000.0
        }
    }
}

/// Peak resident set size of this process in KiB (Linux `VmHWM`), if known.
pub fn peak_rss_kib() -> Option<u64> {
    proc_status_kib("VmHWM:")
}

/// Current resident set size in KiB (Linux `VmRSS`), if known.
pub fn rss_kib() -> Option<u64> {
    proc_status_kib("VmRSS:")
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Threads of this process (Linux), if known.
pub fn thread_count() -> Option<u64> {
    proc_status_kib("Threads:")
}

/// CPU seconds (user + system) of `who` (`libc::RUSAGE_SELF` or
/// `libc::RUSAGE_CHILDREN`), from getrusage(2); 0 if it fails.
pub fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes into the struct we pass; zeroed is a valid value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(who, &mut u) } != 0 {
        return 0.0;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}
