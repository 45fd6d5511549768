//! The change gate: whether a classifier's region has changed enough since it was
//! last embedded for the backbone to run again, and the trigger policy around it.
//!
//! The measure follows what motion detectors in NVRs do (Frigate, motion): compare a
//! small, blurred grey picture of the region with the one of the last embedded
//! crop. Here the picture is a [`GRID`]×[`GRID`] grid of cell means, each a mean
//! over up to 8×8 sampled pixels, so sensor noise averages out. The last grid is
//! fitted to the new one by a gain and an offset before they are compared, so a
//! slow change of light or exposure (which shifts and scales all cells alike) is
//! not a change; something entering, leaving or moving in the region is, and so is
//! a large jump of the mean brightness (a light switched on: "is the light on?" is
//! a question a classifier may be asked). The result is in grey levels (0–255).
//!
//! Everything here is a pure function of (grids, elapsed times, counters) and is
//! tested without the backbone.

use std::time::Duration;

use image::RgbImage;
use serde::Serialize;

pub use crate::config::{TriggerConfig, DEFAULT_CHANGE_THRESHOLD};
use crate::region::Rect;

/// Cells per side of the grid.
pub const GRID: usize = 16;

/// A [`GRID`]×[`GRID`] grey picture of a region, row-major, grey levels 0–255.
#[derive(Debug, Clone, PartialEq)]
pub struct Thumb(pub Vec<f32>);

/// The grey grid of `r` in `image`: cell means of BT.601 luma over up to 8×8
/// pixels per cell (sampled evenly). Costs about 16k pixel reads at most, whatever
/// the region's size.
pub fn thumb(image: &RgbImage, r: Rect) -> Thumb {
    let mut out = vec![0f32; GRID * GRID];
    let (w, h) = (r.width.max(1) as usize, r.height.max(1) as usize);
    for gy in 0..GRID {
        let (y0, y1) = (gy * h / GRID, ((gy + 1) * h / GRID).max(gy * h / GRID + 1));
        let sy = ((y1 - y0) / 8).max(1);
        for gx in 0..GRID {
            let (x0, x1) = (gx * w / GRID, ((gx + 1) * w / GRID).max(gx * w / GRID + 1));
            let sx = ((x1 - x0) / 8).max(1);
            let (mut sum, mut n) = (0f32, 0u32);
            let mut y = y0;
            while y < y1.min(h) {
                let mut x = x0;
                while x < x1.min(w) {
                    let p = image.get_pixel(r.x + x as u32, r.y + y as u32).0;
                    sum += 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
                    n += 1;
                    x += sx;
                }
                y += sy;
            }
            out[gy * GRID + gx] = if n > 0 { sum / n as f32 } else { 0.0 };
        }
    }
    Thumb(out)
}

/// Below this standard deviation (grey levels) a grid counts as flat, and only its
/// mean is removed (fitting a gain to a flat grid would fit its noise).
const FLAT_STD: f32 = 2.0;
/// The range of brightness gains treated as a change of light, not of the scene.
const GAIN: (f32, f32) = (0.5, 2.0);

/// How much of a change of the mean brightness counts: a quarter, so a shift of
/// 32 grey levels (a light switched on or off) reaches the default threshold of
/// 8, while the few levels of a slow drift between two runs do not.
pub const BRIGHTNESS_WEIGHT: f32 = 0.25;

