//! A prepared host tree for host-root tests: what an agent in a container sees at `/host` when
//! the host's `/` is mounted there: `proc` files with known values, the host's mounts (its PID
//! 1's) next to different ones of the container, `sys/block`, and one mounted directory.

use std::path::{Path, PathBuf};

use sonde_testkit::procfs::{Host, ProcTree};

use crate::TempDir;

/// The tree; removed on drop.
pub struct HostTree {
    tree: ProcTree,
    // Owns the directory: removes it on drop.
    _dir: TempDir,
}

impl HostTree {
    /// `MemTotal` 4000 kB, load average 3.25, one disk `vdz`, one interface `eth9`, the host's
    /// one filesystem `/dev/vdz` on `/data` (the container's own mounts are `/` and `/container`).
    pub fn new() -> HostTree {
        let dir = TempDir::new("host-root");
        // The default host is the one described above.
        let proc = ProcTree::new(
            dir.0.clone(),
            &["proc/pressure", "sys/block/vdz", "data"],
            &Host::default(),
        );
        let tree = HostTree {
            tree: proc,
            _dir: dir,
        };
        tree.pressure(1_000_000, 500_000);
        tree.write(
            "self/mounts",
            "overlay / overlay rw 0 0\n/dev/vdc /container ext4 rw 0 0\n",
        );
        tree
    }

    /// The root to give as `host_root`.
    pub fn root(&self) -> &Path {
        self.tree.root()
    }

    /// Writes `proc/<name>`.
    pub fn write(&self, name: &str, text: &str) {
        self.tree.write(name, text);
    }

    /// The size in bytes of the filesystem holding the tree's `data` directory, as `df` says:
    /// what the agent must report for the host's `/data`.
    pub fn data_size(&self) -> f64 {
        let out = std::process::Command::new("df")
            .args(["-B1", "--output=size"])
            .arg(self.root().join("data"))
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
        self.tree.proc()
    }
}

impl Default for HostTree {
    fn default() -> Self {
        Self::new()
    }
}
