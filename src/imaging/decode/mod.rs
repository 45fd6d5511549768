//! Decoding untrusted image bytes (files, camera buffers, MQTT payloads) into RGB:
//! one strict path for every image, bounded in size and memory, and never a panic.
//!
//! - JPEG (`jpeg.rs`): `jpeg-decoder`, which refuses truncated data; a structural scan
//!   of the markers first (EOI present, segments inside the data), the ITU-T T.81
//!   Annex K Huffman tables added to MJPEG frames that omit them, DCT scaling (1/2,
//!   1/4, 1/8) to stay within the memory budget, EXIF orientation applied.
//! - PNG (`png.rs`): the `image` crate, with the budget checked from the header before
//!   anything is allocated; transparency is flattened onto white.
//! - Raw camera buffers (`raw.rs`): YUYV, NV12, grey, RGB, BGR, with a line stride.
//!
//! Every image that comes out has sides of at most [`ImageLimits::max_side`] pixels and
//! takes at most [`ImageLimits::budget_bytes`] as RGB.

use image::metadata::Orientation;
use image::{DynamicImage, RgbImage};

mod jpeg;
mod png;
mod raw;
#[cfg(test)]
mod tests;

pub use raw::yuyv_to_rgb;

/// How large an image may be, decoded.
///
/// Built from the `learn` configuration with [`ImageLimits::from_config`]; the
/// [`Default`] is the configuration's default (8192 pixels per side, 64 MiB).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageLimits {
    /// Largest width or height, in pixels, declared by the image (before any scaling).
    pub max_side: u32,
    /// Memory one decode may hold, in bytes: the decoder's buffers plus the RGB result.
    /// JPEGs above it are decoded at 1/2, 1/4 or 1/8 size; other images are refused.
    pub budget_bytes: u64,
}

impl ImageLimits {
    /// `learn.max_image_side` and `learn.decode_budget_mib` (MiB, × 2^20 bytes).
    pub fn from_config(l: &crate::config::LearnConfig) -> Self {
        Self {
            max_side: l.max_image_side,
            budget_bytes: u64::from(l.decode_budget_mib) << 20,
        }
    }
}

impl Default for ImageLimits {
    fn default() -> Self {
        Self {
            max_side: 8192,
            budget_bytes: 64 << 20,
        }
    }
}

/// Why bytes could not become an RGB image.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Neither a JPEG (`FF D8 FF`) nor a PNG signature.
    #[error("not a JPEG or PNG image")]
    UnknownFormat,
    /// A side is larger than [`ImageLimits::max_side`].
    #[error("image is {width}x{height}, larger than the limit of {max} pixels per side")]
    TooLarge { width: u32, height: u32, max: u32 },
    /// Decoding would need more than [`ImageLimits::budget_bytes`], even at the
    /// smallest size the format can be decoded at (1/8 for JPEG, full size for PNG).
    /// `needed` and `budget` are in bytes.
    #[error(
        "decoding this {width}x{height} image needs {:.1} MiB even at the smallest size it \
         can be decoded at, more than the {:.1} MiB that learn.decode_budget_mib allows",
        mib(.needed),
        mib(.budget)
    )]
    OverBudget {
        width: u32,
        height: u32,
        needed: u64,
        budget: u64,
    },
    /// The data does not decode completely: damaged, truncated, or using a feature the
    /// decoder does not support. The text says which.
    #[error("cannot decode image: {0}")]
    Corrupt(String),
    /// A raw camera buffer is too short for its size, stride and format (`got` and
    /// `want` in bytes), or has an odd width or height where the format needs pairs.
    #[error("raw frame buffer has {got} bytes, {width}x{height} needs {want}")]
    BadLength {
        got: usize,
        want: usize,
        width: u32,
        height: u32,
    },
    /// A raw buffer's line stride (bytes per line) is shorter than one line of pixels.
    #[error("line stride of {stride} bytes is shorter than a line of {min} bytes")]
    BadStride { stride: usize, min: usize },
}

fn mib(bytes: &u64) -> f64 {
    *bytes as f64 / (1u64 << 20) as f64
}

const JPEG_SIGNATURE: [u8; 3] = [0xFF, 0xD8, 0xFF];
const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

