//! Every metric ftpgate exports, in one place. Names are in base units, counters end in
//! `_total`, and labels stay low-cardinality (no addresses, no user names).

use prometheus::{
    register_histogram_with_registry, register_int_counter_vec_with_registry, register_int_counter_with_registry,
    register_int_gauge_vec_with_registry, register_int_gauge_with_registry, Encoder, Histogram, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Registry, TextEncoder,
};
use std::sync::LazyLock;

pub struct Metrics {
    pub registry: Registry,
    pub sessions_active: IntGauge,
    pub sessions: IntCounterVec,
    pub session_duration: Histogram,
    pub upstream_connect_failures: IntCounter,
    pub upstream_connect_duration: Histogram,
    pub data_channels_active: IntGaugeVec,
    pub data_channels: IntCounterVec,
    pub bytes: IntCounterVec,
    pub transfers: IntCounterVec,
    pub transfer_duration: Histogram,
    pub rejections: IntCounterVec,
    pub server_replies: IntCounterVec,
}

/// Rejection reasons, the values of `ftpgate_rejections_total{reason}`.
pub const REASONS: [&str; 11] = [
    "bounce",
    "port_stealing",
    "limit",
    "timeout",
    "malformed",
    "policy",
    "loop",
    "server_data_address",
    "upstream_connect",
    "intercept",
    "port_exhausted",
];

const DURATION_BUCKETS: [f64; 14] =
    [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0];
const CONNECT_BUCKETS: [f64; 12] = [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0];

impl Metrics {
    fn new() -> Result<Self, prometheus::Error> {
        let r = Registry::new();
        let build = register_int_gauge_vec_with_registry!("ftpgate_build_info", "Build information", &["version"], r)?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let m = Self {
            sessions_active: register_int_gauge_with_registry!("ftpgate_sessions_active", "Control sessions open", r)?,
            sessions: register_int_counter_vec_with_registry!(
                "ftpgate_sessions_total",
                "Control sessions ended, by outcome",
                &["outcome"],
                r
            )?,
            session_duration: register_histogram_with_registry!(
                "ftpgate_session_duration_seconds",
                "Control session duration",
                DURATION_BUCKETS.to_vec(),
                r
            )?,
            upstream_connect_failures: register_int_counter_with_registry!(
                "ftpgate_upstream_connect_failures_total",
                "Failed control connections to servers",
                r
            )?,
            upstream_connect_duration: register_histogram_with_registry!(
                "ftpgate_upstream_connect_duration_seconds",
                "Time to connect to the server",
                CONNECT_BUCKETS.to_vec(),
                r
            )?,
            data_channels_active: register_int_gauge_vec_with_registry!(
                "ftpgate_data_channels_active",
                "Data channels open (listening or relaying)",
                &["mode", "family"],
                r
            )?,
            data_channels: register_int_counter_vec_with_registry!(
                "ftpgate_data_channels_total",
                "Data channels opened",
                &["mode", "family"],
                r
            )?,
            bytes: register_int_counter_vec_with_registry!(
                "ftpgate_bytes_total",
                "Data bytes relayed",
                &["direction"],
                r
            )?,
            transfers: register_int_counter_vec_with_registry!(
                "ftpgate_transfers_total",
                "Data transfers, by command and outcome",
                &["verb", "outcome"],
                r
            )?,
            transfer_duration: register_histogram_with_registry!(
                "ftpgate_transfer_duration_seconds",
                "Data transfer duration",
                DURATION_BUCKETS.to_vec(),
                r
            )?,
            rejections: register_int_counter_vec_with_registry!(
                "ftpgate_rejections_total",
                "Things refused, by reason",
                &["reason"],
                r
            )?,
            server_replies: register_int_counter_vec_with_registry!(
                "ftpgate_server_replies_total",
                "Final replies from servers, by class",
                &["class"],
                r
            )?,
            registry: r,
        };
        // Every series exists from the start, so rates and alerts see zeros rather than gaps.
        for reason in REASONS {
            m.rejections.with_label_values(&[reason]);
        }
        for d in ["to_client", "to_server"] {
            m.bytes.with_label_values(&[d]);
        }
        Ok(m)
    }

    pub fn reject(&self, reason: &str) {
        self.rejections.with_label_values(&[reason]).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics; an error leaves a partial page.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

static METRICS: LazyLock<Metrics> =
    LazyLock::new(|| Metrics::new().unwrap_or_else(|e| panic!("metric definitions are inconsistent: {e}")));

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Low-cardinality verb label: transfer verbs as they are, anything else as `other`.
pub fn verb_label(verb: &str) -> &'static str {
    match verb {
        "RETR" => "RETR",
        "STOR" => "STOR",
        "STOU" => "STOU",
        "APPE" => "APPE",
        "LIST" => "LIST",
        "NLST" => "NLST",
        "MLSD" => "MLSD",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_series_render_with_their_names() {
        let m = metrics();
        m.reject("bounce");
        let text = String::from_utf8(m.render()).unwrap();
        for name in [
            "ftpgate_build_info",
            "ftpgate_rejections_total{reason=\"bounce\"}",
            "ftpgate_rejections_total{reason=\"loop\"} 0",
            "ftpgate_bytes_total{direction=\"to_client\"}",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
    }
}
