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
    /// A prediction of classifier `classifier` (its index in the configuration);
    /// whether it was sent.
    fn publish(&mut self, classifier: usize, prediction: &Prediction) -> bool;

    /// Classifier `classifier` looked at a frame (ran the backbone or found the
    /// crop unchanged): its published state is still current. Called at most once
    /// per [`ALIVE_EVERY`] per classifier.
    fn alive(&mut self, _classifier: usize) {}

    /// How often the sink wants each classifier's crop as JPEG (and at every
    /// change of the stable label), and the JPEG's longest side in pixels;
    /// `None`: never.
    fn image_every(&self) -> Option<(Duration, u32)> {
        None
    }

    /// The latest crop of classifier `classifier`, JPEG.
    fn image(&mut self, _classifier: usize, _jpeg: Vec<u8>) {}
}

/// How often [`PredictionSink::alive`] is called per classifier at most.
pub const ALIVE_EVERY: Duration = Duration::from_secs(1);

impl PredictionSink for Publisher {
    fn publish(&mut self, classifier: usize, prediction: &Prediction) -> bool {
        let sent = match serde_json::to_vec(prediction) {
            Ok(bytes) => self.try_publish_prediction(classifier, bytes),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode prediction");
                false
            }
        };
        // Also when the prediction could not be sent (disconnected, queue full):
        // the retained state is published again after the next connect, while
        // the publish rule will not repeat the prediction.
        self.notify(crate::homeassistant::Event::Prediction {
            classifier,
            label: prediction.label.clone(),
            confidence: prediction.confidence,
            seq: prediction.seq,
            captured_at: prediction.captured_at.clone(),
            head: prediction.head.clone(),
        });
        sent
    }

    fn alive(&mut self, classifier: usize) {
        self.notify(crate::homeassistant::Event::Alive { classifier });
    }

    fn image_every(&self) -> Option<(Duration, u32)> {
        self.image_every
    }

    fn image(&mut self, classifier: usize, jpeg: Vec<u8>) {
        self.notify(crate::homeassistant::Event::Image { classifier, jpeg });
    }
}

/// The crop in `rect` of `frame` as JPEG (quality 80), scaled down so that its
/// longest side is at most `max_side` pixels.
pub fn crop_jpeg(frame: &RgbImage, rect: Rect, max_side: u32) -> Option<Vec<u8>> {
    let crop = region::crop(frame, rect);
    let (w, h) = crop.dimensions();
    let long = w.max(h).max(1);
    let crop = if long > max_side {
        let scale = max_side as f64 / long as f64;
        image::imageops::resize(
            &crop,
            ((w as f64 * scale).round() as u32).max(1),
            ((h as f64 * scale).round() as u32).max(1),
            image::imageops::FilterType::Triangle,
        )
    } else {
        crop
    };
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::Cursor::new(&mut jpeg), 80)
        .encode_image(&crop)
        .ok()?;
    Some(jpeg)
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

    /// Forget the votes (they came from a head that was replaced); the stable
    /// label stays until the next vote.
    pub fn forget_votes(&mut self) {
        self.window.clear();
    }

    /// Whether a prediction with stable label `label` that [`Smoother::should_publish`]
    /// refused is waiting for the minimum interval (rather than not wanted: the
    /// same label again in `on_change` mode).
    pub fn holds_back(&self, label: &Option<String>) -> bool {
        match &self.last_published {
            None => false,
            Some((last, _)) => self.mode == PublishMode::EveryFrame || last != label,
        }
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
    /// A prediction the publish rule held back (`min_interval_ms`), sent from a
    /// later frame once it is due even if the gate skips that frame.
    pending: Option<Prediction>,
    outside_logged: Option<Instant>,
    /// When [`PredictionSink::alive`] was last called.
    alive_at: Option<Instant>,
    /// When the last image was sent, and the stable label then.
    image_at: Option<(Instant, Option<Option<String>>)>,
}

