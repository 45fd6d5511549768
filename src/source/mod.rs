//! Frame sources and the capture thread that drives them.
//!
//! A [`FrameSource`] yields RGB frames; [`Capture`] runs one on its own OS thread,
//! paces it, reopens it with capped exponential backoff when it fails, and hands
//! each frame to inference through a `watch` channel: the newest frame wins.

#[cfg(all(feature = "camera", target_os = "linux"))]
pub mod camera;
#[cfg(target_os = "linux")]
pub mod command;
pub mod files;
pub mod http;
#[cfg(target_os = "linux")]
pub mod lineage;
pub mod mjpeg;
pub mod synthetic;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use image::RgbImage;
use serde::Serialize;
use tokio::sync::{oneshot, watch};

use crate::backoff::Backoff;
use crate::config::{LearnConfig, SourceConfig, SourceKind};
use crate::stats::Stats;

/// One captured frame.
#[derive(Debug)]
pub struct Frame {
    /// Counts frames from 1 since start; gaps seen downstream are dropped frames.
    pub seq: u64,
    pub captured_at: SystemTime,
    /// Monotonic capture time, for latency.
    pub captured: Instant,
    pub image: RgbImage,
    /// Which file the frame came from (`files` source), relative to its folder.
    pub name: Option<String>,
}

/// What a source yields: an image and, for files, its name.
#[derive(Debug)]
pub struct Shot {
    pub image: RgbImage,
    pub name: Option<String>,
}

impl From<RgbImage> for Shot {
    fn from(image: RgbImage) -> Self {
        Self { image, name: None }
    }
}

/// The latest frame, shared between capture, inference and "label the current frame".
pub type FrameRx = watch::Receiver<Option<Arc<Frame>>>;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The device is gone or misbehaving; the capture loop reopens it after a pause.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (no images in the folder, unsupported configuration).
    #[error("{0}")]
    Fatal(String),
}

/// Produces frames.
///
/// `next_frame` blocks until a frame is available: a camera waits for the device,
/// files and synthetic sources return at once (the capture loop paces them to
/// `fps()`). `Ok(None)` means the source has ended for good. A
/// [`CaptureError::Transient`] makes the capture loop drop this source and open a
/// new one after a backoff; a fatal error stops capture. Errors about one frame that
/// do not concern the source (one unreadable file) are logged and skipped by the
/// source itself.
pub trait FrameSource {
    fn next_frame(&mut self) -> Result<Option<Shot>, CaptureError>;
    /// Frames per second the loop should pace to; `None` when the source paces itself.
    fn fps(&self) -> Option<f64>;
    /// A way to make a blocked `next_frame` return at once (with an error) when
    /// capture stops, for sources that wait long for a frame; called from another
    /// thread.
    fn interrupter(&self) -> Option<Interrupter> {
        None
    }
}

/// Opens sources of one configured kind; called again after a transient failure.
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, CaptureError> + Send>;

/// The reconnect (or restart) backoff of the configured source kind.
pub fn backoff(c: &SourceConfig) -> Backoff {
    match c.kind {
        SourceKind::Command => {
            Backoff::from_millis(c.command.restart_min_ms, c.command.restart_max_ms)
        }
        SourceKind::Http => Backoff::from_millis(c.http.reconnect_min_ms, c.http.reconnect_max_ms),
        _ => Backoff::from_millis(c.camera.reconnect_min_ms, c.camera.reconnect_max_ms),
    }
}

/// Build the opener for the configured source kind; images are decoded within
/// `learn`'s limits. Errors: a `files` source with no image, a kind this build
/// lacks.
pub fn opener(source: &SourceConfig, learn: &LearnConfig) -> Result<Opener, CaptureError> {
    let c = source.clone();
    let max_side = learn.max_image_side;
    let limits = crate::imaging::decode::ImageLimits::from_config(learn);
    Ok(match c.kind {
        SourceKind::Synthetic => {
            Box::new(move || Ok(Box::new(synthetic::Synthetic::new(&c.synthetic)) as _))
        }
        SourceKind::Files => {
            let paths = files::list(&c.files.path)?;
            Box::new(move || {
                Ok(Box::new(
                    files::Files::new(paths.clone(), &c.files, max_side).with_limits(limits),
                ) as _)
            })
        }
        SourceKind::Http => {
            let max_bytes = learn.max_image_bytes;
            Box::new(move || {
                http::HttpSource::open(&c.http, limits, max_bytes).map(|s| Box::new(s) as _)
            })
        }
        #[cfg(target_os = "linux")]
        SourceKind::Command => {
            let max_frame = learn.max_image_bytes;
            Box::new(move || {
                command::CommandSource::open(&c.command, limits, max_frame)
                    .map(|s| Box::new(s) as _)
            })
        }
        #[cfg(not(target_os = "linux"))]
        SourceKind::Command => {
            return Err(CaptureError::Fatal(
                "the command source needs Linux (process groups, PR_SET_PDEATHSIG)".into(),
            ))
        }
        #[cfg(all(feature = "camera", target_os = "linux"))]
        SourceKind::Camera => Box::new(move || {
            camera::Camera::open(&c.camera).map(|s| Box::new(s.with_limits(limits)) as _)
        }),
        #[cfg(not(all(feature = "camera", target_os = "linux")))]
        SourceKind::Camera => return Err(CaptureError::Fatal(
            "this edgehead was built without camera support: build it with `--features camera` \
                 (Linux, V4L2; needs libclang at build time), or use the released packages"
                .into(),
        )),
    })
}

