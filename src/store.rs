//! The sample store and the saved head, in the state directory.
//!
//! ```text
//! <state_dir>/
//!   lock                  held (flock) while a daemon uses the directory
//!   samples.json          the manifest: every sample's id, label and origin
//!   samples/000042.jpg    the sample's thumbnail, to re-embed with a new backbone
//!   samples/000042.emb    its embedding, tagged with the backbone's SHA-256
//!   head.json             the trained head, versioned
//! ```
//!
//! Every write goes to a temporary file that is fsynced and renamed over the old
//! one, then the directory is fsynced: a power cut leaves the old state or the new,
//! never a torn file. A sample's files are written before the manifest names them
//! and deleted after it stops naming them; files no manifest names (left by a crash
//! between the two) are removed when the store is opened. Labels never become file
//! names.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::backbone::BackboneId;
use crate::head::Head;

/// Version of the manifest's format.
const FORMAT: u32 = 1;
const MANIFEST: &str = "samples.json";
const SAMPLES: &str = "samples";
const HEAD: &str = "head.json";
const LOCK: &str = "lock";
const WRITE_TEST: &str = ".write-test";
/// Space held back for the manifest: released when a delete finds the disk full,
/// so deleting always works, and taken again once there is room.
const RESERVE: &str = "reserve";
const RESERVE_BYTES: usize = 2 << 20;
/// First bytes of an embedding file.
const EMB_MAGIC: &[u8; 8] = b"EHEMB001";

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

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `bytes` to `path` atomically: temp file, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let written = File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .map_err(io(&tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(io(path)));
    if let Err(e) = written {
        // A full disk or a failed rename must not leave the temporary file behind.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// Take the exclusive lock of `dir` (its file `lock`, created if needed), held
/// while the returned file is open. Errors: [`StoreError::Locked`] when another
/// process holds it.
pub(crate) fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let lock_path = dir.join(LOCK);
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::Locked(dir.to_path_buf())),
        Err(fs::TryLockError::Error(e)) => Err(io(&lock_path)(e)),
    }
}

