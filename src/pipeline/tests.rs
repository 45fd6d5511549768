//! The inference task on a stand-in backbone: held-back changes and retrained
//! heads are published while the gate skips.

use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;

use super::smoother::tests::cfg;
use super::*;
use crate::backbone::fake::MeanColour;
use crate::config::PublishMode;
use crate::mqtt::payload::Prediction;

#[derive(Clone, Default)]
struct Kept(std::sync::Arc<std::sync::Mutex<Vec<Prediction>>>);

impl PredictionSink for Kept {
    fn publish(&mut self, _: &Classifier, p: &Prediction) -> bool {
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
    use crate::config::{ClassifierSpec, TriggerConfig};
    use crate::region::RegionConfig;
    let e = Arc::new(MeanColour::new());
    let mut spec = ClassifierSpec::new("door", RegionConfig::WHOLE, TriggerConfig::default());
    spec.predictions = cfg(3, PublishMode::OnChange, 400);
    let topics = Arc::new(crate::mqtt::ClassifierTopics::new("edgehead/unit", "door"));
    let c = Classifier::new(Arc::new(spec), topics);
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
            classifiers: tokio::sync::watch::channel(Arc::new(vec![c.clone()])).1,
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