/// What the capture thread is doing, published on the status topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum SourceState {
    Starting,
    Running,
    /// Failed; the next attempt is in `retry_in_ms`.
    Reconnecting {
        error: String,
        retry_in_ms: u64,
    },
    /// A `files` source without `loop` reached its last image.
    Ended,
    Failed {
        error: String,
    },
    Stopped,
}

/// Counts frames in a row that fail to decode: some are skipped (a glitch of the
/// camera or the network), `limit` in a row make the source count as broken (a
/// transient failure: it is reopened).
#[derive(Debug)]
pub struct BadFrames {
    count: u32,
    limit: u32,
}

impl BadFrames {
    /// Bad frames in a row a stream may have before it is reopened.
    pub const STREAM_LIMIT: u32 = 30;

    pub fn new(limit: u32) -> Self {
        Self {
            count: 0,
            limit: limit.max(1),
        }
    }

    /// `Ok(Some(image))` for a decoded frame, `Ok(None)` to skip a bad one, and
    /// the error once `limit` bad frames came in a row. `who` names the source.
    pub fn check(
        &mut self,
        who: &str,
        decoded: Result<RgbImage, crate::imaging::decode::DecodeError>,
    ) -> Result<Option<RgbImage>, CaptureError> {
        match decoded {
            Ok(img) => {
                self.count = 0;
                Ok(Some(img))
            }
            Err(e) => {
                self.count += 1;
                tracing::debug!(source = who, error = %e, "skipping an undecodable frame");
                if self.count >= self.limit {
                    let what = if self.limit == 1 {
                        String::new()
                    } else {
                        format!("{} frames in a row could not be decoded: ", self.limit)
                    };
                    return Err(CaptureError::Transient(format!("{who}: {what}{e}")));
                }
                Ok(None)
            }
        }
    }
}

/// Wakes a source blocked in `next_frame` (see [`FrameSource::interrupter`]).
pub type Interrupter = Box<dyn Fn() + Send>;

/// A flag the capture thread checks between frames and sleeps on.
#[derive(Default)]
pub struct Stop {
    stopped: Mutex<bool>,
    cv: Condvar,
    /// The open source's way to return from `next_frame` at once.
    interrupt: Mutex<Option<Interrupter>>,
}

impl std::fmt::Debug for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stop")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

impl Stop {
    pub fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
        if let Some(wake) = &*self.interrupt.lock().unwrap_or_else(|p| p.into_inner()) {
            wake();
        }
    }

    /// The interrupter of the source now open (replacing the last one's).
    fn set_interrupter(&self, wake: Option<Interrupter>) {
        *self.interrupt.lock().unwrap_or_else(|p| p.into_inner()) = wake;
        if self.is_stopped() {
            if let Some(wake) = &*self.interrupt.lock().unwrap_or_else(|p| p.into_inner()) {
                wake();
            }
        }
    }

    pub fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sleep for `d` or until stopped; true when stopped.
    pub fn wait(&self, d: Duration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }
}

/// How many frames inference has taken, so a source that can make frames on
/// demand (synthetic or files at `fps = 0`) makes one only when the last was taken,
/// instead of spinning and dropping almost all of them.
#[derive(Debug, Default)]
pub struct Demand {
    taken: Mutex<u64>,
    cv: Condvar,
}

impl Demand {
    /// Inference took frame `seq`.
    pub fn taken(&self, seq: u64) {
        let mut t = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        *t = (*t).max(seq);
        self.cv.notify_all();
    }

