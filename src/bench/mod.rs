//! `edgehead bench`: what the backbone and the pipeline cost on this machine.
//!
//! Prints, per thread count: model load + optimize time; preprocessing and backbone
//! latency (median, p90, min over N runs); end-to-end frames per second through the
//! real pipeline (synthetic capture thread → preprocess → backbone → head →
//! prediction JSON), with frames dropped and mean latency; head training time on
//! 1,000 samples of 10 classes; peak RSS and thread count.
//!
//! - [`scene`]: `bench-scene` (the change gate on a replayed scene) and
//!   `bench-gate`; [`source`]: `bench-source`; [`teach`]: `bench --teach`.

pub mod scene;
pub mod source;
pub mod teach;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::classifier::Classifier;
use crate::config::{ClassifierSpec, TriggerConfig};
use crate::region::RegionConfig;
use serde::Serialize;
use tokio::sync::watch;

use crate::backbone::{Embedder, TractEmbedder};
use crate::backoff::Backoff;
use crate::config::{BackboneConfig, HeadKind, SyntheticConfig, UnknownThreshold};
use crate::head::{self, Head, Sample, TrainParams};
use crate::mqtt::payload::Prediction;
use crate::pipeline::{Inference, PredictionSink};
use crate::source::{self as capture, synthetic, SourceState};
use crate::stats::{self, Stats};

pub struct Options {
    pub backbone: BackboneConfig,
    pub threads: Vec<crate::config::Threads>,
    /// Precisions to time (each with every thread count).
    pub precisions: Vec<crate::config::Precision>,
    pub runs: usize,
    pub seconds: f64,
    pub width: u32,
    pub height: u32,
    /// Capture rate of the synthetic source in the end-to-end run (a camera's rate).
    pub fps: f64,
    /// Also print the time per operator kind of the optimized plan.
    pub profile: bool,
    /// Also time one run on this many crops batched, against as many runs of one
    /// (several classifiers due on the same frame); 0 or 1: not measured.
    pub batch: usize,
}

/// One batched backbone run against as many single runs, per crop.
#[derive(Debug, Clone, Serialize)]
pub struct BatchResult {
    pub batch: usize,
    pub threads: usize,
    /// Median of the batched run divided by the batch, ms.
    pub batched_ms_per_crop: f64,
    /// Median of a single run, ms.
    pub single_ms_per_crop: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub median_ms: f64,
    pub p90_ms: f64,
    pub min_ms: f64,
}

