//! The collectors' settings as a configuration file holds them (the agent's
//! `[collectors.host]`, `[collectors.cgroups]` and `[[collectors.procstat]]`), checked as
//! start-up checks them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sonde_settings::{Expect, Problem, Settings};

use crate::{CgroupCollector, CheckedMatcher, Error, ProcessMatcher};

/// The host collector's settings.
///
/// ```
/// use sonde_host::HostConfig;
/// use sonde_settings::Settings;
///
/// let config = HostConfig { interval: std::time::Duration::from_millis(1), ..Default::default() };
/// assert!(config.validate()[0].message.starts_with("must be a duration from 100ms"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// How often the host is read (default 10 s).
    #[serde(with = "sonde_settings::duration")]
    pub interval: Duration,
    /// Per-core CPU utilization too.
    pub per_cpu: bool,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            interval: Duration::from_secs(10),
            per_cpu: false,
        }
    }
}

impl Settings for HostConfig {
    fn expect(key: &str) -> Option<Expect> {
        match key {
            "interval" => Some(Expect::interval(Duration::from_secs(10))),
            "per_cpu" => Some(Expect::Flag),
            _ => None,
        }
    }

    fn validate(&self) -> Vec<Problem> {
        Self::within("interval", self.interval)
            .into_iter()
            .collect()
    }
}

/// The cgroup collector's settings. The cgroup filesystem's default place depends on where the
/// host is mounted, so it is given to [`builder`](Self::builder) and [`check`](Self::check).
///
/// ```
/// use sonde_host::CgroupsConfig;
/// use sonde_settings::Settings;
///
/// let config = CgroupsConfig { max_cgroups: 0, ..Default::default() };
/// assert_eq!(config.validate()[0].key, "max_cgroups");
/// let missing = CgroupsConfig { root: Some("/nonexistent/cgroup".into()), ..Default::default() };
/// assert!(missing.check("/sys/fs/cgroup".as_ref()).is_some());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CgroupsConfig {
    /// Globs of further cgroup paths to report (`/system.slice/*.service`).
    pub include: Vec<String>,
    /// Report the cgroups of containers (default true).
    pub containers: bool,
    /// Most cgroups reported (default 1000).
    pub max_cgroups: usize,
    /// The cgroup filesystem (default: the caller's).
    pub root: Option<PathBuf>,
}

impl Default for CgroupsConfig {
    fn default() -> Self {
        CgroupsConfig {
            include: Vec::new(),
            containers: true,
            max_cgroups: 1000,
            root: None,
        }
    }
}

impl CgroupsConfig {
    /// The collector these settings describe, reading `root` unless they name another.
    pub fn builder(&self, default_root: &Path) -> CgroupCollector {
        let mut b = CgroupCollector::new()
            .root(self.root.as_deref().unwrap_or(default_root))
            .containers(self.containers)
            .max_cgroups(self.max_cgroups);
        for glob in &self.include {
            b = b.include(glob.clone());
        }
        b
    }

    /// What start-up checks of the cgroup filesystem (it is one), without a walk.
    pub fn check(&self, default_root: &Path) -> Option<Problem> {
        let e = self.builder(default_root).check().err()?;
        Some(Problem::new(
            "root",
            e.to_string(),
            "in a container, mount the host's / (host_root) or /sys/fs/cgroup; or set enabled = false",
        ))
    }
}

impl Settings for CgroupsConfig {
    fn expect(key: &str) -> Option<Expect> {
        match key {
            "max_cgroups" => Some(Expect::count(1..=100_000, 1000)),
            "containers" => Some(Expect::Flag),
            _ => None,
        }
    }

    fn validate(&self) -> Vec<Problem> {
        Self::within("max_cgroups", self.max_cgroups)
            .into_iter()
            .collect()
    }
}

/// One `[[collectors.procstat]]` entry: exactly one of `name`, `pattern` or `pid_file`.
///
/// ```
/// use sonde_host::ProcstatConfig;
///
/// let nginx = ProcstatConfig { name: Some("nginx".into()), ..Default::default() };
/// assert!(nginx.matcher().is_ok());
/// let bad = ProcstatConfig { pattern: Some("(".into()), ..Default::default() };
/// assert!(bad.matcher().unwrap_err().message.contains("not a valid regex"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcstatConfig {
    /// Processes whose executable is named this.
    pub name: Option<String>,
    /// Processes whose command line matches this regular expression.
    pub pattern: Option<String>,
    /// The process whose pid is in this file.
    pub pid_file: Option<PathBuf>,
}

impl ProcstatConfig {
    /// The matcher, its pattern compiled as the collector compiles it.
    pub fn matcher(&self) -> Result<CheckedMatcher, Problem> {
        let empty = |s: &str| s.is_empty() || s.contains('\0');
        let set: Vec<ProcessMatcher> = [
            self.name.clone().map(ProcessMatcher::Name),
            self.pattern.clone().map(ProcessMatcher::Pattern),
            self.pid_file.clone().map(ProcessMatcher::PidFile),
        ]
        .into_iter()
        .flatten()
        .collect();
        let blank = self.name.as_deref().is_some_and(empty)
            || self.pattern.as_deref().is_some_and(empty)
            || self
                .pid_file
                .as_ref()
                .is_some_and(|p| empty(&p.to_string_lossy()));
        let one = || {
            Problem::new(
                "",
                "an entry needs exactly one of `name`, `pattern` or `pid_file` (a non-empty string)",
                "for example name = \"nginx\"",
            )
        };
        if set.len() != 1 || blank {
            return Err(one());
        }
        let matcher = set.into_iter().next().ok_or_else(one)?;
        CheckedMatcher::new(matcher).map_err(|e| {
            let message = match e {
                Error::InvalidRegex { source, .. } => {
                    format!("the pattern is not a valid regex: {source}")
                }
                other => other.to_string(),
            };
            Problem::new(
                "pattern",
                message,
                "see https://docs.rs/regex/latest/regex/#syntax",
            )
        })
    }
}
