//! Linux: `/proc` read directly.
//!
//! sysinfo's public API has only the sum of user and system CPU time (in whole milliseconds)
//! and no thread count, so `/proc/<pid>/stat` has to be read anyway; the same read carries the
//! virtual and resident memory sysinfo would report (the same kernel counters it reads from
//! `statm`), and reading it alone costs a fifth of a sysinfo refresh of the process (which
//! also reads `status`, `stat`, `statm` and `/proc/uptime`: about 11 µs against 53 µs).

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::procfs::{parse_uptime, unescape_octal};

/// The fields of `/proc/<pid>/stat` this crate uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stat {
    /// Time scheduled in user mode, clock ticks (field 14, `utime`).
    pub(crate) utime: u64,
    /// Time scheduled in kernel mode, clock ticks (field 15, `stime`).
    pub(crate) stime: u64,
    /// Threads in the process (field 20, `num_threads`).
    pub(crate) threads: u64,
    /// Start time after boot, clock ticks (field 22, `starttime`): with the pid, it identifies a
    /// process across pid reuse.
    pub(crate) start_ticks: u64,
    /// Virtual memory size in bytes (field 23, `vsize`).
    pub(crate) virtual_bytes: u64,
    /// Resident set size in pages (field 24, `rss`).
    pub(crate) resident_pages: u64,
    /// Whether the process has exited and waits to be reaped (state `Z` or `X`).
    pub(crate) exited: bool,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(data: &[u8]) -> Option<Stat> {
    let close = data.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(data.get(close + 1..)?).ok()?;
    // `rest` starts at field 3 (state): field n is at index n - 3.
    let mut fields = rest.split_ascii_whitespace();
    let exited = matches!(fields.next()?, "Z" | "X" | "x");
    let mut nth = |skip: usize| fields.nth(skip).and_then(|f| f.parse::<u64>().ok());
    let utime = nth(14 - 4)?;
    let stime = nth(0)?;
    let threads = nth(20 - 16)?;
    let start_ticks = nth(22 - 21)?;
    let virtual_bytes = nth(0)?;
    let resident_pages = nth(0)?;
    Some(Stat {
        utime,
        stime,
        threads,
        start_ticks,
        virtual_bytes,
        resident_pages,
        exited,
    })
}

/// The boot time, seconds since the UNIX epoch (`btime` in `/proc/stat`), read once: process
/// start times are clock ticks after it.
pub(crate) fn boot_time() -> Option<u64> {
    static BTIME: OnceLock<Option<u64>> = OnceLock::new();
    *BTIME.get_or_init(|| {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        parse_btime(&stat)
    })
}

fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of "Max open files" in `/proc/<pid>/limits` (what `ulimit -n` and
/// `getrlimit(RLIMIT_NOFILE)` show); `None` if unlimited or absent.
pub(crate) fn parse_max_open_files(limits: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(limits).ok()?;
    let rest = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    rest.split_ascii_whitespace().next()?.parse().ok()
}

/// A cgroup memory limit file's value: `max` (v2) or anything from 2^62 bytes up (v1 writes
/// "unlimited" as `PAGE_COUNTER_MAX` pages, about 2^63) means no limit.
pub(crate) fn parse_memory_limit(data: &[u8]) -> Option<u64> {
    let v: u64 = std::str::from_utf8(data).ok()?.trim().parse().ok()?;
    (v < 1 << 62).then_some(v)
}

/// The memory limit files that bound a process, from its cgroup (`/proc/<pid>/cgroup`) and
/// the cgroup mounts this process sees (`/proc/self/mountinfo`): `memory.max` (v2) or
/// `memory.limit_in_bytes` (v1 memory controller, preferred when present, as on hybrid
/// systems), of its cgroup and each ancestor up to the mount's root, deepest first (a parent's
/// limit bounds its children). Empty when the cgroup cannot be resolved.
pub(crate) fn memory_limit_files(cgroup: &str, mountinfo: &str) -> Vec<PathBuf> {
    let mut v1 = None;
    let mut v2 = None;
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            v1 = Some(path);
        } else if id == "0" && controllers.is_empty() {
            v2 = Some(path);
        }
    }
    let (path, file, v1) = match (v1, v2) {
        (Some(p), _) => (p, "memory.limit_in_bytes", true),
        (None, Some(p)) => (p, "memory.max", false),
        (None, None) => return Vec::new(),
    };
    let is_mount = |fstype: &str, opts: &str| {
        if v1 {
            fstype == "cgroup" && opts.split(',').any(|o| o == "memory")
        } else {
            fstype == "cgroup2"
        }
    };
    for line in mountinfo.lines() {
        // id parent major:minor root mountpoint options [optional...] - fstype source super
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split_ascii_whitespace();
        let (Some(fstype), _, Some(opts)) = (r.next(), r.next(), r.next()) else {
            continue;
        };
        if !is_mount(fstype, opts) {
            continue;
        }
        let mut l = left.split_ascii_whitespace().skip(3);
        let (Some(root), Some(mountpoint)) = (l.next(), l.next()) else {
            continue;
        };
        let (root, mountpoint) = (unescape_octal(root), unescape_octal(mountpoint));
        // The cgroup path is relative to the cgroup namespace; the mount shows `root` of the
        // hierarchy at `mountpoint`.
        let Some(rel) = path.strip_prefix(root.trim_end_matches('/')) else {
            continue;
        };
        if !(rel.is_empty() || rel.starts_with('/')) {
            continue;
        }
        let base = PathBuf::from(mountpoint);
        let mut dir = base.join(rel.trim_start_matches('/'));
        let mut files = Vec::new();
        loop {
            files.push(dir.join(file));
            if dir == base || !dir.pop() || !dir.starts_with(&base) {
                break;
            }
        }
        return files;
    }
    Vec::new()
}

