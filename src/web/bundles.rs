//! Bundles over HTTP ([`crate::store::bundle`]):
//!
//! - `GET /api/classifiers/<name>/bundle`: the classifier's bundle, as a file
//!   download (`<name>.edgehead.tar.gz`); written beside the running learner.
//! - `POST /api/bundles?mode=new|merge|replace&as=<name>`: the body is a bundle
//!   file; carried out by the classifier manager as MQTT's `import_bundle`, and
//!   answered with the same envelope. The body is held in memory, at most
//!   `learn.max_bundle_mib`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::reply::{error, json_response, submit, submit_input};
use super::Web;
use crate::config::ClassifierConfig;
use crate::learn::ops::{Envelope, Op, OpKind};
use crate::learn::Input;
use crate::names;
use crate::store::bundle::{self, Mode};
use crate::store::state_dir;

/// `GET /api/classifiers/<name>/bundle`.
pub async fn export(State(web): State<Arc<Web>>, Path(name): Path<String>) -> Response {
    // The definition as the manager has it now.
    let (code, answer) = submit(&web, None, "classifiers", None, Bytes::from_static(b"{}")).await;
    if code != StatusCode::OK {
        return json_response(code, &answer);
    }
    let def = answer["data"]["classifiers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| &c["definition"])
        .filter_map(|d| serde_json::from_value::<ClassifierConfig>(d.clone()).ok())
        .find(|d| names::same(&d.name, &name));
    let Some(def) = def else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("there is no classifier \"{name}\""),
        );
    };
    let dir = state_dir::classifier_dir(&web.state_dir, &def.name);
    let file = format!("{}.edgehead.tar.gz", names::ascii_slug(&def.name));
    let written = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        bundle::export(&dir, &def, &mut out).map(|_| out)
    })
    .await;
    match written {
        Ok(Ok(bytes)) => {
            let mut r = (StatusCode::OK, bytes).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/gzip"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The query of `POST /api/bundles`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    #[serde(default)]
    mode: Mode,
    #[serde(rename = "as")]
    as_name: Option<String>,
}

/// `POST /api/bundles`.
pub async fn import(
    State(web): State<Arc<Web>>,
    query: Result<Query<ImportQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("mode is new, merge or replace, and as a classifier name: {e}"),
            )
        }
    };
    if body.is_empty() {
        return error(StatusCode::BAD_REQUEST, "the body must be a bundle file");
    }
    let as_name = match q.as_name.as_deref().filter(|n| !n.is_empty()) {
        None => None,
        Some(n) => match names::normalize_classifier_name(n) {
            Ok(n) => Some(n),
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.0),
        },
    };
    let input = Input::Parsed(Box::new(Envelope {
        op: Op::ImportBundle {
            bundle: body,
            as_name,
            mode: q.mode,
        },
        transaction: None,
        key: OpKind::ImportBundle.name().to_string(),
        dup: false,
    }));
    let (code, answer) = submit_input(&web, None, Some(OpKind::ImportBundle), input).await;
    json_response(code, &answer)
}
