//! Reading one process: sysinfo everywhere, plus `/proc` on Linux for what sysinfo lacks.

use std::time::{SystemTime, UNIX_EPOCH};

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// The `cpu.mode` values of `process.cpu.time` and `process.cpu.utilization`, in the order of
/// [`Reading::cpu_time`](crate::Reading::cpu_time). Empty where the split is not available (outside Linux): the series then
/// carry the total without a `cpu.mode` label, as the OpenTelemetry conventions allow ("either
/// no mode labels or only data points with mode labels").
#[cfg(target_os = "linux")]
pub const CPU_MODES: &[&str] = &["user", "system"];
#[cfg(not(target_os = "linux"))]
pub const CPU_MODES: &[&str] = &[];

/// CPU seconds since the process started, one value per [`CPU_MODES`] entry (or one total when
/// there are none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CpuTimes {
    secs: [f64; 2],
    len: usize,
}

impl CpuTimes {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn split(user: f64, system: f64) -> Self {
        CpuTimes {
            secs: [user, system],
            len: 2,
        }
    }

    pub(crate) fn total(secs: f64) -> Self {
        CpuTimes {
            secs: [secs, 0.0],
            len: 1,
        }
    }

    /// The values, in [`CPU_MODES`] order.
    pub(crate) fn secs(&self) -> &[f64] {
        &self.secs[..self.len]
    }
}

/// One reading of a process. `None` fields are not available for this process on this
/// platform (or not readable by this user).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) cpu: CpuTimes,
    pub(crate) resident_bytes: u64,
    pub(crate) virtual_bytes: u64,
    pub(crate) threads: Option<u64>,
    pub(crate) open_fds: Option<u64>,
    /// Why `open_fds` is `None`, when the platform said.
    pub(crate) open_fds_error: Option<std::io::ErrorKind>,
    /// Soft limit on open files (`None`: unlimited, unknown or unreadable).
    pub(crate) open_fds_limit: Option<u64>,
    /// Memory limit of the process's cgroup (`None`: unlimited, unknown or unreadable).
    pub(crate) memory_limit: Option<u64>,
    /// Seconds since the process started.
    pub(crate) uptime: f64,
    /// When the process started, seconds since the UNIX epoch.
    pub(crate) start_time: f64,
    /// Identifies the process across pid reuse (its start time, in platform units).
    pub(crate) identity: u64,
}

/// What sysinfo tells about one process.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SysinfoReading {
    pub(crate) resident_bytes: u64,
    pub(crate) virtual_bytes: u64,
    /// User plus system CPU seconds (only when asked for; millisecond resolution).
    pub(crate) cpu_total_secs: Option<f64>,
    /// Start time, seconds since the UNIX epoch.
    pub(crate) start_unix_secs: u64,
    pub(crate) open_fds: Option<u64>,
}

/// Refreshes just `pid` in `sys`, just memory (and CPU time if `cpu`), no tasks, no
/// command line, environment or user, and reads it; `None` if the process is gone.
pub(crate) fn sysinfo_reading(
    sys: &mut System,
    pid: Pid,
    cpu: bool,
    open_fds: bool,
) -> Option<SysinfoReading> {
    let mut kind = ProcessRefreshKind::nothing().with_memory().without_tasks();
    if cpu {
        kind = kind.with_cpu();
    }
    sys.refresh_processes_specifics(ProcessesToUpdate::Some(&[pid]), true, kind);
    let p = sys.process(pid).filter(|p| p.exists())?;
    Some(SysinfoReading {
        resident_bytes: p.memory(),
        virtual_bytes: p.virtual_memory(),
        cpu_total_secs: cpu.then(|| p.accumulated_cpu_time() as f64 / 1e3),
        start_unix_secs: p.start_time(),
        open_fds: if open_fds {
            p.open_files().map(|n| n as u64)
        } else {
            None
        },
    })
}

/// Samples one process.
pub(crate) struct Sampler {
    pid: Pid,
    sys: System,
    #[cfg(target_os = "linux")]
    procfs: crate::linux::Procfs,
}

impl Sampler {
    pub(crate) fn new(pid: u32) -> Result<Self, sysinfo::Error> {
        Ok(Sampler {
            pid: Pid::from_u32(pid),
            sys: System::new()?,
            #[cfg(target_os = "linux")]
            procfs: crate::linux::Procfs::new(pid),
        })
    }