impl Lane {
    /// The classifier's current head, and whether it differs from the one the
    /// last prediction used (retrained, reset, or the first one).
    fn head_now(&self) -> (Option<Arc<Head>>, bool) {
        let head = self.c.head.load_full();
        let changed = match (&head, &self.head_used) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            (a, b) => a.is_some() != b.is_some(),
        };
        (head, changed)
    }
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
                pending: None,
                outside_logged: None,
                alive_at: None,
                image_at: None,
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
            let mut looked = Vec::new();
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
                        continue;
                    }
                };
                looked.push((i, rect));
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
                        if let Some(p) = lane.pending.take() {
                            if lane.smoother.should_publish(&p.label, now) {
                                self.send(lane, i, &p);
                            } else {
                                lane.pending = Some(p);
                            }
                        }
                        if lane.head_now().1 && lane.last.is_some() {
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
                self.stats.crops_embedded.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .backbone_us_total
                    .fetch_add(embedding.inference.as_micros() as u64, Ordering::Relaxed);
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
            self.looked(&mut lanes, &looked, &frame, now).await?;
            self.stats.frames_inferred.fetch_add(1, Ordering::Relaxed);
            if ran {
                self.stats.frames_embedded.fetch_add(1, Ordering::Relaxed);
                self.stats.latency_us_total.fetch_add(
                    frame.captured.elapsed().as_micros() as u64,
                    Ordering::Relaxed,
                );
            }
        }
        Ok(())
    }

    /// Tell the sink which classifiers looked at this frame, and send the crops
    /// whose image is due (interval passed, or the stable label changed), encoded
    /// in one blocking job.
    async fn looked(
        &mut self,
        lanes: &mut [Lane],
        looked: &[(usize, Rect)],
        frame: &Arc<Frame>,
        now: Instant,
    ) -> Result<(), PipelineError> {
        let every = self.sink.image_every();
        let mut images = Vec::new();
        for &(i, rect) in looked {
            let lane = &mut lanes[i];
            if lane
                .alive_at
                .is_none_or(|t| now.duration_since(t) >= ALIVE_EVERY)
            {
                lane.alive_at = Some(now);
                self.sink.alive(i);
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
                self.sink.image(i, jpeg);
            }
        }
        Ok(())
    }

    /// Publish a prediction of lane `index`, counting it when it was sent.
    fn send(&mut self, lane: &Lane, index: usize, p: &Prediction) {
        if self.sink.publish(index, p) {
            lane.c
                .gate
                .predictions_published
                .fetch_add(1, Ordering::Relaxed);
        }
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
        let (head, retrained) = lane.head_now();
        if retrained {
            // The window's votes came from the old head: the new one decides.
            lane.smoother.forget_votes();
        }
        // A head trained on another backbone's features is not used.
        let head_usable = head.clone().filter(|h| h.backbone == *self.embedder.id());
        let options = &lane.c.spec.predictions;
        let mut prediction = build_prediction(
            frame,
            &last.features,
            last.inference,
            head_usable.as_deref(),
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
        lane.head_used = head;
        if let Some(crop) = crop {
            let unknown = prediction.frame_label.as_deref() == Some(UNKNOWN);
            let confidence = head_usable.as_ref().map(|_| frame_confidence);
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
            lane.pending = None;
            self.send(lane, index, &prediction);
        } else if lane.smoother.holds_back(&prediction.label) {
            lane.pending = Some(prediction);
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

    /// A backbone whose features are the crop's mean colour: red and blue scenes
    /// are told apart, the rest is the real pipeline.
    struct MeanColour(crate::backbone::BackboneId);

    impl Embedder for MeanColour {
        fn id(&self) -> &crate::backbone::BackboneId {
            &self.0
        }
        fn dim(&self) -> usize {
            3
        }
        fn embed(
            &self,
            image: &RgbImage,
        ) -> Result<crate::backbone::Embedding, crate::backbone::EmbedError> {
            let n = (image.width() * image.height()).max(1) as f32;
            let mut f = vec![0.0f32; 3];
            for p in image.pixels() {
                for (acc, v) in f.iter_mut().zip(p.0) {
                    *acc += v as f32 / n;
                }
            }
            Ok(crate::backbone::Embedding {
                features: f,
                preprocess: Duration::ZERO,
                inference: Duration::ZERO,
            })
        }
    }

    #[derive(Clone, Default)]
    struct Kept(std::sync::Arc<std::sync::Mutex<Vec<Prediction>>>);

    impl PredictionSink for Kept {
        fn publish(&mut self, _: usize, p: &Prediction) -> bool {
            self.0.lock().expect("lock").push(p.clone());
            true
        }
    }

    fn frame(seq: u64, rgb: [u8; 3]) -> Option<Arc<Frame>> {
        Some(Arc::new(Frame {
            seq,
            captured_at: std::time::SystemTime::now(),
            captured: Instant::now(),
            image: RgbImage::from_pixel(64, 48, image::Rgb(rgb)),
            name: None,
        }))
    }

    fn head(e: &MeanColour, classes: &[(&str, [f32; 3])], version: u64) -> Arc<crate::head::Head> {
        let names: Vec<String> = classes.iter().map(|c| c.0.to_string()).collect();
        let samples: Vec<crate::head::Sample> = classes
            .iter()
            .enumerate()
            .map(|(i, c)| crate::head::Sample {
                features: &c.1,
                class: i,
            })
            .collect();
        let params = crate::head::TrainParams {
            kind: crate::config::HeadKind::Ncm,
            auto_min_samples: 5,
            l2: 1e-3,
            l2_auto: false,
            max_iterations: 10,
            unknown: crate::config::UnknownThreshold::Off,
        };
        Arc::new(crate::head::train(&samples, &names, &e.0, version, &params).expect("train"))
    }

    /// Frames of one colour, `gap` apart, for `n` frames; returns the next seq.
    async fn show(
        tx: &tokio::sync::watch::Sender<Option<Arc<Frame>>>,
        mut seq: u64,
        rgb: [u8; 3],
        n: u32,
        gap: Duration,
    ) -> u64 {
        for _ in 0..n {
            seq += 1;
            let _ = tx.send(frame(seq, rgb));
            tokio::time::sleep(gap).await;
        }
        seq
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn held_back_changes_and_retrained_heads_are_published_while_the_gate_skips() {
        use crate::classifier::{gate::TriggerConfig, region::RegionConfig, ClassifierSpec};
        let e = Arc::new(MeanColour(crate::backbone::BackboneId::new(
            "mean".into(),
            "0".into(),
            "",
        )));
        let mut spec = ClassifierSpec::new("door", RegionConfig::WHOLE, TriggerConfig::default());
        spec.predictions = cfg(3, PublishMode::OnChange, 400);
        let c = Classifier::new(Arc::new(spec));
        // Uniform colours: the gate sees the change of brightness (79 to 31 grey levels).
        let red = [220u8, 20, 20];
        let blue = [20u8, 20, 120];
        c.head.store(Some(head(
            &e,
            &[
                ("closed", [220.0, 20.0, 20.0]),
                ("open", [20.0, 20.0, 120.0]),
            ],
            1,
        )));
        let (tx, rx) = tokio::sync::watch::channel(None);
        let kept = Kept::default();
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn(
            Inference {
                frames: rx,
                embedder: e.clone(),
                classifiers: vec![c.clone()],
                sink: kept.clone(),
                stats: stats.clone(),
                demand: Arc::new(Demand::default()),
                recent_side: 64,
            }
            .run(),
        );
        let gap = Duration::from_millis(40);
        let mut seq = show(&tx, 0, red, 5, gap).await;
        // The change comes inside min_interval_ms of the first publish; the gate
        // skips the frames after it once the window agrees, and the held-back
        // change must still go out when the interval has passed.
        seq = show(&tx, seq, blue, 20, gap).await;
        let labels = |k: &Kept| -> Vec<Option<String>> {
            k.0.lock()
                .expect("lock")
                .iter()
                .map(|p| p.label.clone())
                .collect()
        };
        assert_eq!(
            labels(&kept),
            vec![Some("closed".into()), Some("open".into())]
        );
        // Retrained: the same blue now means "ajar". The smoothing window (3) is
        // not left to outvote the new head, and no backbone run is needed.
        let runs = c.gate.runs();
        c.head.store(Some(head(
            &e,
            &[
                ("closed", [220.0, 20.0, 20.0]),
                ("ajar", [20.0, 20.0, 120.0]),
            ],
            2,
        )));
        show(&tx, seq, blue, 15, gap).await;
        let all = kept.0.lock().expect("lock").clone();
        let last = all.last().expect("a prediction");
        assert_eq!(last.label.as_deref(), Some("ajar"), "{all:?}");
        assert_eq!(last.trigger, "head_changed");
        assert_eq!(
            c.gate.runs(),
            runs,
            "a retrained head needs no backbone run"
        );
        // The mean latency is over the frames that ran the backbone.
        let s = stats.snapshot();
        assert!(s.frames_embedded < s.frames_inferred / 3, "{s:?}");
        drop(tx);
        task.await.expect("join").expect("run");
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
