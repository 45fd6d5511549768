//! The V4L2 camera source (nokhwa), and decoding of raw camera buffers.
//!
//! Frames are decoded by [`crate::imaging::decode::decode_frame`] rather than nokhwa's mozjpeg
//! decoder, which panics on corrupt data: MJPEG with the strict JPEG path (the
//! Huffman tables webcams leave out are added), raw formats with their line stride.
//! A corrupt frame here is an error that skips one frame.

use std::path::Path;

use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
    Resolution,
};

use super::{BadFrames, CaptureError, FrameSource, Shot};
#[cfg(test)]
use crate::config::CameraConfig;
use crate::config::PixelFormat;
use crate::imaging::decode::{decode_frame, ImageLimits, RawFormat};

/// A streaming V4L2 camera; the stream stops when it is dropped.
pub struct Camera {
    cam: nokhwa::Camera,
    bad_frames: BadFrames,
    limits: ImageLimits,
}

/// `0`, `/dev/video0` or a symlink to it (`/dev/v4l/by-id/...`) → the V4L2 index.
/// A path that does not resolve is transient (the camera may be plugged in later);
/// one that resolves to something other than `/dev/videoN` is fatal.
pub fn device_index(device: &str) -> Result<u32, CaptureError> {
    let device = device.trim();
    if let Ok(i) = device.parse::<u32>() {
        return Ok(i);
    }
    let path = Path::new(device);
    let real = std::fs::canonicalize(path)
        .map_err(|e| CaptureError::Transient(format!("camera {device}: {e}")))?;
    real.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("video"))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            CaptureError::Fatal(format!(
                "camera {device} is not a /dev/videoN device (resolved to {})",
                real.display()
            ))
        })
}

fn frame_format(f: PixelFormat) -> FrameFormat {
    match f {
        PixelFormat::Mjpeg => FrameFormat::MJPEG,
        PixelFormat::Yuyv => FrameFormat::YUYV,
    }
}

impl Camera {
    /// Open `c.device` and start streaming the format closest to the configured one.
    /// Frames are decoded with the default [`ImageLimits`] until
    /// [`Camera::with_limits`] sets others. Errors are transient (the device may
    /// appear later) unless the device is not a video device.
    pub fn open(c: &crate::config::CameraConfig) -> Result<Self, CaptureError> {
        let index = device_index(&c.device)?;
        let wanted = CameraFormat::new(
            Resolution::new(c.width, c.height),
            frame_format(c.format),
            c.fps,
        );
        let request = RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(wanted));
        let transient = |what: &str, e: nokhwa::NokhwaError| {
            CaptureError::Transient(format!("camera {}: {what}: {e}", c.device))
        };
        let mut cam = nokhwa::Camera::new(CameraIndex::Index(index), request)
            .map_err(|e| transient("cannot open", e))?;
        cam.open_stream()
            .map_err(|e| transient("cannot start streaming", e))?;
        let got = cam.camera_format();
        tracing::info!(
            device = %c.device,
            format = %got,
            "camera streaming"
        );
        Ok(Self {
            cam,
            bad_frames: BadFrames::new(BadFrames::STREAM_LIMIT),
            limits: ImageLimits::default(),
        })
    }

    /// Decode frames with these limits (`ImageLimits::from_config(&config.learn)`).
    pub fn with_limits(mut self, limits: ImageLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// Bytes per line of a raw frame buffer, inferred from its length.
///
/// V4L2 reports the line stride (`bytesperline`) of raw formats, and some drivers pad
/// each line beyond `width × bytes per pixel`, but nokhwa does not pass it on. The
/// buffer it hands over is the whole V4L2 buffer, normally `bytesperline × lines`
/// (`lines` = height, or height × 3/2 for NV12), so: if the length is a multiple of
/// the number of lines and each share holds at least one line of pixels, that share
/// is the stride. Otherwise (a length that is not a multiple, e.g. rounded up by the
/// driver) lines are taken as packed. `None` for MJPEG, which has no lines.
fn infer_stride(len: usize, width: u32, height: u32, format: RawFormat) -> Option<usize> {
    let (w, h) = (width as usize, height as usize);
    let (line, lines) = match format {
        RawFormat::Mjpeg => return None,
        RawFormat::Yuyv => (w * 2, h),
        RawFormat::Nv12 => (w, h + h / 2),
        RawFormat::Gray => (w, h),
        RawFormat::Rgb | RawFormat::Bgr => (w * 3, h),
    };
    if lines == 0 || !len.is_multiple_of(lines) {
        return None;
    }
    let stride = len / lines;
    (stride >= line).then_some(stride)
}

impl FrameSource for Camera {
    fn next_frame(&mut self) -> Result<Option<Shot>, CaptureError> {
        loop {
            let buf = self
                .cam
                .frame()
                .map_err(|e| CaptureError::Transient(format!("camera read failed: {e}")))?;
            let res = buf.resolution();
            let format = raw_format(buf.source_frame_format());
            let bytes = buf.buffer();
            let stride = infer_stride(bytes.len(), res.width(), res.height(), format);
            let decoded = decode_frame(
                bytes,
                res.width(),
                res.height(),
                stride,
                format,
                &self.limits,
            );
            if let Some(img) = self.bad_frames.check("camera", decoded)? {
                return Ok(Some(img.into()));
            }
        }
    }

    fn fps(&self) -> Option<f64> {
        None
    }
}

fn raw_format(f: FrameFormat) -> RawFormat {
    match f {
        FrameFormat::MJPEG => RawFormat::Mjpeg,
        FrameFormat::YUYV => RawFormat::Yuyv,
        FrameFormat::NV12 => RawFormat::Nv12,
        FrameFormat::GRAY => RawFormat::Gray,
        FrameFormat::RAWRGB => RawFormat::Rgb,
        FrameFormat::RAWBGR => RawFormat::Bgr,
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        let _ = self.cam.stop_stream();
    }
}

/// One video device as `edgehead devices` lists it.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// The N of `/dev/videoN`.
    pub index: u32,
    /// The driver's name for the device.
    pub name: String,
    /// Where it is (bus, path), as nokhwa reports it.
    pub description: String,
    /// The formats it offers (`640x480@30 MJPEG`), or why it is not a capture device.
    pub formats: Result<Vec<String>, String>,
}

