//! Reading a bundle into a staging directory: a complete store, built beside
//! the live ones and checked entry by entry, that [`crate::store::state_dir`]
//! then moves into place in one journaled step (or removes).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Read;
use std::path::{Component, Path};

use flate2::read::GzDecoder;

use super::{
    embedding_entry, image_entry, manifest_limit, refused, sha256_hex, BundleError, BundleManifest,
    FORMAT_NAME, HEAD_ENTRY, MANIFEST_ENTRY, MAX_EMBEDDING_BYTES, MAX_HEAD_BYTES, VERSION,
};
use crate::config::ClassifierConfig;
use crate::imaging::decode::{decode_image, ImageLimits};
use crate::names;
use crate::store::fsio::{sync_dir, write_atomic};
use crate::store::{
    class_counts, read_manifest, Manifest, SampleMeta, HEAD, MANIFEST, RECENT, SAMPLES,
};

/// Largest sample id a bundle may carry (ids are kept when a classifier is new).
const MAX_ID: u64 = 1 << 48;

/// How an imported classifier meets one of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The name must be free (the default).
    #[default]
    New,
    /// Keep both sides' samples; a bundle sample whose JPEG digest the local
    /// store already has is skipped. The local definition stays.
    Merge,
    /// The bundle's classifier replaces the local one whole.
    Replace,
}

/// What the board takes from a bundle.
#[derive(Debug, Clone)]
pub struct ImportLimits {
    /// Largest size the bundle may inflate to (every entry with its header).
    pub max_bytes: u64,
    /// Largest JPEG entry (`learn.max_image_bytes`).
    pub max_image_bytes: u64,
    /// Most samples of the classifier once imported (`learn.max_samples`).
    pub max_samples: usize,
    /// Most classes of the classifier once imported (`learn.max_classes`).
    pub max_classes: usize,
    /// The decode rules every image must pass.
    pub image: ImageLimits,
}

/// A bundle read into a staging directory.
#[derive(Debug, Clone)]
pub struct Staged {
    /// The classifier's definition as the bundle gives it.
    pub def: ClassifierConfig,
    /// Samples in the staged store.
    pub samples: usize,
    /// Samples the bundle added (all but the duplicates when merging).
    pub added: usize,
    /// Bundle samples skipped because the local store had their image.
    pub duplicates: usize,
    /// Classes in the staged store.
    pub classes: usize,
    /// The feature identity of the bundle's embeddings, if any.
    pub backbone: Option<String>,
}