/// Decode a JPEG or PNG (recognised by its signature) to 8-bit RGB, upright.
///
/// - The declared size must be at most `limits.max_side` per side
///   ([`DecodeError::TooLarge`]) and not empty.
/// - A JPEG that would need more than `limits.budget_bytes` is decoded at 1/2, 1/4 or
///   1/8 size, so the result may be smaller than declared; if even 1/8 does not fit,
///   or a PNG does not fit, [`DecodeError::OverBudget`].
/// - Damaged or truncated data is [`DecodeError::Corrupt`], never a partial image.
/// - The EXIF orientation (EXIF 2.3 / TIFF 6.0 tag 0x0112, values 1–8) is applied;
///   transparent pixels are composed onto white.
///
/// The result has sides of at most `limits.max_side` and width × height × 3 bytes of
/// at most `limits.budget_bytes`.
pub fn decode_image(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage, DecodeError> {
    let decode = || {
        if bytes.starts_with(&JPEG_SIGNATURE) {
            jpeg::decode(bytes, limits)
        } else if bytes.starts_with(&PNG_SIGNATURE) {
            png::decode(bytes, limits)
        } else {
            Err(DecodeError::UnknownFormat)
        }
    };
    // The decoders are fuzzed, but a panic on one bad payload would stop the daemon
    // (a panicking task stops it): it counts as a damaged image instead.
    let img = std::panic::catch_unwind(decode).map_err(|_| {
        DecodeError::Corrupt("the decoder failed on this data (it panicked)".into())
    })??;
    // Every path keeps to the limits by construction; checked once more here so that
    // callers can rely on it whatever a decoder does.
    let (width, height) = img.dimensions();
    check_sides(width, height, limits)?;
    check_rgb_budget(width, height, limits)?;
    Ok(img)
}

/// Refuse empty images and images with a side above `limits.max_side`.
fn check_sides(width: u32, height: u32, limits: &ImageLimits) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(DecodeError::Corrupt(format!(
            "the image is {width}x{height}: it has no pixels"
        )));
    }
    if width > limits.max_side || height > limits.max_side {
        return Err(DecodeError::TooLarge {
            width,
            height,
            max: limits.max_side,
        });
    }
    Ok(())
}

/// Refuse an RGB result (3 bytes per pixel) above the budget.
fn check_rgb_budget(width: u32, height: u32, limits: &ImageLimits) -> Result<(), DecodeError> {
    check_budget(
        width,
        height,
        u64::from(width) * u64::from(height) * 3,
        limits,
    )
}

/// Refuse decoding a `width`×`height` image that needs `needed` bytes, above the budget.
fn check_budget(
    width: u32,
    height: u32,
    needed: u64,
    limits: &ImageLimits,
) -> Result<(), DecodeError> {
    if needed > limits.budget_bytes {
        return Err(DecodeError::OverBudget {
            width,
            height,
            needed,
            budget: limits.budget_bytes,
        });
    }
    Ok(())
}

/// Whether applying `o` makes a rotated copy (rather than flipping in place).
fn orientation_copies(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// Turn a decoded image upright as its orientation tag says.
fn apply_orientation(img: RgbImage, o: Orientation) -> RgbImage {
    if o == Orientation::NoTransforms {
        return img;
    }
    let mut img = DynamicImage::ImageRgb8(img);
    img.apply_orientation(o);
    img.into_rgb8()
}

/// Pixel formats of raw camera buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFormat {
    /// One JPEG per frame (MJPEG), decoded like [`decode_image`]; the Huffman tables
    /// many webcams omit are added.
    Mjpeg,
    /// Packed YUYV 4:2:2 (Y0 U Y1 V per two pixels), BT.601 limited range.
    Yuyv,
    /// Planar Y (one byte per pixel), then interleaved U V at half resolution in both
    /// directions; both planes use the same stride.
    Nv12,
    /// One byte per pixel.
    Gray,
    /// Three bytes per pixel, R G B.
    Rgb,
    /// Three bytes per pixel, B G R.
    Bgr,
}

/// Decode one camera buffer of `width` × `height` pixels to RGB.
///
/// `stride` is the number of bytes from the start of one line to the next (V4L2's
/// `bytesperline`), at least one line of pixels; `None` means lines are packed with
/// no padding. Padding bytes are never read as pixels. MJPEG ignores `width`, `height`
/// and `stride` (the JPEG header has the size).
///
/// Errors: [`DecodeError::BadLength`] for a buffer too short (or an odd width for
/// YUYV, odd sides for NV12), [`DecodeError::BadStride`], [`DecodeError::TooLarge`] and
/// [`DecodeError::OverBudget`] against `limits` (the RGB result, 3 bytes per pixel),
/// and for MJPEG every error of [`decode_image`].
pub fn decode_frame(
    bytes: &[u8],
    width: u32,
    height: u32,
    stride: Option<usize>,
    format: RawFormat,
    limits: &ImageLimits,
) -> Result<RgbImage, DecodeError> {
    if format == RawFormat::Mjpeg {
        return decode_image(bytes, limits);
    }
    if width == 0 || height == 0 {
        return Err(DecodeError::BadLength {
            got: bytes.len(),
            want: 0,
            width,
            height,
        });
    }
    check_sides(width, height, limits)?;
    check_rgb_budget(width, height, limits)?;
    let frame = raw::Frame {
        buf: bytes,
        width,
        height,
        stride,
    };
    match format {
        RawFormat::Mjpeg => decode_image(bytes, limits),
        RawFormat::Yuyv => raw::yuyv(&frame),
        RawFormat::Nv12 => raw::nv12(&frame),
        RawFormat::Gray => raw::packed(&frame, 1, |p| [p[0], p[0], p[0]]),
        RawFormat::Rgb => raw::packed(&frame, 3, |p| [p[0], p[1], p[2]]),
        RawFormat::Bgr => raw::packed(&frame, 3, |p| [p[2], p[1], p[0]]),
    }
}
