//! Percentiles and the process figures sampled from /proc.

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Distribution {
    pub count: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Distribution {
    /// From samples in seconds.
    pub fn of(samples: &[f64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut sorted: Vec<f64> = samples.iter().map(|s| s * 1000.0).collect();
        sorted.sort_by(f64::total_cmp);
        let at = |p: f64| sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)];
        Self {
            count: sorted.len(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: sorted[sorted.len() - 1],
        }
    }

    pub fn row(&self) -> String {
        format!(
            "p50 {:8.2} ms  p95 {:8.2} ms  p99 {:8.2} ms  max {:8.2} ms  (n={})",
            self.p50_ms, self.p95_ms, self.p99_ms, self.max_ms, self.count
        )
    }
}

/// The server process's resident memory and CPU time, from /proc/PID.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcessSample {
    pub rss_kib: u64,
    pub cpu_seconds: f64,
}

pub fn sample_process(pid: Option<u32>) -> Option<ProcessSample> {
    let pid = pid?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) — utime and stime are 14 and 15.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ProcessSample {
        rss_kib,
        cpu_seconds: ticks / 100.0,
    })
}
