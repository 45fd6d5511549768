//! The page: plain HTML, CSS and JavaScript modules under `src/web/static/`,
//! embedded in the binary (no build step, nothing to install beside it), served
//! with a Content Security Policy that allows only this origin's scripts, styles
//! and connections.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Every embedded file: name, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("static/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("static/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("static/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("static/api.js"),
    ),
    (
        "ui.js",
        "text/javascript; charset=utf-8",
        include_bytes!("static/ui.js"),
    ),
    (
        "live.js",
        "text/javascript; charset=utf-8",
        include_bytes!("static/live.js"),
    ),
    (
        "teach.js",
        "text/javascript; charset=utf-8",
        include_bytes!("static/teach.js"),
    ),
    (
        "recent.js",
        "text/javascript; charset=utf-8",
        include_bytes!("static/recent.js"),
    ),
    (
        "quality.js",
        "text/javascript; charset=utf-8",
        include_bytes!("static/quality.js"),
    ),
    (
        "status.js",
        "text/javascript; charset=utf-8",
        include_bytes!("static/status.js"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("static/icon.svg"),
    ),
];

/// Only this origin's scripts, styles, images and connections; no framing.
const CSP: &str = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; \
     script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The embedded file `name` with its headers.
fn serve(name: &str) -> Response {
    let Some((_, mime, bytes)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let mut r = (StatusCode::OK, *bytes).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    // Small files, revalidated at every load: a new edgehead shows its new page.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

/// `GET /`: the page.
pub async fn index() -> Response {
    serve("index.html")
}

/// `GET /assets/<file>`.
pub async fn file(Path(name): Path<String>) -> Response {
    serve(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_embedded() {
        for (name, _, bytes) in FILES {
            let text = std::str::from_utf8(bytes).expect("utf-8");
            for line in text
                .lines()
                .filter(|l| l.trim_start().starts_with("import "))
            {
                let Some(from) = line.split(['\'', '"']).nth(1) else {
                    continue;
                };
                let file = from.trim_start_matches("./");
                assert!(
                    FILES.iter().any(|(n, _, _)| *n == file),
                    "{name} imports {from}, which is not embedded"
                );
            }
        }
    }

    #[test]
    fn unknown_files_are_not_found() {
        assert_eq!(serve("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        assert_eq!(serve("index.html").status(), StatusCode::OK);
    }
}
