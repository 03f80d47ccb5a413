//! Issue #14 item 5: malformed and extreme configurations against the real binary. For each,
//! `check-config` never panics (exit 0 or 2, located errors with a hint), and what it accepts
//! starts and serves `/metrics`: `check-config` agrees with start-up.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, write_file};

use sonde_tests::TempDir;

/// What `check-config` must say.
enum Expect {
    /// Exit 0, and the agent starts.
    Starts,
    /// Exit 2 with an error containing this text.
    Refused(&'static str),
}

struct Case {
    name: &'static str,
    config: Vec<u8>,
    env: Vec<(&'static str, &'static str)>,
    expect: Expect,
}

fn case(name: &'static str, config: impl Into<Vec<u8>>, expect: Expect) -> Case {
    Case {
        name,
        config: config.into(),
        env: Vec::new(),
        expect,
    }
}

/// Every listener on a free loopback port, and the slow host collector off, whatever the file
/// says (the same overrides for `check-config` and the run, so they judge the same thing).
const OVERRIDES: [(&str, &str); 5] = [
    ("SONDE_EXPORTERS_PROMETHEUS_ENABLED", "true"),
    ("SONDE_EXPORTERS_PROMETHEUS_LISTEN", "127.0.0.1:0"),
    ("SONDE_STATSD_UDP", "127.0.0.1:0"),
    ("SONDE_COLLECTORS_HOST_ENABLED", "false"),
    ("SONDE_AGENT_LOG_FORMAT", "text"),
];

fn command(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("RUST_BACKTRACE", "1");
    // Only this test's SONDE_* and OTEL_* settings.
    for (k, _) in std::env::vars() {
        if k.starts_with("SONDE_") || k.starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    // No AWS region from this machine: the cases say where a region comes from.
    cmd.env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env("AWS_CONFIG_FILE", "/nonexistent/sonde-test/aws-config");
    for (k, v) in OVERRIDES.iter().chain(env) {
        cmd.env(k, v);
    }
    cmd
}

/// Waits for `child` at most `limit`, killing it past that.
fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "did not finish within {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `check-config`; its output goes through files (a pipe nobody reads while it runs
/// would block a long report).
fn check_config(path: &Path, env: &[(&str, &str)]) -> Output {
    let out_path = path.with_extension("check.out");
    let err_path = path.with_extension("check.err");
    let child = command(&["check-config".as_ref(), path.as_os_str()], env)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let mut out = wait_output(child, Duration::from_secs(20));
    out.stdout = std::fs::read(&out_path).unwrap();
    out.stderr = std::fs::read(&err_path).unwrap();
    out
}

/// Starts the agent on `path`, waits for `/metrics` to answer, then stops it with SIGTERM.
/// Returns the log on failure.
fn starts(path: &Path, env: &[(&str, &str)], dir: &Path) -> Result<(), String> {
    let log_path = dir.join("agent.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = command(&["--config".as_ref(), path.as_os_str()], env)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(15);
    let result = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Err(format!("exited with {status} at start:\n{}", read_log()));
        }
        // The agent logs the address it bound (port 0 picks one).
        let addr = read_log()
            .lines()
            .find(|l| l.contains("sonde-agent started"))
            .and_then(|l| l.split("prometheus=\"").nth(1))
            .and_then(|s| s.split('"').next())
            .map(str::to_string);
        if let Some(addr) = addr {
            let reply = sonde_tests::http::try_get(&format!("http://{addr}/metrics"));
            break match reply {
                Some(r) if r.status == 200 && r.text().contains("sonde_agent_info") => Ok(()),
                other => Err(format!(
                    "/metrics answered {:?}:\n{}",
                    other.map(|r| r.status),
                    read_log()
                )),
            };
        }
        if Instant::now() > deadline {
            break Err(format!("never served /metrics:\n{}", read_log()));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stop = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < stop {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn cases() -> Vec<Case> {
    use Expect::*;
    let mut binary = vec![0u8; 64 * 1024];
    // A fixed pseudo-random file (xorshift), so a failure reproduces.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for b in &mut binary {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let comment = "x".repeat(10 << 20);
    let mut list = vec![
        case("empty file", "", Starts),
        case(
            "10 MB comment",
            format!("#{comment}\n[agent]\ninterval = \"10s\"\n"),
            Starts,
        ),
        case(
            "10 MB comment after a value, multibyte",
            format!("[agent]\ninterval = \"10s\" #{}\n", "é".repeat(5 << 20)),
            Starts,
        ),
        case(
            "10 MB comment then an error",
            format!("#{comment}\n[agent]\nintervall = \"10s\"\n"),
            Refused("unknown key `intervall`"),
        ),
        case(
            "arrays nested 100k deep",
            format!(
                "[resource]\na = {}{}\n",
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
            Refused("not valid TOML"),
        ),
        case(
            "inline tables nested 100k deep",
            format!(
                "[resource]\na = {}1{}\n",
                "{b=".repeat(100_000),
                "}".repeat(100_000)
            ),
            Refused("not valid TOML"),
        ),
        case(
            "invalid UTF-8",
            b"[agent]\ninterval = \"\xff\xfe\"\n".to_vec(),
            Refused("valid UTF-8"),
        ),
        case(
            "a NUL byte",
            b"[agent]\x00\ninterval = \"10s\"\n".to_vec(),
            Refused("not valid TOML"),
        ),
        case("a binary file", binary, Refused("")),
        case(
            "an integer past i64",
            "[statsd]\nqueue = 99999999999999999999999\n",
            Refused("not valid TOML"),
        ),
        case(
            "a negative queue",
            "[statsd]\nqueue = -1\n",
            Refused("`statsd.queue` must be a whole number from 1 to 65536"),
        ),
        case(
            "queue = 1e12 (a float)",
            "[statsd]\nqueue = 1e12\n",
            Refused("`statsd.queue` must be a whole number"),
        ),
        case(
            "queue = 10^12 (used to abort at start)",
            "[statsd]\nqueue = 1000000000000\n",
            Refused("`statsd.queue` must be a whole number from 1 to 65536"),
        ),
        case("queue at its maximum", "[statsd]\nqueue = 65536\n", Starts),
        case(
            "receive_buffer = 4GiB (used to become 0)",
            "[statsd]\nreceive_buffer = \"4GiB\"\n",
            Refused("`statsd.receive_buffer` must be a size from 4KiB to 1GiB"),
        ),
        case(
            "receive_buffer = 2^31 bytes",
            "[statsd]\nreceive_buffer = 2147483648\n",
            Refused("`statsd.receive_buffer` must be a size"),
        ),
        case(
            "receive_buffer at its maximum",
            "[statsd]\nreceive_buffer = \"1GiB\"\n",
            Starts,
        ),
        case(
            "a size past usize",
            "[statsd]\nreceive_buffer = \"99999999999999999999GiB\"\n",
            Refused("`statsd.receive_buffer` must be a size"),
        ),
        case(
            "interval 0s",
            "[agent]\ninterval = \"0s\"\n",
            Refused("`agent.interval` must be a duration from 100ms to 24h"),
        ),
        case(
            "interval of 31 years",
            "[agent]\ninterval = \"999999999s\"\n",
            Refused("`agent.interval` must be a duration from 100ms to 24h"),
        ),
        case(
            "interval of 100ns (the timer thread would spin)",
            "[agent]\ninterval = \"0.0001ms\"\n",
            Refused("`agent.interval` must be a duration"),
        ),
        case(
            "durations that are not numbers",
            "[agent]\ninterval = \"1e3s\"\nshutdown_timeout = \"NaNs\"\n",
            Refused("`agent.shutdown_timeout` must be a duration from 10ms to 1h"),
        ),
        case(
            "a shutdown timeout of 31 years",
            "[agent]\nshutdown_timeout = \"999999999s\"\n",
            Refused("`agent.shutdown_timeout` must be a duration from 10ms to 1h"),
        ),
        case(
            "every duration at its maximum",
            "[agent]\ninterval = \"24h\"\nshutdown_timeout = \"1s\"\n[collectors.host]\ninterval = \"24h\"\n\
             [exporters.otlp]\nendpoint = \"http://127.0.0.1:9\"\ninterval = \"24h\"\ntimeout = \"1h\"\n\
             [exporters.remote_write]\nurl = \"http://127.0.0.1:9/api/v1/write\"\ninterval = \"24h\"\n\
             [[probes.tcp]]\nname = \"far\"\naddress = \"127.0.0.1:9\"\ninterval = \"168h\"\ntimeout = \"168h\"\n",
            Starts,
        ),
        case(
            "shutdown_timeout at its maximum",
            "[agent]\nshutdown_timeout = \"1h\"\n",
            Starts,
        ),
        case(
            "every duration at its minimum",
            "[agent]\ninterval = \"100ms\"\nshutdown_timeout = \"10ms\"\n\
             [exporters.otlp]\nendpoint = \"http://127.0.0.1:9\"\ninterval = \"100ms\"\ntimeout = \"10ms\"\n\
             [[probes.tcp]]\nname = \"near\"\naddress = \"127.0.0.1:9\"\ninterval = \"10ms\"\ntimeout = \"10ms\"\n",
            Starts,
        ),
        case(
            "a probe period over 7 days (sonde-probes refused it at start)",
            "[[probes.tcp]]\nname = \"x\"\naddress = \"127.0.0.1:9\"\ninterval = \"169h\"\n",
            Refused("`interval` must be a duration from 10ms to 168h"),
        ),
        case(
            "series limits at their maximum",
            "[agent]\nmax_series_per_family = 1000000\n[statsd]\nmax_metrics = 1000000\n",
            Starts,
        ),
        case(
            "series limit 0",
            "[agent]\nmax_series_per_family = 0\n",
            Refused("`agent.max_series_per_family` must be a whole number from 1 to 1000000"),
        ),
        case(
            "series limit 10^14",
            "[agent]\nmax_series_per_family = 100000000000000\n",
            Refused("`agent.max_series_per_family` must be a whole number from 1 to 1000000"),
        ),
        case(
            "StatsD name limit 10^14",
            "[statsd]\nmax_metrics = 100000000000000\n",
            Refused("`statsd.max_metrics` must be a whole number from 1 to 1000000"),
        ),
        case(
            "unknown keys",
            "[agent]\nintervl = \"10s\"\n[nope]\n",
            Refused("did you mean `interval`?"),
        ),
        case(
            "a 1 MB unknown key",
            format!("[agent]\n{} = 1\n", "k".repeat(1 << 20)),
            // Cut to its first 64 bytes: the whole key would make a 1 MB error line.
            Refused(format!("unknown key `{}…`", "k".repeat(64)).leak()),
        ),
        case(
            "duplicate keys",
            "[statsd]\nqueue = 1\nqueue = 2\n",
            Refused("not valid TOML"),
        ),
        case(
            "duplicate tables",
            "[statsd]\nqueue = 1\n[statsd]\nmax_metrics = 2\n",
            Refused("not valid TOML"),
        ),
        case(
            "wrong types",
            "[statsd]\nenabled = \"yes\"\n[agent]\nmax_series_per_family = \"many\"\nlog_format = 1\n",
            Refused("`statsd.enabled` must be true or false"),
        ),
        case(
            "a section that is a value",
            "agent = 5\n",
            Refused("`agent` must be a table"),
        ),
        case(
            "a CloudWatch namespace under AWS/ (failed at start)",
            "[exporters.cloudwatch]\nnamespace = \"AWS/Foo\"\nregion = \"us-east-1\"\n",
            Refused("the namespace \"AWS/Foo\" is not accepted by CloudWatch"),
        ),
        case(
            "an empty EMF namespace (failed at start)",
            "[exporters.emf]\nnamespace = \"\"\n",
            Refused("the namespace \"\" is not accepted"),
        ),
        case(
            "a blank CloudWatch region (failed at start)",
            "[exporters.cloudwatch]\nnamespace = \"app\"\nregion = \" \"\n",
            Refused("`exporters.cloudwatch.region` is empty"),
        ),
        case(
            "a CloudWatch endpoint_url that is not a URL (failed on every push)",
            "[exporters.cloudwatch]\nnamespace = \"app\"\nregion = \"us-east-1\"\nendpoint_url = \"not a url\"\n",
            Refused("`not a url` is not an absolute http:// or https:// URL with a host"),
        ),
        case(
            "an OTLP endpoint that is not http(s) (failed at start)",
            "[exporters.otlp]\nendpoint = \"ftp://collector:4317\"\n",
            Refused("the OTLP endpoint must be an http:// or https:// URL"),
        ),
        case(
            "an OTLP header with a space (failed at start)",
            "[exporters.otlp]\nendpoint = \"http://127.0.0.1:9\"\nheaders = { \"bad name\" = \"v\" }\n",
            Refused("the header \"bad name\" is invalid"),
        ),
        case(
            "a scrape URL with credentials and a bearer token (two Authorization headers)",
            "[[sources.scrape]]\njob = \"a\"\nurl = \"http://u:p@127.0.0.1:9/metrics\"\nbearer_token = \"t\"\n",
            Refused("carries credentials and basic auth or a bearer token is set too"),
        ),
        case(
            "an OTLP receiver ttl of 0s (every series would go at once)",
            "[sources.otlp]\nttl = \"0s\"\n",
            Refused("`sources.otlp.ttl` must be a duration from 1s to 168h"),
        ),
        case(
            "a scrape sample_limit of 0 (nothing could ever be mirrored)",
            "[[sources.scrape]]\njob = \"a\"\nurl = \"http://127.0.0.1:9/metrics\"\nsample_limit = 0\n",
            Refused("must be a whole number from 1 to 10000000"),
        ),
        case(
            "a scrape sample_limit at its maximum",
            "[[sources.scrape]]\njob = \"a\"\nurl = \"http://127.0.0.1:9/metrics\"\nsample_limit = 10000000\n",
            Starts,
        ),
        case(
            "a remote-write URL that is not one (failed at start)",
            "[exporters.remote_write]\nurl = \"not a url\"\n",
            Refused("is not an absolute http:// or https:// URL"),
        ),
        case(
            "remote-write basic auth without a password",
            "[exporters.remote_write]\nurl = \"http://127.0.0.1:9/api/v1/write\"\nusername = \"agent\"\n",
            Refused("basic auth needs both `username` and `password`"),
        ),
        case(
            "remote-write basic auth and a bearer token together",
            "[exporters.remote_write]\nurl = \"http://127.0.0.1:9/api/v1/write\"\nusername = \"a\"\npassword = \"b\"\nbearer_token = \"c\"\n",
            Refused("one of basic_auth, bearer_token, bearer_token_file and sigv4"),
        ),
        case(
            "a remote-write bearer token file that does not exist",
            "[exporters.remote_write]\nurl = \"http://127.0.0.1:9/api/v1/write\"\nbearer_token_file = \"/nonexistent/sonde/token\"\n",
            Refused("cannot read the bearer token file /nonexistent/sonde/token"),
        ),
        case(
            "a remote-write CA file that holds no certificate",
            "[exporters.remote_write]\nurl = \"http://127.0.0.1:9/api/v1/write\"\nca_file = \"/etc/hostname\"\n",
            Refused("the CA file /etc/hostname holds no PEM certificate"),
        ),
        case(
            "a remote-write client certificate without its key",
            "[exporters.remote_write]\nurl = \"http://127.0.0.1:9/api/v1/write\"\ncert_file = \"/etc/hostname\"\n",
            Refused("mutual TLS needs both `cert_file` and `key_file`"),
        ),
        case(
            "a cgroup root that is not a cgroup filesystem",
            "[collectors.cgroups]\nenabled = true\nroot = \"/nonexistent/cgroup\"\n",
            Refused("[collectors.cgroups]: /nonexistent/cgroup is not a cgroup filesystem"),
        ),
        case(
            "an unknown resource detector",
            "[agent]\nresource_detectors = [\"ec2\", \"gce\"]\n",
            Refused("unknown resource detector `gce`"),
        ),
        case(
            "remote-write SigV4 with no region anywhere",
            "[exporters.remote_write]\nurl = \"https://mimir.example/api/v1/push\"\nsigv4 = true\n",
            Refused("SigV4: no AWS region"),
        ),
        case(
            "remote-write SigV4 and basic auth together",
            "[exporters.remote_write]\nurl = \"https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1/api/v1/remote_write\"\nsigv4 = true\nusername = \"a\"\npassword = \"b\"\n",
            Refused("one of basic_auth, bearer_token, bearer_token_file and sigv4"),
        ),
        case(
            "remote write with a tenant, headers and basic auth",
            "[exporters.remote_write]\nurl = \"http://127.0.0.1:9/api/v1/write\"\ninterval = \"24h\"\nusername = \"agent\"\npassword = \"pw\"\ntenant = \"team-a\"\nheaders = { \"X-Env\" = \"prod\" }\n",
            Starts,
        ),
        case(
            "a durable queue with an unknown fsync policy",
            "[exporters.remote_write]\nurl = \"http://127.0.0.1:9/api/v1/write\"\nqueue_dir = \"/tmp/sonde-configs-queue-fsync\"\nqueue_fsync = \"sometimes\"\n",
            Refused("unknown queue_fsync `sometimes`"),
        ),
        case(
            "a queue size without a queue directory",
            "[exporters.otlp]\nqueue_max_size = \"1GiB\"\n",
            Refused("[exporters.otlp] `queue_max_size` needs a `queue_dir`"),
        ),
        case(
            "a queue directory that cannot be created",
            "[exporters.remote_write]\nurl = \"http://127.0.0.1:9/api/v1/write\"\nqueue_dir = \"/proc/sonde-queue\"\n",
            Refused("cannot create the directory"),
        ),
        case(
            "a queue smaller than 4 KiB",
            "[exporters.remote_write]\nurl = \"http://127.0.0.1:9/api/v1/write\"\nqueue_dir = \"/tmp/sonde-configs-queue-small\"\nqueue_max_size = \"1KiB\"\n",
            Refused("`exporters.remote_write.queue_max_size` must be a size"),
        ),
        case(
            "two exporters on one queue directory",
            "[exporters.otlp]\nqueue_dir = \"/tmp/sonde-configs-queue-shared\"\n\n[exporters.remote_write]\nurl = \"http://127.0.0.1:9/api/v1/write\"\nqueue_dir = \"/tmp/sonde-configs-queue-shared\"\n",
            Refused("[exporters.remote_write] queue_dir is also [exporters.otlp]'s"),
        ),
        case(
            "remote write with a durable queue",
            format!(
                "[exporters.remote_write]\nurl = \"http://127.0.0.1:9/api/v1/write\"\ninterval = \"24h\"\nqueue_dir = \"/tmp/sonde-configs-queue-{}\"\nqueue_max_size = \"16MiB\"\nqueue_fsync = \"never\"\n",
                std::process::id()
            ),
            Starts,
        ),
        case(
            "a log filter that is not one (was silently replaced by info)",
            "[agent]\nlog_level = \"[[[\"\n",
            Refused("is not a log filter"),
        ),
        case(
            "a 200-byte unix socket path (failed at start)",
            format!("[statsd]\nunix = \"/tmp/{}\"\n", "s".repeat(200)),
            Refused("`statsd.unix` must be a path of at most 107 bytes"),
        ),
        case(
            "a mapping that refers to a missing capture (failed at start)",
            "[[statsd.mappings]]\nmatch = \"a.*\"\nname = \"b_$2\"\n",
            Refused("refers to capture $2"),
        ),
        case(
            "a procstat regex too big to compile",
            "[[collectors.procstat]]\npattern = \"a{1000}{1000}{1000}\"\n",
            Refused("the pattern is not a valid regex"),
        ),
        case(
            "a procstat entry with an empty name",
            "[[collectors.procstat]]\nname = \"\"\n",
            Refused(
                "an entry needs exactly one of `name`, `pattern` or `pid_file` (a non-empty string)",
            ),
        ),
        case(
            "probes with one name twice (failed at start)",
            "[[probes.tcp]]\nname = \"db\"\naddress = \"127.0.0.1:9\"\n\
             [[probes.tcp]]\nname = \"db\"\naddress = \"127.0.0.1:10\"\n",
            Refused("the probe name `db` is used by another probe"),
        ),
        case(
            "a probe address without a port (failed at start)",
            "[[probes.tcp]]\nname = \"db\"\naddress = \"localhost\"\n",
            Refused("invalid probe \"db\""),
        ),
        case(
            "a CloudWatch namespace starting with ':' (sonde-cloudwatch's check)",
            "[exporters.cloudwatch]\nnamespace = \":app\"\nregion = \"us-east-1\"\n",
            Refused("the namespace \":app\" is not accepted by CloudWatch"),
        ),
        case(
            "an EMF destination that is not one (parsed by sonde-cloudwatch)",
            "[exporters.emf]\nnamespace = \"app\"\ndestination = \"kafka://broker:9092\"\n",
            Refused("\"kafka://broker:9092\" is not an EMF destination"),
        ),
        case(
            "an EMF destination to a file (parsed once, used at start)",
            "[exporters.emf]\nnamespace = \"app\"\ndestination = \"file:///dev/null\"\n",
            Starts,
        ),
        case(
            "an EMF destination over UDP (parsed once, used at start)",
            "[exporters.emf]\nnamespace = \"app\"\ndestination = \"udp://127.0.0.1:9\"\n",
            Starts,
        ),
        case(
            "a procstat pattern (compiled once, used at start)",
            "[[collectors.procstat]]\npattern = \"^sonde-agent\"\n[[collectors.procstat]]\nname = \"init\"\n",
            Starts,
        ),
        case(
            "an http probe of an IPv6 literal",
            "[[probes.http]]\nname = \"api\"\nurl = \"http://[::1]:9/health?full=1\"\n",
            Starts,
        ),
        case(
            "an http probe with a method and headers (HttpProbe's own keys, now in the file)",
            "[[probes.http]]\nname = \"api\"\nurl = \"http://127.0.0.1:9/\"\nmethod = \"HEAD\"\n\
             headers = { Authorization = \"Bearer t\" }\n",
            Starts,
        ),
        case(
            "an http probe header sonde-probes refuses (Connection)",
            "[[probes.http]]\nname = \"api\"\nurl = \"http://127.0.0.1:9/\"\nheaders = { Connection = \"close\" }\n",
            Refused("invalid probe \"api\""),
        ),
        case(
            "a misspelt key in a list entry (read key by key)",
            "[[statsd.mappings]]\nmatch = \"a.*\"\nname = \"b\"\nlabel = { x = \"1\" }\n",
            Refused("unknown key `label`"),
        ),
        case(
            "an ftp probe URL (sonde-probes' parser)",
            "[[probes.http]]\nname = \"api\"\nurl = \"ftp://127.0.0.1/\"\n",
            Refused("only http:// and https:// are supported"),
        ),
        case(
            "a probe URL with user information",
            "[[probes.http]]\nname = \"api\"\nurl = \"http://u:p@127.0.0.1:9/\"\n",
            Refused("contains user information"),
        ),
        case(
            "a probe URL with port 0 (http::Uri accepts it, the probes do not)",
            "[[probes.http]]\nname = \"api\"\nurl = \"http://127.0.0.1:0/\"\n",
            Refused("port \"0\" is not a number from 1 to 65535"),
        ),
        case(
            "CRLF line endings",
            "[agent]\r\ninterval = \"10s\"\r\n[statsd]\r\nqueue = 16\r\n",
            Starts,
        ),
    ];
    list.push(Case {
        name: "queue = 10^12 from the environment",
        config: Vec::new(),
        env: vec![("SONDE_STATSD_QUEUE", "1000000000000")],
        expect: Refused("environment variable SONDE_STATSD_QUEUE: `statsd.queue` must be"),
    });
    list.push(Case {
        name: "OTLP headers from the environment as k=v pairs",
        config: b"[exporters.otlp]\nendpoint = \"http://127.0.0.1:9\"\n".to_vec(),
        env: vec![("SONDE_EXPORTERS_OTLP_HEADERS", "x-tenant=a,x-key=b")],
        expect: Starts,
    });
    list.push(Case {
        name: "OTLP headers from the environment that are not k=v",
        config: b"[exporters.otlp]\nendpoint = \"http://127.0.0.1:9\"\n".to_vec(),
        env: vec![("SONDE_EXPORTERS_OTLP_HEADERS", "x-tenant")],
        expect: Refused("an item has no `=`"),
    });
    list.push(Case {
        name: "receive_buffer = 4GiB from the environment",
        config: Vec::new(),
        env: vec![("SONDE_STATSD_RECEIVE_BUFFER", "4GiB")],
        expect: Refused("environment variable SONDE_STATSD_RECEIVE_BUFFER"),
    });
    list
}

#[test]
fn check_config_never_panics_and_agrees_with_start_up() {
    let dir = TempDir::new("configs");
    let cases = cases();
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let path = write_file(&dir, format!("case-{i}.toml"), &c.config);
        let started = Instant::now();
        let out = check_config(&path, &c.env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        let mut fail = |why: String| failures.push(format!("[{}] {why}", c.name));
        if stderr.contains("panicked") || !matches!(code, Some(0 | 2)) {
            fail(format!("check-config exited {code:?}:\n{stderr}"));
            continue;
        }
        match &c.expect {
            Expect::Refused(text) => {
                let origin = path.display().to_string();
                if code != Some(2) || !stderr.contains(text) {
                    fail(format!(
                        "expected a refusal with {text:?}, got {code:?}:\n{stderr}"
                    ));
                } else if !stderr.lines().all(|l| {
                    // Every error is located (file:line:column or its variable) with a hint.
                    l.starts_with("  hint: ")
                        || l.ends_with("in the configuration")
                        || l.starts_with(&format!("{origin}:"))
                        || l.starts_with("environment variable SONDE_")
                }) || !stderr.contains("hint: ")
                {
                    fail(format!("an error without a location or a hint:\n{stderr}"));
                }
            }
            Expect::Starts => {
                if code != Some(0) {
                    fail(format!("check-config refused it:\n{stderr}"));
                } else if let Err(e) = starts(&path, &c.env, &dir.0) {
                    fail(format!("check-config accepted it but the agent {e}"));
                }
            }
        }
        eprintln!("{:>5} ms  {}", started.elapsed().as_millis(), c.name);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The checks the agent takes from the libraries: `check-config` refuses with the library's own
/// message, and start-up refuses the same file with the same output.
#[test]
fn check_config_and_start_up_refuse_with_the_librarys_message() {
    let dir = TempDir::new("library-checks");
    let probe_error = |url: &str| {
        sonde_probes::Prober::new(
            &sonde_core::Registry::new(),
            vec![sonde_probes::HttpProbe::new("api", url).into()],
        )
        .unwrap_err()
        .to_string()
    };
    let cases = [
        (
            "[exporters.cloudwatch]\nnamespace = \"AWS/Foo\"\nregion = \"us-east-1\"\n",
            sonde_cloudwatch::check_namespace("AWS/Foo")
                .unwrap_err()
                .to_string(),
        ),
        (
            "[exporters.emf]\nnamespace = \"\"\n",
            sonde_cloudwatch::check_namespace("")
                .unwrap_err()
                .to_string(),
        ),
        (
            "[exporters.emf]\nnamespace = \"app\"\ndestination = \"tcp://nowhere\"\n",
            sonde_cloudwatch::Destination::parse("tcp://nowhere")
                .unwrap_err()
                .to_string(),
        ),
        (
            "[[collectors.procstat]]\npattern = \"(unclosed\"\n",
            match sonde_host::CheckedMatcher::new(sonde_host::ProcessMatcher::Pattern(
                "(unclosed".into(),
            )) {
                Err(sonde_host::Error::InvalidRegex { source, .. }) => source.to_string(),
                other => panic!("sonde-host accepted the pattern: {other:?}"),
            },
        ),
        (
            "[[probes.http]]\nname = \"api\"\nurl = \"http://[::1/\"\n",
            probe_error("http://[::1/"),
        ),
        (
            "[[probes.http]]\nname = \"api\"\nurl = \"http://h/\u{e9}\"\n",
            probe_error("http://h/\u{e9}"),
        ),
    ];
    for (i, (config, message)) in cases.iter().enumerate() {
        let path = write_file(&dir, format!("case-{i}.toml"), config);
        let checked = check_config(&path, &[]);
        let stderr = String::from_utf8_lossy(&checked.stderr);
        assert_eq!(checked.status.code(), Some(2), "{config}: {stderr}");
        assert!(
            stderr.contains(message.as_str()),
            "{config}: check-config said\n{stderr}\nnot {message:?}"
        );
        let child = command(&["--config".as_ref(), path.as_os_str()], &[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = wait_output(child, Duration::from_secs(15));
        assert_eq!(started.status.code(), Some(2), "{config}");
        assert_eq!(
            String::from_utf8_lossy(&started.stderr),
            stderr,
            "{config}: start-up refused it differently"
        );
    }
}

/// The shipped configurations stay inside the documented ranges: both pass check-config, and
/// the defaults start (the full example names peers and paths that do not exist here).
#[test]
fn the_shipped_configs_are_accepted() {
    let dir = TempDir::new("shipped-configs");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["sonde-agent.toml", "examples-config/full.toml"] {
        // A copy, so the reports `check_config` writes next to it stay out of the tree.
        let copy = dir.0.join(file.replace('/', "-"));
        std::fs::copy(root.join(file), &copy).unwrap();
        let out = check_config(&copy, &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    starts(&root.join("sonde-agent.toml"), &[], &dir.0).unwrap();
}
