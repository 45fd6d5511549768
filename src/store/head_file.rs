//! The saved head of a store (`head.json`): written atomically, read back at
//! start so predictions resume at once, deleted by `reset`.

use std::fs;
use std::path::Path;

use super::fsio::{io, remove_if_present, sync_dir, write_atomic};
use super::{Store, StoreError, HEAD};
use crate::head::Head;

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
    /// Save the head and record its version as handed out.
    pub fn save_head(&mut self, head: &Head) -> Result<(), StoreError> {
        let path = self.dir().join(HEAD);
        let bytes = serde_json::to_vec(head).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            why: e.to_string(),
        })?;
        write_atomic(&path, &bytes)?;
        self.record_head_version(head.version)
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
