//! Pure image preprocessing: crop, resize (antialiased bilinear) and normalize an RGB
//! image into the backbone's input tensor. No I/O, no allocation beyond the output.

use image::RgbImage;

use crate::config::{BackboneConfig, Layout, ResizePolicy};

/// How a frame becomes the model's input.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub resize: ResizePolicy,
    pub crop_fraction: f32,
}

impl Preprocess {
    /// From a validated configuration (mean and std have three entries).
    pub fn from_config(c: &BackboneConfig) -> Self {
        let three = |v: &[f32], fill: f32| {
            let mut a = [fill; 3];
            for (d, s) in a.iter_mut().zip(v) {
                *d = *s;
            }
            a
        };
        Self {
            width: c.input_width,
            height: c.input_height,
            layout: c.layout,
            mean: three(&c.mean, 0.0),
            std: three(&c.std, 1.0),
            resize: c.resize,
            crop_fraction: c.crop_fraction,
        }
    }

    /// A canonical text of every field, for the backbone's feature identity
    /// ([`super::BackboneId`]): two preprocessings give the same text exactly when
    /// they compute the same input tensor.
    pub fn identity(&self) -> String {
        format!(
            "input={}x{} layout={:?} mean={:?} std={:?} resize={:?} crop={:?}",
            self.width,
            self.height,
            self.layout,
            self.mean,
            self.std,
            self.resize,
            self.crop_fraction
        )
    }

    /// The input tensor's shape, batch of one.
    pub fn shape(&self) -> [usize; 4] {
        let (w, h) = (self.width as usize, self.height as usize);
        match self.layout {
            Layout::Nchw => [1, 3, h, w],
            Layout::Nhwc => [1, h, w, 3],
        }
    }

    /// The region of an `iw`×`ih` image that is resized to the model input:
    /// `(left, top, width, height)`.
    pub fn region(&self, iw: u32, ih: u32) -> (u32, u32, u32, u32) {
        match self.resize {
            ResizePolicy::Stretch => (0, 0, iw, ih),
            ResizePolicy::CenterCrop => {
                // The largest rectangle of the model's aspect ratio, scaled by the fraction.
                let aspect = self.width as f64 / self.height as f64;
                let (mut w, mut h) = if iw as f64 / ih as f64 > aspect {
                    (ih as f64 * aspect, ih as f64)
                } else {
                    (iw as f64, iw as f64 / aspect)
                };
                w *= self.crop_fraction as f64;
                h *= self.crop_fraction as f64;
                let w = (w.round() as u32).clamp(1, iw);
                let h = (h.round() as u32).clamp(1, ih);
                ((iw - w) / 2, (ih - h) / 2, w, h)
            }
        }
    }

    /// Run the whole preprocessing; the result has `shape()`'s element count.
    pub fn run(&self, img: &RgbImage) -> Vec<f32> {
        let (iw, ih) = img.dimensions();
        let (left, top, rw, rh) = self.region(iw, ih);
        let (ow, oh) = (self.width as usize, self.height as usize);
        let xs = filter_taps(iw as usize, left as f64, rw as f64, ow);
        let ys = filter_taps(ih as usize, top as f64, rh as f64, oh);

        // Horizontal pass over the rows the vertical pass reads: rows × ow × 3.
        let row_lo = ys.iter().map(|t| t.start).min().unwrap_or(0);
        let row_hi = ys
            .iter()
            .map(|t| t.start + t.weights.len())
            .max()
            .unwrap_or(0);
        let raw = img.as_raw();
        let stride = iw as usize * 3;
        let mut horiz = vec![0f32; (row_hi - row_lo) * ow * 3];
        for (r, y) in (row_lo..row_hi).enumerate() {
            let row = &raw[y * stride..(y + 1) * stride];
            let out = &mut horiz[r * ow * 3..(r + 1) * ow * 3];
            for (x, t) in xs.iter().enumerate() {
                let mut acc = [0f32; 3];
                for (k, w) in t.weights.iter().enumerate() {
                    let p = &row[(t.start + k) * 3..(t.start + k) * 3 + 3];
                    acc[0] += w * p[0] as f32;
                    acc[1] += w * p[1] as f32;
                    acc[2] += w * p[2] as f32;
                }
                out[x * 3..x * 3 + 3].copy_from_slice(&acc);
            }
        }

        // Vertical pass, normalization and layout in one go.
        let scale = [1.0 / self.std[0], 1.0 / self.std[1], 1.0 / self.std[2]];
        let mut out = vec![0f32; ow * oh * 3];
        let plane = ow * oh;
        for (y, t) in ys.iter().enumerate() {
            for x in 0..ow {
                let mut acc = [0f32; 3];
                for (k, w) in t.weights.iter().enumerate() {
                    let p = &horiz[((t.start + k - row_lo) * ow + x) * 3..][..3];
                    acc[0] += w * p[0];
                    acc[1] += w * p[1];
                    acc[2] += w * p[2];
                }
                for c in 0..3 {
                    let v = (acc[c] - self.mean[c]) * scale[c];
                    match self.layout {
                        Layout::Nchw => out[c * plane + y * ow + x] = v,
                        Layout::Nhwc => out[(y * ow + x) * 3 + c] = v,
                    }
                }
            }
        }
        out
    }
}

/// The input pixels and weights that make one output pixel along an axis.
#[derive(Debug, Clone, PartialEq)]
struct Taps {
    start: usize,
    weights: Vec<f32>,
}

