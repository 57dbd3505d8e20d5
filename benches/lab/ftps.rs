//! FTPS figures (`FTPGATE_BENCH_ONLY=ftps`): RETR and STOR of a file (1 GiB, or
//! `FTPGATE_BENCH_FTPS_BYTES`) with curl `--ssl-reqd` against vsftpd with TLS forced and
//! `require_ssl_reuse=YES`, over the routed path (end-to-end FTPS, the baseline), through
//! ftpgate terminating TLS in reverse mode (FTPS on both sides) and through ftpgate inspecting
//! TLS behind the REDIRECT rules; each path's ratio to routed and ftpgate's CPU seconds per GiB.
//!
//! Where the time goes: with TLS on both sides ftpgate decrypts every byte from one side and
//! encrypts it again for the other (AES-GCM with ring, two record layers per byte), in a
//! buffered copy (splice cannot see inside TLS); the routed baseline does that work once in
//! the client and once in the server. The sizes are checked on every run, the SHA-256 once.

use super::lab::pki::{vsftpd_tls, Pki};
use super::lab::servers::{ServerKind, LAB_PASS, LAB_USER};
use super::lab::{self, Lab, LabPath, Tree, SERVER4, SERVER6};
use super::problem;
use super::procs::cpu_secs;
use std::path::Path;

/// The transfer size, 1 GiB unless `FTPGATE_BENCH_FTPS_BYTES` says otherwise (a small size
/// checks the benchmark itself).
fn size() -> u64 {
    std::env::var("FTPGATE_BENCH_FTPS_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(1 << 30)
}

struct Path3 {
    name: &'static str,
    lab: Lab,
    tree: Tree,
    pki: Pki,
    pids: Vec<u32>,
}

fn config(lab: &Lab, pki: &Pki, inspect: bool) -> String {
    let yaml = if inspect {
        format!(
            "tls: inspect\nftps: {{ca_certificate: {}, ca_key: {}, server_ca: {}}}\n",
            pki.ca.display(),
            pki.ca_key.display(),
            pki.ca.display()
        )
    } else {
        format!(
            "tls: terminate\nupstream_tls: explicit\nftps: {{certificate: {}, key: {}, server_ca: {}}}\n",
            pki.gateway.0.display(),
            pki.gateway.1.display(),
            pki.ca.display()
        )
    };
    lab.write("ftps.yaml", &yaml).to_str().unwrap().to_owned()
}

fn setup(name: &'static str, path: LabPath, inspect: bool, bytes: u64) -> Path3 {
    let mut lab = Lab::new(path);
    let pki = Pki::new(lab.dir.path());
    let tree = Tree::create(lab.dir.path());
    lab.start_server_at(ServerKind::Vsftpd, &tree, &[SERVER4, SERVER6], "vsftpd", &vsftpd_tls(&pki.server, false));
    let pids = if path.uses_ftpgate() {
        let cfg = config(&lab, &pki, inspect);
        lab.start_ftpgate(&["--config", &cfg])
    } else {
        Vec::new()
    };
    lab::write_big(&tree.anon.join("ftps.bin"), bytes as usize);
    Path3 { name, lab, tree, pki, pids }
}

fn gate_cpu(p: &Path3) -> f64 {
    p.pids.iter().filter_map(|&pid| cpu_secs(pid)).sum()
}

/// One curl transfer; its seconds, the size checked.
fn transfer(p: &Path3, upload: Option<&Path>, bytes: u64) -> Option<f64> {
    let host = p.lab.dial_host(lab::Family::V4);
    let out = p.lab.dir.path().join("ftps-down.bin");
    let ca = p.pki.ca.to_str().unwrap().to_owned();
    let mut argv = vec!["curl", "-sS", "--fail", "--ssl-reqd", "--cacert", &ca, "--max-time", "600"];
    argv.extend(["-w", "BENCH %{size_download} %{size_upload} %{time_total}\n"]);
    let (url, file);
    match upload {
        Some(src) => {
            url = format!("ftp://{LAB_USER}:{LAB_PASS}@{host}/ftps-up.bin");
            file = src.to_str().unwrap().to_owned();
            argv.extend(["-T", &file]);
        }
        None => {
            url = format!("ftp://{host}/ftps.bin");
            file = out.to_str().unwrap().to_owned();
            argv.extend(["-o", &file]);
        }
    }
    argv.push(&url);
    let (ok, text) = p.lab.client_run(&argv);
    let line = text.lines().find_map(|l| l.strip_prefix("BENCH "));
    let parsed: Option<(u64, u64, f64)> = line.and_then(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        Some((f.first()?.parse().ok()?, f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?))
    });
    match (ok, parsed) {
        (true, Some((down, up, secs))) if down.max(up) == bytes => {
            let _ = std::fs::remove_file(&out);
            let _ = std::fs::remove_file(p.tree.upload.join("ftps-up.bin"));
            Some(secs)
        }
        _ => {
            problem(format!("ftps {}: transfer failed or short: {}", p.name, text.lines().last().unwrap_or("")));
            None
        }
    }
}

