//! Figure 4: control-channel round trip, sequential NOOPs on one logged-in session per path,
//! in blocks that take turns between the paths.

use super::lab::SERVER4;
use super::problem;
use super::procs::Interactive;
use super::report;
use super::setup::PathLab;
use std::time::Duration;

/// NOOP round trips kept per path, in blocks taken in turns by the paths, after a warm-up.
pub const NOOP_COUNT: usize = 20_000;
pub const NOOP_BLOCK: usize = 2_500;
const NOOP_WARMUP: usize = 1_000;

pub struct Rtt {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Figure 4: one logged-in session per path, kept for the whole test; the paths take turns
/// in blocks of NOOP_BLOCK round trips.
pub fn rtt(labs: &mut [PathLab], exe: &str) {
    let target = format!("{SERVER4}:21");
    let mut gens: Vec<Option<Interactive>> = Vec::new();
    for l in labs.iter() {
        let g = Interactive::spawn(&l.lab.client_ns, &[exe, "--loadgen", "noop", "--target", &target]);
        match g.until("READY", Duration::from_secs(30)) {
            Ok(_) => gens.push(Some(g)),
            Err(e) => {
                problem(format!("{}: NOOP session: {e}", l.figs.path.name()));
                gens.push(None);
            }
        }
    }
    let blocks = NOOP_COUNT / NOOP_BLOCK;
    // Block 0 warms up and is not kept.
    for block in 0..=blocks {
        let n = if block == 0 { NOOP_WARMUP } else { NOOP_BLOCK };
        let order: Vec<usize> = (0..labs.len()).map(|i| (i + block) % labs.len()).collect();
        for i in order {
            let Some(g) = gens[i].as_mut() else { continue };
            let got = g.send(&n.to_string()).and_then(|()| g.until("SAMPLES", Duration::from_secs(60)));
            match got.map(|lines| lines.last().cloned().unwrap_or_default()) {
                Ok(line) => {
                    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
                    if v.len() != n {
                        problem(format!(
                            "{}: NOOP block of {} round trips, want {n}",
                            labs[i].figs.path.name(),
                            v.len()
                        ));
                        gens[i] = None;
                    } else if block > 0 {
                        labs[i].noop_ns.extend(v);
                    }
                }
                Err(e) => {
                    problem(format!("{}: NOOP session: {e}", labs[i].figs.path.name()));
                    gens[i] = None;
                }
            }
        }
    }
    for (l, g) in labs.iter_mut().zip(gens.iter_mut()) {
        if let Some(g) = g.as_mut() {
            g.finish(Duration::from_secs(10));
        }
        let name = l.figs.path.name();
        if l.noop_ns.len() != NOOP_COUNT {
            continue;
        }
        l.noop_ns.sort_unstable();
        let p = |q: f64| report::percentile(&l.noop_ns, q).map_or(f64::NAN, |v| v as f64 / 1000.0);
        let r = Rtt { p50: p(50.0), p99: p(99.0), max: p(100.0) };
        progress!(
            "{name}: NOOP round trip over {NOOP_COUNT}: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
            r.p50,
            r.p99,
            r.max
        );
        l.figs.rtt = Some(r);
    }
}
