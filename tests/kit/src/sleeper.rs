//! A child process to observe: a real `sleep`, as the process and procstat collectors see one.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A child process (usually `sleep`), killed and reaped when dropped.
pub struct Sleeper(pub Child);

impl Sleeper {
    /// `sleep arg` (a number of seconds, e.g. `"30"`).
    pub fn spawn(arg: &str) -> Sleeper {
        Sleeper(Command::new("sleep").arg(arg).spawn().unwrap())
    }

    /// `sleep arg` once it has started running (waits at most 5 s): in the middle of its exec,
    /// a process has one page of a new address space and no resident memory in `stat` yet.
    pub fn spawn_running(arg: &str) -> Sleeper {
        let child = Sleeper::spawn(arg);
        let stat = format!("/proc/{}/stat", child.pid());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            // Field 24, `rss`, counted from the last `)` (the command name may hold spaces).
            let resident = std::fs::read_to_string(&stat).ok().and_then(|s| {
                let rest = &s[s.rfind(')')? + 1..];
                rest.split_whitespace().nth(24 - 3)?.parse::<u64>().ok()
            });
            if resident.is_some_and(|r| r > 0) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Kills and reaps it (nothing when it is gone already).
    pub fn kill(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The file name of process `pid`'s executable (`/proc/PID/exe`; for `sleep`, possibly a
/// multi-call binary's).
pub fn executable_name(pid: u32) -> String {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    exe.file_name().unwrap().to_string_lossy().into_owned()
}
