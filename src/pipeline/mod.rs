//! The inference task: newest frame → per classifier: region → change gate →
//! backbone (blocking pool) → head → smoother → prediction → sink.
//!
//! - [`lane`]: one classifier's state between frames; [`smoother`]: the stable
//!   label and the publish rule; [`prediction`]: the published payload;
//!   [`sink`]: where predictions go.

mod lane;
pub mod prediction;
pub mod sink;
pub mod smoother;
#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;

use crate::backbone::{EmbedError, Embedder, Embedding};
use crate::classifier::gate::Run;
use crate::classifier::{Classifier, Latest};
use crate::imaging::encode::{self, Fit};
use crate::mqtt::payload::Prediction;
use crate::names::UNKNOWN;
use crate::region::{self, Rect};
use crate::source::{Demand, Frame, FrameRx};
use crate::stats::Stats;
use lane::{Due, Lane};
pub use prediction::build_prediction;
pub use sink::{MqttSink, PredictionSink, ALIVE_EVERY};
pub use smoother::Smoother;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("the backbone task panicked: {0}")]
    Panicked(String),
}

/// The crop in `rect` of `frame` as JPEG, scaled down so that its longest side is
/// at most `max_side` pixels (what Home Assistant's image entity shows).
pub fn crop_jpeg(frame: &RgbImage, rect: Rect, max_side: u32) -> Option<Vec<u8>> {
    let crop = encode::fit(region::crop(frame, rect), Fit::LongSide(max_side));
    encode::jpeg(&crop, encode::VIEW_QUALITY).ok()
}

/// The inference task; [`Inference::run`] runs it.
pub struct Inference<S> {
    pub frames: FrameRx,
    pub embedder: Arc<dyn Embedder>,
    /// Every classifier, in order; replaced when classifiers are created, edited,
    /// renamed or deleted at run time.
    pub classifiers: watch::Receiver<Arc<Vec<Classifier>>>,
    pub sink: S,
    pub stats: Arc<Stats>,
    /// Told of every frame taken, so on-demand sources make the next one.
    pub demand: Arc<Demand>,
    /// Short side of the JPEG kept for a recent crop, pixels.
    pub recent_side: u32,
}

/// What the gate made of one frame.
#[derive(Default)]
struct Gated {
    /// Crops to embed.
    due: Vec<Due>,
    /// Lanes to predict again from their last features (their head changed).
    again: Vec<usize>,
    /// Lanes that looked at the frame, and their region.
    looked: Vec<(usize, Rect)>,
}

/// The state of a running inference task.
struct Running<S> {
    task: Inference<S>,
    lanes: Vec<Lane>,
    backbone: String,
    error_logged: Instant,
}

impl<S: PredictionSink> Inference<S> {
    /// Run until the frame channel closes (capture has stopped).
    ///
    /// Per frame and classifier: crop the region's grey grid, ask the gate
    /// ([`crate::classifier::gate::decide`]); the crops it lets through are
    /// embedded one after the other in one blocking job, and each classifier's
    /// head, smoother and publish rule run on its own features. A classifier whose
    /// head was retrained since its last prediction is predicted again from its
    /// last features, without the backbone.
    pub async fn run(self) -> Result<(), PipelineError> {
        let mut r = Running {
            lanes: Vec::new(),
            backbone: self.embedder.id().to_string(),
            error_logged: Instant::now() - Duration::from_secs(3600),
            task: self,
        };
        let mut last_seq = 0u64;
        while r.task.frames.changed().await.is_ok() {
            let Some(frame) = r.task.frames.borrow_and_update().clone() else {
                continue;
            };
            r.task.demand.taken(frame.seq);
            if last_seq > 0 && frame.seq > last_seq + 1 {
                r.task
                    .stats
                    .frames_dropped
                    .fetch_add(frame.seq - last_seq - 1, Ordering::Relaxed);
            }
            last_seq = frame.seq;
            r.update_lanes();
            r.on_frame(frame).await?;
        }
        Ok(())
    }
}