/// Read the bundle from `reader` into the new directory `staging` (a store:
/// `samples.json`, `samples/`). `existing` is the local store of the same name,
/// if there is one: with [`Mode::Merge`] its samples are kept (its files are
/// hard-linked, or copied, never changed); with [`Mode::Replace`] only its head
/// version counter is, so head ids are never reused. On an error the caller
/// removes `staging`; nothing else was touched. Errors: see the [module](super)
/// documentation.
pub fn stage(
    reader: impl Read,
    limits: &ImportLimits,
    staging: &Path,
    existing: Option<&Path>,
    mode: Mode,
) -> Result<Staged, BundleError> {
    let merge_with = existing.filter(|_| mode == Mode::Merge);
    let io = |what: &Path, e: &dyn std::fmt::Display| {
        BundleError::Io(format!("{}: {e}", what.display()))
    };
    let samples_dir = staging.join(SAMPLES);
    fs::create_dir_all(&samples_dir).map_err(|e| io(&samples_dir, &e))?;
    let mut counted = Counted {
        inner: GzDecoder::new(reader),
        left: limits.max_bytes,
    };
    let mut archive = tar::Archive::new(&mut counted);
    // Raw: extension entries (GNU long names, PAX headers) come as entries of
    // their own and are refused, instead of being read whole by the archive.
    let entries = archive
        .entries()
        .map_err(|e| refused(format!("not a bundle (a gzip-compressed tar): {e}")))?
        .raw(true);
    let mut plan: Option<Plan> = None;
    let mut seen: HashSet<String> = HashSet::new();
    for entry in entries {
        let mut entry = entry.map_err(|e| unreadable(&e))?;
        let name = entry_name(&entry)?;
        if !seen.insert(name.clone()) {
            return Err(refused(format!("the entry {name} is there twice")));
        }
        let size = entry.size();
        let Some(plan) = plan.as_mut() else {
            if name != MANIFEST_ENTRY {
                return Err(refused(format!(
                    "the first entry is {name}, not {MANIFEST_ENTRY}"
                )));
            }
            let json = read_entry(&mut entry, size, manifest_limit(limits.max_samples), &name)?;
            plan = Some(Plan::new(&json, limits, existing, merge_with.is_some())?);
            continue;
        };
        if name == HEAD_ENTRY {
            // Never used (see the module documentation): read past it.
            if size > MAX_HEAD_BYTES {
                return Err(refused(format!(
                    "{name} is {size} bytes, more than the limit of {MAX_HEAD_BYTES}"
                )));
            }
            std::io::copy(&mut entry, &mut std::io::sink()).map_err(|e| unreadable(&e))?;
            continue;
        }
        let (id, kind) =
            sample_entry(&name).ok_or_else(|| refused(format!("unexpected entry {name}")))?;
        let Some(&local) = plan.ids.get(&id) else {
            return Err(refused(format!(
                "{name} belongs to no sample of bundle.json"
            )));
        };
        match kind {
            Kind::Image => {
                let bytes = read_entry(&mut entry, size, limits.max_image_bytes, &name)?;
                plan.image(id, local, &bytes, &samples_dir, limits)?;
            }
            Kind::Embedding => {
                let bytes = read_entry(&mut entry, size, MAX_EMBEDDING_BYTES, &name)?;
                if crate::store::embedding::identity(&bytes).is_none() {
                    return Err(refused(format!("{name} is not an embedding file")));
                }
                if let Some(local) = local {
                    let path = samples_dir.join(format!("{local:06}.emb"));
                    write_atomic(&path, &bytes).map_err(|e| io(&path, &e))?;
                }
            }
        }
    }
    let plan = plan.ok_or_else(|| refused("the bundle is empty"))?;
    // Read to the end: a cut gzip stream fails its length and CRC check there.
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(|e| unreadable(&e))?;
    plan.finish(staging, merge_with, limits)
}

/// The classifier definition of the bundle from `reader`, reading its first
/// entry only (`bundle.json`, checked as [`stage`] checks it).
pub fn peek(reader: impl Read, limits: &ImportLimits) -> Result<ClassifierConfig, BundleError> {
    let counted = Counted {
        inner: GzDecoder::new(reader),
        left: limits.max_bytes,
    };
    let mut archive = tar::Archive::new(counted);
    let mut entries = archive
        .entries()
        .map_err(|e| refused(format!("not a bundle (a gzip-compressed tar): {e}")))?
        .raw(true);
    let mut entry = entries
        .next()
        .ok_or_else(|| refused("the bundle is empty"))?
        .map_err(|e| unreadable(&e))?;
    let name = entry_name(&entry)?;
    if name != MANIFEST_ENTRY {
        return Err(refused(format!(
            "the first entry is {name}, not {MANIFEST_ENTRY}"
        )));
    }
    let size = entry.size();
    let json = read_entry(&mut entry, size, manifest_limit(limits.max_samples), &name)?;
    Ok(Plan::new(&json, limits, None, false)?.def)
}

/// What the manifest says the bundle holds, and what became of it so far.
struct Plan {
    bundle: BundleManifest,
    def: ClassifierConfig,
    /// Bundle id → the id in the staged store (`None`: a duplicate, skipped).
    ids: BTreeMap<u64, Option<u64>>,
    /// Bundle ids whose image was read.
    images: HashSet<u64>,
    /// The staged manifest: the local samples (when merging) and the new ones.
    manifest: Manifest,
    /// Digests of the local samples' images (when merging).
    local_digests: HashSet<String>,
    duplicates: usize,
}

