//! Fake `/proc` trees and the text of `/proc` files with known values, for tests of collectors
//! that read them (the host collector's own tests, the agent's host-root tests).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

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

/// What a fake host's `/proc` says, for [`ProcTree::new`]. The default is a plain host: one
/// CPU line (user 100, system 50, idle 800, iowait 10, irq 5, softirq 5 ticks) and 1000
/// processes created, `MemTotal` 4000 kB (1000 free, 3000 available), load average 3.25,
/// 1000.5 s up, one disk `vdz` (`254 0`: 100 reads of 2000 sectors, 10 writes of 400), one
/// interface `eth9` (1000 bytes received) and one filesystem `/dev/vdz` on `/data`.
#[derive(Clone, Copy, Debug)]
pub struct Host<'a> {
    /// `/proc/stat`.
    pub stat: &'a str,
    /// `MemTotal`, `MemFree` and `MemAvailable` in kB, for [`meminfo`].
    pub memory_kb: (u64, u64, u64),
    /// `/proc/loadavg`.
    pub loadavg: &'a str,
    /// `/proc/uptime`.
    pub uptime: &'a str,
    /// `/proc/diskstats`.
    pub diskstats: &'a str,
    /// `(interface, received bytes)`, for [`net_dev`].
    pub interfaces: &'a [(&'a str, u64)],
    /// The mounts of both `/proc/1/mounts` and `/proc/self/mounts` (on a host, PID 1 and the
    /// collector see the same ones; a test of a container overwrites one).
    pub mounts: &'a str,
}

impl Default for Host<'static> {
    fn default() -> Self {
        Host {
            stat: "cpu  100 0 50 800 10 5 5 0 0 0\nprocesses 1000\n",
            memory_kb: (4000, 1000, 3000),
            loadavg: "3.25 0.25 0.10 1/100 42\n",
            uptime: "1000.50 1900.00\n",
            diskstats: " 254 0 vdz 100 0 2000 50 10 0 400 20 0 60 70\n",
            interfaces: &[("eth9", 1000)],
            mounts: "/dev/vdz /data ext4 rw,relatime 0 0\n",
        }
    }
}

/// A fake `/proc` (and whatever a test lays next to it: `sys/block`, mounted directories) in a
/// directory the caller owns and removes.
#[derive(Debug)]
pub struct ProcTree {
    root: PathBuf,
}

impl ProcTree {
    /// Creates `proc/net`, `proc/self`, `proc/1` and `dirs` below `root` and writes `host`'s
    /// files in `proc`.
    pub fn new(root: impl Into<PathBuf>, dirs: &[&str], host: &Host<'_>) -> ProcTree {
        let tree = ProcTree { root: root.into() };
        for d in ["proc/net", "proc/self", "proc/1"].iter().chain(dirs) {
            std::fs::create_dir_all(tree.root.join(d)).unwrap();
        }
        let (total, free, available) = host.memory_kb;
        for (name, text) in [
            ("stat", host.stat),
            ("meminfo", &meminfo(total, free, available)),
            ("loadavg", host.loadavg),
            ("uptime", host.uptime),
            ("diskstats", host.diskstats),
            ("net/dev", &net_dev(host.interfaces)),
            ("1/mounts", host.mounts),
            ("self/mounts", host.mounts),
        ] {
            tree.write(name, text);
        }
        tree
    }

    /// The directory holding `proc`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `proc` under the root.
    pub fn proc(&self) -> PathBuf {
        self.root.join("proc")
    }

    /// Writes `proc/<name>`.
    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.proc().join(name), text).unwrap();
    }
}
