//! The inference task: newest frame → per classifier: region → change gate →
//! backbone (blocking pool) → head → smoother → prediction.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;

use crate::backbone::{norm, Embedder};
use crate::classifier::gate::{self, Run, Skip};
use crate::classifier::region::{self, Rect};
use crate::classifier::Classifier;
use crate::config::{PredictionConfig, PublishMode};
use crate::head::{Head, UNKNOWN};
use crate::mqtt::payload::{timestamp, Prediction, Score};
use crate::mqtt::Publisher;
use crate::source::{Demand, Frame, FrameRx};
use crate::stats::Stats;

/// Where predictions go: MQTT in the daemon, a vector in tests and `eval`.
pub trait PredictionSink: Send {
    /// A prediction of classifier `classifier` (its index in the configuration).
    fn publish(&mut self, classifier: usize, prediction: &Prediction);
}

impl PredictionSink for Publisher {
    fn publish(&mut self, classifier: usize, prediction: &Prediction) {
        match serde_json::to_vec(prediction) {
            Ok(bytes) => {
                self.try_publish_prediction(classifier, bytes);
            }
            Err(e) => tracing::error!(error = %e, "cannot encode prediction"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("the backbone task panicked: {0}")]
    Panicked(String),
}

/// Majority vote over the last frames' labels, and the decision to publish.
#[derive(Debug)]
pub struct Smoother {
    window: VecDeque<Option<String>>,
    size: usize,
    stable: Option<String>,
    mode: PublishMode,
    min_interval: Duration,
    last_published: Option<(Option<String>, Instant)>,
}

impl Smoother {
    pub fn new(c: &PredictionConfig) -> Self {
        Self {
            window: VecDeque::with_capacity(c.smoothing_window),
            size: c.smoothing_window.max(1),
            stable: None,
            mode: c.publish,
            min_interval: Duration::from_millis(c.min_interval_ms),
            last_published: None,
        }
    }

    /// Add a frame's label; returns the stable label: the label of more than half of
    /// the window, or the previous stable label while there is no majority.
    pub fn push(&mut self, label: Option<String>) -> Option<String> {
        if self.window.len() == self.size {
            self.window.pop_front();
        }
        self.window.push_back(label);
        let mut best: Option<(&Option<String>, usize)> = None;
        for l in &self.window {
            let n = self.window.iter().filter(|x| *x == l).count();
            if best.is_none_or(|(_, m)| n > m) {
                best = Some((l, n));
            }
        }
        if let Some((l, n)) = best {
            if n * 2 > self.window.len() {
                self.stable = l.clone();
            }
        }
        self.stable.clone()
    }

    /// Whether every label in the window is the stable one (nothing left to settle).
    pub fn settled(&self) -> bool {
        self.window.iter().all(|l| *l == self.stable)
    }

    /// Whether a prediction with stable label `label` should be published at `now`.
    pub fn should_publish(&mut self, label: &Option<String>, now: Instant) -> bool {
        let due = match &self.last_published {
            None => true,
            Some((last, at)) => {
                now.duration_since(*at) >= self.min_interval
                    && (self.mode == PublishMode::EveryFrame || last != label)
            }
        };
        if due {
            self.last_published = Some((label.clone(), now));
        }
        due
    }
}

/// Turn head scores into the published prediction.
pub fn build_prediction(
    frame: &Frame,
    features: &[f32],
    inference: Duration,
    head: Option<&Head>,
    top_k: usize,
    backbone: &str,
) -> Prediction {
    let scores = head.map(|h| (h, h.predict(features)));
    let (frame_label, confidence, similarity, top) = match &scores {
        Some((h, s)) if !s.ranked.is_empty() => {
            let (best, p) = s.ranked[0];
            let label = if s.unknown {
                UNKNOWN.to_string()
            } else {
                h.classes[best].clone()
            };
            let top = s
                .ranked
                .iter()
                .take(top_k)
                .map(|(c, p)| Score {
                    label: h.classes[*c].clone(),
                    score: round4(*p),
                })
                .collect();
            let confidence = if s.unknown { 0.0 } else { round4(p) };
            (Some(label), confidence, Some(round4(s.similarity)), top)
        }
        _ => (None, 0.0, None, Vec::new()),
    };
    Prediction {
        label: frame_label.clone(),
        confidence,
        frame_label,
        similarity,
        top,
        seq: frame.seq,
        captured_at: timestamp(frame.captured_at),
        latency_ms: round3(frame.captured.elapsed().as_secs_f64() * 1000.0),
        inference_ms: round3(inference.as_secs_f64() * 1000.0),
        embedding_norm: round4(norm(features)),
        backbone: backbone.to_string(),
        head: head.map(Head::id),
        image: frame.name.clone(),
        classifier: String::new(),
        trigger: "",
    }
}

fn round4(v: f32) -> f32 {
    (v * 10_000.0).round() / 10_000.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// One classifier as the inference task sees it: the shared handles and what the
/// task remembers between frames.
struct Lane {
    c: Classifier,
    smoother: Smoother,
    /// The grey grid, time and features of the last backbone run.
    last: Option<LastRun>,
    /// Runs still owed to the smoothing window after a change ([`gate::Last::settling`]).
    settling: u32,
    /// The head the last prediction used, to notice a retrained one.
    head_used: Option<Arc<Head>>,
    /// The stable label last published or held, for `recent`'s label changes.
    stable: Option<Option<String>>,
    outside_logged: Option<Instant>,
}

struct LastRun {
    thumb: gate::Thumb,
    at: Instant,
    features: Vec<f32>,
    inference: Duration,
}

/// A crop the gate let through on this frame.
struct Due {
    lane: usize,
    why: Run,
    rect: Rect,
    thumb: gate::Thumb,
}

pub struct Inference<S> {
    pub frames: FrameRx,
    pub embedder: Arc<dyn Embedder>,
    /// Every classifier, in configuration order.
    pub classifiers: Vec<Classifier>,
    pub sink: S,
    pub stats: Arc<Stats>,
    /// Told of every frame taken, so on-demand sources make the next one.
    pub demand: Arc<Demand>,
    /// Short side of the JPEG kept for a recent crop, pixels.
    pub recent_side: u32,
}

impl<S: PredictionSink> Inference<S> {
    /// Run until the frame channel closes (capture has stopped).
    ///
    /// Per frame and classifier: crop the region's grey grid, ask the gate
    /// ([`gate::decide`]); the crops it lets through are embedded one after the
    /// other in one blocking job, and each classifier's head, smoother and publish
    /// rule run on its own features. A classifier whose head was retrained since
    /// its last prediction is predicted again from its last features, without the
    /// backbone.
    pub async fn run(mut self) -> Result<(), PipelineError> {
        let mut lanes: Vec<Lane> = self
            .classifiers
            .iter()
            .map(|c| Lane {
                smoother: Smoother::new(&c.spec.predictions),
                c: c.clone(),
                last: None,
                settling: 0,
                head_used: None,
                stable: None,
                outside_logged: None,
            })
            .collect();
        let mut last_seq = 0u64;
        let backbone = self.embedder.id().to_string();
        let mut error_logged = Instant::now() - Duration::from_secs(3600);
        while self.frames.changed().await.is_ok() {
            let Some(frame) = self.frames.borrow_and_update().clone() else {
                continue;
            };
            self.demand.taken(frame.seq);
            if last_seq > 0 && frame.seq > last_seq + 1 {
                self.stats
                    .frames_dropped
                    .fetch_add(frame.seq - last_seq - 1, Ordering::Relaxed);
            }
            last_seq = frame.seq;
            let now = Instant::now();
            let (fw, fh) = frame.image.dimensions();
            let mut due = Vec::new();
            let mut again = Vec::new();
            for (i, lane) in lanes.iter_mut().enumerate() {
                let rect = match lane.c.spec.region.rect(fw, fh) {
                    Ok(r) => r,
                    Err(e) => {
                        lane.c.gate.skipped(Skip::OutsideFrame);
                        if lane
                            .outside_logged
                            .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
                        {
                            tracing::warn!(classifier = %lane.c.spec.name, error = %e, "the classifier's region does not fit the frame; skipped (logged once a minute)");
                            lane.outside_logged = Some(now);
                        }
                        lane.last = None;
                        continue;
                    }
                };
                let thumb = gate::thumb(&frame.image, rect);
                let last = lane.last.as_ref().map(|l| gate::Last {
                    change: gate::change(&thumb, &l.thumb),
                    age: now.duration_since(l.at),
                    settling: lane.settling,
                });
                match gate::decide(&lane.c.spec.trigger, last) {
                    Ok(why) => due.push(Due {
                        lane: i,
                        why,
                        rect,
                        thumb,
                    }),
                    Err(skip) => {
                        lane.c.gate.skipped(skip);
                        let head = lane.c.head.load_full();
                        let retrained = match (&head, &lane.head_used) {
                            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
                            (a, b) => a.is_some() != b.is_some(),
                        };
                        if retrained && lane.last.is_some() {
                            again.push(i);
                        }
                    }
                }
            }
            // The crops the gate let through, embedded in one blocking job.
            let mut results = Vec::new();
            if !due.is_empty() {
                let embedder = self.embedder.clone();
                let job = frame.clone();
                let rects: Vec<Rect> = due.iter().map(|d| d.rect).collect();
                results = tokio::task::spawn_blocking(move || {
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
                .map_err(|e| PipelineError::Panicked(e.to_string()))?;
            }
            let mut ran = false;
            for (d, (crop, result)) in due.into_iter().zip(results) {
                let lane = &mut lanes[d.lane];
                let embedding = match result {
                    Ok(e) => e,
                    Err(error) => {
                        self.stats.frame_errors.fetch_add(1, Ordering::Relaxed);
                        if error_logged.elapsed() > Duration::from_secs(60) {
                            tracing::warn!(%error, classifier = %lane.c.spec.name, "backbone failed on a crop (further errors this minute are counted, not logged)");
                            error_logged = Instant::now();
                        }
                        continue;
                    }
                };
                ran = true;
                lane.c.gate.ran(d.why);
                lane.settling = match d.why {
                    Run::First | Run::Changed => {
                        lane.c.spec.predictions.smoothing_window.saturating_sub(1) as u32
                    }
                    _ => lane.settling.saturating_sub(1),
                };
                lane.last = Some(LastRun {
                    thumb: d.thumb,
                    at: now,
                    features: embedding.features,
                    inference: embedding.inference,
                });
                self.predict(lane, d.lane, &frame, Some(d.why), Some(crop), &backbone)
                    .await;
            }
            for i in again {
                let lane = &mut lanes[i];
                self.predict(lane, i, &frame, None, None, &backbone).await;
            }
            self.stats.frames_inferred.fetch_add(1, Ordering::Relaxed);
            if ran {
                self.stats.latency_us_total.fetch_add(
                    frame.captured.elapsed().as_micros() as u64,
                    Ordering::Relaxed,
                );
            }
        }
        Ok(())
    }

    /// Classify the lane's last features, smooth, publish by its rule and keep the
    /// crop in `recent` when it is worth a label. `why` is `None` for a prediction
    /// again from the last features (the head changed).
    async fn predict(
        &mut self,
        lane: &mut Lane,
        index: usize,
        frame: &Frame,
        why: Option<Run>,
        crop: Option<RgbImage>,
        backbone: &str,
    ) {
        let Some(last) = lane.last.as_ref() else {
            return;
        };
        let head = lane.c.head.load_full();
        // A head trained on another backbone's features is not used.
        let head = head.filter(|h| h.backbone == *self.embedder.id());
        let options = &lane.c.spec.predictions;
        let mut prediction = build_prediction(
            frame,
            &last.features,
            last.inference,
            head.as_deref(),
            options.top_k,
            backbone,
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
        lane.head_used = head.clone();
        if let Some(crop) = crop {
            let unknown = prediction.frame_label.as_deref() == Some(UNKNOWN);
            let confidence = head.as_ref().map(|_| frame_confidence);
            let now = Instant::now();
            let worth = lane
                .c
                .recent
                .lock()
                .ok()
                .and_then(|r| r.worth(first, changed, unknown, confidence, now));
            if let Some(reason) = worth {
                let side = self.recent_side;
                let jpeg = tokio::task::spawn_blocking(move || {
                    crate::learn::thumbnail(crop, side).map(|p| p.jpeg)
                })
                .await;
                if let (Ok(Ok(jpeg)), Ok(mut recent)) = (jpeg, lane.c.recent.lock()) {
                    recent.push(
                        reason,
                        frame.captured_at,
                        prediction.frame_label.clone(),
                        frame_confidence,
                        jpeg,
                        now,
                    );
                }
            }
        }
        if lane
            .smoother
            .should_publish(&prediction.label, Instant::now())
        {
            lane.c
                .gate
                .predictions_published
                .fetch_add(1, Ordering::Relaxed);
            self.sink.publish(index, &prediction);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(window: usize, mode: PublishMode, min_ms: u64) -> PredictionConfig {
        PredictionConfig {
            publish: mode,
            min_interval_ms: min_ms,
            top_k: 3,
            smoothing_window: window,
        }
    }

    fn l(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn smoothing_needs_a_majority_to_change_label() {
        let mut s = Smoother::new(&cfg(3, PublishMode::EveryFrame, 0));
        assert_eq!(s.push(l("cat")), l("cat"));
        assert_eq!(s.push(l("dog")), l("cat")); // 1 of 2: no majority, keep cat
        assert_eq!(s.push(l("dog")), l("dog")); // 2 of 3
        assert_eq!(s.push(l("cat")), l("dog")); // dog, dog, cat
        assert_eq!(s.push(l("cat")), l("cat")); // dog, cat, cat
        let mut one = Smoother::new(&cfg(1, PublishMode::EveryFrame, 0));
        assert_eq!(one.push(l("a")), l("a"));
        assert_eq!(one.push(None), None);
    }

    #[test]
    fn on_change_publishes_only_changes_and_respects_the_interval() {
        let mut s = Smoother::new(&cfg(1, PublishMode::OnChange, 1000));
        let t0 = Instant::now();
        assert!(s.should_publish(&l("cat"), t0));
        assert!(!s.should_publish(&l("cat"), t0 + Duration::from_secs(5)));
        // A change inside the interval waits ...
        assert!(!s.should_publish(&l("dog"), t0 + Duration::from_millis(500)));
        // ... and goes out once the interval has passed.
        assert!(s.should_publish(&l("dog"), t0 + Duration::from_millis(1500)));
        let mut every = Smoother::new(&cfg(1, PublishMode::EveryFrame, 0));
        assert!(every.should_publish(&l("cat"), t0));
        assert!(every.should_publish(&l("cat"), t0));
    }
}
