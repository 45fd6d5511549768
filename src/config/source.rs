//! `[source]`: where frames come from (a V4L2 camera, a program writing MJPEG,
//! an HTTP camera, a folder of images, or generated frames), as written by the
//! user. Checked by [`super::validate`]; opened by [`crate::source::opener`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SourceConfig {
    /// Which source produces frames: `camera`, `files` or `synthetic`.
    pub kind: SourceKind,
    pub camera: CameraConfig,
    pub files: FilesConfig,
    pub synthetic: SyntheticConfig,
    pub command: CommandConfig,
    pub http: HttpConfig,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            kind: SourceKind::Files,
            camera: CameraConfig::default(),
            files: FilesConfig::default(),
            synthetic: SyntheticConfig::default(),
            command: CommandConfig::default(),
            http: HttpConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Camera,
    Files,
    Synthetic,
    /// A program writing MJPEG to its standard output (rpicam-vid, ffmpeg, GStreamer).
    Command,
    /// An HTTP camera: an MJPEG stream or snapshots.
    Http,
}

/// How the `http` source reads the camera.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HttpMode {
    /// One request whose body is `multipart/x-mixed-replace` JPEG images.
    #[default]
    Stream,
    /// A request for one JPEG image every `interval_ms`.
    Snapshot,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HttpConfig {
    /// `http://` or `https://` URL of the stream or the snapshot.
    pub url: String,
    pub mode: HttpMode,
    /// Snapshot mode: milliseconds between requests.
    pub interval_ms: u64,
    /// Basic or Digest authentication, as the camera asks; empty: none.
    pub username: String,
    pub password: String,
    /// A PEM file of CA certificates to trust instead of the system's (a camera
    /// with a self-signed certificate).
    pub ca_file: PathBuf,
    pub connect_timeout_ms: u64,
    /// Longest wait for data on a socket read, and for a frame in stream mode.
    pub read_timeout_ms: u64,
    /// First wait before reconnecting; doubles up to the maximum.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            mode: HttpMode::Stream,
            interval_ms: 1000,
            username: String::new(),
            password: String::new(),
            ca_file: PathBuf::new(),
            connect_timeout_ms: 5_000,
            read_timeout_ms: 10_000,
            reconnect_min_ms: 1_000,
            reconnect_max_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CommandConfig {
    /// The program to start (a path, or a name looked up in PATH); no shell.
    pub program: String,
    /// Its arguments, one string each.
    pub args: Vec<String>,
    /// Restart the program when it has sent no complete frame for this long.
    pub frame_timeout_ms: u64,
    /// First wait before restarting a program that exited or stalled; doubles up
    /// to the maximum.
    pub restart_min_ms: u64,
    pub restart_max_ms: u64,
}

impl Default for CommandConfig {
    fn default() -> Self {
        Self {
            program: String::new(),
            args: Vec::new(),
            frame_timeout_ms: 10_000,
            restart_min_ms: 1_000,
            restart_max_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CameraConfig {
    /// A device index (`0`) or a path (`/dev/video0`).
    pub device: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// `mjpeg` or `yuyv`: what the camera is asked to send.
    pub format: PixelFormat,
    /// First wait before reopening a camera that failed; doubles up to the maximum.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
}

impl Default for CameraConfig {
    fn default() -> Self {
        Self {
            device: "0".into(),
            width: 640,
            height: 480,
            fps: 15,
            format: PixelFormat::Mjpeg,
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PixelFormat {
    Mjpeg,
    Yuyv,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct FilesConfig {
    /// A folder (every .jpg/.jpeg/.png below it, sorted) or a glob such as `shots/*.jpg`.
    pub path: String,
    /// Frames per second to replay at.
    pub fps: f64,
    /// Start again at the first image after the last one; otherwise the source ends.
    #[serde(rename = "loop")]
    pub repeat: bool,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            path: "tests/fixtures/images".into(),
            fps: 2.0,
            repeat: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SyntheticConfig {
    pub width: u32,
    pub height: u32,
    /// Frames per second; 0 means as fast as they are taken.
    pub fps: f64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            width: 640,
            height: 480,
            fps: 10.0,
        }
    }
}
