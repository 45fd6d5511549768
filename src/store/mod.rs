//! The sample store of one classifier: its samples (thumbnail, embedding, label)
//! and its saved head, in one directory.
//!
//! ```text
//! <dir>/
//!   lock                  held (flock) while a daemon uses the directory
//!   samples.json          the manifest: every sample's id, label and origin
//!   samples/000042.jpg    the sample's thumbnail, to re-embed with a new backbone
//!   samples/000042.emb    its embedding, tagged with the backbone's identity
//!   head.json             the trained head, versioned
//! ```
//!
//! Every write goes through [`fsio::write_atomic`]: a power cut leaves the old
//! state or the new, never a torn file. A sample's files are written before the
//! manifest names them and deleted after it stops naming them; files no manifest
//! names (left by a crash between the two) are removed when the store is opened.
//! Labels never become file names.
//!
//! - [`bundle`]: one classifier in one file, to move it between boards;
//!   [`fsio`]: atomic writes, the lock, a full disk; [`embedding`]: the `.emb`
//!   format; [`head_file`]: the saved head; [`recent`]: the recent crops on disk;
//!   [`state_dir`]: the state directory with one store per classifier.

pub mod bundle;
pub mod embedding;
pub mod fsio;
pub mod head_file;
pub mod recent;
pub mod state_dir;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backbone::BackboneId;
use fsio::{io, is_disk_full, is_gone, lock_dir, sync_dir, write_atomic};

/// Version of the manifest's format.
const FORMAT: u32 = 1;
/// The manifest, the samples' folder, the saved head and the reserve: the files of
/// a store (also what edgehead 0.1 kept at the top of the state directory).
pub const MANIFEST: &str = "samples.json";
pub const SAMPLES: &str = "samples";
pub const HEAD: &str = "head.json";
/// Space held back for the manifest: released when a delete finds the disk full,
/// so deleting always works, and taken again once there is room.
pub const RESERVE: &str = "reserve";
/// The folder of the recent crops ([`recent`]).
pub const RECENT: &str = "recent";
const RESERVE_BYTES: usize = 2 << 20;
const WRITE_TEST: &str = ".write-test";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state directory {0} is in use by another edgehead")]
    Locked(PathBuf),
    #[error("{path} is damaged ({why}); it was left untouched: restore it from a backup or move it away to start empty")]
    Corrupt { path: PathBuf, why: String },
    #[error("{path} was written by a newer edgehead (format {found}, this one reads {FORMAT})")]
    TooNew { path: PathBuf, found: u32 },
}

/// Where a sample came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// An image sent over MQTT.
    Image,
    /// A camera frame labeled with `label_frame`.
    Frame,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SampleMeta {
    pub id: u64,
    pub label: String,
    /// Seconds since the Unix epoch.
    pub added_at: u64,
    pub origin: Origin,
    /// SHA-256 (hex) of the image bytes as they were sent (`add_sample`), so the
    /// same image added to the same class again is recognised. Absent for frames
    /// and for samples stored by older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Manifest {
    format: u32,
    next_id: u64,
    /// The last head version handed out; kept through `reset`, so head ids
    /// (`softmax-v4`) are never reused in one state directory.
    #[serde(default)]
    head_version: u64,
    samples: Vec<SampleMeta>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            format: FORMAT,
            next_id: 1,
            head_version: 0,
            samples: Vec::new(),
        }
    }
}

/// What opening the store found, for the start-up log.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct OpenReport {
    pub samples: usize,
    pub classes: usize,
    /// Samples whose thumbnail is missing: they are kept while their embedding is
    /// usable, but cannot be re-embedded for another backbone.
    pub missing_thumbnails: Vec<u64>,
    /// Files no sample names (a crash between writing them and the manifest), removed.
    pub removed_orphans: usize,
    /// Samples the manifest names whose files are both gone (a crash while they
    /// were being deleted): dropped from the manifest.
    pub dropped_missing: Vec<u64>,
    pub head_version: Option<u64>,
    /// The file system has no room left: the daemon starts, predicts and can
    /// delete, but cannot add samples until space is freed.
    pub disk_full: bool,
}

/// The open store. One per state directory (an OS lock enforces it).
pub struct Store {
    dir: PathBuf,
    manifest: Manifest,
    /// Holds the directory's lock for as long as the store lives.
    _lock: fs::File,
}