fn latency(mut ms: Vec<f64>) -> Latency {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Latency {
        median_ms: at(0.5),
        p90_ms: at(0.9),
        min_ms: ms[0],
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ThreadResult {
    pub threads: usize,
    /// `f32` or `f16`, as resolved on this CPU.
    pub precision: crate::config::Precision,
    pub load_ms: f64,
    pub preprocess: Latency,
    pub backbone: Latency,
    pub e2e_fps: f64,
    pub e2e_frames: u64,
    pub e2e_dropped: u64,
    pub e2e_mean_latency_ms: f64,
    /// Threads in the process during the end-to-end run.
    pub process_threads: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub backbone: String,
    pub input: String,
    pub results: Vec<ThreadResult>,
    pub batches: Vec<BatchResult>,
    pub train_ncm_ms: f64,
    pub train_softmax_ms: f64,
    /// The combined head with `l2_auto`: 12 cross-validation fits and the final one.
    pub train_combined_l2_auto_ms: f64,
    pub softmax_iterations_note: String,
    pub peak_rss_mib: f64,
}

/// Counts predictions and encodes them as the MQTT task would.
struct CountingSink {
    bytes: usize,
}

impl PredictionSink for CountingSink {
    fn publish(&mut self, _classifier: &Classifier, p: &Prediction) -> bool {
        self.bytes += serde_json::to_vec(p).map(|v| v.len()).unwrap_or(0);
        true
    }
}

/// A 10-class head on the backbone's own features of synthetic frames, so the
/// end-to-end run pays for a real head.
fn demo_head(e: &TractEmbedder) -> Option<Head> {
    let feats: Vec<Vec<f32>> = (0..10)
        .filter_map(|i| e.embed(&synthetic::pattern(320, 240, i * 37)).ok())
        .map(|x| x.features)
        .collect();
    let classes: Vec<String> = (0..feats.len()).map(|i| format!("class{i}")).collect();
    let samples: Vec<Sample> = feats
        .iter()
        .enumerate()
        .map(|(i, f)| Sample {
            features: f,
            class: i,
        })
        .collect();
    let params = TrainParams {
        kind: HeadKind::Ncm,
        auto_min_samples: 5,
        l2: 1e-3,
        l2_auto: false,
        max_iterations: 100,
        unknown: UnknownThreshold::Off,
    };
    head::train(&samples, &classes, e.id(), 1, &params).ok()
}

/// (frames/s, frames, dropped, mean latency ms, threads in the process meanwhile)
fn end_to_end(e: Arc<TractEmbedder>, o: &Options) -> (f64, u64, u64, f64, u64) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(_) => return (0.0, 0, 0, 0.0, 0),
    };
    let stats = Arc::new(Stats::default());
    // Every frame through the backbone: this measures its throughput, not the gate.
    let spec = ClassifierSpec::new(
        "bench",
        RegionConfig::WHOLE,
        TriggerConfig {
            every_frame: true,
            ..TriggerConfig::default()
        },
    );
    let topics = Arc::new(crate::mqtt::ClassifierTopics::new(
        "edgehead/bench",
        "bench",
    ));
    let classifier = Classifier::new(Arc::new(spec), topics);
    classifier.head.store(demo_head(&e).map(Arc::new));
    let synth = SyntheticConfig {
        width: o.width,
        height: o.height,
        fps: o.fps,
    };
    let opener: capture::Opener =
        Box::new(move || Ok(Box::new(synthetic::Synthetic::new(&synth)) as _));
    let secs = o.seconds;
    let st = stats.clone();
    let elapsed = runtime.block_on(async move {
        let (frame_tx, frame_rx) = watch::channel(None);
        let demand = Arc::new(capture::Demand::default());
        let (state_tx, _state_rx) = watch::channel(SourceState::Starting);
        let inference = Inference {
            frames: frame_rx,
            embedder: e,
            classifiers: watch::channel(Arc::new(vec![classifier])).1,
            sink: CountingSink { bytes: 0 },
            stats: st.clone(),
            demand: demand.clone(),
            recent_side: 320,
        };
        let task = tokio::spawn(inference.run());
        let started = Instant::now();
        let capture = match capture::spawn(
            opener,
            Backoff::from_millis(100, 100),
            frame_tx,
            state_tx,
            st.clone(),
            demand,
        ) {
            Ok(c) => c,
            Err(_) => return (0.0, 0),
        };
        tokio::time::sleep(Duration::from_secs_f64(secs / 2.0)).await;
        let threads = stats::thread_count().unwrap_or(0);
        tokio::time::sleep(Duration::from_secs_f64(secs / 2.0)).await;
        capture.stop.stop();
        let _ = capture.done.await;
        let _ = task.await;
        (started.elapsed().as_secs_f64(), threads)
    });
    let (elapsed, threads) = elapsed;
    let s = stats.snapshot();
    (
        s.frames_inferred as f64 / elapsed.max(1e-9),
        s.frames_inferred,
        s.frames_dropped,
        s.mean_latency_ms(),
        threads,
    )
}

fn training_times() -> (f64, f64, f64) {
    // 1,000 samples of 10 classes, 1,280 features: clustered vectors of the shape
    // the backbone produces (non-negative, post-ReLU6 means).
    let mut rng = fastrand::Rng::with_seed(7);
    let dim = 1280;
    let centers: Vec<Vec<f32>> = (0..10)
        .map(|_| (0..dim).map(|_| rng.f32() * 2.0).collect())
        .collect();
    let data: Vec<(Vec<f32>, usize)> = (0..1000)
        .map(|i| {
            let c = i % 10;
            (
                centers[c]
                    .iter()
                    .map(|v| (v + rng.f32() * 1.5).max(0.0))
                    .collect(),
                c,
            )
        })
        .collect();
    let samples = head::samples(&data);
    let classes: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    let id = crate::backbone::BackboneId::new("bench".into(), "0".repeat(64), "");
    let time = |kind, l2_auto| {
        let params = TrainParams {
            kind,
            auto_min_samples: 5,
            l2: 1e-3,
            l2_auto,
            max_iterations: 300,
            unknown: UnknownThreshold::Auto,
        };
        let t = Instant::now();
        let _ = head::train(&samples, &classes, &id, 1, &params);
        t.elapsed().as_secs_f64() * 1000.0
    };
    (
        time(HeadKind::Ncm, false),
        time(HeadKind::Softmax, false),
        time(HeadKind::Combined, true),
    )
}

