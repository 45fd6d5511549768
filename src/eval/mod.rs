//! `edgehead eval`: k-shot accuracy of the heads on a labeled image folder
//! (`<split>/<class>/*.jpg`), over several seeds, with training time and embedding
//! throughput. The numbers in the documentation come from here.
//!
//! - [`dataset`]: the folder, embeddings, draws and saved files; [`scene`]: the
//!   region test of `--scene`.

pub mod dataset;
pub mod scene;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::backbone::augment::Augment;
use crate::backbone::Embedder;
use crate::config::{HeadKind, UnknownThreshold};
use crate::head::{self, softmax, Sample, TrainParams};
use dataset::{embed_all, embed_views, save_draws, save_embeddings, EVAL_LIMITS};
pub use dataset::{list_split, Item};
pub use scene::Scene;
use scene::View;

/// A head to evaluate: one of edgehead's, or the baseline it is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalHead {
    Head(HeadKind),
    /// scikit-learn's `LogisticRegression()` with its defaults (L2 penalty, C = 1,
    /// intercept not penalized, raw features), fitted by edgehead's own L-BFGS: its
    /// objective `C·Σ loss + ½|W|²` is `softmax::fit`'s with `l2 = 1/(C·N)` (2/(C·N)
    /// with two classes, where scikit-learn fits one binary vector). It ignores
    /// `--augment`: the baseline sees the draws only.
    /// `tools/compare_sklearn.py` runs scikit-learn itself on the same draws.
    LogReg,
}

impl std::str::FromStr for EvalHead {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "logreg" => Ok(EvalHead::LogReg),
            other => other
                .parse()
                .map(EvalHead::Head)
                .map_err(|e| format!("{e}, or `logreg`")),
        }
    }
}

impl std::fmt::Display for EvalHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalHead::Head(k) => write!(f, "{}", format!("{k:?}").to_lowercase()),
            EvalHead::LogReg => write!(f, "logreg"),
        }
    }
}

/// How many support samples per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shots {
    K(usize),
    All,
}

impl std::str::FromStr for Shots {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Shots::All),
            n => n
                .parse::<usize>()
                .ok()
                .filter(|k| *k > 0)
                .map(Shots::K)
                .ok_or_else(|| format!("{n:?} is not a positive number or \"all\"")),
        }
    }
}

impl Serialize for Shots {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Shots::K(k) => s.serialize_u64(*k as u64),
            Shots::All => s.serialize_str("all"),
        }
    }
}

impl std::fmt::Display for Shots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shots::K(k) => write!(f, "{k}"),
            Shots::All => write!(f, "all"),
        }
    }
}

pub struct Options {
    pub dataset: PathBuf,
    pub train_split: String,
    /// `None`: `val`, else `test`.
    pub test_split: Option<String>,
    pub shots: Vec<Shots>,
    pub seeds: u64,
    pub heads: Vec<EvalHead>,
    pub l2: f32,
    /// `head.l2_auto`: the L2 penalty chosen by cross-validation.
    pub l2_auto: bool,
    pub max_iterations: usize,
    /// Also write the embeddings (raw f32) and an index, for tools/compare_sklearn.py.
    pub save_embeddings: Option<PathBuf>,
    /// Compose each image into a larger scene and compare a classifier on its
    /// region with one on the whole frame (see [`Scene`]).
    pub scene: Option<Scene>,
    /// Teach-time augmentation: extra views of each support image, embedded as
    /// extra samples of its class (see [`crate::backbone::augment`]). The views count
    /// as samples for `auto_min_samples`; `l2_auto` is off with them, because its
    /// folds would put an image's views on both sides.
    pub augment: Vec<Augment>,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{0}")]
    Dataset(String),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// With a scene: `region` (the crop) or `frame` (the whole frame).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<&'static str>,
    pub head: String,
    pub shots: Shots,
    pub runs: usize,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    pub train_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dataset: String,
    pub backbone: String,
    pub train_images: usize,
    pub test_images: usize,
    pub classes: Vec<String>,
    pub skipped_images: usize,
    /// Decode + preprocess + backbone, per image.
    pub embed_images_per_s: f64,
    pub rows: Vec<Row>,
}

fn stats(v: &[f64]) -> (f64, f64, f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, std, min, max)
}

