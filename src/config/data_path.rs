//! The `data_path` field: who carries the bytes of data connections.

use super::{invalid, ConfigError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataPath {
    /// ftpgate accepts and connects both legs and moves the bytes itself.
    #[default]
    Relay,
    /// ftpgate installs one-shot NAT pinholes and the kernel forwards the data connections.
    Kernel,
}

impl DataPath {
    pub fn label(self) -> &'static str {
        match self {
            DataPath::Relay => "relay",
            DataPath::Kernel => "kernel",
        }
    }
}

pub(super) fn data_path(raw: &str) -> Result<DataPath, ConfigError> {
    match raw {
        "relay" => Ok(DataPath::Relay),
        "kernel" => Ok(DataPath::Kernel),
        other => Err(invalid("data_path", format!("`{other}` is not one of relay, kernel"))),
    }
}
