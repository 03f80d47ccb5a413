//! Where readings come from: `/proc` on Linux, sysinfo elsewhere (the portable path, also
//! compiled and tested on Linux).

use std::collections::HashMap;

use sysinfo::{CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, Networks, System};

use crate::reading::{Cpu, DiskIo, Filesystem, FsSizes, Memory, Mount, NetIo, Pressure};

/// Why a reading has no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// The read failed this time (counted in `sonde.collector.errors`).
    Failed,
    /// This source never has it (the series are simply not created).
    Unsupported,
}

pub(crate) type Got<T> = Result<T, Miss>;

fn got<T>(v: Option<T>) -> Got<T> {
    v.ok_or(Miss::Failed)
}

/// Reads the host.
pub(crate) enum Source {
    #[cfg(target_os = "linux")]
    Procfs(crate::linux::Procfs),
    Sysinfo(Box<Portable>),
}

impl Source {
    /// Whether CPU readings are split by mode (and carry cumulative times).
    pub(crate) fn has_cpu_modes(&self) -> bool {
        match self {
            #[cfg(target_os = "linux")]
            Source::Procfs(_) => true,
            Source::Sysinfo(_) => false,
        }
    }

    /// CPU readings and the number of processes created since boot.
    pub(crate) fn cpu(&mut self) -> Got<(Cpu, Option<u64>)> {
        match self {
            #[cfg(target_os = "linux")]
            Source::Procfs(p) => got(p.stat()),
            Source::Sysinfo(s) => Ok((s.cpu(), None)),
        }
    }

    pub(crate) fn memory(&mut self) -> Got<Memory> {
        match self {
            #[cfg(target_os = "linux")]
            Source::Procfs(p) => got(p.meminfo()),
            Source::Sysinfo(s) => s.memory(),
        }
    }

    pub(crate) fn load(&mut self) -> Got<[f64; 3]> {
        match self {
            #[cfg(target_os = "linux")]
            Source::Procfs(p) => got(p.loadavg()),
            Source::Sysinfo(_) => {
                if cfg!(windows) {
                    return Err(Miss::Unsupported);
                }
                let l = System::load_average().map_err(|_| Miss::Failed)?;
                Ok([l.one, l.five, l.fifteen])
            }
        }
    }

    pub(crate) fn uptime(&mut self) -> Got<f64> {
        match self {
            #[cfg(target_os = "linux")]
            Source::Procfs(p) => got(p.uptime()),
            Source::Sysinfo(_) => System::uptime().map(|s| s as f64).map_err(|_| Miss::Failed),
        }
    }

    /// Pressure stall information; unsupported where the kernel has none.
    pub(crate) fn pressure(&mut self) -> Got<Vec<Pressure>> {
        match self {
            #[cfg(target_os = "linux")]
            Source::Procfs(p) => p.pressure().ok_or(Miss::Unsupported),
            Source::Sysinfo(_) => Err(Miss::Unsupported),
        }
    }

    pub(crate) fn process_count(&mut self) -> Got<u64> {
        match self {
            #[cfg(target_os = "linux")]
            Source::Procfs(p) => got(p.process_count()),
            // It would take a refresh of every process.
            Source::Sysinfo(_) => Err(Miss::Unsupported),
        }
    }

    /// The filesystems `keep(type, mountpoint)` accepts, with their sizes (`None` where they
    /// could not be read). Filesystems without blocks are left out.
    pub(crate) fn filesystems(
        &mut self,
        keep: &dyn Fn(&str, &str) -> bool,
    ) -> Got<Vec<Filesystem>> {
        match self {
            #[cfg(target_os = "linux")]
            Source::Procfs(p) => {
                let mounts = p.mounts().ok_or(Miss::Failed)?;
                let mut out = Vec::new();
                for m in mounts {
                    if !keep(&m.fs_type, &m.mountpoint) {
                        continue;
                    }
                    let sizes = match crate::linux::statvfs(&p.mountpoint_path(&m.mountpoint)) {
                        Some(None) => continue,
                        Some(Some(s)) => Some(s),
                        None => None,
                    };
                    out.push(Filesystem { mount: m, sizes });
                }
                Ok(out)
            }
            Source::Sysinfo(s) => Ok(s.filesystems(keep)),
        }
    }

