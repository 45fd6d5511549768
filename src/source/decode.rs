//! Decoding untrusted image bytes (files, camera buffers, MQTT payloads) into RGB,
//! with limits, and never a panic.

use std::io::Cursor;

use image::{ImageFormat, ImageReader, Limits, RgbImage};

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a JPEG or PNG image")]
    UnknownFormat,
    #[error("image is {width}x{height}, larger than the limit of {max} pixels per side")]
    TooLarge { width: u32, height: u32, max: u32 },
    #[error("cannot decode image: {0}")]
    Corrupt(String),
    #[error("YUYV buffer has {got} bytes, {width}x{height} needs {want}")]
    BadLength {
        got: usize,
        want: usize,
        width: u32,
        height: u32,
    },
}

/// Decode a JPEG or PNG, refusing images wider or taller than `max_side`.
pub fn decode_image(bytes: &[u8], max_side: u32) -> Result<RgbImage, DecodeError> {
    let format = image::guess_format(bytes).map_err(|_| DecodeError::UnknownFormat)?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png) {
        return Err(DecodeError::UnknownFormat);
    }
    // Reading the header allocates nothing; the size check comes before decoding.
    let reader = ImageReader::with_format(Cursor::new(bytes), format);
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    if width > max_side || height > max_side {
        return Err(DecodeError::TooLarge {
            width,
            height,
            max: max_side,
        });
    }
    if width == 0 || height == 0 {
        return Err(DecodeError::Corrupt("image has no pixels".into()));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits_for(max_side));
    let img = reader
        .decode()
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    Ok(img.into_rgb8())
}

/// Pixel and allocation limits: RGBA at 16 bits per channel is the most a decoder
/// may allocate for an image of the allowed size.
fn limits_for(max_side: u32) -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(max_side);
    limits.max_image_height = Some(max_side);
    limits.max_alloc = Some(max_side as u64 * max_side as u64 * 8);
    limits
}

