//! The part of the frame a classifier looks at, and cropping it.
//!
//! A region is a rectangle given in fractions of the frame (`unit = "fraction"`,
//! the default: it survives a change of camera resolution) or in pixels
//! (`unit = "px"`). Fractions are turned into pixels per frame by rounding both
//! edges, so neighbouring regions share no pixel and leave none out.

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// How the numbers of a [`RegionConfig`] are meant.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RegionUnit {
    /// Fractions of the frame's width and height, 0 to 1.
    #[default]
    Fraction,
    /// Pixels of the frame as the source delivers it.
    Px,
}

/// A rectangle of the frame: top-left corner (`x`, `y`) and size, in `unit`s.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    #[serde(default)]
    pub unit: RegionUnit,
}

impl Default for RegionConfig {
    fn default() -> Self {
        Self::WHOLE
    }
}

/// A rectangle in pixels of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// Why a region cannot be used (the config key is added by the caller).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct RegionError(pub String);

impl RegionConfig {
    /// The whole frame.
    pub const WHOLE: Self = Self {
        x: 0.0,
        y: 0.0,
        width: 1.0,
        height: 1.0,
        unit: RegionUnit::Fraction,
    };

    /// Check the numbers on their own, and against the frame size when it is known
    /// (`frame` = width, height in pixels). Errors name the offending field.
    pub fn check(&self, frame: Option<(u32, u32)>) -> Result<(), (&'static str, RegionError)> {
        let fields = [
            ("x", self.x),
            ("y", self.y),
            ("width", self.width),
            ("height", self.height),
        ];
        let fail = |k, msg: String| Err((k, RegionError(msg)));
        for (k, v) in fields {
            if !v.is_finite() {
                return fail(k, format!("{v} is not a number"));
            }
        }
        for (k, v) in [("x", self.x), ("y", self.y)] {
            if v < 0.0 {
                return fail(k, format!("{v} is outside the frame (below 0)"));
            }
        }
        for (k, v) in [("width", self.width), ("height", self.height)] {
            if v <= 0.0 {
                return fail(k, format!("{v}: the region has no area"));
            }
        }
        match self.unit {
            RegionUnit::Fraction => self.check_fractions(frame),
            RegionUnit::Px => self.check_pixels(fields, frame),
        }
    }

    /// [`RegionConfig::check`] of a region in fractions of the frame.
    fn check_fractions(
        &self,
        frame: Option<(u32, u32)>,
    ) -> Result<(), (&'static str, RegionError)> {
        const EPS: f64 = 1e-9;
        let fail = |k, msg: String| Err((k, RegionError(msg)));
        for (k, v) in [("width", self.width), ("height", self.height)] {
            if v < MIN_FRACTION {
                return fail(
                    k,
                    format!("{v} is too small to classify (at least {MIN_FRACTION} of the frame)"),
                );
            }
        }
        for (k, v) in [("x", self.x), ("y", self.y)] {
            if v >= 1.0 {
                return fail(
                    k,
                    format!("{v} is outside the frame (fractions run from 0 to 1)"),
                );
            }
        }
        if self.x + self.width > 1.0 + EPS {
            return fail(
                "width",
                format!(
                    "x + width = {} runs over the right edge of the frame (1)",
                    self.x + self.width
                ),
            );
        }
        if self.y + self.height > 1.0 + EPS {
            return fail(
                "height",
                format!(
                    "y + height = {} runs over the bottom edge of the frame (1)",
                    self.y + self.height
                ),
            );
        }
        // Too few pixels of this frame.
        self.fits(frame, |w| self.width * (w as f64) < MIN_SIDE as f64 + 1.0)
    }

