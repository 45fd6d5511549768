//! Adding samples: an image becomes a thumbnail (what a new backbone re-embeds),
//! is embedded on the blocking pool and stored; `label_frame` collects camera
//! frames one by one in a task of its own and answers when the last is stored.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use image::RgbImage;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::ops::{bad, RequestError};
use super::{Learner, ReplyTo};
use crate::answer;
use crate::imaging::encode::{self, Fit};
use crate::region::{self, RegionConfig};
use crate::source::{Frame, FrameRx};
use crate::store::{fsio::is_disk_full, Origin};

/// How long `label_frame` waits for a new frame.
const FRAME_WAIT: Duration = Duration::from_secs(5);

/// A validated `label_frame`: the class, how many frames, how far apart, and the
/// similarity above which a frame is skipped as a near-duplicate of the last one
/// stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Collect {
    pub label: String,
    pub count: u32,
    pub interval: Duration,
    pub skip_similar: Option<f32>,
}

/// A `label_frame` in progress: its frames arrive one by one from a collector task,
/// each is embedded and stored as it comes, and the answer goes out at the end.
pub(super) struct Collecting {
    op: String,
    reply: ReplyTo,
    transaction: Option<Value>,
    key: String,
    pub(super) label: String,
    want: u32,
    /// Frames taken so far (stored or skipped).
    taken: u32,
    ids: Vec<u64>,
    skip_similar: Option<f32>,
    /// The features of the last frame stored, and how many were skipped as
    /// near-duplicates of it.
    last: Option<Vec<f32>>,
    skipped: u32,
    pub(super) frames_rx: mpsc::Receiver<Result<Arc<Frame>, RequestError>>,
    task: tokio::task::JoinHandle<()>,
}

/// The SHA-256 (hex) naming a stored image: of the bytes as sent, and of the
/// region they are cropped to when they are.
pub fn digest(image: &[u8], region: Option<&RegionConfig>) -> String {
    let mut h = Sha256::new();
    h.update(image);
    if let Some(r) = region {
        h.update(serde_json::to_vec(r).unwrap_or_default());
    }
    format!("{:x}", h.finalize())
}

/// `image` cropped to `region`; an error when a pixel region does not fit it.
pub fn crop_to(image: &RgbImage, region: &RegionConfig) -> Result<RgbImage, RequestError> {
    let (w, h) = image.dimensions();
    let rect = region
        .rect(w, h)
        .map_err(|e| bad(format!("cannot apply the classifier's region: {e}")))?;
    Ok(region::crop(image, rect))
}

impl Learner {
    pub(super) fn schedule_retrain(&mut self) {
        self.retrain_at = Some(
            tokio::time::Instant::now() + Duration::from_millis(self.shared.config.debounce_ms),
        );
    }

    /// Check that `adding` samples of `label` may be added.
    pub(super) fn check_room(&self, label: &str, adding: usize) -> Result<(), RequestError> {
        let config = &self.shared.config;
        if self.store.len() + adding > config.max_samples {
            return Err(bad(format!(
                "the store holds {} samples, the limit (learn.max_samples) is {}",
                self.store.len(),
                config.max_samples
            )));
        }
        let classes = self.store.classes();
        if !classes.iter().any(|c| c.0 == label) && classes.len() >= config.max_classes {
            return Err(bad(format!(
                "there are already {} classes, the limit (learn.max_classes)",
                classes.len()
            )));
        }
        Ok(())
    }

    /// Store an image as a sample of `label` (`add_sample`, `label_recent`): the
    /// sample that has the same digest in that class is answered `duplicate`;
    /// otherwise the limits are checked, the image made by `image` is embedded and
    /// stored, and a retrain scheduled. The answer: `id`, `label`, `class_samples`,
    /// and `duplicate: true` or `retrain_in_ms`.
    pub(super) async fn add_image(
        &mut self,
        label: &str,
        origin: Origin,
        sha256: String,
        image: impl FnOnce() -> Result<RgbImage, RequestError> + Send + 'static,
    ) -> Result<Value, RequestError> {
        if let Some(existing) = self.store.find_image(label, &sha256) {
            return Ok(json!({
                "id": existing.id,
                "label": label,
                "class_samples": self.class_count(label),
                "duplicate": true,
            }));
        }
        self.check_room(label, 1)?;
        let (jpeg, features) = self.embed_sample(image).await?;
        let id = self.store_sample(label, origin, &jpeg, features, Some(sha256))?;
        Ok(json!({
            "id": id,
            "label": label,
            "class_samples": self.class_count(label),
            "retrain_in_ms": self.shared.config.debounce_ms,
        }))
    }

