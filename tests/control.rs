//! Control-channel behaviour of ftpgate, in-process and unprivileged: ftpgate in reverse mode on
//! 127.0.0.1 between a raw client and a scriptable fake server (tests/harness). Each test has
//! its own gateway and server, so they run in parallel; every wait is bounded.

#[allow(dead_code)]
mod harness;

#[path = "control/aborts.rs"]
mod aborts;
#[path = "control/admin.rs"]
mod admin;
#[path = "control/feat.rs"]
mod feat;
#[path = "control/halfclose.rs"]
mod halfclose;
#[path = "control/held.rs"]
mod held;
#[path = "control/limits.rs"]
mod limits;
#[path = "control/login.rs"]
mod login;
#[path = "control/metrics.rs"]
mod metrics;
#[path = "control/ordering.rs"]
mod ordering;
#[path = "control/telnet.rs"]
mod telnet;
#[path = "control/transfers.rs"]
mod transfers;
