//! The console's routes. Every operation is reached the way MQTT reaches it: the
//! path names the classifier, the operation and a label level, the body is the
//! MQTT payload (a JSON object, or raw image bytes for `add_sample/<label>` and
//! `classify`), and the answer is the same envelope
//! (`{"status", "data", "error", "transaction"}`), with an HTTP status code.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/session`, `POST /api/login`, `POST /api/logout` | the login |
//! | `GET /api/status`, `GET /api/history`, `GET /api/events` | status, the last hour, live updates (SSE) |
//! | `GET /api/live.mjpeg`, `GET /api/frame.jpg` | the camera |
//! | `GET|POST /api/ops/<op>` | operations on the set (`classifiers`, `create_classifier`, ...) |
//! | `GET|POST /api/classifiers/<name>/<op>[/<label>]` | a classifier's operations |
//! | `GET /api/classifiers/<name>/samples/<id>.jpg`, `.../recent/<id>.jpg` | images |
//! | `GET /api/classifiers/<name>/bundle`, `POST /api/bundles` | bundles ([`super::bundles`]) |
//!
//! Everything under `/api/` but the login needs a session; every `POST` needs the
//! session's CSRF token in `X-CSRF-Token`, and a request whose `Origin` is not
//! this host is refused ([`guard`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::auth::{cookie, Login, COOKIE, CSRF_HEADER};
use super::reply::{error, jpeg_response, json_response, submit};
use super::{assets, events, live, Web};
use crate::answer;
use crate::learn::ops::OpKind;

/// Largest JSON body of a request that carries no image.
const MAX_JSON: usize = 64 << 10;

/// The console's router: the page, the API behind the login, the login itself.
pub fn router(web: Arc<Web>) -> Router {
    let body_limit = body_limit(&web);
    let api = Router::new()
        .route("/api/status", get(status))
        .route("/api/history", get(history))
        .route("/api/events", get(events::stream))
        .route("/api/live.mjpeg", get(live::mjpeg))
        .route("/api/frame.jpg", get(live::frame))
        .route("/api/ops/{op}", get(manager_op).post(manager_op))
        .route(
            "/api/bundles",
            post(super::bundles::import).layer(DefaultBodyLimit::max(
                usize::try_from(web.learn.max_bundle_mib << 20).unwrap_or(usize::MAX),
            )),
        )
        .route(
            "/api/classifiers/{name}/bundle",
            get(super::bundles::export),
        )
        .route("/api/classifiers/{name}/samples/{file}", get(sample_image))
        .route("/api/classifiers/{name}/recent/{file}", get(recent_image))
        .route(
            "/api/classifiers/{name}/{op}",
            get(classifier_op).post(classifier_op),
        )
        .route(
            "/api/classifiers/{name}/{op}/{arg}",
            post(classifier_op_arg),
        )
        .route("/api/logout", post(logout))
        .layer(middleware::from_fn_with_state(web.clone(), guard));
    Router::new()
        .route("/api/session", get(session))
        .route("/api/login", post(login))
        .merge(api)
        .route("/", get(assets::index))
        .route("/assets/{file}", get(assets::file))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(web)
}

/// The largest body a request may have: an image as base64 in a JSON object.
fn body_limit(web: &Web) -> usize {
    web.learn.max_image_bytes / 3 * 4 + 4096
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such page")
}

/// The session token of the request's cookie.
fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| cookie(h, COOKIE))
}

/// Whether an `Origin` header, when present, names the host the request was
/// sent to (a page of another site cannot drive the console).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host)
}

/// In front of every route of the API: a valid session (401 without), and for
/// anything but `GET`/`HEAD` the session's CSRF token (403 without) and a
/// same-origin request.
async fn guard(State(web): State<Arc<Web>>, req: Request, next: Next) -> Response {
    let Some(csrf) = web.auth.session(session_token(req.headers())) else {
        return error(StatusCode::UNAUTHORIZED, "log in first");
    };
    // An announced body over the limit is refused before a byte of it is read.
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > body_limit(&web) as u64) {
        let mut r = error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the request is larger than the image limit (learn.max_image_bytes = {} bytes)",
                web.learn.max_image_bytes
            ),
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    if !reads {
        let sent = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if sent != Some(csrf.as_str()) || !same_origin(req.headers()) {
            return error(
                StatusCode::FORBIDDEN,
                "the request lacks this session's CSRF token (reload the page)",
            );
        }
    }
    next.run(req).await
}

/// `GET /api/session`: whether the caller is logged in, and its CSRF token.
async fn session(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let csrf = web.auth.session(session_token(&headers));
    json_response(
        StatusCode::OK,
        &json!({
            "authenticated": csrf.is_some(),
            "csrf": csrf,
            "login_required": web.auth.required(),
            "max_image_bytes": web.learn.max_image_bytes,
            "version": env!("CARGO_PKG_VERSION"),
        }),
    )
}

