//! Figures 1 and 2: RETR and STOR of a 1 GiB file with curl on every path, each transfer's
//! size checked and its SHA-256 on the first run, and ftpgate's CPU time per GiB relayed.
//!
//! What is measured is the network path, not a disk: RETR reads into a sink (curl `-o
//! /dev/null`, the size from curl's own counter; the first run's SHA-256 through a pipe), STOR
//! lands in the served tree on tmpfs, and the source file is served from tmpfs (the page cache).
//!
//! Every timed STOR of a path overwrites the file that path's untimed checksum upload landed.
//! On a virtual machine that hands free memory back to its host (free page reporting), a tmpfs
//! page that was freed a few seconds ago costs a host fault when it is written again: here
//! `dd` of 1 GiB into /dev/shm ran at 430 MB/s five seconds after the previous 1 GiB file was
//! removed and at 2.4 GB/s straight after, and fresh files made routed STOR swing between 240
//! and 1,072 MB/s. An upload over the file the previous one landed writes into pages the
//! file held until that moment, so the figures measure the network path, not the host's memory.

use super::lab::servers::{LAB_PASS, LAB_USER};
use super::lab::{self, Lab, SERVER4};
use super::problem;
use super::procs::{cpu_secs, nofile_of, tail};
use super::report::{fmt, line_with, median};
use super::setup::{rotated, PathLab};
use std::fs;
use std::path::{Path, PathBuf};

pub const GIB: u64 = 1 << 30;

