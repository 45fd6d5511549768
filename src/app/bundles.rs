//! Bundles in and out of a state directory ([`crate::store::bundle`]), shared by
//! `edgehead export`/`import` (beside or instead of a running daemon) and the
//! manager (the console's download and upload, MQTT's `import_bundle`).
//!
//! An import is: read `bundle.json` ([`peek`]) to learn the classifier's name
//! and definition; decide the target ([`target`]: the name, `--as`, and what
//! happens to a classifier of the same name); stage the whole bundle into a
//! store beside the live ones, checking every entry; then move it into place
//! and save the definitions in one journaled step. Any refusal or crash before
//! that step leaves the state directory as it was.

use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::classifier::recent::Recent;
use crate::config::runtime::RuntimeClassifiers;
use crate::config::{ClassifierConfig, ClassifierSpec, Settings};
use crate::imaging::decode::ImageLimits;
use crate::learn::ops::{bad, RequestError};
use crate::names;
use crate::store::bundle::{self, BundleError, ImportLimits, Mode, Staged};
use crate::store::state_dir::StateDir;

/// Where an import goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// The classifier's name on this board.
    pub name: String,
    /// Whether a classifier of that name exists (merged into or replaced).
    pub exists: bool,
    /// The run-time definitions once imported.
    pub runtime: RuntimeClassifiers,
    /// The definition the classifier runs with once imported.
    pub def: ClassifierConfig,
}

/// The board's limits for bundles, from `[learn]`.
pub fn limits(settings: &Settings) -> ImportLimits {
    let l = &settings.learn;
    ImportLimits {
        max_bytes: l.max_bundle_mib << 20,
        max_image_bytes: l.max_image_bytes as u64,
        max_samples: l.max_samples,
        max_classes: l.max_classes,
        image: ImageLimits::from_config(l),
    }
}

/// The classifier definition a bundle carries (its first entry only).
pub fn peek(reader: impl Read, settings: &Settings) -> Result<ClassifierConfig, RequestError> {
    bundle::peek(reader, &limits(settings)).map_err(|e| bad(e.to_string()))
}

/// Decide where the bundle's classifier `def` goes: named `as_name` or its
/// own name; a classifier of that name must not exist for [`Mode::New`], is
/// merged into (its definition stays) or replaced. The new list is checked as
/// the configuration is.
pub fn target(
    settings: &Settings,
    runtime: &RuntimeClassifiers,
    mut def: ClassifierConfig,
    as_name: Option<&str>,
    mode: Mode,
) -> Result<Target, RequestError> {
    let name = names::normalize_classifier_name(as_name.unwrap_or(&def.name))?;
    let file = &settings.classifier_file;
    let existing = runtime
        .effective(file)
        .into_iter()
        .map(|(c, _)| c)
        .find(|c| names::same(&c.name, &name));
    let mut runtime = runtime.clone();
    let exists = existing.is_some();
    let def = match (existing, mode) {
        (Some(c), Mode::New) => {
            return Err(bad(format!(
                "there is a classifier \"{}\" already: merge into it or replace it",
                c.name
            )))
        }
        (Some(c), Mode::Merge) => c,
        (Some(c), Mode::Replace) => {
            def.name = c.name.clone();
            runtime
                .replace(file, &c.name, def.clone())
                .map_err(|e| bad(e.0))?;
            def
        }
        (None, _) => {
            def.name = name;
            runtime.create(file, def.clone()).map_err(|e| bad(e.0))?;
            def
        }
    };
    check(settings, &runtime, &def.name)?;
    Ok(Target {
        name: def.name.clone(),
        exists,
        runtime,
        def,
    })
}

/// Why an import did not happen.
#[derive(Debug)]
pub enum Failed {
    /// Refused or failed before anything changed.
    Refused(RequestError),
    /// The move into place was journaled but could not be finished now (a
    /// full disk, an I/O error): the next start of edgehead finishes it.
    Unfinished(RequestError),
}

impl Failed {
    /// The answer's error.
    pub fn error(self) -> RequestError {
        match self {
            Failed::Refused(e) | Failed::Unfinished(e) => e,
        }
    }
}

/// Stage the bundle from `reader` for `target` and move it into place (see the
/// module documentation). The classifier's learner must not be running;
/// `recent` is its list of recent crops (a running daemon's, whose pipeline
/// may still add crops): its lock is held while its crops are taken over and
/// the store moves, so that no crop lands in a directory being moved.
pub fn install(
    state: &StateDir,
    settings: &Settings,
    target: &Target,
    reader: impl Read,
    mode: Mode,
    recent: Option<&Mutex<Recent>>,
) -> Result<Staged, Failed> {
    let staging = state
        .staging_dir()
        .map_err(|e| Failed::Refused(bad(format!("cannot stage the import: {e}"))))?;
    let existing = target.exists.then(|| state.classifier_dir(&target.name));
    let staged = bundle::stage(
        reader,
        &limits(settings),
        &staging,
        existing.as_deref(),
        mode,
    )
    .map_err(|e| match e {
        BundleError::Refused(why) => bad(format!("bundle refused: {why}")),
        BundleError::Io(why) => bad(format!("cannot import: {why}")),
    });
    let staged = match staged {
        Ok(s) => s,
        Err(e) => {
            remove(&staging);
            return Err(Failed::Refused(e));
        }
    };
    let _crops = recent.map(|r| r.lock().unwrap_or_else(|p| p.into_inner()));
    let moved = match &existing {
        Some(dir) => {
            bundle::keep_recent(dir, &staging).map_err(|e| bad(format!("cannot import: {e}")))
        }
        None => Ok(()),
    }
    .and_then(|()| {
        state
            .install_classifier(&staging, &target.name, &target.runtime, target.exists)
            .map_err(|e| bad(format!("cannot import: {e}")))
    });
    match moved {
        Ok(()) => Ok(staged),
        // Journaled: the staged store is what the next start moves into place.
        Err(e) if state.journal_pending() => Err(Failed::Unfinished(bad(format!(
            "{}; it is finished when edgehead starts again",
            e.0
        )))),
        Err(e) => {
            remove(&staging);
            Err(Failed::Refused(e))
        }
    }
}

fn remove(dir: &Path) {
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a refused import");
        }
    }
}

/// Check `runtime`'s effective list as the configuration is; the spec of the
/// classifier named `name` in it. Problems of that classifier are named by
/// their field alone.
pub fn check(
    settings: &Settings,
    runtime: &RuntimeClassifiers,
    name: &str,
) -> Result<Arc<ClassifierSpec>, RequestError> {
    let list: Vec<ClassifierConfig> = runtime
        .effective(&settings.classifier_file)
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    let at = list.iter().position(|c| c.name == name);
    match settings.resolve(&list) {
        Ok(specs) => at
            .and_then(|i| specs.get(i).cloned())
            .ok_or_else(|| bad(format!("there is no classifier \"{name}\""))),
        Err(e) => {
            let own = at.map(|i| format!("classifiers[{i}]."));
            let text: Vec<String> = e
                .problems
                .iter()
                .map(
                    |p| match own.as_deref().and_then(|o| p.key.strip_prefix(o)) {
                        Some(field) => format!("{field}: {}", p.message),
                        None => format!("{}: {}", p.key, p.message),
                    },
                )
                .collect();
            Err(bad(text.join("; ")))
        }
    }
}
