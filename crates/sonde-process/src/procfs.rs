//! What every `/proc` reader of sonde needs, in one place: this crate's process readings and
//! sonde-host's host and procstat readings use the same clock tick rate, page size, uptime
//! parser and mount-path unescaping. Shared with sonde-host; not a stable API.

/// What `sysconf(_SC_CLK_TCK)` returns when the kernel does not say (`USER_HZ` is 100).
const DEFAULT_CLOCK_TICKS: u64 = 100;
/// What `sysconf(_SC_PAGESIZE)` returns when the kernel does not say.
const DEFAULT_PAGE_SIZE: u64 = 4096;

/// Clock ticks per second of the times in `/proc/stat` and `/proc/<pid>/stat` (`USER_HZ`, what
/// `sysconf(_SC_CLK_TCK)` returns; 100 in practice), from the auxiliary vector.
pub fn clock_ticks_per_second() -> u64 {
    match rustix::param::clock_ticks_per_second() {
        // 0 means the auxiliary vector lacks it; dividing by it would give infinities.
        0 => DEFAULT_CLOCK_TICKS,
        n => n,
    }
}

/// Bytes per page (what `sysconf(_SC_PAGESIZE)` returns), for resident set sizes in pages.
pub fn page_size() -> u64 {
    match u64::try_from(rustix::param::page_size()) {
        Ok(n) if n > 0 => n,
        _ => DEFAULT_PAGE_SIZE,
    }
}

/// Parses `/proc/uptime`: seconds since boot, its first field (10 ms resolution).
pub fn parse_uptime(data: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(data).ok()?;
    let v: f64 = text.split_ascii_whitespace().next()?.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// Undoes the kernel's `\ooo` escapes of space, tab, newline and backslash in the paths of
/// `/proc/<pid>/mounts` and `mountinfo` (`/my\040disk` → `/my disk`).
pub fn unescape_octal(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(oct) = b.get(i + 1..i + 4)
            && oct.iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = oct
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uptime() {
        assert_eq!(parse_uptime(b"12345.67 54321.00\n"), Some(12345.67));
        assert_eq!(parse_uptime(b""), None);
        assert_eq!(parse_uptime(b"-1 0"), None);
        assert_eq!(parse_uptime(b"inf 0"), None);
    }

    #[test]
    fn reads_the_clock_tick_rate_and_page_size() {
        let tck = clock_ticks_per_second();
        assert!((1..=10_000).contains(&tck), "{tck}");
        let page = page_size();
        assert!(page >= 4096 && page.is_power_of_two(), "{page}");
    }

    #[test]
    fn unescapes_mount_paths() {
        assert_eq!(unescape_octal("a\\011b\\134c\\0"), "a\tb\\c\\0");
        assert_eq!(unescape_octal("/my\\040disk"), "/my disk");
        // Not three octal digits, or past a byte: kept as written.
        assert_eq!(unescape_octal("\\+12\\777"), "\\+12\\777");
    }
}