/// How different two grids are, in grey levels per cell: the larger of
/// - the structure: `b` fitted to `a` by least squares (`a ≈ g·b + o`, `g` within
///   [0.5, 2]), the mean absolute residual. A change of light or exposure is
///   fitted away; a new object leaves a residual;
/// - the brightness: the change of the mean, times [`BRIGHTNESS_WEIGHT`].
pub fn change(a: &Thumb, b: &Thumb) -> f32 {
    let n = a.0.len().min(b.0.len()).max(1) as f32;
    let ma = a.0.iter().sum::<f32>() / n;
    let mb = b.0.iter().sum::<f32>() / n;
    let (mut cov, mut var_b) = (0f32, 0f32);
    for (x, y) in a.0.iter().zip(&b.0) {
        cov += (x - ma) * (y - mb);
        var_b += (y - mb) * (y - mb);
    }
    let gain = if var_b / n >= FLAT_STD * FLAT_STD {
        (cov / var_b).clamp(GAIN.0, GAIN.1)
    } else {
        1.0
    };
    let residual =
        a.0.iter()
            .zip(&b.0)
            .map(|(x, y)| ((x - ma) - (y - mb) * gain).abs())
            .sum::<f32>()
            / n;
    residual.max((ma - mb).abs() * BRIGHTNESS_WEIGHT)
}

/// Why the backbone ran on a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Run {
    /// The first frame after start (or after the region was last unusable).
    First,
    EveryFrame,
    /// The region changed by at least the threshold.
    Changed,
    /// Frames right after a change, until the smoothing window agrees.
    Settling,
    Interval,
    MaxAge,
}

impl Run {
    pub const ALL: [Run; 6] = [
        Run::First,
        Run::EveryFrame,
        Run::Changed,
        Run::Settling,
        Run::Interval,
        Run::MaxAge,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Run::First => "first",
            Run::EveryFrame => "every_frame",
            Run::Changed => "changed",
            Run::Settling => "settling",
            Run::Interval => "interval",
            Run::MaxAge => "max_age",
        }
    }
}

/// Why the backbone did not run on a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    /// `on_change`, and the region did not change enough.
    Unchanged,
    /// Only `interval_secs` triggers, and it is not due yet.
    NotDue,
    /// The region does not fit the frame (a pixel region on a smaller frame).
    OutsideFrame,
}

impl Skip {
    pub const ALL: [Skip; 3] = [Skip::Unchanged, Skip::NotDue, Skip::OutsideFrame];

    pub fn name(self) -> &'static str {
        match self {
            Skip::Unchanged => "unchanged",
            Skip::NotDue => "not_due",
            Skip::OutsideFrame => "outside_frame",
        }
    }
}

/// What the gate knows about a region's last run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Last {
    /// [`change`] between this frame's grid and the last run's.
    pub change: f32,
    /// Time since the last run.
    pub age: Duration,
    /// Runs still owed to the smoothing window after a change.
    pub settling: u32,
}