/// Every V4L2 device, each probed for the formats it can capture. Metadata and ISP
/// nodes (which nokhwa also lists) show up with an error instead of formats.
pub fn list_devices() -> Result<Vec<DeviceInfo>, String> {
    let infos = nokhwa::query(ApiBackend::Auto).map_err(|e| e.to_string())?;
    Ok(infos
        .into_iter()
        .filter_map(|info| {
            let index = info.index().as_index().ok()?;
            let formats = nokhwa::Camera::new(
                CameraIndex::Index(index),
                RequestedFormat::new::<RgbFormat>(RequestedFormatType::None),
            )
            .and_then(|mut cam| cam.compatible_camera_formats())
            .map_err(|e| format!("not a capture device: {e}"))
            .map(|mut f| {
                f.sort_by_key(|f| (f.format() as u8, f.width(), f.height(), f.frame_rate()));
                f.iter()
                    .map(|f| {
                        format!(
                            "{}x{}@{} {}",
                            f.width(),
                            f.height(),
                            f.frame_rate(),
                            f.format()
                        )
                    })
                    .collect()
            });
            Some(DeviceInfo {
                index,
                name: info.human_name(),
                description: info.description().to_string(),
                formats,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_map_to_indices() {
        assert_eq!(device_index("0").expect("index"), 0);
        assert_eq!(device_index(" 3 ").expect("index"), 3);
        // A path that does not exist (yet) is worth retrying: the camera may be plugged in later.
        assert!(matches!(
            device_index("/dev/video-missing-for-test"),
            Err(CaptureError::Transient(_))
        ));
        // An existing file that is not a video device is a configuration mistake.
        assert!(matches!(
            device_index("/dev/null"),
            Err(CaptureError::Fatal(_))
        ));
    }

    #[test]
    fn strides_are_inferred_from_whole_lines_only() {
        // 640x480 YUYV packed, and padded to 1344 bytes per line.
        assert_eq!(
            infer_stride(640 * 2 * 480, 640, 480, RawFormat::Yuyv),
            Some(1280)
        );
        assert_eq!(
            infer_stride(1344 * 480, 640, 480, RawFormat::Yuyv),
            Some(1344)
        );
        // Not a whole number of lines: packed.
        assert_eq!(
            infer_stride(1280 * 480 + 100, 640, 480, RawFormat::Yuyv),
            None
        );
        // Shorter than one line each: packed (decode_frame then reports the length).
        assert_eq!(infer_stride(480 * 10, 640, 480, RawFormat::Yuyv), None);
        // NV12: luma and half-height chroma lines share the stride.
        assert_eq!(
            infer_stride(704 * 720, 640, 480, RawFormat::Nv12),
            Some(704)
        );
        assert_eq!(infer_stride(100, 640, 480, RawFormat::Mjpeg), None);
        assert_eq!(infer_stride(0, 640, 0, RawFormat::Gray), None);
    }

    #[test]
    fn a_padded_yuyv_frame_decodes_like_the_packed_one() {
        let (w, h, pad) = (8u32, 4u32, 16usize);
        let packed: Vec<u8> = (0..w * h * 2).map(|i| (i * 7 % 251) as u8).collect();
        let padded: Vec<u8> = packed
            .chunks(w as usize * 2)
            .flat_map(|l| l.iter().copied().chain(std::iter::repeat_n(0xFF, pad)))
            .collect();
        let limits = ImageLimits::default();
        let decode = |buf: &[u8]| {
            let stride = infer_stride(buf.len(), w, h, RawFormat::Yuyv);
            decode_frame(buf, w, h, stride, RawFormat::Yuyv, &limits).expect("decode")
        };
        assert_eq!(decode(&padded), decode(&packed));
    }

    #[test]
    fn opening_a_missing_camera_is_transient() {
        let c = CameraConfig {
            device: "/dev/video-missing-for-test".into(),
            ..CameraConfig::default()
        };
        assert!(matches!(Camera::open(&c), Err(CaptureError::Transient(_))));
    }
}
