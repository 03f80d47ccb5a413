//! Container and cgroup metrics: CPU time and throttling, memory usage, limit, working set and
//! OOM kills, disk bytes and operations, and (cgroup v2) pressure stall information, per cgroup,
//! read from the cgroup filesystem (v2, v1, or both on a hybrid host).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sonde_core::{CollectorGuard, Counter, Family, Gauge, Registry, Unit};

use crate::entries::Entries;
use crate::host::{
    Cumulative, CumulativeSecs, PressureCounters, PressureFamilies, clamp_i64, collector_errors,
    family,
};
use crate::reading::{PRESSURE_RESOURCES, parse_pressure};
use crate::shared::Shared;
use crate::*;

/// The labels of every cgroup family, in this order.
pub const CGROUP_LABELS: [&str; 4] = [
    CGROUP_PATH_LABEL,
    CONTAINER_ID_LABEL,
    CONTAINER_RUNTIME_LABEL,
    K8S_POD_UID_LABEL,
];

/// How deep the walk of a hierarchy goes (Kubernetes nests pods four to five levels down).
const MAX_DEPTH: usize = 12;

/// Configures and installs the cgroup collector.
#[derive(Debug, Clone)]
#[must_use = "call .install() to start collecting"]
pub struct CgroupCollector {
    registry: Option<Registry>,
    root: PathBuf,
    include: Vec<String>,
    containers: bool,
    max_cgroups: usize,
    on_collect: bool,
}

impl Default for CgroupCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl CgroupCollector {
    /// Containers (cgroups whose path names a Docker, containerd, CRI-O or Podman container)
    /// under `/sys/fs/cgroup`, into [`Registry::global`].
    pub fn new() -> Self {
        CgroupCollector {
            registry: None,
            root: PathBuf::from("/sys/fs/cgroup"),
            include: Vec::new(),
            containers: true,
            max_cgroups: 1000,
            on_collect: false,
        }
    }

    /// Registers into `registry` instead of [`Registry::global`].
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Where the cgroup filesystem is mounted (default `/sys/fs/cgroup`; with a host root,
    /// `/host/sys/fs/cgroup`). A v2 (unified) mount, or a v1 one with the controllers as
    /// directories (`cpu,cpuacct`, `memory`, `blkio`) and a v2 one at `unified` (hybrid).
    pub fn root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = root.into();
        self
    }

    /// Also reports the cgroups whose path (from the root, starting with `/`) matches `glob`
    /// (`*` any characters but `/`, `**` any characters): `/system.slice/*.service`.
    pub fn include(mut self, glob: impl Into<String>) -> Self {
        self.include.push(glob.into());
        self
    }

    sonde_core::builder_setters! {
        /// Whether containers are reported without being included (default true).
        containers: bool;
    }

    /// Most cgroups reported (default 1000); more are counted in
    /// `sonde.collector.errors{collector="cgroup",reason="too_many_cgroups"}` and left out.
    pub fn max_cgroups(mut self, n: usize) -> Self {
        self.max_cgroups = n.max(1);
        self
    }

    sonde_core::builder_setters! {
        /// Collects on every read of the registry (a scrape) rather than only on
        /// [`CgroupMetrics::collect`].
        on_collect: bool;
    }

    /// Registers the families, reads the cgroups once (their counters count from now; a
    /// cgroup that appears later counts from its creation) and, with
    /// [`on_collect`](Self::on_collect), adds a collect hook. Errors if the root is not a
    /// cgroup filesystem.
    pub fn install(self) -> Result<CgroupMetrics, Error> {
        let hierarchies = self.hierarchies()?;
        let registry = self.registry.unwrap_or_else(|| Registry::global().clone());
        let mut state = State {
            hierarchies,
            include: self.include,
            containers: self.containers,
            max_cgroups: self.max_cgroups,
            families: Families::register(&registry)?,
            cgroups: Entries::new(),
            generation: 0,
        };
        state.collect(true);
        let shared = Shared::new(state);
        let hook = self.on_collect.then(|| shared.hook(&registry, collect));
        Ok(CgroupMetrics {
            _hook: hook.map(Arc::new),
            shared,
        })
    }
}

impl CgroupCollector {
    /// Checks what [`install`](Self::install) checks before reading anything: the root is a
    /// cgroup filesystem. Reads no cgroup and registers nothing (for a configuration check).
    pub fn check(&self) -> Result<(), Error> {
        self.hierarchies().map(|_| ())
    }

    fn hierarchies(&self) -> Result<Hierarchies, Error> {
        Hierarchies::find(&self.root).ok_or_else(|| Error::NotCgroupFs {
            root: self.root.clone(),
        })
    }
}

