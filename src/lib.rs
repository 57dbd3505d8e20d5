//! ftpgate: a transparent FTP application-level gateway.

pub mod addr;
pub mod admin_client;
pub mod cli;
pub mod config;
pub mod data;
pub mod intercept;
pub mod labels;
pub mod logging;
pub mod manual;
pub mod metrics;
pub mod pinhole;
pub mod privileges;
pub mod protocol;
pub mod proxy;
pub mod rlimit;
pub mod session;
pub mod tls;
pub mod xferlog;
