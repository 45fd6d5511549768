//! Writing a bundle from a store directory (see the [format](super)).

use std::fs;
use std::io::Write;
use std::path::Path;

use flate2::write::GzEncoder;

use super::{
    embedding_entry, image_entry, sha256_hex, BundleClass, BundleError, BundleManifest,
    BundleSample, FORMAT_NAME, HEAD_ENTRY, MANIFEST_ENTRY, VERSION,
};
use crate::config::ClassifierConfig;
use crate::store::{class_counts, read_manifest, HEAD, MANIFEST, SAMPLES};

/// What [`export`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub samples: usize,
    pub classes: usize,
    /// Samples left out because their JPEG is missing (a store of edgehead 0.1
    /// that lost it): they could not be re-embedded elsewhere.
    pub missing_images: Vec<u64>,
    pub head: bool,
}

/// Write the classifier `def` with the store in `dir` as a bundle to `out`.
///
/// Reads without taking the store's lock, so it works beside a running daemon:
/// every file is replaced atomically there, and a sample deleted while the
/// bundle is written is left out. Errors: the manifest cannot be read (damaged,
/// too new), or reading a file or writing `out` failed.
pub fn export(
    dir: &Path,
    def: &ClassifierConfig,
    out: impl Write,
) -> Result<Exported, BundleError> {
    let io = |what: &str, e: &dyn std::fmt::Display| BundleError::Io(format!("{what}: {e}"));
    let manifest =
        read_manifest(&dir.join(MANIFEST)).map_err(|e| BundleError::Io(e.to_string()))?;
    let samples_dir = dir.join(SAMPLES);
    // Read the images first: the manifest written first in the archive names
    // only what is there.
    let mut kept = Vec::new();
    let mut missing_images = Vec::new();
    let mut backbone = None;
    for s in &manifest.samples {
        let jpg = samples_dir.join(format!("{:06}.jpg", s.id));
        let image = match fs::read(&jpg) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing_images.push(s.id);
                continue;
            }
            Err(e) => return Err(io(&jpg.display().to_string(), &e)),
        };
        let emb = fs::read(samples_dir.join(format!("{:06}.emb", s.id))).ok();
        if backbone.is_none() {
            backbone = emb
                .as_deref()
                .and_then(crate::store::embedding::identity)
                .map(str::to_string);
        }
        kept.push((s.clone(), image, emb));
    }
    let head = fs::read(dir.join(HEAD)).ok();
    let classes: Vec<BundleClass> = class_counts(kept.iter().map(|(s, _, _)| s))
        .into_iter()
        .map(|(name, samples)| BundleClass { name, samples })
        .collect();
    let bundle = BundleManifest {
        format: FORMAT_NAME.into(),
        version: VERSION,
        created_at: crate::time::now_secs(),
        edgehead: env!("CARGO_PKG_VERSION").into(),
        classifier: def.clone(),
        backbone,
        classes,
        samples: kept
            .iter()
            .map(|(s, image, emb)| BundleSample {
                id: s.id,
                label: s.label.clone(),
                added_at: s.added_at,
                origin: s.origin,
                sha256: sha256_hex(image),
                embedding: emb.is_some(),
            })
            .collect(),
        head: head.is_some(),
    };
    let json = serde_json::to_vec_pretty(&bundle).map_err(|e| io("the manifest", &e))?;
    let mut tar = tar::Builder::new(GzEncoder::new(out, flate2::Compression::default()));
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(bundle.created_at);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, bytes)
            .map_err(|e| io("writing the bundle", &e))
    };
    add(MANIFEST_ENTRY, &json)?;
    for (s, image, emb) in &kept {
        add(&image_entry(s.id), image)?;
        if let Some(emb) = emb {
            add(&embedding_entry(s.id), emb)?;
        }
    }
    if let Some(head) = &head {
        add(HEAD_ENTRY, head)?;
    }
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .and_then(|mut w| w.flush())
        .map_err(|e| io("writing the bundle", &e))?;
    Ok(Exported {
        samples: kept.len(),
        classes: bundle.classes.len(),
        missing_images,
        head: head.is_some(),
    })
}