pub fn run(o: &Options) -> Result<Report, crate::backbone::EmbedError> {
    let frame = synthetic::pattern(o.width, o.height, 1);
    let mut results = Vec::new();
    let mut batches = Vec::new();
    // One per precision timed: f16 features are another feature space.
    let mut idents: Vec<String> = Vec::new();
    let runs: Vec<(crate::config::Precision, crate::config::Threads)> = o
        .precisions
        .iter()
        .flat_map(|p| o.threads.iter().map(move |t| (*p, *t)))
        .collect();
    for (precision, threads) in runs {
        let cfg = BackboneConfig {
            threads,
            precision,
            ..o.backbone.clone()
        };
        let e = Arc::new(TractEmbedder::load(&cfg)?);
        let id = e.id().to_string();
        if !idents.contains(&id) {
            idents.push(id);
        }
        let mut pre = Vec::with_capacity(o.runs);
        let mut inf = Vec::with_capacity(o.runs);
        // Warm-up: first runs allocate and fault pages in.
        for _ in 0..3 {
            e.embed(&frame)?;
        }
        for _ in 0..o.runs {
            let x = e.embed(&frame)?;
            pre.push(x.preprocess.as_secs_f64() * 1000.0);
            inf.push(x.inference.as_secs_f64() * 1000.0);
        }
        if o.profile {
            let input = e.preprocess().run(&frame);
            for (op, nodes, ms) in e.profile(&input, o.runs.min(20))? {
                println!("  profile: {ms:8.3} ms  {nodes:4} nodes  {op}");
            }
        }
        let (fps, frames, dropped, lat, process_threads) = end_to_end(e.clone(), o);
        let threads = e.threads;
        let r = ThreadResult {
            threads,
            precision: e.precision,
            load_ms: e.load_time.as_secs_f64() * 1000.0,
            preprocess: latency(pre),
            backbone: latency(inf),
            e2e_fps: fps,
            e2e_frames: frames,
            e2e_dropped: dropped,
            e2e_mean_latency_ms: lat,
            process_threads,
        };
        println!(
            "{:?} threads {}: load+optimize {:.0} ms | preprocess {}x{}→{}x{} median {:.2} ms | backbone median {:.2} ms, p90 {:.2} ms, min {:.2} ms ({} runs) | end to end at {:.0} fps capture: {:.1} frames/s inferred over {:.0} s ({} frames, {} dropped, mean latency {:.1} ms, {} threads)",
            r.precision, r.threads, r.load_ms, o.width, o.height, cfg.input_width, cfg.input_height,
            r.preprocess.median_ms, r.backbone.median_ms, r.backbone.p90_ms, r.backbone.min_ms, o.runs,
            o.fps, r.e2e_fps, o.seconds, r.e2e_frames, r.e2e_dropped, r.e2e_mean_latency_ms, r.process_threads
        );
        if o.batch > 1 {
            let b = time_batch(&cfg, &e, o.batch, o.runs)?;
            println!(
                "threads {}: {} crops in one batched run {:.2} ms per crop; one by one {:.2} ms per crop",
                threads, b.batch, b.batched_ms_per_crop, b.single_ms_per_crop
            );
            batches.push(b);
        }
        results.push(r);
    }
    let (ncm, softmax, combined) = training_times();
    println!("head training, 1000 samples x 1280 features x 10 classes: ncm {ncm:.1} ms, softmax {softmax:.1} ms, combined with the L2 penalty chosen by 3-fold cross-validation {combined:.1} ms");
    let rss = stats::peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
    println!("peak RSS {rss:.1} MiB");
    Ok(Report {
        model: o.backbone.model.display().to_string(),
        backbone: idents.join(", "),
        input: format!("{}x{} synthetic frames", o.width, o.height),
        results,
        batches,
        train_ncm_ms: ncm,
        train_softmax_ms: softmax,
        train_combined_l2_auto_ms: combined,
        softmax_iterations_note: "L-BFGS, at most 300 iterations".into(),
        peak_rss_mib: rss,
    })
}

/// Median time of a batched run of `batch` crops against a single run of `single`.
fn time_batch(
    cfg: &BackboneConfig,
    single: &TractEmbedder,
    batch: usize,
    runs: usize,
) -> Result<BatchResult, crate::backbone::EmbedError> {
    let batched = TractEmbedder::load_batch(cfg, batch)?;
    let one = single.preprocess().run(&synthetic::pattern(320, 240, 3));
    let many: Vec<f32> = (0..batch).flat_map(|_| one.iter().copied()).collect();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut b = Vec::new();
    let mut s = Vec::new();
    for i in 0..runs.max(1) + 2 {
        let t = Instant::now();
        batched.embed_tensor(many.clone())?;
        let tb = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        single.embed_tensor(one.clone())?;
        let ts = t.elapsed().as_secs_f64() * 1000.0;
        // The first runs warm up.
        if i >= 2 {
            b.push(tb / batch as f64);
            s.push(ts);
        }
    }
    Ok(BatchResult {
        batch,
        threads: single.threads,
        batched_ms_per_crop: median(b),
        single_ms_per_crop: median(s),
    })
}
