//! The operations a classifier's learner carries out, parsed and validated before
//! anything runs: mini-redis's `Command::from_frame`, then `apply`. Parsing is a
//! pure function of the request (it never reads the store): labels are
//! normalized ([`crate::names`]), base64 decoded, sizes and counts checked, the
//! JSON body parsed once. What needs the store (which class a name refers to, the
//! label the dashboard selected) is resolved by [`super::Learner`] when it applies
//! the operation.
//!
//! Both routes into the daemon, MQTT and the console's HTTP API, hand the
//! request as it arrived (operation, label level, payload or body) to the same
//! [`parse`], which builds the [`Envelope`]. The name of an operation, whether it
//! changes state, whether it belongs to the classifier manager, and whether it
//! takes a label as a further level or raw image bytes are properties of
//! [`OpKind`], written once.

pub mod parse;
#[cfg(test)]
mod tests;

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::classifiers::{HeadOverrides, PredictionOverrides};
use crate::config::{ClassifierConfig, RecentConfig, TriggerConfig};
use crate::names::{self, LabelError};
use crate::region::RegionConfig;
pub use parse::parse;

/// Most frames one `label_frame` request may take, and the longest spacing.
pub const MAX_FRAMES: u32 = 50;
pub const MAX_INTERVAL_MS: u64 = 10_000;
/// `label_frame`'s defaults: one frame, 500 ms apart.
pub const DEFAULT_INTERVAL_MS: u64 = 500;
/// Most recent crops one `label_recent` or `discard_recent` names.
pub const MAX_IDS: usize = 1000;

/// A request that cannot be carried out, with the reason the caller reads.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

/// A refusal with `msg`.
pub fn bad(msg: impl Into<String>) -> RequestError {
    RequestError(msg.into())
}

impl From<LabelError> for RequestError {
    fn from(e: LabelError) -> Self {
        RequestError(e.0)
    }
}

/// The operations, without their data: names and properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    AddSample,
    LabelFrame,
    Classes,
    Samples,
    RemoveSample,
    RenameClass,
    MergeClass,
    DeleteClass,
    Reset,
    Retrain,
    Head,
    Recent,
    RecentImage,
    LabelRecent,
    DiscardRecent,
    Classifiers,
    SelectLabel,
    CreateClassifier,
    UpdateClassifier,
    RenameClassifier,
    DeleteClassifier,
    SampleImage,
    MoveSample,
    Classify,
    History,
    StopLabelFrame,
    ImportBundle,
}

/// The operations `learn.disabled_operations` names, checked. Errors: a name
/// that is no operation (the message lists them).
pub fn disabled_operations(names: &[String]) -> Result<Vec<OpKind>, String> {
    names
        .iter()
        .map(|n| {
            OpKind::from_name(n).ok_or_else(|| {
                format!(
                    "learn.disabled_operations: {n:?} is not an operation; operations: {}",
                    OpKind::ALL.map(OpKind::name).join(", ")
                )
            })
        })
        .collect()
}

impl OpKind {
    /// Every operation, in the order the documentation lists them.
    pub const ALL: [OpKind; 27] = [
        OpKind::AddSample,
        OpKind::LabelFrame,
        OpKind::Classes,
        OpKind::Samples,
        OpKind::RemoveSample,
        OpKind::RenameClass,
        OpKind::MergeClass,
        OpKind::DeleteClass,
        OpKind::Reset,
        OpKind::Retrain,
        OpKind::Head,
        OpKind::Recent,
        OpKind::RecentImage,
        OpKind::LabelRecent,
        OpKind::DiscardRecent,
        OpKind::Classifiers,
        OpKind::SelectLabel,
        OpKind::CreateClassifier,
        OpKind::UpdateClassifier,
        OpKind::RenameClassifier,
        OpKind::DeleteClassifier,
        OpKind::SampleImage,
        OpKind::MoveSample,
        OpKind::Classify,
        OpKind::History,
        OpKind::StopLabelFrame,
        OpKind::ImportBundle,
    ];