impl Store {
    /// Open (creating it if needed) the store in `dir`, check it and clean up after
    /// an interrupted write. Errors: the directory is locked by another process,
    /// the manifest is damaged or too new (left untouched), or a file operation
    /// failed. A full disk is not an error: [`OpenReport::disk_full`] says so.
    pub fn open(dir: &Path) -> Result<(Self, OpenReport), StoreError> {
        let samples_dir = dir.join(SAMPLES);
        fs::create_dir_all(&samples_dir).map_err(io(&samples_dir))?;
        let lock = lock_dir(dir)?;
        let mut store = Self {
            dir: dir.to_path_buf(),
            manifest: read_manifest(&dir.join(MANIFEST))?,
            _lock: lock,
        };
        remove_temporaries(dir)?;
        // Writable? Find out now rather than at the first sample. A full disk is
        // not a reason to stay down: predictions and deletes still work.
        let mut disk_full = false;
        match write_atomic(&dir.join(WRITE_TEST), b"ok") {
            Ok(()) => fs::remove_file(dir.join(WRITE_TEST)).map_err(io(dir))?,
            Err(e) if is_disk_full(&e) => disk_full = true,
            Err(e) => return Err(e),
        }
        let removed_orphans = store.remove_orphans()?;
        let dropped_missing = store.drop_missing();
        store.ensure_reserve();
        let missing_thumbnails = store
            .manifest
            .samples
            .iter()
            .filter(|s| !store.thumbnail_path(s.id).exists())
            .map(|s| s.id)
            .collect();
        let head_version = store.load_head().ok().flatten().map(|h| h.version);
        let report = OpenReport {
            samples: store.manifest.samples.len(),
            classes: store.classes().len(),
            missing_thumbnails,
            removed_orphans,
            dropped_missing,
            head_version,
            disk_full,
        };
        Ok((store, report))
    }