/// Installed cgroup metrics. Cheap to clone; collection stops with
/// [`Component::shutdown`](sonde_core::Component::shutdown) (series kept) or
/// [`uninstall`](Self::uninstall) (series removed).
#[derive(Clone)]
#[must_use = "dropping the handle stops the cgroup metrics: keep it for as long as they should be collected"]
pub struct CgroupMetrics {
    shared: Arc<Shared<State>>,
    _hook: Option<Arc<CollectorGuard>>,
}

impl std::fmt::Debug for CgroupMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CgroupMetrics").finish_non_exhaustive()
    }
}

impl CgroupMetrics {
    /// Reads every cgroup now: new ones get series, vanished ones lose theirs.
    pub fn collect(&self) {
        collect(&self.shared);
    }

    /// The cgroup paths reported now.
    pub fn paths(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .shared
            .state()
            .as_ref()
            .map(|s| s.cgroups.iter().map(|(path, _)| path.clone()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Stops collecting and removes every series it created. Idempotent.
    pub fn uninstall(&self) {
        if let Some(state) = self.shared.uninstall() {
            for (_, e) in state.cgroups.iter() {
                state.families.remove(e);
            }
        }
    }
}

crate::collector_component!(CgroupMetrics, "cgroup");

/// One reading of the cgroups, waiting for one in progress on another thread.
fn collect(shared: &Shared<State>) {
    shared.collect(true, |state| state.collect(false));
}

/// Where each controller's files are.
#[derive(Debug, Clone)]
struct Hierarchies {
    v2: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
    cpu: Option<PathBuf>,
    memory: Option<PathBuf>,
    blkio: Option<PathBuf>,
}

impl Hierarchies {
    fn find(root: &Path) -> Option<Hierarchies> {
        if root.join("cgroup.controllers").exists() {
            return Some(Hierarchies {
                v2: Some(root.to_path_buf()),
                cpuacct: None,
                cpu: None,
                memory: None,
                blkio: None,
            });
        }
        let dir = |names: &[&str]| {
            names
                .iter()
                .map(|n| root.join(n))
                .find(|p| p.is_dir() && p.join("cgroup.procs").exists())
        };
        let h = Hierarchies {
            v2: Some(root.join("unified")).filter(|p| p.join("cgroup.controllers").exists()),
            cpuacct: dir(&["cpuacct", "cpu,cpuacct", "cpuacct,cpu"]),
            cpu: dir(&["cpu", "cpu,cpuacct", "cpuacct,cpu"]),
            memory: dir(&["memory"]),
            blkio: dir(&["blkio"]),
        };
        (h.v2.is_some() || h.cpuacct.is_some() || h.memory.is_some()).then_some(h)
    }

    /// Each hierarchy once (`cpu` and `cpuacct` are often one directory).
    fn all(&self) -> impl Iterator<Item = &PathBuf> {
        let all = [
            &self.v2,
            &self.cpuacct,
            &self.cpu,
            &self.memory,
            &self.blkio,
        ];
        all.into_iter().enumerate().filter_map(move |(i, p)| {
            let p = p.as_ref()?;
            (!all[..i].iter().any(|q| q.as_ref() == Some(p))).then_some(p)
        })
    }
}

/// Who a cgroup is: the container id, runtime and pod UID its path names, when it names them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The 64-hex-digit container id.
    pub container_id: String,
    /// `docker`, `containerd`, `cri-o` or `podman`.
    pub runtime: String,
    /// The Kubernetes pod UID, from a `pod<uid>` component.
    pub pod_uid: String,
}

/// The container a cgroup path names (`/system.slice/docker-<id>.scope`,
/// `/kubepods.slice/.../cri-containerd-<id>.scope`, `/docker/<id>`, `/kubepods/burstable/pod<uid>/<id>`,
/// `crio-<id>.scope`, `libpod-<id>.scope`), or `None`.
pub fn identify(path: &str) -> Option<Identity> {
    let is_id = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let last = path.rsplit('/').next()?;
    let scoped = [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
    ];
    let (container_id, runtime) = scoped
        .iter()
        .find_map(|(prefix, runtime)| {
            // systemd driver: `crio-<id>.scope`; cgroupfs driver: `crio-<id>`.
            let id = last.strip_prefix(prefix)?;
            let id = id.strip_suffix(".scope").unwrap_or(id);
            is_id(id).then(|| (id.to_owned(), (*runtime).to_owned()))
        })
        .or_else(|| {
            // cgroupfs drivers: the bare id, under /docker/ or a Kubernetes pod.
            is_id(last).then(|| {
                let runtime = if path.contains("/docker/") {
                    "docker"
                } else {
                    ""
                };
                (last.to_owned(), runtime.to_owned())
            })
        })?;
    let pod_uid = path
        .split('/')
        .find_map(|c| {
            let c = c.strip_suffix(".slice").unwrap_or(c);
            let uid = c
                .rsplit_once("-pod")
                .map(|(_, u)| u)
                .or_else(|| c.strip_prefix("pod"))?;
            (uid.len() == 36
                && uid
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_'))
            .then(|| uid.replace('_', "-"))
        })
        .unwrap_or_default();
    Some(Identity {
        container_id,
        runtime,
        pod_uid,
    })
}

/// Whether `path` matches `glob` (`*` any characters but `/`, `**` any characters). Matched
/// from the end, one row per glob token: time grows with glob × path length, never
/// exponentially (a glob of many `**` against a deep path cannot stall a collection).
fn glob_matches(glob: &str, path: &str) -> bool {
    enum Token {
        Any,
        Segment,
        Byte(u8),
    }
    let g = glob.as_bytes();
    let mut tokens = Vec::with_capacity(g.len());
    let mut i = 0;
    while i < g.len() {
        if g[i] == b'*' {
            if g.get(i + 1) == Some(&b'*') {
                tokens.push(Token::Any);
                i += 2;
            } else {
                tokens.push(Token::Segment);
                i += 1;
            }
        } else {
            tokens.push(Token::Byte(g[i]));
            i += 1;
        }
    }
    let p = path.as_bytes();
    // after[j]: the tokens after the current one match p[j..].
    let mut after = vec![false; p.len() + 1];
    after[p.len()] = true;
    let mut row = vec![false; p.len() + 1];
    for t in tokens.iter().rev() {
        for j in (0..=p.len()).rev() {
            row[j] = match t {
                Token::Byte(c) => j < p.len() && p[j] == *c && after[j + 1],
                Token::Any => after[j] || (j < p.len() && row[j + 1]),
                Token::Segment => after[j] || (j < p.len() && p[j] != b'/' && row[j + 1]),
            };
        }
        std::mem::swap(&mut after, &mut row);
    }
    after[0]
}

struct Families {
    errors: Family<Counter>,
    cpu_time: Family<Counter<f64>>,
    throttled_periods: Family<Counter>,
    throttled_time: Family<Counter<f64>>,
    memory_usage: Family<Gauge>,
    memory_limit: Family<Gauge>,
    working_set: Family<Gauge>,
    oom_kills: Family<Counter>,
    disk_io: Family<Counter>,
    disk_operations: Family<Counter>,
    pressure: PressureFamilies,
}

impl Families {
    fn register(registry: &Registry) -> Result<Families, Error> {
        // Every family is labelled CGROUP_LABELS; the disk ones also by direction.
        let by_direction = [CGROUP_LABELS.as_slice(), &[DISK_IO_DIRECTION_LABEL]].concat();
        Ok(Families {
            errors: collector_errors(registry)?,
            cpu_time: family(
                registry,
                (CONTAINER_CPU_TIME, "CPU seconds the cgroup's tasks used."),
                Unit::Seconds,
                &CGROUP_LABELS,
            )?,
            throttled_periods: family(
                registry,
                (
                    CONTAINER_CPU_THROTTLED_PERIODS,
                    "Enforcement periods in which the cgroup hit its CPU limit.",
                ),
                Unit::Count("{period}".into()),
                &CGROUP_LABELS,
            )?,
            throttled_time: family(
                registry,
                (
                    CONTAINER_CPU_THROTTLED_TIME,
                    "Seconds the cgroup's tasks were held back by its CPU limit.",
                ),
                Unit::Seconds,
                &CGROUP_LABELS,
            )?,
            memory_usage: family(
                registry,
                (
                    CONTAINER_MEMORY_USAGE,
                    "Memory the cgroup uses, page cache included.",
                ),
                Unit::Bytes,
                &CGROUP_LABELS,
            )?,
            memory_limit: family(
                registry,
                (
                    CONTAINER_MEMORY_LIMIT,
                    "The cgroup's memory limit; no series when it has none.",
                ),
                Unit::Bytes,
                &CGROUP_LABELS,
            )?,
            working_set: family(
                registry,
                (
                    CONTAINER_MEMORY_WORKING_SET,
                    "Memory usage minus inactive file cache: what the OOM killer and the kubelet's eviction look at.",
                ),
                Unit::Bytes,
                &CGROUP_LABELS,
            )?,
            oom_kills: family(
                registry,
                (
                    CONTAINER_MEMORY_OOM_KILLS,
                    "Processes of the cgroup killed for exceeding its memory limit.",
                ),
                Unit::Count("{kill}".into()),
                &CGROUP_LABELS,
            )?,
            disk_io: family(
                registry,
                (
                    CONTAINER_DISK_IO,
                    "Bytes the cgroup read from and wrote to block devices.",
                ),
                Unit::Bytes,
                &by_direction,
            )?,
            disk_operations: family(
                registry,
                (
                    CONTAINER_DISK_OPERATIONS,
                    "Block device operations of the cgroup.",
                ),
                Unit::Count("{operation}".into()),
                &by_direction,
            )?,
            pressure: PressureFamilies::register(
                registry,
                (
                    CONTAINER_PRESSURE_WAITING,
                    "Seconds in which some of the cgroup's tasks were stalled waiting for the resource (cgroup v2 pressure, the `some` line).",
                ),
                (
                    CONTAINER_PRESSURE_STALLED,
                    "Seconds in which all of the cgroup's non-idle tasks were stalled on the resource at once (cgroup v2 pressure, the `full` line).",
                ),
                &CGROUP_LABELS,
            )?,
        })
    }
}

/// One cgroup's counters (each created at the first reading that has it).
struct Entry {
    labels: [String; 4],
    cpu: Option<CumulativeSecs>,
    throttled_periods: Option<Cumulative>,
    throttled_time: Option<CumulativeSecs>,
    oom_kills: Option<Cumulative>,
    /// Per device (`MAJ:MIN`): bytes read, written; operations read, written. One counter per
    /// device, so a device that goes does not look like a reset of the sum.
    io: HashMap<String, [Cumulative; 4]>,
    pressure: PressureCounters,
}

/// One reading of a cgroup; `None` where the file is absent or unreadable.
#[derive(Debug, Default)]
struct Reading {
    cpu_us: Option<u64>,
    throttled_periods: Option<u64>,
    throttled_us: Option<u64>,
    memory: Option<u64>,
    limit: Option<u64>,
    inactive_file: Option<u64>,
    oom_kills: Option<u64>,
    /// Per device: bytes read, written; operations read, written.
    io: Option<Vec<(String, [u64; 4])>>,
    pressure: Vec<crate::reading::Pressure>,
}

impl Reading {
    fn is_empty(&self) -> bool {
        self.cpu_us.is_none()
            && self.memory.is_none()
            && self.io.is_none()
            && self.pressure.is_empty()
            && self.throttled_periods.is_none()
    }
}

struct State {
    hierarchies: Hierarchies,
    include: Vec<String>,
    containers: bool,
    max_cgroups: usize,
    families: Families,
    cgroups: Entries<String, Entry>,
    generation: u64,
}

impl State {
    fn collect(&mut self, first: bool) {
        self.generation += 1;
        let generation = self.generation;
        let mut paths = BTreeSet::new();
        for h in self.hierarchies.all() {
            walk(h, "", 0, &mut paths);
        }
        let mut taken = 0;
        for path in paths {
            let identity = identify(&path);
            let wanted = (self.containers && identity.is_some())
                || self.include.iter().any(|g| glob_matches(g, &path));
            if !wanted {
                continue;
            }
            if taken == self.max_cgroups {
                self.families
                    .errors
                    .with(&["cgroup", "too_many_cgroups"])
                    .inc();
                break;
            }
            taken += 1;
            let reading = self.read(&path);
            if reading.is_empty() {
                // Gone between the walk and the read: nothing to say. Still there: unreadable
                // (permissions, a filesystem without the controllers' files), counted and said.
                if self
                    .hierarchies
                    .all()
                    .any(|h| h.join(path.trim_start_matches('/')).is_dir())
                {
                    self.families.errors.with(&["cgroup", "read"]).inc();
                    static UNREADABLE: sonde_core::diag::RateLimit =
                        sonde_core::diag::RateLimit::new(std::time::Duration::from_secs(60));
                    if UNREADABLE.hit().is_some() {
                        sonde_core::diag::warn(format_args!(
                            "cgroup collector: nothing readable in the cgroup {path} (permissions? run the agent as root or with read access to the cgroup filesystem)"
                        ));
                    }
                }
                continue;
            }
            let id = identity.unwrap_or_default();
            let entry = self
                .cgroups
                .seen_or_insert_with(path, generation, |path| Entry {
                    labels: [path.clone(), id.container_id, id.runtime, id.pod_uid],
                    cpu: None,
                    throttled_periods: None,
                    throttled_time: None,
                    oom_kills: None,
                    io: HashMap::new(),
                    pressure: HashMap::new(),
                });
            record(&self.families, entry, &reading, first);
        }
        let families = &self.families;
        self.cgroups
            .remove_unseen(generation, |_, e| families.remove(e));
    }

    fn read(&self, path: &str) -> Reading {
        let h = &self.hierarchies;
        let file = |dir: &Option<PathBuf>, name: &str| -> Option<String> {
            let dir = dir.as_ref()?;
            std::fs::read_to_string(dir.join(path.trim_start_matches('/')).join(name)).ok()
        };
        let mut r = Reading::default();
        // cgroup v2 where it has the controller's files, v1 otherwise.
        if let Some(stat) = file(&h.v2, "cpu.stat") {
            let kv = key_values(&stat);
            r.cpu_us = kv.get("usage_usec").copied();
            r.throttled_periods = kv.get("nr_throttled").copied();
            r.throttled_us = kv.get("throttled_usec").copied();
        }
        if r.cpu_us.is_none() {
            r.cpu_us = file(&h.cpuacct, "cpuacct.usage")
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(|ns| ns / 1000);
        }
        if r.throttled_periods.is_none()
            && let Some(stat) = file(&h.cpu, "cpu.stat")
        {
            let kv = key_values(&stat);
            r.throttled_periods = kv.get("nr_throttled").copied();
            r.throttled_us = kv.get("throttled_time").map(|ns| ns / 1000);
        }
        match file(&h.v2, "memory.current") {
            Some(current) => {
                r.memory = current.trim().parse().ok();
                r.limit = file(&h.v2, "memory.max").and_then(|s| s.trim().parse().ok());
                r.inactive_file = file(&h.v2, "memory.stat")
                    .and_then(|s| key_values(&s).get("inactive_file").copied());
                r.oom_kills = file(&h.v2, "memory.events")
                    .and_then(|s| key_values(&s).get("oom_kill").copied());
            }
            None => {
                r.memory =
                    file(&h.memory, "memory.usage_in_bytes").and_then(|s| s.trim().parse().ok());
                // v1 writes "no limit" as a page-rounded i64::MAX.
                r.limit = file(&h.memory, "memory.limit_in_bytes")
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .filter(|&l| l < 1 << 62);
                r.inactive_file = file(&h.memory, "memory.stat")
                    .and_then(|s| key_values(&s).get("total_inactive_file").copied());
                r.oom_kills = file(&h.memory, "memory.oom_control")
                    .and_then(|s| key_values(&s).get("oom_kill").copied());
            }
        }
        r.io = match file(&h.v2, "io.stat") {
            Some(stat) => Some(parse_io_stat_v2(&stat)),
            None => {
                let bytes =
                    file(&h.blkio, "blkio.throttle.io_service_bytes").map(|s| parse_blkio_v1(&s));
                let ops = file(&h.blkio, "blkio.throttle.io_serviced").map(|s| parse_blkio_v1(&s));
                bytes.zip(ops).map(|(bytes, ops)| {
                    bytes
                        .into_iter()
                        .map(|(dev, b)| {
                            let o = ops
                                .iter()
                                .find(|(d, _)| *d == dev)
                                .map_or([0, 0], |(_, o)| *o);
                            (dev, [b[0], b[1], o[0], o[1]])
                        })
                        .collect()
                })
            }
        };
        for resource in PRESSURE_RESOURCES {
            if let Some(p) = file(&h.v2, &format!("{resource}.pressure"))
                .and_then(|t| parse_pressure(resource, &t))
            {
                r.pressure.push(p);
            }
        }
        r
    }
}

impl Families {
    /// Removes the series of the cgroup of `e`.
    fn remove(&self, e: &Entry) {
        let f = self;
        let l: Vec<&str> = e.labels.iter().map(String::as_str).collect();
        f.cpu_time.remove(&l);
        f.throttled_periods.remove(&l);
        f.throttled_time.remove(&l);
        f.memory_usage.remove(&l);
        f.memory_limit.remove(&l);
        f.working_set.remove(&l);
        f.oom_kills.remove(&l);
        for dir in ["read", "write"] {
            let mut with = l.clone();
            with.push(dir);
            f.disk_io.remove(&with);
            f.disk_operations.remove(&with);
        }
        f.pressure.remove(&l);
    }
}

/// Records one reading; the first reading of a cgroup present at install is the counters'
/// starting point, a later cgroup's counts from its creation.
fn record(f: &Families, e: &mut Entry, r: &Reading, baseline: bool) {
    let l = &e.labels;
    let with = |extra: &'static str| {
        let mut v: Vec<&str> = l.iter().map(String::as_str).collect();
        v.push(extra);
        v
    };
    let secs =
        |slot: &mut Option<CumulativeSecs>, family: &Family<Counter<f64>>, us: Option<u64>| {
            if let Some(us) = us {
                match slot {
                    Some(c) => c.update(us),
                    None => {
                        *slot = Some(CumulativeSecs::new(
                            family.with(l),
                            us,
                            1e6,
                            false,
                            baseline,
                        ))
                    }
                }
            }
        };
    secs(&mut e.cpu, &f.cpu_time, r.cpu_us);
    secs(&mut e.throttled_time, &f.throttled_time, r.throttled_us);
    let count = |slot: &mut Option<Cumulative>, counter: Counter, total: Option<u64>| {
        if let Some(t) = total {
            match slot {
                Some(c) => c.update(t),
                None => *slot = Some(Cumulative::new(counter, t, baseline)),
            }
        }
    };
    if r.throttled_periods.is_some() {
        count(
            &mut e.throttled_periods,
            f.throttled_periods.with(l),
            r.throttled_periods,
        );
    }
    if r.oom_kills.is_some() {
        count(&mut e.oom_kills, f.oom_kills.with(l), r.oom_kills);
    }
    if let Some(m) = r.memory {
        f.memory_usage.with(l).set(clamp_i64(m));
        f.working_set
            .with(l)
            .set(clamp_i64(m.saturating_sub(r.inactive_file.unwrap_or(0))));
    }
    match r.limit {
        Some(limit) => f.memory_limit.with(l).set(clamp_i64(limit)),
        None => {
            f.memory_limit.remove(l);
        }
    }
    if let Some(devices) = &r.io {
        let families = [
            &f.disk_io,
            &f.disk_io,
            &f.disk_operations,
            &f.disk_operations,
        ];
        for (dev, totals) in devices {
            match e.io.get_mut(dev) {
                Some(counters) => {
                    for (c, t) in counters.iter_mut().zip(totals) {
                        c.update(*t);
                    }
                }
                None => {
                    let counters = std::array::from_fn(|i| {
                        let dir = if i % 2 == 0 { "read" } else { "write" };
                        Cumulative::new(families[i].with(&with(dir)), totals[i], baseline)
                    });
                    e.io.insert(dev.clone(), counters);
                }
            }
        }
        // A device gone: its counters go; the series keep what they counted.
        e.io.retain(|dev, _| devices.iter().any(|(d, _)| d == dev));
    }
    f.pressure.record(
        &mut e.pressure,
        &r.pressure,
        &l.each_ref().map(String::as_str),
        baseline,
    );
}

/// Every cgroup directory below `dir` (paths from the hierarchy's root, `/a/b`).
fn walk(dir: &Path, prefix: &str, depth: usize, out: &mut BTreeSet<String>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = format!("{prefix}/{name}");
        walk(&e.path(), &path, depth + 1, out);
        out.insert(path);
    }
}

/// `key value` lines (`cpu.stat`, `memory.stat`, `memory.events`, `memory.oom_control`).
fn key_values(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k, v.trim().parse().ok()?))
        })
        .collect()
}

