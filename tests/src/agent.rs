//! Small pieces every end-to-end test of the `sonde-agent` binary needs: a child process killed
//! when the test ends (passing or not), a free UDP port for StatsD, and reading one sample off
//! a scrape.

use std::net::{SocketAddr, UdpSocket};
use std::process::Child;

/// A child process (the agent, a helper), killed and reaped on drop, so a failing assertion
/// leaves nothing running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback UDP address with a free port (bound, then released for the caller to use).
pub fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The value of the sample line that starts with `series` (name and labels, exactly as
/// exposed), if any.
pub fn sample_value(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Starts the agent binary `bin` with the configuration file `config`, its stderr in
/// `log_dir/agent.log`; killed when the returned value drops.
pub fn spawn_agent(bin: &str, config: &std::path::Path, log_dir: &std::path::Path) -> KillOnDrop {
    spawn_agent_with_env(bin, config, log_dir, &[])
}

/// [`spawn_agent`] with extra environment variables (AWS credentials for a CloudWatch test
/// endpoint, say).
pub fn spawn_agent_with_env(
    bin: &str,
    config: &std::path::Path,
    log_dir: &std::path::Path,
    env: &[(&str, &str)],
) -> KillOnDrop {
    let log = std::fs::File::create(log_dir.join("agent.log")).unwrap();
    KillOnDrop(
        std::process::Command::new(bin)
            .arg("--config")
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .envs(env.iter().copied())
            .spawn()
            .unwrap(),
    )
}

/// The body of `http://addr/metrics` when it answers 200.
pub fn scrape_metrics(addr: SocketAddr) -> Option<String> {
    crate::http::try_get(&format!("http://{addr}/metrics"))
        .filter(|r| r.status == 200)
        .map(|r| r.text())
}