    /// The name in topics (`request/<name>`), answers and logs.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::AddSample => "add_sample",
            OpKind::LabelFrame => "label_frame",
            OpKind::Classes => "classes",
            OpKind::Samples => "samples",
            OpKind::RemoveSample => "remove_sample",
            OpKind::RenameClass => "rename_class",
            OpKind::MergeClass => "merge_class",
            OpKind::DeleteClass => "delete_class",
            OpKind::Reset => "reset",
            OpKind::Retrain => "retrain",
            OpKind::Head => "head",
            OpKind::Recent => "recent",
            OpKind::RecentImage => "recent_image",
            OpKind::LabelRecent => "label_recent",
            OpKind::DiscardRecent => "discard_recent",
            OpKind::Classifiers => "classifiers",
            OpKind::SelectLabel => "select_label",
            OpKind::CreateClassifier => "create_classifier",
            OpKind::UpdateClassifier => "update_classifier",
            OpKind::RenameClassifier => "rename_classifier",
            OpKind::DeleteClassifier => "delete_classifier",
            OpKind::SampleImage => "sample_image",
            OpKind::MoveSample => "move_sample",
            OpKind::Classify => "classify",
            OpKind::History => "history",
            OpKind::StopLabelFrame => "stop_label_frame",
            OpKind::ImportBundle => "import_bundle",
        }
    }

    /// The operation called `name`.
    pub fn from_name(name: &str) -> Option<OpKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether it changes the store, the head or the teach label: such requests
    /// are idempotent by `transaction` ([`super::replies`]); the others only read.
    pub fn changes_state(self) -> bool {
        !matches!(
            self,
            OpKind::Classes
                | OpKind::Samples
                | OpKind::Head
                | OpKind::Recent
                | OpKind::RecentImage
                | OpKind::Classifiers
                | OpKind::SampleImage
                | OpKind::Classify
                | OpKind::History
        )
    }

    /// Whether it concerns the set of classifiers rather than one classifier's
    /// samples: carried out by the daemon's classifier manager, whichever route
    /// it came by.
    pub fn is_manager(self) -> bool {
        matches!(
            self,
            OpKind::Classifiers
                | OpKind::CreateClassifier
                | OpKind::UpdateClassifier
                | OpKind::RenameClassifier
                | OpKind::DeleteClassifier
                | OpKind::ImportBundle
        )
    }

    /// Whether the label may be given as a further topic level
    /// (`add_sample/<label>`).
    pub fn takes_label_level(self) -> bool {
        matches!(self, OpKind::AddSample | OpKind::LabelFrame)
    }

    /// Whether the payload may be raw image bytes instead of a JSON object.
    pub fn takes_raw_image(self) -> bool {
        matches!(self, OpKind::AddSample | OpKind::Classify)
    }

    /// Every operation's name, comma-separated (for the "unknown operation" answer).
    pub fn names() -> String {
        Self::ALL.map(OpKind::name).join(", ")
    }
}

/// Which label `label_frame` stores the frames under.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelChoice {
    /// The label of the request (normalized).
    Given(String),
    /// The label chosen with `select_label` (the dashboard's "Teach" button).
    Selected,
}

/// Which sample `remove_sample` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleRef {
    Id(u64),
    /// The newest sample (the dashboard's "Undo").
    Last,
}

