//! Teach-time augmentation: extra views of a sample image, to embed as extra support
//! samples of its class. Deterministic (no random draws): the same image always
//! gives the same views.
//!
//! The views follow what helps linear probes on frozen features with few samples
//! (the "standard augmentation" of few-shot transfer: horizontal flip, crops, colour
//! jitter; e.g. Chen et al., "A Closer Look at Few-shot Classification", ICLR 2019).
//! Only `edgehead eval --augment` uses them: measured on the shared data sets they did
//! not win on both (docs/measurements.md, "Accuracy of the heads"), so the daemon does not spend
//! the extra backbone runs at teach time.

use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

/// One kind of extra view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Augment {
    /// The mirror image (left ↔ right). Wrong where a flip changes the meaning
    /// (a sign's arrow, a door's hinge side): turn it off there.
    Flip,
    /// Two crops of 85% of each side, at the upper left and the lower right corner.
    Crop,
    /// One view with brighter light (×1.15), less contrast (×0.85) and less
    /// saturation (×0.8): a cloudy day against a sunny one.
    Jitter,
}

impl Augment {
    /// Every kind, in the order views are made.
    pub const ALL: [Augment; 3] = [Augment::Flip, Augment::Crop, Augment::Jitter];

    /// How many views this kind adds per sample.
    pub fn count(self) -> usize {
        match self {
            Augment::Flip | Augment::Jitter => 1,
            Augment::Crop => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Augment::Flip => "flip",
            Augment::Crop => "crop",
            Augment::Jitter => "jitter",
        }
    }
}

impl std::str::FromStr for Augment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Augment::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| format!("{s:?} is not an augmentation (flip, crop, jitter)"))
    }
}

/// The extra views of `image` for `kinds`, in the order of `kinds` (each kind once,
/// [`Augment::count`] views each). The original is not included. Each view has the
/// size of `image` (crops are resized back), so the backbone's preprocessing treats
/// it like the original. Images smaller than 8 pixels a side get no crops.
pub fn views(image: &RgbImage, kinds: &[Augment]) -> Vec<RgbImage> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for &k in kinds {
        if seen.contains(&k) {
            continue;
        }
        seen.push(k);
        match k {
            Augment::Flip => out.push(imageops::flip_horizontal(image)),
            Augment::Crop => {
                let (w, h) = image.dimensions();
                if w < 8 || h < 8 {
                    continue;
                }
                let (cw, ch) = ((w * 85 / 100).max(1), (h * 85 / 100).max(1));
                for (x, y) in [(0, 0), (w - cw, h - ch)] {
                    let c = imageops::crop_imm(image, x, y, cw, ch).to_image();
                    out.push(imageops::resize(&c, w, h, FilterType::Triangle));
                }
            }
            Augment::Jitter => out.push(jitter(image, 1.15, 0.85, 0.8)),
        }
    }
    out
}

/// Brightness, contrast (around the image's mean grey) and saturation (around each
/// pixel's grey), as factors.
fn jitter(image: &RgbImage, brightness: f32, contrast: f32, saturation: f32) -> RgbImage {
    let grey = |p: &Rgb<u8>| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
    let n = (image.width() as f64 * image.height() as f64).max(1.0);
    let mean = (image.pixels().map(|p| grey(p) as f64).sum::<f64>() / n) as f32;
    let mut out = image.clone();
    for p in out.pixels_mut() {
        let g = grey(p);
        for c in 0..3 {
            let v = p[c] as f32;
            let v = g + (v - g) * saturation;
            let v = mean + (v - mean) * contrast;
            p[c] = (v * brightness).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 100])
        })
    }

    #[test]
    fn views_have_the_original_size_and_the_expected_count() {
        let img = gradient(40, 30);
        let v = views(&img, &Augment::ALL);
        assert_eq!(v.len(), 4);
        assert!(v.iter().all(|i| i.dimensions() == (40, 30)));
        assert!(views(&img, &[]).is_empty());
        assert_eq!(views(&img, &[Augment::Flip, Augment::Flip]).len(), 1);
    }

    #[test]
    fn flip_mirrors_and_crops_differ_from_the_original() {
        let img = gradient(40, 30);
        let f = &views(&img, &[Augment::Flip])[0];
        assert_eq!(f.get_pixel(0, 5), img.get_pixel(39, 5));
        let c = views(&img, &[Augment::Crop]);
        assert_ne!(c[0], img);
        assert_ne!(c[0], c[1]);
        // The upper-left crop starts at the original's corner.
        assert_eq!(c[0].get_pixel(0, 0), img.get_pixel(0, 0));
    }

    #[test]
    fn jitter_brightens_and_desaturates() {
        let img = RgbImage::from_pixel(4, 4, Rgb([200, 50, 50]));
        let j = &views(&img, &[Augment::Jitter])[0];
        let p = j.get_pixel(0, 0);
        assert!(p[0] < 230 && p[1] > 50, "{p:?}");
        assert!(p[0] - p[1] < 150, "less saturated: {p:?}");
    }

    #[test]
    fn tiny_images_get_no_crops() {
        assert!(views(&gradient(4, 4), &[Augment::Crop]).is_empty());
        assert_eq!(views(&gradient(1, 1), &Augment::ALL).len(), 2);
    }

    #[test]
    fn names_parse() {
        for a in Augment::ALL {
            assert_eq!(a.name().parse::<Augment>(), Ok(a));
        }
        assert!("rotate".parse::<Augment>().is_err());
    }
}
