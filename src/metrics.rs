//! Every metric ftpgate exports, in one place. Names are in base units, counters end in
//! `_total`, and labels stay low-cardinality (no addresses, no user names): their values are the
//! enums of [`crate::labels`].
//!
//! The gateway creates one [`Metrics`] and hands it to whatever counts; there is no global, so
//! tests each get their own registry.

use crate::labels::{DataMode, Direction, Family, Reason, ReplyClass, SessionOutcome, TransferOutcome, TransferVerb};
use prometheus::{
    register_histogram_with_registry, register_int_counter_vec_with_registry, register_int_counter_with_registry,
    register_int_gauge_vec_with_registry, register_int_gauge_with_registry, Encoder, Histogram, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Registry, TextEncoder,
};
use std::time::Duration;

/// Series per label value, in the order of the label enum's `ALL`. Every series is created at
/// start, so rates and alerts see zeros rather than gaps, and counting needs no lookup.
type PerMode<T> = [[T; Family::ALL.len()]; DataMode::ALL.len()];
type PerTransfer = [[IntCounter; TransferOutcome::ALL.len()]; TransferVerb::ALL.len()];

pub struct Metrics {
    registry: Registry,
    sessions_active: IntGauge,
    sessions: [IntCounter; SessionOutcome::ALL.len()],
    session_duration: Histogram,
    upstream_connect_failures: IntCounter,
    /// The kernel path's rule counters, as last read, and the series that follow them.
    kernel_path: [(IntCounter, std::sync::atomic::AtomicU64); 2],
    /// IP-layer bytes of the kernel path's data connections, from conntrack accounting.
    kernel_path_bytes: [IntCounter; Direction::ALL.len()],
    upstream_connect_duration: Histogram,
    data_channels_active: PerMode<IntGauge>,
    data_channels: PerMode<IntCounter>,
    bytes: [IntCounter; Direction::ALL.len()],
    transfers: PerTransfer,
    transfer_duration: Histogram,
    rejections: [IntCounter; Reason::ALL.len()],
    server_replies: [IntCounter; ReplyClass::ALL.len()],
    /// By TLS state of the client's and the server's side (`tls` / `plain`).
    tls_sessions: IntCounterVec,
    tls_transfers: IntCounterVec,
    /// By side and a reason from a fixed list (`tls_failure_reason`).
    tls_handshake_failures: IntCounterVec,
}

fn tls_label(on: bool) -> &'static str {
    if on {
        "tls"
    } else {
        "plain"
    }
}

/// Keeps a gauge raised for as long as it lives.
#[must_use = "the gauge drops back as soon as this is dropped"]
pub struct Active(IntGauge);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.dec();
    }
}

const DURATION_BUCKETS: [f64; 14] =
    [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0];
const CONNECT_BUCKETS: [f64; 12] = [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0];

fn per_mode<T>(series: impl Fn(&[&str]) -> T) -> PerMode<T> {
    DataMode::ALL.map(|m| Family::ALL.map(|f| series(&[m.label(), f.label()])))
}

