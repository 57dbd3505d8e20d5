//! Figures 1 and 2: RETR and STOR of a 1 GiB file with curl on every path, each transfer's
//! size checked and its SHA-256 on the first run, and ftpgate's CPU time per GiB relayed.

use super::lab::servers::{LAB_PASS, LAB_USER};
use super::lab::{self, Lab, SERVER4};
use super::problem;
use super::procs::{cpu_secs, nofile_of, tail};
use super::report::{fmt, line_with, median};
use super::setup::{rotated, PathLab};
use std::fs;
use std::path::{Path, PathBuf};

pub const GIB: u64 = 1 << 30;

/// Runs per direction and path; the median is reported.
pub const RUNS: usize = 3;

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
        let sha = lab::write_big(&path, GIB as usize);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        BigFile { _dir: dir, path, sha }
    }
}

/// Runs curl in the client namespace; (bytes down, bytes up, seconds) as curl measured them.
fn curl(lab: &Lab, args: &[&str]) -> Result<(u64, u64, f64), String> {
    let mut argv = vec![
        "curl",
        "-sS",
        "--fail",
        "--disable-epsv",
        "--max-time",
        "300",
        "-w",
        "BENCH %{size_download} %{size_upload} %{time_total}\n",
    ];
    argv.extend_from_slice(args);
    let (ok, out) = lab.client_run(&argv);
    if !ok {
        return Err(format!("curl failed:\n    {}", tail(&out, 10)));
    }
    let line = line_with(&out, "BENCH ").ok_or_else(|| format!("no curl statistics in: {out}"))?;
    let w: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| w.get(i).and_then(|x| x.parse::<f64>().ok()).ok_or_else(|| format!("bad line {line:?}"));
    Ok((num(1)? as u64, num(2)? as u64, num(3)?))
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// One RETR (download = true) or STOR of the 1 GiB file; MB/s.
fn transfer(lab: &Lab, tree: &lab::Tree, big: &BigFile, download: bool, run: usize) -> Result<f64, String> {
    let what = if download { "RETR" } else { "STOR" };
    let checksum = run == 0;
    let (landed, (down, up, secs)) = if download {
        let out = lab.dir.path().join(format!("retr-{run}.bin"));
        let r = curl(lab, &["-o", out.to_str().unwrap(), &format!("ftp://{SERVER4}/gig.bin")])?;
        (out, r)
    } else {
        let name = format!("stor-{run}.bin");
        let url = format!("ftp://{LAB_USER}:{LAB_PASS}@{SERVER4}/{name}");
        let r = curl(lab, &["-T", big.path.to_str().unwrap(), &url])?;
        (tree.upload.join(name), r)
    };
    let moved = if download { down } else { up };
    let arrived = file_len(&landed);
    let check = if moved != GIB || arrived != GIB {
        Err(format!("{what}: curl moved {moved} bytes and {arrived} arrived, want {GIB}"))
    } else if checksum {
        let got = lab::sha256_file(&landed);
        if got == big.sha {
            Ok(())
        } else {
            Err(format!("{what}: SHA-256 {got}, want {}", big.sha))
        }
    } else {
        Ok(())
    };
    let _ = fs::remove_file(&landed);
    check?;
    let mbps = GIB as f64 / secs / 1e6;
    progress!(
        "{}: {what} run {}/{RUNS}: {GIB} bytes in {secs:.3} s = {mbps:.0} MB/s (size ok{})",
        lab.path.name(),
        run + 1,
        if checksum { ", SHA-256 ok" } else { "" }
    );
    Ok(mbps)
}

/// Figures 1 and 2: RETR rounds, then STOR rounds, each round one transfer per path.
pub fn bulk(labs: &mut [PathLab], big: &BigFile) {
    for download in [true, false] {
        for run in 0..RUNS {
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
        // 1 GiB per successful transfer.
        let (gib_retr, gib_stor) = (l.figs.retr.len() as f64, l.figs.stor.len() as f64);
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
