//! Bundles: one classifier in one file, to take it from one board to another
//! (`edgehead export` / `edgehead import`, the console's download and upload).
//!
//! # Format, version 1
//! A gzip-compressed tar archive (POSIX ustar) of regular files only:
//!
//! ```text
//! bundle.json          first entry: the manifest (BundleManifest)
//! samples/<id>.jpg     every sample's stored JPEG (what a backbone embeds)
//! samples/<id>.emb     its embedding, when the exporting board had one
//!                      (the .emb format of [`super::embedding`], tagged with
//!                      the backbone's feature identity)
//! head.json            the exporting board's trained head, when it had one
//! ```
//!
//! `<id>` is the sample's id in decimal. `bundle.json` holds the format name
//! (`edgehead-bundle`), the version, the classifier's definition (region,
//! trigger, head and prediction settings, as in `[[classifiers]]`), the classes
//! with their sample counts, the backbone feature identity of the embeddings,
//! and per sample its id, label, time, origin and the SHA-256 of its JPEG.
//!
//! # Reading one is reading untrusted input
//! [`stage`] refuses, with a message and nothing changed: an unknown format or
//! version, entries that are not regular files (links, devices, GNU and PAX
//! extension entries: the archive is read raw, so none is read whole), names
//! that are not one of the above (`../`, absolute paths), a `bundle.json` above
//! [`manifest_limit`], an image that is not a JPEG, an entry larger than its limit
//! (checked on the header, before reading: a compressed bomb is refused before
//! it is inflated), a bundle that inflates beyond [`ImportLimits::max_bytes`],
//! duplicate ids or entries, a JPEG whose digest differs from the manifest's or
//! that does not decode under the decode rules, labels that break the label
//! rules, more samples or classes than the board takes, and truncated files (a
//! missing image, a cut gzip stream). Memory stays at one entry's size.
//!
//! The head of a bundle is never used: heads are trained by the board that
//! predicts, on its own backbone (an imported classifier is retrained at once).
//! Embeddings are used only when their feature identity is the local backbone's
//! (checked when the store is opened); otherwise the samples are re-embedded.

mod export;
mod stage;
#[cfg(test)]
mod tests;

pub use export::{export, Exported};
pub use stage::{keep_recent, peek, stage, ImportLimits, Mode, Staged};

use serde::{Deserialize, Serialize};

use super::Origin;

/// The `format` of `bundle.json`.
pub const FORMAT_NAME: &str = "edgehead-bundle";
/// The version this edgehead writes and reads.
pub const VERSION: u32 = 1;
/// The manifest's entry name (the first entry).
pub const MANIFEST_ENTRY: &str = "bundle.json";
/// The head's entry name.
pub const HEAD_ENTRY: &str = "head.json";
/// Largest `bundle.json` read, whatever the sample limit: see [`manifest_limit`].
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// Largest `.emb` entry read (1280 features take 5 KB).
pub const MAX_EMBEDDING_BYTES: u64 = 1 << 20;
/// Largest `head.json` read (it is skipped, but its size is still bounded).
pub const MAX_HEAD_BYTES: u64 = 64 << 20;

/// `bundle.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BundleManifest {
    /// [`FORMAT_NAME`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// Seconds since the Unix epoch when it was written.
    pub created_at: u64,
    /// The edgehead version that wrote it.
    pub edgehead: String,
    /// The classifier's definition as in `[[classifiers]]` (its name included).
    pub classifier: crate::config::ClassifierConfig,
    /// Feature identity (64 hex digits) of the embeddings in the bundle, if any.
    #[serde(default)]
    pub backbone: Option<String>,
    /// Every class with its number of samples.
    pub classes: Vec<BundleClass>,
    pub samples: Vec<BundleSample>,
    /// Whether the bundle carries the exporting board's head.
    #[serde(default)]
    pub head: bool,
}

/// A class of a bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BundleClass {
    pub name: String,
    pub samples: usize,
}

/// A sample of a bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BundleSample {
    pub id: u64,
    pub label: String,
    /// Seconds since the Unix epoch.
    pub added_at: u64,
    pub origin: Origin,
    /// SHA-256 (hex) of `samples/<id>.jpg`.
    pub sha256: String,
    /// Whether `samples/<id>.emb` is in the bundle.
    #[serde(default)]
    pub embedding: bool,
}

/// Why a bundle could not be written or read. Reading never changes anything
/// when it fails.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bundle itself is not acceptable (the message says why).
    #[error("bundle refused: {0}")]
    Refused(String),
    /// Reading the bundle or writing the state directory failed.
    #[error("{0}")]
    Io(String),
}

/// Largest `bundle.json` a board taking `max_samples` samples reads: 1 MiB for
/// the definition and the classes, and 1 KiB per sample (one takes about 300
/// bytes with a long label), at most [`MAX_MANIFEST_BYTES`]. Parsing stays
/// within a few times that.
pub fn manifest_limit(max_samples: usize) -> u64 {
    (1u64 << 20)
        .saturating_add((max_samples as u64).saturating_mul(1024))
        .min(MAX_MANIFEST_BYTES)
}

fn refused(msg: impl Into<String>) -> BundleError {
    BundleError::Refused(msg.into())
}

/// The entry name of sample `id`'s JPEG.
fn image_entry(id: u64) -> String {
    format!("samples/{id}.jpg")
}

/// The entry name of sample `id`'s embedding.
fn embedding_entry(id: u64) -> String {
    format!("samples/{id}.emb")
}

/// SHA-256 of `bytes`, hex.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(bytes))
}
