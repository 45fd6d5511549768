//! The V4L2 camera source (nokhwa), and decoding of raw camera buffers.
//!
//! MJPEG is decoded with the `image` crate rather than nokhwa's mozjpeg decoder,
//! which panics on corrupt data; a corrupt frame here is an error that skips one frame.

use std::path::Path;

use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
    Resolution,
};

use super::decode::{decode_frame, RawFormat};
use super::{CaptureError, FrameSource, Shot};
#[cfg(test)]
use crate::config::CameraConfig;
use crate::config::PixelFormat;

/// Frames in a row that may fail to decode before the camera counts as broken.
const MAX_BAD_FRAMES: u32 = 30;

pub struct Camera {
    cam: nokhwa::Camera,
    bad_frames: u32,
}

/// `0`, `/dev/video0` or a symlink to it (`/dev/v4l/by-id/...`) → the V4L2 index.
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
        Ok(Self { cam, bad_frames: 0 })
    }
}

impl FrameSource for Camera {
    fn next_frame(&mut self) -> Result<Option<Shot>, CaptureError> {
        loop {
            let buf = self
                .cam
                .frame()
                .map_err(|e| CaptureError::Transient(format!("camera read failed: {e}")))?;
            let res = buf.resolution();
            match decode_frame(
                buf.buffer(),
                res.width(),
                res.height(),
                raw_format(buf.source_frame_format()),
            ) {
                Ok(img) => {
                    self.bad_frames = 0;
                    return Ok(Some(img.into()));
                }
                Err(e) => {
                    self.bad_frames += 1;
                    tracing::debug!(error = %e, "skipping undecodable camera frame");
                    if self.bad_frames >= MAX_BAD_FRAMES {
                        return Err(CaptureError::Transient(format!(
                            "{MAX_BAD_FRAMES} frames in a row could not be decoded: {e}"
                        )));
                    }
                }
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
    pub index: u32,
    pub name: String,
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
    fn opening_a_missing_camera_is_transient() {
        let c = CameraConfig {
            device: "/dev/video-missing-for-test".into(),
            ..CameraConfig::default()
        };
        assert!(matches!(Camera::open(&c), Err(CaptureError::Transient(_))));
    }
}
