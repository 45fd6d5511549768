//! Nearest class mean on L2-normalized features (cosine similarity): instant to
//! train, usable from one sample per class, and cheap to cross-validate exactly
//! (leave-one-out).

use std::time::Duration;

use super::{dot, l2_normalize, ClassQuality, Confusion, Quality};

/// Cosine similarities are multiplied by this before the softmax that turns them
/// into probabilities: a difference of 0.1 in similarity is a factor e³ in odds
/// (about the lowest test log-loss on hymenoptera and clothing10 from 5
/// samples per class up).
pub const TEMPERATURE: f32 = 30.0;

/// Samples a class should have before the advice stops asking for more.
pub const ENOUGH_SAMPLES: usize = 5;

pub struct Model {
    /// Unnormalized sums of each class's vectors (for leave-one-out).
    pub sums: Vec<Vec<f32>>,
    pub counts: Vec<usize>,
    /// Normalized class means.
    pub means: Vec<Vec<f32>>,
}

/// Class means of `z` (already L2-normalized).
pub fn fit(z: &[Vec<f32>], labels: &[usize], classes: usize) -> Model {
    let dim = z.first().map(|v| v.len()).unwrap_or(0);
    let mut sums = vec![vec![0f32; dim]; classes];
    let mut counts = vec![0usize; classes];
    for (v, &l) in z.iter().zip(labels) {
        for (s, x) in sums[l].iter_mut().zip(v) {
            *s += x;
        }
        counts[l] += 1;
    }
    let means = sums
        .iter()
        .map(|s| {
            let mut m = s.clone();
            l2_normalize(&mut m);
            m
        })
        .collect();
    Model {
        sums,
        counts,
        means,
    }
}

/// What leave-one-out found: each sample classified by the means of the others.
pub struct LeaveOneOut {
    /// (actual, predicted) for every sample whose class has at least two samples.
    pub outcomes: Vec<(usize, usize)>,
    /// Similarity of each such sample to its own class's leave-one-out mean.
    pub own_similarity: Vec<f32>,
    pub counts: Vec<usize>,
}

pub fn leave_one_out(z: &[Vec<f32>], labels: &[usize], model: &Model) -> LeaveOneOut {
    let mut outcomes = Vec::new();
    let mut own_similarity = Vec::new();
    for (v, &l) in z.iter().zip(labels) {
        if model.counts[l] < 2 {
            continue;
        }
        let mut own: Vec<f32> = model.sums[l].iter().zip(v).map(|(s, x)| s - x).collect();
        l2_normalize(&mut own);
        let own_sim = dot(v, &own);
        let mut best = (l, own_sim);
        for (k, m) in model.means.iter().enumerate() {
            if k != l {
                let s = dot(v, m);
                if s > best.1 {
                    best = (k, s);
                }
            }
        }
        outcomes.push((l, best.0));
        own_similarity.push(own_sim);
    }
    LeaveOneOut {
        outcomes,
        own_similarity,
        counts: model.counts.clone(),
    }
}

/// The least spread of own-class similarities the unknown threshold assumes.
/// Sensor noise alone moves a photo's features to a cosine similarity of
/// 0.990–0.996 with the original, noise and 8% less light to 0.977–0.986
/// (`edgehead embed` on the three fixture photos and copies made with ffmpeg's
/// `noise=alls=6` and `eq=brightness=-0.08`; docs/heads.md). Samples that are
/// copies of one frame thus put the threshold at 0.94, not at 1, where every
/// next frame would be `unknown`.
pub const MIN_SPREAD: f32 = 0.02;

/// The unknown threshold of a head with one class whose samples give nothing to
/// calibrate on (a single sample): the calibrated threshold of samples that are
/// copies of one frame, 1 − 3 × [`MIN_SPREAD`]. Without it, one class answered
/// itself at 100 % for anything the camera saw.
pub const UNCALIBRATED_ONE_CLASS: f32 = 1.0 - 3.0 * MIN_SPREAD;

impl LeaveOneOut {
    /// A similarity below which frames are unlikely to belong to any class: the
    /// lower of the 5th percentile and mean − 3σ of the samples' similarities to
    /// their own class, σ at least [`MIN_SPREAD`] (samples taken from a scene that
    /// did not move are near-identical: their spread says nothing about the next
    /// frame's noise). `None` until some class has two samples.
    pub fn calibrated_threshold(&self) -> Option<f32> {
        let s = &self.own_similarity;
        if s.len() < 2 {
            return None;
        }
        let n = s.len() as f32;
        let mean = s.iter().sum::<f32>() / n;
        let sd = (s.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / n).sqrt();
        let mut sorted = s.clone();
        sorted.sort_by(f32::total_cmp);
        let p05 = sorted[((n - 1.0) * 0.05).floor() as usize];
        Some(p05.min(mean - 3.0 * sd.max(MIN_SPREAD)))
    }

