//! The saved head of a store (`head.json`): written atomically, read back at
//! start so predictions resume at once, deleted by `reset`.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::fsio::{io, remove_if_present, sync_dir, write_atomic};
use super::{Store, StoreError, HEAD};
use crate::head::{Head, ModelKind};

/// The heads trained in a store, newest last (`history.json`).
pub const HISTORY: &str = "history.json";
/// Most heads the history keeps.
pub const MAX_HISTORY: usize = 200;

/// One trained head in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub version: u64,
    pub kind: ModelKind,
    /// Seconds since the Unix epoch.
    pub trained_at: u64,
    pub samples: usize,
    pub classes: Vec<String>,
    pub loo_accuracy: Option<f32>,
}

/// The head saved at `path`; `Ok(None)` when there is none. A damaged file is an
/// error (the head can be retrained from the samples).
pub fn read(path: &Path) -> Result<Option<Head>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: path.to_path_buf(),
                why: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

impl Store {
    /// Save the head, record its version as handed out and add it to the history.
    pub fn save_head(&mut self, head: &Head) -> Result<(), StoreError> {
        let path = self.dir().join(HEAD);
        let bytes = serde_json::to_vec(head).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        })?;
        write_atomic(&path, &bytes)?;
        self.record_head_version(head.version)?;
        let mut history = self.history();
        history.push(HistoryEntry {
            version: head.version,
            kind: head.kind,
            trained_at: head.trained_at,
            samples: head.quality.samples,
            classes: head.classes.clone(),
            loo_accuracy: head.quality.loo_accuracy,
        });
        let drop = history.len().saturating_sub(MAX_HISTORY);
        history.drain(..drop);
        let path = self.dir().join(HISTORY);
        let bytes = serde_json::to_vec(&history).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        })?;
        write_atomic(&path, &bytes)
    }

    /// The heads trained so far, oldest first (none when the file is missing or
    /// damaged: it is a record, not state).
    pub fn history(&self) -> Vec<HistoryEntry> {
        fs::read(self.dir().join(HISTORY))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// The saved head; `Ok(None)` when there is none (see [`read`]).
    pub fn load_head(&self) -> Result<Option<Head>, StoreError> {
        read(&self.dir().join(HEAD))
    }

    /// Delete the saved head (nothing to do when there is none).
    pub fn delete_head(&self) -> Result<(), StoreError> {
        remove_if_present(&self.dir().join(HEAD))?;
        sync_dir(self.dir())
    }
}
