//! The integration tests, one module a file: one test binary to build and link for all of them.
#![allow(clippy::unwrap_used)] // tests panic on failure by design

#[cfg(feature = "actix-web")]
mod actix;
#[cfg(feature = "axum")]
mod axum;
#[cfg(feature = "bb8")]
mod bb8;
mod common;
#[cfg(feature = "deadpool")]
mod deadpool;
#[cfg(feature = "hyper")]
mod hyper;
#[cfg(feature = "moka")]
mod moka;
#[cfg(feature = "r2d2")]
mod r2d2;
#[cfg(feature = "reqwest")]
mod reqwest;
#[cfg(all(feature = "tower", feature = "warp"))]
mod server;
#[cfg(feature = "sqlx")]
mod sqlx;
#[cfg(feature = "tokio")]
mod tokio_runtime;
