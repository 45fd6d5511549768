//! The console: a web page served by the daemon itself, on the board (see
//! docs/console.md). A second way into the same operations as MQTT: every page
//! action is a request of the JSON API under `/api/`, parsed by the same parser
//! ([`crate::learn::ops::parse`]) and carried out by the same learners and
//! classifier manager, with the same answers and errors.
//!
//! - [`server`]: the listener, TLS and HTTP connections; [`auth`]: the password,
//!   sessions, CSRF and the login rate limit; [`api`]: the routes; [`live`]: the
//!   live view, encoded only while someone watches; [`events`]: updates pushed to
//!   the page (server-sent events) and the last hour's figures; [`assets`]: the
//!   page itself, embedded in the binary.

pub mod api;
pub mod assets;
pub mod auth;
pub mod bundles;
pub mod events;
pub mod live;
pub mod reply;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::classifier::Classifier;
use crate::config::{LearnConfig, Settings, WebAuth, WebConfig};
use crate::learn::Router;
use crate::mqtt::Publisher;
use crate::source::{FrameRx, SourceState};
use crate::stats::Stats;
use auth::{Auth, AuthError};
pub use server::ServeError;

/// Why the console cannot start (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("console password: {0}")]
    Auth(#[from] AuthError),
}

/// The console bound and ready, not serving yet.
pub struct Bound {
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    auth: Auth,
    /// Where it listens (the port chosen when `web.listen` asks for port 0).
    pub addr: SocketAddr,
}

/// Bind the console's address, read the TLS files and the password (generating
/// one at the first start: it is logged once). Errors: the port is taken, the TLS
/// files or the password file cannot be read.
pub fn bind(settings: &Settings, listen: SocketAddr) -> Result<Bound, WebError> {
    let web = &settings.web;
    let tls = if web.tls_cert.as_os_str().is_empty() {
        None
    } else {
        Some(server::tls_acceptor(&web.tls_cert, &web.tls_key)?)
    };
    let auth = match web.auth {
        WebAuth::None => Auth::open(),
        WebAuth::Password => {
            std::fs::create_dir_all(settings.state_dir()).map_err(|source| AuthError::Read {
                path: settings.state_dir().to_path_buf(),
                source,
            })?;
            let (auth, generated) = Auth::with_password(
                settings.state_dir(),
                std::time::Duration::from_secs(web.session_idle_secs),
            )?;
            if let Some(p) = generated {
                tracing::warn!(
                    password = %p,
                    "console password generated; it is shown only this once: change it with `edgehead set-password`"
                );
            }
            auth
        }
    };
    let listener = server::bind(listen)?;
    let addr = listener.local_addr().unwrap_or(listen);
    Ok(Bound {
        listener,
        tls,
        auth,
        addr,
    })
}

/// The console's URL as Home Assistant and the log show it: `web.public_url`, or
/// `http(s)://<host>:<port>/` with the host name (the address when it listens on
/// one address).
pub fn public_url(web: &WebConfig, addr: SocketAddr, host: &str) -> String {
    if !web.public_url.trim().is_empty() {
        return web.public_url.trim().to_string();
    }
    let scheme = if web.tls_cert.as_os_str().is_empty() {
        "http"
    } else {
        "https"
    };
    let host = if addr.ip().is_unspecified() {
        host.to_string()
    } else {
        addr.ip().to_string()
    };
    format!("{scheme}://{host}:{}/", addr.port())
}

/// This machine's host name as a laptop on the same network reaches it: the
/// name with `.local` (mDNS, as Raspberry Pi OS's avahi answers it) when it has
/// no domain; `localhost` when there is none.
pub fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = raw.trim();
    if name.is_empty() || name.len() > 253 {
        "localhost".into()
    } else if name.contains('.') {
        name.to_string()
    } else {
        format!("{name}.local")
    }
}

/// What the console reads and reaches: the daemon's handles.
pub struct Handles {
    pub router: Router,
    pub classifiers: watch::Receiver<Arc<Vec<Classifier>>>,
    pub frames: FrameRx,
    pub source: watch::Receiver<SourceState>,
    /// The status document the status task publishes.
    pub status: watch::Receiver<Value>,
    pub stats: Arc<Stats>,
    pub publisher: Publisher,
    pub state_dir: PathBuf,
}

/// The console's shared state, behind every route.
pub struct Web {
    pub auth: Auth,
    pub handles: Handles,
    pub config: WebConfig,
    pub learn: LearnConfig,
    pub tls: bool,
    pub live: live::Live,
    pub history: events::History,
    pub started: Instant,
    /// The state directory (bundles are exported from it).
    pub state_dir: std::path::PathBuf,
    /// Ends event streams and live views at shutdown.
    pub stop: CancellationToken,
}

/// Serve the console until `stop`.
pub async fn run(bound: Bound, settings: Arc<Settings>, handles: Handles, stop: CancellationToken) {
    let web = Arc::new(Web {
        auth: bound.auth,
        live: live::Live::new(
            handles.frames.clone(),
            settings.web.live_fps,
            settings.web.live_max_side,
        ),
        history: events::History::default(),
        handles,
        config: settings.web.clone(),
        learn: settings.learn.clone(),
        tls: bound.tls.is_some(),
        started: Instant::now(),
        state_dir: settings.state_dir().to_path_buf(),
        stop: stop.clone(),
    });
    tokio::spawn(live::encoder(web.clone()));
    tokio::spawn(events::sampler(web.clone()));
    let app = api::router(web.clone());
    server::serve(
        bound.listener,
        bound.tls,
        app,
        settings.web.max_connections,
        stop,
    )
    .await;
}