impl Plan {
    /// Check `json` (the manifest) against the rules and `limits`, and plan the
    /// ids (after `existing`'s when merging).
    fn new(
        json: &[u8],
        limits: &ImportLimits,
        existing: Option<&Path>,
        merge: bool,
    ) -> Result<Self, BundleError> {
        // The format and version first (the other fields are skipped, not
        // kept), then the manifest of this version, typed.
        #[derive(serde::Deserialize)]
        struct Probe {
            format: Option<String>,
            version: Option<u64>,
        }
        let probe: Probe = serde_json::from_slice(json)
            .map_err(|e| refused(format!("bundle.json is not JSON: {e}")))?;
        if probe.format.as_deref() != Some(FORMAT_NAME) {
            return Err(refused(format!(
                "bundle.json's format is not {FORMAT_NAME}"
            )));
        }
        match probe.version {
            Some(v) if v == u64::from(VERSION) => {}
            v => {
                return Err(refused(format!(
                    "bundle format version {} (this edgehead reads version {VERSION})",
                    v.map_or("missing".to_string(), |v| v.to_string())
                )))
            }
        }
        let mut bundle: BundleManifest =
            serde_json::from_slice(json).map_err(|e| refused(format!("bundle.json: {e}")))?;
        let def = bundle.classifier.clone();
        if bundle.samples.len() > limits.max_samples {
            return Err(refused(format!(
                "{} samples, more than learn.max_samples ({})",
                bundle.samples.len(),
                limits.max_samples
            )));
        }
        let local = match existing {
            Some(dir) => {
                read_manifest(&dir.join(MANIFEST)).map_err(|e| BundleError::Io(e.to_string()))?
            }
            None => Manifest::default(),
        };
        let (manifest, local_digests) = match existing {
            Some(dir) if merge => {
                let digests = local_digests(dir, &local.samples);
                (local, digests)
            }
            // A new store, keeping the old one's head versions (never reused).
            _ => (
                Manifest {
                    head_version: local.head_version,
                    ..Manifest::default()
                },
                HashSet::new(),
            ),
        };
        let mut ids = BTreeMap::new();
        let mut next_id = manifest.next_id;
        // Classes as teaching finds them: a label names the class it matches
        // without regard to case or normalization form (`Cat` joins `cat`).
        let mut labels: Vec<String> = class_counts(&manifest.samples)
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        for s in &mut bundle.samples {
            let label = names::normalize_label(&s.label)
                .map_err(|e| refused(format!("sample {}: {}", s.id, e.0)))?;
            if label != s.label {
                return Err(refused(format!(
                    "sample {}'s label is not in its normal form (\"{label}\")",
                    s.id
                )));
            }
            match names::existing(&s.label, labels.iter().map(String::as_str)) {
                Some(class) => s.label = class.to_string(),
                None => {
                    names::check_new_label(&s.label)
                        .map_err(|e| refused(format!("sample {}: {}", s.id, e.0)))?;
                    labels.push(s.label.clone());
                }
            }
            if s.sha256.len() != 64 || !s.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(refused(format!("sample {}'s sha256 is not a digest", s.id)));
            }
            if s.id == 0 || s.id > MAX_ID {
                return Err(refused(format!("sample id {} is out of range", s.id)));
            }
            // A new classifier keeps the bundle's ids; a merge numbers on.
            let local = if merge {
                next_id += 1;
                next_id - 1
            } else {
                s.id
            };
            if ids.insert(s.id, Some(local)).is_some() {
                return Err(refused(format!("sample id {} is there twice", s.id)));
            }
        }
        if labels.len() > limits.max_classes {
            return Err(refused(format!(
                "{} classes, more than learn.max_classes ({})",
                labels.len(),
                limits.max_classes
            )));
        }
        Ok(Self {
            bundle,
            def,
            ids,
            images: HashSet::new(),
            manifest,
            local_digests,
            duplicates: 0,
        })
    }

    /// Check sample `id`'s JPEG and stage it as `local` (or skip a duplicate).
    fn image(
        &mut self,
        id: u64,
        local: Option<u64>,
        bytes: &[u8],
        samples_dir: &Path,
        limits: &ImportLimits,
    ) -> Result<(), BundleError> {
        let Some(s) = self.bundle.samples.iter().find(|s| s.id == id) else {
            return Err(refused(format!("sample {id} is not in bundle.json")));
        };
        let digest = sha256_hex(bytes);
        if digest != s.sha256.to_ascii_lowercase() {
            return Err(refused(format!(
                "sample {id}'s image does not match its digest (damaged)"
            )));
        }
        // Samples are stored as JPEG: another format is refused, not renamed.
        if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            return Err(refused(format!("sample {id}'s image is not a JPEG")));
        }
        decode_image(bytes, &limits.image)
            .map_err(|e| refused(format!("sample {id}'s image: {e}")))?;
        self.images.insert(id);
        let Some(local) = local else {
            return Ok(());
        };
        if !self.local_digests.insert(digest.clone()) {
            // The local store (or an earlier sample of the bundle) has it.
            self.duplicates += 1;
            self.ids.insert(id, None);
            let stale = samples_dir.join(format!("{local:06}.emb"));
            let _ = fs::remove_file(stale);
            return Ok(());
        }
        let path = samples_dir.join(format!("{local:06}.jpg"));
        write_atomic(&path, bytes).map_err(|e| BundleError::Io(e.to_string()))?;
        self.manifest.samples.push(SampleMeta {
            id: local,
            label: s.label.clone(),
            added_at: s.added_at,
            origin: s.origin,
            sha256: Some(digest),
        });
        Ok(())
    }

    /// Check that every sample came, hard-link the local store's files in (when
    /// merging), and write the staged manifest.
    fn finish(
        mut self,
        staging: &Path,
        existing: Option<&Path>,
        limits: &ImportLimits,
    ) -> Result<Staged, BundleError> {
        if let Some(s) = self
            .bundle
            .samples
            .iter()
            .find(|s| !self.images.contains(&s.id))
        {
            return Err(refused(format!(
                "sample {}'s image ({}) is missing: a truncated bundle?",
                s.id,
                image_entry(s.id)
            )));
        }
        let added = self.bundle.samples.len() - self.duplicates;
        if let Some(dir) = existing {
            link_store(dir, staging, &self.manifest)?;
        }
        self.manifest.next_id = self
            .manifest
            .samples
            .iter()
            .map(|s| s.id + 1)
            .max()
            .unwrap_or(1)
            .max(self.manifest.next_id);
        let total = self.manifest.samples.len();
        if total > limits.max_samples {
            return Err(refused(format!(
                "{total} samples once merged, more than learn.max_samples ({})",
                limits.max_samples
            )));
        }
        // Samples whose embedding came without their image (skipped duplicates)
        // have no file left; embeddings without a sample are removed when the
        // store is opened.
        let bytes = serde_json::to_vec(&self.manifest)
            .map_err(|e| BundleError::Io(format!("the staged manifest: {e}")))?;
        write_atomic(&staging.join(MANIFEST), &bytes)
            .and_then(|()| sync_dir(&staging.join(SAMPLES)))
            .and_then(|()| sync_dir(staging))
            .map_err(|e| BundleError::Io(e.to_string()))?;
        Ok(Staged {
            classes: class_counts(&self.manifest.samples).len(),
            def: self.def,
            samples: total,
            added,
            duplicates: self.duplicates,
            backbone: self.bundle.backbone,
        })
    }
}

