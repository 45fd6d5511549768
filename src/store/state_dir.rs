//! The state directory with one sample store per classifier:
//!
//! ```text
//! <state_dir>/lock                    held while the daemon runs (one daemon per directory)
//! <state_dir>/classifiers.json        classifiers created or changed at run time
//! <state_dir>/installation-id         this installation's random id (the MQTT client id's end)
//! <state_dir>/classifiers/<name>/     a store ([`super::Store`]: samples.json, samples/, head.json)
//! ```
//!
//! edgehead 0.1 kept one store at the top of the state directory. At the first
//! start of this version that store is moved, whole, into the first configured
//! classifier's directory (the built-in `default` when none is configured): every
//! sample, embedding and the head keep their ids and bytes. The move is a series of
//! renames inside one file system into `classifiers.migrating/<name>/`, then one
//! rename of that directory to `classifiers/`, each followed by a directory fsync:
//! a crash at any point leaves every file either at its old or its new place, and
//! the next start finishes the move.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fsio::{io, lock_dir, sync_dir, write_atomic};
use super::{StoreError, HEAD, MANIFEST, RESERVE, SAMPLES};
use crate::config::runtime::RuntimeClassifiers;

/// Where the classifiers' stores live, below the state directory.
pub const CLASSIFIERS: &str = "classifiers";
const MIGRATING: &str = "classifiers.migrating";
/// What edgehead 0.1 kept at the top of the state directory, moved as a whole.
const SINGLE_STORE: &[&str] = &[MANIFEST, SAMPLES, HEAD, RESERVE];

/// The locked state directory.
#[derive(Debug)]
pub struct StateDir {
    pub root: PathBuf,
    _lock: fs::File,
}

/// What [`StateDir::open`] did to an old layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The classifier the single store became.
    pub into: String,
    /// The entries moved (file and directory names).
    pub moved: Vec<String>,
}

impl StateDir {
    /// Create (if needed) and lock `root`, and migrate a single-store layout into
    /// `classifiers/<first>`. Errors: the directory is in use, or a file operation
    /// failed (nothing is lost: see the module documentation).
    pub fn open(root: &Path, first: &str) -> Result<(Self, Option<Migrated>), StoreError> {
        fs::create_dir_all(root).map_err(io(root))?;
        // The same lock file a store of edgehead 0.1 at the top held.
        let lock = lock_dir(root)?;
        let migrated = migrate_single_store(root, first)?;
        recover_journal(root)?;
        remove_staging(&root.join(CLASSIFIERS));
        Ok((
            Self {
                root: root.to_path_buf(),
                _lock: lock,
            },
            migrated,
        ))
    }

    /// This installation's id: 16 lowercase hex digits (64 bits from the
    /// operating system's random generator), made at the first start and kept in
    /// [`INSTALLATION_ID`], so that it survives restarts and upgrades and differs
    /// between boards that share one configuration. A missing or damaged file is
    /// replaced. Errors: the file cannot be written (a full disk).
    pub fn installation_id(&self) -> Result<String, StoreError> {
        use std::io::Read;
        let path = self.root.join(INSTALLATION_ID);
        let mut text = String::new();
        let read = fs::File::open(&path).and_then(|f| f.take(64).read_to_string(&mut text));
        let kept = text.trim();
        if read.is_ok() && kept.len() == 16 && kept.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(kept.to_ascii_lowercase());
        }
        let id = random_hex()
            .map_err(|e| io(&path)(std::io::Error::other(format!("no random bytes: {e}"))))?;
        write_atomic(&path, format!("{id}\n").as_bytes())?;
        Ok(id)
    }

    /// The store directory of classifier `name`.
    pub fn classifier_dir(&self, name: &str) -> PathBuf {
        classifier_dir(&self.root, name)
    }
}

/// The store directory of classifier `name` in the state directory `root`.
pub fn classifier_dir(root: &Path, name: &str) -> PathBuf {
    root.join(CLASSIFIERS).join(name)
}