    /// On the blocking pool: get the image, shrink it to the stored thumbnail and
    /// embed that (the thumbnail is what a new backbone will re-embed). Returns the
    /// thumbnail's JPEG and the features.
    async fn embed_sample(
        &self,
        image: impl FnOnce() -> Result<RgbImage, RequestError> + Send + 'static,
    ) -> Result<(Vec<u8>, Vec<f32>), RequestError> {
        let side = self.shared.config.thumbnail_side;
        let embedder = self.embedder().clone();
        tokio::task::spawn_blocking(move || {
            let thumb = encode::fit(image()?, Fit::ShortSide(side));
            let jpeg = encode::jpeg(&thumb, encode::THUMBNAIL_QUALITY)
                .map_err(|e| bad(format!("cannot encode the thumbnail: {e}")))?;
            let e = embedder.embed(&thumb).map_err(|e| bad(e.to_string()))?;
            Ok((jpeg, e.features))
        })
        .await
        .map_err(|e| bad(format!("internal error: {e}")))?
    }

    fn store_sample(
        &mut self,
        label: &str,
        origin: Origin,
        jpeg: &[u8],
        features: Vec<f32>,
        sha256: Option<String>,
    ) -> Result<u64, RequestError> {
        let disk_full = &self.shared.stats.disk_full;
        let meta = self
            .store
            .add(label, origin, jpeg, self.shared.embedder.id(), &features, sha256)
            .map_err(|e| {
                if is_disk_full(&e) {
                    disk_full.store(true, Ordering::Relaxed);
                    bad(format!("the disk is full: cannot store the sample ({e}); delete samples or free space"))
                } else {
                    bad(format!("cannot store the sample: {e}"))
                }
            })?;
        disk_full.store(false, Ordering::Relaxed);
        self.embeddings.insert(meta.id, features);
        self.schedule_retrain();
        Ok(meta.id)
    }

    pub(super) fn class_count(&self, label: &str) -> usize {
        self.store
            .samples()
            .iter()
            .filter(|s| s.label == label)
            .count()
    }

    /// Start collecting the frames of a validated `label_frame`; the answer is
    /// sent by [`Learner::collected`] once the last frame is stored.
    pub(super) fn start_collecting(
        &mut self,
        c: Collect,
        reply: ReplyTo,
        op: String,
        key: String,
        transaction: Option<Value>,
    ) {
        // One frame in flight: the collector waits until the learner has taken it,
        // so memory stays at one frame whatever `count` is.
        let (frames_tx, frames_rx) = mpsc::channel(1);
        let task = tokio::spawn(collect_frames(
            self.shared.frames.clone(),
            c.count,
            c.interval,
            frames_tx,
        ));
        self.replies.start(&key, tokio::time::Instant::now());
        self.collecting = Some(Collecting {
            op,
            reply,
            transaction,
            key,
            label: c.label,
            want: c.count,
            taken: 0,
            ids: Vec::new(),
            skip_similar: c.skip_similar,
            last: None,
            skipped: 0,
            frames_rx,
            task,
        });
    }

    /// Store one collected frame under the collecting label.
    async fn store_frame(
        &mut self,
        label: &str,
        frame: Arc<Frame>,
    ) -> Result<Option<u64>, RequestError> {
        self.check_room(label, 1)?;
        let r = self.classifier.spec.region;
        let (jpeg, features) = self.embed_sample(move || crop_to(&frame.image, &r)).await?;
        if let Some(c) = self.collecting.as_mut() {
            let similar = match (&c.last, c.skip_similar) {
                (Some(last), Some(t)) => crate::classifier::recent::cosine(last, &features) >= t,
                _ => false,
            };
            if similar {
                c.skipped += 1;
                return Ok(None);
            }
            c.last = Some(features.clone());
        }
        self.store_sample(label, Origin::Frame, &jpeg, features, None)
            .map(Some)
    }