/// Triangle-filter taps mapping `[offset, offset + len)` of an axis of `size` pixels
/// onto `out` pixels. When shrinking, the filter widens with the scale (antialiasing),
/// as Pillow's and OpenCV's area-aware resizers do; taps outside the image are dropped
/// and the rest renormalized.
fn filter_taps(size: usize, offset: f64, len: f64, out: usize) -> Vec<Taps> {
    let scale = len / out as f64;
    let support = scale.max(1.0);
    (0..out)
        .map(|i| {
            let center = offset + (i as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((center + support + 0.5).floor() as usize).min(size);
            let mut weights: Vec<f32> = (lo..hi)
                .map(|j| {
                    let d = (j as f64 + 0.5 - center) / support;
                    (1.0 - d.abs()).max(0.0) as f32
                })
                .collect();
            let sum: f32 = weights.iter().sum();
            if sum > 0.0 {
                weights.iter_mut().for_each(|w| *w /= sum);
            }
            Taps { start: lo, weights }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre(w: u32, h: u32, resize: ResizePolicy, frac: f32) -> Preprocess {
        Preprocess {
            width: w,
            height: h,
            layout: Layout::Nchw,
            mean: [0.0; 3],
            std: [1.0; 3],
            resize,
            crop_fraction: frac,
        }
    }

    #[test]
    fn center_crop_region_of_landscape_and_portrait() {
        let p = pre(224, 224, ResizePolicy::CenterCrop, 0.875);
        // 640x480: short side 480, 0.875 of it is 420, centred.
        assert_eq!(p.region(640, 480), (110, 30, 420, 420));
        assert_eq!(p.region(300, 400), (18, 68, 263, 263));
        let full = pre(224, 224, ResizePolicy::CenterCrop, 1.0);
        assert_eq!(full.region(640, 480), (80, 0, 480, 480));
        let stretch = pre(224, 224, ResizePolicy::Stretch, 0.5);
        assert_eq!(stretch.region(640, 480), (0, 0, 640, 480));
        // A wide model input keeps its aspect ratio in the crop.
        let wide = pre(200, 100, ResizePolicy::CenterCrop, 1.0);
        assert_eq!(wide.region(400, 400), (0, 100, 400, 200));
    }

    #[test]
    fn halving_averages_pixel_pairs_with_a_triangle() {
        // 4 pixels -> 2: scale 2, support 2; output 0 is centred at 1.0.
        // Taps j=0..3 at distances |j+0.5-1|/2 = .25,.25,.75 -> weights .75,.75,.25 (/1.75).
        let t = filter_taps(4, 0.0, 4.0, 2);
        assert_eq!(t[0].start, 0);
        let w = &t[0].weights;
        assert_eq!(w.len(), 3);
        assert!((w[0] - 0.75 / 1.75).abs() < 1e-6);
        assert!((w[1] - 0.75 / 1.75).abs() < 1e-6);
        assert!((w[2] - 0.25 / 1.75).abs() < 1e-6);
        // Output 1 is centred at 3.0: taps 1..4 weights .25,.75,.75.
        assert_eq!(t[1].start, 1);
        assert!((t[1].weights[0] - 0.25 / 1.75).abs() < 1e-6);
    }

    #[test]
    fn identity_size_copies_pixels() {
        let t = filter_taps(5, 0.0, 5.0, 5);
        for (i, taps) in t.iter().enumerate() {
            // Centre i+0.5, support 1: the pixel itself has weight 1, its neighbours 0.
            let total: f32 = taps.weights.iter().sum();
            assert!((total - 1.0).abs() < 1e-6);
            let k = i - taps.start;
            assert!((taps.weights[k] - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn normalizes_and_lays_out_channels() {
        // A 2x2 image to a 2x2 input: no resampling, only normalization.
        let img = RgbImage::from_raw(
            2,
            2,
            vec![
                0, 10, 20, 30, 40, 50, //
                60, 70, 80, 255, 128, 127,
            ],
        )
        .expect("buffer");
        let mut p = pre(2, 2, ResizePolicy::Stretch, 1.0);
        p.mean = [127.0; 3];
        p.std = [128.0; 3];
        let nchw = p.run(&img);
        let v = |x: f32| (x - 127.0) / 128.0;
        // Channel R plane first: pixels 0, 30, 60, 255.
        let want_r = [v(0.0), v(30.0), v(60.0), v(255.0)];
        for (a, b) in nchw[..4].iter().zip(want_r) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        assert!((nchw[4 + 3] - v(128.0)).abs() < 1e-6);
        assert!((nchw[8 + 3] - v(127.0)).abs() < 1e-6);
        p.layout = Layout::Nhwc;
        let nhwc = p.run(&img);
        assert!((nhwc[0] - v(0.0)).abs() < 1e-6);
        assert!((nhwc[1] - v(10.0)).abs() < 1e-6);
        assert!((nhwc[11] - v(127.0)).abs() < 1e-6);
        assert_eq!(p.shape(), [1, 2, 2, 3]);
    }

    #[test]
    fn downscaled_flat_image_stays_flat() {
        let img = RgbImage::from_pixel(640, 480, image::Rgb([200, 100, 50]));
        let p = pre(224, 224, ResizePolicy::CenterCrop, 0.875);
        let out = p.run(&img);
        assert_eq!(out.len(), 3 * 224 * 224);
        let plane = 224 * 224;
        assert!(out[..plane].iter().all(|v| (v - 200.0).abs() < 1e-3));
        assert!(out[plane..2 * plane]
            .iter()
            .all(|v| (v - 100.0).abs() < 1e-3));
        assert!(out[2 * plane..].iter().all(|v| (v - 50.0).abs() < 1e-3));
    }

    #[test]
    fn tiny_images_do_not_panic() {
        let img = RgbImage::from_pixel(1, 1, image::Rgb([9, 9, 9]));
        let out = pre(8, 8, ResizePolicy::CenterCrop, 0.875).run(&img);
        assert!(out.iter().all(|v| (v - 9.0).abs() < 1e-4));
    }
}
