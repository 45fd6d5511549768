//! Configuration: built-in defaults → TOML file → `EDGEHEAD__SECTION__KEY`
//! environment ([`load`]), deserialized into [`RawConfig`] (what the user writes)
//! and validated into [`Settings`] (what the program uses).
//!
//! Every problem is reported at once, each with the key it concerns: unknown keys
//! (a typo in the file or in an environment variable), values of the wrong type and
//! values out of range. This module imports nothing above the shared vocabulary
//! ([`crate::names`], [`crate::region`]).
//!
//! - [`raw`]: the top-level sections; [`head`], [`source`], [`backbone`],
//!   [`mqtt`] and [`classifiers`] the larger ones.
//! - [`load`]: the layers; [`check`]: problems and the checker; [`validate`]:
//!   the checks, one per section.

pub mod backbone;
pub mod check;
pub mod classifiers;
pub mod head;
pub mod load;
pub mod mqtt;
pub mod raw;
pub mod runtime;
pub mod source;
pub mod validate;
pub mod web;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use backbone::{BackboneConfig, Layout, Precision, ResizePolicy, Threads};
pub use check::{ConfigError, Problem};
pub use classifiers::{
    ClassifierConfig, ClassifierSpec, RecentConfig, TriggerConfig, DEFAULT_CHANGE_THRESHOLD,
};
pub use head::{HeadConfig, HeadKind, PredictionConfig, PublishMode, UnknownThreshold};
pub use load::{load, load_settings, Sources, ENV_PREFIX, ENV_SEPARATOR};
pub use mqtt::{EmbeddedBrokerConfig, MqttConfig, MqttProtocol, TlsConfig, TopicOptions};
pub use raw::{HomeAssistantConfig, LearnConfig, LogConfig, LogFormat, RawConfig, ShutdownConfig};
pub use source::{
    CameraConfig, CommandConfig, FilesConfig, HttpConfig, HttpMode, PixelFormat, SourceConfig,
    SourceKind, SyntheticConfig,
};
pub use validate::validate;
pub use web::{WebAuth, WebConfig};

/// What `print-config` shows in place of a secret.
pub const MASK: &str = "********";

/// The configuration after validation: every value checked, defaults resolved.
/// Each section is the validated one; nothing else of the file is kept.
#[derive(Debug, Clone)]
pub struct Settings {
    pub device_id: String,
    pub client_id: String,
    /// `<base_topic>/<device_id>`.
    pub topic_base: String,
    /// Where samples, embeddings, heads and saved state live.
    pub state_dir: PathBuf,
    pub log: LogConfig,
    pub source: SourceConfig,
    pub backbone: BackboneConfig,
    /// `[head]`: the defaults of every classifier's head (the classifiers' own are
    /// in [`ClassifierSpec::head`]); what `eval` and `bench` train with.
    pub head: HeadConfig,
    /// `[head].unknown_threshold`, parsed.
    pub unknown_threshold: UnknownThreshold,
    pub learn: LearnConfig,
    pub mqtt: MqttConfig,
    /// Where the embedded broker listens, when it runs (`mqtt.host` empty).
    pub embedded_broker: Option<SocketAddr>,
    pub homeassistant: HomeAssistantConfig,
    pub web: WebConfig,
    /// Where the console listens, when it runs.
    pub web_listen: Option<SocketAddr>,
    /// The classifiers of the configuration file, resolved: at least one (the
    /// built-in `default` when the file has none); the first takes the
    /// device-level request topics and a state directory of edgehead 0.1. The
    /// daemon lays the run-time definitions of the state directory over them
    /// ([`runtime`], [`Settings::resolve`]).
    pub classifiers: Vec<Arc<ClassifierSpec>>,
    /// `[predictions]`: the defaults of every classifier's prediction settings.
    pub predictions: PredictionConfig,
    /// `[[classifiers]]` as written, for laying run-time changes over.
    pub classifier_file: Vec<ClassifierConfig>,
    /// After SIGTERM, how long the tasks get to finish.
    pub shutdown_grace: Duration,
}

impl Settings {
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Resolve and check `list` (an effective list of classifier definitions) as
    /// the configuration's `[[classifiers]]` are: names, regions against this
    /// source's frame size, triggers, and each classifier's own settings over
    /// `[head]` and `[predictions]`. Every problem is reported, keyed
    /// `classifiers[i].<field>` by position in `list`.
    pub fn resolve(
        &self,
        list: &[ClassifierConfig],
    ) -> Result<Vec<Arc<ClassifierSpec>>, ConfigError> {
        let mut c = check::Checker::default();
        let specs = classifiers::resolve(
            &mut c,
            list,
            &self.head,
            &self.predictions,
            self.unknown_threshold,
            validate::frame_size(&self.source),
        );
        if c.problems.is_empty() {
            Ok(specs)
        } else {
            Err(ConfigError {
                problems: c.problems,
            })
        }
    }

    /// The classifier named `name` (exact), or the first when `name` is `None`.
    pub fn classifier(&self, name: Option<&str>) -> Option<&Arc<ClassifierSpec>> {
        match name {
            None => self.classifiers.first(),
            Some(n) => self.classifiers.iter().find(|c| c.name == n),
        }
    }
}

/// A unit variant of a configuration enum from its name in the file.
fn from_name<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    use serde::de::IntoDeserializer;
    T::deserialize(s.trim().into_deserializer()).map_err(|e: serde::de::value::Error| e.to_string())
}

/// `scheme://user:password@host/...` with the user and password masked; any other
/// text as it is. For URLs shown in logs, status and `print-config`.
pub fn redact_userinfo(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{MASK}@{}", &rest[at + 1..]),
        None => s.to_string(),
    }
}

/// The configuration as `print-config` shows it: TOML, with secrets masked.
pub fn to_masked_toml(raw: &RawConfig) -> String {
    let mut shown = raw.clone();
    if !shown.mqtt.password.is_empty() {
        shown.mqtt.password = MASK.into();
    }
    if !shown.source.http.password.is_empty() {
        shown.source.http.password = MASK.into();
    }
    if !shown.mqtt.embedded_broker.password.is_empty() {
        shown.mqtt.embedded_broker.password = MASK.into();
    }
    shown.source.http.url = redact_userinfo(&shown.source.http.url);
    for a in &mut shown.source.command.args {
        *a = redact_userinfo(a);
    }
    toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
}

#[cfg(test)]
mod tests;
