//! Linux: `/proc` read directly.
//!
//! sysinfo's public API has only the sum of user and system CPU time (in whole milliseconds)
//! and no thread count, so `/proc/<pid>/stat` has to be read anyway; the same read carries the
//! virtual and resident memory sysinfo would report (the same kernel counters it reads from
//! `statm`), and reading it alone costs a fifth of a sysinfo refresh of the process (which
//! also reads `status`, `stat`, `statm` and `/proc/uptime`: about 11 µs against 53 µs).

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The `auxv` key of the page size (`AT_PAGESZ` in `<elf.h>`).
const AT_PAGESZ: usize = 6;
/// The `auxv` key of the clock tick rate (`AT_CLKTCK` in `<elf.h>`).
const AT_CLKTCK: usize = 17;

/// Constants the kernel passes every program in its auxiliary vector, read once from
/// `/proc/self/auxv` (no `unsafe`, no libc).
struct Auxv {
    page_size: u64,
    clock_ticks: u64,
}

fn auxv() -> &'static Auxv {
    static AUXV: OnceLock<Auxv> = OnceLock::new();
    AUXV.get_or_init(|| {
        let raw = fs::read("/proc/self/auxv").unwrap_or_default();
        let get = |key, default| {
            auxv_value(&raw, key)
                .and_then(|v| u64::try_from(v).ok())
                .filter(|&v| v > 0)
                .unwrap_or(default)
        };
        Auxv {
            // What sysconf(_SC_PAGESIZE) and sysconf(_SC_CLK_TCK) return if this fails.
            page_size: get(AT_PAGESZ, 4096),
            clock_ticks: get(AT_CLKTCK, 100),
        }
    })
}

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`, what
/// `sysconf(_SC_CLK_TCK)` returns; 100 in practice).
pub(crate) fn clock_ticks_per_second() -> u64 {
    auxv().clock_ticks
}

/// Bytes per page (what `sysconf(_SC_PAGESIZE)` returns), for the resident set size.
pub(crate) fn page_size() -> u64 {
    auxv().page_size
}

/// The value of `key` in an auxiliary vector: native-endian `(key, value)` word pairs ending
/// with `AT_NULL` (0).
fn auxv_value(auxv: &[u8], key: usize) -> Option<usize> {
    const W: usize = size_of::<usize>();
    let word = |b: &[u8]| b.try_into().ok().map(usize::from_ne_bytes);
    for pair in auxv.chunks_exact(2 * W) {
        let k = word(&pair[..W])?;
        if k == 0 {
            return None;
        }
        if k == key {
            return word(&pair[W..]);
        }
    }
    None
}

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

/// Seconds since boot, from `/proc/uptime` (the first field; 10 ms resolution).
pub(crate) fn parse_uptime(data: &[u8]) -> Option<f64> {
    std::str::from_utf8(data)
        .ok()?
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Reads one process's `/proc` files into reused buffers.
pub(crate) struct Procfs {
    stat_path: PathBuf,
    fd_path: PathBuf,
    /// Whether the process is this one: listing `/proc/self/fd` opens one descriptor of its own,
    /// which is not counted.
    is_self: bool,
    buf: Vec<u8>,
}

impl Procfs {
    pub(crate) fn new(pid: u32) -> Self {
        let dir = Path::new("/proc").join(pid.to_string());
        Procfs {
            stat_path: dir.join("stat"),
            fd_path: dir.join("fd"),
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

    /// Entries of `/proc/<pid>/fd`; `None` if the directory cannot be read (another user's
    /// process without `CAP_SYS_PTRACE`, or the process is gone).
    pub(crate) fn open_fds(&self) -> Option<u64> {
        let n = fs::read_dir(&self.fd_path).ok()?.count() as u64;
        Some(if self.is_self { n.saturating_sub(1) } else { n })
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
    fn parses_uptime() {
        assert_eq!(parse_uptime(b"12345.67 54321.00\n"), Some(12345.67));
        assert_eq!(parse_uptime(b""), None);
    }

    #[test]
    fn reads_the_clock_tick_rate_from_auxv() {
        let w = size_of::<usize>();
        let mut auxv = Vec::new();
        for v in [6usize, 4096, AT_CLKTCK, 250, 0, 0] {
            auxv.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(auxv_value(&auxv, AT_CLKTCK), Some(250));
        assert_eq!(auxv_value(&auxv, 99), None);
        assert_eq!(auxv_value(&auxv[..w], AT_CLKTCK), None);
        let tck = clock_ticks_per_second();
        assert!((1..=10_000).contains(&tck), "{tck}");
        let page = page_size();
        assert!(page >= 4096 && page.is_power_of_two(), "{page}");
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
        let rss = s.resident_pages * page_size();
        assert!(
            rss.abs_diff(r.resident_bytes) <= 1 << 20,
            "{rss} vs {}",
            r.resident_bytes
        );
        assert!(s.virtual_bytes.abs_diff(r.virtual_bytes) <= 16 << 20);
        assert!(p.system_uptime().unwrap() > 0.0);
        assert!(p.open_fds().unwrap() >= 3);
        assert!(Procfs::new(u32::MAX).stat().is_none());
    }
}