/// The trigger policy: run (and why) or skip (and why). `last` is `None` before
/// the first run.
pub fn decide(t: &TriggerConfig, last: Option<Last>) -> Result<Run, Skip> {
    let Some(last) = last else {
        return Ok(Run::First);
    };
    if t.every_frame {
        return Ok(Run::EveryFrame);
    }
    if t.on_change && last.change >= t.change_threshold {
        return Ok(Run::Changed);
    }
    if last.settling > 0 {
        return Ok(Run::Settling);
    }
    let age = last.age.as_secs_f64();
    if t.interval_secs > 0.0 && age >= t.interval_secs {
        return Ok(Run::Interval);
    }
    if t.max_age_secs > 0.0 && age >= t.max_age_secs {
        return Ok(Run::MaxAge);
    }
    Err(if t.on_change {
        Skip::Unchanged
    } else {
        Skip::NotDue
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scene(w: u32, h: u32, seed: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = ((x / 7 + y / 5 + seed) % 4) as u8 * 50 + 20;
            image::Rgb([v, v / 2 + 30, 255 - v])
        })
    }

    fn whole(img: &RgbImage) -> Rect {
        Rect {
            x: 0,
            y: 0,
            width: img.width(),
            height: img.height(),
        }
    }

    /// xorshift noise in ±amp.
    fn noisy(img: &RgbImage, amp: i32, seed: &mut u32) -> RgbImage {
        let mut out = img.clone();
        for p in out.pixels_mut() {
            for c in p.0.iter_mut() {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 17;
                *seed ^= *seed << 5;
                let n = (*seed % (2 * amp as u32 + 1)) as i32 - amp;
                *c = (*c as i32 + n).clamp(0, 255) as u8;
            }
        }
        out
    }

    #[test]
    fn noise_and_light_changes_stay_below_the_threshold_a_new_object_does_not() {
        let base = scene(320, 240, 0);
        let t0 = thumb(&base, whole(&base));
        let mut seed = 7;
        let noise = noisy(&base, 12, &mut seed);
        assert!(change(&t0, &thumb(&noise, whole(&noise))) < 1.0);
        let lit = |gain: f32, offset: f32| {
            let img = RgbImage::from_fn(320, 240, |x, y| {
                let p = base.get_pixel(x, y).0;
                image::Rgb(p.map(|c| (c as f32 * gain + offset).clamp(0.0, 255.0) as u8))
            });
            change(&t0, &thumb(&img, whole(&img)))
        };
        // The drift between two runs a minute apart: 5% darker, 3 levels lower.
        let d = lit(0.95, -3.0);
        assert!(
            d < DEFAULT_CHANGE_THRESHOLD / 2.0,
            "light drift measured {d}"
        );
        // A light switched off: half as bright.
        let d = lit(0.5, 0.0);
        assert!(
            d >= DEFAULT_CHANGE_THRESHOLD,
            "light switched off measured {d}"
        );
        // A box appearing in a quarter of the region.
        let mut boxed = base.clone();
        for y in 0..120 {
            for x in 0..160 {
                boxed.put_pixel(x, y, image::Rgb([240, 240, 240]));
            }
        }
        let d = change(&t0, &thumb(&boxed, whole(&boxed)));
        assert!(
            d > 2.0 * DEFAULT_CHANGE_THRESHOLD,
            "a new object measured {d}"
        );
    }

    #[test]
    fn the_grid_only_reads_its_region() {
        let mut img = scene(200, 100, 0);
        let left = Rect {
            x: 0,
            y: 0,
            width: 100,
            height: 100,
        };
        let before = thumb(&img, left);
        for y in 0..100 {
            for x in 100..200 {
                img.put_pixel(x, y, image::Rgb([0, 0, 0]));
            }
        }
        assert_eq!(thumb(&img, left), before);
        // Tiny regions still give a full grid.
        assert_eq!(
            thumb(
                &img,
                Rect {
                    x: 3,
                    y: 3,
                    width: 2,
                    height: 2
                }
            )
            .0
            .len(),
            GRID * GRID
        );
    }

    #[test]
    fn the_policy_runs_only_when_the_answer_can_change() {
        let t = TriggerConfig::default();
        let last = |change: f32, secs: u64, settling: u32| {
            Some(Last {
                change,
                age: Duration::from_secs(secs),
                settling,
            })
        };
        assert_eq!(decide(&t, None), Ok(Run::First));
        assert_eq!(decide(&t, last(0.5, 5, 0)), Err(Skip::Unchanged));
        assert_eq!(decide(&t, last(t.change_threshold, 5, 0)), Ok(Run::Changed));
        assert_eq!(decide(&t, last(0.5, 5, 2)), Ok(Run::Settling));
        assert_eq!(decide(&t, last(0.5, 60, 0)), Ok(Run::MaxAge));
        let every = TriggerConfig {
            every_frame: true,
            ..t
        };
        assert_eq!(decide(&every, last(0.0, 0, 0)), Ok(Run::EveryFrame));
        let interval = TriggerConfig {
            on_change: false,
            interval_secs: 10.0,
            max_age_secs: 0.0,
            ..t
        };
        assert_eq!(decide(&interval, last(99.0, 5, 0)), Err(Skip::NotDue));
        assert_eq!(decide(&interval, last(0.0, 10, 0)), Ok(Run::Interval));
        let never_old = TriggerConfig {
            max_age_secs: 0.0,
            ..t
        };
        assert_eq!(
            decide(&never_old, last(0.0, 100_000, 0)),
            Err(Skip::Unchanged)
        );
    }
}
