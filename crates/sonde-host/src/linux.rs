//! Linux: `/proc` and `/sys` read directly, plus `statvfs(2)` for filesystem sizes.
//!
//! sysinfo lacks the CPU split by mode, buffers and cache, disk operation counts and the
//! reserved blocks of filesystems, and reads each interface's counters from a dozen files
//! under `/sys/class/net`, where `/proc/net/dev` has them all in one read. So on Linux
//! everything comes from here: one read per file, into a reused buffer, parsed without
//! allocating more than the label strings.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use sonde_process::procfs::{parse_uptime, unescape_octal};

use crate::reading::Mount;
use crate::reading::{
    Cpu, CpuTicks, DiskIo, DiskOps, FsSizes, Memory, NetIo, Pressure, parse_pressure,
};

/// Reads the host's `/proc` files (or those under another root, for tests).
pub(crate) struct Procfs {
    proc: PathBuf,
    sys_block: PathBuf,
    /// The host's root as mounted in this (container's) filesystem: mounts are read from the
    /// host's init process and `statvfs` goes through this prefix.
    rootfs: Option<PathBuf>,
    buf: Vec<u8>,
    ticks_per_second: u64,
}

impl Procfs {
    pub(crate) fn new(proc: PathBuf, sys_block: PathBuf, rootfs: Option<PathBuf>) -> Self {
        Procfs {
            proc,
            sys_block,
            rootfs,
            buf: Vec::with_capacity(4096),
            ticks_per_second: sonde_process::procfs::clock_ticks_per_second(),
        }
    }

    /// Reads `/proc/<name>` into the buffer; `None` if it cannot be read. Bytes that are not
    /// UTF-8 (possible in mountpoints) become U+FFFD.
    fn read(&mut self, name: &str) -> Option<Cow<'_, str>> {
        self.buf.clear();
        File::open(self.proc.join(name))
            .ok()?
            .read_to_end(&mut self.buf)
            .ok()?;
        Some(String::from_utf8_lossy(&self.buf))
    }

    /// `/proc/stat`: CPU ticks and the number of processes created since boot.
    pub(crate) fn stat(&mut self) -> Option<(Cpu, Option<u64>)> {
        let tck = self.ticks_per_second;
        parse_stat(&self.read("stat")?, tck)
    }

    pub(crate) fn meminfo(&mut self) -> Option<Memory> {
        parse_meminfo(&self.read("meminfo")?)
    }

    pub(crate) fn loadavg(&mut self) -> Option<[f64; 3]> {
        parse_loadavg(&self.read("loadavg")?)
    }

    pub(crate) fn uptime(&mut self) -> Option<f64> {
        parse_uptime(self.read("uptime")?.as_bytes())
    }

    /// Block devices and their counters. With `partitions == false`, only the devices listed
    /// in `/sys/block` (whole disks, device-mapper and md devices), when it can be read.
    pub(crate) fn diskstats(&mut self, partitions: bool) -> Option<Vec<DiskIo>> {
        let whole = if partitions {
            None
        } else {
            list_dir(&self.sys_block)
        };
        let mut disks = parse_diskstats(&self.read("diskstats")?)?;
        if let Some(whole) = whole {
            disks.retain(|d| whole.contains(&d.name));
        }
        Some(disks)
    }

    pub(crate) fn net_dev(&mut self) -> Option<Vec<NetIo>> {
        parse_net_dev(&self.read("net/dev")?)
    }

    /// `/proc/pressure/{cpu,memory,io}`; `None` when none can be read (a kernel without PSI,
    /// or with it disabled: `psi=0`).
    pub(crate) fn pressure(&mut self) -> Option<Vec<Pressure>> {
        let mut out = Vec::new();
        for resource in crate::reading::PRESSURE_RESOURCES {
            if let Some(p) = self
                .read(&format!("pressure/{resource}"))
                .and_then(|text| parse_pressure(resource, &text))
            {
                out.push(p);
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// The mounts: this process's, or with a host root the host's (those of its PID 1, as
    /// node_exporter reads them), falling back to this process's.
    pub(crate) fn mounts(&mut self) -> Option<Vec<Mount>> {
        if self.rootfs.is_some()
            && let Some(text) = self.read("1/mounts")
        {
            return Some(parse_mounts(&text));
        }
        Some(parse_mounts(&self.read("self/mounts")?))
    }

    /// Where `statvfs` finds the filesystem mounted at `mountpoint` (on the host, with a host
    /// root).
    pub(crate) fn mountpoint_path(&self, mountpoint: &str) -> PathBuf {
        match &self.rootfs {
            Some(root) => root.join(mountpoint.trim_start_matches('/')),
            None => PathBuf::from(mountpoint),
        }
    }

    /// The number of processes: the numeric entries of `/proc`.
    pub(crate) fn process_count(&self) -> Option<u64> {
        let entries = fs::read_dir(&self.proc).ok()?;
        let n = entries
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name();
                let b = name.as_encoded_bytes();
                !b.is_empty() && b.iter().all(u8::is_ascii_digit)
            })
            .count();
        Some(n as u64)
    }
}