    /// [`RegionConfig::check`] of a region in pixels.
    fn check_pixels(
        &self,
        fields: [(&'static str, f64); 4],
        frame: Option<(u32, u32)>,
    ) -> Result<(), (&'static str, RegionError)> {
        let fail = |k, msg: String| Err((k, RegionError(msg)));
        for (k, v) in fields {
            if v.fract() != 0.0 {
                return fail(k, format!("{v} is not a whole number of pixels"));
            }
        }
        for (k, v) in [("width", self.width), ("height", self.height)] {
            if v < MIN_SIDE as f64 {
                return fail(
                    k,
                    format!("{v} pixels is too small to classify (at least {MIN_SIDE})"),
                );
            }
        }
        self.fits(frame, |w| self.x + self.width > w as f64)
    }

    /// Whether the region fits `frame` when its size is known; the error is
    /// reported under `width` when `width_at_fault(frame width)`, else `height`.
    fn fits(
        &self,
        frame: Option<(u32, u32)>,
        width_at_fault: impl Fn(u32) -> bool,
    ) -> Result<(), (&'static str, RegionError)> {
        let Some((w, h)) = frame else {
            return Ok(());
        };
        self.rect(w, h)
            .map(|_| ())
            .map_err(|e| (if width_at_fault(w) { "width" } else { "height" }, e))
    }

    /// The pixels of a `frame_width` × `frame_height` frame this region covers.
    /// Errors when a pixel region runs over the frame's edge (fraction regions that
    /// passed [`RegionConfig::check`] always fit).
    pub fn rect(&self, frame_width: u32, frame_height: u32) -> Result<Rect, RegionError> {
        let (fw, fh) = (frame_width as f64, frame_height as f64);
        let (x0, y0, x1, y1) = match self.unit {
            RegionUnit::Fraction => (
                (self.x * fw).round(),
                (self.y * fh).round(),
                ((self.x + self.width) * fw).round().min(fw),
                ((self.y + self.height) * fh).round().min(fh),
            ),
            RegionUnit::Px => {
                let (x1, y1) = (self.x + self.width, self.y + self.height);
                if x1 > fw || y1 > fh {
                    return Err(RegionError(format!(
                        "the region ({}, {}) to ({x1}, {y1}) runs over the edge of the {frame_width}×{frame_height} frame",
                        self.x, self.y
                    )));
                }
                (self.x, self.y, x1, y1)
            }
        };
        // At least one pixel, inside the frame.
        let x0 = x0.min(fw - 1.0).max(0.0);
        let y0 = y0.min(fh - 1.0).max(0.0);
        let r = Rect {
            x: x0 as u32,
            y: y0 as u32,
            width: (x1 - x0).max(1.0) as u32,
            height: (y1 - y0).max(1.0) as u32,
        };
        if r.width < MIN_SIDE || r.height < MIN_SIDE {
            return Err(RegionError(format!(
                "the region is {}×{} pixels of the {frame_width}×{frame_height} frame, too small to classify (at least {MIN_SIDE} per side)",
                r.width, r.height
            )));
        }
        Ok(r)
    }
}

/// Smallest side of a region in pixels: a smaller crop is refused (config, a whole
/// frame sent with `apply_region`) or skipped (a frame too small for the region).
pub const MIN_SIDE: u32 = 8;

/// Smallest side of a fraction region, as a fraction of the frame's side.
pub const MIN_FRACTION: f64 = 0.01;

/// Copy the pixels of `r` out of `image` (`r` must lie inside it, as
/// [`RegionConfig::rect`] guarantees). The whole image is returned as a clone.
pub fn crop(image: &RgbImage, r: Rect) -> RgbImage {
    if r.x == 0 && r.y == 0 && r.width == image.width() && r.height == image.height() {
        return image.clone();
    }
    image::imageops::crop_imm(image, r.x, r.y, r.width, r.height).to_image()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frac(x: f64, y: f64, w: f64, h: f64) -> RegionConfig {
        RegionConfig {
            x,
            y,
            width: w,
            height: h,
            unit: RegionUnit::Fraction,
        }
    }

    fn px(x: f64, y: f64, w: f64, h: f64) -> RegionConfig {
        RegionConfig {
            unit: RegionUnit::Px,
            ..frac(x, y, w, h)
        }
    }

    #[test]
    fn fractions_become_pixels_and_neighbours_tile_the_frame() {
        let left = frac(0.0, 0.0, 1.0 / 3.0, 1.0).rect(100, 50).unwrap();
        let mid = frac(1.0 / 3.0, 0.0, 1.0 / 3.0, 1.0).rect(100, 50).unwrap();
        let right = frac(2.0 / 3.0, 0.0, 1.0 / 3.0, 1.0).rect(100, 50).unwrap();
        assert_eq!(left.x + left.width, mid.x);
        assert_eq!(mid.x + mid.width, right.x);
        assert_eq!(right.x + right.width, 100);
        assert_eq!(
            RegionConfig::WHOLE.rect(640, 480).unwrap(),
            Rect {
                x: 0,
                y: 0,
                width: 640,
                height: 480
            }
        );
        let r = frac(0.5, 0.25, 0.25, 0.5).rect(640, 480).unwrap();
        assert_eq!(
            r,
            Rect {
                x: 320,
                y: 120,
                width: 160,
                height: 240
            }
        );
    }

    #[test]
    fn bad_regions_name_the_field() {
        assert_eq!(frac(1.2, 0.0, 0.1, 0.1).check(None).unwrap_err().0, "x");
        assert_eq!(frac(-0.1, 0.0, 0.1, 0.1).check(None).unwrap_err().0, "x");
        assert_eq!(frac(0.0, 0.0, 0.0, 0.5).check(None).unwrap_err().0, "width");
        assert_eq!(
            frac(0.0, 0.0, 0.5, -1.0).check(None).unwrap_err().0,
            "height"
        );
        assert_eq!(frac(0.8, 0.0, 0.3, 0.5).check(None).unwrap_err().0, "width");
        assert_eq!(
            frac(0.0, 0.6, 0.3, 0.5).check(None).unwrap_err().0,
            "height"
        );
        assert_eq!(
            frac(f64::NAN, 0.0, 0.3, 0.5).check(None).unwrap_err().0,
            "x"
        );
        assert!(frac(0.5, 0.5, 0.5, 0.5).check(None).is_ok());
        assert_eq!(px(0.0, 0.0, 2.0, 100.0).check(None).unwrap_err().0, "width");
        assert_eq!(px(0.5, 0.0, 20.0, 100.0).check(None).unwrap_err().0, "x");
        assert_eq!(
            px(600.0, 0.0, 100.0, 100.0)
                .check(Some((640, 480)))
                .unwrap_err()
                .0,
            "width"
        );
        assert_eq!(
            px(0.0, 400.0, 100.0, 100.0)
                .check(Some((640, 480)))
                .unwrap_err()
                .0,
            "height"
        );
        assert!(px(540.0, 380.0, 100.0, 100.0)
            .check(Some((640, 480)))
            .is_ok());
        // Unknown frame size: checked per frame instead.
        assert!(px(600.0, 0.0, 100.0, 100.0).check(None).is_ok());
        assert!(px(600.0, 0.0, 100.0, 100.0).rect(640, 480).is_err());
    }

    #[test]
    fn crop_copies_the_region_pixels() {
        let img = RgbImage::from_fn(10, 8, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let c = crop(&img, px(2.0, 0.0, 8.0, 8.0).rect(10, 8).unwrap());
        assert_eq!(c.dimensions(), (8, 8));
        assert_eq!(c.get_pixel(0, 0).0, [2, 0, 0]);
        assert_eq!(c.get_pixel(7, 7).0, [9, 7, 0]);
        // Fewer than 8 pixels a side is no crop to classify.
        assert!(frac(0.0, 0.0, 0.5, 0.5).rect(10, 8).is_err());
        assert_eq!(
            frac(0.0, 0.0, 0.001, 0.5).check(None).unwrap_err().0,
            "width"
        );
        assert_eq!(
            frac(0.0, 0.0, 0.5, 0.012)
                .check(Some((640, 480)))
                .unwrap_err()
                .0,
            "height"
        );
    }
}