/// Reads one process's `/proc` files into reused buffers.
pub(crate) struct Procfs {
    stat_path: PathBuf,
    fd_path: PathBuf,
    limits_path: PathBuf,
    /// The cgroup memory limit files, resolved at install (see [`memory_limit_files`]).
    memory_limit_files: Vec<PathBuf>,
    /// Whether the process is this one: listing `/proc/self/fd` opens one descriptor of its own,
    /// which is not counted.
    is_self: bool,
    buf: Vec<u8>,
}

impl Procfs {
    pub(crate) fn new(pid: u32) -> Self {
        let dir = Path::new("/proc").join(pid.to_string());
        let cgroup = fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Procfs {
            stat_path: dir.join("stat"),
            fd_path: dir.join("fd"),
            limits_path: dir.join("limits"),
            memory_limit_files: memory_limit_files(&cgroup, &mountinfo),
            is_self: pid == std::process::id(),
            buf: Vec::with_capacity(512),
        }
    }

    fn read(path: &Path, buf: &mut Vec<u8>) -> Option<()> {
        buf.clear();
        File::open(path).ok()?.read_to_end(buf).ok()?;
        Some(())
    }

    /// `/proc/<pid>/stat`, or `None` if the process is gone (or hidden from this user).
    pub(crate) fn stat(&mut self) -> Option<Stat> {
        Self::read(&self.stat_path, &mut self.buf)?;
        parse_stat(&self.buf)
    }

    /// Seconds since boot.
    pub(crate) fn system_uptime(&mut self) -> Option<f64> {
        Self::read(Path::new("/proc/uptime"), &mut self.buf)?;
        parse_uptime(&self.buf)
    }

    /// Entries of `/proc/<pid>/fd`, or why the directory cannot be listed (`PermissionDenied`:
    /// another user's process without `CAP_SYS_PTRACE`; `NotFound`: the process is gone).
    pub(crate) fn open_fds(&self) -> Result<u64, io::ErrorKind> {
        let n = fs::read_dir(&self.fd_path).map_err(|e| e.kind())?.count() as u64;
        Ok(if self.is_self { n.saturating_sub(1) } else { n })
    }

    /// The soft limit on open files (`None`: unlimited or unreadable).
    pub(crate) fn max_open_files(&mut self) -> Option<u64> {
        Self::read(&self.limits_path, &mut self.buf)?;
        parse_max_open_files(&self.buf)
    }

