//! Process-level helpers: the open-files limit, SIGXFSZ, and CPU time and resident
//! memory read from `/proc` (Linux) for the benchmark's reports.

use std::io;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Raises the open-files limit as far as allowed: to the kernel's maximum
/// when privileged, else the soft limit to the hard limit. Returns the soft
/// limit now in force (`u64::MAX` when unlimited).
pub fn raise_open_files_limit() -> io::Result<u64> {
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut limit = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let current = limit.current.unwrap_or(u64::MAX);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    for max in [nr_open.max(hard), hard] {
        if current >= max {
            break;
        }
        let raised = Rlimit {
            current: Some(max),
            maximum: Some(max),
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = raised;
            break;
        }
    }
    Ok(limit.current.unwrap_or(u64::MAX))
}

/// Ignores SIGXFSZ: a write past the file-size limit (`RLIMIT_FSIZE`)
/// then fails with `EFBIG`, which the caller reports, instead of the
/// signal's default action ending the process.
pub fn ignore_file_size_signal() {
    // SAFETY: SIG_IGN is a disposition, not a handler: no code runs on the
    // signal, so nothing here can be unsafe to run in a signal context, and
    // `signal` itself is safe to call from any thread.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// CPU time (user + system) a process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second();
    (ticks > 0).then(|| (utime + stime) / ticks as f64)
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Descriptors this process has open (entries of `/proc/self/fd`).
pub fn open_files() -> Option<u64> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    // The directory being read holds one descriptor of its own.
    Some((entries.count() as u64).saturating_sub(1))
}

/// The most descriptors this process may open (`RLIMIT_NOFILE`).
pub fn open_files_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let pid = std::process::id();
        assert!(rss_kib(pid).is_some_and(|kib| kib > 0));
        assert!(cpu_seconds(pid).is_some_and(|s| s >= 0.0));
        assert!(raise_open_files_limit().is_ok_and(|n| n > 0));
    }
}
