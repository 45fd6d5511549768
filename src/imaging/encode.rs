//! The one way edgehead makes a JPEG from an RGB image: scaled down to fit a size
//! rule (never up), then encoded by the `image` crate.

use std::io::Cursor;

use image::RgbImage;

/// How an image is scaled before it is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// The short side at most this many pixels (sample thumbnails: what a new
    /// backbone re-embeds keeps its detail whatever the aspect ratio).
    ShortSide(u32),
    /// The long side at most this many pixels (crops shown to people).
    LongSide(u32),
}

/// `img` scaled down (triangle filter, aspect ratio kept) so that it fits `fit`;
/// the same image when it already fits.
pub fn fit(img: RgbImage, fit: Fit) -> RgbImage {
    let (w, h) = img.dimensions();
    let (side, limit) = match fit {
        Fit::ShortSide(n) => (w.min(h), n),
        Fit::LongSide(n) => (w.max(h), n),
    };
    if side <= limit || side == 0 {
        return img;
    }
    let scale = limit as f64 / side as f64;
    image::imageops::resize(
        &img,
        ((w as f64 * scale).round() as u32).max(1),
        ((h as f64 * scale).round() as u32).max(1),
        image::imageops::FilterType::Triangle,
    )
}

/// `img` as a baseline JPEG of `quality` (1 to 100).
pub fn jpeg(img: &RgbImage, quality: u8) -> Result<Vec<u8>, image::ImageError> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(Cursor::new(&mut out), quality)
        .encode_image(img)?;
    Ok(out)
}

/// Quality of stored sample thumbnails (re-embedded after a backbone change).
pub const THUMBNAIL_QUALITY: u8 = 90;
/// Quality of crops shown to people (Home Assistant's image, the console).
pub const VIEW_QUALITY: u8 = 80;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_shrink_to_the_short_side() {
        let img = RgbImage::from_pixel(1000, 500, image::Rgb([1, 2, 3]));
        let t = fit(img, Fit::ShortSide(320));
        assert_eq!(t.dimensions(), (640, 320));
        assert_eq!(
            &jpeg(&t, THUMBNAIL_QUALITY).expect("jpeg")[..2],
            &[0xFF, 0xD8]
        );
        let small = RgbImage::from_pixel(100, 50, image::Rgb([1, 2, 3]));
        assert_eq!(fit(small, Fit::ShortSide(320)).dimensions(), (100, 50));
    }

    #[test]
    fn views_shrink_to_the_long_side() {
        let img = RgbImage::from_pixel(1000, 500, image::Rgb([1, 2, 3]));
        assert_eq!(fit(img, Fit::LongSide(640)).dimensions(), (640, 320));
    }
}
