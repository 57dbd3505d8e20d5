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

/// One path's figures (1-4).
pub struct PathFigures {
    pub path: LabPath,
    pub retr: Vec<f64>,
    pub stor: Vec<f64>,
    pub cpu: Option<GateCpu>,
    pub rate: Option<Rate>,
    pub rtt: Option<Rtt>,
    pub gate_notes: Vec<String>,
}

/// Puts the labs' directories (served trees, uploads, downloads) and the 1 GiB file on tmpfs
/// when /dev/shm has room, so that no disk write-back runs during the transfers. The lab makes
/// its directories with tempfile, which follows TMPDIR. Returns what the report says.
pub fn use_tmpfs() -> String {
    const NEED: u64 = 6 * GIB;
    let shm = Path::new("/dev/shm");
    let ok = std::env::var_os("TMPDIR").is_none()
        && nix::sys::statfs::statfs(shm).is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        && nix::sys::statvfs::statvfs(shm)
            .is_ok_and(|v| v.blocks_available().saturating_mul(v.fragment_size()) >= NEED);
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
    let cfg = lab.write("bench-ftpgate.yaml", yaml);
    let bin = lab::ftpgate_bin().to_string_lossy().into_owned();
    // What /proc/PID/comm shows once ftpgate runs: the first 15 bytes of the file's name.
    let comm: String =
        Path::new(&bin).file_name().map_or("ftpgate".into(), |n| n.to_string_lossy().chars().take(15).collect());
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(4096, |(_, h)| h);
    let argv: Vec<String> = vec![
        "prlimit".into(),
        format!("--nofile={FTPGATE_START_NOFILE}:{}", hard.max(FTPGATE_START_NOFILE)),
        "--".into(),
        bin,
        "--config".into(),
        cfg.to_str().unwrap().into(),
    ];
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

pub fn setup_path(path: LabPath, big: &BigFile, versions: &mut String) -> PathLab {
    let name = path.name();
    progress!("{name}: building the lab, starting vsftpd{}", if path.uses_ftpgate() { " and ftpgate" } else { "" });
    let mut lab = Lab::new(path);
    let tree = lab.start_server(ServerKind::Vsftpd);
    let gate = path.uses_ftpgate().then(|| start_gateway(&mut lab, GATE_YAML));
    if versions.is_empty() {
        let curl = lab.exec(&lab.client_ns, &["curl", "--version"]).unwrap_or_default();
        versions.push_str(curl.lines().next().unwrap_or("curl").split(" (").next().unwrap_or("curl"));
    }
    fs::hard_link(&big.path, tree.anon.join("gig.bin"))
        .or_else(|_| fs::copy(&big.path, tree.anon.join("gig.bin")).map(|_| ()))
        .expect("put the 1 GiB file into the served tree");
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
