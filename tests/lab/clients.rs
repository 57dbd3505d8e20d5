//! Real FTP clients (curl, lftp, Python's ftplib) driven in the client namespace, and the case
//! matrix: every case is checked by checksum or entry count, by the data-setup command the
//! client really sent, and by where the server saw its connections come from.

use super::servers::{ServerKind, LAB_PASS, LAB_USER};
use super::{sha256_file, Family, Lab, Tree, DIR_ENTRIES};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Curl,
    Lftp,
    Python,
}

pub const ALL_CLIENTS: [Client; 3] = [Client::Curl, Client::Lftp, Client::Python];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pasv,
    Epsv,
    Port,
    Eprt,
}

pub const ALL_MODES: [Mode; 4] = [Mode::Pasv, Mode::Epsv, Mode::Port, Mode::Eprt];

impl Mode {
    pub fn verb(self) -> &'static str {
        match self {
            Mode::Pasv => "PASV",
            Mode::Epsv => "EPSV",
            Mode::Port => "PORT",
            Mode::Eprt => "EPRT",
        }
    }

    pub fn passive(self) -> bool {
        matches!(self, Mode::Pasv | Mode::Epsv)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    RetrSmall,
    RetrLarge,
    Stor,
    List,
    Mlsd,
}

pub const ALL_OPS: [Op; 5] = [Op::RetrSmall, Op::RetrLarge, Op::Stor, Op::List, Op::Mlsd];

impl Client {
    pub fn name(self) -> &'static str {
        match self {
            Client::Curl => "curl",
            Client::Lftp => "lftp",
            Client::Python => "ftplib",
        }
    }

    /// Whether the client can be made to use `mode` over `family` (PASV and PORT do not exist
    /// over IPv6; lftp sends EPRT only over IPv6).
    pub fn supports(self, mode: Mode, family: Family) -> bool {
        match (mode, family) {
            (Mode::Pasv | Mode::Port, Family::V6) => false,
            (Mode::Eprt, Family::V4) => self != Client::Lftp,
            _ => true,
        }
    }

    pub fn supports_op(self, op: Op, server: ServerKind) -> bool {
        op != Op::Mlsd || (server.has_mlsd() && self != Client::Curl)
    }

    /// The marker this client's transcript carries for a data-setup command it sent.
    fn sent(self, verb: &str) -> String {
        match self {
            Client::Curl => format!("> {verb}"),
            Client::Lftp => format!("---> {verb}"),
            Client::Python => format!("MODE {verb}"),
        }
    }
}

pub struct Case {
    pub client: Client,
    pub mode: Mode,
    pub family: Family,
    pub op: Op,
}

impl Case {
    pub fn label(&self) -> String {
        format!("{}/{}/{}/{:?}", self.client.name(), self.mode.verb(), self.family.name(), self.op)
    }
}

fn url_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// All cases of the matrix for one server.
pub fn matrix(server: ServerKind) -> Vec<Case> {
    let mut cases = Vec::new();
    for client in super::clients::ALL_CLIENTS {
        for family in [Family::V4, Family::V6] {
            for mode in ALL_MODES {
                if !client.supports(mode, family) {
                    continue;
                }
                for op in ALL_OPS {
                    if client.supports_op(op, server) {
                        cases.push(Case { client, mode, family, op });
                    }
                }
            }
        }
    }
    cases
}

fn remote_of(op: Op) -> &'static str {
    match op {
        Op::RetrSmall => "small.bin",
        Op::RetrLarge => "large.bin",
        Op::List | Op::Mlsd => "dir/",
        Op::Stor => "",
    }
}