    /// Wait until frame `seq` was taken, or `stop`; true when stopped.
    fn wait_taken(&self, seq: u64, stop: &Stop) -> bool {
        let mut t = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        while *t < seq {
            if stop.is_stopped() {
                return true;
            }
            t = self
                .cv
                .wait_timeout(t, Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        stop.is_stopped()
    }
}

/// The capture thread's handle.
pub struct Capture {
    pub stop: Arc<Stop>,
    /// Resolves when the thread has ended, with its result.
    pub done: oneshot::Receiver<Result<(), CaptureError>>,
}

/// Start capturing on a new thread named "capture". A source whose `fps()` is
/// `Some(0.0)` makes a frame each time inference has taken the last one (`demand`).
pub fn spawn(
    mut open: Opener,
    backoff: Backoff,
    frame_tx: watch::Sender<Option<Arc<Frame>>>,
    state_tx: watch::Sender<SourceState>,
    stats: Arc<Stats>,
    demand: Arc<Demand>,
) -> std::io::Result<Capture> {
    let stop = Arc::new(Stop::default());
    let (done_tx, done) = oneshot::channel();
    let thread_stop = stop.clone();
    std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            let result = run(
                &mut open,
                backoff,
                &frame_tx,
                &state_tx,
                &stats,
                &thread_stop,
                &demand,
            );
            let final_state = match &result {
                Ok(Ended::Stopped) => SourceState::Stopped,
                Ok(Ended::Exhausted) => SourceState::Ended,
                Err(e) => SourceState::Failed {
                    error: e.to_string(),
                },
            };
            state_tx.send_replace(final_state);
            // Dropping frame_tx here tells inference that no more frames come.
            drop(frame_tx);
            let _ = done_tx.send(result.map(|_| ()));
        })?;
    Ok(Capture { stop, done })
}

enum Ended {
    Stopped,
    Exhausted,
}

fn run(
    open: &mut Opener,
    mut backoff: Backoff,
    frame_tx: &watch::Sender<Option<Arc<Frame>>>,
    state_tx: &watch::Sender<SourceState>,
    stats: &Stats,
    stop: &Stop,
    demand: &Demand,
) -> Result<Ended, CaptureError> {
    let mut seq = 0u64;
    let mut source: Option<Box<dyn FrameSource>> = None;
    // `running` only once a frame of the open source decoded: a program or
    // camera that is up but sends nothing usable is still `starting`.
    let mut running = false;
    let mut next_due = Instant::now();
    let fail = |error: CaptureError, backoff: &mut Backoff| -> bool {
        let delay = backoff.next_delay();
        tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "frame source failed");
        state_tx.send_replace(SourceState::Reconnecting {
            error: error.to_string(),
            retry_in_ms: delay.as_millis() as u64,
        });
        stop.wait(delay)
    };
    while !stop.is_stopped() {
        let src = match source.as_mut() {
            Some(s) => s,
            None => match open() {
                Ok(s) => {
                    tracing::info!("frame source open");
                    state_tx.send_replace(SourceState::Starting);
                    running = false;
                    stop.set_interrupter(s.interrupter());
                    // The backoff starts over only once a frame came: a program
                    // that starts and exits at once is retried slowly.
                    source.insert(s)
                }
                Err(CaptureError::Fatal(e)) => return Err(CaptureError::Fatal(e)),
                Err(e) => {
                    if fail(e, &mut backoff) {
                        break;
                    }
                    continue;
                }
            },
        };
        let stopped = match src.fps() {
            // As fast as inference takes them: wait until the last frame was taken.
            Some(fps) if fps <= 0.0 => seq > 0 && demand.wait_taken(seq, stop),
            Some(fps) => {
                let now = Instant::now();
                let due = next_due;
                // Keep the cadence, but do not try to catch up after a stall.
                next_due = next_due.max(now) + Duration::from_secs_f64(1.0 / fps);
                due > now && stop.wait(due - now)
            }
            None => false,
        };
        if stopped {
            break;
        }
        match src.next_frame() {
            Ok(Some(shot)) => {
                backoff.reset();
                if !running {
                    running = true;
                    state_tx.send_replace(SourceState::Running);
                }
                seq += 1;
                stats.frames_captured.fetch_add(1, Ordering::Relaxed);
                frame_tx.send_replace(Some(Arc::new(Frame {
                    seq,
                    captured_at: SystemTime::now(),
                    captured: Instant::now(),
                    image: shot.image,
                    name: shot.name,
                })));
            }
            Ok(None) => {
                tracing::info!(frames = seq, "frame source ended");
                return Ok(Ended::Exhausted);
            }
            Err(CaptureError::Fatal(e)) => return Err(CaptureError::Fatal(e)),
            Err(e) => {
                source = None;
                if fail(e, &mut backoff) {
                    break;
                }
            }
        }
    }
    Ok(Ended::Stopped)
}

#[cfg(test)]
mod tests;