/// Runs the FTPS figures and prints their table.
pub fn bench_ftps() {
    let bytes = size();
    progress!("ftps: setting up the routed, terminate and inspect labs ({bytes} bytes per transfer)");
    let paths = [
        setup("routed FTPS", LabPath::Routed, false, bytes),
        setup("ftpgate terminate", LabPath::Reverse, false, bytes),
        setup("ftpgate inspect", LabPath::Redirect, true, bytes),
    ];
    // The first transfer of each path checks the bytes end to end.
    let src = paths[0].lab.dir.path().join("ftps-src.bin");
    let want = lab::write_big(&src, bytes as usize);
    let mut rows = Vec::new();
    for p in &paths {
        let cpu0 = gate_cpu(p);
        let retr = transfer(p, None, bytes);
        let cpu1 = gate_cpu(p);
        let stor = transfer(p, Some(&src), bytes);
        let landed = p.tree.upload.join("ftps-up.bin");
        let cpu2 = gate_cpu(p);
        if stor.is_some() && landed.exists() && lab::sha256_file(&landed) != want {
            problem(format!("ftps {}: STOR checksum mismatch", p.name));
        }
        let gib = bytes as f64 / (1u64 << 30) as f64;
        let mb = bytes as f64 / 1e6;
        let row = (p.name, retr.map(|s| mb / s), stor.map(|s| mb / s), (cpu1 - cpu0) / gib, (cpu2 - cpu1) / gib);
        progress!("ftps {}: RETR {:?} MB/s, STOR {:?} MB/s", p.name, row.1, row.2);
        rows.push(row);
    }
    let base = (rows[0].1, rows[0].2);
    println!("\nFTPS (vsftpd, TLS forced, require_ssl_reuse; curl --ssl-reqd, PASV; {bytes} bytes):");
    println!(
        "{:<20} {:>10} {:>7} {:>10} {:>7} {:>14} {:>14}",
        "path", "RETR MB/s", "ratio", "STOR MB/s", "ratio", "CPU s/GiB RETR", "CPU s/GiB STOR"
    );
    for (name, r, s, cr, cs) in &rows {
        let ratio = |v: &Option<f64>, b: Option<f64>| match (v, b) {
            (Some(v), Some(b)) if b > 0.0 => format!("{:.2}x", v / b),
            _ => "-".to_owned(),
        };
        let mbs = |v: &Option<f64>| v.map_or("failed".to_owned(), |v| format!("{v:.0}"));
        let cpu = |c: f64| if name.starts_with("routed") { "-".to_owned() } else { format!("{c:.2}") };
        println!(
            "{name:<20} {:>10} {:>7} {:>10} {:>7} {:>14} {:>14}",
            mbs(r),
            ratio(r, base.0),
            mbs(s),
            ratio(s, base.1),
            cpu(*cr),
            cpu(*cs)
        );
    }
    println!("target: ftpgate >= 0.5x routed FTPS; time goes to decrypting and re-encrypting every byte (see benches/lab/ftps.rs)");
    for p in paths {
        p.lab.finish();
    }
}
