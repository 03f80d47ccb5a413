//! Serverless invocations: the OpenTelemetry FaaS metrics, cold starts, and a flush before the
//! handler returns (Lambda freezes the process as soon as it does).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use sonde_core::{Counter, Family, Histogram, Registry, Resource, Unit};

use crate::{Error, lifecycle::process_start_time};

/// What triggered an invocation (`faas.trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// An HTTP request.
    Http,
    /// A message from a queue or topic.
    PubSub,
    /// A change in a data source (a table, a bucket).
    Datasource,
    /// A schedule.
    Timer,
    /// Anything else.
    Other,
}

impl Trigger {
    /// The semantic-convention value.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Http => "http",
            Trigger::PubSub => "pubsub",
            Trigger::Datasource => "datasource",
            Trigger::Timer => "timer",
            Trigger::Other => "other",
        }
    }
}

/// The resource of an AWS Lambda function, read from its environment variables
/// (`AWS_LAMBDA_FUNCTION_NAME`, `_VERSION`, `_MEMORY_SIZE`, `AWS_LAMBDA_LOG_STREAM_NAME`,
/// `AWS_REGION`), or `None` outside Lambda.
pub fn lambda_resource() -> Option<Resource> {
    lambda_resource_from(|k| std::env::var(k).ok())
}

/// [`lambda_resource`] with the variables read through `get`.
pub fn lambda_resource_from(get: impl Fn(&str) -> Option<String>) -> Option<Resource> {
    Resource::lambda_from(&get)
}

/// AWS Lambda's list prices, the table [`CostModel`] estimates with: per GB-second of
/// duration by architecture, and per request. Set your region's or your contract's prices in
/// the fields; [`LambdaPricing::default`] is us-east-1's first tier as of
/// [`LAMBDA_PRICES_AS_OF`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LambdaPricing {
    /// US dollars per GB-second on x86_64.
    pub x86_64_per_gb_second: f64,
    /// US dollars per GB-second on arm64 (Graviton).
    pub arm64_per_gb_second: f64,
    /// US dollars per request.
    pub per_request: f64,
}

/// The date of [`LambdaPricing::default`]'s figures: us-east-1 list prices, first tier (the
/// first 6 billion GB-seconds a month), unchanged since arm64 functions launched in
/// September 2021.
pub const LAMBDA_PRICES_AS_OF: &str = "2026-12-06";

impl Default for LambdaPricing {
    fn default() -> Self {
        LambdaPricing {
            x86_64_per_gb_second: 0.000_016_666_7,
            arm64_per_gb_second: 0.000_013_333_4,
            per_request: 0.000_000_2,
        }
    }
}

/// A Lambda function's architecture (its price per GB-second differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// x86_64.
    X86_64,
    /// arm64 (Graviton).
    Arm64,
}

impl Architecture {
    /// The architecture this process runs on.
    pub fn current() -> Architecture {
        if cfg!(target_arch = "aarch64") {
            Architecture::Arm64
        } else {
            Architecture::X86_64
        }
    }
}

/// How [`Faas`] estimates what an invocation costs: Lambda bills the duration rounded up to
/// the millisecond times the configured memory, at the architecture's price per GB-second,
/// plus the request charge. Not billed here: provisioned concurrency, ephemeral storage over
/// 512 MB, data transfer, free tier.
///
/// ```
/// use std::time::Duration;
/// use sonde_instrument::{Architecture, CostModel, LambdaPricing};
/// let model = CostModel { memory_mb: 512, architecture: Architecture::X86_64, pricing: LambdaPricing::default() };
/// // 120.3 ms at 0.5 GB: 121 ms billed.
/// let usd = model.cost(Duration::from_micros(120_300));
/// assert!((usd - (0.0000002 + 0.5 * 0.121 * 0.0000166667)).abs() < 1e-15);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostModel {
    /// The function's configured memory, MB (Lambda's `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`).
    pub memory_mb: u32,
    /// Its architecture.
    pub architecture: Architecture,
    /// The prices.
    pub pricing: LambdaPricing,
}

impl CostModel {
    /// The model of the function this process runs in: memory from
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, this process's architecture, default prices; `None`
    /// outside Lambda (or with a memory size that is not a number of MB).
    pub fn from_env() -> Option<CostModel> {
        Self::from_env_with(|k| std::env::var(k).ok())
    }

    /// [`from_env`](Self::from_env) with the variables read through `get`.
    pub fn from_env_with(get: impl Fn(&str) -> Option<String>) -> Option<CostModel> {
        let memory_mb = get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")?
            .trim()
            .parse()
            .ok()?;
        Some(CostModel {
            memory_mb,
            architecture: Architecture::current(),
            pricing: LambdaPricing::default(),
        })
    }

