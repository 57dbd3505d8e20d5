//! Pure helpers of the lab benchmark: statistics, parsing of what the kernel, curl and FTP
//! servers print, the plain-text table and the targets. No I/O here, so that test mode
//! (`cargo test --bench lab`) can check all of it in milliseconds: see [`self_check`].

use std::net::{IpAddr, SocketAddr, SocketAddrV4};

/// Nearest-rank percentile of an ascending slice: the smallest sample such that at least `p` %
/// of the samples are less than or equal to it. `None` for an empty slice.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Median (mean of the two middle values for an even count). `None` for no values.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// utime + stime (clock ticks) from the text of /proc/PID/stat. The command name in field 2 may
/// hold spaces and parentheses, so fields are counted from the last `)`.
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
    // cmajflt utime(14) stime(15).
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `Name:   value kB` field of /proc/PID/status, in KiB.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let v = l.strip_prefix(field)?.strip_prefix(':')?;
        let mut w = v.split_whitespace();
        let n = w.next()?.parse().ok()?;
        (w.next() == Some("kB")).then_some(n)
    })
}

/// (busy, total) jiffies of all CPUs from the text of /proc/stat; idle and iowait count as
/// not busy.
pub fn cpu_jiffies(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).take(8).map(|x| x.parse().ok()).collect::<Option<_>>()?;
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    Some((total - v[3] - v[4], total))
}

/// Percentage of CPU time busy between two [`cpu_jiffies`] samples.
pub fn busy_percent(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let total = after.1.checked_sub(before.1)?;
    let busy = after.0.checked_sub(before.0)?;
    (total > 0).then(|| 100.0 * busy as f64 / total as f64)
}

/// The 1-minute load average from the text of /proc/loadavg.
pub fn loadavg1(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The soft "Max open files" limit from /proc/PID/limits.
pub fn limits_nofile(limits: &str) -> Option<String> {
    let l = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let w: Vec<&str> = l["Max open files".len()..].split_whitespace().collect();
    Some(format!("{} soft / {} hard", w.first()?, w.get(1)?))
}

/// The reply code of an FTP reply line and whether the line continues a multi-line reply
/// (`123-text`). `None` when the line does not start with three digits.
pub fn reply_code(line: &str) -> Option<(u16, bool)> {
    let b = line.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = line[..3].parse().ok()?;
    Some((code, b.get(3) == Some(&b'-')))
}

/// Whether `line` ends a reply that started with `first` (RFC 959: `ddd text` after `ddd-`).
pub fn reply_ends(first: u16, multi: bool, line: &str) -> bool {
    if !multi {
        return true;
    }
    let b = line.as_bytes();
    b.len() >= 4 && line.starts_with(&first.to_string()) && b[3] == b' '
}

/// The data address of a 227 reply: the first run of six comma-separated numbers.
pub fn parse_227(text: &str) -> Option<SocketAddrV4> {
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() || c == ',' {
            run.push(c);
            continue;
        }
        let n: Vec<&str> = run.split(',').collect();
        if n.len() == 6 && n.iter().all(|x| !x.is_empty()) {
            let v: Option<Vec<u8>> = n.iter().map(|x| x.parse().ok()).collect();
            let v = v?;
            let ip = std::net::Ipv4Addr::new(v[0], v[1], v[2], v[3]);
            return Some(SocketAddrV4::new(ip, u16::from(v[4]) << 8 | u16::from(v[5])));
        }
        run.clear();
    }
    None
}

/// The data address of a 229 reply (`(|||port|)`): the port, at the control peer's address.
pub fn parse_229(text: &str, peer: IpAddr) -> Option<SocketAddr> {
    let start = text.find("(|||")? + 4;
    let end = start + text[start..].find('|')?;
    Some(SocketAddr::new(peer, text[start..end].parse().ok()?))
}

/// Whole `NOOP` command lines, as many as fit in `bytes`.
pub fn noop_stream(bytes: usize) -> Vec<u8> {
    b"NOOP\r\n".repeat(bytes / 6)
}