/// Runs per direction and path (`FTPGATE_BENCH_RUNS`, default 5); best and median are reported.
pub fn runs() -> usize {
    std::env::var("FTPGATE_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(5)
}

/// Bytes of the bulk file (`FTPGATE_BENCH_MIB`, default 1024: 1 GiB), smaller to validate the
/// benchmark quickly.
pub fn bulk_bytes() -> u64 {
    std::env::var("FTPGATE_BENCH_MIB").ok().and_then(|v| v.parse::<u64>().ok()).filter(|n| *n > 0).unwrap_or(1024) << 20
}

/// The size as the report names it.
pub fn size_label() -> String {
    let b = bulk_bytes();
    if b.is_multiple_of(GIB) {
        format!("{} GiB", b / GIB)
    } else {
        format!("{} MiB", b >> 20)
    }
}

pub struct GateCpu {
    pub retr_s_per_gib: f64,
    pub stor_s_per_gib: f64,
    pub nofile: String,
}

/// The 1 GiB file every path transfers, made once and hard-linked into each lab's tree.
pub struct BigFile {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub sha: String,
}

impl BigFile {
    /// The file, or (`make` false, when no bulk figure is wanted) an empty one.
    pub fn create(make: bool) -> BigFile {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new().prefix("ftpgate-bench-").tempdir().expect("bench temp dir");
        let path = dir.path().join("gig.bin");
        if !make {
            fs::write(&path, b"").expect("bench temp file");
            return BigFile { _dir: dir, path, sha: String::new() };
        }
        let sha = lab::write_big(&path, bulk_bytes() as usize);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        BigFile { _dir: dir, path, sha }
    }
}

/// curl's statistics line: `%{stderr}` keeps it apart from data written to stdout.
const CURL_STATS: &str = "%{stderr}BENCH %{size_download} %{size_upload} %{time_total}\n";
const CURL_OPTS: [&str; 6] = ["-sS", "--fail", "--disable-epsv", "--max-time", "300", "-w"];

/// Runs curl in the client namespace; (bytes down, bytes up, seconds) as curl measured them.
fn curl(lab: &Lab, args: &[&str]) -> Result<(u64, u64, f64), String> {
    let mut argv = vec!["curl"];
    argv.extend_from_slice(&CURL_OPTS);
    argv.push(CURL_STATS);
    argv.extend_from_slice(args);
    let (ok, out) = lab.client_run(&argv);
    if !ok {
        return Err(format!("curl failed:\n    {}", tail(&out, 10)));
    }
    stats(&out)
}

/// A transfer whose figures are not wanted (the syscall profile's): only whether it worked.
pub fn curl_quiet(lab: &Lab, args: &[&str]) -> Result<(), String> {
    let want = bulk_bytes();
    let (down, up, _) = curl(lab, args)?;
    if down.max(up) == want {
        Ok(())
    } else {
        Err(format!("curl moved {} bytes, want {want}", down.max(up)))
    }
}

fn stats(out: &str) -> Result<(u64, u64, f64), String> {
    let line = line_with(out, "BENCH ").ok_or_else(|| format!("no curl statistics in: {out}"))?;
    let w: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| w.get(i).and_then(|x| x.parse::<f64>().ok()).ok_or_else(|| format!("bad line {line:?}"));
    Ok((num(1)? as u64, num(2)? as u64, num(3)?))
}

/// A download into `sha256sum` through a pipe: curl's statistics and the data's SHA-256.
fn curl_sha(lab: &Lab, url: &str) -> Result<((u64, u64, f64), String), String> {
    let quoted: Vec<String> = CURL_OPTS.iter().map(|a| format!("'{a}'")).collect();
    let script = format!("curl {} '{CURL_STATS}' -o - '{url}' | sha256sum", quoted.join(" "));
    let (ok, out) = lab.client_run(&["sh", "-c", &script]);
    let sha = out.lines().find_map(|l| l.strip_suffix("  -")).map(str::to_owned);
    match (ok, sha) {
        (true, Some(sha)) => Ok((stats(&out)?, sha)),
        _ => Err(format!("curl | sha256sum failed:\n    {}", tail(&out, 10))),
    }
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// The name every STOR of a path lands as (see the module's notes for why one name).
const STOR_NAME: &str = "stor.bin";

/// One STOR of the bulk file; (bytes curl sent, bytes landed, seconds).
fn stor(lab: &Lab, tree: &lab::Tree, big: &BigFile) -> Result<(u64, u64, f64), String> {
    let url = format!("ftp://{LAB_USER}:{LAB_PASS}@{SERVER4}/{STOR_NAME}");
    let (_, up, secs) = curl(lab, &["-T", big.path.to_str().unwrap(), &url])?;
    Ok((up, file_len(&tree.upload.join(STOR_NAME)), secs))
}

/// One timed RETR (download = true) or STOR of the bulk file; MB/s.
fn transfer(lab: &Lab, tree: &lab::Tree, big: &BigFile, download: bool, run: usize) -> Result<f64, String> {
    let what = if download { "RETR" } else { "STOR" };
    let want = bulk_bytes();
    let (moved, arrived, secs) = if download {
        let (down, _, secs) = curl(lab, &["-o", "/dev/null", &format!("ftp://{SERVER4}/gig.bin")])?;
        (down, down, secs)
    } else {
        stor(lab, tree, big)?
    };
    if moved != want || arrived != want {
        return Err(format!("{what}: curl moved {moved} bytes and {arrived} arrived, want {want}"));
    }
    let mbps = want as f64 / secs / 1e6;
    progress!(
        "{}: {what} run {}/{}: {want} bytes in {secs:.3} s = {mbps:.0} MB/s (size ok)",
        lab.path.name(),
        run + 1,
        runs()
    );
    Ok(mbps)
}

/// The RETR checksum: one extra, untimed download through a pipe into sha256sum (which, not the
/// path, would set its pace), before the timed runs into a sink.
fn retr_checksum(lab: &Lab, big: &BigFile) -> Result<(), String> {
    let want = bulk_bytes();
    let ((got, _, _), sha) = curl_sha(lab, &format!("ftp://{SERVER4}/gig.bin"))?;
    if got != want {
        return Err(format!("RETR through sha256sum: curl moved {got} bytes, want {want}"));
    }
    if sha != big.sha {
        return Err(format!("RETR: SHA-256 {sha}, want {}", big.sha));
    }
    progress!("{}: RETR checksum run: {want} bytes, SHA-256 ok (untimed)", lab.path.name());
    Ok(())
}

/// The STOR checksum: one extra, untimed upload whose landed file's SHA-256 is checked; the
/// timed uploads overwrite that file.
fn stor_checksum(lab: &Lab, tree: &lab::Tree, big: &BigFile) -> Result<(), String> {
    let want = bulk_bytes();
    let (up, landed, _) = stor(lab, tree, big)?;
    if up != want || landed != want {
        return Err(format!("STOR checksum run: curl moved {up} bytes and {landed} arrived, want {want}"));
    }
    let sha = lab::sha256_file(&tree.upload.join(STOR_NAME));
    if sha != big.sha {
        return Err(format!("STOR: SHA-256 {sha}, want {}", big.sha));
    }
    progress!("{}: STOR checksum run: {want} bytes, SHA-256 ok (untimed)", lab.path.name());
    Ok(())
}

/// Figures 1 and 2: RETR rounds, then STOR rounds, each round one transfer per path.
pub fn bulk(labs: &mut [PathLab], big: &BigFile) {
    for download in [true, false] {
        // Each direction's untimed checksum run first, on every path.
        for l in labs.iter() {
            let checked = if download { retr_checksum(&l.lab, big) } else { stor_checksum(&l.lab, &l.tree, big) };
            if let Err(e) = checked {
                problem(format!("{}: {e}", l.figs.path.name()));
            }
        }
        for run in 0..runs() {
            for l in rotated(labs, run) {
                let before = l.gate.and_then(cpu_secs);
                match transfer(&l.lab, &l.tree, big, download, run) {
                    Ok(v) => {
                        let used = before.zip(l.gate.and_then(cpu_secs)).map_or(0.0, |(a, b)| b - a);
                        if download {
                            l.figs.retr.push(v);
                            l.cpu_retr += used;
                        } else {
                            l.figs.stor.push(v);
                            l.cpu_stor += used;
                        }
                    }
                    Err(e) => problem(format!("{}: {e}", l.figs.path.name())),
                }
            }
        }
    }
    for l in labs.iter_mut() {
        let _ = fs::remove_file(l.tree.upload.join(STOR_NAME));
        let name = l.figs.path.name();
        progress!(
            "{name}: RETR median {} MB/s, STOR median {} MB/s",
            fmt(median(&l.figs.retr), 0),
            fmt(median(&l.figs.stor), 0)
        );
        let Some(pid) = l.gate else { continue };
        if l.figs.retr.is_empty() || l.figs.stor.is_empty() {
            continue;
        }
        let gib_each = bulk_bytes() as f64 / GIB as f64;
        let (gib_retr, gib_stor) = (l.figs.retr.len() as f64 * gib_each, l.figs.stor.len() as f64 * gib_each);
        let cpu = GateCpu {
            retr_s_per_gib: l.cpu_retr / gib_retr,
            stor_s_per_gib: l.cpu_stor / gib_stor,
            nofile: nofile_of(pid),
        };
        progress!(
            "{name}: ftpgate CPU (utime+stime): {:.2} s over {gib_retr} GiB RETR = {:.3} s/GiB, \
             {:.2} s over {gib_stor} GiB STOR = {:.3} s/GiB",
            l.cpu_retr,
            cpu.retr_s_per_gib,
            l.cpu_stor,
            cpu.stor_s_per_gib
        );
        l.figs.cpu = Some(cpu);
    }
}
