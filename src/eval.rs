//! `edgehead eval`: k-shot accuracy of the heads on a labeled image folder
//! (`<split>/<class>/*.jpg`), over several seeds, with training time and embedding
//! throughput. The numbers in README come from here.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use image::imageops::FilterType;
use image::RgbImage;

use crate::backbone::augment::{self, Augment};
use crate::backbone::Embedder;
use crate::classifier::region::{self, Rect, RegionConfig, RegionUnit};
use crate::config::{HeadKind, UnknownThreshold};
use crate::head::{self, softmax, Sample, TrainParams};
use crate::source::decode::{decode_image, ImageLimits};
use crate::source::files::is_image;

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

/// The test of a region classifier against a whole-frame one on the same task:
/// every image of the data set is resized into `region` of `background` (resized
/// to `width` × `height`), and both views are embedded and evaluated with the same
/// k-shot draws.
pub struct Scene {
    pub background: RgbImage,
    pub width: u32,
    pub height: u32,
    pub region: RegionConfig,
}

impl Scene {
    /// The default layout: a 640×480 frame, the object in a 192×160 region at the
    /// upper right (a tenth of the frame).
    pub fn new(background: &RgbImage) -> Self {
        let (width, height) = (640, 480);
        Self {
            background: image::imageops::resize(background, width, height, FilterType::Triangle),
            width,
            height,
            region: RegionConfig {
                x: 0.6,
                y: 0.1,
                width: 0.3,
                height: 1.0 / 3.0,
                unit: RegionUnit::Fraction,
            },
        }
    }

    /// The region in pixels.
    pub fn rect(&self) -> Rect {
        // Fractions that passed validation always fit.
        self.region.rect(self.width, self.height).unwrap_or(Rect {
            x: 0,
            y: 0,
            width: self.width,
            height: self.height,
        })
    }

    /// The frame with `object` filling the region.
    pub fn compose(&self, object: &RgbImage) -> RgbImage {
        let r = self.rect();
        let mut frame = self.background.clone();
        let obj = image::imageops::resize(object, r.width, r.height, FilterType::Triangle);
        image::imageops::replace(&mut frame, &obj, r.x as i64, r.y as i64);
        frame
    }
}

/// What is embedded of each image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    /// The image as it is (a plain `eval`).
    Image,
    /// Composed into the scene, the region cropped out.
    Region,
    /// Composed into the scene, the whole frame.
    Frame,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{0}")]
    Dataset(String),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// One labeled image of the data set.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub split: String,
    pub class: String,
    pub path: PathBuf,
}

/// `<root>/<split>/<class>/*`, sorted.
pub fn list_split(root: &Path, split: &str) -> Result<Vec<Item>, EvalError> {
    let dir = root.join(split);
    let read = |d: &Path| {
        std::fs::read_dir(d)
            .map_err(|e| EvalError::Dataset(format!("cannot read {}: {e}", d.display())))
    };
    let mut items = Vec::new();
    for class in read(&dir)? {
        let class = class.map_err(|e| EvalError::Dataset(e.to_string()))?.path();
        if !class.is_dir() {
            continue;
        }
        let name = class
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for f in read(&class)? {
            let f = f.map_err(|e| EvalError::Dataset(e.to_string()))?.path();
            if is_image(&f) {
                items.push(Item {
                    split: split.to_string(),
                    class: name.clone(),
                    path: f,
                });
            }
        }
    }
    items.sort_by(|a, b| a.path.cmp(&b.path));
    if items.is_empty() {
        return Err(EvalError::Dataset(format!(
            "no images under {}/<class>/",
            dir.display()
        )));
    }
    Ok(items)
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

/// Data set images may be larger than the daemon accepts as samples: sides up to
/// 16384, and the default decode budget (large JPEGs are decoded at a reduced size).
const EVAL_LIMITS: ImageLimits = ImageLimits {
    max_side: 16_384,
    budget_bytes: 64 << 20,
};

fn embed_all(
    embedder: &dyn Embedder,
    items: &[Item],
    limits: &ImageLimits,
    skipped: &mut usize,
    view: View,
    scene: Option<&Scene>,
) -> Vec<Option<Vec<f32>>> {
    items
        .iter()
        .map(|it| {
            let bytes = std::fs::read(&it.path).ok()?;
            let img = match decode_image(&bytes, limits) {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("skipping {}: {e}", it.path.display());
                    *skipped += 1;
                    return None;
                }
            };
            embedder
                .embed(&view_of(img, view, scene))
                .ok()
                .map(|e| e.features)
        })
        .collect()
}

