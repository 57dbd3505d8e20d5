//! The `log` section: format and level of ftpgate's own log, and the transfer log.

use super::raw::RawLog;
use super::{invalid, ConfigError};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

pub(super) struct Log {
    pub format: LogFormat,
    /// A level or an `EnvFilter` directive, checked to parse.
    pub level: String,
    pub xferlog: Option<PathBuf>,
}

pub(super) fn log(raw: &RawLog) -> Result<Log, ConfigError> {
    let format = match raw.format.as_str() {
        "human" => LogFormat::Human,
        "json" => LogFormat::Json,
        other => return Err(invalid("log.format", format!("`{other}` is not human or json"))),
    };
    if tracing_subscriber::EnvFilter::try_new(&raw.level).is_err() {
        return Err(invalid("log.level", format!("`{}` is not a log level or filter", raw.level)));
    }
    let xferlog = match raw.xferlog.as_deref() {
        Some(p) if !p.starts_with('/') => return Err(invalid("log.xferlog", format!("`{p}` is not an absolute path"))),
        p => p.map(PathBuf::from),
    };
    Ok(Log { format, level: raw.level.clone(), xferlog })
}