/// Sizes of the filesystem mounted at `mountpoint`; `None` if `statvfs` fails, `Some(None)` for
/// a filesystem without blocks (a pseudo filesystem).
///
/// `statvfs` can block on a network filesystem whose server is gone (hard NFS mounts): such
/// types are excluded by default.
pub(crate) fn statvfs(mountpoint: &std::path::Path) -> Option<Option<FsSizes>> {
    let s = rustix::fs::statvfs(mountpoint).ok()?;
    let frsize = if s.f_frsize > 0 {
        s.f_frsize
    } else {
        s.f_bsize
    };
    let total = s.f_blocks.saturating_mul(frsize);
    if total == 0 {
        return Some(None);
    }
    Some(Some(FsSizes {
        total,
        free: s.f_bfree.saturating_mul(frsize),
        available: s.f_bavail.saturating_mul(frsize),
    }))
}

/// The names in a directory; `None` if it cannot be listed.
fn list_dir(dir: &Path) -> Option<HashSet<String>> {
    let entries = fs::read_dir(dir).ok()?;
    Some(
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
    )
}

/// The first `N` numbers of `fields` (0 for those missing past the first `min`); `None` when
/// one is not a number or fewer than `min` are there.
fn parse_numbers<'a, const N: usize>(
    fields: impl Iterator<Item = &'a str>,
    min: usize,
) -> Option<[u64; N]> {
    let mut v = [0u64; N];
    let mut n = 0;
    for (slot, f) in v.iter_mut().zip(fields) {
        *slot = f.parse().ok()?;
        n += 1;
    }
    (n >= min).then_some(v)
}

fn parse_ticks<'a>(fields: impl Iterator<Item = &'a str>) -> Option<CpuTicks> {
    // user nice system idle iowait irq softirq steal guest guest_nice; older kernels stop
    // earlier. Guest time is already part of user and nice.
    let v: [u64; 8] = parse_numbers(fields, 4)?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = v;
    Some([
        user,
        nice,
        system,
        idle,
        iowait,
        irq.saturating_add(softirq),
        steal,
    ])
}

/// Parses `/proc/stat`.
pub(crate) fn parse_stat(text: &str, ticks_per_second: u64) -> Option<(Cpu, Option<u64>)> {
    let mut total = None;
    let mut per_cpu = Vec::new();
    let mut created = None;
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else { continue };
        if key == "cpu" {
            total = Some(parse_ticks(fields)?);
        } else if let Some(n) = key.strip_prefix("cpu").and_then(|n| n.parse::<u32>().ok()) {
            per_cpu.push((n, parse_ticks(fields)?));
        } else if key == "processes" {
            created = fields.next().and_then(|f| f.parse().ok());
        }
    }
    Some((
        Cpu::Ticks {
            total: total?,
            per_cpu,
            ticks_per_second,
        },
        created,
    ))
}

/// Parses `/proc/meminfo` (values in kB).
pub(crate) fn parse_meminfo(text: &str) -> Option<Memory> {
    let mut total = None;
    let mut free = None;
    let mut available = None;
    let mut buffers = None;
    let mut cached = None;
    let mut reclaimable = None;
    let mut swap_total = None;
    let mut swap_free = None;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut total,
            "MemFree" => &mut free,
            "MemAvailable" => &mut available,
            "Buffers" => &mut buffers,
            "Cached" => &mut cached,
            "SReclaimable" => &mut reclaimable,
            "SwapTotal" => &mut swap_total,
            "SwapFree" => &mut swap_free,
            _ => continue,
        };
        let mut parts = rest.split_ascii_whitespace();
        let value: u64 = parts.next()?.parse().ok()?;
        let bytes = match parts.next() {
            Some("kB") => value.saturating_mul(1024),
            None => value,
            Some(_) => return None,
        };
        *slot = Some(bytes);
    }
    Some(Memory {
        total: total?,
        free: free?,
        available,
        buffers,
        cached: cached.map(|c| c.saturating_add(reclaimable.unwrap_or(0))),
        swap_total: swap_total.unwrap_or(0),
        swap_free: swap_free.unwrap_or(0),
    })
}

/// Parses `/proc/loadavg`.
pub(crate) fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut f = text.split_ascii_whitespace().map(|x| x.parse::<f64>().ok());
    let v = [f.next()??, f.next()??, f.next()??];
    v.iter().all(|x| x.is_finite() && *x >= 0.0).then_some(v)
}