/// One operation with its validated data. Labels that name a new or target class
/// are normalized; labels that refer to an existing class are kept as given and
/// matched against the store without regard to case and normalization form.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    AddSample {
        label: String,
        /// The encoded image (JPEG or PNG), at most `learn.max_image_bytes`.
        image: Bytes,
        /// The image is a whole frame: crop it to the classifier's region first.
        apply_region: bool,
    },
    LabelFrame {
        label: LabelChoice,
        count: u32,
        interval: Duration,
        /// Skip a frame whose features are at least this similar (cosine) to the
        /// last frame stored by this request ("hold to record" in the console).
        skip_similar: Option<f32>,
    },
    Classes,
    Samples {
        /// Only this class's samples.
        label: Option<String>,
    },
    RemoveSample(SampleRef),
    RenameClass {
        from: String,
        to: String,
    },
    MergeClass {
        from: String,
        into: String,
    },
    DeleteClass {
        label: String,
    },
    /// Delete every sample and the head (the request carried `confirm: true`).
    Reset,
    Retrain,
    Head,
    Recent {
        /// Add each crop's JPEG as base64.
        images: bool,
    },
    RecentImage {
        id: u64,
    },
    /// Recent crops become samples of `label`: one (`id`), or several (`ids`),
    /// near-duplicates of crops stored by the same request skipped.
    LabelRecent {
        ids: Vec<u64>,
        label: String,
    },
    DiscardRecent {
        ids: Vec<u64>,
    },
    Classifiers,
    SelectLabel {
        label: String,
    },
    /// A new classifier (its name checked by the label and classifier-name rules;
    /// the rest checked against the whole list when applied).
    CreateClassifier {
        def: ClassifierConfig,
    },
    UpdateClassifier {
        name: String,
        change: ClassifierChange,
    },
    RenameClassifier {
        from: String,
        to: String,
    },
    /// Delete a classifier with its samples (the request carried `confirm: true`).
    DeleteClassifier {
        name: String,
    },
    /// A stored sample's thumbnail.
    SampleImage {
        id: u64,
    },
    /// One sample to another class (new or existing).
    MoveSample {
        id: u64,
        label: String,
    },
    /// Classify an image with the current head; nothing is stored.
    Classify {
        image: Bytes,
    },
    /// The heads trained so far, with their quality.
    History,
    /// End a running `label_frame` now; it answers with what it stored.
    StopLabelFrame,
    /// Import a bundle ([`crate::store::bundle`]): a new classifier, or merged
    /// into or replacing the one of the same name.
    ImportBundle {
        /// The bundle file's bytes (checked when applied, as untrusted input).
        bundle: Bytes,
        /// Import under this name instead of the bundle's.
        as_name: Option<String>,
        mode: crate::store::bundle::Mode,
    },
}

/// The parts of a classifier's definition an `update_classifier` replaces; the
/// others stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierChange {
    pub region: Option<RegionConfig>,
    pub trigger: Option<TriggerConfig>,
    pub predictions: Option<PredictionOverrides>,
    pub head: Option<HeadOverrides>,
    pub recent: Option<RecentConfig>,
    pub device_classes: Option<std::collections::BTreeMap<String, String>>,
}

impl ClassifierChange {
    /// `def` with this change applied.
    pub fn apply(&self, mut def: ClassifierConfig) -> ClassifierConfig {
        if let Some(r) = self.region {
            def.region = r;
        }
        if let Some(t) = self.trigger {
            def.trigger = t;
        }
        if let Some(p) = &self.predictions {
            def.predictions = p.clone();
        }
        if let Some(h) = &self.head {
            def.head = h.clone();
        }
        if let Some(d) = &self.device_classes {
            def.device_classes = d.clone();
        }
        if let Some(r) = self.recent {
            def.recent = r;
        }
        def
    }
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::AddSample { .. } => OpKind::AddSample,
            Op::LabelFrame { .. } => OpKind::LabelFrame,
            Op::Classes => OpKind::Classes,
            Op::Samples { .. } => OpKind::Samples,
            Op::RemoveSample(_) => OpKind::RemoveSample,
            Op::RenameClass { .. } => OpKind::RenameClass,
            Op::MergeClass { .. } => OpKind::MergeClass,
            Op::DeleteClass { .. } => OpKind::DeleteClass,
            Op::Reset => OpKind::Reset,
            Op::Retrain => OpKind::Retrain,
            Op::Head => OpKind::Head,
            Op::Recent { .. } => OpKind::Recent,
            Op::RecentImage { .. } => OpKind::RecentImage,
            Op::LabelRecent { .. } => OpKind::LabelRecent,
            Op::DiscardRecent { .. } => OpKind::DiscardRecent,
            Op::Classifiers => OpKind::Classifiers,
            Op::SelectLabel { .. } => OpKind::SelectLabel,
            Op::CreateClassifier { .. } => OpKind::CreateClassifier,
            Op::UpdateClassifier { .. } => OpKind::UpdateClassifier,
            Op::RenameClassifier { .. } => OpKind::RenameClassifier,
            Op::DeleteClassifier { .. } => OpKind::DeleteClassifier,
            Op::SampleImage { .. } => OpKind::SampleImage,
            Op::MoveSample { .. } => OpKind::MoveSample,
            Op::Classify { .. } => OpKind::Classify,
            Op::History => OpKind::History,
            Op::StopLabelFrame => OpKind::StopLabelFrame,
            Op::ImportBundle { .. } => OpKind::ImportBundle,
        }
    }
}