    /// Remove the files in `samples/` no sample names (a crash between writing
    /// them and the manifest); returns how many.
    fn remove_orphans(&self) -> Result<usize, StoreError> {
        let samples_dir = self.dir.join(SAMPLES);
        let known: std::collections::HashSet<u64> =
            self.manifest.samples.iter().map(|s| s.id).collect();
        let mut removed = 0;
        for entry in fs::read_dir(&samples_dir).map_err(io(&samples_dir))? {
            let path = entry.map_err(io(&samples_dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let id = name.split('.').next().and_then(|s| s.parse::<u64>().ok());
            let orphan = name.starts_with('.') || id.is_none_or(|id| !known.contains(&id));
            if orphan && path.is_file() {
                fs::remove_file(&path).map_err(io(&path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Drop the samples whose files are both gone; returns their ids.
    ///
    /// A delete on a full disk removes a sample's files before the manifest stops
    /// naming it; a crash in between leaves names without files. An interrupted
    /// delete leaves a few; more than half of all samples gone is something else
    /// (a restored manifest without its files): the names are kept and the log says
    /// so, rather than forget the classes.
    fn drop_missing(&mut self) -> Vec<u64> {
        let mut gone: Vec<u64> = self
            .manifest
            .samples
            .iter()
            .filter(|s| is_gone(self.thumbnail_path(s.id)) && is_gone(self.embedding_path(s.id)))
            .map(|s| s.id)
            .collect();
        if gone.len() > 1 && gone.len() * 2 > self.manifest.samples.len() {
            tracing::warn!(
                missing = gone.len(),
                samples = self.manifest.samples.len(),
                "most samples have no files in samples/; kept in the manifest: restore samples/ from the backup it came with"
            );
            gone.clear();
        }
        if !gone.is_empty() {
            let dropped = gone.clone();
            if let Err(e) = self.update(|m| m.samples.retain(|s| !dropped.contains(&s.id))) {
                // Not fatal: the entries are dropped in memory and on the next write.
                tracing::warn!(error = %e, "cannot rewrite the manifest without samples whose files are gone");
                self.manifest.samples.retain(|s| !dropped.contains(&s.id));
            }
        }
        gone
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn samples(&self) -> &[SampleMeta] {
        &self.manifest.samples
    }

    pub fn len(&self) -> usize {
        self.manifest.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.manifest.samples.is_empty()
    }

    /// Classes and their sample counts, in the order their first sample was added.
    pub fn classes(&self) -> Vec<(String, usize)> {
        class_counts(&self.manifest.samples)
    }

    fn thumbnail_path(&self, id: u64) -> PathBuf {
        self.dir.join(SAMPLES).join(format!("{id:06}.jpg"))
    }

    fn embedding_path(&self, id: u64) -> PathBuf {
        self.dir.join(SAMPLES).join(format!("{id:06}.emb"))
    }

    fn save_manifest(&self) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(&self.manifest).map_err(|e| StoreError::Corrupt {
            path: self.dir.join(MANIFEST),
            why: e.to_string(),
        })?;
        write_atomic(&self.dir.join(MANIFEST), &bytes)
    }

    /// Change the manifest; on a failed write the in-memory state is restored, so
    /// memory and disk never disagree.
    fn update(&mut self, change: impl FnOnce(&mut Manifest)) -> Result<(), StoreError> {
        let before = self.manifest.clone();
        change(&mut self.manifest);
        if let Err(e) = self.save_manifest() {
            self.manifest = before;
            return Err(e);
        }
        Ok(())
    }

    /// Add a sample: its thumbnail (JPEG) and embedding are written first, then the
    /// manifest that names them. On any failure (a full disk) nothing of it stays.
    /// `sha256` is the digest of the image as sent, for [`Store::find_image`].
    pub fn add(
        &mut self,
        label: &str,
        origin: Origin,
        thumbnail_jpeg: &[u8],
        backbone: &BackboneId,
        features: &[f32],
        sha256: Option<String>,
    ) -> Result<SampleMeta, StoreError> {
        let id = self.manifest.next_id;
        let meta = SampleMeta {
            id,
            label: label.to_string(),
            added_at: crate::time::now_secs(),
            origin,
            sha256,
        };
        let m = meta.clone();
        let result = write_atomic(&self.thumbnail_path(id), thumbnail_jpeg)
            .and_then(|()| self.save_embedding(id, backbone, features))
            .and_then(|()| {
                self.update(|man| {
                    man.next_id = id + 1;
                    man.samples.push(m);
                })
            });
        if let Err(e) = result {
            self.remove_files(&[id]);
            // The manifest may have reached the disk even though a later step (the
            // directory fsync) failed: never hand this id out again.
            self.manifest.next_id = self.manifest.next_id.max(id + 1);
            return Err(e);
        }
        Ok(meta)
    }

    /// The sample of class `label` whose image had this SHA-256, if any.
    pub fn find_image(&self, label: &str, sha256: &str) -> Option<&SampleMeta> {
        self.manifest
            .samples
            .iter()
            .find(|s| s.label == label && s.sha256.as_deref() == Some(sha256))
    }

    /// The next head version: above every version this directory has handed out,
    /// including heads deleted by `reset`. Recorded in the manifest when the head is
    /// saved ([`Store::save_head`]).
    pub fn next_head_version(&self) -> u64 {
        let saved = self.load_head().ok().flatten().map(|h| h.version);
        self.manifest.head_version.max(saved.unwrap_or(0)) + 1
    }

    /// Record head `version` as handed out (see [`Store::next_head_version`]).
    fn record_head_version(&mut self, version: u64) -> Result<(), StoreError> {
        if version > self.manifest.head_version {
            self.update(|m| m.head_version = version)?;
        }
        Ok(())
    }

    /// Remove samples' files; failures other than "not there" are logged (the files
    /// are orphans then, removed at the next open).
    fn remove_files(&self, ids: &[u64]) {
        for id in ids {
            for p in [self.thumbnail_path(*id), self.embedding_path(*id)] {
                match fs::remove_file(&p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        tracing::warn!(path = %p.display(), error = %e, "cannot remove a sample file")
                    }
                    _ => {}
                }
            }
        }
        let _ = sync_dir(&self.dir.join(SAMPLES));
    }

    /// Create the reserve file if it is missing and there is room for it.
    fn ensure_reserve(&self) {
        let p = self.dir.join(RESERVE);
        if fs::metadata(&p).is_ok_and(|m| m.len() == RESERVE_BYTES as u64) {
            return;
        }
        if let Err(e) = write_atomic(&p, &vec![0u8; RESERVE_BYTES]) {
            tracing::debug!(error = %e, "no room for the reserve file yet");
        }
    }

    /// Remove the samples for which `pick` is true; returns their ids.
    ///
    /// The smaller manifest is written first and the samples' files removed after
    /// it (leftovers are orphans, removed at the next open). On a full disk the
    /// reserve file is given up for the manifest; if there is still no room, the
    /// samples' files go first to make room (a crash then leaves names without
    /// files, which [`Store::open`] drops). Any other failure leaves the store as it
    /// was and is returned.
    fn remove_where(&mut self, pick: impl Fn(&SampleMeta) -> bool) -> Result<Vec<u64>, StoreError> {
        let ids: Vec<u64> = self
            .manifest
            .samples
            .iter()
            .filter(|s| pick(s))
            .map(|s| s.id)
            .collect();
        if ids.is_empty() {
            return Ok(ids);
        }
        let before = self.manifest.clone();
        self.manifest.samples.retain(|s| !pick(s));
        let mut saved = self.save_manifest();
        if saved.as_ref().is_err_and(is_disk_full) {
            let _ = fs::remove_file(self.dir.join(RESERVE));
            saved = self.save_manifest();
        }
        if saved.as_ref().is_err_and(is_disk_full) {
            self.remove_files(&ids);
            saved = self.save_manifest();
            if let Err(e) = saved {
                // The files are gone; the next start drops their names.
                tracing::warn!(error = %e, "samples deleted, but the manifest could not be rewritten; it is corrected at the next start");
                return Ok(ids);
            }
        }
        if let Err(e) = saved {
            self.manifest = before;
            return Err(e);
        }
        self.remove_files(&ids);
        self.ensure_reserve();
        Ok(ids)
    }

    /// Remove one sample; false when there is none with that id.
    pub fn remove(&mut self, id: u64) -> Result<bool, StoreError> {
        Ok(!self.remove_where(|s| s.id == id)?.is_empty())
    }

    /// Delete a class and its samples; returns how many samples went.
    pub fn delete_class(&mut self, label: &str) -> Result<usize, StoreError> {
        Ok(self.remove_where(|s| s.label == label)?.len())
    }

    /// Remove every sample and the head.
    pub fn reset(&mut self) -> Result<usize, StoreError> {
        let n = self.remove_where(|_| true)?.len();
        if let Err(e) = self.delete_head() {
            tracing::warn!(error = %e, "samples deleted, but the head file could not be removed; it is ignored without samples");
        }
        Ok(n)
    }

    /// Relabel every sample of `from` as `to` (a merge when `to` exists); one
    /// atomic manifest write.
    pub fn relabel(&mut self, from: &str, to: &str) -> Result<usize, StoreError> {
        let n = self
            .manifest
            .samples
            .iter()
            .filter(|s| s.label == from)
            .count();
        if n > 0 {
            self.update(|m| {
                m.samples
                    .iter_mut()
                    .filter(|s| s.label == from)
                    .for_each(|s| s.label = to.to_string())
            })?;
        }
        Ok(n)
    }

    /// Move sample `id` to class `to`; its old class, or `None` when there is no
    /// such sample. One atomic manifest write.
    pub fn relabel_sample(&mut self, id: u64, to: &str) -> Result<Option<String>, StoreError> {
        let Some(from) = self
            .manifest
            .samples
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.label.clone())
        else {
            return Ok(None);
        };
        self.update(|m| {
            m.samples
                .iter_mut()
                .filter(|s| s.id == id)
                .for_each(|s| s.label = to.to_string())
        })?;
        Ok(Some(from))
    }

    pub fn load_thumbnail(&self, id: u64) -> Result<Vec<u8>, StoreError> {
        let p = self.thumbnail_path(id);
        fs::read(&p).map_err(io(&p))
    }

    /// A sample's embedding, if one was stored for this backbone.
    pub fn load_embedding(&self, id: u64, backbone: &BackboneId) -> Option<Vec<f32>> {
        let bytes = fs::read(self.embedding_path(id)).ok()?;
        embedding::decode(&bytes, backbone)
    }

    /// Store sample `id`'s features computed by `backbone` (replacing another
    /// backbone's).
    pub fn save_embedding(
        &self,
        id: u64,
        backbone: &BackboneId,
        features: &[f32],
    ) -> Result<(), StoreError> {
        write_atomic(
            &self.embedding_path(id),
            &embedding::encode(backbone, features),
        )
    }
}

/// The classes of `samples` with their sample counts, in the order their first
/// sample comes.
fn class_counts<'a>(samples: impl IntoIterator<Item = &'a SampleMeta>) -> Vec<(String, usize)> {
    let mut order: Vec<String> = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in samples {
        let n = counts.entry(&s.label).or_insert(0);
        if *n == 0 {
            order.push(s.label.clone());
        }
        *n += 1;
    }
    order
        .into_iter()
        .map(|l| {
            let n = counts.get(l.as_str()).copied().unwrap_or(0);
            (l, n)
        })
        .collect()
}

/// The manifest at `path`; the default (empty) one when there is none. A damaged
/// manifest or one of a newer format is an error and is left untouched.
fn read_manifest(path: &Path) -> Result<Manifest, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::default()),
        Err(e) => return Err(io(path)(e)),
    };
    let corrupt = |why: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        why,
    };
    let probe: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let found = probe.get("format").and_then(|f| f.as_u64()).unwrap_or(0) as u32;
    if found > FORMAT {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
        });
    }
    let m: Manifest = serde_json::from_value(probe).map_err(|e| corrupt(e.to_string()))?;
    if let Some(bad) = m.samples.iter().find(|s| s.id >= m.next_id) {
        return Err(corrupt(format!(
            "sample id {} is not below next_id {}",
            bad.id, m.next_id
        )));
    }
    Ok(m)
}

/// Remove the temporary files of writes a crash interrupted at the top of `dir`
/// (`.samples.json.tmp`, `.head.json.tmp`, the write test): never valid data.
fn remove_temporaries(dir: &Path) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') && (name.ends_with(".tmp") || name == WRITE_TEST) && path.is_file()
        {
            fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
