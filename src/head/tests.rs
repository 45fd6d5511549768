//! Tests of training and prediction, and helpers the other modules' tests use.

use super::*;

/// Points around `k` well-separated directions, with some noise.
pub fn clusters(
    k: usize,
    per: usize,
    dim: usize,
    noise: f32,
    seed: u64,
) -> (Vec<Vec<f32>>, Vec<usize>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let centers: Vec<Vec<f32>> = (0..k)
        .map(|_| (0..dim).map(|_| rng.f32() * 2.0 - 1.0).collect())
        .collect();
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for (c, center) in centers.iter().enumerate() {
        for _ in 0..per {
            xs.push(
                center
                    .iter()
                    .map(|v| v + (rng.f32() - 0.5) * noise + 3.0)
                    .collect(),
            );
            ys.push(c);
        }
    }
    (xs, ys)
}

pub fn backbone() -> BackboneId {
    BackboneId::new("test".into(), "0".repeat(64), "")
}

/// A two-class head on 2-d features, for store tests.
pub fn tiny_head(b: &BackboneId) -> Head {
    let data = vec![(vec![1.0, 0.0], 0), (vec![0.0, 1.0], 1)];
    train(
        &samples(&data),
        &["a".to_string(), "b".to_string()],
        b,
        1,
        &params(HeadKind::Ncm),
    )
    .expect("train")
}

fn params(kind: HeadKind) -> TrainParams {
    TrainParams {
        kind,
        auto_min_samples: 5,
        l2: 1e-3,
        l2_auto: false,
        max_iterations: 200,
        unknown: UnknownThreshold::Auto,
    }
}

/// `(v - center) / |v - center|`; the zero vector stays zero.
pub fn normalize_centered(v: &[f32], center: &[f32]) -> Vec<f32> {
    let mut z: Vec<f32> = v.iter().zip(center).map(|(a, c)| a - c).collect();
    l2_normalize(&mut z);
    z
}

/// `xs[i]` labelled `ys[i]`.
pub fn labelled<'a>(xs: &'a [Vec<f32>], ys: &[usize]) -> Vec<Sample<'a>> {
    xs.iter().zip(ys).map(|(x, y)| sample(x, *y)).collect()
}

pub fn sample(features: &[f32], class: usize) -> Sample<'_> {
    Sample { features, class }
}

fn names(k: usize) -> Vec<String> {
    (0..k).map(|i| format!("c{i}")).collect()
}

#[test]
fn both_heads_separate_clear_clusters() {
    let (xs, ys) = clusters(4, 8, 32, 0.5, 1);
    let samples: Vec<Sample> = labelled(&xs, &ys);
    for kind in [HeadKind::Ncm, HeadKind::Softmax, HeadKind::Combined] {
        let head = train(&samples, &names(4), &backbone(), 1, &params(kind)).expect("train");
        assert_eq!(head.quality.train_accuracy, 1.0, "{kind:?}");
        assert_eq!(head.quality.loo_accuracy, Some(1.0));
        let s = head.predict(&xs[9]);
        assert_eq!(s.ranked[0].0, 1);
        let total: f32 = s.ranked.iter().map(|r| r.1).sum();
        assert!((total - 1.0).abs() < 1e-4);
        assert!(!s.unknown);
    }
}

#[test]
fn auto_picks_ncm_until_every_class_has_enough_samples() {
    let (xs, ys) = clusters(2, 5, 16, 0.5, 2);
    let all: Vec<Sample> = labelled(&xs, &ys);
    let head = train(&all, &names(2), &backbone(), 1, &params(HeadKind::Auto)).expect("train");
    assert_eq!(head.kind, ModelKind::Combined);
    let few: Vec<Sample> = all[..7].to_vec(); // class 1 has 2 samples
    let head = train(&few, &names(2), &backbone(), 2, &params(HeadKind::Auto)).expect("train");
    assert_eq!(head.kind, ModelKind::Ncm);
    assert_eq!(head.id(), "ncm-v2");
}

