//! `edgehead export` and `edgehead import`: bundles ([`crate::store::bundle`])
//! from and into the state directory.

use std::io::Write;

use anyhow::Context;

use super::args::{ExportArgs, ImportArgs};
use crate::app::bundles;
use crate::config::Settings;
use crate::names;
use crate::store::bundle::{self, Mode};
use crate::store::fsio;
use crate::store::state_dir::{self, StateDir};
use crate::store::StoreError;

/// Write the classifier's bundle to the file, atomically ([`fsio::write_atomic_with`]).
/// Reads the state directory without locking it.
pub fn export(settings: &Settings, a: &ExportArgs) -> anyhow::Result<()> {
    let root = settings.state_dir();
    let list = state_dir::read_runtime(root)?.effective(&settings.classifier_file);
    let def = match &a.classifier {
        None => list.first().map(|(c, _)| c.clone()),
        Some(n) => list
            .iter()
            .find(|(c, _)| names::same(&c.name, n))
            .map(|(c, _)| c.clone()),
    }
    .ok_or_else(|| {
        anyhow::anyhow!(
            "--classifier: no classifier {:?}; there are: {}",
            a.classifier.as_deref().unwrap_or(""),
            list.iter()
                .map(|(c, _)| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let dir = state_dir::classifier_dir(root, &def.name);
    let mut exported = None;
    fsio::write_atomic_with(&a.file, 0o666, |f| {
        let mut w = std::io::BufWriter::new(f);
        exported = Some(bundle::export(&dir, &def, &mut w).map_err(std::io::Error::other)?);
        w.flush()
    })
    .with_context(|| format!("cannot write {}", a.file.display()))?;
    let r = exported.context("nothing exported")?;
    let size = std::fs::metadata(&a.file).map(|m| m.len()).unwrap_or(0);
    println!(
        "exported classifier \"{}\": {} samples in {} classes{}, {} bytes, to {}",
        def.name,
        r.samples,
        r.classes,
        if r.head { " and its head" } else { "" },
        size,
        a.file.display()
    );
    if !r.missing_images.is_empty() {
        eprintln!(
            "edgehead: {} samples without their image were left out (ids {:?})",
            r.missing_images.len(),
            r.missing_images
        );
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// Import the bundle into the state directory of a stopped daemon.
pub fn import(settings: &Settings, a: &ImportArgs) -> anyhow::Result<()> {
    let mode = match (a.merge, a.replace) {
        (true, _) => Mode::Merge,
        (_, true) => Mode::Replace,
        _ => Mode::New,
    };
    let first = settings
        .classifier_file
        .first()
        .map_or(names::DEFAULT_CLASSIFIER, |c| c.name.as_str());
    let (state, _) = match StateDir::open(settings.state_dir(), first) {
        Ok(s) => s,
        Err(StoreError::Locked(p)) => anyhow::bail!(
            "an edgehead daemon is running on {}: import through its console, \
             POST /api/bundles, or MQTT's import_bundle (docs/bundles.md), or stop it first",
            p.display()
        ),
        Err(e) => return Err(e.into()),
    };
    let open = || {
        std::fs::File::open(&a.file)
            .map(std::io::BufReader::new)
            .with_context(|| format!("cannot read {}", a.file.display()))
    };
    let runtime = state.runtime_classifiers()?;
    let def = bundles::peek(open()?, settings).map_err(|e| anyhow::anyhow!(e.0))?;
    let target = bundles::target(settings, &runtime, def, a.as_name.as_deref(), mode)
        .map_err(|e| anyhow::anyhow!(e.0))?;
    let staged = bundles::install(&state, settings, &target, open()?, mode, None)
        .map_err(|e| anyhow::anyhow!(e.error().0))?;
    println!(
        "imported classifier \"{}\": {} samples added{}, {} in {} classes; it is trained at the next start",
        target.name,
        staged.added,
        if staged.duplicates > 0 {
            format!(" ({} already there, skipped)", staged.duplicates)
        } else {
            String::new()
        },
        staged.samples,
        staged.classes
    );
    Ok(())
}
