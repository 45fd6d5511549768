//! PNG with the `image` crate: the budget is checked from the header (before any
//! pixel is allocated), transparency is composed onto white, the orientation applied.

use std::io::Cursor;

use image::codecs::png::PngDecoder;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, Limits, RgbImage};

use super::{
    apply_orientation, check_budget, check_sides, orientation_copies, DecodeError, ImageLimits,
};

fn png_error(e: ImageError) -> DecodeError {
    DecodeError::Corrupt(match e {
        ImageError::Unsupported(e) => format!("the PNG uses a feature that cannot be decoded: {e}"),
        ImageError::Limits(e) => {
            format!("the PNG needs more memory than learn.decode_budget_mib allows: {e}")
        }
        e => format!("the PNG is damaged or incomplete: {e}"),
    })
}

/// Decode a PNG (see the module documentation).
pub(super) fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage, DecodeError> {
    // `max_alloc` also bounds what the png crate allocates for metadata chunks.
    let mut image_limits = Limits::no_limits();
    image_limits.max_alloc = Some(limits.budget_bytes);
    let mut decoder =
        PngDecoder::with_limits(Cursor::new(bytes), image_limits).map_err(png_error)?;
    let (width, height) = decoder.dimensions();
    check_sides(width, height, limits)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    // The decoded image in the PNG's own colour type (e.g. 8 bytes per pixel for
    // 16-bit RGBA) and the RGB made from it are held together; a rotation then holds
    // two RGB images.
    let rgb = u64::from(width) * u64::from(height) * 3;
    let needed =
        (decoder.total_bytes().saturating_add(rgb)).max(if orientation_copies(orientation) {
            2 * rgb
        } else {
            0
        });
    check_budget(width, height, needed, limits)?;
    let img = DynamicImage::from_decoder(decoder).map_err(png_error)?;
    Ok(apply_orientation(flatten(img)?, orientation))
}

/// To RGB, composing any transparency onto opaque white: out = a·c + (1 − a)·white per
/// channel, in the image's own precision (8 or 16 bits) and rounded, so that a fully
/// transparent pixel is white whatever colour it hides.
pub(super) fn flatten(img: DynamicImage) -> Result<RgbImage, DecodeError> {
    let (w, h) = (img.width(), img.height());
    let rgb = match img {
        DynamicImage::ImageRgb8(img) => return Ok(img),
        DynamicImage::ImageRgba8(img) => flatten_8(img.as_raw(), 4),
        DynamicImage::ImageLumaA8(img) => flatten_8(img.as_raw(), 2),
        DynamicImage::ImageRgba16(img) => flatten_16(img.as_raw(), 4),
        DynamicImage::ImageLumaA16(img) => flatten_16(img.as_raw(), 2),
        img if img.color().has_alpha() => flatten_16(img.to_rgba16().as_raw(), 4),
        img => return Ok(img.into_rgb8()),
    };
    RgbImage::from_raw(w, h, rgb).ok_or_else(|| {
        DecodeError::Corrupt(format!(
            "the PNG decoder returned too few pixels for {w}x{h}"
        ))
    })
}

/// Pixels of `channels` samples (grey or RGB, then alpha) onto white, each colour
/// sample and the alpha through `over(sample, alpha)` to 8 bits.
fn onto_white<T: Copy>(px: &[T], channels: usize, over: impl Fn(T, T) -> u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(px.len() / channels * 3);
    for p in px.chunks_exact(channels) {
        let a = p[channels - 1];
        let (r, g, b) = if channels == 2 {
            (p[0], p[0], p[0])
        } else {
            (p[0], p[1], p[2])
        };
        out.extend_from_slice(&[over(r, a), over(g, a), over(b, a)]);
    }
    out
}

/// 8-bit samples onto white.
fn flatten_8(px: &[u8], channels: usize) -> Vec<u8> {
    onto_white(px, channels, |c, a| {
        let a = u32::from(a);
        ((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8
    })
}

/// 16-bit samples onto white, then to 8 bits with the `image` crate's rounding
/// ((v + 128) / 257).
fn flatten_16(px: &[u16], channels: usize) -> Vec<u8> {
    onto_white(px, channels, |c, a| {
        let a = u64::from(a);
        let v = (u64::from(c) * a + 65535 * (65535 - a) + 32767) / 65535;
        ((v + 128) / 257) as u8
    })
}
