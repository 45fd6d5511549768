//! Raw camera buffers (YUYV, NV12, grey, RGB, BGR) to RGB, with a line stride.

use image::RgbImage;

use super::DecodeError;

/// A raw buffer and its geometry, as [`super::decode_frame`] received them.
pub(super) struct Frame<'a> {
    pub buf: &'a [u8],
    pub width: u32,
    pub height: u32,
    /// Bytes from one line to the next; `None`: lines are packed.
    pub stride: Option<usize>,
}

impl Frame<'_> {
    fn short(&self, want: usize) -> DecodeError {
        DecodeError::BadLength {
            got: self.buf.len(),
            want,
            width: self.width,
            height: self.height,
        }
    }

    /// The stride, checked against a line of `line` bytes.
    fn stride(&self, line: usize) -> Result<usize, DecodeError> {
        let stride = self.stride.unwrap_or(line);
        if stride < line || line == 0 {
            return Err(DecodeError::BadStride { stride, min: line });
        }
        Ok(stride)
    }

    /// `lines` lines of `line` bytes each, `stride` bytes apart, from `offset`: every
    /// slice is exactly one line of pixels, without its padding. The last line needs
    /// no padding after it.
    fn lines(
        &self,
        offset: usize,
        lines: usize,
        line: usize,
        stride: usize,
    ) -> Result<impl Iterator<Item = &[u8]>, DecodeError> {
        let want = lines
            .checked_sub(1)
            .and_then(|n| n.checked_mul(stride))
            .and_then(|n| n.checked_add(line))
            .and_then(|n| n.checked_add(offset))
            .ok_or_else(|| self.short(usize::MAX))?;
        let data = self.buf.get(offset..want).ok_or_else(|| self.short(want))?;
        // Every chunk but the last is `stride` long and the last is `line` long, so
        // each has at least `line` bytes.
        Ok(data.chunks(stride).map(move |l| &l[..line]))
    }

    fn image(&self, rgb: Vec<u8>) -> Result<RgbImage, DecodeError> {
        let want = rgb.len();
        RgbImage::from_raw(self.width, self.height, rgb).ok_or_else(|| self.short(want))
    }
}

/// One BT.601 limited-range Y′CbCr sample to RGB; `u` and `v` centred on 0.
fn yuv_pixel(y: u8, u: f32, v: f32, out: &mut [u8]) {
    let c = 1.164 * (f32::from(y) - 16.0);
    let rgb = [c + 1.596 * v, c - 0.392 * u - 0.813 * v, c + 2.017 * u];
    for (d, s) in out.iter_mut().zip(rgb) {
        *d = s.round().clamp(0.0, 255.0) as u8;
    }
}

/// Convert a packed YUYV 4:2:2 buffer (Y0 U Y1 V per two pixels, BT.601 limited
/// range, what UVC cameras send) of `width` × `height` pixels to RGB.
///
/// `stride` is the number of bytes from one line to the next, at least `width` × 2
/// (`None`: exactly `width` × 2); the padding at the end of each line is skipped. The
/// width must be even. Errors: [`DecodeError::BadLength`] (short buffer, odd or zero
/// width, zero height), [`DecodeError::BadStride`]. No size limit is applied here:
/// [`super::decode_frame`] applies [`super::ImageLimits`].
pub fn yuyv_to_rgb(
    buf: &[u8],
    width: u32,
    height: u32,
    stride: Option<usize>,
) -> Result<RgbImage, DecodeError> {
    yuyv(&Frame {
        buf,
        width,
        height,
        stride,
    })
}

pub(super) fn yuyv(f: &Frame<'_>) -> Result<RgbImage, DecodeError> {
    let (w, h) = (f.width as usize, f.height as usize);
    if w == 0 || h == 0 || !w.is_multiple_of(2) {
        return Err(f.short(w * h * 2));
    }
    let stride = f.stride(w * 2)?;
    let mut out = vec![0u8; w * h * 3];
    for (line, px) in f
        .lines(0, h, w * 2, stride)?
        .zip(out.chunks_exact_mut(w * 3))
    {
        for (quad, px) in line.chunks_exact(4).zip(px.chunks_exact_mut(6)) {
            let (u, v) = (f32::from(quad[1]) - 128.0, f32::from(quad[3]) - 128.0);
            yuv_pixel(quad[0], u, v, &mut px[..3]);
            yuv_pixel(quad[2], u, v, &mut px[3..]);
        }
    }
    f.image(out)
}

/// NV12: `height` lines of luma, then `height / 2` lines of interleaved U V, all
/// `stride` apart (the chroma plane starts at `stride × height`).
pub(super) fn nv12(f: &Frame<'_>) -> Result<RgbImage, DecodeError> {
    let (w, h) = (f.width as usize, f.height as usize);
    if w == 0 || h == 0 || !w.is_multiple_of(2) || !h.is_multiple_of(2) {
        return Err(f.short(w * h * 3 / 2));
    }
    let stride = f.stride(w)?;
    let luma = f.lines(0, h, w, stride)?;
    let chroma_at = stride.checked_mul(h).ok_or_else(|| f.short(usize::MAX))?;
    let chroma: Vec<&[u8]> = f.lines(chroma_at, h / 2, w, stride)?.collect();
    let mut out = vec![0u8; w * h * 3];
    for (y, (line, px)) in luma.zip(out.chunks_exact_mut(w * 3)).enumerate() {
        let Some(uv) = chroma.get(y / 2) else {
            return Err(f.short(usize::MAX));
        };
        for ((ys, uv), px) in line
            .chunks_exact(2)
            .zip(uv.chunks_exact(2))
            .zip(px.chunks_exact_mut(6))
        {
            let (u, v) = (f32::from(uv[0]) - 128.0, f32::from(uv[1]) - 128.0);
            yuv_pixel(ys[0], u, v, &mut px[..3]);
            yuv_pixel(ys[1], u, v, &mut px[3..]);
        }
    }
    f.image(out)
}