/// Builds the client's command line for a case.
fn command(case: &Case, host: &str, local: &Path, upload_name: &str, tree: &Tree) -> Vec<String> {
    let local = local.to_str().unwrap().to_owned();
    let h = url_host(host);
    let mut v: Vec<String> = vec!["timeout".into(), "180".into()];
    match case.client {
        Client::Curl => {
            v.extend(["curl", "-sS", "-v", "--fail", "--max-time", "150", "--connect-timeout", "20"].map(String::from));
            match case.mode {
                Mode::Pasv => v.extend(["--ftp-pasv", "--disable-epsv"].map(String::from)),
                Mode::Epsv => v.push("--ftp-pasv".into()),
                Mode::Port => v.extend(["--ftp-port", "-", "--disable-eprt"].map(String::from)),
                Mode::Eprt => v.extend(["--ftp-port", "-"].map(String::from)),
            }
            match case.op {
                Op::Stor => v.extend([
                    "--user".into(),
                    format!("{LAB_USER}:{LAB_PASS}"),
                    "-T".into(),
                    tree.upload_file.to_str().unwrap().into(),
                    format!("ftp://{h}/{upload_name}"),
                ]),
                op => v.extend(["-o".into(), local, format!("ftp://{h}/{}", remote_of(op))]),
            }
        }
        Client::Lftp => {
            let mut script = String::from(
                "set cmd:fail-exit yes; set ftp:ssl-allow no; set net:max-retries 2; set net:timeout 30; \
                 set net:reconnect-interval-base 1; set xfer:clobber yes; ",
            );
            script.push_str(if case.mode.passive() {
                "set ftp:passive-mode on; "
            } else {
                "set ftp:passive-mode off; "
            });
            script.push_str(if case.mode == Mode::Epsv {
                "set ftp:prefer-epsv yes; "
            } else {
                "set ftp:prefer-epsv no; "
            });
            script.push_str(if case.op == Op::Mlsd { "set ftp:use-mlsd yes; " } else { "set ftp:use-mlsd no; " });
            let user = if case.op == Op::Stor { format!("{LAB_USER},{LAB_PASS}") } else { "anonymous,lab@".into() };
            script.push_str(&format!("open -u {user} ftp://{h}; "));
            match case.op {
                Op::RetrSmall | Op::RetrLarge => script.push_str(&format!("get {} -o {local}", remote_of(case.op))),
                Op::Stor => script.push_str(&format!("put {} -o {upload_name}", tree.upload_file.display())),
                Op::List => script.push_str(&format!("ls dir/ > {local}")),
                Op::Mlsd => script.push_str(&format!("cls -1 dir/ > {local}")),
            }
            v.extend(["lftp".into(), "-d".into(), "-c".into(), script]);
        }
        Client::Python => {
            let py = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lab/ftpclient.py");
            v.extend(["python3".into(), py.into(), "--host".into(), host.into()]);
            v.extend(["--mode".into(), case.mode.verb().to_lowercase()]);
            let (op, remote, file) = match case.op {
                Op::RetrSmall | Op::RetrLarge => ("retr", remote_of(case.op).to_owned(), local),
                Op::Stor => ("stor", upload_name.to_owned(), tree.upload_file.to_str().unwrap().to_owned()),
                Op::List => ("list", "dir".to_owned(), local),
                Op::Mlsd => ("mlsd", "dir".to_owned(), local),
            };
            v.extend(["--op".into(), op.into(), "--remote".into(), remote, "--local".into(), file]);
            if case.op == Op::Stor {
                v.extend(["--user".into(), LAB_USER.into(), "--password".into(), LAB_PASS.into()]);
            }
        }
    }
    v
}

