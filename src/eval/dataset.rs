//! The labeled image folder (`<split>/<class>/*`), its embeddings, the k-shot
//! draws, and the files `--save-embeddings` writes for `tools/compare_sklearn.py`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::scene::{view_of, Scene, View};
use super::{EvalError, Shots};
use crate::backbone::augment::{self, Augment};
use crate::backbone::Embedder;
use crate::imaging::decode::{decode_image, ImageLimits};
use crate::source::files::is_image;

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

/// Data set images may be larger than the daemon accepts as samples: sides up to
/// 16384, and the default decode budget (large JPEGs are decoded at a reduced size).
pub(super) const EVAL_LIMITS: ImageLimits = ImageLimits {
    max_side: 16_384,
    budget_bytes: 64 << 20,
};

pub(super) fn embed_all(
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

/// `draws.json`: per k, per seed, the rows of `embeddings.f32` (train rows count
/// from 0 in saved order) that the draw picked, so `tools/compare_sklearn.py` fits
/// scikit-learn on the same support sets.
pub(super) fn save_draws(
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
pub(super) fn embed_views(
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
pub(super) fn save_embeddings(
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