/// Parses `/proc/diskstats` (sectors of 512 bytes whatever the device's sector size).
pub(crate) fn parse_diskstats(text: &str) -> Option<Vec<DiskIo>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(_major), Some(_minor), Some(name)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let n: [u64; 10] = parse_numbers(f, 10)?;
        // reads merged sectors ms | writes merged sectors ms | in-flight io_ms
        let [
            reads,
            _,
            read_sectors,
            read_ms,
            writes,
            _,
            write_sectors,
            write_ms,
            _,
            io_ms,
        ] = n;
        out.push(DiskIo {
            name: name.to_owned(),
            read_bytes: read_sectors.saturating_mul(512),
            write_bytes: write_sectors.saturating_mul(512),
            ops: Some(DiskOps {
                reads,
                writes,
                read_ms,
                write_ms,
                io_ms,
            }),
        });
    }
    Some(out)
}

/// Parses `/proc/net/dev`.
pub(crate) fn parse_net_dev(text: &str) -> Option<Vec<NetIo>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || name.contains('|') {
            continue;
        }
        let mut n = [0u64; 16];
        let mut got = 0;
        for (slot, x) in n.iter_mut().zip(rest.split_ascii_whitespace()) {
            *slot = x.parse().ok()?;
            got += 1;
        }
        if got < 12 {
            return None;
        }
        // receive: bytes packets errs drop fifo frame compressed multicast
        // transmit: bytes packets errs drop fifo colls carrier compressed
        out.push(NetIo {
            name: name.to_owned(),
            bytes: [n[0], n[8]],
            packets: [n[1], n[9]],
            errors: [n[2], n[10]],
            dropped: Some([n[3], n[11]]),
        });
    }
    Some(out)
}

