//! Generated frames: a moving colour pattern, for tests and benchmarks without a camera.

use image::RgbImage;

use super::{CaptureError, FrameSource, Shot};
use crate::config::SyntheticConfig;

pub struct Synthetic {
    width: u32,
    height: u32,
    fps: f64,
    n: u32,
}

impl Synthetic {
    pub fn new(c: &SyntheticConfig) -> Self {
        Self {
            width: c.width,
            height: c.height,
            fps: c.fps,
            n: 0,
        }
    }
}

/// Frame `n` of the pattern: diagonal colour bands that move one step per frame.
pub fn pattern(width: u32, height: u32, n: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let t = x.wrapping_add(y).wrapping_add(n.wrapping_mul(4));
        image::Rgb([
            (t % 256) as u8,
            ((x.wrapping_mul(3) / 2).wrapping_add(n) % 256) as u8,
            ((y.wrapping_mul(5) / 4) % 256) as u8,
        ])
    })
}

impl FrameSource for Synthetic {
    fn next_frame(&mut self) -> Result<Option<Shot>, CaptureError> {
        self.n = self.n.wrapping_add(1);
        Ok(Some(pattern(self.width, self.height, self.n).into()))
    }

    fn fps(&self) -> Option<f64> {
        Some(self.fps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_size_asked_for_and_change() {
        let mut s = Synthetic::new(&SyntheticConfig {
            width: 32,
            height: 16,
            fps: 0.0,
        });
        let a = s.next_frame().expect("frame").expect("some").image;
        let b = s.next_frame().expect("frame").expect("some").image;
        assert_eq!(a.dimensions(), (32, 16));
        assert_ne!(a, b);
    }
}