/// A parsed request: the operation, the caller's `transaction` (echoed in the
/// answer), and the key its answer is remembered under for repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub op: Op,
    pub transaction: Option<Value>,
    /// See [`super::replies::key`].
    pub key: String,
    /// A possible repeat: MQTT's DUP flag (a QoS 1 redelivery).
    pub dup: bool,
}

impl Envelope {
    /// Whether a repeat of this request must get the first answer rather than be
    /// carried out again.
    pub fn idempotent(&self) -> bool {
        self.op.kind().changes_state() && (self.transaction.is_some() || self.dup)
    }
}

/// A request refused while parsing: the reason, and the `transaction` to echo
/// when it could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub error: RequestError,
    pub transaction: Option<Value>,
}

/// The limits parsing checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// `learn.max_image_bytes`: the largest encoded image.
    pub max_image_bytes: usize,
}

/// A request's JSON object, with its `transaction` taken out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Body {
    pub fields: Map<String, Value>,
    pub transaction: Option<Value>,
}

impl Body {
    /// The JSON object of `payload`; an empty (or blank) payload is an empty object.
    pub fn of(payload: &[u8]) -> Result<Body, RequestError> {
        if payload.iter().all(|b| b.is_ascii_whitespace()) {
            return Ok(Body::default());
        }
        let v: Value = serde_json::from_slice(payload)
            .map_err(|e| bad(format!("the payload is not valid JSON: {e}")))?;
        match v {
            Value::Object(mut fields) => {
                let transaction = fields.remove("transaction");
                Ok(Body {
                    fields,
                    transaction,
                })
            }
            _ => Err(bad("the payload must be a JSON object")),
        }
    }

    /// Refuse fields other than `allowed`.
    pub fn only(&self, allowed: &[&str]) -> Result<(), RequestError> {
        match self.fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(bad(format!("unknown field \"{k}\""))),
            None => Ok(()),
        }
    }

    /// The string field `key`.
    pub fn string(&self, key: &str) -> Result<&str, RequestError> {
        self.fields
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("the payload needs a string field \"{key}\"")))
    }

    /// The string field `key`, when present and not null.
    pub fn optional_string(&self, key: &str) -> Result<Option<String>, RequestError> {
        match self.fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(l)) => Ok(Some(l.clone())),
            Some(_) => Err(bad(format!("\"{key}\" must be a string"))),
        }
    }

    /// The boolean field `key`; absent or null is false.
    pub fn flag(&self, key: &str) -> Result<bool, RequestError> {
        match self.fields.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(v)) => Ok(*v),
            Some(_) => Err(bad(format!("\"{key}\" must be true or false"))),
        }
    }

    /// A sample id in `id`.
    fn sample_id(&self) -> Result<u64, RequestError> {
        self.fields
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("the payload needs a numeric field \"id\" (a sample id)"))
    }

    /// Recent-crop ids: `id` (one) or `ids` (a list of 1 to [`MAX_IDS`]).
    fn recent_ids(&self) -> Result<Vec<u64>, RequestError> {
        match (self.fields.get("id"), self.fields.get("ids")) {
            (Some(_), None) => Ok(vec![self.recent_id()?]),
            (None, Some(Value::Array(list))) if !list.is_empty() && list.len() <= MAX_IDS => list
                .iter()
                .map(|v| {
                    v.as_u64()
                        .ok_or_else(|| bad("\"ids\" must be a list of recent crop ids (numbers)"))
                })
                .collect(),
            (None, Some(Value::Array(list))) if list.len() > MAX_IDS => {
                Err(bad(format!("\"ids\" may list at most {MAX_IDS} crops")))
            }
            _ => Err(bad(
                "the payload needs \"id\" or \"ids\" (a non-empty list) of crops from the recent list",
            )),
        }
    }

    /// The recent-crop id in `id`.
    fn recent_id(&self) -> Result<u64, RequestError> {
        self.fields
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("the payload needs a numeric field \"id\" (from the recent list)"))
    }
}

