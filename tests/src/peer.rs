//! A peer program started for a test: on a free loopback port, with a temporary directory and a
//! log file, polled until it answers, killed on drop.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{TempDir, free_addr, http, require_program, wait_for};

/// A running peer process.
pub struct Peer {
    child: Child,
    name: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its temporary directory (configuration, data, log).
    pub dir: TempDir,
}

impl Peer {
    /// Starts `program` with the arguments `args(addr, dir)` returns and waits (at most 30 s)
    /// until `GET http://addr{ready_path}` answers 200. Panics with `install` when the program is
    /// missing or exits early; a port taken between choosing it and the program binding it (by
    /// a test running alongside) is retried on another port.
    pub fn start(
        program: &'static str,
        install: &str,
        args: impl Fn(SocketAddr, &Path) -> Vec<String>,
        ready_path: &str,
    ) -> Peer {
        let ready_path = ready_path.to_owned();
        Self::start_ready_when(program, install, args, move |addr, _| {
            let url = format!("http://{addr}{ready_path}");
            std::panic::catch_unwind(|| http::get(&url, &[]).status == 200).unwrap_or(false)
        })
    }

    /// Like [`start`](Self::start), ready when `ready(addr, dir)` says so (a peer behind TLS or
    /// authentication, asked through a client of its own).
    pub fn start_ready_when(
        program: &'static str,
        install: &str,
        args: impl Fn(SocketAddr, &Path) -> Vec<String>,
        ready: impl Fn(SocketAddr, &Path) -> bool,
    ) -> Peer {
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start(program, install, &args, &ready) {
                Ok(peer) => return peer,
                Err(log) => {
                    eprintln!("{program}: its port was taken meanwhile, trying another: {log}");
                    last = log;
                }
            }
        }
        panic!("{program} found no free port in 5 attempts: {last}")
    }

    /// One start; `Err` with the log when the program could not bind its port.
    fn try_start(
        program: &'static str,
        install: &str,
        args: &impl Fn(SocketAddr, &Path) -> Vec<String>,
        ready: &impl Fn(SocketAddr, &Path) -> bool,
    ) -> Result<Peer, String> {
        let bin = require_program(program, install);
        let dir = TempDir::new(program);
        let addr = free_addr();
        let log = std::fs::File::create(dir.0.join("peer.log")).unwrap();
        let child = Command::new(bin)
            .args(args(addr, &dir.0))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {program}: {e}; {install}"));
        let mut peer = Peer {
            child,
            name: program,
            addr,
            dir,
        };
        let outcome = wait_for(
            &format!("{program} to become ready"),
            Duration::from_secs(30),
            || {
                if let Ok(Some(status)) = peer.child.try_wait() {
                    let log = peer.log();
                    if log.contains("address already in use") {
                        return Some(Err(log));
                    }
                    panic!("{program} exited with {status}: {log}");
                }
                ready(peer.addr, &peer.dir.0).then_some(Ok(()))
            },
        );
        outcome.map(|()| peer)
    }

    /// What the program logged, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("peer.log")).unwrap_or_default()
    }

    /// The program's name.
    pub fn name(&self) -> &str {
        self.name
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
