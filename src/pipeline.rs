//! The inference task: newest frame → backbone (blocking pool) → head → prediction.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::backbone::{norm, Embedder};
use crate::config::{PredictionConfig, PublishMode};
use crate::head::{Head, UNKNOWN};
use crate::mqtt::payload::{timestamp, Prediction, Score};
use crate::mqtt::Publisher;
use crate::source::{Demand, Frame, FrameRx};
use crate::stats::Stats;

/// Where predictions go: MQTT in the daemon, a vector in tests and `eval`.
pub trait PredictionSink: Send {
    fn publish(&mut self, prediction: &Prediction);
}

impl PredictionSink for Publisher {
    fn publish(&mut self, prediction: &Prediction) {
        match serde_json::to_vec(prediction) {
            Ok(bytes) => {
                self.try_publish_prediction(bytes);
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
    }
}

fn round4(v: f32) -> f32 {
    (v * 10_000.0).round() / 10_000.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

pub struct Inference<S> {
    pub frames: FrameRx,
    pub embedder: Arc<dyn Embedder>,
    pub head: Arc<ArcSwapOption<Head>>,
    pub sink: S,
    pub stats: Arc<Stats>,
    pub options: PredictionConfig,
    /// Told of every frame taken, so on-demand sources make the next one.
    pub demand: Arc<Demand>,
}

impl<S: PredictionSink> Inference<S> {
    /// Run until the frame channel closes (capture has stopped).
    pub async fn run(mut self) -> Result<(), PipelineError> {
        let mut smoother = Smoother::new(&self.options);
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
            let embedder = self.embedder.clone();
            let job = frame.clone();
            let result = tokio::task::spawn_blocking(move || embedder.embed(&job.image))
                .await
                .map_err(|e| PipelineError::Panicked(e.to_string()))?;
            let embedding = match result {
                Ok(e) => e,
                Err(error) => {
                    self.stats.frame_errors.fetch_add(1, Ordering::Relaxed);
                    if error_logged.elapsed() > Duration::from_secs(60) {
                        tracing::warn!(%error, "backbone failed on a frame (further errors this minute are counted, not logged)");
                        error_logged = Instant::now();
                    }
                    continue;
                }
            };
            let head = self.head.load_full();
            // A head trained on another backbone's features is not used.
            let head = head.filter(|h| h.backbone == *self.embedder.id());
            let mut prediction = build_prediction(
                &frame,
                &embedding.features,
                embedding.inference,
                head.as_deref(),
                self.options.top_k,
                &backbone,
            );
            prediction.label = smoother.push(prediction.frame_label.clone());
            if prediction.label != prediction.frame_label {
                prediction.confidence = 0.0;
                if let Some(l) = &prediction.label {
                    if let Some(s) = prediction.top.iter().find(|s| &s.label == l) {
                        prediction.confidence = s.score;
                    }
                }
            }
            self.stats.frames_inferred.fetch_add(1, Ordering::Relaxed);
            self.stats.latency_us_total.fetch_add(
                frame.captured.elapsed().as_micros() as u64,
                Ordering::Relaxed,
            );
            if smoother.should_publish(&prediction.label, Instant::now()) {
                self.sink.publish(&prediction);
            }
        }
        Ok(())
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
