//! The frozen backbone: turns an RGB image into a feature vector.
//!
//! [`Embedder`] is the seam; [`TractEmbedder`] runs an ONNX model with tract.
//! Preprocessing (crop, resize, normalize) is the pure function in [`preprocess`].

pub mod augment;
pub mod preprocess;
mod tract;

use std::fmt;
use std::time::Duration;

use image::RgbImage;
use serde::{Deserialize, Serialize};

pub use self::tract::TractEmbedder;
pub use preprocess::Preprocess;

/// Names the features a backbone produces exactly: embeddings (and heads trained
/// on them) are only comparable between equal ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BackboneId {
    /// The model file's stem, for people.
    pub name: String,
    /// SHA-256 of the model file, hex.
    pub sha256: String,
    /// SHA-256 (hex) over the model's digest and every setting that changes the
    /// features: input size, layout, mean, std, resize policy, crop fraction, output
    /// and model transforms. The identity stored with every embedding; empty in
    /// heads saved before it existed (they never match, so they are retrained).
    #[serde(default)]
    pub features: String,
}

impl BackboneId {
    /// The id of `model_sha256` run with the given feature-changing settings
    /// (`settings` is a canonical text of them, see [`Preprocess::identity`]).
    pub fn new(name: String, model_sha256: String, settings: &str) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(model_sha256.as_bytes());
        h.update(b"\n");
        h.update(settings.as_bytes());
        let features = format!("{:x}", h.finalize());
        Self {
            name,
            sha256: model_sha256,
            features,
        }
    }
}

impl fmt::Display for BackboneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}",
            self.name,
            &self.features[..12.min(self.features.len())]
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

/// Stand-in backbones for unit tests.
#[cfg(test)]
pub(crate) mod fake {
    use std::time::Duration;

    use image::RgbImage;

    use super::{BackboneId, EmbedError, Embedder, Embedding};

    /// A backbone whose features are the image's mean colour (R, G, B): red and
    /// blue scenes are told apart, the rest of the program is real.
    pub struct MeanColour(pub BackboneId);

    impl MeanColour {
        pub fn new() -> Self {
            Self(BackboneId::new("mean".into(), "0".into(), ""))
        }
    }

    impl Embedder for MeanColour {
        fn id(&self) -> &BackboneId {
            &self.0
        }
        fn dim(&self) -> usize {
            3
        }
        fn embed(&self, image: &RgbImage) -> Result<Embedding, EmbedError> {
            let n = (image.width() * image.height()).max(1) as f32;
            let mut f = vec![0.0f32; 3];
            for p in image.pixels() {
                for (acc, v) in f.iter_mut().zip(p.0) {
                    *acc += v as f32 / n;
                }
            }
            Ok(Embedding {
                features: f,
                preprocess: Duration::ZERO,
                inference: Duration::ZERO,
            })
        }
    }
}
