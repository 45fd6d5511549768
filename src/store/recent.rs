//! The recent crops of a classifier on disk (`<store>/recent/`): each crop's JPEG
//! (`<id>.jpg`) and features (`<id>.emb`, the embedding format without a backbone
//! identity check: they only group near-duplicates), and `index.json`, the list
//! in order with each crop's time, reason, label and confidence. Files no entry of
//! the index names are removed when the list is loaded; entries whose JPEG is
//! missing are dropped.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::fsio::{io, write_atomic};
use super::StoreError;

const INDEX: &str = "index.json";

/// Why a crop was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The first crop classified after start.
    First,
    /// The stable label changed on this crop.
    LabelChanged,
    LowConfidence,
    Unknown,
}

/// One kept crop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    /// RFC 3339 time the frame was captured.
    pub captured_at: String,
    pub reason: Reason,
    /// The frame's own label (before smoothing); `None` before any class exists.
    pub label: Option<String>,
    pub confidence: f32,
    /// Bytes of the JPEG.
    pub bytes: usize,
    #[serde(skip)]
    pub jpeg: Arc<Vec<u8>>,
    /// The crop's features (empty when unknown: an entry of an older edgehead).
    #[serde(skip)]
    pub features: Arc<Vec<f32>>,
}

/// The directory of one classifier's recent crops.
#[derive(Debug, Clone)]
pub struct RecentFiles {
    dir: PathBuf,
}

impl RecentFiles {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn jpeg(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id}.jpg"))
    }

    fn features(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id}.f32"))
    }

    /// Write a crop's JPEG and features (the index follows with [`RecentFiles::save_index`]).
    pub fn write(&self, e: &Entry) -> Result<(), StoreError> {
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        write_atomic(&self.jpeg(e.id), &e.jpeg)?;
        let bytes: Vec<u8> = e.features.iter().flat_map(|f| f.to_le_bytes()).collect();
        write_atomic(&self.features(e.id), &bytes)
    }

    /// Remove a crop's files (best effort: leftovers go at the next load).
    pub fn remove(&self, id: u64) {
        let _ = fs::remove_file(self.jpeg(id));
        let _ = fs::remove_file(self.features(id));
    }

    /// Save the list, in order.
    pub fn save_index(&self, entries: &[&Entry]) -> Result<(), StoreError> {
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let path = self.dir.join(INDEX);
        let bytes = serde_json::to_vec(entries).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        })?;
        write_atomic(&path, &bytes)
    }

    /// The saved list: entries with their JPEG and features; a missing or damaged
    /// index is an empty list (these crops are of the moment).
    pub fn load(&self) -> Vec<Entry> {
        let index: Vec<Entry> = fs::read(self.dir.join(INDEX))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut out = Vec::new();
        for mut e in index {
            let Ok(jpeg) = fs::read(self.jpeg(e.id)) else {
                continue;
            };
            let features: Vec<f32> = fs::read(self.features(e.id))
                .map(|b| {
                    b.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect()
                })
                .unwrap_or_default();
            e.bytes = jpeg.len();
            e.jpeg = jpeg.into();
            e.features = features.into();
            out.push(e);
        }
        self.remove_strays(&out);
        out
    }

    /// Remove files no entry names (a crash between writing them and the index).
    fn remove_strays(&self, kept: &[Entry]) {
        let Ok(list) = fs::read_dir(&self.dir) else {
            return;
        };
        for f in list.filter_map(Result::ok) {
            let name = f.file_name().to_string_lossy().into_owned();
            if name == INDEX {
                continue;
            }
            let id = name.split('.').next().and_then(|s| s.parse::<u64>().ok());
            if id.is_none_or(|id| !kept.iter().any(|e| e.id == id)) {
                let _ = fs::remove_file(f.path());
            }
        }
    }
}