/// p50 and p99 in milliseconds of samples in microseconds, given as a `key=` list of
/// comma-separated numbers (`during_us=120,95,3000`); `None` without samples.
pub fn ms_p50_p99(list: &str) -> Option<(f64, f64)> {
    let mut v: Vec<u64> = list.split(',').filter_map(|x| x.parse().ok()).collect();
    v.sort_unstable();
    let ms = |p: f64| percentile(&v, p).map(|us| us as f64 / 1000.0);
    Some((ms(50.0)?, ms(99.0)?))
}

/// The number of comma-separated samples in such a list.
pub fn sample_count(list: &str) -> usize {
    list.split(',').filter(|x| x.parse::<u64>().is_ok()).count()
}

/// `key=value` pairs of a line such as `RESULT sessions=10 rate=1.5`.
pub fn kv(line: &str, key: &str) -> Option<String> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
}

pub fn kv_f64(line: &str, key: &str) -> Option<f64> {
    kv(line, key)?.parse().ok()
}

/// The line of `output` that starts with `prefix` (the last one if several).
pub fn line_with<'a>(output: &'a str, prefix: &str) -> Option<&'a str> {
    output.lines().rev().find(|l| l.starts_with(prefix))
}

/// ftpgate's WARN and ERROR log lines (human format) grouped by message: the timestamp and the
/// span prefix (`session{client=...}:`), which differ from line to line, are left out. Most
/// frequent first, then in order of appearance.
pub fn group_warnings(log: &str) -> Vec<(usize, String)> {
    let mut groups: Vec<(usize, String)> = Vec::new();
    for line in log.lines() {
        let Some(at) = line.find(" WARN ").or_else(|| line.find(" ERROR ")) else { continue };
        let mut msg = line[at..].trim_start();
        let level_len = msg.find(' ').unwrap_or(msg.len());
        let level = &msg[..level_len];
        msg = msg[level_len..].trim_start();
        // Spans: `name{fields}:` possibly chained (`session{..}:data{..}:`).
        while let Some(open) = msg.find('{') {
            let name = &msg[..open];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                break;
            }
            let Some(close) = msg.find("}:") else { break };
            msg = msg[close + 2..].trim_start();
        }
        let key = format!("{level} {msg}");
        match groups.iter_mut().find(|g| g.1 == key) {
            Some(g) => g.0 += 1,
            None => groups.push((1, key)),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.0));
    groups
}

/// A plain-text table: the first column left-aligned, the others right-aligned, two spaces
/// between columns, a rule under the header. A row with a single cell is a section title.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows.iter().filter(|r| r.len() > 1) {
        for (i, c) in r.iter().enumerate().take(cols) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate().take(cols) {
            let pad = width[i].saturating_sub(c.chars().count());
            if i == 0 {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str("  ");
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        s.trim_end().to_owned()
    };
    let total: usize = width.iter().sum::<usize>() + 2 * (cols - 1);
    let mut out = line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    out.push('\n');
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for r in rows {
        if r.len() == 1 {
            out.push_str(&r[0]);
        } else {
            out.push_str(&line(r));
        }
        out.push('\n');
    }
    out
}

/// A number with `digits` decimals, or `n/a`.
pub fn fmt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "n/a".to_owned(),
    }
}

/// How a target compares a value with its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    AtLeast,
    AtMost,
}

/// One target's verdict: `met`, `NOT met`, or `NOT met (no measurement)` when a figure is
/// missing (a failed measurement never passes).
pub fn verdict(value: Option<f64>, cmp: Cmp, limit: f64) -> &'static str {
    match value {
        Some(v) if v.is_finite() => {
            let ok = match cmp {
                Cmp::AtLeast => v >= limit,
                Cmp::AtMost => v <= limit,
            };
            if ok {
                "met"
            } else {
                "NOT met"
            }
        }
        _ => "NOT met (no measurement)",
    }
}

/// Checks every helper above on known inputs; panics on the first mismatch. Returns how many
/// checks ran.
/// The per-call counts of an `strace -c` summary, the total first and then by count:
/// `% time  seconds  usecs/call  calls  [errors]  syscall` rows between dashed lines.
pub fn strace_counts(text: &str) -> Option<Vec<(String, u64)>> {
    let mut rows: Vec<(String, u64)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 5 || f[0].starts_with('-') || f[0] == "%" {
                return None;
            }
            Some((f.last()?.to_string(), f[3].parse().ok()?))
        })
        .collect();
    let total = rows.iter().position(|(n, _)| n == "total").map(|i| rows.remove(i))?;
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    rows.insert(0, total);
    Some(rows)
}