/// Convert a packed YUYV 4:2:2 buffer (Y0 U Y1 V per two pixels, BT.601 limited
/// range, what UVC cameras send) to RGB.
pub fn yuyv_to_rgb(buf: &[u8], width: u32, height: u32) -> Result<RgbImage, DecodeError> {
    let want = width as usize * height as usize * 2;
    if !width.is_multiple_of(2) || buf.len() < want || width == 0 || height == 0 {
        return Err(DecodeError::BadLength {
            got: buf.len(),
            want,
            width,
            height,
        });
    }
    let mut out = vec![0u8; width as usize * height as usize * 3];
    for (quad, px) in buf[..want].chunks_exact(4).zip(out.chunks_exact_mut(6)) {
        let (u, v) = (quad[1] as f32 - 128.0, quad[3] as f32 - 128.0);
        for (k, y) in [quad[0], quad[2]].into_iter().enumerate() {
            let c = 1.164 * (y as f32 - 16.0);
            let rgb = [c + 1.596 * v, c - 0.392 * u - 0.813 * v, c + 2.017 * u];
            for (d, s) in px[k * 3..k * 3 + 3].iter_mut().zip(rgb) {
                *d = s.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    RgbImage::from_raw(width, height, out).ok_or(DecodeError::BadLength {
        got: buf.len(),
        want,
        width,
        height,
    })
}

/// Pixel formats of raw camera buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFormat {
    Mjpeg,
    /// Packed YUYV 4:2:2.
    Yuyv,
    /// Planar Y, then interleaved UV at half resolution.
    Nv12,
    Gray,
    Rgb,
    Bgr,
}

/// Decode one raw camera buffer to RGB.
pub fn decode_frame(
    bytes: &[u8],
    width: u32,
    height: u32,
    format: RawFormat,
) -> Result<RgbImage, DecodeError> {
    let pixels = width as usize * height as usize;
    let short = |want: usize| DecodeError::BadLength {
        got: bytes.len(),
        want,
        width,
        height,
    };
    match format {
        RawFormat::Mjpeg => decode_image(bytes, 16_384),
        RawFormat::Yuyv => yuyv_to_rgb(bytes, width, height),
        RawFormat::Rgb => RgbImage::from_raw(
            width,
            height,
            bytes
                .get(..pixels * 3)
                .ok_or_else(|| short(pixels * 3))?
                .to_vec(),
        )
        .ok_or_else(|| short(pixels * 3)),
        RawFormat::Bgr => {
            let raw = bytes.get(..pixels * 3).ok_or_else(|| short(pixels * 3))?;
            let rgb = raw
                .chunks_exact(3)
                .flat_map(|p| [p[2], p[1], p[0]])
                .collect();
            RgbImage::from_raw(width, height, rgb).ok_or_else(|| short(pixels * 3))
        }
        RawFormat::Gray => {
            let raw = bytes.get(..pixels).ok_or_else(|| short(pixels))?;
            let rgb = raw.iter().flat_map(|&g| [g, g, g]).collect();
            RgbImage::from_raw(width, height, rgb).ok_or_else(|| short(pixels))
        }
        RawFormat::Nv12 => {
            let want = pixels + pixels / 2;
            if bytes.len() < want || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
                return Err(short(want));
            }
            let (luma, chroma) = bytes.split_at(pixels);
            let (w, h) = (width as usize, height as usize);
            let mut yuyv = Vec::with_capacity(pixels * 2);
            for y in 0..h {
                for x in (0..w).step_by(2) {
                    let c = (y / 2) * w + x;
                    yuyv.extend_from_slice(&[
                        luma[y * w + x],
                        chroma[c],
                        luma[y * w + x + 1],
                        chroma[c + 1],
                    ]);
                }
            }
            yuyv_to_rgb(&yuyv, width, height)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(img: &RgbImage) -> Vec<u8> {
        let mut bytes = Vec::new();
        img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Jpeg)
            .expect("encode");
        bytes
    }

    #[test]
    fn decodes_a_jpeg_close_to_its_source() {
        let src = RgbImage::from_pixel(64, 48, image::Rgb([200, 30, 90]));
        let img = decode_image(&jpeg(&src), 4096).expect("decode");
        assert_eq!(img.dimensions(), (64, 48));
        let p = img.get_pixel(10, 10).0;
        for (a, b) in p.iter().zip([200u8, 30, 90]) {
            assert!((*a as i32 - b as i32).abs() <= 3, "{p:?}");
        }
    }

    #[test]
    fn refuses_garbage_truncated_and_oversized_images() {
        assert!(matches!(
            decode_image(b"hello world", 4096),
            Err(DecodeError::UnknownFormat)
        ));
        assert!(matches!(
            decode_image(b"", 4096),
            Err(DecodeError::UnknownFormat)
        ));
        let bytes = jpeg(&RgbImage::from_pixel(64, 48, image::Rgb([1, 2, 3])));
        // A JPEG header followed by noise: an error, not a panic.
        let mut broken = bytes[..bytes.len() / 3].to_vec();
        broken.extend(std::iter::repeat_n(0x55u8, 100));
        assert!(decode_image(&broken, 4096).is_err());
        assert!(matches!(
            decode_image(&bytes, 32),
            Err(DecodeError::TooLarge {
                width: 64,
                height: 48,
                max: 32
            })
        ));
    }

    #[test]
    fn yuyv_gray_white_and_colour() {
        // Two pixels: Y=16 (black) and Y=235 (white), neutral chroma.
        let img = yuyv_to_rgb(&[16, 128, 235, 128], 2, 1).expect("yuyv");
        assert_eq!(img.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(1, 0).0, [255, 255, 255]);
        // Pure red in BT.601 limited range: Y=81, U=90, V=240.
        let red = yuyv_to_rgb(&[81, 90, 81, 240], 2, 1).expect("yuyv");
        let p = red.get_pixel(0, 0).0;
        assert!(p[0] >= 250 && p[1] <= 5 && p[2] <= 5, "{p:?}");
    }

    #[test]
    fn yuyv_rejects_short_buffers_and_odd_widths() {
        assert!(yuyv_to_rgb(&[0; 7], 2, 2).is_err());
        assert!(yuyv_to_rgb(&[0; 6], 3, 1).is_err());
        assert!(yuyv_to_rgb(&[], 0, 0).is_err());
    }

    #[test]
    fn decodes_recorded_mjpeg_and_yuyv_buffers() {
        let src = RgbImage::from_fn(16, 8, |x, _| image::Rgb([(x * 16) as u8, 128, 64]));
        let mut jpeg = Vec::new();
        src.write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .expect("encode");
        let img = decode_frame(&jpeg, 16, 8, RawFormat::Mjpeg).expect("mjpeg");
        assert_eq!(img.dimensions(), (16, 8));
        // Mid-grey YUYV (Y=126, neutral chroma) is grey in RGB.
        let yuyv: Vec<u8> = std::iter::repeat_n([126u8, 128, 126, 128], 8 * 8)
            .flatten()
            .collect();
        let img = decode_frame(&yuyv, 16, 8, RawFormat::Yuyv).expect("yuyv");
        let p = img.get_pixel(5, 5).0;
        assert!(
            p[0] == p[1] && p[1] == p[2] && (127..=130).contains(&p[0]),
            "{p:?}"
        );
        let nv12: Vec<u8> = std::iter::repeat_n(126u8, 16 * 8)
            .chain(std::iter::repeat_n(128u8, 16 * 4))
            .collect();
        assert_eq!(
            decode_frame(&nv12, 16, 8, RawFormat::Nv12).expect("nv12"),
            img
        );
        let gray = decode_frame(&[7u8; 16 * 8], 16, 8, RawFormat::Gray).expect("gray");
        assert_eq!(gray.get_pixel(0, 0).0, [7, 7, 7]);
        let bgr = decode_frame(&[1, 2, 3].repeat(16 * 8), 16, 8, RawFormat::Bgr).expect("bgr");
        assert_eq!(bgr.get_pixel(0, 0).0, [3, 2, 1]);
    }

    #[test]
    fn corrupt_and_short_camera_buffers_are_errors() {
        assert!(decode_frame(&[0xFF, 0xD8, 0xFF, 0x00, 1, 2, 3], 16, 8, RawFormat::Mjpeg).is_err());
        assert!(decode_frame(&[0u8; 10], 16, 8, RawFormat::Yuyv).is_err());
        assert!(decode_frame(&[0u8; 10], 16, 8, RawFormat::Nv12).is_err());
        assert!(decode_frame(&[0u8; 10], 16, 8, RawFormat::Rgb).is_err());
        assert!(decode_frame(&[0u8; 10], 16, 8, RawFormat::Gray).is_err());
    }
}
