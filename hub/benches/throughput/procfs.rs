//! What `/proc` says about processes and the machine (CPU seconds, memory), and number formatting.

use std::path::Path;
use std::process::Command;

/// A `/proc/<pid>/status` field in kB (`VmHWM`, `VmRSS`).
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// User + system CPU seconds of a process (`self` or a pid), all threads.
pub fn cpu_secs(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    // After the command name: field 3 (state) is index 0, so utime (14) is 11 and stime (15) 12.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / clock_ticks()
}

/// The machine's busy and iowait CPU seconds since boot, summed over cores (`/proc/stat`).
pub fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0.0, 0.0);
    };
    // user nice system idle iowait irq softirq steal …
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    (busy as f64 / clock_ticks(), get(4) as f64 / clock_ticks())
}

/// CPU seconds per thread of a process, keyed by thread id, with the thread's name.
pub fn thread_cpu(pid: u32) -> Vec<(u32, String, f64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let tid: u32 = t.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(t.path().join("comm")).ok()?;
            let cpu = cpu_secs(&format!("{pid}/task/{tid}"));
            Some((tid, name.trim().to_owned(), cpu))
        })
        .collect()
}

/// The busiest threads between two samples, each on its own: name and CPU seconds.
pub fn busiest_threads(
    before: &[(u32, String, f64)],
    after: &[(u32, String, f64)],
) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = after
        .iter()
        .map(|(tid, name, cpu)| {
            let start = before
                .iter()
                .find(|(t, _, _)| t == tid)
                .map_or(0.0, |(_, _, c)| *c);
            (name.clone(), cpu - start)
        })
        .filter(|(_, cpu)| *cpu >= 0.01)
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.truncate(8);
    v
}

pub fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// `CLM_HUB__…=…` (and `MIMALLOC_…`, the hub's allocator) variables in the environment, which
/// the hub child inherits.
pub fn hub_env_overrides() -> Vec<String> {
    let mut v: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("CLM_HUB__") || k.starts_with("MIMALLOC_"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    v.sort();
    v
}

/// CPU use as a percentage of one core.
pub fn pct(cpu: f64, wall: f64) -> f64 {
    if wall > 0.0 { cpu / wall * 100.0 } else { 0.0 }
}

/// 1234567 → "1 234 567".
pub fn group(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(ch);
    }
    out
}