pub fn self_check() -> usize {
    let mut n = 0;
    let mut check = |ok: bool, what: &str| {
        assert!(ok, "bench self-check failed: {what}");
        n += 1;
    };
    let hundred: Vec<u64> = (1..=100).collect();
    check(percentile(&hundred, 50.0) == Some(50), "p50 of 1..=100");
    check(percentile(&hundred, 99.0) == Some(99), "p99 of 1..=100");
    check(percentile(&hundred, 100.0) == Some(100), "p100 of 1..=100");
    check(percentile(&hundred, 0.0) == Some(1), "p0 of 1..=100");
    check(percentile(&[7], 99.0) == Some(7), "p99 of one sample");
    check(percentile(&[], 50.0).is_none(), "percentile of nothing");
    let thousand: Vec<u64> = (1..=1000).collect();
    check(percentile(&thousand, 99.0) == Some(990), "p99 of 1..=1000");
    check(percentile(&[10, 20, 30], 50.0) == Some(20), "p50 of three");
    check(median(&[3.0, 1.0, 2.0]) == Some(2.0), "median of three");
    check(median(&[4.0, 1.0, 3.0, 2.0]) == Some(2.5), "median of four");
    check(median(&[]).is_none(), "median of nothing");
    let strace = "% time     seconds  usecs/call     calls    errors syscall\n\
                  ------ ----------- ----------- --------- --------- ----------------\n\
                   88.56    3.329188           5    637607      1311 splice\n\
                   11.43    0.429838          61      6999           epoll_wait\n\
                    0.01    0.000415           7        57           write\n\
                  ------ ----------- ----------- --------- --------- ----------------\n\
                  100.00    3.759441           5    644663      1311 total\n";
    let counts = strace_counts(strace).unwrap_or_default();
    check(counts.first() == Some(&("total".into(), 644663)), "strace total first");
    check(counts.get(2) == Some(&("epoll_wait".into(), 6999)), "strace rows by count, errors column optional");
    check(strace_counts("nothing").is_none(), "no strace summary");

    let stat = "4242 (ftp gate) x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 150 37 0 0 20 0 3 0 1000 \
                123456 789 18446744073709551615";
    check(stat_cpu_ticks(stat) == Some(187), "utime+stime from /proc/PID/stat");
    check(stat_cpu_ticks("garbage").is_none(), "stat without a name");
    let status = "Name:\tftpgate\nVmHWM:\t   9000 kB\nVmRSS:\t    8123 kB\nThreads:\t3\n";
    check(status_kib(status, "VmRSS") == Some(8123), "VmRSS");
    check(status_kib(status, "VmHWM") == Some(9000), "VmHWM");
    check(status_kib(status, "Threads").is_none(), "a field without kB");
    let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                  Max open files            20480                1048576              files\n";
    check(limits_nofile(limits).as_deref() == Some("20480 soft / 1048576 hard"), "Max open files");

    check(reply_code("220 ready") == Some((220, false)), "single-line reply");
    check(reply_code("230-Welcome") == Some((230, true)), "multi-line start");
    check(reply_code("hello").is_none(), "not a reply");
    check(!reply_ends(230, true, "230-more"), "multi-line goes on");
    check(!reply_ends(230, true, " 230 indented text"), "text line inside a multi-line reply");
    check(reply_ends(230, true, "230 done"), "multi-line ends");
    check(reply_ends(200, false, "200 NOOP ok."), "single line ends at once");
    let a = "227 Entering Passive Mode (198,51,100,2,195,81).";
    check(parse_227(a) == Some("198.51.100.2:50001".parse().unwrap()), "227 with parentheses");
    check(parse_227("227 =198,51,100,2,156,64") == Some("198.51.100.2:40000".parse().unwrap()), "227 without");
    check(parse_227("227 Entering Passive Mode (1,2,3,4,5)").is_none(), "227 with five numbers");
    check(parse_227("227 (1,2,3,4,5,1234)").is_none(), "227 with a port byte over 255");
    let peer: IpAddr = "198.51.100.2".parse().unwrap();
    check(
        parse_229("229 Entering Extended Passive Mode (|||40123|)", peer)
            == Some("198.51.100.2:40123".parse().unwrap()),
        "229",
    );
    check(parse_229("229 nothing", peer).is_none(), "229 without a port");

    let procstat = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\n";
    check(cpu_jiffies(procstat) == Some((160, 980)), "busy and total jiffies from /proc/stat");
    check(busy_percent((160, 980), (260, 1180)) == Some(50.0), "busy percentage");
    check(busy_percent((160, 980), (160, 980)).is_none(), "busy percentage of no time");
    check(loadavg1("1.25 0.80 0.50 2/345 6789\n") == Some(1.25), "load average");
    let log = "2026-11-22T08:00:24.27Z  INFO ftpgate: listening\n\
               2026-11-22T08:00:24.28Z  WARN ftpgate::rlimit: open-file limit 20,000 is short\n\
               2026-11-22T08:00:27.24Z  WARN session{client=203.0.113.2:50006 dst=x}: ftpgate::proxy::control: \
               cannot connect error=Too many open files (os error 24)\n\
               2026-11-22T08:00:27.25Z  WARN session{client=203.0.113.2:50162 dst=x}:data{mode=passive}: \
               ftpgate::proxy::control: cannot connect error=Too many open files (os error 24)\n\
               2026-11-22T08:00:28.00Z ERROR ftpgate: gave up\n";
    let g = group_warnings(log);
    check(g.len() == 3, "three distinct warnings");
    check(
        g[0] == (2, "WARN ftpgate::proxy::control: cannot connect error=Too many open files (os error 24)".into()),
        "per-session warnings grouped without their spans",
    );
    check(g[1] == (1, "WARN ftpgate::rlimit: open-file limit 20,000 is short".into()), "a single warning");
    check(g[2] == (1, "ERROR ftpgate: gave up".into()), "errors too");
    check(noop_stream(20) == b"NOOP\r\nNOOP\r\nNOOP\r\n", "whole NOOP lines only");
    check(noop_stream(1 << 20).len() == (1 << 20) / 6 * 6, "a MiB of NOOP lines");
    check(noop_stream(5).is_empty(), "no partial NOOP");
    check(ms_p50_p99("3000,1000,2000,4000") == Some((2.0, 4.0)), "p50 and p99 in ms of a us list");
    check(ms_p50_p99("").is_none(), "no samples, no percentiles");
    check(sample_count("1,2,3") == 3 && sample_count("") == 0, "sample counts");
    let line = "RESULT sessions=120 rate=12.5 errors=0";
    check(kv(line, "sessions").as_deref() == Some("120"), "key=value");
    check(kv_f64(line, "rate") == Some(12.5), "key=value as a number");
    check(kv(line, "rat").is_none(), "a key is matched whole");
    check(line_with("x\nRESULT a=1\ny", "RESULT ") == Some("RESULT a=1"), "result line");

    let t = table(
        &["figure", "routed", "ftpgate"],
        &[
            vec!["bulk".into()],
            vec!["RETR MB/s".into(), "1234.5".into(), "99.0".into()],
            vec!["ratio".into(), "1.00".into(), "0.08".into()],
        ],
    );
    let lines: Vec<&str> = t.lines().collect();
    check(lines.len() == 5, "table: header, rule, three rows");
    check(lines[0] == "figure     routed  ftpgate", "table header aligned");
    check(lines[1] == "-".repeat(26), "table rule spans the columns");
    check(lines[2] == "bulk", "section title row");
    check(lines[3] == "RETR MB/s  1234.5     99.0", "numbers right-aligned");
    check(fmt(Some(1.234), 2) == "1.23" && fmt(None, 1) == "n/a" && fmt(Some(f64::NAN), 1) == "n/a", "fmt");
    check(verdict(Some(0.95), Cmp::AtLeast, 0.90) == "met", "at least, met");
    check(verdict(Some(0.85), Cmp::AtLeast, 0.90) == "NOT met", "at least, not met");
    check(verdict(Some(100.0), Cmp::AtMost, 100.0) == "met", "at most, on the limit");
    check(verdict(None, Cmp::AtMost, 1.0) == "NOT met (no measurement)", "no measurement never passes");
    n
}