/// Parses `/proc/self/mounts` (fstab format, with octal escapes in paths).
pub(crate) fn parse_mounts(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(device), Some(mountpoint), Some(fs_type), options) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let ro = options.is_some_and(|o| o.split(',').any(|x| x == "ro"));
        out.push(Mount {
            device: unescape_octal(device),
            mountpoint: unescape_octal(mountpoint),
            fs_type: fs_type.to_owned(),
            mode: if ro { "ro" } else { "rw" },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat() {
        let text = "cpu  100 5 50 1000 20 3 4 2 7 1\n\
                    cpu0 60 5 30 500 10 2 2 1 7 1\n\
                    cpu1 40 0 20 500 10 1 2 1 0 0\n\
                    intr 1 2 3\nctxt 99\nbtime 1700000000\nprocesses 4242\n\
                    procs_running 2\nprocs_blocked 0\n";
        let (cpu, created) = parse_stat(text, 100).unwrap();
        assert_eq!(created, Some(4242));
        let Cpu::Ticks {
            total,
            per_cpu,
            ticks_per_second,
        } = cpu
        else {
            panic!("ticks expected")
        };
        assert_eq!(ticks_per_second, 100);
        assert_eq!(total, [100, 5, 50, 1000, 20, 7, 2]);
        assert_eq!(per_cpu.len(), 2);
        assert_eq!(per_cpu[1], (1, [40, 0, 20, 500, 10, 3, 1]));
        // An old kernel with only four columns.
        let (old, _) = parse_stat("cpu 1 2 3 4\ncpu0 1 2 3 4\n", 100).unwrap();
        assert!(matches!(
            old,
            Cpu::Ticks {
                total: [1, 2, 3, 4, 0, 0, 0],
                ..
            }
        ));
        assert_eq!(parse_stat("", 100), None);
        assert_eq!(parse_stat("cpu 1 x 3 4\n", 100), None);
        assert_eq!(parse_stat("cpu 1 2\n", 100), None);
        assert_eq!(parse_stat("garbage\n", 100), None);
    }

    #[test]
    fn parses_meminfo() {
        let text = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    600 kB\n\
                    Buffers:          50 kB\nCached:          300 kB\nSwapCached: 0 kB\n\
                    SReclaimable:     20 kB\nSwapTotal:       200 kB\nSwapFree:        150 kB\n\
                    HugePages_Total:   0\n";
        let m = parse_meminfo(text).unwrap();
        assert_eq!(m.total, 1_024_000);
        assert_eq!(m.free, 102_400);
        assert_eq!(m.available, Some(614_400));
        assert_eq!(m.buffers, Some(51_200));
        assert_eq!(m.cached, Some(320 * 1024));
        assert_eq!((m.swap_total, m.swap_free), (204_800, 153_600));
        assert_eq!(m.used(), 400 * 1024);
        // Without MemAvailable (before Linux 3.14): total - free - buffers - cached.
        let old =
            parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 300 kB\n")
                .unwrap();
        assert_eq!(old.used(), 550 * 1024);
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: x kB\nMemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo(""), None);
    }

    #[test]
    fn parses_loadavg() {
        assert_eq!(
            parse_loadavg("0.52 0.58 0.59 2/1234 5678\n"),
            Some([0.52, 0.58, 0.59])
        );
        assert_eq!(parse_loadavg("0.52 0.58"), None);
        assert_eq!(parse_loadavg("NaN 1 1"), None);
    }

    #[test]
    fn parses_diskstats() {
        let text = "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n \
                    254       0 vda 1795603 46546 56203554 3471311 92165 216870 83686216 347635 0 113548 3833018 92055 58 36214344 13941 2680 128\n \
                    8 1 sda1 10 0 20 5 3 0 8 2 0 6 7\n";
        let d = parse_diskstats(text).unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d[1].name, "vda");
        assert_eq!(d[1].read_bytes, 56_203_554 * 512);
        assert_eq!(d[1].write_bytes, 83_686_216 * 512);
        assert_eq!(
            d[1].ops,
            Some(DiskOps {
                reads: 1_795_603,
                writes: 92_165,
                read_ms: 3_471_311,
                write_ms: 347_635,
                io_ms: 113_548,
            })
        );
        assert_eq!(d[2].name, "sda1");
        assert_eq!(parse_diskstats("8 0 sda 1 2 3\n"), None);
        assert_eq!(parse_diskstats("8 0 sda 1 2 3 4 5 6 7 8 9 x 11\n"), None);
        assert_eq!(parse_diskstats("").unwrap(), vec![]);
    }

    #[test]
    fn parses_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                    lo: 62535351118 1430631    0    0    0     0          0         0 62535351118 1430631    0    0    0     0       0          0\n  \
                    eth0: 830908746   48713    3    4    0     0          0         0  2534548   26323    5    6    0     0       0          0\n";
        let n = parse_net_dev(text).unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].name, "lo");
        assert_eq!(n[0].bytes, [62_535_351_118, 62_535_351_118]);
        assert_eq!(n[1].name, "eth0");
        assert_eq!(n[1].bytes, [830_908_746, 2_534_548]);
        assert_eq!(n[1].packets, [48_713, 26_323]);
        assert_eq!(n[1].errors, [3, 5]);
        assert_eq!(n[1].dropped, Some([4, 6]));
        assert_eq!(parse_net_dev("eth0: 1 2 3\n"), None);
        assert_eq!(parse_net_dev("").unwrap(), vec![]);
    }

    #[test]
    fn parses_pressure() {
        let cpu = "some avg10=4.78 avg60=3.12 avg300=7.52 total=2246595705\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(
            parse_pressure("cpu", cpu),
            Some(Pressure {
                resource: "cpu",
                some_us: 2_246_595_705,
                full_us: Some(0)
            })
        );
        // Before Linux 5.13 the CPU file has no `full` line.
        let old = "some avg10=0.00 avg60=0.00 avg300=0.00 total=42\n";
        assert_eq!(parse_pressure("cpu", old).unwrap().full_us, None);
        for bad in ["", "garbage", "some total=x", "full avg10=0 total=5"] {
            assert_eq!(parse_pressure("io", bad), None, "{bad:?}");
        }
    }

    #[test]
    fn parses_mounts() {
        let text = "/dev/vda / ext4 rw,relatime 0 0\n\
                    proc /proc proc rw,relatime 0 0\n\
                    /dev/sdb1 /mnt/my\\040disk vfat ro,nosuid 0 0\n\
                    short line\n";
        let m = parse_mounts(text);
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[0],
            Mount {
                device: "/dev/vda".into(),
                mountpoint: "/".into(),
                fs_type: "ext4".into(),
                mode: "rw",
            }
        );
        assert_eq!(m[2].mountpoint, "/mnt/my disk");
        assert_eq!(m[2].mode, "ro");
    }

    #[test]
    fn reads_this_machine() {
        let mut p = Procfs::new("/proc".into(), "/sys/block".into(), None);
        let (cpu, created) = p.stat().unwrap();
        assert!(cpu.logical_count() >= 1);
        assert!(created.unwrap() > 0);
        let m = p.meminfo().unwrap();
        assert!(m.total > 0 && m.free <= m.total);
        assert!(p.loadavg().is_some());
        assert!(p.uptime().unwrap() > 0.0);
        assert!(p.net_dev().unwrap().iter().any(|n| n.name == "lo"));
        assert!(p.diskstats(true).is_some());
        assert!(p.process_count().unwrap() >= 1);
        assert!(p.mounts().unwrap().iter().any(|m| m.mountpoint == "/"));
        let root = statvfs(Path::new("/")).unwrap().unwrap();
        assert!(root.total > 0 && root.free <= root.total && root.available <= root.free);
        assert_eq!(statvfs(Path::new("/proc")), Some(None));
        assert_eq!(statvfs(Path::new("/no/such/dir")), None);
    }
}
