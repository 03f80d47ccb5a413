//! The future the tower client and server services return: the inner service's future, and
//! what to record once it completes.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What a [`Recorded`] future does with the output of the future it wraps, once.
pub trait Record<Output> {
    /// Records the request that completed with `out`.
    fn record(self, out: &Output);
}

pin_project_lite::pin_project! {
    /// Polls `inner` and hands its output to `record` when it is ready.
    pub struct Recorded<F, R> {
        #[pin]
        inner: F,
        record: Option<R>,
    }
}

impl<F, R> Recorded<F, R> {
    /// `inner`, recording its output with `record`.
    pub(crate) fn new(inner: F, record: R) -> Self {
        Recorded {
            inner,
            record: Some(record),
        }
    }
}

impl<F: Future, R: Record<F::Output>> Future for Recorded<F, R> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if let Some(record) = this.record.take() {
            record.record(&out);
        }
        Poll::Ready(out)
    }
}

/// What an instrumented service records: [`begin`](Self::begin) reads a request before the
/// inner service takes it, and what it returns records the answer.
pub trait Observe<B> {
    /// The request in flight, recorded once answered.
    type Request;
    /// Starts recording `req`.
    fn begin(&self, req: &http::Request<B>) -> Self::Request;
}

/// A service passing each request to `inner`, recorded as `observe` says: what the tower
/// client and server layers wrap around a service.
#[derive(Clone)]
pub struct Instrumented<S, O> {
    inner: S,
    observe: O,
}

impl<S, O> Instrumented<S, O> {
    /// `inner`, its requests recorded by `observe`.
    pub(crate) fn new(inner: S, observe: O) -> Self {
        Instrumented { inner, observe }
    }
}

impl<S, O, B, RB> tower_service::Service<http::Request<B>> for Instrumented<S, O>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    O: Observe<B>,
    O::Request: Record<Result<http::Response<RB>, S::Error>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Recorded<S::Future, O::Request>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let request = self.observe.begin(&req);
        Recorded::new(self.inner.call(req), request)
    }
}

/// hyper 1's `Service` (feature `hyper`): the same recording around a hyper service, for a
/// server without tower.
#[cfg(feature = "hyper")]
impl<S, O, B, RB> hyper::service::Service<http::Request<B>> for Instrumented<S, O>
where
    S: hyper::service::Service<http::Request<B>, Response = http::Response<RB>>,
    O: Observe<B>,
    O::Request: Record<Result<http::Response<RB>, S::Error>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Recorded<S::Future, O::Request>;

    fn call(&self, req: http::Request<B>) -> Self::Future {
        let request = self.observe.begin(&req);
        Recorded::new(self.inner.call(req), request)
    }
}
