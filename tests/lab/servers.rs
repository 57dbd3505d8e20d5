//! Real FTP servers (vsftpd, ProFTPD, pure-ftpd) for the ftpgate test lab.
//!
//! Install them once with `sudo tests/lab/install-servers.sh DIR` (vsftpd via
//! apt-get, ProFTPD and pure-ftpd unpacked into `DIR`, which is the
//! `servers_dir` below, see `FTPGATE_LAB_SERVERS`). The script also creates
//! the users `ftp` (anonymous) and `ftpgatelab` (password `ftpgatelab`) and
//! the PAM service `/etc/pam.d/ftpgate-lab` (used by vsftpd).
//!
//! [`ServerKind::prepare`] renders the templates of `tests/lab/servers/` into
//! one sub-directory of `run_dir` per listen address,
//! `run_dir/<name>-<index of the address>/` (that directory is the
//! `@RUN_DIR@` of the template), and returns one argv per address. Every
//! process runs in the foreground, binds `<addr>:21` only, and is the process
//! whose PID the harness gets (no fork between `ip netns exec` and the
//! server). Session processes are children of the listener; see below for
//! what killing the listener does to them.
//!
//! Files in each instance directory:
//! * vsftpd: `vsftpd.conf`, `xferlog` (wu-ftpd xferlog format), `vsftpd.log`
//!   (vsftpd format + every FTP command/response), `empty/`.
//! * proftpd: `proftpd.conf`, `xferlog` (wu-ftpd xferlog format),
//!   `commands.log` (ExtendedLog, every command), `proftpd.log` (system log),
//!   `proftpd.pid`, `proftpd.scoreboard` (removed at exit).
//! * pure-ftpd: `pure-ftpd.args` (rendered argument list), `xferlog`
//!   (xferlog format, created at the first transfer), `pure-ftpd.pid`
//!   (removed at exit).
//!
//! Requirements on the trees: `anon_root` and everything in it must be
//! world-readable (directories `o+rx`, files `o+r`; the servers read it as
//! user `ftp`/`nobody`, and vsftpd only serves world-readable files to
//! anonymous users); `upload_root` must be owned by (or writable for) user
//! `ftpgatelab`. Paths must not contain whitespace, quotes, `#` or `@`.
//! pure-ftpd caps its client count at half the passive range size: give it at
//! least 2 * (concurrent sessions) passive ports.
//!
//! Namespace set-up the harness should do:
//! * `sysctl -w net.ipv4.tcp_syncookies=0` in the server's namespace (applies to
//!   IPv6 too). vsftpd listens with a hard-coded backlog of 32; a burst of more
//!   than ~32 simultaneous connects otherwise gets SYN cookies, the client's ACK
//!   is dropped while the accept queue is full, and since FTP servers speak
//!   first the client waits for the banner until its own timeout (~60 s stalls
//!   for 5-50 of 150 simultaneous sessions). With cookies off the kernel drops
//!   the SYN instead and the client's SYN retransmit recovers within ~1-3 s.
//! * add IPv6 addresses with `nodad` (or wait for DAD): binding a tentative
//!   address fails.
//!
//! Server quirks worth knowing in tests:
//! * LIST: no `total` line on any of the three. vsftpd and pure-ftpd print
//!   numeric uid/gid, proftpd prints names.
//! * MLSD (proftpd, pure-ftpd) and pure-ftpd's NLST include `.` and `..`.
//! * proftpd refuses `SIZE` in ASCII mode (550); its master pauses ~0.4 s after
//!   each session ends before accepting again (new banners can lag by that much);
//!   under bursts of simultaneous PASV it can rarely answer
//!   `425 PASV: Address already in use` (bind race, fewer with a wider range).
//! * Active mode source port: pure-ftpd connects from port 20, vsftpd and
//!   proftpd from an ephemeral port.
//! * Killing the listener PID: proftpd ends its sessions; vsftpd and pure-ftpd
//!   sessions keep running until their client disconnects (kill the namespace's
//!   remaining processes, e.g. from `ip netns pids`).

#![allow(dead_code)]

use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    Vsftpd,
    Proftpd,
    PureFtpd,
}

pub const ALL_SERVERS: [ServerKind; 3] = [ServerKind::Vsftpd, ServerKind::Proftpd, ServerKind::PureFtpd];

pub const LAB_USER: &str = "ftpgatelab";
pub const LAB_PASS: &str = "ftpgatelab";

/// Anonymous FTP account (all three servers accept the user names `ftp` and `anonymous`).
const ANON_USER: &str = "ftp";
const PAM_SERVICE_FILE: &str = "/etc/pam.d/ftpgate-lab";
const VSFTPD_BIN: &str = "/usr/sbin/vsftpd";
const UNSHARE_BIN: &str = "/usr/bin/unshare";
const SH_BIN: &str = "/bin/sh";

