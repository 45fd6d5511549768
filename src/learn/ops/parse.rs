//! Parsing a request as it arrives by either route: the operation and a label as
//! further levels (MQTT: `request/<op>[/<label>]`; HTTP: `.../<op>[/<label>]`),
//! and a JSON object, raw image bytes (`add_sample`, `classify`) or plain text
//! (`select_label`) as the payload or body.

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use super::*;
use crate::learn::replies;

/// Parse a request: operation `op`, the further levels `arg`, the payload (or
/// body) and MQTT's DUP flag. Pure: nothing is read but the
/// arguments. The JSON payload is parsed once; an empty payload is an empty
/// object; `add_sample` also takes raw image bytes and `select_label` plain text.
pub fn parse(
    op: &str,
    arg: Option<&str>,
    payload: &[u8],
    dup: bool,
    limits: &Limits,
) -> Result<Envelope, Refusal> {
    let kind = OpKind::from_name(op);
    // `add_sample` takes raw image bytes and `select_label` plain text: only a
    // payload that looks like JSON is parsed as JSON for them.
    let raw = kind.is_some_and(|k| {
        k.takes_raw_image() || k == OpKind::SelectLabel || k == OpKind::ImportBundle
    }) && payload.first() != Some(&b'{');
    let json = if raw {
        Ok(Body::default())
    } else {
        Body::of(payload)
    };
    let transaction = json.as_ref().ok().and_then(|b| b.transaction.clone());
    if transaction
        .as_ref()
        .is_some_and(|t| t.to_string().len() > replies::MAX_TRANSACTION_BYTES)
    {
        return Err(Refusal {
            error: bad(format!(
                "\"transaction\" is longer than {} bytes",
                replies::MAX_TRANSACTION_BYTES
            )),
            transaction: None,
        });
    }
    let refuse = |error: RequestError| Refusal {
        error,
        transaction: transaction.clone(),
    };
    let kind = kind.ok_or_else(|| {
        refuse(bad(format!(
            "unknown operation \"{op}\"; known: {}",
            OpKind::names()
        )))
    })?;
    if let (Some(a), false) = (
        arg,
        kind.takes_label_level() || kind == OpKind::ImportBundle,
    ) {
        return Err(refuse(bad(format!(
            "{op} takes no further topic level (got \"{a}\")"
        ))));
    }
    let parsed = match (kind, raw) {
        (OpKind::AddSample, true) => raw_sample(arg, payload, limits),
        (OpKind::Classify, true) => classify_op(Bytes::copy_from_slice(payload), limits),
        (OpKind::Classify, false) => json.and_then(|b| json_classify(b, limits)),
        (OpKind::SelectLabel, true) => plain_label(payload),
        (OpKind::AddSample, false) => json.and_then(|b| json_sample(arg, b, limits)),
        (OpKind::LabelFrame, _) => json.and_then(|b| label_frame(arg, b)),
        (OpKind::ImportBundle, true) => import_bundle(arg, Bytes::copy_from_slice(payload), None),
        (OpKind::ImportBundle, false) => json.and_then(|b| json_import_bundle(arg, b)),
        (other, _) => json.and_then(|b| from_body(other, b)),
    };
    let topic = match arg {
        Some(a) => format!("{op}/{a}"),
        None => op.to_string(),
    };
    let op = parsed.map_err(refuse)?;
    Ok(Envelope {
        key: replies::key(kind.name(), transaction.as_ref(), &topic, payload),
        op,
        transaction,
        dup,
    })
}

