//! Recent crops worth a label, per classifier (Frigate 0.17's "Recent
//! classifications"): the first crop after start, each change of the stable label,
//! crops classified with low confidence, and `unknown` crops. Each has an id, the
//! time, what was predicted, the crop as a JPEG and its features; requests turn
//! them into samples (`label_recent`, one or many at once) or discard them.
//!
//! Kept on disk in the classifier's store (`recent/`, through
//! [`crate::store::recent`]), so the list survives a restart; bounded by
//! `recent.size` entries and `recent.max_bytes` of JPEG, oldest first out.
//! Low-confidence and unknown crops are taken at most once per
//! `recent.min_gap_secs`, so a scene the head is unsure about does not push every
//! other entry out.
//!
//! Crops whose features are near-duplicates ([`DUPLICATE_COSINE`]) form a
//! group ([`groups`]): labeling thirty crops of an unchanged scene stores the few
//! that differ, not thirty copies (Frigate refuses bulk labeling for that reason).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub use crate::config::RecentConfig;
use crate::store::recent::RecentFiles;
pub use crate::store::recent::{Entry, Reason};

/// Crops at least this similar (cosine of their features) are near-duplicates:
/// one group, and only the first of them is stored when several are labeled at
/// once. Crops of a still scene under camera noise measure above 0.99; a
/// changed object in the region, below 0.9.
pub const DUPLICATE_COSINE: f32 = 0.97;

/// Ids of recent crops, unique across classifiers and restarts (they start from
/// the clock in microseconds): an id of one classifier's list sent to another is
/// refused, never taken for one of its crops.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn next_id() -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1);
    let _ = NEXT_ID.fetch_max(now, Ordering::Relaxed);
    NEXT_ID.fetch_add(1, Ordering::Relaxed) + 1
}

/// The bounded list of one classifier.
#[derive(Debug)]
pub struct Recent {
    config: RecentConfig,
    entries: VecDeque<Entry>,
    last_doubtful: Option<Instant>,
    /// Where the list is kept; `None`: in memory only (tests, benchmarks).
    files: Option<RecentFiles>,
}

impl Recent {
    /// An empty list kept in memory only.
    pub fn new(config: RecentConfig) -> Self {
        Self {
            config,
            entries: VecDeque::new(),
            last_doubtful: None,
            files: None,
        }
    }

    /// Keep the list in `dir` from now on, starting with what it holds there
    /// (entries beyond the bounds, or whose files are damaged, are dropped).
    pub fn keep_in(&mut self, dir: PathBuf) {
        let files = RecentFiles::new(dir);
        let mut loaded = files.load();
        if let Some(last) = loaded.iter().map(|e| e.id).max() {
            let _ = NEXT_ID.fetch_max(last, Ordering::Relaxed);
        }
        loaded.sort_by_key(|e| e.id);
        self.entries = loaded.into();
        self.files = Some(files);
        self.trim();
    }

    /// New bounds and keeping rules (an `update_classifier`): entries beyond the
    /// new bounds go, oldest first.
    pub fn reconfigure(&mut self, config: RecentConfig) {
        self.config = config;
        let before = self.entries.len();
        self.trim();
        if self.entries.len() != before {
            self.save_index();
        }
    }

    /// The list moved with its classifier's store (a rename).
    pub fn moved_to(&mut self, dir: PathBuf) {
        self.files = Some(RecentFiles::new(dir));
    }

    /// The list's directory was deleted with its classifier: keep nothing on
    /// disk from now on.
    pub fn forget_files(&mut self) {
        self.files = None;
    }

    /// Whether a crop with this outcome is worth keeping now; `None` when not. The
    /// caller encodes the JPEG only when this says yes, then calls [`Recent::push`].
    pub fn worth(
        &self,
        first: bool,
        stable_changed: bool,
        unknown: bool,
        confidence: Option<f32>,
        now: Instant,
    ) -> Option<Reason> {
        if self.config.size == 0 {
            return None;
        }
        if first {
            return Some(Reason::First);
        }
        if stable_changed {
            return Some(Reason::LabelChanged);
        }
        let gap_ok = self.last_doubtful.is_none_or(|t| {
            now.duration_since(t) >= Duration::from_secs_f64(self.config.min_gap_secs)
        });
        if !gap_ok {
            return None;
        }
        if unknown {
            return Some(Reason::Unknown);
        }
        match confidence {
            Some(c) if c < self.config.below_confidence => Some(Reason::LowConfidence),
            _ => None,
        }
    }

