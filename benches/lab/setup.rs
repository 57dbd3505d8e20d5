//! The labs of figures 1-4, one per path (routed, kernel helper, ftpgate) with vsftpd, all up
//! together so that the figures can take turns between the paths; and how ftpgate is started
//! in any lab of the bench (figure 5's too), with a low open-file limit it must raise itself.

use super::bulk::{BigFile, GateCpu, GIB};
use super::lab::servers::ServerKind;
use super::lab::{self, Lab, LabPath, PROXY_PORT};
use super::rate::{Rate, RateSum, SMALL_BYTES, SMALL_NAME};
use super::report;
use super::rtt::Rtt;
use std::fs;
use std::path::Path;
use std::time::Duration;

/// ftpgate starts with the usual default soft limit (systemd's, most shells'), so that the
/// memory figure also proves ftpgate raises RLIMIT_NOFILE itself.
pub const FTPGATE_START_NOFILE: u64 = 1024;

/// ftpgate's configuration for figures 1-4: the defaults, with info logging as in production
/// and no shutdown grace (the lab ends it).
const GATE_YAML: &str = "# ftpgate configuration of the lab benchmark (benches/lab.rs), figures 1-4
timeouts:
  shutdown_grace: 0s
log:
  level: info
";

/// One path of figures 1-4: the lab's path and, through ftpgate, its data path. The list is
/// [`all_paths`]; a path whose files this tree lacks is reported as not built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchPath {
    pub label: &'static str,
    pub lab: LabPath,
    /// ftpgate's flags besides the bench configuration.
    pub gate_args: &'static [&'static str],
    /// A rule file (of the lab's rule directory) loaded in the firewall besides the path's own.
    pub rules: Option<&'static str>,
}

impl BenchPath {
    pub fn name(&self) -> &'static str {
        self.label
    }

    /// Whether this tree has what the path needs (its rule file).
    pub fn available(&self) -> bool {
        self.rules.is_none_or(|f| lab::rules_dir().join(f).is_file())
    }
}

pub const ROUTED: BenchPath = BenchPath { label: "routed", lab: LabPath::Routed, gate_args: &[], rules: None };
pub const KERNEL_HELPER: BenchPath =
    BenchPath { label: "kernel-helper", lab: LabPath::KernelHelper, gate_args: &[], rules: None };
pub const RELAY: BenchPath =
    BenchPath { label: "ftpgate-relay", lab: LabPath::Redirect, gate_args: &["--data-path", "relay"], rules: None };
/// ftpgate's kernel data path: exact one-shot NAT pinholes in the table this rule file defines.
pub const KERNEL_PATH: BenchPath = BenchPath {
    label: "ftpgate-kernel",
    lab: LabPath::Redirect,
    gate_args: &["--data-path", "kernel"],
    rules: Some("ftpgate-kernel-path.nft"),
};

/// Every path of figures 1-4, in the order of the report's columns.
pub const ALL_PATHS: [BenchPath; 4] = [ROUTED, KERNEL_HELPER, RELAY, KERNEL_PATH];

/// The paths this tree can measure.
pub fn paths() -> Vec<BenchPath> {
    ALL_PATHS.into_iter().filter(BenchPath::available).collect()
}

/// Whether the ftpgate under test knows `--data-path` (older builds relay without the flag).
fn knows_data_path() -> bool {
    let bin = lab::ftpgate_bin();
    lab::sh(&[bin.to_str().unwrap_or("ftpgate"), "--help"]).is_ok_and(|h| h.contains("--data-path"))
}

/// One path's figures (1-4).
pub struct PathFigures {
    pub path: BenchPath,
    pub retr: Vec<f64>,
    pub stor: Vec<f64>,
    pub cpu: Option<GateCpu>,
    pub syscalls: Option<super::profile::Syscalls>,
    pub rate: Option<Rate>,
    pub rtt: Option<Rtt>,
    pub gate_notes: Vec<String>,
}

/// Puts the labs' directories (served trees, uploads, downloads) and the 1 GiB file on tmpfs
/// when /dev/shm has room, so that no disk write-back runs during the transfers. The lab makes
/// its directories with tempfile, which follows TMPDIR. Returns what the report says.
pub fn use_tmpfs() -> String {
    let need = 6 * GIB.max(super::bulk::bulk_bytes());
    let shm = Path::new("/dev/shm");
    let ok = std::env::var_os("TMPDIR").is_none()
        && nix::sys::statfs::statfs(shm).is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        && nix::sys::statvfs::statvfs(shm)
            .is_ok_and(|v| v.blocks_available().saturating_mul(v.fragment_size()) >= need);
    if ok {
        // Still single-threaded here: nothing else reads the environment yet.
        std::env::set_var("TMPDIR", shm);
        "labs' trees, uploads and downloads on tmpfs (/dev/shm): no disk in the transfer figures".into()
    } else {
        format!("labs' trees, uploads and downloads in {} (page cache)", std::env::temp_dir().display())
    }
}

/// Starts ftpgate in the firewall namespace with the bench configuration, its soft
/// RLIMIT_NOFILE first set to FTPGATE_START_NOFILE. `ip netns exec` and `prlimit` both exec,
/// so the PID is ftpgate's.
pub fn start_gateway(lab: &mut Lab, yaml: &str) -> u32 {
    start_gateway_with(lab, yaml, &[])
}