    pub(crate) fn disks(&mut self, partitions: bool) -> Got<Vec<DiskIo>> {
        match self {
            #[cfg(target_os = "linux")]
            Source::Procfs(p) => got(p.diskstats(partitions)),
            Source::Sysinfo(s) => Ok(s.disks()),
        }
    }

    pub(crate) fn networks(&mut self) -> Got<Vec<NetIo>> {
        match self {
            #[cfg(target_os = "linux")]
            Source::Procfs(p) => got(p.net_dev()),
            Source::Sysinfo(s) => Ok(s.networks()),
        }
    }
}

/// The portable path: sysinfo's system, disk and network readings, refreshed each time.
pub(crate) struct Portable {
    sys: System,
    disks: Disks,
    networks: Networks,
}

impl Portable {
    pub(crate) fn new() -> Result<Self, sysinfo::Error> {
        let mut sys = System::new()?;
        // Lists the CPUs and takes the first usage reading, which the next one is relative to.
        sys.refresh_cpu_list(CpuRefreshKind::nothing().with_usage());
        sys.refresh_cpu_specifics(CpuRefreshKind::nothing().with_usage());
        Ok(Portable {
            sys,
            disks: Disks::new()?,
            networks: Networks::new()?,
        })
    }

    fn cpu(&mut self) -> Cpu {
        self.sys
            .refresh_cpu_specifics(CpuRefreshKind::nothing().with_usage());
        let frac = |pct: f32| (f64::from(pct) / 100.0).clamp(0.0, 1.0);
        Cpu::Usage {
            total: frac(self.sys.global_cpu_usage()),
            per_cpu: self
                .sys
                .cpus()
                .iter()
                .enumerate()
                .map(|(i, c)| (i as u32, frac(c.usage())))
                .collect(),
        }
    }

    fn memory(&mut self) -> Got<Memory> {
        self.sys
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram().with_swap());
        let total = self.sys.total_memory();
        if total == 0 {
            return Err(Miss::Failed);
        }
        let available = self.sys.available_memory();
        Ok(Memory {
            total,
            free: self.sys.free_memory(),
            available: (available > 0).then_some(available),
            buffers: None,
            cached: None,
            swap_total: self.sys.total_swap(),
            swap_free: self.sys.free_swap(),
        })
    }

    fn filesystems(&mut self, keep: &dyn Fn(&str, &str) -> bool) -> Vec<Filesystem> {
        self.disks
            .refresh_specifics(true, DiskRefreshKind::nothing().with_storage());
        self.disks
            .iter()
            .filter_map(|d| {
                let fs_type = d.file_system().to_string_lossy().into_owned();
                let mountpoint = d.mount_point().to_string_lossy().into_owned();
                if !keep(&fs_type, &mountpoint) || d.total_space() == 0 {
                    return None;
                }
                let available = d.available_space();
                Some(Filesystem {
                    mount: Mount {
                        device: d.name().to_string_lossy().into_owned(),
                        mountpoint,
                        fs_type,
                        mode: if d.is_read_only() { "ro" } else { "rw" },
                    },
                    // sysinfo has no separate count of root-reserved blocks.
                    sizes: Some(FsSizes {
                        total: d.total_space(),
                        free: available,
                        available,
                    }),
                })
            })
            .collect()
    }

    fn disks(&mut self) -> Vec<DiskIo> {
        self.disks
            .refresh_specifics(true, DiskRefreshKind::nothing().with_io_usage());
        // One entry per device, whatever the number of mountpoints.
        let mut by_name: HashMap<String, DiskIo> = HashMap::new();
        for d in self.disks.iter() {
            let usage = d.usage();
            let name = d.name().to_string_lossy().into_owned();
            by_name.entry(name.clone()).or_insert(DiskIo {
                name,
                read_bytes: usage.total_read_bytes,
                write_bytes: usage.total_written_bytes,
                ops: None,
            });
        }
        let mut v: Vec<_> = by_name.into_values().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn networks(&mut self) -> Vec<NetIo> {
        self.networks.refresh(true);
        let mut v: Vec<NetIo> = self
            .networks
            .iter()
            .map(|(name, n)| NetIo {
                name: name.to_string_lossy().into_owned(),
                bytes: [n.total_received(), n.total_transmitted()],
                packets: [n.total_packets_received(), n.total_packets_transmitted()],
                errors: [
                    n.total_errors_on_received(),
                    n.total_errors_on_transmitted(),
                ],
                dropped: None,
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}