/// Where classifier `name`'s head is saved, without opening (or locking) the
/// state directory: for reading it while a daemon runs (`edgehead predict`). In a
/// state directory of edgehead 0.1 the daemon has not migrated yet, the first
/// classifier's head is still at the top.
pub fn head_path(root: &Path, name: &str, first: &str) -> PathBuf {
    let path = classifier_dir(root, name).join(HEAD);
    let old = root.join(HEAD);
    if name == first && !path.exists() && old.exists() {
        old
    } else {
        path
    }
}

/// The run-time classifier definitions ([`RuntimeClassifiers`]), beside `classifiers/`.
pub const RUNTIME: &str = "classifiers.json";
/// The file holding this installation's id ([`StateDir::installation_id`]).
pub const INSTALLATION_ID: &str = "installation-id";
/// The journal of a rename or delete of a classifier's store in progress.
const JOURNAL: &str = "classifiers.journal";
/// Prefix of a deleted classifier's directory before it is removed.
const DELETED: &str = ".deleted-";
/// Prefix of an imported store being staged.
const IMPORTING: &str = ".import-";

/// A change of a classifier's store and of the run-time definitions that goes
/// together, written down before it starts so that a crash in the middle is
/// finished at the next start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Journal {
    /// The store directory renamed (`from`, `to`), or deleted (`to` null).
    from: String,
    to: Option<String>,
    /// A store already at `to` is deleted first (an import that replaces it).
    #[serde(default)]
    replace: bool,
    /// The run-time definitions once done.
    runtime: RuntimeClassifiers,
}

/// The run-time classifier definitions saved in state directory `root` (read
/// without taking the lock: `print-config` beside a running daemon); the default
/// (none) when there are none. A damaged file is an error.
pub fn read_runtime(root: &Path) -> Result<RuntimeClassifiers, StoreError> {
    let path = root.join(RUNTIME);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path,
            why: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RuntimeClassifiers::default()),
        Err(e) => Err(io(&path)(e)),
    }
}

impl StateDir {
    /// The run-time classifier definitions; the default (none) when there are none.
    /// A damaged file is an error and is left untouched.
    pub fn runtime_classifiers(&self) -> Result<RuntimeClassifiers, StoreError> {
        read_runtime(&self.root)
    }

    /// Save the run-time classifier definitions (atomically).
    pub fn save_runtime_classifiers(&self, r: &RuntimeClassifiers) -> Result<(), StoreError> {
        write_atomic(
            &self.root.join(RUNTIME),
            &to_json(&self.root.join(RUNTIME), r)?,
        )
    }

    /// Rename classifier `from`'s store to `to` and save `runtime`, crash-safe: a
    /// journal is written first and the next [`StateDir::open`] finishes what a
    /// crash interrupted.
    pub fn rename_classifier(
        &self,
        from: &str,
        to: &str,
        runtime: &RuntimeClassifiers,
    ) -> Result<(), StoreError> {
        self.journaled(Journal {
            from: from.into(),
            to: Some(to.into()),
            replace: false,
            runtime: runtime.clone(),
        })
    }

    /// Delete classifier `name`'s store and save `runtime`, crash-safe (see
    /// [`StateDir::rename_classifier`]).
    pub fn delete_classifier(
        &self,
        name: &str,
        runtime: &RuntimeClassifiers,
    ) -> Result<(), StoreError> {
        self.journaled(Journal {
            from: name.into(),
            to: None,
            replace: false,
            runtime: runtime.clone(),
        })
    }