/// Shell script run (by `sh -c`) in pure-ftpd's private mount namespace:
/// `$1` anon root, `$2` ftp's home, `$3` upload root, `$4` ftpgatelab's home,
/// `$5...` pure-ftpd argv. `exec` keeps the PID.
const PURE_FTPD_WRAPPER: &str = "set -e; PATH=/usr/sbin:/usr/bin:/sbin:/bin; \
     mount --bind \"$1\" \"$2\"; mount --bind \"$3\" \"$4\"; shift 4; exec \"$@\"";

fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("lab").join("servers")
}

fn install_hint(servers_dir: &Path) -> String {
    format!(
        "run `sudo tests/lab/install-servers.sh {}` (and set FTPGATE_LAB_SERVERS to that directory)",
        servers_dir.display()
    )
}

/// Home directory of `user` according to /etc/passwd.
fn passwd_home(user: &str) -> Option<PathBuf> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 7 && fields[0] == user {
            Some(PathBuf::from(fields[5]))
        } else {
            None
        }
    })
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Absolute, symlink-free, template-safe form of an existing path.
fn safe_path(what: &str, path: &Path) -> io::Result<String> {
    let canon =
        fs::canonicalize(path).map_err(|e| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display())))?;
    let s = canon.to_str().ok_or_else(|| invalid(format!("{what} {} is not UTF-8", canon.display())))?.to_string();
    if s.chars().any(|c| c.is_whitespace() || c.is_control() || "\"'#@\\".contains(c)) {
        return Err(invalid(format!(
            "{what} {s:?} contains characters the server configs cannot take (whitespace, quotes, #, @, \\)"
        )));
    }
    Ok(s)
}

/// Replaces every `@NAME@` of `vars`; fails if an `@UPPER_CASE@` placeholder remains.
fn render(template_name: &str, template: &str, vars: &[(&str, String)]) -> io::Result<String> {
    let mut out = template.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("@{name}@"), value);
    }
    // Leftover placeholder check: "@" followed by [A-Z0-9_]+ and "@".
    let bytes = out.as_bytes();
    let mut i = 0;
    while let Some(off) = out[i..].find('@') {
        let start = i + off;
        let mut end = start + 1;
        while end < bytes.len()
            && (bytes[end].is_ascii_uppercase() || bytes[end].is_ascii_digit() || bytes[end] == b'_')
        {
            end += 1;
        }
        if end > start + 1 && end < bytes.len() && bytes[end] == b'@' {
            return Err(invalid(format!("template {template_name}: unknown placeholder {}", &out[start..=end])));
        }
        i = start + 1;
    }
    Ok(out)
}

fn write_file(path: &Path, contents: &str, mode: u32) -> io::Result<()> {
    fs::write(path, contents)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Creates `dir` (and parents) and sets its mode; the servers refuse
/// world-writable log/pid directories, so the lab uses 0755.
fn make_dir(dir: &Path, mode: u32) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
}

