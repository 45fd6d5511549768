//! The region test of `eval --scene`: every data set image composed into a
//! larger frame, embedded as the region's crop and as the whole frame.

use image::imageops::FilterType;
use image::RgbImage;

use crate::region::{self, Rect, RegionConfig, RegionUnit};

/// The test of a region classifier against a whole-frame one on the same task:
/// every image of the data set is resized into `region` of `background` (resized
/// to `width` × `height`), and both views are embedded and evaluated with the same
/// k-shot draws.
pub struct Scene {
    pub background: RgbImage,
    pub width: u32,
    pub height: u32,
    pub region: RegionConfig,
}

impl Scene {
    /// The default layout: a 640×480 frame, the object in a 192×160 region at the
    /// upper right (a tenth of the frame).
    pub fn new(background: &RgbImage) -> Self {
        let (width, height) = (640, 480);
        Self {
            background: image::imageops::resize(background, width, height, FilterType::Triangle),
            width,
            height,
            region: RegionConfig {
                x: 0.6,
                y: 0.1,
                width: 0.3,
                height: 1.0 / 3.0,
                unit: RegionUnit::Fraction,
            },
        }
    }

    /// The region in pixels.
    pub fn rect(&self) -> Rect {
        // Fractions that passed validation always fit.
        self.region.rect(self.width, self.height).unwrap_or(Rect {
            x: 0,
            y: 0,
            width: self.width,
            height: self.height,
        })
    }

    /// The frame with `object` filling the region.
    pub fn compose(&self, object: &RgbImage) -> RgbImage {
        let r = self.rect();
        let mut frame = self.background.clone();
        let obj = image::imageops::resize(object, r.width, r.height, FilterType::Triangle);
        image::imageops::replace(&mut frame, &obj, r.x as i64, r.y as i64);
        frame
    }
}

/// What is embedded of each image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum View {
    /// The image as it is (a plain `eval`).
    Image,
    /// Composed into the scene, the region cropped out.
    Region,
    /// Composed into the scene, the whole frame.
    Frame,
}

/// What `view` embeds of a data set image.
pub(super) fn view_of(img: RgbImage, view: View, scene: Option<&Scene>) -> RgbImage {
    match (view, scene) {
        (View::Region, Some(s)) => region::crop(&s.compose(&img), s.rect()),
        (View::Frame, Some(s)) => s.compose(&img),
        _ => img,
    }
}
