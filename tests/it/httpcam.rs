//! A small HTTP camera for tests: a multipart MJPEG stream, snapshots, Basic or
//! Digest authentication, a connection dropped mid-frame, and a path that never
//! answers. Plain `std::net`, one thread per connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the camera asks of clients.
#[derive(Clone)]
pub enum Auth {
    None,
    Basic(&'static str, &'static str),
    Digest(&'static str, &'static str),
}

const DIGEST_CHALLENGE: &str =
    r#"Digest realm="cam", nonce="5f3e1b9a7c", qop="auth", algorithm=MD5, opaque="0a1b""#;

pub struct Camera {
    pub port: u16,
    /// Stream connections served so far.
    pub streams: Arc<AtomicUsize>,
    /// Requests refused with 401.
    pub refused: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Camera {
    /// Serve `frames` (JPEG files) at `fps`. With `drop_first`, the first stream
    /// connection is closed in the middle of its third frame.
    pub fn start(frames: Vec<Vec<u8>>, fps: f64, auth: Auth, drop_first: bool) -> Self {
        Self::start_with(frames, fps, auth, drop_first, None)
    }

    /// The same over HTTPS, with this certificate and key (PEM files).
    pub fn start_tls(frames: Vec<Vec<u8>>, cert: &std::path::Path, key: &std::path::Path) -> Self {
        use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(cert)
            .expect("cert file")
            .map(|c| c.expect("cert"))
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).expect("key");
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        Self::start_with(frames, 5.0, Auth::None, false, Some(Arc::new(config)))
    }

    fn start_with(
        frames: Vec<Vec<u8>>,
        fps: f64,
        auth: Auth,
        drop_first: bool,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let frames = Arc::new(frames);
        let (s, st, rf) = (stop.clone(), streams.clone(), refused.clone());
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let (frames, auth, s, st, rf, tls) = (
                            frames.clone(),
                            auth.clone(),
                            s.clone(),
                            st.clone(),
                            rf.clone(),
                            tls.clone(),
                        );
                        std::thread::spawn(move || match tls {
                            None => serve(conn, &frames, fps, &auth, drop_first, &s, &st, &rf),
                            Some(config) => {
                                let Ok(server) = rustls::ServerConnection::new(config) else {
                                    return;
                                };
                                let stream = rustls::StreamOwned::new(server, conn);
                                serve(stream, &frames, fps, &auth, drop_first, &s, &st, &rf)
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            port,
            streams,
            refused,
            stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn authorized(auth: &Auth, header: Option<&str>) -> bool {
    match (auth, header) {
        (Auth::None, _) => true,
        (Auth::Basic(u, p), Some(h)) => {
            use base64::Engine;
            let want = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            h.trim() == format!("Basic {want}")
        }
        (Auth::Digest(u, p), Some(h)) => {
            let Some(got) = h
                .trim()
                .strip_prefix("Digest ")
                .and_then(|_| digest_auth::AuthorizationHeader::parse(h.trim()).ok())
            else {
                return false;
            };
            let Ok(mut prompt) = digest_auth::parse(DIGEST_CHALLENGE) else {
                return false;
            };
            let mut context = digest_auth::AuthContext::new(*u, *p, got.uri.as_str());
            if let Some(c) = &got.cnonce {
                context.set_custom_cnonce(c.as_str());
            }
            got.username == *u
                && prompt
                    .respond(&context)
                    .is_ok_and(|want| want.response == got.response)
        }
        (_, None) => false,
    }
}

#[allow(clippy::too_many_arguments)]
fn serve<S: Read + Write>(
    mut conn: S,
    frames: &[Vec<u8>],
    fps: f64,
    auth: &Auth,
    drop_first: bool,
    stop: &AtomicBool,
    streams: &AtomicUsize,
    refused: &AtomicUsize,
) {
    let mut authorization = None;
    let path = {
        // A GET has no body: nothing is read past the headers.
        let mut reader = BufReader::new(&mut conn);
        let mut request = String::new();
        if reader.read_line(&mut request).is_err() {
            return;
        }
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("authorization") {
                    authorization = Some(v.trim().to_string());
                }
            }
        }
        request.split_whitespace().nth(1).unwrap_or("/").to_string()
    };
    if path == "/hang" {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        return;
    }
    if !authorized(auth, authorization.as_deref()) {
        refused.fetch_add(1, Ordering::Relaxed);
        let challenge = match auth {
            Auth::Digest(..) => DIGEST_CHALLENGE.to_string(),
            _ => r#"Basic realm="cam""#.to_string(),
        };
        let _ = write!(
            conn,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: {challenge}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    }
    match path.as_str() {
        "/snapshot" => {
            let f = &frames[0];
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                f.len()
            );
            let _ = conn.write_all(f);
        }
        "/stream" => {
            let n = streams.fetch_add(1, Ordering::Relaxed);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n"
            );
            for (i, f) in frames.iter().cycle().enumerate() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let head = format!(
                    "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                    f.len()
                );
                let cut = drop_first && n == 0 && i == 2;
                let body = if cut { &f[..f.len() / 2] } else { &f[..] };
                if conn.write_all(head.as_bytes()).is_err()
                    || conn.write_all(body).is_err()
                    || cut
                    || conn.write_all(b"\r\n").is_err()
                {
                    return;
                }
                std::thread::sleep(Duration::from_secs_f64(1.0 / fps));
            }
        }
        _ => {
            let _ = write!(
                conn,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    }
}
