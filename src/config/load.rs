//! Loading: built-in defaults → TOML file → `EDGEHEAD__SECTION__KEY` environment,
//! merged by the `config` crate and deserialized into a [`RawConfig`], with every
//! unknown key found (`serde_ignored`) and reported beside the invalid values.

use std::collections::HashMap;
use std::path::PathBuf;

use super::check::{ConfigError, Problem};
use super::raw::RawConfig;
use super::validate::validate;
use super::Settings;

/// Prefix of the environment variables that override the configuration.
pub const ENV_PREFIX: &str = "EDGEHEAD";
/// Separates the prefix, sections and keys in environment variable names.
pub const ENV_SEPARATOR: &str = "__";

/// Where the raw configuration comes from.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// The `--config` file, if any.
    pub file: Option<PathBuf>,
    /// Environment variables to read; `None` reads the process environment.
    pub env: Option<HashMap<String, String>>,
}

/// Merge defaults, the file and the environment into a [`RawConfig`]; unknown
/// keys are errors.
pub fn load(sources: &Sources) -> Result<RawConfig, ConfigError> {
    match load_keeping_unknown(sources)? {
        (raw, unknown) if unknown.is_empty() => Ok(raw),
        (_, problems) => Err(ConfigError { problems }),
    }
}

/// [`load`], with the unknown keys returned beside the configuration (so that
/// [`load_settings`] reports them together with the invalid values).
fn load_keeping_unknown(sources: &Sources) -> Result<(RawConfig, Vec<Problem>), ConfigError> {
    use ::config::{Config, Environment, File, FileFormat};

    let defaults = Config::try_from(&RawConfig::default())
        .map_err(|e| ConfigError::one("(defaults)", e.to_string()))?;
    let mut builder = Config::builder().add_source(defaults);
    if let Some(path) = &sources.file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::one("--config", format!("cannot read {}: {e}", path.display()))
        })?;
        builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
    }
    let env = Environment::with_prefix(ENV_PREFIX)
        .prefix_separator(ENV_SEPARATOR)
        .separator(ENV_SEPARATOR)
        .source(sources.env.clone());
    let merged = builder
        .add_source(env)
        .build()
        .map_err(|e| ConfigError::one(&error_key(&e), e.to_string()))?;

    let mut unknown = Vec::new();
    let raw: Result<RawConfig, _> =
        serde_ignored::deserialize(merged, |path| unknown.push(path.to_string()));
    let mut problems: Vec<Problem> = unknown
        .into_iter()
        .map(|key| Problem {
            message: format!(
                "unknown key (environment: {ENV_PREFIX}{ENV_SEPARATOR}{})",
                key.to_uppercase().replace('.', ENV_SEPARATOR)
            ),
            key,
        })
        .collect();
    match raw {
        Ok(raw) => Ok((raw, problems)),
        Err(e) => {
            problems.push(Problem {
                key: error_key(&e),
                message: e.to_string(),
            });
            Err(ConfigError { problems })
        }
    }
}

/// The key a `config` error is about, when it names one.
fn error_key(e: &::config::ConfigError) -> String {
    let text = e.to_string();
    text.rsplit_once("for key `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(key, _)| key.to_string())
        .unwrap_or_else(|| "(config)".into())
}

/// Load and validate in one step.
/// Every problem is reported at once: unknown keys and invalid values together.
pub fn load_settings(sources: &Sources) -> Result<Settings, ConfigError> {
    let (raw, unknown) = load_keeping_unknown(sources)?;
    match validate(raw) {
        Ok(s) if unknown.is_empty() => Ok(s),
        Ok(_) => Err(ConfigError { problems: unknown }),
        Err(mut e) => {
            let mut problems = unknown;
            problems.append(&mut e.problems);
            Err(ConfigError { problems })
        }
    }
}