/// Whether an error is "no space left on device" (ENOSPC) or "quota exceeded".
pub fn is_disk_full(e: &StoreError) -> bool {
    match e {
        StoreError::Io { source, .. } => {
            matches!(source.raw_os_error(), Some(28) | Some(122))
                || source.kind() == std::io::ErrorKind::StorageFull
        }
        _ => false,
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
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
    _lock: File,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Store {
    /// Open (creating it if needed) the store in `dir`, check it and clean up after
    /// an interrupted write.
    pub fn open(dir: &Path) -> Result<(Self, OpenReport), StoreError> {
        let samples_dir = dir.join(SAMPLES);
        fs::create_dir_all(&samples_dir).map_err(io(&samples_dir))?;
        let lock = lock_dir(dir)?;
        let manifest_path = dir.join(MANIFEST);
        let manifest = match fs::read(&manifest_path) {
            Ok(bytes) => {
                let probe: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        path: manifest_path.clone(),
                        why: e.to_string(),
                    })?;
                let found = probe.get("format").and_then(|f| f.as_u64()).unwrap_or(0) as u32;
                if found > FORMAT {
                    return Err(StoreError::TooNew {
                        path: manifest_path,
                        found,
                    });
                }
                let m: Manifest =
                    serde_json::from_value(probe).map_err(|e| StoreError::Corrupt {
                        path: manifest_path.clone(),
                        why: e.to_string(),
                    })?;
                if let Some(bad) = m.samples.iter().find(|s| s.id >= m.next_id) {
                    return Err(StoreError::Corrupt {
                        path: manifest_path,
                        why: format!("sample id {} is not below next_id {}", bad.id, m.next_id),
                    });
                }
                m
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest::default(),
            Err(e) => return Err(io(&manifest_path)(e)),
        };
        let mut store = Self {
            dir: dir.to_path_buf(),
            manifest,
            _lock: lock,
        };
        // Temporary files of writes a crash interrupted (`.samples.json.tmp`,
        // `.head.json.tmp`, the write test) are never valid data.
        for entry in fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.')
                && (name.ends_with(".tmp") || name == WRITE_TEST)
                && path.is_file()
            {
                fs::remove_file(&path).map_err(io(&path))?;
            }
        }
        // Writable? Find out now rather than at the first sample. A full disk is
        // not a reason to stay down: predictions and deletes still work.
        let mut disk_full = false;
        match write_atomic(&dir.join(WRITE_TEST), b"ok") {
            Ok(()) => fs::remove_file(dir.join(WRITE_TEST)).map_err(io(dir))?,
            Err(e) if is_disk_full(&e) => disk_full = true,
            Err(e) => return Err(e),
        }

        let known: std::collections::HashSet<u64> =
            store.manifest.samples.iter().map(|s| s.id).collect();
        let mut removed_orphans = 0;
        for entry in fs::read_dir(&samples_dir).map_err(io(&samples_dir))? {
            let path = entry.map_err(io(&samples_dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let id = name.split('.').next().and_then(|s| s.parse::<u64>().ok());
            let orphan = name.starts_with('.') || id.is_none_or(|id| !known.contains(&id));
            if orphan && path.is_file() {
                fs::remove_file(&path).map_err(io(&path))?;
                removed_orphans += 1;
            }
        }
        // A delete on a full disk removes a sample's files before the manifest stops
        // naming it; a crash in between leaves names without files, dropped here.
        let gone = |p: PathBuf| {
            fs::symlink_metadata(p).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        };
        let mut dropped_missing: Vec<u64> = store
            .manifest
            .samples
            .iter()
            .filter(|s| gone(store.thumbnail_path(s.id)) && gone(store.embedding_path(s.id)))
            .map(|s| s.id)
            .collect();
        // An interrupted delete leaves a few; more than half of all samples gone is
        // something else (a restored manifest without its files): keep the names and
        // say so, rather than forget the classes.
        if dropped_missing.len() > 1 && dropped_missing.len() * 2 > store.manifest.samples.len() {
            tracing::warn!(
                missing = dropped_missing.len(),
                samples = store.manifest.samples.len(),
                "most samples have no files in samples/; kept in the manifest: restore samples/ from the backup it came with"
            );
            dropped_missing.clear();
        }
        if !dropped_missing.is_empty() {
            let gone = dropped_missing.clone();
            let result = store.update(|m| m.samples.retain(|s| !gone.contains(&s.id)));
            if let Err(e) = result {
                // Not fatal: the entries are dropped in memory and on the next write.
                tracing::warn!(error = %e, "cannot rewrite the manifest without samples whose files are gone");
                store.manifest.samples.retain(|s| !gone.contains(&s.id));
            }
        }
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
        let mut order: Vec<String> = Vec::new();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &self.manifest.samples {
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
            added_at: now_secs(),
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

    pub fn load_thumbnail(&self, id: u64) -> Result<Vec<u8>, StoreError> {
        let p = self.thumbnail_path(id);
        fs::read(&p).map_err(io(&p))
    }

    /// A sample's embedding, if one was stored for this backbone.
    pub fn load_embedding(&self, id: u64, backbone: &BackboneId) -> Option<Vec<f32>> {
        let bytes = fs::read(self.embedding_path(id)).ok()?;
        let header = 8 + 64 + 4;
        if bytes.len() < header
            || &bytes[..8] != EMB_MAGIC
            || bytes[8..72] != *backbone.features.as_bytes()
        {
            return None;
        }
        let dim = u32::from_le_bytes(bytes[72..76].try_into().ok()?) as usize;
        if bytes.len() != header + dim * 4 {
            return None;
        }
        let v: Vec<f32> = bytes[header..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        v.iter().all(|x| x.is_finite()).then_some(v)
    }

    pub fn save_embedding(
        &self,
        id: u64,
        backbone: &BackboneId,
        features: &[f32],
    ) -> Result<(), StoreError> {
        let mut bytes = Vec::with_capacity(76 + features.len() * 4);
        bytes.extend_from_slice(EMB_MAGIC);
        let mut sha = [b'0'; 64];
        for (d, s) in sha.iter_mut().zip(backbone.features.as_bytes()) {
            *d = *s;
        }
        bytes.extend_from_slice(&sha);
        bytes.extend_from_slice(&(features.len() as u32).to_le_bytes());
        for f in features {
            bytes.extend_from_slice(&f.to_le_bytes());
        }
        write_atomic(&self.embedding_path(id), &bytes)
    }

    /// Save the head and record its version as handed out.
    pub fn save_head(&mut self, head: &Head) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(head).map_err(|e| StoreError::Corrupt {
            path: self.dir.join(HEAD),
            why: e.to_string(),
        })?;
        write_atomic(&self.dir.join(HEAD), &bytes)?;
        if head.version > self.manifest.head_version {
            let v = head.version;
            self.update(|m| m.head_version = v)?;
        }
        Ok(())
    }

    /// The saved head; `Ok(None)` when there is none. A damaged head file is an
    /// error (the head can be retrained from the samples).
    pub fn load_head(&self) -> Result<Option<Head>, StoreError> {
        let p = self.dir.join(HEAD);
        match fs::read(&p) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt {
                        path: p,
                        why: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&p)(e)),
        }
    }

    pub fn delete_head(&self) -> Result<(), StoreError> {
        let p = self.dir.join(HEAD);
        match fs::remove_file(&p) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&p)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bb(c: char) -> BackboneId {
        BackboneId::new("m".into(), c.to_string().repeat(64), "")
    }

    #[test]
    fn samples_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut s, report) = Store::open(dir.path()).expect("open");
            assert_eq!(report.samples, 0);
            s.add("cat", Origin::Image, b"jpeg1", &bb('a'), &[1.0, 2.0], None)
                .expect("add");
            s.add("dog", Origin::Frame, b"jpeg2", &bb('a'), &[3.0, 4.0], None)
                .expect("add");
            s.add("cat", Origin::Image, b"jpeg3", &bb('a'), &[5.0, 6.0], None)
                .expect("add");
        }
        let (s, report) = Store::open(dir.path()).expect("reopen");
        assert_eq!(report.samples, 3);
        assert_eq!(report.classes, 2);
        assert_eq!(
            s.classes(),
            vec![("cat".to_string(), 2), ("dog".to_string(), 1)]
        );
        assert_eq!(s.load_embedding(2, &bb('a')), Some(vec![3.0, 4.0]));
        assert_eq!(s.load_thumbnail(3).expect("thumb"), b"jpeg3");
        // Another backbone's features are never handed out.
        assert_eq!(s.load_embedding(2, &bb('b')), None);
    }

    #[test]
    fn a_second_daemon_cannot_open_the_same_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_s, _) = Store::open(dir.path()).expect("open");
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Locked(_))
        ));
    }

    #[test]
    fn relabel_merge_delete_and_reset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = Store::open(dir.path()).expect("open");
        for l in ["a", "b", "a", "c"] {
            s.add(l, Origin::Image, b"x", &bb('a'), &[0.0], None)
                .expect("add");
        }
        assert_eq!(s.relabel("a", "z").expect("rename"), 2);
        assert_eq!(s.relabel("z", "b").expect("merge"), 2);
        assert_eq!(
            s.classes(),
            vec![("b".to_string(), 3), ("c".to_string(), 1)]
        );
        assert_eq!(s.delete_class("c").expect("delete"), 1);
        assert!(!s.embedding_path(4).exists(), "files of deleted samples go");
        assert!(s.remove(1).expect("remove"));
        assert!(!s.remove(1).expect("remove again"));
        assert_eq!(s.reset().expect("reset"), 2);
        assert!(s.is_empty());
        // Ids are never reused.
        let m = s
            .add("d", Origin::Image, b"x", &bb('a'), &[0.0], None)
            .expect("add");
        assert_eq!(m.id, 5);
    }

    #[test]
    fn orphans_of_an_interrupted_write_are_removed_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut s, _) = Store::open(dir.path()).expect("open");
            s.add("a", Origin::Image, b"x", &bb('a'), &[0.0], None)
                .expect("add");
        }
        // As if the daemon died after writing sample 2's files but before the manifest.
        let samples = dir.path().join(SAMPLES);
        fs::write(samples.join("000002.jpg"), b"x").expect("write");
        fs::write(samples.join(".000003.emb.tmp"), b"x").expect("write");
        let (s, report) = Store::open(dir.path()).expect("reopen");
        assert_eq!(report.removed_orphans, 2);
        assert_eq!(s.len(), 1);
        assert!(samples.join("000001.jpg").exists());
    }

    #[test]
    fn a_damaged_manifest_is_reported_and_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(MANIFEST), b"{ not json").expect("write");
        let err = Store::open(dir.path()).err().expect("corrupt");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert_eq!(
            fs::read(dir.path().join(MANIFEST)).expect("read"),
            b"{ not json"
        );
        fs::write(
            dir.path().join(MANIFEST),
            br#"{"format": 9, "next_id": 1, "samples": []}"#,
        )
        .expect("write");
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::TooNew { found: 9, .. })
        ));
    }

    #[test]
    fn damaged_embedding_files_are_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = Store::open(dir.path()).expect("open");
        s.add("a", Origin::Image, b"x", &bb('a'), &[1.0, 2.0], None)
            .expect("add");
        let p = s.embedding_path(1);
        let mut bytes = fs::read(&p).expect("read");
        bytes.truncate(bytes.len() - 2);
        fs::write(&p, bytes).expect("write");
        assert_eq!(s.load_embedding(1, &bb('a')), None);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f.json");
        write_atomic(&p, b"one").expect("write");
        write_atomic(&p, b"two").expect("write");
        assert_eq!(fs::read(&p).expect("read"), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn leftover_temporary_files_at_the_top_are_removed_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Store::open(dir.path()).expect("open"));
        for name in [".samples.json.tmp", ".head.json.tmp", ".write-test"] {
            fs::write(dir.path().join(name), b"half").expect("write");
        }
        fs::write(dir.path().join("notes.txt"), b"user file").expect("write");
        let _s = Store::open(dir.path()).expect("reopen");
        for name in [".samples.json.tmp", ".head.json.tmp", ".write-test"] {
            assert!(!dir.path().join(name).exists(), "{name} left behind");
        }
        assert!(
            dir.path().join("notes.txt").exists(),
            "a file edgehead did not write was removed"
        );
    }

    #[test]
    fn head_versions_are_never_reused_even_after_a_reset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = Store::open(dir.path()).expect("open");
        assert_eq!(s.next_head_version(), 1);
        let mut h = crate::head::tests::tiny_head(&bb('a'));
        h.version = 4;
        s.save_head(&h).expect("save");
        assert_eq!(s.next_head_version(), 5);
        s.reset().expect("reset");
        assert_eq!(
            s.next_head_version(),
            5,
            "reset forgot the versions handed out"
        );
        drop(s);
        let (s, _) = Store::open(dir.path()).expect("reopen");
        assert_eq!(s.next_head_version(), 5);
    }

    #[test]
    fn names_left_without_files_by_an_interrupted_delete_are_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut s, _) = Store::open(dir.path()).expect("open");
            for l in ["a", "b"] {
                s.add(l, Origin::Image, b"x", &bb('a'), &[0.0], None)
                    .expect("add");
            }
            // As if killed after removing sample 1's files, before the manifest.
            s.remove_files(&[1]);
        }
        let (s, report) = Store::open(dir.path()).expect("reopen");
        assert_eq!(report.dropped_missing, vec![1]);
        assert_eq!(
            s.samples().iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![2]
        );
    }

    #[test]
    fn a_manifest_without_most_of_its_files_is_kept_not_emptied() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut s, _) = Store::open(dir.path()).expect("open");
            for l in ["a", "b", "c"] {
                s.add(l, Origin::Image, b"x", &bb('a'), &[0.0], None)
                    .expect("add");
            }
        }
        // samples/ lost (a manifest restored without it): keep every name.
        fs::remove_dir_all(dir.path().join(SAMPLES)).expect("rm");
        let (s, report) = Store::open(dir.path()).expect("reopen");
        assert!(report.dropped_missing.is_empty());
        assert_eq!(s.len(), 3);
        assert_eq!(report.missing_thumbnails, vec![1, 2, 3]);
    }

    #[test]
    fn a_failed_add_never_hands_its_id_out_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = Store::open(dir.path()).expect("open");
        s.add("a", Origin::Image, b"x", &bb('a'), &[0.0], None)
            .expect("add");
        // Make the next thumbnail write fail: a directory where the file goes.
        fs::create_dir(s.thumbnail_path(2)).expect("mkdir");
        assert!(s
            .add("b", Origin::Image, b"x", &bb('a'), &[0.0], None)
            .is_err());
        fs::remove_dir(s.thumbnail_path(2)).expect("rmdir");
        let m = s
            .add("b", Origin::Image, b"x", &bb('a'), &[0.0], None)
            .expect("add");
        assert_eq!(m.id, 3);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn the_same_image_is_found_in_its_class_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = Store::open(dir.path()).expect("open");
        s.add(
            "a",
            Origin::Image,
            b"x",
            &bb('a'),
            &[0.0],
            Some("f00d".into()),
        )
        .expect("add");
        assert_eq!(s.find_image("a", "f00d").map(|m| m.id), Some(1));
        assert!(s.find_image("b", "f00d").is_none());
        assert!(s.find_image("a", "beef").is_none());
    }

    /// A real full disk: a 4 MiB tmpfs (needs root, as CI runs).
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn mount() -> Option<Self> {
            let dir = tempfile::tempdir().expect("tempdir");
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            ok.then_some(Self(dir))
        }

        /// Fill the file system up with a file named `fill`.
        fn fill(&self) {
            let mut f = File::create(self.0.path().join("fill")).expect("create");
            let chunk = vec![1u8; 64 << 10];
            while f.write_all(&chunk).is_ok() {}
            let _ = f.sync_all();
            // Whatever single blocks are left.
            let mut g = File::create(self.0.path().join("fill2")).expect("create");
            while g.write_all(&[1u8; 512]).is_ok() {}
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
    }

    #[test]
    fn on_a_full_disk_adding_fails_cleanly_deleting_works_and_the_store_opens() {
        let Some(fs_) = Tmpfs::mount() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root and must be able to mount a tmpfs"
            );
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        };
        let state = fs_.0.path().join("state");
        let jpeg = vec![7u8; 20_000];
        {
            let (mut s, report) = Store::open(&state).expect("open");
            assert!(!report.disk_full);
            for l in ["a", "a", "b", "c"] {
                s.add(l, Origin::Image, &jpeg, &bb('a'), &[0.5; 1280], None)
                    .expect("add");
            }
            fs_.fill();
            let before = s.samples().to_vec();
            let err = s
                .add("a", Origin::Image, &jpeg, &bb('a'), &[0.5; 1280], None)
                .expect_err("the disk is full");
            assert!(is_disk_full(&err), "{err}");
            assert_eq!(s.samples(), &before[..], "a failed add changed the store");
            let names: Vec<String> = fs::read_dir(state.join(SAMPLES))
                .expect("ls")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(
                names.len(),
                8,
                "files of the failed add left behind: {names:?}"
            );
            assert!(s.remove(1).expect("remove on a full disk"));
            assert_eq!(s.delete_class("b").expect("delete on a full disk"), 1);
            assert_eq!(s.len(), 2);
        }
        // Full again, and the daemon's store still opens, saying so.
        fs_.fill();
        let (s, report) = Store::open(&state).expect("open on a full disk");
        assert!(report.disk_full);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.samples().iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![2, 4]
        );
    }
}
