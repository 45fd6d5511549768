//! Serving the console: a TCP listener on the daemon's tokio runtime, TLS through
//! tokio-rustls when a certificate is configured, HTTP/1.1 by hyper with the
//! axum router as the service. Connections are bounded (`web.max_connections`),
//! headers must arrive within 10 s (slow clients do not hold a connection), a TLS
//! handshake within 10 s; at shutdown the listener closes and open connections
//! finish their current response (event streams end themselves).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a client may take to send a request's headers, or a TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} for the console: {source} (another program on that port? set web.listen)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("web TLS: {0}")]
    Tls(String),
}

/// Bind `addr` now, before the runtime runs (a taken port is a start-up error).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| ServeError::Bind { addr, source })
}

/// A TLS acceptor for the PEM certificate chain and key (ring, TLS 1.2 and 1.3).
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let fail = |what: &str, p: &Path, e: &dyn std::fmt::Display| {
        ServeError::Tls(format!("{what} {}: {e}", p.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| fail("cannot read the certificate", cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail("cannot read the certificate", cert, &e))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "{} holds no certificate",
            cert.display()
        )));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| fail("cannot read the key", key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(format!("the certificate and key do not fit: {e}")))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serve `app` on `listener` until `stop`.
pub async fn serve(
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    max_connections: usize,
    stop: CancellationToken,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "console: cannot listen");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment.
                    tracing::warn!(error = %e, "console: accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "console: too many connections; refused");
            continue;
        };
        let (app, tls, stop) = (app.clone(), tls.clone(), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            match tls {
                None => connection(TokioIo::new(tcp), peer, app, stop).await,
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await
                {
                    Ok(Ok(stream)) => connection(TokioIo::new(stream), peer, app, stop).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "console: TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "console: TLS handshake timed out"),
                },
            }
        });
    }
}

/// Serve one connection; at `stop`, finish the current response and close.
async fn connection<I>(io: TokioIo<I>, peer: SocketAddr, app: Router, stop: CancellationToken)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req)
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE)
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "console: connection ended");
            }
        }
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}