impl Metrics {
    /// A fresh registry with every series at zero. Fails only if the definitions below
    /// contradict each other.
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Registry::new();
        let build = register_int_gauge_vec_with_registry!("ftpgate_build_info", "Build information", &["version"], r)?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let sessions: IntCounterVec = register_int_counter_vec_with_registry!(
            "ftpgate_sessions_total",
            "Control sessions ended, by outcome",
            &["outcome"],
            r
        )?;
        let data_channels_active: IntGaugeVec = register_int_gauge_vec_with_registry!(
            "ftpgate_data_channels_active",
            "Data channels open (listening or relaying)",
            &["mode", "family"],
            r
        )?;
        let data_channels: IntCounterVec = register_int_counter_vec_with_registry!(
            "ftpgate_data_channels_total",
            "Data channels opened",
            &["mode", "family"],
            r
        )?;
        let bytes: IntCounterVec =
            register_int_counter_vec_with_registry!("ftpgate_bytes_total", "Data bytes relayed", &["direction"], r)?;
        let transfers: IntCounterVec = register_int_counter_vec_with_registry!(
            "ftpgate_transfers_total",
            "Data transfers, by command and outcome",
            &["verb", "outcome"],
            r
        )?;
        let rejections: IntCounterVec = register_int_counter_vec_with_registry!(
            "ftpgate_rejections_total",
            "Things refused, by reason",
            &["reason"],
            r
        )?;
        let server_replies: IntCounterVec = register_int_counter_vec_with_registry!(
            "ftpgate_server_replies_total",
            "Final replies from servers, by class",
            &["class"],
            r
        )?;
        let tls_sessions = register_int_counter_vec_with_registry!(
            "ftpgate_tls_sessions_total",
            "Control sessions ended, by TLS state of each side",
            &["client", "server"],
            r
        )?;
        let tls_transfers = register_int_counter_vec_with_registry!(
            "ftpgate_tls_transfers_total",
            "Data channels ended, by TLS state of each side",
            &["client", "server"],
            r
        )?;
        let tls_handshake_failures = register_int_counter_vec_with_registry!(
            "ftpgate_tls_handshake_failures_total",
            "TLS handshakes that failed, by side and reason",
            &["side", "reason"],
            r
        )?;
        for a in [true, false] {
            for b in [true, false] {
                tls_sessions.with_label_values(&[tls_label(a), tls_label(b)]);
                tls_transfers.with_label_values(&[tls_label(a), tls_label(b)]);
            }
        }
        let kernel_path: IntCounterVec = register_int_counter_vec_with_registry!(
            "ftpgate_kernel_path_packets_total",
            "Kernel data path: packets counted by the pinhole rules' counters (used: a connection \
             let through; refused: a packet of a stranger's or second connection dropped)",
            &["counter"],
            r
        )?;
        let kernel_path_bytes: IntCounterVec = register_int_counter_vec_with_registry!(
            "ftpgate_kernel_path_bytes_total",
            "Kernel data path: IP-layer bytes (headers included, some 3-5 % above the data) of the data \
             connections the kernel carried, from conntrack accounting, added as each connection ends; \
             connections whose count is unknown are left out",
            &["direction"],
            r
        )?;
        let follow = |name: &str| (kernel_path.with_label_values(&[name]), std::sync::atomic::AtomicU64::new(0));
        Ok(Self {
            tls_sessions,
            tls_transfers,
            tls_handshake_failures,
            kernel_path: [follow("used"), follow("refused")],
            kernel_path_bytes: Direction::ALL.map(|d| kernel_path_bytes.with_label_values(&[d.label()])),
            sessions_active: register_int_gauge_with_registry!("ftpgate_sessions_active", "Control sessions open", r)?,
            sessions: SessionOutcome::ALL.map(|o| sessions.with_label_values(&[o.label()])),
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
            data_channels_active: per_mode(|l| data_channels_active.with_label_values(l)),
            data_channels: per_mode(|l| data_channels.with_label_values(l)),
            bytes: Direction::ALL.map(|d| bytes.with_label_values(&[d.label()])),
            transfers: TransferVerb::ALL
                .map(|v| TransferOutcome::ALL.map(|o| transfers.with_label_values(&[v.label(), o.label()]))),
            transfer_duration: register_histogram_with_registry!(
                "ftpgate_transfer_duration_seconds",
                "Data transfer duration",
                DURATION_BUCKETS.to_vec(),
                r
            )?,
            rejections: Reason::ALL.map(|reason| rejections.with_label_values(&[reason.label()])),
            server_replies: ReplyClass::ALL.map(|c| server_replies.with_label_values(&[c.label()])),
            registry: r,
        })
    }

    /// A session ended with these sides in TLS.
    pub fn tls_session(&self, client: bool, server: bool) {
        self.tls_sessions.with_label_values(&[tls_label(client), tls_label(server)]).inc();
    }

    /// A data channel ended with these sides in TLS.
    pub fn tls_transfer(&self, client: bool, server: bool) {
        self.tls_transfers.with_label_values(&[tls_label(client), tls_label(server)]).inc();
    }

    /// A TLS handshake on `side` failed; `reason` is one of a fixed set of labels.
    pub fn tls_handshake_failed(&self, side: &'static str, reason: &'static str) {
        self.tls_handshake_failures.with_label_values(&[side, reason]).inc();
    }

    /// Counts a control session as open until the returned guard is dropped.
    pub fn session_opened(&self) -> Active {
        self.sessions_active.inc();
        Active(self.sessions_active.clone())
    }

    pub fn session_ended(&self, outcome: SessionOutcome, duration: Duration) {
        self.sessions[outcome.index()].inc();
        self.session_duration.observe(duration.as_secs_f64());
    }

    pub fn upstream_connected(&self, took: Duration) {
        self.upstream_connect_duration.observe(took.as_secs_f64());
    }

    pub fn upstream_connect_failed(&self) {
        self.upstream_connect_failures.inc();
    }

    /// Counts a data channel as opened, and as open until the returned guard is dropped.
    pub fn data_channel_opened(&self, mode: DataMode, family: Family) -> Active {
        self.data_channels[mode.index()][family.index()].inc();
        let gauge = &self.data_channels_active[mode.index()][family.index()];
        gauge.inc();
        Active(gauge.clone())
    }

    /// The byte counter of one direction, for the relay to add to as data moves.
    pub fn bytes(&self, direction: Direction) -> IntCounter {
        self.bytes[direction.index()].clone()
    }

    /// A kernel data connection's IP-layer bytes as conntrack counted them.
    pub fn kernel_path_bytes(&self, direction: Direction, bytes: u64) {
        self.kernel_path_bytes[direction.index()].inc_by(bytes);
    }

    pub fn transfer(&self, verb: TransferVerb, outcome: TransferOutcome, duration: Duration) {
        self.transfers[verb.index()][outcome.index()].inc();
        self.transfer_duration.observe(duration.as_secs_f64());
    }

    pub fn reject(&self, reason: Reason) {
        self.rejections[reason.index()].inc();
    }

    pub fn server_reply(&self, class: ReplyClass) {
        self.server_replies[class.index()].inc();
    }

    /// Follows the kernel path's counters `used` and `refused` as the kernel reports them; a
    /// count lower than the last (the table was reloaded) starts again from zero.
    pub fn kernel_path_counters(&self, now: [u64; 2]) {
        for ((series, last), now) in self.kernel_path.iter().zip(now) {
            let before = last.swap(now, std::sync::atomic::Ordering::Relaxed);
            series.inc_by(if now >= before { now - before } else { now });
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics; an error leaves a partial page.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Metrics) -> String {
        String::from_utf8(m.render()).unwrap()
    }

    #[test]
    fn every_labelled_series_exists_from_the_start() {
        let text = text(&Metrics::new().unwrap());
        assert!(text.contains("ftpgate_build_info{version="), "{text}");
        let mut expected = Vec::new();
        expected.extend(SessionOutcome::ALL.map(|o| format!("ftpgate_sessions_total{{outcome=\"{}\"}} 0", o.label())));
        expected.extend(Direction::ALL.map(|d| format!("ftpgate_bytes_total{{direction=\"{}\"}} 0", d.label())));
        expected.extend(
            Direction::ALL.map(|d| format!("ftpgate_kernel_path_bytes_total{{direction=\"{}\"}} 0", d.label())),
        );
        expected.extend(Reason::ALL.map(|r| format!("ftpgate_rejections_total{{reason=\"{}\"}} 0", r.label())));
        expected.extend(ReplyClass::ALL.map(|c| format!("ftpgate_server_replies_total{{class=\"{}\"}} 0", c.label())));
        for m in DataMode::ALL {
            for f in Family::ALL {
                for name in ["ftpgate_data_channels_total", "ftpgate_data_channels_active"] {
                    expected.push(format!("{name}{{family=\"{}\",mode=\"{}\"}} 0", f.label(), m.label()));
                }
            }
        }
        for v in TransferVerb::ALL {
            for o in TransferOutcome::ALL {
                expected.push(format!("ftpgate_transfers_total{{outcome=\"{}\",verb=\"{}\"}} 0", o.label(), v.label()));
            }
        }
        for series in expected {
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
    }

    #[test]
    fn typed_calls_count_their_own_series() {
        let m = Metrics::new().unwrap();
        m.reject(Reason::Bounce);
        m.session_ended(SessionOutcome::ReplyTimeout, Duration::from_millis(5));
        m.transfer(TransferVerb::from_verb("RETR"), TransferOutcome::Failed, Duration::from_millis(5));
        m.server_reply(ReplyClass::TransientNegative);
        m.bytes(Direction::ToServer).inc_by(7);
        let session = m.session_opened();
        let channel = m.data_channel_opened(DataMode::ActiveToPassive, Family::Ipv6);
        let open = text(&m);
        for series in [
            "ftpgate_rejections_total{reason=\"bounce\"} 1",
            "ftpgate_rejections_total{reason=\"loop\"} 0",
            "ftpgate_sessions_total{outcome=\"reply_timeout\"} 1",
            "ftpgate_transfers_total{outcome=\"failed\",verb=\"RETR\"} 1",
            "ftpgate_server_replies_total{class=\"4xx\"} 1",
            "ftpgate_bytes_total{direction=\"to_server\"} 7",
            "ftpgate_sessions_active 1",
            "ftpgate_data_channels_active{family=\"ipv6\",mode=\"active_to_passive\"} 1",
            "ftpgate_data_channels_total{family=\"ipv6\",mode=\"active_to_passive\"} 1",
        ] {
            assert!(open.contains(series), "{series} missing:\n{open}");
        }
        drop((session, channel));
        let closed = text(&m);
        assert!(closed.contains("ftpgate_sessions_active 0"), "{closed}");
        assert!(closed.contains("ftpgate_data_channels_active{family=\"ipv6\",mode=\"active_to_passive\"} 0"));
        assert!(closed.contains("ftpgate_data_channels_total{family=\"ipv6\",mode=\"active_to_passive\"} 1"));
    }
}
