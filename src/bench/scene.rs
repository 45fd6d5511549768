//! `edgehead bench-scene`: what the change gate saves, measured on a replayed scene.
//!
//! A 640×480 scene (a background photo) is replayed at `fps` through the real
//! inference pipeline (gate, backbone, heads, smoothing) with two classifiers:
//! `door`, whose region (a tenth of the frame) holds one object and later
//! another, and `bins`, whose region never changes. Every frame carries fresh
//! camera noise (uniform, ±`noise` grey levels per channel) and the light falls
//! slowly by `light_drop` over the static phase, like an afternoon. After
//! `static_secs` the door's object is swapped; the run goes on for `after_secs`.
//!
//! Printed per classifier: backbone runs per minute while static and while
//! changing, and for `door` the delay from the swap to the first published
//! prediction with the new stable label; for the process, CPU seconds per minute
//! of each phase (getrusage, the frames are made in advance so the replay costs
//! nothing measurable).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use image::RgbImage;
use serde::Serialize;
use tokio::sync::watch;

use crate::backbone::{Embedder, TractEmbedder};
use crate::classifier::Classifier;
use crate::config::{ClassifierSpec, HeadKind, TriggerConfig};
use crate::eval::Scene;
use crate::head::{self, Sample, TrainParams};
use crate::mqtt::payload::Prediction;
use crate::mqtt::ClassifierTopics;
use crate::pipeline::{Inference, PredictionSink};
use crate::region::{self, RegionConfig, RegionUnit};
use crate::source::{Demand, Frame};
use crate::stats::{cpu_seconds, Stats};

