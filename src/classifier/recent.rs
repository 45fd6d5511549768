//! Recent crops worth a label, per classifier (Frigate 0.17's "Recent
//! classifications"): the first crop after start, each change of the stable label,
//! crops classified with low confidence, and `unknown` crops. Each has an id, the
//! time, what was predicted and the crop as a JPEG; a request turns one into a
//! sample (`label_recent`) or discards it.
//!
//! Kept in memory only: a restart starts an empty list (the crops are of the
//! moment; what matters is kept as samples). Bounded by `recent.size` entries,
//! oldest first out; low-confidence and unknown crops are taken at most once per
//! `recent.min_gap_secs`, so a scene the head is unsure about does not push every
//! other entry out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

pub use crate::config::RecentConfig;

/// Why a crop was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
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
}

/// Ids of recent crops, unique across classifiers: an id of one classifier's list
/// sent to another is refused, never taken for one of its crops.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The bounded list of one classifier.
#[derive(Debug)]
pub struct Recent {
    config: RecentConfig,
    entries: VecDeque<Entry>,
    last_doubtful: Option<Instant>,
}

impl Recent {
    pub fn new(config: RecentConfig) -> Self {
        Self {
            config,
            entries: VecDeque::new(),
            last_doubtful: None,
        }
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

    /// Keep a crop; returns its id. The oldest entry goes when the list is full.
    pub fn push(
        &mut self,
        reason: Reason,
        captured_at: SystemTime,
        label: Option<String>,
        confidence: f32,
        jpeg: Vec<u8>,
        now: Instant,
    ) -> u64 {
        if matches!(reason, Reason::LowConfidence | Reason::Unknown) {
            self.last_doubtful = Some(now);
        }
        while self.entries.len() >= self.config.size.max(1) {
            self.entries.pop_front();
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        self.entries.push_back(Entry {
            id,
            captured_at: crate::time::timestamp(captured_at),
            reason,
            label,
            confidence: (confidence * 10_000.0).round() / 10_000.0,
            bytes: jpeg.len(),
            jpeg: Arc::new(jpeg),
        });
        id
    }

    /// Newest first.
    pub fn list(&self) -> Vec<Entry> {
        self.entries.iter().rev().cloned().collect()
    }

    pub fn get(&self, id: u64) -> Option<Entry> {
        self.entries.iter().find(|e| e.id == id).cloned()
    }

    /// Remove one entry; whether it was there.
    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.id != id);
        self.entries.len() != before
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_is_worth_a_label_bounded_and_spaced() {
        let mut r = Recent::new(RecentConfig {
            size: 3,
            below_confidence: 0.6,
            min_gap_secs: 10.0,
        });
        let t0 = Instant::now();
        let at = SystemTime::now();
        assert_eq!(
            r.worth(true, false, false, Some(0.9), t0),
            Some(Reason::First)
        );
        assert_eq!(r.worth(false, false, false, Some(0.9), t0), None);
        assert_eq!(
            r.worth(false, true, false, Some(0.9), t0),
            Some(Reason::LabelChanged)
        );
        assert_eq!(
            r.worth(false, false, false, Some(0.3), t0),
            Some(Reason::LowConfidence)
        );
        assert_eq!(r.worth(false, false, true, None, t0), Some(Reason::Unknown));
        r.push(
            Reason::LowConfidence,
            at,
            Some("a".into()),
            0.3,
            vec![1],
            t0,
        );
        // Spaced: another doubtful crop within 10 s is not kept; a label change is.
        assert_eq!(
            r.worth(false, false, true, None, t0 + Duration::from_secs(5)),
            None
        );
        assert_eq!(
            r.worth(false, true, false, Some(0.9), t0 + Duration::from_secs(5)),
            Some(Reason::LabelChanged)
        );
        assert_eq!(
            r.worth(false, false, true, None, t0 + Duration::from_secs(10)),
            Some(Reason::Unknown)
        );
        let ids: Vec<u64> = (0..4)
            .map(|i| r.push(Reason::LabelChanged, at, None, 0.0, vec![i], t0))
            .collect();
        assert_eq!(r.len(), 3);
        assert_eq!(
            r.list().iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![ids[3], ids[2], ids[1]]
        );
        assert!(r.get(ids[0]).is_none());
        assert!(r.remove(ids[2]));
        assert!(!r.remove(ids[2]));
        assert_eq!(r.len(), 2);
        // Ids are unique across classifiers' lists.
        let mut other = Recent::new(RecentConfig::default());
        let theirs = other.push(Reason::First, at, None, 0.0, vec![0], t0);
        assert!(r.get(theirs).is_none() && !ids.contains(&theirs));
        let none = Recent::new(RecentConfig {
            size: 0,
            ..RecentConfig::default()
        });
        assert_eq!(none.worth(true, true, true, None, t0), None);
    }
}
