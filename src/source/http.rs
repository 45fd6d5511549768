//! The `http` source: an HTTP camera, as an MJPEG stream or as snapshots.
//!
//! - `mode = "stream"`: one long GET whose body is `multipart/x-mixed-replace`
//!   (ESP32-CAM firmware, mjpg-streamer, most IP cameras' `mjpg` URLs). The body is
//!   split into JPEG images by their structure ([`super::mjpeg`]), so part headers
//!   and boundaries are skipped whatever their form, and a reader thread keeps the
//!   newest image.
//! - `mode = "snapshot"`: a GET of one JPEG every `interval_ms`.
//!
//! HTTP by `ureq` 2 (blocking, on the capture thread; rustls with ring, as the MQTT
//! client uses; a read timeout on every socket read, so a camera that stops
//! sending is noticed). Authentication: none, Basic (RFC 7617) or Digest (RFC 7616,
//! `digest_auth`), answered to the camera's `WWW-Authenticate` challenge. TLS
//! trusts the system's CA certificates, or only `ca_file` when it is set. Any
//! failure is transient: the capture loop reports it on `status` and reconnects
//! with its backoff.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;

use super::mjpeg::{spawn_reader, FrameSlot, Taken};
use super::{BadFrames, CaptureError, FrameSource, Shot};
use crate::config::{redact_userinfo, HttpConfig, HttpMode};
use crate::imaging::decode::{decode_image, ImageLimits};

fn fail(msg: impl Into<String>) -> CaptureError {
    CaptureError::Transient(msg.into())
}

/// Build the HTTP agent: timeouts, and TLS roots from `ca_file` if set.
fn agent(c: &HttpConfig) -> Result<ureq::Agent, CaptureError> {
    let mut b = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_millis(c.connect_timeout_ms))
        .timeout_read(Duration::from_millis(c.read_timeout_ms))
        .redirects(3)
        .user_agent(concat!("edgehead/", env!("CARGO_PKG_VERSION")));
    if !c.ca_file.as_os_str().is_empty() {
        let pem = std::fs::read(&c.ca_file).map_err(|e| {
            CaptureError::Fatal(format!("cannot read {}: {e}", c.ca_file.display()))
        })?;
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| {
                CaptureError::Fatal(format!(
                    "{}: not a PEM certificate: {e}",
                    c.ca_file.display()
                ))
            })?;
            roots.add(cert).map_err(|e| {
                CaptureError::Fatal(format!(
                    "{}: unusable certificate: {e}",
                    c.ca_file.display()
                ))
            })?;
        }
        if roots.is_empty() {
            return Err(CaptureError::Fatal(format!(
                "{}: no PEM certificate in it",
                c.ca_file.display()
            )));
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        b = b.tls_config(Arc::new(tls));
    }
    Ok(b.build())
}

/// GET `url`, answering an authentication challenge with the configured
/// credentials; the response has status 200.
///
/// `overall` bounds the whole request, body included (snapshots); a stream has
/// only the per-read timeout. Messages show the URL without its user and password.
fn get(
    agent: &ureq::Agent,
    c: &HttpConfig,
    overall: Option<Duration>,
) -> Result<ureq::Response, CaptureError> {
    let url = redact_userinfo(&c.url);
    let request = || {
        let r = agent.get(&c.url);
        match overall {
            Some(t) => r.timeout(t),
            None => r,
        }
    };
    let describe = |e: ureq::Error| match e {
        ureq::Error::Status(code, r) => {
            fail(format!("{} answered HTTP {code} {}", url, r.status_text()))
        }
        ureq::Error::Transport(t) => {
            // ureq's own Display names the URL with its password; say the rest.
            let mut why = t.kind().to_string();
            if let Some(m) = t.message() {
                why += &format!(": {m}");
            }
            let mut cause = std::error::Error::source(&t);
            while let Some(c) = cause {
                why += &format!(": {c}");
                cause = c.source();
            }
            fail(format!("{url}: {why}"))
        }
    };
    let challenge = match request().call() {
        Ok(r) => return Ok(r),
        Err(ureq::Error::Status(401, r)) => r,
        Err(e) => return Err(describe(e)),
    };
    if c.username.is_empty() {
        return Err(fail(format!(
            "{url} needs a username and password (HTTP 401): set source.http.username and password",
        )));
    }
    let offers: Vec<String> = challenge
        .all("www-authenticate")
        .into_iter()
        .map(str::to_string)
        .collect();
    let authorization = if let Some(d) = offers
        .iter()
        .find(|h| h.trim_start().to_ascii_lowercase().starts_with("digest"))
    {
        let mut prompt = digest_auth::parse(d)
            .map_err(|e| fail(format!("{url}: cannot read its Digest challenge: {e}")))?;
        let path = url_path(&c.url);
        let context = digest_auth::AuthContext::new(c.username.as_str(), c.password.as_str(), path);
        prompt
            .respond(&context)
            .map_err(|e| fail(format!("{url}: cannot answer its Digest challenge: {e}")))?
            .to_header_string()
    } else if offers
        .iter()
        .any(|h| h.trim_start().to_ascii_lowercase().starts_with("basic"))
    {
        let pair = format!("{}:{}", c.username, c.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    } else {
        return Err(fail(format!(
            "{url} asks for an authentication edgehead does not speak: {offers:?}",
        )));
    };
    match request().set("Authorization", &authorization).call() {
        Ok(r) => Ok(r),
        Err(ureq::Error::Status(401 | 403, _)) => Err(fail(format!(
            "{url} refused the username or password (source.http.username, password)",
        ))),
        Err(e) => Err(describe(e)),
    }
}

/// The path and query of a URL, as Digest authentication signs it.
fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.find('/').map(|i| &rest[i..]).unwrap_or("/")
}