impl<S: PredictionSink> Running<S> {
    /// Follow the classifier set: a lane per classifier, in order; a classifier
    /// that is the same as before (same definition and topics) keeps its lane
    /// (last run, smoother, held-back prediction), a new or redefined one starts
    /// a fresh lane.
    fn update_lanes(&mut self) {
        let current = self.task.classifiers.borrow_and_update().clone();
        let same = |l: &Lane, c: &Classifier| {
            Arc::ptr_eq(&l.c.spec, &c.spec) && Arc::ptr_eq(&l.c.topics, &c.topics)
        };
        if self.lanes.len() == current.len()
            && self
                .lanes
                .iter()
                .zip(current.iter())
                .all(|(l, c)| same(l, c))
        {
            return;
        }
        let mut old = std::mem::take(&mut self.lanes);
        for c in current.iter() {
            let lane = match old.iter().position(|l| same(l, c)) {
                Some(p) => old.remove(p),
                None => Lane::new(c.clone()),
            };
            self.lanes.push(lane);
        }
    }

    async fn on_frame(&mut self, frame: Arc<Frame>) -> Result<(), PipelineError> {
        let now = Instant::now();
        let gated = self.gate(&frame, now);
        let results = self.embed(&frame, &gated.due).await?;
        let mut ran = false;
        for (d, (crop, result)) in gated.due.into_iter().zip(results) {
            let i = d.lane;
            let Some(embedding) = self.embedded(i, result) else {
                continue;
            };
            ran = true;
            let why = d.why;
            self.lanes[i].ran(d, now, embedding.features, embedding.inference);
            self.predict(i, &frame, Some(why), Some(crop)).await;
        }
        for i in gated.again {
            self.predict(i, &frame, None, None).await;
        }
        self.looked(&gated.looked, &frame, now).await?;
        let stats = &self.task.stats;
        stats.frames_inferred.fetch_add(1, Ordering::Relaxed);
        if ran {
            stats.frames_embedded.fetch_add(1, Ordering::Relaxed);
            stats.latency_us_total.fetch_add(
                frame.captured.elapsed().as_micros() as u64,
                Ordering::Relaxed,
            );
        }
        Ok(())
    }

    /// Ask each lane's gate about this frame; a lane the gate skips still sends a
    /// held-back prediction that is now due.
    fn gate(&mut self, frame: &Frame, now: Instant) -> Gated {
        let (fw, fh) = frame.image.dimensions();
        let mut g = Gated::default();
        for i in 0..self.lanes.len() {
            let Some(rect) = self.lanes[i].rect(fw, fh, now) else {
                continue;
            };
            g.looked.push((i, rect));
            let thumb = crate::classifier::gate::thumb(&frame.image, rect);
            match self.lanes[i].decide(&thumb, now) {
                Ok(why) => g.due.push(Due {
                    lane: i,
                    why,
                    rect,
                    thumb,
                }),
                Err(skip) => {
                    self.lanes[i].c.gate.skipped(skip);
                    self.send_pending(i, now);
                    let lane = &self.lanes[i];
                    if lane.head_now().1 && lane.last.is_some() {
                        g.again.push(i);
                    }
                }
            }
        }
        g
    }

    /// Send lane `i`'s held-back prediction when the publish rule now allows it.
    fn send_pending(&mut self, i: usize, now: Instant) {
        if let Some(p) = self.lanes[i].pending.take() {
            if self.lanes[i].smoother.should_publish(&p.label, now) {
                self.send(i, &p);
            } else {
                self.lanes[i].pending = Some(p);
            }
        }
    }