/// Per k, per seed, the train items picked: `k` of each class's (all for
/// [`Shots::All`], one draw), shuffled by a generator seeded with the seed.
fn draw(by_class: &[Vec<usize>], shots: &[Shots], seeds: u64) -> Vec<(Shots, Vec<Vec<usize>>)> {
    shots
        .iter()
        .map(|&shots| {
            let runs = if shots == Shots::All { 1 } else { seeds };
            let per_seed = (0..runs)
                .map(|seed| {
                    let mut rng = fastrand::Rng::with_seed(seed);
                    let mut picked = Vec::new();
                    for members in by_class {
                        let mut m = members.clone();
                        rng.shuffle(&mut m);
                        let k = match shots {
                            Shots::K(k) => k.min(m.len()),
                            Shots::All => m.len(),
                        };
                        picked.extend_from_slice(&m[..k]);
                    }
                    picked
                })
                .collect();
            (shots, per_seed)
        })
        .collect()
}

/// Evaluate every head of `o` on the data set, in each view.
pub fn run(embedder: &dyn Embedder, o: &Options) -> Result<Report, EvalError> {
    let test_split = match &o.test_split {
        Some(s) => s.clone(),
        None if o.dataset.join("val").is_dir() => "val".into(),
        None => "test".into(),
    };
    let train = list_split(&o.dataset, &o.train_split)?;
    let test = list_split(&o.dataset, &test_split)?;
    let classes: Vec<String> = {
        let mut c: Vec<String> = train.iter().map(|i| i.class.clone()).collect();
        c.dedup();
        c
    };
    let views: &[View] = match &o.scene {
        Some(_) => &[View::Region, View::Frame],
        None => &[View::Image],
    };
    let set = DataSet {
        train: &train,
        test: &test,
        classes: &classes,
    };
    let mut skipped = 0;
    let mut rows = Vec::new();
    let mut embed_rate = 0.0;
    for &view in views {
        embed_rate = evaluate_view(embedder, o, &set, view, &mut skipped, &mut rows)?;
    }
    Ok(Report {
        dataset: o.dataset.display().to_string(),
        backbone: embedder.id().to_string(),
        train_images: train.len(),
        test_images: test.len(),
        classes,
        skipped_images: skipped,
        embed_images_per_s: embed_rate,
        rows,
    })
}

/// The data set's splits and classes.
struct DataSet<'a> {
    train: &'a [Item],
    test: &'a [Item],
    classes: &'a [String],
}

/// The embedded data set of one view.
struct Embedded<'a> {
    set: &'a DataSet<'a>,
    index: BTreeMap<&'a str, usize>,
    train_f: Vec<Option<Vec<f32>>>,
    train_aug: Vec<Vec<Vec<f32>>>,
    /// The test images that embedded, and their class index.
    tests: Vec<(Vec<f32>, usize)>,
}

/// Embed the data set in `view`, draw the support sets, and add a row per head
/// and k to `rows`; returns the images embedded per second.
fn evaluate_view(
    embedder: &dyn Embedder,
    o: &Options,
    set: &DataSet<'_>,
    view: View,
    skipped: &mut usize,
    rows: &mut Vec<Row>,
) -> Result<f64, EvalError> {
    let started = Instant::now();
    let scene = o.scene.as_ref();
    let train_f = embed_all(embedder, set.train, &EVAL_LIMITS, skipped, view, scene);
    let test_f = embed_all(embedder, set.test, &EVAL_LIMITS, skipped, view, scene);
    let n = set.train.len() + set.test.len();
    let embed_rate = n as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "embedded {n} images in {:.1} s ({embed_rate:.1}/s)",
        started.elapsed().as_secs_f64()
    );
    let train_aug = if o.augment.is_empty() {
        vec![Vec::new(); set.train.len()]
    } else {
        let t = Instant::now();
        let v = embed_views(embedder, set.train, &train_f, &o.augment, view, scene);
        eprintln!(
            "embedded {} augmented views in {:.1} s",
            v.iter().map(Vec::len).sum::<usize>(),
            t.elapsed().as_secs_f64()
        );
        v
    };
    let saving = match (&o.save_embeddings, view) {
        (Some(dir), View::Image) => Some(dir),
        _ => None,
    };
    if let Some(dir) = saving {
        save_embeddings(
            dir,
            embedder.dim(),
            &[(set.train, &train_f), (set.test, &test_f)],
            (set.train, &train_aug),
        )?;
    }
    let index: BTreeMap<&str, usize> = set
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    // Per class, the train samples that embedded.
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); set.classes.len()];
    for (i, (it, f)) in set.train.iter().zip(&train_f).enumerate() {
        if f.is_some() {
            by_class[index[it.class.as_str()]].push(i);
        }
    }
    let tests = set
        .test
        .iter()
        .zip(test_f)
        .filter_map(|(it, f)| Some((f?, *index.get(it.class.as_str())?)))
        .collect();
    let draws = draw(&by_class, &o.shots, o.seeds);
    if let Some(dir) = saving {
        save_draws(dir, &train_f, &draws)?;
    }
    let e = Embedded {
        set,
        index,
        train_f,
        train_aug,
        tests,
    };
    for &eval_head in &o.heads {
        for (shots, per_seed) in &draws {
            let (accs, train_ms) = score(embedder, o, &e, eval_head, per_seed)?;
            rows.push(row(view, eval_head, *shots, &accs, &train_ms));
        }
    }
    Ok(embed_rate)
}