pub struct Options {
    pub background: RgbImage,
    /// The door's object before and after the change.
    pub before: RgbImage,
    pub after: RgbImage,
    pub fps: f64,
    pub static_secs: f64,
    pub after_secs: f64,
    /// Camera noise, ± grey levels per channel.
    pub noise: u8,
    /// Fraction the light falls by over the static phase (0.2: to 80%).
    pub light_drop: f32,
    pub max_age_secs: f64,
    pub smoothing_window: usize,
    /// Run the backbone on every frame (the gate off), for comparison.
    pub every_frame: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassifierResult {
    pub name: String,
    pub runs_per_min_static: f64,
    pub runs_per_min_changing: f64,
    pub skipped_static: u64,
    /// Backbone runs by reason over the whole run.
    pub runs: serde_json::Value,
    /// `door` only: swap → first published prediction with the new stable label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_to_label_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub backbone: String,
    pub fps: f64,
    pub static_secs: f64,
    pub after_secs: f64,
    pub noise: u8,
    pub light_drop: f32,
    pub max_age_secs: f64,
    pub smoothing_window: usize,
    pub every_frame: bool,
    /// Backbone run on one crop, median, ms (for scale: what every frame would cost).
    pub backbone_ms: f64,
    pub cpu_s_per_min_static: f64,
    pub cpu_s_per_min_changing: f64,
    pub classifiers: Vec<ClassifierResult>,
}

/// When a prediction was published, by which classifier, with which stable label.
type Published = (Instant, String, Option<String>);

/// Records what the pipeline publishes.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Published>>>);

impl PredictionSink for Recorder {
    fn publish(&mut self, classifier: &Classifier, p: &Prediction) -> bool {
        if let Ok(mut v) = self.0.lock() {
            v.push((
                Instant::now(),
                classifier.name().to_string(),
                p.label.clone(),
            ));
        }
        true
    }
}

/// `image` with its light scaled by `gain` and fresh uniform noise.
fn camera(image: &RgbImage, gain: f32, noise: u8, rng: &mut fastrand::Rng) -> RgbImage {
    let mut out = image.clone();
    let n = noise as i32;
    for p in out.pixels_mut() {
        for c in p.0.iter_mut() {
            let v = *c as f32 * gain + rng.i32(-n..=n) as f32;
            *c = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

const LIGHT_STEPS: usize = 8;
const NOISE_VARIANTS: usize = 4;

fn bins_region() -> RegionConfig {
    RegionConfig {
        x: 0.05,
        y: 0.55,
        width: 0.3,
        height: 0.35,
        unit: RegionUnit::Fraction,
    }
}

/// A head for `spec`'s region from labeled frames (NCM: one mean per class).
fn head_for(
    e: &TractEmbedder,
    region: &RegionConfig,
    examples: &[(&RgbImage, usize)],
    classes: &[&str],
) -> Result<head::Head, String> {
    let mut feats = Vec::new();
    for (frame, class) in examples {
        let (w, h) = frame.dimensions();
        let rect = region.rect(w, h).map_err(|e| e.to_string())?;
        let f = e
            .embed(&region::crop(frame, rect))
            .map_err(|e| e.to_string())?
            .features;
        feats.push((f, *class));
    }
    let samples: Vec<Sample> = feats
        .iter()
        .map(|(f, c)| Sample {
            features: f,
            class: *c,
        })
        .collect();
    let classes: Vec<String> = classes.iter().map(|c| c.to_string()).collect();
    let params = TrainParams {
        kind: HeadKind::Ncm,
        auto_min_samples: 5,
        l2: 1e-3,
        l2_auto: false,
        max_iterations: 100,
        unknown: crate::config::UnknownThreshold::Off,
    };
    head::train(&samples, &classes, e.id(), 1, &params).map_err(|e| e.to_string())
}

/// The replayed frames: per light step, noisy variants of the scene before the
/// change; noisy variants after it.
struct Frames {
    before: Vec<Vec<RgbImage>>,
    after: Vec<RgbImage>,
}

impl Frames {
    /// Made in advance, so the replay costs nothing measurable.
    fn new(o: &Options, before: &RgbImage, after: &RgbImage) -> Self {
        let mut rng = fastrand::Rng::with_seed(11);
        let gains: Vec<f32> = (0..LIGHT_STEPS)
            .map(|i| 1.0 - o.light_drop * i as f32 / (LIGHT_STEPS - 1) as f32)
            .collect();
        let before = gains
            .iter()
            .map(|g| {
                (0..NOISE_VARIANTS)
                    .map(|_| camera(before, *g, o.noise, &mut rng))
                    .collect()
            })
            .collect();
        let after = (0..NOISE_VARIANTS)
            .map(|_| camera(after, 1.0 - o.light_drop, o.noise, &mut rng))
            .collect();
        Self { before, after }
    }

    /// The frame at `t` seconds of the replay (`static_secs` before the change).
    fn at(&self, t: f64, static_secs: f64, seq: u64) -> RgbImage {
        let variant = seq as usize % NOISE_VARIANTS;
        if t < static_secs {
            let step = ((t / static_secs) * LIGHT_STEPS as f64) as usize;
            self.before[step.min(LIGHT_STEPS - 1)][variant].clone()
        } else {
            self.after[variant].clone()
        }
    }
}

/// The median backbone time on the door's crop, ms (5 runs).
fn median_backbone_ms(e: &TractEmbedder, crop: &RgbImage) -> f64 {
    let mut ms: Vec<f64> = (0..5)
        .filter_map(|_| e.embed(crop).ok())
        .map(|x| x.inference.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    ms.get(ms.len() / 2).copied().unwrap_or(0.0)
}

/// The two classifiers: `door` on the scene's region, `bins` on a region that
/// never changes, each with a head taught on clean frames.
fn classifiers(
    e: &TractEmbedder,
    o: &Options,
    scene: &Scene,
    before: &RgbImage,
    after: &RgbImage,
) -> Result<Vec<Classifier>, String> {
    // Heads taught on clean frames of both states (the door) and of the scene
    // against the other object (the bins).
    let door_head = head_for(
        e,
        &scene.region,
        &[(before, 0), (after, 1)],
        &["before", "after"],
    )?;
    let elsewhere = Scene::new(&o.after).compose(&o.before);
    let bins_head = head_for(
        e,
        &bins_region(),
        &[(before, 0), (&elsewhere, 1)],
        &["out", "in"],
    )?;
    let trigger = TriggerConfig {
        max_age_secs: o.max_age_secs,
        every_frame: o.every_frame,
        ..TriggerConfig::default()
    };
    let make = |name: &str, region: RegionConfig, h: head::Head| {
        let mut spec = ClassifierSpec::new(name, region, trigger);
        spec.predictions.smoothing_window = o.smoothing_window;
        let topics = Arc::new(ClassifierTopics::new("edgehead/bench", name));
        let c = Classifier::new(Arc::new(spec), topics);
        c.head.store(Some(Arc::new(h)));
        c
    };
    Ok(vec![
        make("door", scene.region, door_head),
        make("bins", bins_region(), bins_head),
    ])
}

/// Process CPU seconds and each classifier's (backbone runs, skips) at a moment.
type Mark = (f64, Vec<(u64, u64)>);

fn mark(classifiers: &[Classifier]) -> Mark {
    (
        cpu_seconds(libc::RUSAGE_SELF),
        classifiers
            .iter()
            .map(|c| (c.gate.runs(), c.gate.skips()))
            .collect(),
    )
}

/// Replay the scene through the pipeline; the marks at the start, the change
/// and the end, and when the change was shown.
async fn replay(
    inference: Inference<Recorder>,
    classifiers: &[Classifier],
    frames: &Frames,
    o: &Options,
) -> (Vec<Mark>, Option<Instant>) {
    let (frame_tx, frame_rx) = watch::channel(None);
    let inference = Inference {
        frames: frame_rx,
        ..inference
    };
    let task = tokio::spawn(inference.run());
    let started = Instant::now();
    let mut marks = vec![(
        cpu_seconds(libc::RUSAGE_SELF),
        vec![(0, 0); classifiers.len()],
    )];
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / o.fps.max(0.1)));
    let (mut seq, mut change_at) = (0u64, None);
    loop {
        tick.tick().await;
        let t = started.elapsed().as_secs_f64();
        if t >= o.static_secs + o.after_secs {
            break;
        }
        if t >= o.static_secs && change_at.is_none() {
            change_at = Some(Instant::now());
            marks.push(mark(classifiers));
        }
        let image = frames.at(t, o.static_secs, seq);
        seq += 1;
        let _ = frame_tx.send(Some(Arc::new(Frame {
            seq,
            captured_at: SystemTime::now(),
            captured: Instant::now(),
            image,
            name: None,
        })));
    }
    marks.push(mark(classifiers));
    drop(frame_tx);
    let _ = task.await;
    (marks, change_at)
}

/// Replay the scene of `o` through the real pipeline and measure it.
pub fn run(e: Arc<TractEmbedder>, o: &Options) -> Result<Report, String> {
    let scene = Scene::new(&o.background);
    let before = scene.compose(&o.before);
    let after = scene.compose(&o.after);
    let frames = Frames::new(o, &before, &after);
    let classifiers = classifiers(&e, o, &scene, &before, &after)?;
    let backbone_ms = median_backbone_ms(&e, &region::crop(&before, scene.rect()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let recorder = Recorder::default();
    let inference = Inference {
        frames: watch::channel(None).1,
        embedder: e.clone() as Arc<dyn Embedder>,
        classifiers: watch::channel(Arc::new(classifiers.clone())).1,
        sink: recorder.clone(),
        stats: Arc::new(Stats::default()),
        demand: Arc::new(Demand::default()),
        recent_side: 320,
    };
    let (phases, change_at) = runtime.block_on(replay(inference, &classifiers, &frames, o));
    let [s0, s1, s2] = &phases[..] else {
        return Err(
            "the run ended before the change (is --static-secs shorter than the run?)".into(),
        );
    };
    let (static_secs, after_secs) = (o.static_secs, o.after_secs);
    let per_min = |n: f64, secs: f64| n / secs.max(1e-9) * 60.0;
    let records = recorder.0.lock().map(|v| v.clone()).unwrap_or_default();
    let results = classifiers
        .iter()
        .enumerate()
        .map(|(i, c)| ClassifierResult {
            name: c.spec.name.clone(),
            runs_per_min_static: per_min((s1.1[i].0 - s0.1[i].0) as f64, static_secs),
            runs_per_min_changing: per_min((s2.1[i].0 - s1.1[i].0) as f64, after_secs),
            skipped_static: s1.1[i].1 - s0.1[i].1,
            runs: c.gate.json()["runs"].clone(),
            change_to_label_ms: (i == 0)
                .then(|| {
                    let at = change_at?;
                    records
                        .iter()
                        .find(|(t, k, l)| k == "door" && *t >= at && l.as_deref() == Some("after"))
                        .map(|(t, _, _)| t.duration_since(at).as_secs_f64() * 1000.0)
                })
                .flatten(),
        })
        .collect();
    Ok(Report {
        backbone: e.id().to_string(),
        fps: o.fps,
        static_secs,
        after_secs,
        noise: o.noise,
        light_drop: o.light_drop,
        max_age_secs: o.max_age_secs,
        smoothing_window: o.smoothing_window,
        every_frame: o.every_frame,
        backbone_ms,
        cpu_s_per_min_static: per_min(s1.0 - s0.0, static_secs),
        cpu_s_per_min_changing: per_min(s2.0 - s1.0, after_secs),
        classifiers: results,
    })
}

/// Percentiles of a sample: (p1, p5, p50, p95, p99, max).
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub n: usize,
    pub min: f32,
    pub p1: f32,
    pub p5: f32,
    pub p50: f32,
    pub p95: f32,
    pub p99: f32,
    pub max: f32,
}

fn spread(mut v: Vec<f32>) -> Spread {
    v.sort_by(f32::total_cmp);
    let at = |q: f64| {
        v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Spread {
        n: v.len(),
        min: at(0.0),
        p1: at(0.01),
        p5: at(0.05),
        p50: at(0.5),
        p95: at(0.95),
        p99: at(0.99),
        max: at(1.0),
    }
}

/// The change measure ([`crate::classifier::gate::change`]) on real photos, to
/// choose `trigger.change_threshold`.
#[derive(Debug, Clone, Serialize)]
pub struct GateCalibration {
    /// The same photo in the region, against itself under fresh noise and a light
    /// drift of up to ±5% (two runs a minute apart): what must stay below the threshold.
    pub unchanged: Spread,
    /// The same photo with the light 30% lower or higher (a cloud, a lamp): above
    /// the threshold when the mean moves by 32 levels or more.
    pub light_jump: Spread,
    /// Another photo of the same class in the region (a bee for a bee).
    pub same_class: Spread,
    /// A photo of another class in the region: a change of state.
    pub other_class: Spread,
    /// Share of `unchanged` at or above the threshold, of `other_class` below it,
    /// and of `light_jump` at or above it.
    pub threshold: f32,
    pub false_runs: f64,
    pub missed_changes: f64,
    pub light_jumps_run: f64,
}

/// Measure [`gate::change`](crate::classifier::gate::change) on `objects` (photo,
/// class) put into the region of `background`'s scene, with camera noise `noise`.
pub fn calibrate_gate(
    background: &RgbImage,
    objects: &[(RgbImage, String)],
    noise: u8,
    threshold: f32,
) -> GateCalibration {
    use crate::classifier::gate::{change, thumb};
    let scene = Scene::new(background);
    let rect = scene.rect();
    let mut rng = fastrand::Rng::with_seed(3);
    let frames: Vec<RgbImage> = objects.iter().map(|(o, _)| scene.compose(o)).collect();
    let grids: Vec<_> = frames
        .iter()
        .map(|f| thumb(&camera(f, 1.0, noise, &mut rng), rect))
        .collect();
    let (mut unchanged, mut jumps, mut same, mut other) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, f) in frames.iter().enumerate() {
        let measure = |gain: f32, rng: &mut fastrand::Rng| {
            change(&thumb(&camera(f, gain, noise, rng), rect), &grids[i])
        };
        for gain in [0.95, 0.975, 1.0, 1.025, 1.05] {
            unchanged.push(measure(gain, &mut rng));
        }
        for gain in [0.7, 1.3] {
            jumps.push(measure(gain, &mut rng));
        }
        // The next photo of the same class and of another class.
        for j in (1..objects.len()).map(|d| (i + d) % objects.len()) {
            if objects[j].1 == objects[i].1 && same.len() < (i + 1) {
                same.push(change(&grids[j], &grids[i]));
            }
            if objects[j].1 != objects[i].1 && other.len() < (i + 1) {
                other.push(change(&grids[j], &grids[i]));
            }
        }
    }
    let share = |v: &[f32], f: &dyn Fn(f32) -> bool| {
        v.iter().filter(|x| f(**x)).count() as f64 / v.len().max(1) as f64
    };
    GateCalibration {
        threshold,
        false_runs: share(&unchanged, &|x| x >= threshold),
        missed_changes: share(&other, &|x| x < threshold),
        light_jumps_run: share(&jumps, &|x| x >= threshold),
        unchanged: spread(unchanged),
        light_jump: spread(jumps),
        same_class: spread(same),
        other_class: spread(other),
    }
}
