//! CPU seconds per party (hub, PostgreSQL, RabbitMQ, this process, the rest), from `/proc`.

use std::collections::HashMap;
use std::time::Instant;

use crate::procfs::{clock_ticks, cpu_secs, machine_cpu, pct};

/// Whose CPU to count: the hub (when running), the postmaster's and RabbitMQ's process trees.
#[derive(Clone, Copy)]
pub struct Procs {
    pub hub: Option<u32>,
    pub pg: Option<u32>,
    pub rabbit: Option<u32>,
}

#[derive(Clone, Copy)]
pub struct Cpu {
    pub at: Instant,
    pub hub: f64,
    pub bench: f64,
    pub pg: f64,
    pub rabbit: f64,
    pub busy: f64,
    pub iowait: f64,
}

impl Cpu {
    pub fn take(p: &Procs) -> Cpu {
        let trees = tree_cpu(&[p.pg, p.rabbit]);
        let (busy, iowait) = machine_cpu();
        Cpu {
            at: Instant::now(),
            hub: p.hub.map_or(0.0, |pid| cpu_secs(&pid.to_string())),
            bench: cpu_secs("self"),
            pg: trees[0],
            rabbit: trees[1],
            busy,
            iowait,
        }
    }

    pub fn since(&self, e: &Cpu) -> CpuShares {
        let (hub, bench, pg, rabbit) = (
            self.hub - e.hub,
            self.bench - e.bench,
            self.pg - e.pg,
            self.rabbit - e.rabbit,
        );
        CpuShares {
            wall: (self.at - e.at).as_secs_f64(),
            hub,
            bench,
            pg,
            rabbit,
            other: ((self.busy - e.busy) - hub - bench - pg - rabbit).max(0.0),
            iowait: self.iowait - e.iowait,
        }
    }
}

/// CPU seconds over a window.
#[derive(Clone, Copy, Default)]
pub struct CpuShares {
    pub wall: f64,
    pub hub: f64,
    pub bench: f64,
    pub pg: f64,
    pub rabbit: f64,
    /// Busy CPU of every other process on the machine (other builds and tests, …).
    pub other: f64,
    pub iowait: f64,
}

impl CpuShares {
    pub fn describe(&self, cores: usize) -> String {
        let w = self.wall;
        format!(
            "{w:.2} s wall × {cores} cores = {:.2} CPU-s: hub {:.2} s ({:.0}% of a core), PostgreSQL {:.2} s ({:.0}%), RabbitMQ {:.2} s ({:.0}%), bench process (mock + AMQP client) {:.2} s ({:.0}%), other processes {:.2} s ({:.0}%), iowait {:.2} s",
            w * cores as f64,
            self.hub,
            pct(self.hub, w),
            self.pg,
            pct(self.pg, w),
            self.rabbit,
            pct(self.rabbit, w),
            self.bench,
            pct(self.bench, w),
            self.other,
            pct(self.other, w),
            self.iowait
        )
    }
}

/// CPU seconds of each root's process tree: the root, its living descendants, and the children
/// it already reaped (`cutime` + `cstime`: PostgreSQL backends come and go).
pub fn tree_cpu(roots: &[Option<u32>]) -> Vec<f64> {
    // pid → (parent, own CPU ticks, reaped children's CPU ticks)
    let mut procs: HashMap<u32, (u32, u64, u64)> = HashMap::new();
    if roots.iter().any(Option::is_some)
        && let Ok(dir) = std::fs::read_dir("/proc")
    {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            procs.insert(pid, (num(1) as u32, num(11) + num(12), num(13) + num(14)));
        }
    }
    roots
        .iter()
        .map(|root| {
            let Some(root) = *root else { return 0.0 };
            let Some(&(_, own, reaped)) = procs.get(&root) else {
                return 0.0;
            };
            let mut ticks = own + reaped;
            for (&pid, &(_, own, _)) in &procs {
                let mut p = pid;
                // Walk up to init: is `root` an ancestor?
                for _ in 0..64 {
                    let Some(&(parent, _, _)) = procs.get(&p) else {
                        break;
                    };
                    if parent == root {
                        ticks += own;
                        break;
                    }
                    if parent <= 1 {
                        break;
                    }
                    p = parent;
                }
            }
            ticks as f64 / clock_ticks()
        })
        .collect()
}