    pub fn quality(&self, classes: &[String], train_accuracy: f32, took: Duration) -> Quality {
        let k = classes.len();
        let mut confusion = vec![vec![0usize; k]; k];
        for &(a, p) in &self.outcomes {
            confusion[a][p] += 1;
        }
        let per_class: Vec<ClassQuality> = classes
            .iter()
            .enumerate()
            .map(|(i, label)| {
                let tested: usize = confusion[i].iter().sum();
                ClassQuality {
                    label: label.clone(),
                    samples: self.counts[i],
                    loo_accuracy: (tested > 0).then(|| confusion[i][i] as f32 / tested as f32),
                }
            })
            .collect();
        let correct = self.outcomes.iter().filter(|(a, p)| a == p).count();
        let loo_accuracy =
            (!self.outcomes.is_empty()).then(|| correct as f32 / self.outcomes.len() as f32);
        let most_confused = (0..k)
            .flat_map(|a| (0..k).map(move |p| (a, p)))
            .filter(|(a, p)| a != p)
            .map(|(a, p)| (confusion[a][p], a, p))
            .filter(|(n, _, _)| *n > 0)
            .max()
            .map(|(count, a, p)| Confusion {
                actual: classes[a].clone(),
                predicted: classes[p].clone(),
                count,
            });
        let mut advice = Vec::new();
        if k == 1 {
            advice.push(format!(
                "only one class ({}): add samples of a second class, or of the background, so there is something to tell apart",
                classes[0]
            ));
        }
        for c in &per_class {
            if c.samples < ENOUGH_SAMPLES {
                advice.push(format!(
                    "{}: {} sample{}; {} or more from different angles and light make it reliable",
                    c.label,
                    c.samples,
                    if c.samples == 1 { "" } else { "s" },
                    ENOUGH_SAMPLES
                ));
            } else if c.loo_accuracy.is_some_and(|a| a < 0.8) {
                advice.push(format!(
                    "{}: only {:.0}% of its samples are recognized from the others; add more varied samples",
                    c.label,
                    c.loo_accuracy.unwrap_or(0.0) * 100.0
                ));
            }
        }
        if let Some(c) = &most_confused {
            if c.count * 5
                >= self.counts[classes.iter().position(|x| *x == c.actual).unwrap_or(0)].max(1)
            {
                advice.push(format!(
                    "{} is often taken for {} ({} times): add samples that show the difference",
                    c.actual, c.predicted, c.count
                ));
            }
        }
        Quality {
            samples: self.counts.iter().sum(),
            per_class,
            loo_accuracy,
            train_accuracy,
            most_confused,
            train_ms: super::ms(took),
            advice,
            confusion,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let mut v = v.to_vec();
        l2_normalize(&mut v);
        v
    }

    #[test]
    fn leave_one_out_finds_the_odd_sample_and_the_confused_pair() {
        // Class 0 near x, class 1 near y; the third sample of class 0 lies near y.
        let z = vec![
            unit(&[1.0, 0.1]),
            unit(&[1.0, -0.1]),
            unit(&[0.1, 1.0]),
            unit(&[0.0, 1.0]),
            unit(&[0.2, 1.0]),
        ];
        let labels = vec![0, 0, 0, 1, 1];
        let model = fit(&z, &labels, 2);
        assert_eq!(model.counts, vec![3, 2]);
        let loo = leave_one_out(&z, &labels, &model);
        assert_eq!(loo.outcomes.len(), 5);
        assert_eq!(loo.outcomes[2], (0, 1));
        let names = vec!["cat".to_string(), "dog".to_string()];
        let q = loo.quality(&names, 0.8, Duration::from_millis(1));
        assert_eq!(q.loo_accuracy, Some(0.8));
        assert_eq!(q.per_class[0].loo_accuracy, Some(2.0 / 3.0));
        let c = q.most_confused.expect("a confusion");
        assert_eq!(
            (c.actual.as_str(), c.predicted.as_str(), c.count),
            ("cat", "dog", 1)
        );
        assert!(q.advice.iter().any(|a| a.starts_with("cat: 3 samples")));
    }

    #[test]
    fn threshold_lies_below_most_own_class_similarities() {
        let loo = LeaveOneOut {
            outcomes: vec![],
            own_similarity: vec![0.9, 0.85, 0.8, 0.95, 0.88, 0.7],
            counts: vec![],
        };
        let t = loo.calibrated_threshold().expect("threshold");
        assert!(t <= 0.7, "{t}");
        let none = LeaveOneOut {
            outcomes: vec![],
            own_similarity: vec![0.9],
            counts: vec![],
        };
        assert_eq!(none.calibrated_threshold(), None);
    }
}