/// The row of `eval_head` at `shots`, from each draw's accuracy and training
/// time; printed as it is made.
fn row(view: View, eval_head: EvalHead, shots: Shots, accs: &[f64], train_ms: &[f64]) -> Row {
    let (mean, std, min, max) = stats(accs);
    let row = Row {
        view: match view {
            View::Image => None,
            View::Region => Some("region"),
            View::Frame => Some("frame"),
        },
        head: eval_head.to_string(),
        shots,
        runs: accs.len(),
        mean,
        std,
        min,
        max,
        train_ms: stats(train_ms).0,
    };
    eprintln!(
        "{}{:8} {:>4}-shot accuracy {:.4} ± {:.4} (min {:.4}, max {:.4}, {} runs)  train {:.1} ms",
        row.view.map(|v| format!("{v:6} ")).unwrap_or_default(),
        row.head,
        row.shots,
        row.mean,
        row.std,
        row.min,
        row.max,
        row.runs,
        row.train_ms
    );
    row
}

/// Train `eval_head` on each draw of `per_seed` and test it: the accuracies and
/// the training times (ms).
fn score(
    embedder: &dyn Embedder,
    o: &Options,
    e: &Embedded<'_>,
    eval_head: EvalHead,
    per_seed: &[Vec<usize>],
) -> Result<(Vec<f64>, Vec<f64>), EvalError> {
    let classes = e.set.classes;
    let class_of = |i: usize| e.index[e.set.train[i].class.as_str()];
    let params = TrainParams {
        kind: match eval_head {
            EvalHead::Head(k) => k,
            EvalHead::LogReg => HeadKind::Softmax,
        },
        auto_min_samples: 5,
        l2: o.l2,
        l2_auto: o.l2_auto && o.augment.is_empty(),
        max_iterations: o.max_iterations,
        unknown: UnknownThreshold::Off,
    };
    let mut accs = Vec::new();
    let mut train_ms = Vec::new();
    for picked in per_seed {
        let t = Instant::now();
        let correct = if eval_head == EvalHead::LogReg {
            let (z, labels): (Vec<Vec<f32>>, Vec<usize>) = picked
                .iter()
                .filter_map(|&i| Some((e.train_f[i].clone()?, class_of(i))))
                .unzip();
            // scikit-learn penalizes ½|W|²/(C·N) with C = 1. With two classes it
            // fits one vector v; the two softmax rows are ±v/2, whose
            // ½(|w₀|² + |w₁|²) is |v|²/4: the same penalty is 2/N.
            let n = z.len().max(1) as f32;
            let l2 = if classes.len() == 2 { 2.0 / n } else { 1.0 / n };
            let fit = softmax::fit(&z, &labels, classes.len(), l2, 5000);
            train_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            e.tests.iter().filter(|(f, c)| fit.predict(f) == *c).count()
        } else {
            let mut samples: Vec<Sample> = picked
                .iter()
                .filter_map(|&i| {
                    Some(Sample {
                        features: e.train_f[i].as_deref()?,
                        class: class_of(i),
                    })
                })
                .collect();
            for &i in picked {
                let class = class_of(i);
                samples.extend(
                    e.train_aug[i]
                        .iter()
                        .map(|features| Sample { features, class }),
                );
            }
            let t = Instant::now();
            let h = head::train(&samples, classes, embedder.id(), 1, &params)
                .map_err(|err| EvalError::Dataset(err.to_string()))?;
            train_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            e.tests
                .iter()
                .filter(|(f, c)| {
                    h.predict(f)
                        .ranked
                        .first()
                        .is_some_and(|(i, _)| h.classes[*i] == classes[*c])
                })
                .count()
        };
        accs.push(correct as f64 / e.tests.len().max(1) as f64);
    }
    Ok((accs, train_ms))
}