    /// The lowest memory limit of the process's cgroup and its ancestors (`None`: unlimited or
    /// unreadable).
    pub(crate) fn memory_limit(&mut self) -> Option<u64> {
        let mut min: Option<u64> = None;
        for f in &self.memory_limit_files {
            if Self::read(f, &mut self.buf).is_some()
                && let Some(v) = parse_memory_limit(&self.buf)
            {
                min = Some(min.map_or(v, |m| m.min(v)));
            }
        }
        min
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line = b"4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                     250 37 0 0 20 0 7 0 123456 10485760 2560 18446744073709551615 \
                     1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            s,
            Stat {
                utime: 250,
                stime: 37,
                threads: 7,
                start_ticks: 123456,
                virtual_bytes: 10485760,
                resident_pages: 2560,
                exited: false,
            }
        );
        let zombie = b"7 (z) Z 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 99 0 0";
        assert!(parse_stat(zombie).unwrap().exited);
        assert_eq!(parse_stat(b"1 (x) S 1 2"), None);
        assert_eq!(parse_stat(b""), None);
        assert_eq!(parse_stat(b"garbage"), None);
    }

    #[test]
    fn parses_limits_and_boot_time() {
        let limits =
            b"Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max open files            1024                 524288               files     \n\
Max locked memory         8388608              8388608              bytes     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        let unlimited =
            b"Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_open_files(unlimited), None);
        assert_eq!(parse_max_open_files(b""), None);
        assert_eq!(
            parse_btime("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_btime("cpu  1 2 3\n"), None);
        assert!(boot_time().unwrap() > 1_000_000_000);
        assert_eq!(parse_memory_limit(b"268435456\n"), Some(256 << 20));
        assert_eq!(parse_memory_limit(b"max\n"), None);
        assert_eq!(parse_memory_limit(b"9223372036854771712\n"), None);
        assert_eq!(parse_memory_limit(b""), None);
    }

    /// Asserts the memory limit files found for `cgroup` (`/proc/pid/cgroup`) and `mounts`.
    fn assert_limit_files(cgroup: &str, mounts: &str, expected: &[&str]) {
        let expected: Vec<PathBuf> = expected.iter().map(PathBuf::from).collect();
        assert_eq!(memory_limit_files(cgroup, mounts), expected);
    }

    #[test]
    fn resolves_cgroup_memory_limit_files() {
        let v2 = "0::/system.slice/nginx.service\n";
        let mounts = "24 1 0:21 / /proc rw - proc proc rw\n\
                      30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_limit_files(
            v2,
            mounts,
            &[
                "/sys/fs/cgroup/system.slice/nginx.service/memory.max",
                "/sys/fs/cgroup/system.slice/memory.max",
                "/sys/fs/cgroup/memory.max",
            ],
        );
        // cgroup v1 (and hybrid: the memory controller on v1 wins), one mount per controller.
        let v1 = "9:pids:/\n4:memory:/docker/abc\n0::/\n";
        let mounts = "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                      35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_limit_files(
            v1,
            mounts,
            &[
                "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory/docker/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            ],
        );
        // A container without a cgroup namespace: the mount shows the container's own cgroup.
        let mounts = "35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n";
        assert_limit_files(v1, mounts, &["/sys/fs/cgroup/memory/memory.limit_in_bytes"]);
        // Escaped mount points; nothing mounted; no cgroup file.
        let mounts = "30 23 0:26 / /my\\040cgroup rw - cgroup2 cgroup2 rw\n";
        assert_limit_files("0::/\n", mounts, &["/my cgroup/memory.max"]);
        assert!(memory_limit_files(v2, "").is_empty());
        assert!(memory_limit_files("", mounts).is_empty());
        let other = "35 31 0:32 /other /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n";
        assert!(memory_limit_files(v1, other).is_empty());
    }

    #[test]
    fn reads_this_process() {
        let mut p = Procfs::new(std::process::id());
        let s = p.stat().unwrap();
        assert!(s.threads >= 1);
        assert!(!s.exited);
        // The same counters sysinfo reads from statm.
        let mut sys = sysinfo::System::new().unwrap();
        let r = crate::sample::sysinfo_reading(
            &mut sys,
            sysinfo::Pid::from_u32(std::process::id()),
            false,
            false,
        )
        .unwrap();
        let rss = s.resident_pages * crate::procfs::page_size();
        assert!(
            rss.abs_diff(r.resident_bytes) <= 1 << 20,
            "{rss} vs {}",
            r.resident_bytes
        );
        assert!(s.virtual_bytes.abs_diff(r.virtual_bytes) <= 16 << 20);
        assert!(p.system_uptime().unwrap() > 0.0);
        assert!(p.open_fds().unwrap() >= 3);
        assert!(p.max_open_files().unwrap() >= 3);
        assert!(Procfs::new(u32::MAX).stat().is_none());
        assert_eq!(
            Procfs::new(u32::MAX).open_fds(),
            Err(io::ErrorKind::NotFound)
        );
    }
}
