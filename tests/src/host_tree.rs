//! A prepared host tree for host-root tests: what an agent in a container sees at `/host` when
//! the host's `/` is mounted there: `proc` files with known values, the host's mounts (its PID
//! 1's) next to different ones of the container, `sys/block`, and one mounted directory.

use std::path::{Path, PathBuf};

use sonde_testkit::procfs;

use crate::TempDir;

/// The tree; removed on drop.
pub struct HostTree {
    dir: TempDir,
}

impl HostTree {
    /// `MemTotal` 4000 kB, load average 3.25, one disk `vdz`, one interface `eth9`, the host's
    /// one filesystem `/dev/vdz` on `/data` (the container's own mounts are `/` and `/container`).
    pub fn new() -> HostTree {
        let dir = TempDir::new("host-root");
        for d in [
            "proc/net",
            "proc/self",
            "proc/1",
            "proc/pressure",
            "sys/block/vdz",
            "data",
        ] {
            std::fs::create_dir_all(dir.0.join(d)).unwrap();
        }
        let tree = HostTree { dir };
        tree.write("stat", "cpu  100 0 50 800 10 5 5 0 0 0\nprocesses 1000\n");
        tree.write("meminfo", &procfs::meminfo(4000, 1000, 3000));
        tree.write("loadavg", "3.25 0.25 0.10 1/100 42\n");
        tree.write("uptime", "1000.50 1900.00\n");
        tree.write(
            "diskstats",
            " 254 0 vdz 100 0 2000 50 10 0 400 20 0 60 70\n",
        );
        tree.write("net/dev", &procfs::net_dev(&[("eth9", 1000)]));
        tree.write("1/mounts", "/dev/vdz /data ext4 rw,relatime 0 0\n");
        tree.pressure(1_000_000, 500_000);
        tree.write(
            "self/mounts",
            "overlay / overlay rw 0 0\n/dev/vdc /container ext4 rw 0 0\n",
        );
        tree
    }

    /// The root to give as `host_root`.
    pub fn root(&self) -> &Path {
        &self.dir.0
    }

    /// Writes `proc/<name>`.
    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.0.join("proc").join(name), text).unwrap();
    }

    /// The size in bytes of the filesystem holding the tree's `data` directory, as `df` says:
    /// what the agent must report for the host's `/data`.
    pub fn data_size(&self) -> f64 {
        let out = std::process::Command::new("df")
            .args(["-B1", "--output=size"])
            .arg(self.dir.0.join("data"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Writes `proc/pressure/{cpu,memory,io}` with `some` total `some_us` and `full` total
    /// `full_us` (microseconds; the CPU file without a `full` line, as before Linux 5.13).
    pub fn pressure(&self, some_us: u64, full_us: u64) {
        let line = |kind: &str, total: u64| {
            format!("{kind} avg10=1.00 avg60=0.50 avg300=0.10 total={total}\n")
        };
        self.write("pressure/cpu", &line("some", some_us));
        for r in ["memory", "io"] {
            self.write(
                &format!("pressure/{r}"),
                &(line("some", some_us) + &line("full", full_us)),
            );
        }
    }

    /// `proc` under the root.
    pub fn proc(&self) -> PathBuf {
        self.dir.0.join("proc")
    }
}

impl Default for HostTree {
    fn default() -> Self {
        Self::new()
    }
}