/// The label of the payload, refused when the topic names another one; the
/// topic's when the payload has none.
fn one_label(payload: Option<String>, topic: Option<&str>) -> Result<Option<String>, RequestError> {
    match (payload, topic) {
        (Some(p), Some(t)) if !names::same(&p, t) => Err(bad(format!(
            "the topic names the label \"{t}\" and the payload \"{p}\": give one"
        ))),
        (Some(p), _) => Ok(Some(p)),
        (None, t) => Ok(t.map(str::to_string)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddSampleJson {
    label: Option<String>,
    /// Base64 of a JPEG or PNG file.
    image: String,
    #[serde(default)]
    apply_region: bool,
}

/// The typed fields of `b` (unknown fields refused), or `bad <op> request: ...`.
fn typed<T: serde::de::DeserializeOwned>(op: OpKind, b: Body) -> Result<T, RequestError> {
    typed_value(op, Value::Object(b.fields))
}

/// `add_sample` with the image as the payload and the label in the topic.
fn raw_sample(arg: Option<&str>, payload: &[u8], limits: &Limits) -> Result<Op, RequestError> {
    let label = arg.ok_or_else(|| bad("no label: publish the image to add_sample/<label>"))?;
    sample_op(label, Bytes::copy_from_slice(payload), false, limits)
}

/// `add_sample` as a JSON object with the image in base64.
fn json_sample(arg: Option<&str>, b: Body, limits: &Limits) -> Result<Op, RequestError> {
    let max_bytes = limits.max_image_bytes;
    let req: AddSampleJson = typed(OpKind::AddSample, b)?;
    let label = one_label(req.label, arg)?
        .ok_or_else(|| bad("no label: put it in the topic (add_sample/<label>) or in \"label\""))?;
    let bytes = base64_image(&req.image, max_bytes)?;
    sample_op(&label, bytes, req.apply_region, limits)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelFrameJson {
    label: Option<String>,
    #[serde(default)]
    selected_label: bool,
    #[serde(default = "one")]
    count: u32,
    #[serde(default = "default_interval")]
    interval_ms: u64,
    #[serde(default)]
    skip_similar: Option<f32>,
}

fn one() -> u32 {
    1
}

fn default_interval() -> u64 {
    DEFAULT_INTERVAL_MS
}

/// `label_frame`: the label in the topic or the payload, or the selected one;
/// how many frames, how far apart (an empty payload: one frame).
fn label_frame(arg: Option<&str>, b: Body) -> Result<Op, RequestError> {
    let req: LabelFrameJson = typed(OpKind::LabelFrame, b)?;
    let label = match (one_label(req.label, arg)?, req.selected_label) {
        (Some(_), true) => return Err(bad("give a label or \"selected_label\": true, not both")),
        (Some(l), false) => LabelChoice::Given(names::normalize_label(&l)?),
        (None, true) => LabelChoice::Selected,
        (None, false) => {
            return Err(bad(
                "no label: put it in the topic (label_frame/<label>), in \"label\", or send \"selected_label\": true",
            ))
        }
    };
    label_frame_op(label, req.count, req.interval_ms, req.skip_similar)
}

/// `select_label` as plain text (Home Assistant's select and text entities send
/// the option as it is); `{"label": "..."}` is parsed by [`from_body`].
fn plain_label(payload: &[u8]) -> Result<Op, RequestError> {
    let text = std::str::from_utf8(payload).map_err(|_| bad("the label is not UTF-8"))?;
    Ok(Op::SelectLabel {
        label: names::normalize_label(text.trim())?,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassifyJson {
    /// Base64 of a JPEG or PNG file.
    image: String,
}

/// `classify` as `{"image": "<base64>"}`.
fn json_classify(b: Body, limits: &Limits) -> Result<Op, RequestError> {
    let req: ClassifyJson = typed(OpKind::Classify, b)?;
    classify_op(base64_image(&req.image, limits.max_image_bytes)?, limits)
}

/// A `classify` with its image's size checked.
fn classify_op(image: Bytes, limits: &Limits) -> Result<Op, RequestError> {
    check_image(&image, limits.max_image_bytes)?;
    Ok(Op::Classify { image })
}

/// An image sent as base64, its size checked before it is decoded.
fn base64_image(text: &str, max_bytes: usize) -> Result<Bytes, RequestError> {
    if text.len() > max_bytes / 3 * 4 + 4 {
        return Err(bad(format!(
            "the image is larger than {max_bytes} bytes (learn.max_image_bytes)"
        )));
    }
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map(Bytes::from)
        .map_err(|e| bad(format!("\"image\" is not base64: {e}")))
}

/// `import_bundle`: the bundle file as the payload, the mode as a further
/// level (`import_bundle/merge`, `import_bundle/replace`; none: a new
/// classifier).
fn import_bundle(
    arg: Option<&str>,
    bundle: Bytes,
    as_name: Option<String>,
) -> Result<Op, RequestError> {
    use crate::store::bundle::Mode;
    let mode = match arg {
        None | Some("new") => Mode::New,
        Some("merge") => Mode::Merge,
        Some("replace") => Mode::Replace,
        Some(other) => {
            return Err(bad(format!(
                "import_bundle/{other}: the level is new, merge or replace"
            )))
        }
    };
    if bundle.is_empty() {
        return Err(bad("the payload must be a bundle file (docs/bundles.md)"));
    }
    let as_name = as_name
        .map(|n| names::normalize_classifier_name(&n))
        .transpose()?;
    Ok(Op::ImportBundle {
        bundle,
        as_name,
        mode,
    })
}

/// `import_bundle` as a JSON object: `bundle` (base64), `as`, `mode`.
fn json_import_bundle(arg: Option<&str>, b: Body) -> Result<Op, RequestError> {
    b.only(&["bundle", "as", "mode"])?;
    let mode = b.optional_string("mode")?;
    if mode.is_some() && arg.is_some() {
        return Err(bad(
            "give the mode in the topic or in the payload, not both",
        ));
    }
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(b.string("bundle")?)
        .map_err(|e| bad(format!("\"bundle\" is not base64: {e}")))?;
    import_bundle(
        mode.as_deref().or(arg),
        Bytes::from(bundle),
        b.optional_string("as")?,
    )
}