#[test]
fn one_sample_per_class_is_enough_for_ncm() {
    let a = vec![1.0, 0.0, 0.0, 0.0];
    let b = vec![0.0, 1.0, 0.0, 0.0];
    let samples = [sample(&a, 0), sample(&b, 1)];
    let head = train(&samples, &names(2), &backbone(), 1, &params(HeadKind::Auto)).expect("train");
    assert_eq!(head.kind, ModelKind::Ncm);
    assert_eq!(head.predict(&[0.9, 0.1, 0.0, 0.0]).ranked[0].0, 0);
    assert_eq!(head.quality.loo_accuracy, None);
    assert!(head.unknown_below.is_none(), "nothing to calibrate on");
}

#[test]
fn one_class_is_not_certain_of_everything() {
    // One class, one sample: before, the label was that class at 100 % for any
    // frame at all.
    let a = vec![1.0, 0.0, 0.0, 0.0];
    let head = train(
        &[sample(&a, 0)],
        &names(1),
        &backbone(),
        1,
        &params(HeadKind::Auto),
    )
    .expect("train");
    assert_eq!(head.unknown_below, Some(super::ncm::UNCALIBRATED_ONE_CLASS));
    let elsewhere = head.predict(&[0.0, 1.0, 0.0, 0.0]);
    assert!(elsewhere.unknown, "{elsewhere:?}");
    assert!(elsewhere.ranked[0].1 < 0.5, "{elsewhere:?}");
    // Nearly the sample: recognized, with the similarity as the confidence.
    let near = head.predict(&[1.0, 0.05, 0.0, 0.0]);
    assert!(!near.unknown, "{near:?}");
    assert!(
        (near.ranked[0].1 - near.similarity).abs() < 1e-6,
        "{near:?}"
    );
    assert!(near.ranked[0].1 < 1.0);
    // Two classes keep their probabilities.
    let b = vec![0.0, 1.0, 0.0, 0.0];
    let two = train(
        &[sample(&a, 0), sample(&b, 1)],
        &names(2),
        &backbone(),
        1,
        &params(HeadKind::Auto),
    )
    .expect("train");
    assert!(two.unknown_below.is_none());
    let p = two.predict(&[1.0, 0.0, 0.0, 0.0]);
    assert!(p.ranked[0].1 > 0.99, "{p:?}");
}

#[test]
fn classes_without_samples_are_dropped() {
    let a = vec![1.0, 0.0];
    let b = vec![0.0, 1.0];
    let samples = [sample(&a, 0), sample(&b, 2)];
    let head = train(&samples, &names(3), &backbone(), 1, &params(HeadKind::Ncm)).expect("train");
    assert_eq!(head.classes, vec!["c0", "c2"]);
}

#[test]
fn bad_training_input_is_an_error() {
    let a = vec![1.0, 0.0];
    let b = vec![0.0];
    let nan = vec![f32::NAN, 0.0];
    let p = params(HeadKind::Ncm);
    assert_eq!(
        train(&[], &names(1), &backbone(), 1, &p),
        Err(TrainError::NoSamples)
    );
    let s = [sample(&a, 0), sample(&b, 0)];
    assert!(matches!(
        train(&s, &names(1), &backbone(), 1, &p),
        Err(TrainError::Dimension { .. })
    ));
    let s = [sample(&a, 5)];
    assert!(matches!(
        train(&s, &names(1), &backbone(), 1, &p),
        Err(TrainError::BadClass { .. })
    ));
    let s = [sample(&nan, 0)];
    assert_eq!(
        train(&s, &names(1), &backbone(), 1, &p),
        Err(TrainError::NotFinite(0))
    );
}

#[test]
fn far_away_frames_are_unknown_with_a_calibrated_threshold() {
    let (xs, ys) = clusters(3, 10, 32, 0.3, 3);
    let samples: Vec<Sample> = labelled(&xs, &ys);
    let head = train(&samples, &names(3), &backbone(), 1, &params(HeadKind::Ncm)).expect("train");
    let t = head.unknown_below.expect("calibrated");
    assert!(t > 0.0 && t < 1.0, "{t}");
    // A vector unrelated to any class.
    let mut rng = fastrand::Rng::with_seed(99);
    let odd: Vec<f32> = (0..32).map(|_| rng.f32() * 20.0 - 10.0).collect();
    assert!(head.predict(&odd).unknown);
    assert!(!head.predict(&xs[0]).unknown);
}