/// Digests of the images of `samples` in the store `dir` (their recorded
/// `sha256` of the image as sent, and of the stored JPEG).
fn local_digests(dir: &Path, samples: &[SampleMeta]) -> HashSet<String> {
    let mut out = HashSet::new();
    for s in samples {
        if let Some(d) = &s.sha256 {
            out.insert(d.to_ascii_lowercase());
        }
        if let Ok(bytes) = fs::read(dir.join(SAMPLES).join(format!("{:06}.jpg", s.id))) {
            out.insert(sha256_hex(&bytes));
        }
    }
    out
}

/// Hard-link (or copy, across file systems) the local store's sample files and
/// head into `staging`: the staged store holds both sides.
fn link_store(dir: &Path, staging: &Path, manifest: &Manifest) -> Result<(), BundleError> {
    let (src, dst) = (dir.join(SAMPLES), staging.join(SAMPLES));
    for s in &manifest.samples {
        for ext in ["jpg", "emb"] {
            let file = format!("{:06}.{ext}", s.id);
            if !dst.join(&file).exists() {
                link_file(&src.join(&file), &dst.join(&file))?;
            }
        }
    }
    link_file(&dir.join(HEAD), &staging.join(HEAD))
}

/// Hard-link (or copy) the recent crops of the store in `dir` into the staged
/// store: a merge or replace keeps them (they are the camera's, not the
/// bundle's). Called while the recent list's lock is held, so that no crop is
/// added or removed meanwhile.
pub fn keep_recent(dir: &Path, staging: &Path) -> Result<(), BundleError> {
    let (src, dst) = (dir.join(RECENT), staging.join(RECENT));
    let Ok(entries) = fs::read_dir(&src) else {
        return Ok(());
    };
    fs::create_dir_all(&dst).map_err(|e| BundleError::Io(format!("{}: {e}", dst.display())))?;
    for e in entries.filter_map(Result::ok) {
        if e.file_type().is_ok_and(|t| t.is_file()) {
            link_file(&e.path(), &dst.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// `from` at `to` too (a hard link, or a copy across file systems); nothing
/// when `from` is not there.
fn link_file(from: &Path, to: &Path) -> Result<(), BundleError> {
    if !from.exists() {
        return Ok(());
    }
    fs::hard_link(from, to)
        .or_else(|_| fs::copy(from, to).map(|_| ()))
        .map_err(|e| BundleError::Io(format!("{}: {e}", to.display())))
}

enum Kind {
    Image,
    Embedding,
}

/// `samples/<id>.jpg` or `samples/<id>.emb`.
fn sample_entry(name: &str) -> Option<(u64, Kind)> {
    let rest = name.strip_prefix("samples/")?;
    let (id, ext) = rest.split_once('.')?;
    if id.is_empty()
        || !id.bytes().all(|b| b.is_ascii_digit())
        || (id.len() > 1 && id.starts_with('0'))
    {
        return None;
    }
    let id: u64 = id.parse().ok()?;
    let kind = match ext {
        "jpg" => Kind::Image,
        "emb" => Kind::Embedding,
        _ => return None,
    };
    // The canonical name only (no `samples/7.jpg` for another spelling).
    let canonical = match kind {
        Kind::Image => image_entry(id),
        Kind::Embedding => embedding_entry(id),
    };
    (canonical == name).then_some((id, kind))
}

/// The name of a regular-file entry made of plain components; anything else
/// (links, devices, directories, `..`, absolute paths) is refused.
fn entry_name<R: Read>(entry: &tar::Entry<R>) -> Result<String, BundleError> {
    let kind = entry.header().entry_type();
    let path = entry
        .path()
        .map_err(|e| refused(format!("an entry's name is not readable: {e}")))?;
    let shown = path.display().to_string();
    if !kind.is_file() {
        return Err(refused(format!(
            "{shown} is not a regular file (links and special files are refused)"
        )));
    }
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(refused(format!("{shown} points outside the bundle")));
    }
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| refused("an entry's name is not UTF-8"))
}

/// The whole entry, refused before reading when its header says more than `max`.
fn read_entry(
    entry: &mut impl Read,
    size: u64,
    max: u64,
    name: &str,
) -> Result<Vec<u8>, BundleError> {
    if size > max {
        return Err(refused(format!(
            "{name} is {size} bytes, more than the limit of {max}"
        )));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    entry
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(&e))?;
    if bytes.len() as u64 != size {
        return Err(refused(format!("{name} is cut short: a truncated bundle?")));
    }
    Ok(bytes)
}

fn unreadable(e: &std::io::Error) -> BundleError {
    refused(format!(
        "the bundle cannot be read (damaged or truncated): {e}"
    ))
}

/// The inflated stream, failing once more than `left` bytes came out of it.
struct Counted<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // One byte more than allowed: refuse, or an exact fit ends here.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(
                    "the bundle inflates beyond its limit (learn.max_bundle_bytes)",
                )),
            };
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}