/// The operations whose payload is a plain JSON object.
pub fn from_body(kind: OpKind, b: Body) -> Result<Op, RequestError> {
    Ok(match kind {
        OpKind::Classes => b.only(&[]).map(|()| Op::Classes)?,
        OpKind::Retrain => b.only(&[]).map(|()| Op::Retrain)?,
        OpKind::Head => b.only(&[]).map(|()| Op::Head)?,
        OpKind::Classifiers => b.only(&[]).map(|()| Op::Classifiers)?,
        OpKind::Samples => {
            b.only(&["label"])?;
            Op::Samples {
                label: b.optional_string("label")?,
            }
        }
        OpKind::RemoveSample => remove_sample(&b)?,
        OpKind::RenameClass => {
            b.only(&["from", "to"])?;
            Op::RenameClass {
                from: b.string("from")?.to_string(),
                to: names::normalize_label(b.string("to")?)?,
            }
        }
        OpKind::MergeClass => {
            b.only(&["from", "into"])?;
            Op::MergeClass {
                from: b.string("from")?.to_string(),
                into: names::normalize_label(b.string("into")?)?,
            }
        }
        OpKind::DeleteClass => {
            b.only(&["label"])?;
            Op::DeleteClass {
                label: b.string("label")?.to_string(),
            }
        }
        OpKind::Reset => {
            b.only(&["confirm"])?;
            if b.fields.get("confirm") != Some(&Value::Bool(true)) {
                return Err(bad(
                    "reset deletes every sample and the head: send {\"confirm\": true}",
                ));
            }
            Op::Reset
        }
        OpKind::Recent => {
            b.only(&["images"])?;
            Op::Recent {
                images: b.flag("images")?,
            }
        }
        OpKind::RecentImage => b
            .only(&["id"])
            .and_then(|()| Ok(Op::RecentImage { id: b.recent_id()? }))?,
        OpKind::LabelRecent => {
            b.only(&["id", "ids", "label"])?;
            Op::LabelRecent {
                ids: b.recent_ids()?,
                label: names::normalize_label(b.string("label")?)?,
            }
        }
        OpKind::DiscardRecent => {
            b.only(&["id", "ids"])?;
            Op::DiscardRecent {
                ids: b.recent_ids()?,
            }
        }
        OpKind::SampleImage => {
            b.only(&["id"])?;
            Op::SampleImage { id: b.sample_id()? }
        }
        OpKind::MoveSample => {
            b.only(&["id", "label"])?;
            Op::MoveSample {
                id: b.sample_id()?,
                label: names::normalize_label(b.string("label")?)?,
            }
        }
        OpKind::History => b.only(&[]).map(|()| Op::History)?,
        OpKind::StopLabelFrame => b.only(&[]).map(|()| Op::StopLabelFrame)?,
        OpKind::SelectLabel => {
            b.only(&["label"])?;
            Op::SelectLabel {
                label: names::normalize_label(b.string("label")?)?,
            }
        }
        OpKind::CreateClassifier => create_classifier(b)?,
        OpKind::UpdateClassifier => {
            let name = b.string("name")?.to_string();
            let mut fields = b.fields;
            fields.remove("name");
            let change: ClassifierChange = typed_value(kind, Value::Object(fields))?;
            Op::UpdateClassifier { name, change }
        }
        OpKind::RenameClassifier => {
            b.only(&["from", "to"])?;
            Op::RenameClassifier {
                from: b.string("from")?.to_string(),
                to: names::normalize_classifier_name(b.string("to")?)?,
            }
        }
        OpKind::DeleteClassifier => {
            b.only(&["name", "confirm"])?;
            if b.fields.get("confirm") != Some(&Value::Bool(true)) {
                return Err(bad(
                    "delete_classifier deletes the classifier with every sample and its head: send {\"name\": ..., \"confirm\": true}",
                ));
            }
            Op::DeleteClassifier {
                name: b.string("name")?.to_string(),
            }
        }
        OpKind::AddSample | OpKind::LabelFrame | OpKind::Classify | OpKind::ImportBundle => {
            return Err(bad(format!("{} needs its own parser", kind.name())))
        }
    })
}

