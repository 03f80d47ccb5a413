//! What one reading of the host yields, independent of where it came from (`/proc` on Linux,
//! sysinfo elsewhere).

use crate::SYSTEM_CPU_MODES;

/// Cumulative clock ticks per [`SYSTEM_CPU_MODES`] entry. `user` and `nice` include the time spent
/// running guests, as the kernel accounts it, so the modes add up to the total.
pub(crate) type CpuTicks = [u64; SYSTEM_CPU_MODES.len()];

/// CPU readings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cpu {
    /// Cumulative ticks (Linux): all CPUs together, then each logical CPU by number.
    Ticks {
        total: CpuTicks,
        per_cpu: Vec<(u32, CpuTicks)>,
        /// Ticks per second.
        ticks_per_second: u64,
    },
    /// Busy fraction since the previous reading, 0 to 1 (other platforms: no split by mode).
    Usage {
        total: f64,
        per_cpu: Vec<(u32, f64)>,
    },
}

impl Cpu {
    /// Number of logical CPUs seen.
    pub(crate) fn logical_count(&self) -> usize {
        match self {
            Cpu::Ticks { per_cpu, .. } => per_cpu.len(),
            Cpu::Usage { per_cpu, .. } => per_cpu.len(),
        }
    }
}

/// Memory and swap, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Memory {
    pub(crate) total: u64,
    pub(crate) free: u64,
    /// `MemAvailable` (Linux 3.14+) or the platform's equivalent.
    pub(crate) available: Option<u64>,
    pub(crate) buffers: Option<u64>,
    /// Page cache plus reclaimable slab, as `free(1)` counts it.
    pub(crate) cached: Option<u64>,
    pub(crate) swap_total: u64,
    pub(crate) swap_free: u64,
}

impl Memory {
    /// Memory in use: `total - available` where the OS estimates what is available, else
    /// `total - free - buffers - cached`.
    pub(crate) fn used(&self) -> u64 {
        match self.available {
            Some(a) => self.total.saturating_sub(a),
            None => self
                .total
                .saturating_sub(self.free)
                .saturating_sub(self.buffers.unwrap_or(0))
                .saturating_sub(self.cached.unwrap_or(0)),
        }
    }
}

/// One mount: a line of `/proc/self/mounts`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mount {
    pub(crate) device: String,
    pub(crate) mountpoint: String,
    pub(crate) fs_type: String,
    /// `rw` or `ro`.
    pub(crate) mode: &'static str,
}

/// One mounted filesystem.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Filesystem {
    pub(crate) mount: Mount,
    /// `None` when the sizes could not be read this time (the series keep their values).
    pub(crate) sizes: Option<FsSizes>,
}

/// Sizes of a filesystem in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct FsSizes {
    pub(crate) total: u64,
    /// Free space, including the blocks reserved for root.
    pub(crate) free: u64,
    /// Free space available to unprivileged users.
    pub(crate) available: u64,
}

impl FsSizes {
    /// `[used, free, reserved]` (free meaning available to unprivileged users): they add up to
    /// `total`.
    pub(crate) fn states(&self) -> [u64; 3] {
        let free = self.free.min(self.total);
        let available = self.available.min(free);
        [self.total - free, available, free - available]
    }
}

/// Cumulative IO of one block device.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct DiskIo {
    pub(crate) name: String,
    pub(crate) read_bytes: u64,
    pub(crate) write_bytes: u64,
    /// Completed operations; `None` where the platform does not say.
    pub(crate) ops: Option<DiskOps>,
}

/// A thing a reading lists by name (a block device, a network interface).
pub(crate) trait Listed {
    fn name(&self) -> &String;
}

impl Listed for DiskIo {
    fn name(&self) -> &String {
        &self.name
    }
}

/// Operation counts and times of one block device (Linux `/proc/diskstats`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct DiskOps {
    pub(crate) reads: u64,
    pub(crate) writes: u64,
    /// Milliseconds spent reading (sum over operations).
    pub(crate) read_ms: u64,
    /// Milliseconds spent writing (sum over operations).
    pub(crate) write_ms: u64,
    /// Milliseconds the device was busy.
    pub(crate) io_ms: u64,
}

/// Pressure stall information of one resource (`/proc/pressure/<resource>`): microseconds in
/// which some (or all non-idle) tasks were stalled on it, since boot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pressure {
    pub(crate) resource: &'static str,
    pub(crate) some_us: u64,
    /// `None` where the kernel gives no `full` line (CPU before Linux 5.13).
    pub(crate) full_us: Option<u64>,
}

/// Cumulative counters of one network interface.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct NetIo {
    pub(crate) name: String,
    /// `[receive, transmit]` for each.
    pub(crate) bytes: [u64; 2],
    pub(crate) packets: [u64; 2],
    pub(crate) errors: [u64; 2],
    /// `None` where the platform does not say.
    pub(crate) dropped: Option<[u64; 2]>,
}

impl Listed for NetIo {
    fn name(&self) -> &String {
        &self.name
    }
}

/// The resources with a pressure stall file: `/proc/pressure/<resource>` for the host,
/// `<resource>.pressure` in a cgroup v2 directory.
pub(crate) const PRESSURE_RESOURCES: [&str; 3] = ["cpu", "memory", "io"];

/// Parses one `/proc/pressure` file: `some avg10=0.00 avg60=0.00 avg300=0.00 total=123` and,
/// where the kernel has it, the same with `full`. `None` without a readable `some` total.
pub(crate) fn parse_pressure(resource: &'static str, text: &str) -> Option<Pressure> {
    let total = |kind: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(kind))?
            .split_whitespace()
            .find_map(|f| f.strip_prefix("total="))?
            .parse::<u64>()
            .ok()
    };
    Some(Pressure {
        resource,
        some_us: total("some")?,
        full_us: total("full"),
    })
}