/// Runs one case and checks everything it should prove.
pub fn run_case(lab: &Lab, tree: &Tree, case: &Case, seq: usize) -> Result<(), String> {
    let host = lab.dial_host(case.family);
    let out_dir = lab.dir.path().join("client");
    fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let local = out_dir.join(format!("case{seq}.out"));
    let upload_name = format!("up-{seq}-{}.bin", case.client.name());
    let argv = command(case, host, &local, &upload_name, tree);
    lab.reset_watch();
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.client_ns])
        .args(&argv)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", case.client.name()))?;
    let transcript = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let fail = |why: String| {
        let tail: Vec<&str> = transcript.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(format!("{why}\n  client transcript (tail):\n    {}", tail.join("\n    ")))
    };
    if !out.status.success() {
        return fail(format!("client exited with {}", out.status));
    }
    let sent = case.client.sent(case.mode.verb());
    if !transcript.contains(&sent) {
        return fail(format!("client never sent {} (marker `{sent}`)", case.mode.verb()));
    }
    // No silent fallback to another mode.
    for other in super::clients::ALL_MODES {
        if other != case.mode && transcript.contains(&case.client.sent(other.verb())) {
            return fail(format!("client fell back from {} to {}", case.mode.verb(), other.verb()));
        }
    }
    let checked = match case.op {
        Op::RetrSmall | Op::RetrLarge => {
            let want = if case.op == Op::RetrSmall { &tree.small_sha } else { &tree.large_sha };
            let got = sha256_file(&local);
            let _ = fs::remove_file(&local);
            if &got == want {
                Ok(())
            } else {
                Err(format!("checksum mismatch: got {got}, want {want}"))
            }
        }
        Op::Stor => {
            let landed = tree.upload.join(&upload_name);
            let got = if landed.exists() { sha256_file(&landed) } else { "<missing>".into() };
            let _ = fs::remove_file(&landed);
            if got == tree.upload_sha {
                Ok(())
            } else {
                Err(format!("uploaded file checksum {got}, want {}", tree.upload_sha))
            }
        }
        Op::List | Op::Mlsd => {
            let text = fs::read_to_string(&local).unwrap_or_default();
            let n = text.lines().filter(|l| l.contains("entry") && l.contains(".txt")).count();
            if case.op == Op::Mlsd && !transcript.contains(&case.client.sent("MLSD")) && case.client == Client::Lftp {
                Err("lftp did not use MLSD".to_owned())
            } else if n == DIR_ENTRIES {
                Ok(())
            } else {
                Err(format!("listing has {n} entries, want {DIR_ENTRIES}"))
            }
        }
    };
    if let Err(e) = checked {
        return fail(e);
    }
    check_path(lab, case).or_else(fail)
}

/// The server saw the connections come from where the lab path predicts.
fn check_path(lab: &Lab, case: &Case) -> Result<(), String> {
    let [from_client, from_fw, to_client, to_fw] = lab.watch();
    let (from_peer, from_other, to_peer, to_other) = if lab.path.server_sees_firewall() {
        (from_fw, from_client, to_fw, to_client)
    } else {
        (from_client, from_fw, to_client, to_fw)
    };
    let who = if lab.path.server_sees_firewall() { "firewall" } else { "client" };
    let counts = format!("from_client={from_client} from_fw={from_fw} to_client={to_client} to_fw={to_fw}");
    if from_other != 0 || to_other != 0 {
        return Err(format!("server saw connections not from/to the {who}: {counts}"));
    }
    let ok = if case.mode.passive() { from_peer >= 2 } else { from_peer >= 1 && to_peer >= 1 };
    if !ok {
        return Err(format!("server did not see the expected {who} connections: {counts}"));
    }
    Ok(())
}

/// Runs the whole matrix for one server in one lab; panics with every failure listed.
pub fn run_matrix(lab: &Lab, tree: &Tree, server: ServerKind) {
    let cases = matrix(server);
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        if let Err(e) = run_case(lab, tree, case, i) {
            failures.push(format!("[{}] {e}", case.label()));
        }
    }
    let line = format!(
        "lab matrix {}/{}: {} cases run, {} ok, {} failed, 0 skipped",
        lab.path.name(),
        server.name(),
        cases.len(),
        cases.len() - failures.len(),
        failures.len()
    );
    println!("{line}");
    if !failures.is_empty() {
        panic!("{line}\n{}\n{}", failures.join("\n"), lab.logs());
    }
}