    /// The estimated cost, US dollars, of one invocation that ran for `duration`.
    pub fn cost(&self, duration: std::time::Duration) -> f64 {
        let billed_ms = duration.as_nanos().div_ceil(1_000_000) as f64;
        let per_gb_second = match self.architecture {
            Architecture::X86_64 => self.pricing.x86_64_per_gb_second,
            Architecture::Arm64 => self.pricing.arm64_per_gb_second,
        };
        let gb = f64::from(self.memory_mb) / 1024.0;
        self.pricing.per_request + gb * billed_ms / 1000.0 * per_gb_second
    }
}

type Flush = Arc<dyn Fn() + Send + Sync>;

/// Records invocations of a serverless handler.
///
/// Metrics: `faas.invocations` and `faas.invoke_duration` (seconds) by `faas.trigger` and
/// `faas.coldstart`; `faas.coldstarts`, `faas.errors` and `faas.timeouts` by `faas.trigger`;
/// `faas.init_duration` (seconds from process start to the first invocation); with a
/// [`CostModel`] (found in Lambda's environment by [`install`](Self::install), or given with
/// [`with_cost_model`](Self::with_cost_model)), `faas.invocation.cost` (estimated US dollars,
/// by `faas.trigger`). The first invocation in a process is the cold start.
///
/// ```
/// use sonde_instrument::{Faas, Trigger};
/// let registry = sonde_core::Registry::new();
/// let faas = Faas::install(&registry)?;
/// // With a push exporter: make sure the invocation's data leaves before the handler returns.
/// faas.on_invocation_end(|| { /* exporter.flush(deadline) */ });
/// let answer: Result<u32, std::io::Error> = faas.invoke(Trigger::Http, || Ok(42));
/// assert_eq!(answer.unwrap(), 42);
/// # Ok::<(), sonde_instrument::Error>(())
/// ```
pub struct Faas {
    invocations: Family<Counter>,
    duration: Family<Histogram>,
    coldstarts: Family<Counter>,
    errors: Family<Counter>,
    timeouts: Family<Counter>,
    init_duration: Histogram,
    warm: AtomicBool,
    flushes: RwLock<Vec<Flush>>,
    cost: Option<(CostModel, Family<Counter<f64>>)>,
}

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It returned normally.
    Success,
    /// It failed.
    Error,
    /// It ran past its deadline.
    Timeout,
}

impl Faas {
    /// Registers the FaaS families.
    pub fn install(registry: &Registry) -> Result<Faas, Error> {
        let counter = |name: &'static str, description: &'static str, labels: &[&'static str]| {
            registry
                .counter(name)
                .description(description)
                .labels(labels.iter().copied())
                .build()
        };
        Faas {
            invocations: counter(
                "faas.invocations",
                "Invocations of the function.",
                &["faas.trigger", "faas.coldstart"],
            )?,
            duration: registry
                .histogram("faas.invoke_duration")
                .description("Duration of the function's logic execution.")
                .unit(Unit::Seconds)
                .labels(["faas.trigger", "faas.coldstart"])
                .build()?,
            coldstarts: counter("faas.coldstarts", "Invocations that were cold starts.", &["faas.trigger"])?,
            errors: counter("faas.errors", "Invocations that failed.", &["faas.trigger"])?,
            timeouts: counter("faas.timeouts", "Invocations that ran past their deadline.", &["faas.trigger"])?,
            init_duration: registry
                .histogram("faas.init_duration")
                .description("Time from process start to the first invocation (the cold start's initialization).")
                .unit(Unit::Seconds)
                .build()?
                .handle(),
            warm: AtomicBool::new(false),
            flushes: RwLock::new(Vec::new()),
            cost: None,
        }
        .with_cost_model_if(CostModel::from_env(), registry)
    }

    /// Estimates each invocation's cost with `model` into `faas.invocation.cost` (outside
    /// Lambda, or with your own prices).
    pub fn with_cost_model(self, model: CostModel, registry: &Registry) -> Result<Faas, Error> {
        self.with_cost_model_if(Some(model), registry)
    }

    fn with_cost_model_if(
        mut self,
        model: Option<CostModel>,
        registry: &Registry,
    ) -> Result<Faas, Error> {
        if let Some(model) = model {
            let family = registry
                .counter_f64("faas.invocation.cost")
                .description("Estimated cost of the invocations, US dollars (Lambda list price: billed duration x memory, plus the request charge).")
                .unit(Unit::Count("{USD}".into()))
                .labels(["faas.trigger"])
                .build()?;
            self.cost = Some((model, family));
        }
        Ok(self)
    }