/// `POST /api/login` with `{"password": "..."}`: sets the session cookie.
async fn login(
    State(web): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !same_origin(&headers) {
        return error(StatusCode::FORBIDDEN, "a login from another site");
    }
    if body.len() > MAX_JSON {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "the request is too large");
    }
    let password = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        v.get("password")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let Some(password) = password else {
        return error(
            StatusCode::BAD_REQUEST,
            "send {\"password\": \"...\"} as JSON",
        );
    };
    let w = web.clone();
    let outcome = tokio::task::spawn_blocking(move || w.auth.login(peer.ip(), &password)).await;
    match outcome {
        Ok(Ok(Login::Ok { token, csrf })) => {
            let mut r = json_response(StatusCode::OK, &answer::ok(json!({ "csrf": csrf }), None));
            let cookie = format!(
                "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
                web.config.session_idle_secs,
                if web.tls { "; Secure" } else { "" }
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Ok(Ok(Login::Wrong)) => {
            tracing::info!(%peer, "console: wrong password");
            error(StatusCode::UNAUTHORIZED, "wrong password")
        }
        Ok(Ok(Login::Limited(wait))) => {
            let secs = wait.as_secs().max(1);
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("too many wrong passwords: try again in {secs} s"),
            );
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn logout(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    if let Some(t) = session_token(&headers) {
        web.auth.logout(t);
    }
    let mut r = json_response(StatusCode::OK, &answer::ok(json!({}), None));
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("edgehead_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"),
    );
    r
}

/// `GET /api/status`: the daemon's status (as on the MQTT `status` topic), with
/// the console's own figures.
async fn status(State(web): State<Arc<Web>>) -> Response {
    let mut v = web.handles.status.borrow().clone();
    v["mqtt_connected"] = json!(web.handles.publisher.is_connected());
    v["disk"] = events::disk(&web.handles.state_dir);
    v["rss_kib"] = json!(crate::stats::rss_kib());
    v["console"] = json!({
        "live_viewers": web.live.viewers(),
        "live_bytes_sent": web.live.bytes_sent(),
        "uptime_s": web.started.elapsed().as_secs(),
    });
    json_response(StatusCode::OK, &v)
}

async fn history(State(web): State<Arc<Web>>) -> Response {
    json_response(StatusCode::OK, &web.history.json())
}

/// `GET` query parameters as the JSON object the operation takes: `label` a
/// string, `id` a number, `images` a boolean.
fn query_body(q: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    for (k, v) in q {
        let s = v.as_str().unwrap_or("");
        let typed = match k.as_str() {
            "id" => s.parse::<u64>().map(Value::from).unwrap_or(json!(s)),
            "images" => json!(s == "true" || s == "1"),
            _ => json!(s),
        };
        out.insert(k.clone(), typed);
    }
    Value::Object(out)
}

/// The request's body as the payload of operation `op`: for `GET`, the query as a
/// JSON object (only reading operations may be asked with `GET`); a JSON body is
/// at most 64 KiB unless the operation takes an image.
fn payload(
    method: &Method,
    op: &str,
    query: &Map<String, Value>,
    body: Bytes,
) -> Result<Bytes, (StatusCode, String)> {
    let kind = OpKind::from_name(op);
    if *method == Method::GET {
        if kind.is_some_and(OpKind::changes_state) {
            return Err((
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{op} changes state: send it with POST"),
            ));
        }
        return Ok(Bytes::from(query_body(query).to_string()));
    }
    let images = kind.is_some_and(OpKind::takes_raw_image);
    if !images && body.len() > MAX_JSON {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request is larger than {MAX_JSON} bytes"),
        ));
    }
    Ok(body)
}

async fn answer_of(
    web: &Web,
    classifier: Option<&str>,
    op: &str,
    arg: Option<&str>,
    payload: Bytes,
) -> Response {
    let (code, v) = submit(web, classifier, op, arg, payload).await;
    json_response(code, &v)
}

/// `GET|POST /api/ops/<op>`: operations on the set of classifiers.
async fn manager_op(
    State(web): State<Arc<Web>>,
    method: Method,
    Path(op): Path<String>,
    Query(q): Query<Map<String, Value>>,
    body: Bytes,
) -> Response {
    if !OpKind::from_name(&op).is_some_and(OpKind::is_manager) {
        return error(
            StatusCode::NOT_FOUND,
            &format!("{op} is not an operation on the set of classifiers"),
        );
    }
    match payload(&method, &op, &q, body) {
        Ok(p) => answer_of(&web, None, &op, None, p).await,
        Err((code, why)) => error(code, &why),
    }
}

/// `GET|POST /api/classifiers/<name>/<op>`.
async fn classifier_op(
    State(web): State<Arc<Web>>,
    method: Method,
    Path((name, op)): Path<(String, String)>,
    Query(q): Query<Map<String, Value>>,
    body: Bytes,
) -> Response {
    match payload(&method, &op, &q, body) {
        Ok(p) => answer_of(&web, Some(&name), &op, None, p).await,
        Err((code, why)) => error(code, &why),
    }
}

/// `POST /api/classifiers/<name>/<op>/<label>` (`add_sample/<label>` with the
/// image as the body, `label_frame/<label>`).
async fn classifier_op_arg(
    State(web): State<Arc<Web>>,
    method: Method,
    Path((name, op, arg)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    match payload(&method, &op, &Map::new(), body) {
        Ok(p) => answer_of(&web, Some(&name), &op, Some(&arg), p).await,
        Err((code, why)) => error(code, &why),
    }
}

/// An image answered by `op` (`{"id": n}`) as a JPEG response.
async fn image_of(web: &Web, name: &str, op: &str, file: &str) -> Response {
    let Some(id) = file
        .strip_suffix(".jpg")
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return error(StatusCode::NOT_FOUND, "images are named <id>.jpg");
    };
    let body = Bytes::from(json!({ "id": id }).to_string());
    let (code, v) = submit(web, Some(name), op, None, body).await;
    let data = if code == StatusCode::OK {
        v["data"]["image"]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
    } else {
        None
    };
    match data {
        Some(jpeg) => jpeg_response(jpeg, "private, max-age=86400"),
        None => json_response(
            if code == StatusCode::OK {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                code
            },
            &v,
        ),
    }
}

async fn sample_image(
    State(web): State<Arc<Web>>,
    Path((name, file)): Path<(String, String)>,
) -> Response {
    image_of(&web, &name, "sample_image", &file).await
}

async fn recent_image(
    State(web): State<Arc<Web>>,
    Path((name, file)): Path<(String, String)>,
) -> Response {
    image_of(&web, &name, "recent_image", &file).await
}