    /// Keep a crop (written to disk when the list is kept there; blocking);
    /// returns its id. The oldest entries go when the list is full.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        reason: Reason,
        captured_at: SystemTime,
        label: Option<String>,
        confidence: f32,
        jpeg: Vec<u8>,
        features: Vec<f32>,
        now: Instant,
    ) -> u64 {
        if matches!(reason, Reason::LowConfidence | Reason::Unknown) {
            self.last_doubtful = Some(now);
        }
        let id = next_id();
        let entry = Entry {
            id,
            captured_at: crate::time::timestamp(captured_at),
            reason,
            label,
            confidence: (confidence * 10_000.0).round() / 10_000.0,
            bytes: jpeg.len(),
            jpeg: Arc::new(jpeg),
            features: Arc::new(features),
        };
        if let Some(f) = &self.files {
            if let Err(e) = f.write(&entry) {
                tracing::warn!(error = %e, "cannot keep a recent crop on disk; kept in memory");
            }
        }
        self.entries.push_back(entry);
        self.trim();
        self.save_index();
        id
    }

    /// Drop the oldest entries beyond `recent.size` and `recent.max_bytes`.
    fn trim(&mut self) {
        let max = self.config.size.max(1);
        let mut bytes: usize = self.entries.iter().map(|e| e.bytes).sum();
        while self.entries.len() > max || (bytes > self.config.max_bytes && self.entries.len() > 1)
        {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            bytes -= old.bytes;
            if let Some(f) = &self.files {
                f.remove(old.id);
            }
        }
    }

    fn save_index(&self) {
        if let Some(f) = &self.files {
            let list: Vec<&Entry> = self.entries.iter().collect();
            if let Err(e) = f.save_index(&list) {
                tracing::warn!(error = %e, "cannot save the list of recent crops");
            }
        }
    }

    /// Newest first.
    pub fn list(&self) -> Vec<Entry> {
        self.entries.iter().rev().cloned().collect()
    }

    pub fn get(&self, id: u64) -> Option<Entry> {
        self.entries.iter().find(|e| e.id == id).cloned()
    }

    /// Remove entries; how many were there.
    pub fn remove_all(&mut self, ids: &[u64]) -> usize {
        let before = self.entries.len();
        self.entries.retain(|e| !ids.contains(&e.id));
        let removed = before - self.entries.len();
        if removed > 0 {
            if let Some(f) = &self.files {
                ids.iter().for_each(|id| f.remove(*id));
            }
            self.save_index();
        }
        removed
    }

    /// Remove one entry; whether it was there.
    pub fn remove(&mut self, id: u64) -> bool {
        self.remove_all(&[id]) == 1
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Cosine similarity of two feature vectors (0 when either is empty or zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut ab, mut aa, mut bb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// The group of each entry, in order: entries at least [`DUPLICATE_COSINE`]
/// similar to a group's first entry join it (greedy, in list order); an entry
/// without features is a group of its own. Groups are numbered from 0.
pub fn groups(entries: &[Entry]) -> Vec<usize> {
    let mut leaders: Vec<&Entry> = Vec::new();
    entries
        .iter()
        .map(|e| {
            let found = (!e.features.is_empty())
                .then(|| {
                    leaders
                        .iter()
                        .position(|l| cosine(&l.features, &e.features) >= DUPLICATE_COSINE)
                })
                .flatten();
            found.unwrap_or_else(|| {
                leaders.push(e);
                leaders.len() - 1
            })
        })
        .collect()
}

/// Of `entries` (in order), those worth storing: each one not a near-duplicate
/// of one kept before it; and the others.
pub fn distinct(entries: &[Entry]) -> (Vec<&Entry>, Vec<&Entry>) {
    let mut kept: Vec<&Entry> = Vec::new();
    let mut skipped = Vec::new();
    for e in entries {
        let duplicate = !e.features.is_empty()
            && kept
                .iter()
                .any(|k| cosine(&k.features, &e.features) >= DUPLICATE_COSINE);
        if duplicate {
            skipped.push(e);
        } else {
            kept.push(e);
        }
    }
    (kept, skipped)
}

#[cfg(test)]
mod tests;
