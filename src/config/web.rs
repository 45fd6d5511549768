//! `[web]`: the console the daemon serves (see docs/console.md): where it
//! listens, TLS, who may use it, and the live view's rate and size.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Who may use the console.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WebAuth {
    /// A password: generated at the first start (printed once in the log), stored
    /// hashed in the state directory, changed with `edgehead set-password`.
    #[default]
    Password,
    /// No login: allowed only when the console listens on a loopback address.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct WebConfig {
    /// Serve the console.
    pub enabled: bool,
    /// Address and port to listen on; `0.0.0.0:8480` (every interface) so a board
    /// owner opens it from a laptop. Port 0 picks a free port (tests).
    pub listen: String,
    /// PEM certificate chain and private key: serve HTTPS instead of HTTP.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub auth: WebAuth,
    /// A session ends after this long without a request, seconds.
    pub session_idle_secs: u64,
    /// Most frames per second of the live view, and its longest side in pixels.
    pub live_fps: f64,
    pub live_max_side: u32,
    /// The console's address as Home Assistant links to it (`configuration_url`);
    /// empty: `http(s)://<host name>:<port>/`.
    pub public_url: String,
    /// Most connections served at once.
    pub max_connections: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: DEFAULT_LISTEN.into(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            auth: WebAuth::Password,
            session_idle_secs: 12 * 3600,
            live_fps: 2.0,
            live_max_side: 640,
            public_url: String::new(),
            max_connections: 64,
        }
    }
}

/// The console's default address: every interface, port 8480.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8480";
