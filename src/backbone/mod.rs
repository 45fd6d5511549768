//! The frozen backbone: turns an RGB image into a feature vector.
//!
//! [`Embedder`] is the seam; [`TractEmbedder`] runs an ONNX model with tract.
//! Preprocessing (crop, resize, normalize) is the pure function in [`preprocess`].

pub mod preprocess;
mod tract;

use std::fmt;
use std::time::Duration;

use image::RgbImage;
use serde::{Deserialize, Serialize};

pub use self::tract::TractEmbedder;
pub use preprocess::Preprocess;

/// Names a backbone model exactly: embeddings are only comparable between equal ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BackboneId {
    /// The model file's stem, for people.
    pub name: String,
    /// SHA-256 of the model file, hex: the identity.
    pub sha256: String,
}

impl fmt::Display for BackboneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}",
            self.name,
            &self.sha256[..12.min(self.sha256.len())]
        )
    }
}

/// A feature vector and what it cost.
#[derive(Debug, Clone)]
pub struct Embedding {
    pub features: Vec<f32>,
    pub preprocess: Duration,
    pub inference: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("cannot read model {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot load model {path}: {message}")]
    Load { path: String, message: String },
    #[error("backbone inference failed: {0}")]
    Run(String),
    #[error("input has {got} values, the model takes {want}")]
    InputSize { got: usize, want: usize },
}

/// Turns images into feature vectors.
///
/// `embed` blocks the calling thread for one backbone run (tens of milliseconds on a
/// Pi): call it from a blocking thread, never from an async task. Implementations
/// serialize concurrent calls, so inference and learning share the CPU one run at a
/// time. Errors concern one image; the embedder stays usable.
pub trait Embedder: Send + Sync {
    fn id(&self) -> &BackboneId;
    /// Length of the feature vectors.
    fn dim(&self) -> usize;
    /// Preprocess `image` and run the backbone on it.
    fn embed(&self, image: &RgbImage) -> Result<Embedding, EmbedError>;
}

/// L2 norm of a vector.
pub fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// Cosine similarity; 0 when either vector is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (na, nb) = (norm(a), norm(b));
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (na * nb)
}