    /// The cost model in use, if any.
    pub fn cost_model(&self) -> Option<&CostModel> {
        self.cost.as_ref().map(|(m, _)| m)
    }

    /// Runs `flush` at the end of every invocation, after its metrics are recorded and before
    /// the handler's result is returned: the place for a push exporter's `flush` or the EMF
    /// writer.
    pub fn on_invocation_end(&self, flush: impl Fn() + Send + Sync + 'static) {
        if let Ok(mut f) = self.flushes.write() {
            f.push(Arc::new(flush));
        }
    }

    /// Flushes `exporter` (within `timeout`) at the end of every invocation, after its metrics
    /// are recorded and before the handler returns. Failures are reported on stderr: the handler's
    /// own result is never replaced by an exporter's error.
    pub fn flush_through(
        &self,
        exporter: Arc<dyn sonde_core::Component>,
        timeout: std::time::Duration,
    ) {
        self.on_invocation_end(move || {
            if let Err(e) = exporter.flush(timeout) {
                eprintln!("sonde: flushing metrics at the end of the invocation failed: {e}");
            }
        });
    }

    /// Starts timing an invocation; finish it with [`Invocation::finish`].
    pub fn start(&self, trigger: Trigger) -> Invocation<'_> {
        let cold = !self.warm.swap(true, Ordering::Relaxed);
        if cold {
            let init = SystemTime::now()
                .duration_since(process_start_time())
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            self.init_duration.observe(init);
            self.coldstarts.with(&[trigger.as_str()]).inc();
        }
        Invocation {
            faas: self,
            trigger,
            cold,
            started: Instant::now(),
            deadline: None,
            finished: false,
        }
    }

    /// Runs a synchronous handler as one invocation; an `Err` counts in `faas.errors`.
    pub fn invoke<T, E>(
        &self,
        trigger: Trigger,
        handler: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        self.run(trigger, None, handler)
    }

    /// Like [`invoke`](Self::invoke), counting a timeout when the handler ends after `deadline`
    /// (Lambda's context gives it).
    pub fn invoke_with_deadline<T, E>(
        &self,
        trigger: Trigger,
        deadline: Instant,
        handler: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        self.run(trigger, Some(deadline), handler)
    }

    fn run<T, E>(
        &self,
        trigger: Trigger,
        deadline: Option<Instant>,
        handler: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let mut inv = self.start(trigger);
        inv.deadline = deadline;
        let out = handler();
        inv.finish(if out.is_ok() {
            Outcome::Success
        } else {
            Outcome::Error
        });
        out
    }

    /// Runs an async handler as one invocation, on whatever runtime polls it.
    pub async fn invoke_async<T, E>(
        &self,
        trigger: Trigger,
        handler: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let inv = self.start(trigger);
        let out = handler.await;
        inv.finish(if out.is_ok() {
            Outcome::Success
        } else {
            Outcome::Error
        });
        out
    }

    fn flush(&self) {
        let flushes: Vec<Flush> = self.flushes.read().map(|f| f.clone()).unwrap_or_default();
        for f in flushes {
            f();
        }
    }
}

/// One invocation in progress. Dropping it without [`finish`](Self::finish) records a success.
#[must_use = "finish the invocation to record it"]
pub struct Invocation<'a> {
    faas: &'a Faas,
    trigger: Trigger,
    cold: bool,
    started: Instant,
    deadline: Option<Instant>,
    finished: bool,
}

impl Invocation<'_> {
    /// Whether this is the process's first invocation.
    pub fn is_cold_start(&self) -> bool {
        self.cold
    }

    /// Records the invocation, then runs the flush hooks.
    pub fn finish(mut self, outcome: Outcome) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        let f = self.faas;
        let trigger = self.trigger.as_str();
        let cold = if self.cold { "true" } else { "false" };
        f.invocations.with(&[trigger, cold]).inc();
        f.duration.with(&[trigger, cold]).record_since(self.started);
        if let Some((model, family)) = &f.cost {
            family
                .with(&[trigger])
                .add(model.cost(self.started.elapsed()));
        }
        let late = self.deadline.is_some_and(|d| Instant::now() > d);
        if outcome == Outcome::Timeout || late {
            f.timeouts.with(&[trigger]).inc();
        } else if outcome == Outcome::Error {
            f.errors.with(&[trigger]).inc();
        }
        f.flush();
    }
}

impl Drop for Invocation<'_> {
    fn drop(&mut self) {
        self.record(Outcome::Success);
    }
}