    /// The crops the gate let through, embedded in one blocking job.
    async fn embed(
        &self,
        frame: &Arc<Frame>,
        due: &[Due],
    ) -> Result<Vec<(RgbImage, Result<Embedding, EmbedError>)>, PipelineError> {
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let embedder = self.task.embedder.clone();
        let job = frame.clone();
        let rects: Vec<Rect> = due.iter().map(|d| d.rect).collect();
        tokio::task::spawn_blocking(move || {
            rects
                .into_iter()
                .map(|r| {
                    let crop = region::crop(&job.image, r);
                    let e = embedder.embed(&crop);
                    (crop, e)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| PipelineError::Panicked(e.to_string()))
    }

    /// Count a backbone run of lane `i`; a failed one is counted and logged at most
    /// once a minute, and gives `None`.
    fn embedded(&mut self, i: usize, result: Result<Embedding, EmbedError>) -> Option<Embedding> {
        let stats = &self.task.stats;
        match result {
            Ok(e) => {
                stats.crops_embedded.fetch_add(1, Ordering::Relaxed);
                stats
                    .backbone_us_total
                    .fetch_add(e.inference.as_micros() as u64, Ordering::Relaxed);
                Some(e)
            }
            Err(error) => {
                stats.frame_errors.fetch_add(1, Ordering::Relaxed);
                if self.error_logged.elapsed() > Duration::from_secs(60) {
                    tracing::warn!(%error, classifier = %self.lanes[i].c.spec.name, "backbone failed on a crop (further errors this minute are counted, not logged)");
                    self.error_logged = Instant::now();
                }
                None
            }
        }
    }

    /// Tell the sink which classifiers looked at this frame, and send the crops
    /// whose image is due (interval passed, or the stable label changed), encoded
    /// in one blocking job.
    async fn looked(
        &mut self,
        looked: &[(usize, Rect)],
        frame: &Arc<Frame>,
        now: Instant,
    ) -> Result<(), PipelineError> {
        let every = self.task.sink.image_every();
        let mut images = Vec::new();
        for &(i, rect) in looked {
            let lane = &mut self.lanes[i];
            if lane
                .alive_at
                .is_none_or(|t| now.duration_since(t) >= ALIVE_EVERY)
            {
                lane.alive_at = Some(now);
                self.task.sink.alive(&lane.c);
            }
            if let Some((interval, _)) = every {
                let due = match &lane.image_at {
                    None => true,
                    Some((at, label)) => {
                        now.duration_since(*at) >= interval || *label != lane.stable
                    }
                };
                if due {
                    lane.image_at = Some((now, lane.stable.clone()));
                    images.push((i, rect));
                }
            }
        }
        if let (false, Some((_, side))) = (images.is_empty(), every) {
            let job = frame.clone();
            let jpegs = tokio::task::spawn_blocking(move || {
                images
                    .into_iter()
                    .filter_map(|(i, r)| crop_jpeg(&job.image, r, side).map(|j| (i, j)))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| PipelineError::Panicked(e.to_string()))?;
            for (i, jpeg) in jpegs {
                self.task.sink.image(&self.lanes[i].c, jpeg);
            }
        }
        Ok(())
    }

    /// Publish a prediction of lane `i`, counting it when it was sent.
    fn send(&mut self, i: usize, p: &Prediction) {
        if self.task.sink.publish(&self.lanes[i].c, p) {
            self.lanes[i]
                .c
                .gate
                .predictions_published
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Classify lane `i`'s last features, smooth, publish by its rule and keep the
    /// crop in `recent` when it is worth a label. `why` is `None` for a prediction
    /// again from the last features (the head changed).
    async fn predict(&mut self, i: usize, frame: &Frame, why: Option<Run>, crop: Option<RgbImage>) {
        let embedder_id = self.task.embedder.id().clone();
        let lane = &mut self.lanes[i];
        let Some(last) = lane.last.as_ref() else {
            return;
        };
        let (head, retrained) = lane.head_now();
        if retrained {
            // The window's votes came from the old head: the new one decides.
            lane.smoother.forget_votes();
        }
        // A head trained on another backbone's features is not used.
        let head_usable = head.clone().filter(|h| h.backbone == embedder_id);
        let mut prediction = build_prediction(
            frame,
            &last.features,
            last.inference,
            head_usable.as_deref(),
            lane.c.spec.predictions.top_k,
            &self.backbone,
        );
        prediction.classifier = lane.c.spec.name.clone();
        prediction.trigger = why.map(Run::name).unwrap_or("head_changed");
        let frame_confidence = prediction.confidence;
        prediction.label = lane.smoother.push(prediction.frame_label.clone());
        if lane.smoother.settled() {
            lane.settling = 0;
        }
        if prediction.label != prediction.frame_label {
            prediction.confidence = 0.0;
            if let Some(l) = &prediction.label {
                if let Some(s) = prediction.top.iter().find(|s| &s.label == l) {
                    prediction.confidence = s.score;
                }
            }
        }
        let first = lane.stable.is_none();
        let changed = lane.stable.as_ref().is_some_and(|s| *s != prediction.label);
        lane.stable = Some(prediction.label.clone());
        lane.c.latest.store(Some(Arc::new(Latest {
            label: prediction.label.clone(),
            frame_label: prediction.frame_label.clone(),
            confidence: prediction.confidence,
            similarity: prediction.similarity,
            captured_at: prediction.captured_at.clone(),
            seq: prediction.seq,
            trigger: prediction.trigger,
        })));
        lane.head_used = head;
        if let Some(crop) = crop {
            let unknown = prediction.frame_label.as_deref() == Some(UNKNOWN);
            let confidence = head_usable.as_ref().map(|_| frame_confidence);
            let worth = Outcome {
                first,
                changed,
                unknown,
                confidence,
                frame_confidence,
            };
            self.keep_recent(i, frame, &prediction, worth, crop).await;
        }
        let lane = &mut self.lanes[i];
        if lane
            .smoother
            .should_publish(&prediction.label, Instant::now())
        {
            lane.pending = None;
            self.send(i, &prediction);
        } else if lane.smoother.holds_back(&prediction.label) {
            lane.pending = Some(prediction);
        }
    }

    /// Keep lane `i`'s crop among its recent crops when it is worth a label
    /// ([`crate::classifier::recent::Recent::worth`]).
    async fn keep_recent(
        &mut self,
        i: usize,
        frame: &Frame,
        prediction: &Prediction,
        o: Outcome,
        crop: RgbImage,
    ) {
        let recent = self.lanes[i].c.recent.clone();
        let now = Instant::now();
        let worth = recent
            .lock()
            .ok()
            .and_then(|r| r.worth(o.first, o.changed, o.unknown, o.confidence, now));
        let Some(reason) = worth else {
            return;
        };
        let side = self.task.recent_side;
        let features = self.lanes[i]
            .last
            .as_ref()
            .map(|l| l.features.clone())
            .unwrap_or_default();
        let (captured_at, label) = (frame.captured_at, prediction.frame_label.clone());
        // Encoded and written to disk off the async threads.
        let kept = tokio::task::spawn_blocking(move || {
            let jpeg = encode::jpeg(
                &encode::fit(crop, Fit::ShortSide(side)),
                encode::THUMBNAIL_QUALITY,
            )
            .ok()?;
            let mut list = recent.lock().ok()?;
            Some(list.push(
                reason,
                captured_at,
                label,
                o.frame_confidence,
                jpeg,
                features,
                now,
            ))
        })
        .await;
        if let Err(e) = kept {
            tracing::warn!(error = %e, "keeping a recent crop failed");
        }
    }
}

/// What a prediction was, for deciding whether its crop is worth keeping.
struct Outcome {
    /// The first prediction since start.
    first: bool,
    /// The stable label changed.
    changed: bool,
    unknown: bool,
    /// The frame's confidence, when a head made the prediction.
    confidence: Option<f32>,
    /// The frame's confidence as kept with the crop (0 without a head).
    frame_confidence: f32,
}