    /// A new, empty staging directory for an imported store
    /// (`classifiers/.import-<random>`); what a crash leaves of one is removed
    /// at the next [`StateDir::open`].
    pub fn staging_dir(&self) -> Result<PathBuf, StoreError> {
        let hex = random_hex().map_err(|e| StoreError::Io {
            path: self.root.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let dir = self
            .root
            .join(CLASSIFIERS)
            .join(format!("{IMPORTING}{hex}"));
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(dir)
    }

    /// Move the staged store `staging` (from [`StateDir::staging_dir`]) into
    /// place as classifier `name`'s, replacing its store when `replace` (a
    /// merge or replace of that classifier), and save `runtime`: crash-safe
    /// like [`StateDir::rename_classifier`].
    pub fn install_classifier(
        &self,
        staging: &Path,
        name: &str,
        runtime: &RuntimeClassifiers,
        replace: bool,
    ) -> Result<(), StoreError> {
        let from = staging
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.journaled(Journal {
            from,
            to: Some(name.into()),
            replace,
            runtime: runtime.clone(),
        })
    }

    /// Whether a journaled change is waiting to be finished (it failed after
    /// its journal was written; the next [`StateDir::open`] finishes it).
    pub fn journal_pending(&self) -> bool {
        self.root.join(JOURNAL).exists()
    }

    fn journaled(&self, j: Journal) -> Result<(), StoreError> {
        // A move onto a directory already there (the store of a classifier
        // since removed from the configuration file) would fail, and fail again
        // at every start: refuse it before anything is written.
        if let (Some(to), false) = (&j.to, j.replace) {
            let target = self.classifier_dir(to);
            if fs::symlink_metadata(&target).is_ok() {
                return Err(StoreError::Io {
                    path: target,
                    source: std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "a store no classifier uses is in the way: move it away or delete it first",
                    ),
                });
            }
        }
        let path = self.root.join(JOURNAL);
        write_atomic(&path, &to_json(&path, &j)?)?;
        finish_journal(&self.root, &j)?;
        fs::remove_file(&path).map_err(io(&path))?;
        sync_dir(&self.root)
    }
}

/// 16 hex digits from the operating system's random generator.
pub fn random_hex() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn to_json(path: &Path, v: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec_pretty(v).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

/// Carry out `j` (again): move or remove the store, then save the definitions.
/// Each step can be repeated.
fn finish_journal(root: &Path, j: &Journal) -> Result<(), StoreError> {
    let dirs = root.join(CLASSIFIERS);
    let from = dirs.join(&j.from);
    if fs::symlink_metadata(&from).is_ok() {
        if let (true, Some(to)) = (j.replace, &j.to) {
            let old = dirs.join(to);
            if fs::symlink_metadata(&old).is_ok() {
                let aside = dirs.join(format!("{DELETED}{to}"));
                if fs::symlink_metadata(&aside).is_ok() {
                    fs::remove_dir_all(&aside).map_err(io(&aside))?;
                }
                fs::rename(&old, &aside).map_err(io(&aside))?;
            }
        }
        let target = match &j.to {
            Some(to) => dirs.join(to),
            None => dirs.join(format!("{DELETED}{}", j.from)),
        };
        if fs::symlink_metadata(&target).is_ok() && j.to.is_none() {
            fs::remove_dir_all(&target).map_err(io(&target))?;
        }
        fs::rename(&from, &target).map_err(io(&target))?;
        sync_dir(&dirs)?;
    }
    write_atomic(
        &root.join(RUNTIME),
        &to_json(&root.join(RUNTIME), &j.runtime)?,
    )?;
    remove_deleted(&dirs);
    Ok(())
}

/// Remove the directories of deleted classifiers (best effort: what is left is
/// removed at the next start).
fn remove_deleted(dirs: &Path) {
    let Ok(entries) = fs::read_dir(dirs) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        if e.file_name().to_string_lossy().starts_with(DELETED) {
            if let Err(err) = fs::remove_dir_all(e.path()) {
                tracing::warn!(dir = %e.path().display(), error = %err, "cannot remove a deleted classifier's directory");
            }
        }
    }
}

/// Remove what interrupted imports left being staged (the journal, recovered
/// before, has moved a finished one into place).
fn remove_staging(dirs: &Path) {
    let Ok(entries) = fs::read_dir(dirs) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        if e.file_name().to_string_lossy().starts_with(IMPORTING) {
            let p = e.path();
            let removed = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            if let Err(err) = removed {
                tracing::warn!(path = %p.display(), error = %err, "cannot remove an interrupted import");
            }
        }
    }
}