/// `value` as `T`, or `bad <op> request: ...` (unknown fields, wrong types).
pub fn typed_value<T: serde::de::DeserializeOwned>(
    op: OpKind,
    value: Value,
) -> Result<T, RequestError> {
    serde_json::from_value(value).map_err(|e| bad(format!("bad {} request: {e}", op.name())))
}

/// `create_classifier`: a `[[classifiers]]` entry as JSON (`name`, and any of
/// `region`, `trigger`, `predictions`, `head`, `recent`, `device_classes`);
/// unknown keys refused.
fn create_classifier(b: Body) -> Result<Op, RequestError> {
    let mut unknown = Vec::new();
    let def: ClassifierConfig = serde_ignored::deserialize(Value::Object(b.fields), |path| {
        unknown.push(path.to_string())
    })
    .map_err(|e| bad(format!("bad create_classifier request: {e}")))?;
    if let Some(k) = unknown.first() {
        return Err(bad(format!("unknown field \"{k}\"")));
    }
    let name = names::normalize_classifier_name(&def.name)?;
    Ok(Op::CreateClassifier {
        def: ClassifierConfig { name, ..def },
    })
}

/// `remove_sample`: `{"id": n}` or `{"last": true}`.
fn remove_sample(b: &Body) -> Result<Op, RequestError> {
    b.only(&["id", "last"])?;
    Ok(Op::RemoveSample(
        match (b.fields.get("id"), b.fields.get("last")) {
            (Some(id), None) => SampleRef::Id(
                id.as_u64()
                    .ok_or_else(|| bad("\"id\" must be a sample id (a number)"))?,
            ),
            (None, Some(Value::Bool(true))) => SampleRef::Last,
            _ => {
                return Err(bad(
                    "the payload needs \"id\" (a sample id) or \"last\": true (the newest sample)",
                ))
            }
        },
    ))
}

/// An `add_sample` with its label normalized and its image's size checked.
pub fn sample_op(
    label: &str,
    image: Bytes,
    apply_region: bool,
    limits: &Limits,
) -> Result<Op, RequestError> {
    let label = names::normalize_label(label)?;
    check_image(&image, limits.max_image_bytes)?;
    Ok(Op::AddSample {
        label,
        image,
        apply_region,
    })
}

/// An encoded image is neither empty nor above `max_bytes`.
pub fn check_image(image: &[u8], max_bytes: usize) -> Result<(), RequestError> {
    if image.len() > max_bytes {
        return Err(bad(format!(
            "the image is {} bytes, the limit (learn.max_image_bytes) is {max_bytes}",
            image.len()
        )));
    }
    if image.is_empty() {
        return Err(bad("the image is empty"));
    }
    Ok(())
}

/// A `label_frame` with its count and spacing checked.
pub fn label_frame_op(
    label: LabelChoice,
    count: u32,
    interval_ms: u64,
    skip_similar: Option<f32>,
) -> Result<Op, RequestError> {
    if skip_similar.is_some_and(|s| !(s.is_finite() && (0.5..=1.0).contains(&s))) {
        return Err(bad(
            "skip_similar must be a cosine similarity from 0.5 to 1",
        ));
    }
    if count == 0 || count > MAX_FRAMES {
        return Err(bad(format!("count must be 1 to {MAX_FRAMES}")));
    }
    if interval_ms > MAX_INTERVAL_MS {
        return Err(bad(format!(
            "interval_ms must be at most {MAX_INTERVAL_MS}"
        )));
    }
    Ok(Op::LabelFrame {
        label,
        count,
        interval: Duration::from_millis(interval_ms),
        skip_similar,
    })
}
