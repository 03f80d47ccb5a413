//! CPU time, CPU utilization and uptime of the current process, read through snapshots.

#![cfg(target_os = "linux")] // compared with /proc
#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use std::time::{Duration, Instant};

use common::{assert_kind_unit, burn_user_ticks, install, process_cpu_secs, value};
use sonde_core::{Kind, Temporality, Unit};
use sonde_process::{CPU_TIME, CPU_UTILIZATION, MIN_UTILIZATION_WINDOW, ProcessCollector, UPTIME};

const USER: &[(&str, &str)] = &[("cpu.mode", "user")];
const SYSTEM: &[(&str, &str)] = &[("cpu.mode", "system")];

#[test]
fn cpu_time_utilization_and_uptime_follow_the_process() {
    let (registry, process) = install(ProcessCollector::current());
    assert_eq!(process.pid(), std::process::id());
    let cpus = std::thread::available_parallelism().unwrap().get() as f64;

    let (os_user_before, _) = process_cpu_secs();
    let s0 = registry.snapshot();
    let (os_user_after, _) = process_cpu_secs();
    let t0 = Instant::now();
    let meta = &s0.family(CPU_TIME).unwrap().meta;
    assert_eq!(meta.kind(), Kind::Counter);
    assert_eq!(meta.unit(), &Unit::Seconds);
    assert_eq!(meta.label_names().collect::<Vec<_>>(), ["cpu.mode"]);
    assert_kind_unit(&s0, CPU_UTILIZATION, Kind::Gauge, Unit::Ratio);

    let user0 = value(&s0, CPU_TIME, USER);
    let system0 = value(&s0, CPU_TIME, SYSTEM);
    assert!(
        (os_user_before - 1e-9..=os_user_after + 1e-9).contains(&user0),
        "process.cpu.time user {user0} is not between /proc/self/stat's {os_user_before} and {os_user_after}"
    );
    assert!(system0 >= 0.0);
    // A test binary can be younger than the 10 ms resolution of the start time here.
    let uptime0 = value(&s0, UPTIME, &[]);
    assert!((0.0..3600.0).contains(&uptime0), "uptime {uptime0}");
    for mode in [USER, SYSTEM] {
        let u = value(&s0, CPU_UTILIZATION, mode);
        assert!((0.0..=1.0).contains(&u), "utilization {mode:?} {u}");
    }

    // ~200 ms of CPU on this thread.
    burn_user_ticks(20, Duration::from_secs(10));
    let s1 = registry.snapshot();
    let elapsed = t0.elapsed().as_secs_f64();
    let user1 = value(&s1, CPU_TIME, USER);
    assert!(user1 > 0.0);
    assert!(
        user1 - user0 >= 0.15,
        "burned ~0.2 s of user CPU, but process.cpu.time user went from {user0} to {user1}"
    );
    assert!(value(&s1, CPU_TIME, SYSTEM) >= system0);

    // One busy thread out of `cpus`: about 1/cpus, never more than ~1/cpus (clock ticks are
    // 10 ms over a window of at least 200 ms).
    let u_user = value(&s1, CPU_UTILIZATION, USER);
    let u_system = value(&s1, CPU_UTILIZATION, SYSTEM);
    assert!((0.0..=1.0).contains(&u_user) && (0.0..=1.0).contains(&u_system));
    assert!(u_user > 0.0, "a busy thread shows no user utilization");
    assert!(
        u_user + u_system <= 1.0 / cpus + 0.1,
        "utilization {u_user} + {u_system} for one busy thread of {cpus} CPUs"
    );
    let expected = (user1 - user0) / (elapsed * cpus);
    assert!(
        (u_user - expected).abs() <= 0.1,
        "utilization {u_user}, expected about {expected}"
    );

    let uptime1 = value(&s1, UPTIME, &[]);
    assert!(
        uptime1 > 0.1 && uptime1 > uptime0,
        "uptime {uptime0} then {uptime1}"
    );
    assert!(
        (uptime1 - uptime0 - elapsed).abs() < 0.1,
        "uptime went from {uptime0} to {uptime1} in {elapsed} s"
    );

    // A reading right after keeps the utilization (the window is too short to measure).
    let t = Instant::now();
    let s2 = registry.snapshot();
    if t.elapsed() < MIN_UTILIZATION_WINDOW / 2 {
        assert_eq!(value(&s2, CPU_UTILIZATION, USER), u_user);
    }
    assert!(value(&s2, CPU_TIME, USER) >= user1);

    // The counter never goes down, and a delta reader gets the CPU used in between.
    let mut deltas = registry.reader(Temporality::Delta);
    let _ = deltas.collect();
    let before = value(&registry.snapshot(), CPU_TIME, USER);
    burn_user_ticks(10, Duration::from_secs(10));
    let d = deltas.collect();
    let after = value(&registry.snapshot(), CPU_TIME, USER);
    let delta = value(&d, CPU_TIME, USER);
    assert!(delta >= 0.05, "delta {delta}");
    assert!(delta <= after - user1 + 1e-9);
    assert!(after >= before);
    let mut last = after;
    for _ in 0..20 {
        let v = value(&registry.snapshot(), CPU_TIME, USER);
        assert!(v >= last);
        last = v;
    }
    assert!(process.is_alive() && process.collect());
}