impl ServerKind {
    /// "vsftpd", "proftpd", "pure-ftpd".
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Vsftpd => "vsftpd",
            ServerKind::Proftpd => "proftpd",
            ServerKind::PureFtpd => "pure-ftpd",
        }
    }

    /// Whether the server implements MLSD/MLST (vsftpd 3.0.3 does not).
    pub fn has_mlsd(self) -> bool {
        !matches!(self, ServerKind::Vsftpd)
    }

    fn template_file(self) -> &'static str {
        match self {
            ServerKind::Vsftpd => "vsftpd.conf",
            ServerKind::Proftpd => "proftpd.conf",
            ServerKind::PureFtpd => "pure-ftpd.args",
        }
    }

    fn binary(self, servers_dir: &Path) -> PathBuf {
        match self {
            ServerKind::Vsftpd => PathBuf::from(VSFTPD_BIN),
            ServerKind::Proftpd => servers_dir.join("proftpd/usr/sbin/proftpd"),
            ServerKind::PureFtpd => servers_dir.join("pure-ftpd/usr/sbin/pure-ftpd"),
        }
    }

    /// Ok if the binary and its config template are present, else Err(one-line reason saying what to install/run).
    pub fn available(self, servers_dir: &Path) -> Result<(), String> {
        let name = self.name();
        let hint = install_hint(servers_dir);
        let bin = self.binary(servers_dir);
        if !is_executable(&bin) {
            return Err(format!("{name}: {} not found; {hint}", bin.display()));
        }
        let template = templates_dir().join(self.template_file());
        if !template.is_file() {
            return Err(format!("{name}: config template {} is missing from the source tree", template.display()));
        }
        for user in [ANON_USER, LAB_USER] {
            if passwd_home(user).is_none() {
                return Err(format!("{name}: user {user} does not exist; {hint}"));
            }
        }
        match self {
            ServerKind::Vsftpd => {
                if !Path::new(PAM_SERVICE_FILE).is_file() {
                    return Err(format!("{name}: PAM service {PAM_SERVICE_FILE} missing; {hint}"));
                }
            }
            ServerKind::Proftpd => {}
            ServerKind::PureFtpd => {
                for tool in [UNSHARE_BIN, SH_BIN] {
                    if !is_executable(Path::new(tool)) {
                        return Err(format!("{name}: {tool} not found (install util-linux)"));
                    }
                }
                for user in [ANON_USER, LAB_USER] {
                    let home = passwd_home(user).unwrap_or_default();
                    if !home.is_dir() || home == Path::new("/") {
                        return Err(format!(
                            "{name}: home directory {} of user {user} is missing or unusable; {hint}",
                            home.display()
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes config files into run_dir (using the templates from tests/lab/servers/, found via
    /// env!("CARGO_MANIFEST_DIR")) for the given addresses, and returns the argv of each process
    /// to start (each started by the harness as `ip netns exec <ns> <argv...>`, in the foreground,
    /// killed by PID; the argv's PID is the server's PID).
    ///
    /// One process per address, in the order of `addrs`; instance `i` lives in
    /// `run_dir/<name>-<i>/`.
    pub fn prepare(
        self,
        servers_dir: &Path,
        addrs: &[IpAddr],
        anon_root: &Path,
        upload_root: &Path,
        run_dir: &Path,
        pasv: (u16, u16),
    ) -> std::io::Result<Vec<Vec<String>>> {
        self.available(servers_dir).map_err(|e| io::Error::new(io::ErrorKind::NotFound, e))?;
        if addrs.is_empty() {
            return Err(invalid(format!("{}: no listen address given", self.name())));
        }
        if pasv.0 == 0 || pasv.0 > pasv.1 {
            return Err(invalid(format!("{}: bad passive port range {}-{}", self.name(), pasv.0, pasv.1)));
        }
        let template_path = templates_dir().join(self.template_file());
        let template = fs::read_to_string(&template_path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", template_path.display())))?;
        let anon = safe_path("anon_root", anon_root)?;
        let upload = safe_path("upload_root", upload_root)?;
        fs::create_dir_all(run_dir)?;
        let run_base = safe_path("run_dir", run_dir)?;
        let bin =
            self.binary(servers_dir).to_str().ok_or_else(|| invalid("servers_dir is not UTF-8".into()))?.to_string();

        let mut argvs = Vec::with_capacity(addrs.len());
        for (i, addr) in addrs.iter().enumerate() {
            let inst_dir = Path::new(&run_base).join(format!("{}-{i}", self.name()));
            make_dir(&inst_dir, 0o755)?;
            let inst = safe_path("run_dir", &inst_dir)?;
            let v4 = addr.is_ipv4();
            let vars: [(&str, String); 8] = [
                ("LISTEN_ADDR", addr.to_string()),
                ("ANON_ROOT", anon.clone()),
                ("UPLOAD_ROOT", upload.clone()),
                ("RUN_DIR", inst.clone()),
                ("PASV_MIN", pasv.0.to_string()),
                ("PASV_MAX", pasv.1.to_string()),
                ("IF_IPV4", if v4 { String::new() } else { "#".into() }),
                ("IF_IPV6", if v4 { "#".into() } else { String::new() }),
            ];
            let rendered = render(self.template_file(), &template, &vars)?;
            let argv: Vec<String> = match self {
                ServerKind::Vsftpd => {
                    // secure_chroot_dir: empty, root-owned, not writable by ftp.
                    make_dir(&inst_dir.join("empty"), 0o555)?;
                    let conf = inst_dir.join("vsftpd.conf");
                    write_file(&conf, &rendered, 0o600)?;
                    vec![bin.clone(), format!("{inst}/vsftpd.conf")]
                }
                ServerKind::Proftpd => {
                    let conf = inst_dir.join("proftpd.conf");
                    write_file(&conf, &rendered, 0o644)?;
                    vec![bin.clone(), "-n".into(), "-c".into(), format!("{inst}/proftpd.conf")]
                }
                ServerKind::PureFtpd => {
                    write_file(&inst_dir.join("pure-ftpd.args"), &rendered, 0o644)?;
                    let ftp_home = passwd_home(ANON_USER).expect("checked by available()");
                    let lab_home = passwd_home(LAB_USER).expect("checked by available()");
                    let mut argv: Vec<String> = vec![
                        UNSHARE_BIN.into(),
                        "--mount".into(),
                        "--propagation".into(),
                        "private".into(),
                        "--".into(),
                        SH_BIN.into(),
                        "-c".into(),
                        PURE_FTPD_WRAPPER.into(),
                        "ftpgate-lab-pure-ftpd".into(),
                        anon.clone(),
                        safe_path("home of user ftp", &ftp_home)?,
                        upload.clone(),
                        safe_path("home of user ftpgatelab", &lab_home)?,
                        bin.clone(),
                    ];
                    argv.extend(
                        rendered
                            .lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !l.starts_with('#'))
                            .map(String::from),
                    );
                    argv
                }
            };
            argvs.push(argv);
        }
        Ok(argvs)
    }
}
