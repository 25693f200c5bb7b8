//! Where the machine's CPU went during a measurement, from `/proc`: the whole machine, this
//! process (the load generator, or the raw threads), the server when its pid is given, and
//! everything else. On a shared
//! machine the "other" figure says whether a run was disturbed; beside the server's share, the
//! bench's says what the load generator costs.

use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc` times: `USER_HZ`, 100 on every Linux architecture this
/// runs on (fixed by the kernel's user ABI, whatever the kernel's internal HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    at: Instant,
    machine_busy: u64,
    machine_steal: u64,
    bench: u64,
    server: Option<u64>,
}

/// CPU used between two samples, in cores (1.0 = one core busy the whole time).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUse {
    /// All processes and the kernel.
    pub machine: f64,
    /// Time the hypervisor gave to someone else.
    pub steal: f64,
    /// This process: the load generator, or the raw threads.
    pub bench: f64,
    /// The server process, when its pid was given.
    pub server: Option<f64>,
}

impl CpuUse {
    /// What neither the generator nor the server used (needs the server's pid).
    pub fn other(&self) -> Option<f64> {
        self.server
            .map(|s| (self.machine - self.bench - s).max(0.0))
    }
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cpu_machine={:.2}", self.machine)?;
        if let Some(s) = self.server {
            write!(f, " cpu_server={s:.2}")?;
        }
        write!(f, " cpu_bench={:.2}", self.bench)?;
        if let Some(o) = self.other() {
            write!(f, " cpu_other={o:.2}")?;
        }
        write!(f, " cpu_steal={:.2}", self.steal)
    }
}

/// Busy and steal ticks of the whole machine, from the first line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Some((at(0) + at(1) + at(2) + at(5) + at(6), at(7)))
}

/// User plus system ticks of a process, from `/proc/<pid>/stat`.
pub fn parse_pid_stat(text: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is index 0 here; utime and stime are fields 14 and 15.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn pid_ticks(pid: &str) -> Option<u64> {
    parse_pid_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Takes a sample; `None` where `/proc` cannot be read.
pub fn sample(server_pid: Option<u32>) -> Option<CpuSample> {
    let (machine_busy, machine_steal) =
        parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)?;
    Some(CpuSample {
        at: Instant::now(),
        machine_busy,
        machine_steal,
        bench: pid_ticks("self")?,
        server: server_pid.and_then(|p| pid_ticks(&p.to_string())),
    })
}

/// The use between `a` and the later `b`.
pub fn between(a: &CpuSample, b: &CpuSample) -> Option<CpuUse> {
    let secs =
        b.at.checked_duration_since(a.at)?
            .max(Duration::from_millis(1))
            .as_secs_f64();
    let cores = |x: u64, y: u64| y.saturating_sub(x) as f64 / TICKS_PER_SECOND / secs;
    Some(CpuUse {
        machine: cores(a.machine_busy, b.machine_busy),
        steal: cores(a.machine_steal, b.machine_steal),
        bench: cores(a.bench, b.bench),
        server: match (a.server, b.server) {
            (Some(x), Some(y)) => Some(cores(x, y)),
            _ => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let text = "cpu  100 5 50 1000 7 3 2 11 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse_proc_stat(text), Some((160, 11)));
        assert_eq!(parse_proc_stat("intr 1 2"), None);
    }

    #[test]
    fn parses_pid_stat_with_odd_names() {
        let text = "42 (a) b (c)) S 1 42 42 0 -1 4194304 100 0 0 0 250 30 0 0 20 0 4 0 1 2 3";
        assert_eq!(parse_pid_stat(text), Some(280));
        assert_eq!(parse_pid_stat("garbage"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        if let Some(a) = sample(None) {
            let b = sample(None).unwrap();
            let u = between(&a, &b).unwrap();
            assert!(u.server.is_none() && u.other().is_none());
        }
    }
}