#[test]
fn copies_of_one_frame_do_not_make_every_new_frame_unknown() {
    // Three copies of one crop per class (a static scene taught with "Add"): the
    // threshold keeps room for the next frame's noise.
    let a: Vec<f32> = (0..32).map(|i| (i as f32 * 0.37).sin()).collect();
    let b: Vec<f32> = (0..32).map(|i| (i as f32 * 0.91).cos()).collect();
    let samples = [
        sample(&a, 0),
        sample(&a, 0),
        sample(&a, 0),
        sample(&b, 1),
        sample(&b, 1),
    ];
    let head = train(&samples, &names(2), &backbone(), 1, &params(HeadKind::Ncm)).expect("train");
    let t = head.unknown_below.expect("calibrated");
    assert!(t <= 1.0 - 3.0 * super::ncm::MIN_SPREAD + 1e-6, "{t}");
    let noisy: Vec<f32> = a
        .iter()
        .enumerate()
        .map(|(i, x)| x + 0.01 * ((i % 3) as f32 - 1.0))
        .collect();
    let p = head.predict(&noisy);
    assert!(
        !p.unknown,
        "similarity {} against threshold {t}",
        p.similarity
    );
    assert_eq!(p.ranked[0].0, 0);
}

#[test]
fn wrong_dimension_at_predict_is_unknown_not_a_panic() {
    let a = vec![1.0, 0.0];
    let s = [sample(&a, 0)];
    let head = train(&s, &names(1), &backbone(), 1, &params(HeadKind::Ncm)).expect("train");
    let p = head.predict(&[1.0, 2.0, 3.0]);
    assert!(p.unknown && p.ranked.is_empty());
}

#[test]
fn the_combined_head_multiplies_the_two_models_probabilities() {
    let (xs, ys) = clusters(3, 6, 16, 2.5, 11);
    let samples: Vec<Sample> = labelled(&xs, &ys);
    let combined = train(
        &samples,
        &names(3),
        &backbone(),
        1,
        &params(HeadKind::Combined),
    )
    .expect("train");
    let mut softmax = combined.clone();
    softmax.kind = ModelKind::Softmax;
    let mut ncm = combined.clone();
    ncm.kind = ModelKind::Ncm;
    assert_eq!(ncm.temperature, PRIOR_TEMPERATURE);
    let (mut rng, probe) = (fastrand::Rng::with_seed(3), &xs[4]);
    let x: Vec<f32> = probe.iter().map(|v| v + rng.f32() * 2.0).collect();
    let p = |h: &Head| {
        let mut v = vec![0f32; 3];
        for (i, q) in h.predict(&x).ranked {
            v[i] = q;
        }
        v
    };
    let (pc, ps, pn) = (p(&combined), p(&softmax), p(&ncm));
    let prod: Vec<f32> = ps.iter().zip(&pn).map(|(a, b)| a * b).collect();
    let sum: f32 = prod.iter().sum();
    for k in 0..3 {
        assert!((pc[k] - prod[k] / sum).abs() < 1e-4, "{pc:?} {ps:?} {pn:?}");
    }
    assert_eq!(combined.id(), "combined-v1");
    assert_eq!(combined.l2, Some(1e-3));
}

#[test]
fn log_softmax_is_the_log_of_softmax() {
    let l = [1.0, -2.0, 300.0];
    for (a, b) in log_softmax(&l).iter().zip(softmax_of(&l)) {
        assert!((a.exp() - b).abs() < 1e-6);
    }
}

#[test]
fn dot_matches_the_naive_sum() {
    let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
    let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.1).collect();
    let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    assert!((dot(&a, &b) - naive).abs() < 1e-4);
}