    /// One frame (or the end, or an error) from the `label_frame` collector.
    pub(super) async fn collected(&mut self, frame: Option<Result<Arc<Frame>, RequestError>>) {
        let Some(label) = self.collecting.as_ref().map(|c| c.label.clone()) else {
            return;
        };
        let outcome = match frame {
            Some(Ok(frame)) => match self.store_frame(&label, frame).await {
                Ok(stored) => {
                    let Some(c) = self.collecting.as_mut() else {
                        return;
                    };
                    c.ids.extend(stored);
                    c.taken += 1;
                    if c.taken < c.want {
                        return;
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Some(Err(e)) => Err(e),
            None => Err(bad("the frame collector stopped")),
        };
        if let Some(c) = self.collecting.take() {
            self.finish_collecting(c, outcome);
        }
    }

    /// End collection `c` and answer its request: the stored ids, or `outcome`'s
    /// error with what was stored before it.
    fn finish_collecting(&mut self, c: Collecting, outcome: Result<(), RequestError>) {
        c.task.abort();
        let reply = match outcome {
            Ok(()) => answer::ok(
                json!({
                    "ids": c.ids,
                    "label": c.label,
                    "class_samples": self.class_count(&c.label),
                    "frames": c.taken,
                    "skipped_similar": c.skipped,
                    "stopped_early": c.taken < c.want,
                    "retrain_in_ms": self.shared.config.debounce_ms,
                }),
                c.transaction.as_ref(),
            ),
            Err(e) => {
                self.shared
                    .stats
                    .requests_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(op = %c.op, error = %e, stored = c.ids.len(), "label_frame ended early");
                let msg = if c.ids.is_empty() {
                    e.0
                } else {
                    format!(
                        "{}; {} of {} frames were stored: {:?}",
                        e.0,
                        c.ids.len(),
                        c.want,
                        c.ids
                    )
                };
                answer::error(&msg, c.transaction.as_ref())
            }
        };
        self.answer(c.reply, &c.op, Some(&c.key), reply, true);
    }

    /// `stop_label_frame`: end a running `label_frame` now (the console's "hold to
    /// record" released); its own request is answered with what it stored.
    pub(super) fn stop_label_frame(&mut self) -> Value {
        match self.collecting.take() {
            None => json!({ "stopped": false }),
            Some(c) => {
                let (label, stored) = (c.label.clone(), c.ids.len());
                self.finish_collecting(c, Ok(()));
                json!({ "stopped": true, "label": label, "stored": stored })
            }
        }
    }

    /// Shutting down: answer a `label_frame` still collecting with what it stored.
    pub(super) fn stop_collecting(&mut self) {
        let Some(c) = self.collecting.take() else {
            return;
        };
        c.task.abort();
        let reply = answer::error(
            &format!(
                "shutting down; stored {} of {} frames: {:?}",
                c.ids.len(),
                c.want,
                c.ids
            ),
            c.transaction.as_ref(),
        );
        self.answer(c.reply, &c.op, Some(&c.key), reply, true);
    }
}

/// Take `count` new frames from the source, `interval` apart, and hand each to the
/// learner; ends early with the error when no new frame comes within 5 s.
async fn collect_frames(
    mut frames: FrameRx,
    count: u32,
    interval: Duration,
    frames_tx: mpsc::Sender<Result<Arc<Frame>, RequestError>>,
) {
    let mut last_seq = frames.borrow().as_ref().map(|f| f.seq).unwrap_or(0);
    // The first frame may be the current one, if there is one.
    last_seq = last_seq.saturating_sub(1);
    for i in 0..count {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        let frame = match tokio::time::timeout(
            FRAME_WAIT,
            frames.wait_for(|f| f.as_ref().is_some_and(|f| f.seq > last_seq)),
        )
        .await
        {
            Err(_) => Err(bad("no new frame from the source within 5 s")),
            Ok(Err(_)) => Err(bad("the frame source has stopped")),
            Ok(Ok(f)) => f.clone().ok_or_else(|| bad("no frame from the source yet")),
        };
        let failed = frame.is_err();
        if let Ok(f) = &frame {
            last_seq = f.seq;
        }
        if frames_tx.send(frame).await.is_err() || failed {
            return;
        }
    }
}