/// [`start_gateway`] with `extra` flags.
pub fn start_gateway_with(lab: &mut Lab, yaml: &str, extra: &[&str]) -> u32 {
    let cfg = lab.write("bench-ftpgate.yaml", yaml);
    let bin = lab::ftpgate_bin().to_string_lossy().into_owned();
    // What /proc/PID/comm shows once ftpgate runs: the first 15 bytes of the file's name.
    let comm: String =
        Path::new(&bin).file_name().map_or("ftpgate".into(), |n| n.to_string_lossy().chars().take(15).collect());
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(4096, |(_, h)| h);
    let argv: Vec<String> = [
        "prlimit".into(),
        format!("--nofile={FTPGATE_START_NOFILE}:{}", hard.max(FTPGATE_START_NOFILE)),
        "--".into(),
        bin,
        "--config".into(),
        cfg.to_str().unwrap().into(),
    ]
    .into_iter()
    .chain(extra.iter().map(|a| a.to_string()))
    .collect();
    let fw = lab.fw_ns.clone();
    let (pid, _) = lab.spawn("ftpgate", &fw, &argv);
    lab.wait_listening(&fw, "0.0.0.0", PROXY_PORT);
    lab::eventually(Duration::from_secs(5), "ftpgate's PID to run ftpgate", || {
        fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
    });
    pid
}

/// Warnings and errors ftpgate logged, grouped by message (`N x message`), except the expected
/// one about running as root.
pub fn gate_warnings(lab: &Lab) -> Vec<String> {
    report::group_warnings(&lab.log_of("ftpgate"))
        .into_iter()
        .filter(|(_, m)| !m.contains("running as root"))
        .map(|(n, m)| format!("{n} x {}", m.chars().take(400).collect::<String>()))
        .collect()
}

/// One path's lab, alive for figures 1-4 together with the other paths' labs, so that their
/// measurements can take turns: whatever else the machine does then weighs on every path alike.
pub struct PathLab {
    pub lab: Lab,
    pub tree: lab::Tree,
    pub gate: Option<u32>,
    pub figs: PathFigures,
    /// ftpgate's CPU seconds over its RETR and STOR runs.
    pub cpu_retr: f64,
    pub cpu_stor: f64,
    pub rate: RateSum,
    pub noop_ns: Vec<u64>,
}

pub fn setup_path(path: BenchPath, big: &BigFile, versions: &mut String) -> PathLab {
    let name = path.name();
    let uses = path.lab.uses_ftpgate();
    progress!("{name}: building the lab, starting vsftpd{}", if uses { " and ftpgate" } else { "" });
    let mut lab = Lab::new(path.lab);
    if let Some(rules) = path.rules {
        lab.load_rules(rules).unwrap_or_else(|e| panic!("{name}: loading {rules}: {e}"));
    }
    let tree = lab.start_server(ServerKind::Vsftpd);
    // The relay is the default: a build without --data-path measures it without the flag.
    let args: &[&str] = if path == RELAY && !knows_data_path() { &[] } else { path.gate_args };
    let gate = uses.then(|| start_gateway_with(&mut lab, GATE_YAML, args));
    if versions.is_empty() {
        let curl = lab.exec(&lab.client_ns, &["curl", "--version"]).unwrap_or_default();
        versions.push_str(curl.lines().next().unwrap_or("curl").split(" (").next().unwrap_or("curl"));
    }
    fs::hard_link(&big.path, tree.anon.join("gig.bin"))
        .or_else(|_| fs::copy(&big.path, tree.anon.join("gig.bin")).map(|_| ()))
        .expect("put the bulk file into the served tree");
    {
        use std::os::unix::fs::PermissionsExt;
        let small = tree.anon.join(SMALL_NAME);
        fs::write(&small, lab::random_bytes(SMALL_BYTES as usize, 17)).unwrap();
        fs::set_permissions(&small, fs::Permissions::from_mode(0o644)).unwrap();
    }
    let figs = PathFigures {
        path,
        retr: Vec::new(),
        stor: Vec::new(),
        cpu: None,
        syscalls: None,
        rate: None,
        rtt: None,
        gate_notes: Vec::new(),
    };
    PathLab { lab, tree, gate, figs, cpu_retr: 0.0, cpu_stor: 0.0, rate: RateSum::default(), noop_ns: Vec::new() }
}

/// The labs in turn, starting with a different one each round.
pub fn rotated(labs: &mut [PathLab], round: usize) -> Vec<&mut PathLab> {
    let n = labs.len();
    let mut v: Vec<&mut PathLab> = labs.iter_mut().collect();
    v.rotate_left(round % n.max(1));
    v
}

pub fn finish_path(mut l: PathLab) -> PathFigures {
    if l.gate.is_some() {
        l.figs.gate_notes = gate_warnings(&l.lab);
        for w in &l.figs.gate_notes {
            progress!("{}: ftpgate logged {w}", l.figs.path.name());
        }
    }
    l.lab.finish();
    l.figs
}