/// `io.stat`: `MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. ...`: per device
/// `[rbytes, wbytes, rios, wios]`.
fn parse_io_stat_v2(text: &str) -> Vec<(String, [u64; 4])> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(dev) = fields.next().filter(|d| d.contains(':')) else {
            continue;
        };
        let mut totals = [0u64; 4];
        for field in fields {
            let Some((k, v)) = field.split_once('=') else {
                continue;
            };
            let i = match k {
                "rbytes" => 0,
                "wbytes" => 1,
                "rios" => 2,
                "wios" => 3,
                _ => continue,
            };
            totals[i] = v.parse().unwrap_or(0);
        }
        out.push((dev.to_owned(), totals));
    }
    out
}

/// `blkio.throttle.io_service_bytes` / `io_serviced`: `MAJ:MIN Read N` and `MAJ:MIN Write N`:
/// per device `[read, write]`.
fn parse_blkio_v1(text: &str) -> Vec<(String, [u64; 2])> {
    let mut out: Vec<(String, [u64; 2])> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(dev), Some(op), Some(n)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let i = match op {
            "Read" => 0,
            "Write" => 1,
            _ => continue,
        };
        let n = n.parse().unwrap_or(0);
        match out.iter_mut().find(|(d, _)| d == dev) {
            Some((_, v)) => v[i] = n,
            None => {
                let mut v = [0, 0];
                v[i] = n;
                out.push((dev.to_owned(), v));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1d2c3b4a5968778695a4b3c2d1e0f1f2e3d4c5b6a798877665544332211ff0";

    #[test]
    fn containers_are_identified_from_their_cgroup_paths() {
        let cases = [
            (format!("/system.slice/docker-{ID}.scope"), "docker", ""),
            (format!("/docker/{ID}"), "docker", ""),
            (format!("/machine.slice/libpod-{ID}.scope"), "podman", ""),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b6a5c1e_1111_4222_8333_444455556666.slice/cri-containerd-{ID}.scope"
                ),
                "containerd",
                "0b6a5c1e-1111-4222-8333-444455556666",
            ),
            (
                format!("/kubepods/burstable/pod0b6a5c1e-1111-4222-8333-444455556666/{ID}"),
                "",
                "0b6a5c1e-1111-4222-8333-444455556666",
            ),
            (format!("/kubepods.slice/crio-{ID}.scope"), "cri-o", ""),
            (
                format!("/kubepods/burstable/pod0b6a5c1e-1111-4222-8333-444455556666/crio-{ID}"),
                "cri-o",
                "0b6a5c1e-1111-4222-8333-444455556666",
            ),
        ];
        for (path, runtime, pod) in cases {
            let id = identify(&path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(id.container_id, ID, "{path}");
            assert_eq!(id.runtime, runtime, "{path}");
            assert_eq!(id.pod_uid, pod, "{path}");
        }
        let conmon = format!("/kubepods.slice/crio-conmon-{ID}.scope");
        for not in [
            "/system.slice/sshd.service",
            "/user.slice",
            "/docker/short",
            "/system.slice/docker-xyz.scope",
            // CRI-O's conmon, next to the container: not a container.
            conmon.as_str(),
            "",
        ] {
            assert_eq!(identify(not), None, "{not}");
        }
    }

    #[test]
    fn globs_match_cgroup_paths() {
        assert!(glob_matches(
            "/system.slice/*.service",
            "/system.slice/sshd.service"
        ));
        assert!(!glob_matches(
            "/system.slice/*.service",
            "/system.slice/a/b.service"
        ));
        assert!(glob_matches("/kubepods/**", "/kubepods/burstable/pod1/abc"));
        assert!(glob_matches("/sonde-test-*", "/sonde-test-42"));
        assert!(!glob_matches("/sonde-test-*", "/other"));
        assert!(glob_matches("/**/*.scope", "/a/b/docker-1.scope"));
        assert!(glob_matches("**", ""));
        assert!(!glob_matches("/a*", "/a/b"));
        assert!(glob_matches("/a**", "/a/b"));
        // Backtracking took 2^n steps here (20 `**` against 60 levels did not finish).
        let glob = format!("{}b", "/**a".repeat(20));
        let path = "/a".repeat(60);
        assert!(!glob_matches(&glob, &path));
        assert!(glob_matches(&glob, &format!("{path}b")));
    }

    /// A cgroup v2 tree written by the test: every file the collector reads, then a change, a
    /// limit removed, an unreadable cgroup and a removed one.
    #[test]
    fn a_cgroup_v2_tree_is_read_file_by_file() {
        let root = std::env::temp_dir().join(format!("sonde-cgroup-v2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let id = format!("/system.slice/docker-{ID}.scope");
        let dir = root.join(id.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(root.join("empty.slice")).unwrap();
        std::fs::write(root.join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        write(
            "cpu.stat",
            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 40\nnr_throttled 7\nthrottled_usec 350000\n",
        );
        write("memory.current", "104857600\n");
        write("memory.max", "268435456\n");
        write(
            "memory.stat",
            "anon 50000000\nfile 54857600\ninactive_file 4857600\n",
        );
        write("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
        write(
            "io.stat",
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
        );
        write(
            "cpu.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=1000000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        );

        let registry = Registry::new();
        let c = CgroupCollector::new()
            .registry(&registry)
            .root(&root)
            .include("/empty.slice")
            .install()
            .unwrap();
        assert_eq!(c.paths(), std::slice::from_ref(&id));
        let labels = [
            ("cgroup.path", id.as_str()),
            ("container.id", ID),
            ("container.runtime", "docker"),
            ("k8s.pod.uid", ""),
        ];
        let value = |name: &str, extra: &[(&str, &str)]| {
            let mut l = labels.to_vec();
            l.extend_from_slice(extra);
            registry
                .snapshot()
                .point(name, &l)
                .and_then(|p| p.number())
                .map(|n| n.as_f64())
        };
        // Present at install: the counters count from now, the gauges are as read.
        assert_eq!(value(CONTAINER_CPU_TIME, &[]), Some(0.0));
        assert_eq!(value(CONTAINER_MEMORY_USAGE, &[]), Some(104_857_600.0));
        assert_eq!(value(CONTAINER_MEMORY_LIMIT, &[]), Some(268_435_456.0));
        assert_eq!(
            value(CONTAINER_MEMORY_WORKING_SET, &[]),
            Some(100_000_000.0)
        );
        // The empty cgroup has nothing readable: counted, no series.
        let errors = |reason: &str| {
            registry
                .snapshot()
                .point(
                    COLLECTOR_ERRORS,
                    &[("collector", "cgroup"), ("reason", reason)],
                )
                .and_then(|p| p.number())
                .map(|n| n.as_f64())
        };
        assert_eq!(errors("read"), Some(1.0));

        write(
            "cpu.stat",
            "usage_usec 4000000\nnr_periods 50\nnr_throttled 9\nthrottled_usec 550000\n",
        );
        write("memory.max", "max\n");
        write("memory.events", "oom 2\noom_kill 3\n");
        write("io.stat", "8:0 rbytes=5096 wbytes=8192 rios=3 wios=2\n");
        write(
            "cpu.pressure",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=1250000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=500000\n",
        );
        c.collect();
        assert_eq!(value(CONTAINER_CPU_TIME, &[]), Some(1.5));
        assert_eq!(value(CONTAINER_CPU_THROTTLED_PERIODS, &[]), Some(2.0));
        assert_eq!(value(CONTAINER_CPU_THROTTLED_TIME, &[]), Some(0.2));
        assert_eq!(
            value(CONTAINER_MEMORY_LIMIT, &[]),
            None,
            "unlimited now: no series"
        );
        assert_eq!(value(CONTAINER_MEMORY_OOM_KILLS, &[]), Some(2.0));
        assert_eq!(
            value(CONTAINER_DISK_IO, &[("disk.io.direction", "read")]),
            Some(1000.0)
        );
        assert_eq!(
            value(CONTAINER_DISK_OPERATIONS, &[("disk.io.direction", "read")]),
            Some(2.0)
        );
        assert_eq!(
            value(CONTAINER_DISK_IO, &[("disk.io.direction", "write")]),
            Some(0.0)
        );
        assert_eq!(
            value(
                CONTAINER_PRESSURE_WAITING,
                &[("system.pressure.resource", "cpu")]
            ),
            Some(0.25)
        );
        assert_eq!(
            value(
                CONTAINER_PRESSURE_STALLED,
                &[("system.pressure.resource", "cpu")]
            ),
            Some(0.5)
        );

        // Removed: its series go.
        std::fs::remove_dir_all(&dir).unwrap();
        c.collect();
        assert!(c.paths().is_empty());
        assert_eq!(value(CONTAINER_MEMORY_USAGE, &[]), None);
        assert_eq!(value(CONTAINER_CPU_TIME, &[]), None);
        let _ = std::fs::remove_dir_all(&root);
    }

    /// Five containers and `max_cgroups(2)`: the first two (in path order) are reported, the
    /// others left out with no series, and each collection that had to leave some out counts once
    /// in `sonde.collector.errors{collector="cgroup",reason="too_many_cgroups"}`.
    #[test]
    fn cgroups_past_max_cgroups_are_counted_and_left_out() {
        let root = std::env::temp_dir().join(format!("sonde-cgroup-max-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
        let paths: Vec<String> = (0..5)
            .map(|i| format!("/system.slice/docker-{}{i}.scope", &ID[..63]))
            .collect();
        for path in &paths {
            let dir = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("memory.current"), "4096\n").unwrap();
        }
        let registry = Registry::new();
        let c = CgroupCollector::new()
            .registry(&registry)
            .root(&root)
            .max_cgroups(2)
            .install()
            .unwrap();
        let too_many = || {
            registry
                .snapshot()
                .point(
                    COLLECTOR_ERRORS,
                    &[("collector", "cgroup"), ("reason", "too_many_cgroups")],
                )
                .and_then(|p| p.number())
                .map(|n| n.as_f64())
        };
        let usage = |path: &str| {
            let id = identify(path).unwrap();
            registry
                .snapshot()
                .point(
                    CONTAINER_MEMORY_USAGE,
                    &[
                        ("cgroup.path", path),
                        ("container.id", id.container_id.as_str()),
                        ("container.runtime", "docker"),
                        ("k8s.pod.uid", ""),
                    ],
                )
                .and_then(|p| p.number())
                .map(|n| n.as_f64())
        };
        assert_eq!(c.paths(), paths[..2]);
        assert_eq!(too_many(), Some(1.0));
        c.collect();
        assert_eq!(c.paths(), paths[..2]);
        assert_eq!(too_many(), Some(2.0));
        for (i, path) in paths.iter().enumerate() {
            let expected = (i < 2).then_some(4096.0);
            assert_eq!(usage(path), expected, "{path}");
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn io_files_are_read_per_device() {
        let v2 = "8:0 rbytes=100 wbytes=200 rios=3 wios=4 dbytes=0 dios=0\n253:0 rbytes=1 wbytes=2 rios=5 wios=6\n";
        assert_eq!(
            parse_io_stat_v2(v2),
            [
                ("8:0".to_owned(), [100, 200, 3, 4]),
                ("253:0".to_owned(), [1, 2, 5, 6])
            ]
        );
        let v1 = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\n8:16 Read 1\nTotal 12289\n";
        assert_eq!(
            parse_blkio_v1(v1),
            [
                ("8:0".to_owned(), [4096, 8192]),
                ("8:16".to_owned(), [1, 0])
            ]
        );
        assert!(parse_io_stat_v2("garbage\n").is_empty());
        assert!(parse_blkio_v1("").is_empty());
    }
}