    /// The process's executable name: the file name of its executable if readable, else the
    /// name the OS reports (on Linux, the 15-byte `comm`).
    pub(crate) fn executable_name(&mut self) -> Option<String> {
        self.sys.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            true,
            ProcessRefreshKind::nothing()
                .with_exe(sysinfo::UpdateKind::OnlyIfNotSet)
                .without_tasks(),
        );
        let p = self.sys.process(self.pid)?;
        let name = p
            .exe()
            .and_then(|e| e.file_name())
            .unwrap_or_else(|| p.name());
        Some(name.to_string_lossy().into_owned())
    }

    /// Reads the process now; `None` if it is gone or cannot be read. On Linux: its `stat`
    /// file, `/proc/uptime` and the listing of its `fd` directory (sysinfo is not involved:
    /// see the `linux` module).
    #[cfg(target_os = "linux")]
    pub(crate) fn sample(&mut self) -> Option<Sample> {
        use crate::procfs::{clock_ticks_per_second, page_size};
        // A zombie has exited: its numbers no longer describe a running process.
        let stat = self.procfs.stat().filter(|s| !s.exited)?;
        let tck = clock_ticks_per_second() as f64;
        // The start time after boot is in clock ticks; /proc/uptime has 10 ms resolution.
        let started = stat.start_ticks as f64 / tck;
        let uptime = self
            .procfs
            .system_uptime()
            .map_or(0.0, |up| (up - started).max(0.0));
        // As client_golang computes process_start_time_seconds.
        let start_time = crate::linux::boot_time()
            .map_or_else(|| unix_now() - uptime, |boot| boot as f64 + started);
        let fds = self.procfs.open_fds();
        Some(Sample {
            cpu: CpuTimes::split(stat.utime as f64 / tck, stat.stime as f64 / tck),
            resident_bytes: stat.resident_pages.saturating_mul(page_size()),
            virtual_bytes: stat.virtual_bytes,
            threads: Some(stat.threads),
            open_fds: fds.ok(),
            open_fds_error: fds.err(),
            open_fds_limit: self.procfs.max_open_files(),
            memory_limit: self.procfs.memory_limit(),
            uptime,
            start_time,
            identity: stat.start_ticks,
        })
    }

    /// Reads the process now; `None` if it is gone or cannot be read.
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn sample(&mut self) -> Option<Sample> {
        sample_with_sysinfo(&mut self.sys, self.pid)
    }
}

/// The portable path (every platform but Linux): everything from sysinfo, refreshing just
/// this pid and just its memory and CPU time (no CPU split, no thread count). Compiled and
/// unit-tested on Linux too.
#[cfg_attr(target_os = "linux", allow(dead_code))]
pub(crate) fn sample_with_sysinfo(sys: &mut System, pid: Pid) -> Option<Sample> {
    let r = sysinfo_reading(sys, pid, true, true)?;
    Some(Sample {
        cpu: CpuTimes::total(r.cpu_total_secs.unwrap_or(0.0)),
        resident_bytes: r.resident_bytes,
        virtual_bytes: r.virtual_bytes,
        threads: None,
        open_fds: r.open_fds,
        open_fds_error: None,
        open_fds_limit: None,
        memory_limit: None,
        uptime: unix_uptime(r.start_unix_secs),
        start_time: r.start_unix_secs as f64,
        identity: r.start_unix_secs,
    })
}

/// Now, seconds since the UNIX epoch.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Seconds from `start` (UNIX seconds) to now, never negative.
fn unix_uptime(start: u64) -> f64 {
    (unix_now() - start as f64).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_path_reads_this_process() {
        let mut sys = System::new().unwrap();
        let s = sample_with_sysinfo(&mut sys, Pid::from_u32(std::process::id())).unwrap();
        assert_eq!(s.cpu.secs().len(), 1);
        assert!(s.cpu.secs()[0] >= 0.0);
        assert!(s.resident_bytes > 0);
        assert!(s.virtual_bytes >= s.resident_bytes);
        assert!(s.uptime >= 0.0);
        assert!(s.open_fds.unwrap() >= 3);
        assert!(sample_with_sysinfo(&mut sys, Pid::from_u32(u32::MAX - 1)).is_none());
    }

    #[test]
    fn sampler_reads_this_process() {
        let mut s = Sampler::new(std::process::id()).unwrap();
        let a = s.sample().unwrap();
        assert_eq!(a.cpu.secs().len(), CPU_MODES.len().max(1));
        assert!(a.resident_bytes > 0);
        assert!(a.uptime >= 0.0);
        let name = s.executable_name().unwrap();
        assert!(!name.is_empty());
        assert!(Sampler::new(u32::MAX - 1).unwrap().sample().is_none());
    }
}