/// What `view` embeds of a data set image.
fn view_of(img: RgbImage, view: View, scene: Option<&Scene>) -> RgbImage {
    match (view, scene) {
        (View::Region, Some(s)) => region::crop(&s.compose(&img), s.rect()),
        (View::Frame, Some(s)) => s.compose(&img),
        _ => img,
    }
}

/// The row of each embedded item among the saved rows (which skip the items that
/// did not embed); items that did not embed get the next row's number, unused.
fn saved_rows(embedded: &[Option<Vec<f32>>]) -> Vec<usize> {
    let mut next = 0usize;
    embedded
        .iter()
        .map(|f| {
            let row = next;
            next += usize::from(f.is_some());
            row
        })
        .collect()
}

fn stats(v: &[f64]) -> (f64, f64, f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, std, min, max)
}

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
    let index: BTreeMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let views: &[View] = match &o.scene {
        Some(_) => &[View::Region, View::Frame],
        None => &[View::Image],
    };
    let mut skipped = 0;
    let mut rows = Vec::new();
    let mut embed_rate = 0.0;
    for &view in views {
        let started = Instant::now();
        let train_f = embed_all(
            embedder,
            &train,
            &EVAL_LIMITS,
            &mut skipped,
            view,
            o.scene.as_ref(),
        );
        let test_f = embed_all(
            embedder,
            &test,
            &EVAL_LIMITS,
            &mut skipped,
            view,
            o.scene.as_ref(),
        );
        embed_rate = (train.len() + test.len()) as f64 / started.elapsed().as_secs_f64();
        eprintln!(
            "embedded {} images in {:.1} s ({embed_rate:.1}/s)",
            train.len() + test.len(),
            started.elapsed().as_secs_f64()
        );
        let train_aug = if o.augment.is_empty() {
            vec![Vec::new(); train.len()]
        } else {
            let t = Instant::now();
            let v = embed_views(
                embedder,
                &train,
                &train_f,
                &o.augment,
                view,
                o.scene.as_ref(),
            );
            eprintln!(
                "embedded {} augmented views in {:.1} s",
                v.iter().map(Vec::len).sum::<usize>(),
                t.elapsed().as_secs_f64()
            );
            v
        };
        if let (Some(dir), View::Image) = (&o.save_embeddings, view) {
            save_embeddings(
                dir,
                embedder.dim(),
                &[(&train, &train_f), (&test, &test_f)],
                (&train, &train_aug),
            )?;
        }

        // Per class, the train samples that embedded.
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes.len()];
        for (i, (it, f)) in train.iter().zip(&train_f).enumerate() {
            if f.is_some() {
                by_class[index[it.class.as_str()]].push(i);
            }
        }
        let tests: Vec<(&[f32], usize)> = test
            .iter()
            .zip(&test_f)
            .filter_map(|(it, f)| Some((f.as_deref()?, *index.get(it.class.as_str())?)))
            .collect();

        // The draws: per k, per seed, the train items picked.
        let mut draws: Vec<(Shots, Vec<Vec<usize>>)> = Vec::new();
        for &shots in &o.shots {
            let runs = if shots == Shots::All { 1 } else { o.seeds };
            let per_seed = (0..runs)
                .map(|seed| {
                    let mut rng = fastrand::Rng::with_seed(seed);
                    let mut picked = Vec::new();
                    for members in &by_class {
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
            draws.push((shots, per_seed));
        }
        if let (Some(dir), View::Image) = (&o.save_embeddings, view) {
            save_draws(dir, &train_f, &draws)?;
        }

        for &eval_head in &o.heads {
            let kind = match eval_head {
                EvalHead::Head(k) => k,
                EvalHead::LogReg => HeadKind::Softmax,
            };
            let params = TrainParams {
                kind,
                auto_min_samples: 5,
                l2: o.l2,
                l2_auto: o.l2_auto && o.augment.is_empty(),
                max_iterations: o.max_iterations,
                unknown: UnknownThreshold::Off,
            };
            for (shots, per_seed) in &draws {
                let shots = *shots;
                let mut accs = Vec::new();
                let mut train_ms = Vec::new();
                for picked in per_seed {
                    let mut samples: Vec<Sample> = picked
                        .iter()
                        .filter_map(|&i| {
                            Some(Sample {
                                features: train_f[i].as_deref()?,
                                class: index[train[i].class.as_str()],
                            })
                        })
                        .collect();
                    for &i in picked {
                        let class = index[train[i].class.as_str()];
                        samples.extend(
                            train_aug[i]
                                .iter()
                                .map(|features| Sample { features, class }),
                        );
                    }
                    let t = Instant::now();
                    let correct = if eval_head == EvalHead::LogReg {
                        let (z, labels): (Vec<Vec<f32>>, Vec<usize>) = picked
                            .iter()
                            .filter_map(|&i| {
                                Some((train_f[i].clone()?, index[train[i].class.as_str()]))
                            })
                            .unzip();
                        // scikit-learn penalizes ½|W|²/(C·N) with C = 1. With two
                        // classes it fits one vector v; the two softmax rows are ±v/2,
                        // whose ½(|w₀|² + |w₁|²) is |v|²/4: the same penalty is 2/N.
                        let n = z.len().max(1) as f32;
                        let l2 = if classes.len() == 2 { 2.0 / n } else { 1.0 / n };
                        let fit = softmax::fit(&z, &labels, classes.len(), l2, 5000);
                        train_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                        tests.iter().filter(|(f, c)| fit.predict(f) == *c).count()
                    } else {
                        let h = head::train(&samples, &classes, embedder.id(), 1, &params)
                            .map_err(|e| EvalError::Dataset(e.to_string()))?;
                        train_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                        tests
                            .iter()
                            .filter(|(f, c)| {
                                let s = h.predict(f);
                                s.ranked
                                    .first()
                                    .is_some_and(|(i, _)| h.classes[*i] == classes[*c])
                            })
                            .count()
                    };
                    accs.push(correct as f64 / tests.len().max(1) as f64);
                }
                let (mean, std, min, max) = stats(&accs);
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
                    train_ms: stats(&train_ms).0,
                };
                eprintln!(
                "{}{:8} {:>4}-shot accuracy {:.4} ± {:.4} (min {:.4}, max {:.4}, {} runs)  train {:.1} ms",
                row.view.map(|v| format!("{v:6} ")).unwrap_or_default(), row.head, row.shots, row.mean, row.std, row.min, row.max, row.runs, row.train_ms
            );
                rows.push(row);
            }
        }
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

/// `draws.json`: per k, per seed, the rows of `embeddings.f32` (train rows count
/// from 0 in saved order) that the draw picked, so `tools/compare_sklearn.py` fits
/// scikit-learn on the same support sets.
fn save_draws(
    dir: &Path,
    train_f: &[Option<Vec<f32>>],
    draws: &[(Shots, Vec<Vec<usize>>)],
) -> Result<(), EvalError> {
    let row = saved_rows(train_f);
    let map: serde_json::Map<String, serde_json::Value> = draws
        .iter()
        .map(|(shots, per_seed)| {
            let rows: Vec<Vec<usize>> = per_seed
                .iter()
                .map(|p| p.iter().map(|&i| row[i]).collect())
                .collect();
            (shots.to_string(), serde_json::json!(rows))
        })
        .collect();
    let path = dir.join("draws.json");
    std::fs::write(&path, serde_json::Value::Object(map).to_string())
        .map_err(|e| EvalError::Write(path, e))
}

/// Items and their embeddings (`None`: the image could not be read).
type Embedded<'a> = (&'a [Item], &'a [Option<Vec<f32>>]);

/// The embeddings of the augmented views of every item that embedded (empty for the
/// others), in [`augment::views`] order.
fn embed_views(
    embedder: &dyn Embedder,
    items: &[Item],
    embedded: &[Option<Vec<f32>>],
    kinds: &[Augment],
    view: View,
    scene: Option<&Scene>,
) -> Vec<Vec<Vec<f32>>> {
    items
        .iter()
        .zip(embedded)
        .map(|(it, e)| {
            if e.is_none() {
                return Vec::new();
            }
            let Some(img) = std::fs::read(&it.path)
                .ok()
                .and_then(|b| decode_image(&b, &EVAL_LIMITS).ok())
            else {
                return Vec::new();
            };
            augment::views(&view_of(img, view, scene), kinds)
                .iter()
                .filter_map(|v| embedder.embed(v).ok().map(|e| e.features))
                .collect()
        })
        .collect()
}

/// `embeddings.f32` (N × dim, little-endian) and `embeddings.json` (dim, one entry
/// per row: split, class, path). Augmented views of the train split follow as rows
/// of split `<split>+aug`, with `of`: the row of their original.
fn save_embeddings(
    dir: &Path,
    dim: usize,
    parts: &[Embedded<'_>],
    augmented: (&[Item], &[Vec<Vec<f32>>]),
) -> Result<(), EvalError> {
    let w = |p: PathBuf, e| EvalError::Write(p, e);
    std::fs::create_dir_all(dir).map_err(|e| w(dir.to_path_buf(), e))?;
    let bin = dir.join("embeddings.f32");
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(&bin).map_err(|e| w(bin.clone(), e))?);
    let mut rows = Vec::new();
    for (items, feats) in parts {
        for (it, v) in items.iter().zip(feats.iter()) {
            if let Some(v) = v {
                for x in v {
                    f.write_all(&x.to_le_bytes())
                        .map_err(|e| w(bin.clone(), e))?;
                }
                rows.push(it.clone());
            }
        }
    }
    // The augmented items are the first part's: their originals are its rows, in order.
    let originals = saved_rows(parts.first().map(|p| p.1).unwrap_or(&[]));
    let mut aug_rows = Vec::new();
    // Items that did not embed have no views.
    for ((it, views), &of) in augmented.0.iter().zip(augmented.1).zip(&originals) {
        for v in views {
            for x in v {
                f.write_all(&x.to_le_bytes())
                    .map_err(|e| w(bin.clone(), e))?;
            }
            aug_rows.push(serde_json::json!({
                "split": format!("{}+aug", it.split),
                "class": it.class,
                "path": it.path,
                "of": of,
            }));
        }
    }
    f.flush().map_err(|e| w(bin.clone(), e))?;
    let mut rows: Vec<serde_json::Value> = rows
        .into_iter()
        .map(|r| serde_json::to_value(r).unwrap_or_default())
        .collect();
    rows.extend(aug_rows);
    let index = serde_json::json!({ "dim": dim, "rows": rows });
    let idx = dir.join("embeddings.json");
    std::fs::write(&idx, index.to_string()).map_err(|e| w(idx, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shots_parse() {
        assert_eq!("5".parse::<Shots>(), Ok(Shots::K(5)));
        assert_eq!("all".parse::<Shots>(), Ok(Shots::All));
        assert!("0".parse::<Shots>().is_err());
        assert!("x".parse::<Shots>().is_err());
    }

    #[test]
    fn lists_a_split_by_class_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (c, n) in [("a", 2), ("b", 1)] {
            let d = dir.path().join("train").join(c);
            std::fs::create_dir_all(&d).expect("mkdir");
            for i in 0..n {
                std::fs::write(d.join(format!("{i}.jpg")), b"x").expect("write");
            }
            std::fs::write(d.join("notes.txt"), b"x").expect("write");
        }
        let items = list_split(dir.path(), "train").expect("list");
        assert_eq!(items.len(), 3);
        assert_eq!(items[2].class, "b");
        assert!(list_split(dir.path(), "val").is_err());
    }

    #[test]
    fn draws_name_rows_of_the_saved_embeddings() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Item 1 did not embed: item 2 is saved row 1.
        let train_f = vec![Some(vec![0.0]), None, Some(vec![1.0]), Some(vec![2.0])];
        let draws = vec![
            (Shots::K(1), vec![vec![0, 3], vec![2, 0]]),
            (Shots::All, vec![vec![0, 2, 3]]),
        ];
        save_draws(dir.path(), &train_f, &draws).expect("save");
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("draws.json")).expect("read"),
        )
        .expect("json");
        assert_eq!(v["1"], serde_json::json!([[0, 2], [1, 0]]));
        assert_eq!(v["all"], serde_json::json!([[0, 1, 2]]));
    }

    #[test]
    fn augmented_rows_point_at_their_original_train_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let item = |name: &str| Item {
            split: "train".into(),
            class: "a".into(),
            path: PathBuf::from(name),
        };
        let train = vec![item("0.jpg"), item("1.jpg")];
        // 0.jpg did not embed; 1.jpg is saved row 0 and has two views. The same items
        // as the test split (`--test-split train`) repeat the paths in later rows.
        let feats = vec![None, Some(vec![1.0f32])];
        let views = vec![Vec::new(), vec![vec![2.0f32], vec![3.0]]];
        save_embeddings(
            dir.path(),
            1,
            &[(&train, &feats), (&train, &feats)],
            (&train, &views),
        )
        .expect("save");
        let index: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("embeddings.json")).expect("read"),
        )
        .expect("json");
        let rows = index["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 4);
        for aug in &rows[2..] {
            assert_eq!(aug["split"], "train+aug");
            assert_eq!(aug["of"], 0, "{aug}");
        }
        let bin = std::fs::read(dir.path().join("embeddings.f32")).expect("bin");
        assert_eq!(bin.len(), 4 * 4);
    }

    #[test]
    fn heads_parse_and_print() {
        for h in ["ncm", "softmax", "combined", "auto", "logreg"] {
            assert_eq!(h.parse::<EvalHead>().expect(h).to_string(), h);
        }
        assert!("svm".parse::<EvalHead>().is_err());
    }

    #[test]
    fn stats_of_a_sample() {
        let (mean, std, min, max) = stats(&[1.0, 3.0]);
        assert_eq!((mean, std, min, max), (2.0, 1.0, 1.0, 3.0));
    }
}
