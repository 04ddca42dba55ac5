//! What /proc says about a process and the machine: memory, threads, fds, CPU time.

use std::{sync::OnceLock, time::Instant};

pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(key)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .unwrap_or(0)
}

pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

pub fn threads(pid: u32) -> u64 {
    proc_status_kib(pid, "Threads:")
}

pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The processes whose parent is `pid` (nginx's workers under its master).
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&p| proc_stat(p).is_some_and(|(ppid, _)| ppid == pid))
                .collect()
        })
        .unwrap_or_default()
}

/// Proportional set size of a process and its children, in KiB (`Pss:` of
/// /proc/PID/smaps_rollup): memory shared between them (nginx's shared zone, where Nchan
/// keeps its channels and messages) is counted once, split among them.
pub fn pss_tree_kib(pid: u32) -> u64 {
    let pss = |p: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{p}/smaps_rollup"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Pss:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    };
    pss(pid) + children(pid).into_iter().map(pss).sum::<u64>()
}

/// (ppid, utime + stime in clock ticks) of a process.
pub fn proc_stat(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, ppid 4, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((ppid, ticks))
}

pub fn clock_ticks() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU jiffies of the whole machine from the first line of /proc/stat: (user + nice +
/// system, irq + softirq, steal, all).
pub fn machine_jiffies() -> (u64, u64, u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal guest guest_nice
    (
        at(0) + at(1) + at(2),
        at(5) + at(6),
        at(7),
        v.iter().take(8).sum(),
    )
}

/// CPU used by each party over a window: the server (with its children: nginx's workers),
/// the benchmark, PostgreSQL (the postmaster and its children), every other process,
/// interrupts, and steal.
#[derive(Clone)]
pub struct CpuMark {
    pub at: Instant,
    pub server: u64,
    pub bench: u64,
    pub pg: u64,
    pub others: std::collections::HashMap<u32, u64>,
    pub tasks: u64,
    pub irq: u64,
    pub steal: u64,
    pub total: u64,
}

impl CpuMark {
    pub fn take(server_pid: u32, pg_pid: u32) -> CpuMark {
        let (tasks, irq, steal, total) = machine_jiffies();
        let me = std::process::id();
        let mut mark = CpuMark {
            at: Instant::now(),
            server: 0,
            bench: 0,
            pg: 0,
            others: std::collections::HashMap::new(),
            tasks,
            irq,
            steal,
            total,
        };
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return mark;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Some((ppid, ticks)) = proc_stat(pid) else {
                continue;
            };
            if server_pid != 0 && (pid == server_pid || ppid == server_pid) {
                mark.server += ticks;
            } else if pid == me {
                mark.bench = ticks;
            } else if pg_pid != 0 && (pid == pg_pid || ppid == pg_pid) {
                mark.pg += ticks;
            } else {
                mark.others.insert(pid, ticks);
            }
        }
        mark
    }

    /// Seconds of CPU the server used between `start` and this mark.
    pub fn server_secs(&self, start: &CpuMark) -> f64 {
        self.server.saturating_sub(start.server) as f64 / clock_ticks()
    }

    /// Seconds of CPU each party used between `start` and this mark.
    pub fn since(&self, start: &CpuMark) -> String {
        let hz = clock_ticks();
        let secs = |a: u64, b: u64| a.saturating_sub(b) as f64 / hz;
        let wall = self.at.duration_since(start.at).as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let server = secs(self.server, start.server);
        let bench = secs(self.bench, start.bench);
        let pg = secs(self.pg, start.pg);
        // A process born in the window counts from zero; one that died in it is missed
        // (it lands in "unattributed").
        let others: u64 = self
            .others
            .iter()
            .map(|(pid, t)| t.saturating_sub(start.others.get(pid).copied().unwrap_or(0)))
            .sum();
        let others = others as f64 / hz;
        let tasks = secs(self.tasks, start.tasks);
        // Interrupt time: partly inside the processes' own system time already.
        let irq = secs(self.irq, start.irq);
        let steal = secs(self.steal, start.steal);
        let total = secs(self.total, start.total);
        let unattributed = (tasks - server - bench - pg - others).max(0.0);
        let busy = if total > 0.0 {
            // busy = everything but idle and iowait
            (tasks + irq + steal) / total
        } else {
            0.0
        };
        format!(
            "over {wall:.1} s wall, CPU s: server {server:.2}, bench {bench:.2}, postgres {pg:.2}, other processes {others:.2}, unattributed {unattributed:.2}, steal {steal:.2}; machine busy {:.0}% of {cores:.0} cores",
            busy * 100.0
        )
    }
}
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = proc_meminfo("MemTotal:");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let limit = std::process::Command::new("sh")
        .args(["-c", "ulimit -n"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    format!(
        "nproc {nproc}; CPU {model}; memory {:.1} GiB; kernel {kernel}; open-file limit {}",
        mem as f64 / 1024.0 / 1024.0,
        limit.trim()
    )
}

pub fn proc_meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}