/// Packed formats of `bpp` bytes per pixel; `rgb` maps one pixel's bytes to RGB.
pub(super) fn packed(
    f: &Frame<'_>,
    bpp: usize,
    rgb: impl Fn(&[u8]) -> [u8; 3],
) -> Result<RgbImage, DecodeError> {
    let (w, h) = (f.width as usize, f.height as usize);
    let stride = f.stride(w * bpp)?;
    let mut out = Vec::with_capacity(w * h * 3);
    for line in f.lines(0, h, w * bpp, stride)? {
        for p in line.chunks_exact(bpp) {
            out.extend_from_slice(&rgb(p));
        }
    }
    f.image(out)
}

#[cfg(test)]
mod tests {
    use super::super::{decode_frame, ImageLimits, RawFormat};
    use super::*;

    /// The same lines, `pad` bytes of 0xFF garbage after each.
    fn padded(tight: &[u8], line: usize, pad: usize) -> Vec<u8> {
        tight
            .chunks(line)
            .flat_map(|l| l.iter().copied().chain(std::iter::repeat_n(0xFF, pad)))
            .collect()
    }

    #[test]
    fn yuyv_gray_white_and_colour() {
        // Two pixels: Y=16 (black) and Y=235 (white), neutral chroma.
        let img = yuyv_to_rgb(&[16, 128, 235, 128], 2, 1, None).expect("yuyv");
        assert_eq!(img.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(1, 0).0, [255, 255, 255]);
        // Pure red in BT.601 limited range: Y=81, U=90, V=240.
        let red = yuyv_to_rgb(&[81, 90, 81, 240], 2, 1, None).expect("yuyv");
        let p = red.get_pixel(0, 0).0;
        assert!(p[0] >= 250 && p[1] <= 5 && p[2] <= 5, "{p:?}");
    }

    #[test]
    fn yuyv_rejects_short_buffers_odd_widths_and_short_strides() {
        assert!(yuyv_to_rgb(&[0; 7], 2, 2, None).is_err());
        assert!(yuyv_to_rgb(&[0; 6], 3, 1, None).is_err());
        assert!(yuyv_to_rgb(&[], 0, 0, None).is_err());
        assert!(matches!(
            yuyv_to_rgb(&[0; 64], 4, 2, Some(7)),
            Err(DecodeError::BadStride { stride: 7, min: 8 })
        ));
        // Two lines 12 bytes apart: the second needs bytes 12..20.
        assert!(yuyv_to_rgb(&[0; 19], 4, 2, Some(12)).is_err());
        assert!(yuyv_to_rgb(&[0; 20], 4, 2, Some(12)).is_ok());
    }

    #[test]
    fn strided_yuyv_never_reads_the_padding() {
        let (w, h) = (6u32, 5u32);
        let mut rng = fastrand::Rng::with_seed(7);
        let tight: Vec<u8> = (0..w * h * 2).map(|_| rng.u8(..)).collect();
        let want = yuyv_to_rgb(&tight, w, h, None).expect("tight");
        for pad in [2usize, 4, 52] {
            let buf = padded(&tight, w as usize * 2, pad);
            let stride = w as usize * 2 + pad;
            assert_eq!(
                yuyv_to_rgb(&buf, w, h, Some(stride)).expect("strided"),
                want,
                "pad {pad}"
            );
            // Without the trailing padding of the last line, too.
            let cut = &buf[..buf.len() - pad];
            let limits = ImageLimits::default();
            let got = decode_frame(cut, w, h, Some(stride), RawFormat::Yuyv, &limits);
            assert_eq!(got.expect("decode_frame"), want, "pad {pad}");
        }
    }

    #[test]
    fn strided_nv12_gray_rgb_and_bgr_never_read_the_padding() {
        let (w, h) = (6u32, 4u32);
        let (wu, hu) = (w as usize, h as usize);
        let mut rng = fastrand::Rng::with_seed(11);
        let limits = ImageLimits::default();
        let pad = 10;
        for (format, line, lines) in [
            (RawFormat::Nv12, wu, hu + hu / 2),
            (RawFormat::Gray, wu, hu),
            (RawFormat::Rgb, wu * 3, hu),
            (RawFormat::Bgr, wu * 3, hu),
        ] {
            let tight: Vec<u8> = (0..line * lines).map(|_| rng.u8(..)).collect();
            let want = decode_frame(&tight, w, h, None, format, &limits).expect("tight");
            let buf = padded(&tight, line, pad);
            let got = decode_frame(&buf, w, h, Some(line + pad), format, &limits);
            assert_eq!(got.expect("strided"), want, "{format:?}");
        }
    }

    #[test]
    fn nv12_matches_the_same_picture_in_yuyv() {
        // 4x2 with distinct chroma per pair of columns: NV12 shares it over two lines.
        let luma = [20u8, 40, 60, 80, 100, 120, 140, 160];
        let uv = [90u8, 240, 200, 60];
        let nv12: Vec<u8> = luma.iter().chain(&uv).copied().collect();
        let yuyv = [
            20, 90, 40, 240, 60, 200, 80, 60, 100, 90, 120, 240, 140, 200, 160, 60,
        ];
        let limits = ImageLimits::default();
        assert_eq!(
            decode_frame(&nv12, 4, 2, None, RawFormat::Nv12, &limits).expect("nv12"),
            yuyv_to_rgb(&yuyv, 4, 2, None).expect("yuyv")
        );
    }
}