/// Finish a rename or delete a crash interrupted (the journal is there).
fn recover_journal(root: &Path) -> Result<(), StoreError> {
    let path = root.join(JOURNAL);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            remove_deleted(&root.join(CLASSIFIERS));
            return Ok(());
        }
        Err(e) => return Err(io(&path)(e)),
    };
    let j: Journal = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        path: path.clone(),
        why: e.to_string(),
    })?;
    tracing::info!(from = %j.from, to = ?j.to, "finishing a change of a classifier's store that was interrupted");
    finish_journal(root, &j)?;
    fs::remove_file(&path).map_err(io(&path))?;
    sync_dir(root)
}

/// Move edgehead 0.1's single store into `classifiers/<into>/`; `None` when there
/// is none to move. Resumes a move a crash interrupted.
pub fn migrate_single_store(root: &Path, into: &str) -> Result<Option<Migrated>, StoreError> {
    let migrating = root.join(MIGRATING);
    let resuming = migrating.is_dir();
    let done = root.join(CLASSIFIERS);
    // A store is a manifest or a samples directory; a stray file named `samples`
    // is not one.
    let is_store = root.join(MANIFEST).is_file() || root.join(SAMPLES).is_dir();
    if !resuming && !is_store {
        return Ok(None);
    }
    if !resuming && done.exists() {
        tracing::warn!(
            dir = %root.display(),
            "the state directory has both a single store (edgehead 0.1) and classifiers/; the single store is left alone"
        );
        return Ok(None);
    }
    // The target is the one classifier directory inside the migrating folder
    // (when resuming, whatever name the first attempt chose).
    let target = if resuming {
        match fs::read_dir(&migrating)
            .map_err(io(&migrating))?
            .filter_map(Result::ok)
            .find(|e| e.path().is_dir())
        {
            Some(e) => e.path(),
            None => migrating.join(into),
        }
    } else {
        migrating.join(into)
    };
    fs::create_dir_all(&target).map_err(io(&target))?;
    sync_dir(&migrating)?;
    sync_dir(root)?;
    let mut moved = Vec::new();
    for name in SINGLE_STORE {
        let from = root.join(name);
        if fs::symlink_metadata(&from).is_err() {
            continue;
        }
        let to = target.join(name);
        fs::rename(&from, &to).map_err(io(&to))?;
        sync_dir(&target)?;
        sync_dir(root)?;
        moved.push(name.to_string());
    }
    // Temporary files of the old store's interrupted writes are not data.
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") && e.path().is_file() {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    fs::rename(&migrating, &done).map_err(io(&done))?;
    sync_dir(root)?;
    let into = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| into.to_string());
    Ok(Some(Migrated { into, moved }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old_layout(dir: &Path) {
        fs::create_dir_all(dir.join("samples")).unwrap();
        fs::write(dir.join("samples.json"), b"{\"format\":1}").unwrap();
        fs::write(dir.join("samples/1.jpg"), b"jpeg").unwrap();
        fs::write(dir.join("head.json"), b"{}").unwrap();
        fs::write(dir.join(".samples.json.tmp"), b"half").unwrap();
    }

    #[test]
    fn the_installation_id_is_made_once_kept_and_a_damaged_one_replaced() {
        let t = tempfile::tempdir().unwrap();
        let (state, _) = StateDir::open(t.path(), "default").unwrap();
        let id = state.installation_id().unwrap();
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(state.installation_id().unwrap(), id, "kept");
        let other = tempfile::tempdir().unwrap();
        let (elsewhere, _) = StateDir::open(other.path(), "default").unwrap();
        assert_ne!(
            elsewhere.installation_id().unwrap(),
            id,
            "random per installation"
        );
        for damaged in [&b"xyz"[..], b"", &[b'a'; 4096][..], b"0123456789abcdeg\n"] {
            fs::write(t.path().join(INSTALLATION_ID), damaged).unwrap();
            let fresh = state.installation_id().unwrap();
            assert_eq!(fresh.len(), 16);
            assert_eq!(state.installation_id().unwrap(), fresh);
        }
    }

    #[test]
    fn a_single_store_moves_into_the_first_classifier_whole() {
        let t = tempfile::tempdir().unwrap();
        old_layout(t.path());
        let (state, m) = StateDir::open(t.path(), "door").unwrap();
        let m = m.unwrap();
        assert_eq!(m.into, "door");
        assert_eq!(m.moved, vec!["samples.json", "samples", "head.json"]);
        let d = state.classifier_dir("door");
        assert_eq!(fs::read(d.join("samples/1.jpg")).unwrap(), b"jpeg");
        assert_eq!(fs::read(d.join("samples.json")).unwrap(), b"{\"format\":1}");
        assert!(!t.path().join("samples.json").exists());
        assert!(!t.path().join(".samples.json.tmp").exists());
        assert!(!t.path().join(MIGRATING).exists());
        drop(state);
        // The second start finds nothing to move.
        let (_, again) = StateDir::open(t.path(), "door").unwrap();
        assert_eq!(again, None);
    }

    #[test]
    fn an_interrupted_move_is_finished_at_the_next_start() {
        let t = tempfile::tempdir().unwrap();
        old_layout(t.path());
        // As if the first attempt stopped after moving samples.json.
        fs::create_dir_all(t.path().join(MIGRATING).join("default")).unwrap();
        fs::rename(
            t.path().join("samples.json"),
            t.path().join(MIGRATING).join("default/samples.json"),
        )
        .unwrap();
        // A different first classifier now: the move goes on where it started.
        let (state, m) = StateDir::open(t.path(), "other").unwrap();
        assert_eq!(m.unwrap().into, "default");
        let d = state.classifier_dir("default");
        assert!(
            d.join("samples.json").exists()
                && d.join("samples/1.jpg").exists()
                && d.join("head.json").exists()
        );
    }

    #[test]
    fn a_second_daemon_cannot_open_the_same_state_directory() {
        let t = tempfile::tempdir().unwrap();
        let _first = StateDir::open(t.path(), "a").unwrap();
        assert!(matches!(
            StateDir::open(t.path(), "a"),
            Err(StoreError::Locked(_))
        ));
    }

    #[test]
    fn a_directory_in_the_way_refuses_a_rename_or_import_and_the_next_start_works() {
        // A classifier removed from the configuration file leaves its store:
        // renaming another classifier (or importing a new one) to that name
        // must be refused before anything is journaled.
        let t = tempfile::tempdir().unwrap();
        let runtime = RuntimeClassifiers::default();
        {
            let (state, _) = StateDir::open(t.path(), "a").unwrap();
            fs::create_dir_all(state.classifier_dir("a").join(SAMPLES)).unwrap();
            let stray = state.classifier_dir("garage");
            fs::create_dir_all(stray.join(SAMPLES)).unwrap();
            fs::write(stray.join(MANIFEST), b"{}").unwrap();
            let refused = state.rename_classifier("a", "garage", &runtime);
            assert!(refused.is_err(), "renamed over another store");
            let staging = state.staging_dir().unwrap();
            let refused = state.install_classifier(&staging, "garage", &runtime, false);
            assert!(refused.is_err(), "imported over another store");
            assert!(!t.path().join(JOURNAL).exists(), "a journal was left");
            assert!(state.classifier_dir("a").is_dir());
            assert_eq!(fs::read(stray.join(MANIFEST)).unwrap(), b"{}");
        }
        // Nothing left to finish: the next start opens the directory.
        StateDir::open(t.path(), "a").expect("the next start");
    }
}