/// An HTTP camera.
pub struct HttpSource {
    config: HttpConfig,
    /// The URL without user and password, for messages.
    shown_url: String,
    agent: ureq::Agent,
    limits: ImageLimits,
    max_bytes: usize,
    /// Stream mode: the reader thread's newest frame.
    slot: Option<Arc<FrameSlot>>,
    /// A stream skips a few bad frames; a bad snapshot is an error at once.
    bad_frames: BadFrames,
}

impl HttpSource {
    /// Connect (stream mode: start the stream) and check the answer.
    pub fn open(
        c: &HttpConfig,
        limits: ImageLimits,
        max_bytes: usize,
    ) -> Result<Self, CaptureError> {
        let agent = agent(c)?;
        let slot = match c.mode {
            HttpMode::Snapshot => None,
            HttpMode::Stream => {
                let response = get(&agent, c, None)?;
                let kind = response.content_type().to_string();
                if !kind.starts_with("multipart/") {
                    tracing::warn!(url = %redact_userinfo(&c.url), content_type = %kind, "not a multipart stream; reading JPEG images from it anyway (for a single image, use mode = \"snapshot\")");
                }
                let slot = Arc::new(FrameSlot::default());
                spawn_reader("http", response.into_reader(), slot.clone(), max_bytes)
                    .map_err(|e| fail(format!("cannot start a thread: {e}")))?;
                tracing::info!(url = %redact_userinfo(&c.url), "HTTP stream open");
                Some(slot)
            }
        };
        Ok(Self {
            shown_url: redact_userinfo(&c.url),
            config: c.clone(),
            agent,
            limits,
            max_bytes,
            slot,
            bad_frames: BadFrames::new(match c.mode {
                HttpMode::Stream => BadFrames::STREAM_LIMIT,
                HttpMode::Snapshot => 1,
            }),
        })
    }

    /// One snapshot: GET, read at most `max_bytes`.
    fn snapshot(&self) -> Result<Vec<u8>, CaptureError> {
        // The whole snapshot, body included, within connect + read timeouts.
        let overall =
            Duration::from_millis(self.config.connect_timeout_ms + self.config.read_timeout_ms);
        let response = get(&self.agent, &self.config, Some(overall))?;
        let mut bytes = Vec::new();
        response
            .into_reader()
            .take(self.max_bytes as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| fail(format!("{}: reading the image failed: {e}", self.shown_url)))?;
        if bytes.len() > self.max_bytes {
            return Err(fail(format!(
                "{}: the image is larger than learn.max_image_bytes ({})",
                self.shown_url, self.max_bytes
            )));
        }
        Ok(bytes)
    }
}

impl FrameSource for HttpSource {
    fn next_frame(&mut self) -> Result<Option<Shot>, CaptureError> {
        loop {
            let bytes = match &self.slot {
                None => self.snapshot()?,
                Some(slot) => {
                    let wait = Duration::from_millis(self.config.read_timeout_ms);
                    match slot.take(wait) {
                        Taken::Frame(b) => b,
                        Taken::Ended(why) => {
                            return Err(fail(format!("{}: {why}", self.shown_url)))
                        }
                        Taken::TimedOut => {
                            return Err(fail(format!(
                                "{}: no frame for {} ms (source.http.read_timeout_ms)",
                                self.shown_url, self.config.read_timeout_ms
                            )))
                        }
                    }
                }
            };
            let decoded = decode_image(&bytes, &self.limits);
            if let Some(img) = self.bad_frames.check(&self.shown_url, decoded)? {
                return Ok(Some(img.into()));
            }
        }
    }

    /// Snapshots are paced to `interval_ms`; a stream by inference (newest wins).
    fn fps(&self) -> Option<f64> {
        match self.config.mode {
            HttpMode::Snapshot => Some(1000.0 / self.config.interval_ms.max(1) as f64),
            HttpMode::Stream => Some(0.0),
        }
    }

    fn interrupter(&self) -> Option<super::Interrupter> {
        let slot = self.slot.clone()?;
        Some(Box::new(move || slot.end("capture is stopping".into())))
    }
}

impl Drop for HttpSource {
    fn drop(&mut self) {
        // The reader thread stops at its next read (at most read_timeout_ms).
        if let Some(slot) = &self.slot {
            slot.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_signs_the_path_and_query() {
        assert_eq!(url_path("http://cam.local/stream"), "/stream");
        assert_eq!(url_path("https://cam:8080/cgi?x=1&y=2"), "/cgi?x=1&y=2");
        assert_eq!(url_path("http://cam.local"), "/");
    }
}
