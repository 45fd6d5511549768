//! Answers of the console's routes ([`super::api`], [`super::live`],
//! [`super::bundles`]): JSON in the answer envelope, refusals, JPEGs, and
//! handing a request to the learners or the manager ([`submit`]).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::oneshot;

use super::Web;
use crate::answer;
use crate::learn::ops::OpKind;
use crate::learn::router::{BUSY, DISABLED, SHUTTING_DOWN};
use crate::learn::{Input, Raw, ReplyTo, Request as LearnRequest};

/// Longest a route waits for an operation's answer (a long `label_frame`).
const ANSWER_WAIT: Duration = Duration::from_secs(900);

/// A JSON answer with `code`.
pub fn json_response(code: StatusCode, body: &Value) -> Response {
    let mut r = (code, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A refusal in the answer envelope, with `code`.
pub fn error(code: StatusCode, message: &str) -> Response {
    json_response(code, &answer::error(message, None))
}

/// Hand a request to the learner of `classifier` (or the manager) and wait for
/// its answer; the HTTP status says how it went.
pub async fn submit(
    web: &Web,
    classifier: Option<&str>,
    op: &str,
    arg: Option<&str>,
    payload: Bytes,
) -> (StatusCode, Value) {
    let input = Input::Raw(Raw {
        op: op.to_string(),
        arg: arg.map(str::to_string),
        payload,
        dup: false,
    });
    submit_input(web, classifier, OpKind::from_name(op), input).await
}

/// [`submit`] of a request as it came (`Raw`) or parsed already.
pub async fn submit_input(
    web: &Web,
    classifier: Option<&str>,
    kind: Option<OpKind>,
    input: Input,
) -> (StatusCode, Value) {
    let (tx, rx) = oneshot::channel();
    let request = LearnRequest {
        input,
        reply: ReplyTo::Channel(tx),
    };
    if let Err(why) = web.handles.router.try_submit(classifier, kind, request) {
        let code = if why == BUSY || why == SHUTTING_DOWN {
            StatusCode::SERVICE_UNAVAILABLE
        } else if why.starts_with(DISABLED) {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::NOT_FOUND
        };
        return (code, answer::error(&why, None));
    }
    let reply = tokio::select! {
        r = tokio::time::timeout(ANSWER_WAIT, rx) => match r {
            Ok(Ok(v)) => v,
            Ok(Err(_)) => return (StatusCode::SERVICE_UNAVAILABLE, answer::error(SHUTTING_DOWN, None)),
            Err(_) => return (StatusCode::GATEWAY_TIMEOUT, answer::error("no answer in time", None)),
        },
        _ = web.stop.cancelled() => return (StatusCode::SERVICE_UNAVAILABLE, answer::error(SHUTTING_DOWN, None)),
    };
    let code = if answer::is_ok(&reply) {
        StatusCode::OK
    } else if reply["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("busy"))
    {
        StatusCode::SERVICE_UNAVAILABLE
    } else if kind.is_none() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::BAD_REQUEST
    };
    (code, reply)
}

/// A JPEG with `cache`.
pub fn jpeg_response(jpeg: Vec<u8>, cache: &'static str) -> Response {
    let mut r = Response::new(Body::from(jpeg));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}
