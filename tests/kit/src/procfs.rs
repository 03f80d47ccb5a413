//! The text of `/proc` files with known values, for tests of collectors that read a fake
//! `/proc` tree (the host collector's own tests, the agent's host-root tests).

use std::fmt::Write as _;

/// `/proc/meminfo` of a host with `total_kb`, `free_kb` and `available_kb` (kB), 100 kB of
/// buffers, 250 kB cached, 50 kB of reclaimable slab and no swap.
pub fn meminfo(total_kb: u64, free_kb: u64, available_kb: u64) -> String {
    format!(
        "MemTotal: {total_kb} kB\nMemFree: {free_kb} kB\nMemAvailable: {available_kb} kB\nBuffers: 100 kB\nCached: 250 kB\nSReclaimable: 50 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"
    )
}

/// `/proc/net/dev` with its two header lines and, per `(interface, received bytes)`, a line
/// with twice as many bytes sent, 10 packets received (1 error, 2 dropped) and 20 sent (3
/// errors, 4 dropped).
pub fn net_dev(interfaces: &[(&str, u64)]) -> String {
    let mut text = String::from(
        "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n",
    );
    for (name, bytes) in interfaces {
        // Writing to a String cannot fail.
        let _ = writeln!(
            text,
            "{name:>6}: {bytes} 10 1 2 0 0 0 0 {} 20 3 4 0 0 0 0",
            bytes * 2
        );
    }
    text
}
