//! An async shop service on the crates most Rust services use, each instrumented by one of
//! sonde's adapters; `main.rs` serves it next to sonde's Prometheus exporter.
//!
//! | route | what it does | what sonde records |
//! |---|---|---|
//! | `GET /products/{id}` | reads a product through a moka cache in front of SQLite (sqlx) | route, cache hit or miss, the query's duration, the pool's wait |
//! | `POST /orders/{product}` | inserts an order (sqlx), then calls the payments API (reqwest) | route, the insert, the outgoing call by `url.template` |
//! | `POST /payments/{order}` | the payments API itself (every 5th payment is declined: 402, see [`Shop::declining_every`]) | route, status |
//! | `GET /health` | `ok` | route |
//!
//! Metrics: `http.server.request.duration` and `http.server.active_requests` (axum layer),
//! `db.client.operation.duration` (`DbMetrics::time`), `db.client.connection.*` for the pool
//! `shop` (`SqlxStats`, `sqlx_acquire`), `cache.requests`, `cache.removals`, `cache.size`,
//! `cache.weighted_size` for the cache `products` (`MokaCache`),
//! `http.client.request.duration` for the payments calls (`HttpClientMiddleware`), and the
//! Tokio runtime's `tokio.runtime.*` (`TokioRuntimeMetrics`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use sonde::Registry;
use sonde::instrument::{
    DbMetrics, HttpClientMetrics, HttpClientMiddleware, HttpServerLayer, HttpServerMetrics,
    MokaCache, PoolMetrics, SqlxStats, TokioRuntimeMetrics, UrlTemplate, sqlx_acquire,
};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

/// Products in the catalogue (ids 1 to this).
pub const PRODUCTS: i64 = 500;

/// The service's state: its pool, cache, HTTP client and metrics.
#[derive(Clone)]
pub struct Shop {
    pool: SqlitePool,
    pool_metrics: PoolMetrics,
    db: DbMetrics,
    products: Arc<MokaCache<i64, Option<(String, f64)>>>,
    payments: reqwest_middleware::ClientWithMiddleware,
    payments_url: Arc<str>,
    /// Every how many payments one is declined (0: never).
    decline_every: u64,
    payment_calls: Arc<AtomicU64>,
    _runtime: Arc<TokioRuntimeMetrics>,
}

/// Why the shop could not start.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

impl Shop {
    /// Opens (creating it if needed) the SQLite database at `db_path` with a pool of
    /// `max_connections`, fills the catalogue, and instruments everything into `registry`;
    /// payments go to `payments_url` (this service's own `/payments` when it runs alone).
    /// Call it on the Tokio runtime that will serve the requests (its metrics are read).
    pub async fn open(
        registry: &Registry,
        db_path: &std::path::Path,
        max_connections: u32,
        payments_url: &str,
    ) -> Result<Shop, Error> {
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(2))
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(db_path)
                    .create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(5)),
            )
            .await?;
        let pool_metrics = PoolMetrics::install(registry, "shop")?;
        pool_metrics.watch(Arc::new(SqlxStats(pool.clone())));
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL NOT NULL)",
        )
        .execute(&pool)
        .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, product INTEGER NOT NULL, price REAL NOT NULL)",
        )
        .execute(&pool)
        .await?;
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM products")
            .fetch_one(&pool)
            .await?;
        if count == 0 {
            let mut tx = pool.begin().await?;
            for id in 1..=PRODUCTS {
                sqlx::query("INSERT INTO products (id, name, price) VALUES (?, ?, ?)")
                    .bind(id)
                    .bind(format!("product {id}"))
                    .bind(1.0 + (id % 50) as f64)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        // A cache for a fifth of the catalogue: popular products hit, the rest evict.
        let products = MokaCache::new(
            registry,
            "products",
            moka::sync::Cache::builder()
                .max_capacity(100)
                .time_to_live(Duration::from_secs(60)),
        )?;
        // reqwest may be built without a TLS crypto provider here (plain http): install one.
        #[allow(deprecated)] // ring: the workspace's one TLS stack
        let _ = rustls::crypto::ring::default_provider().install_default();
        let payments = reqwest_middleware::ClientBuilder::new(
            reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        )
        .with(HttpClientMiddleware::new(HttpClientMetrics::install(
            registry,
        )?))
        .build();
        let runtime = TokioRuntimeMetrics::install(registry, tokio::runtime::Handle::current())?;
        Ok(Shop {
            pool,
            pool_metrics,
            db: DbMetrics::install(registry)?,
            products: Arc::new(products),
            payments,
            payments_url: payments_url.trim_end_matches('/').into(),
            decline_every: 5,
            payment_calls: Arc::new(AtomicU64::new(0)),
            _runtime: Arc::new(runtime),
        })
    }

    /// Declines one payment in `every` (default 5; 0: never).
    pub fn declining_every(mut self, every: u64) -> Shop {
        self.decline_every = every;
        self
    }

    /// The routes, recording into `http`.
    pub fn app(self, http: HttpServerMetrics) -> Router {
        Router::new()
            .route("/products/{id}", get(product))
            .route("/orders/{product}", post(order))
            .route("/payments/{order}", post(payment))
            .route("/health", get(|| async { "ok" }))
            .layer(HttpServerLayer::new(http))
            .with_state(self)
    }

    /// A product from the cache, else from the database (a miss loads it).
    async fn find(&self, id: i64) -> Result<Option<(String, f64)>, sqlx::Error> {
        if let Some(p) = self.products.get(&id) {
            return Ok(p);
        }
        let mut conn = sqlx_acquire(&self.pool, &self.pool_metrics).await?;
        let row: Option<(String, f64)> = self
            .db
            .time(
                "sqlite",
                "SELECT",
                "products",
                sqlx::query_as("SELECT name, price FROM products WHERE id = ?")
                    .bind(id)
                    .fetch_optional(&mut *conn),
            )
            .await?;
        self.products.insert(id, row.clone());
        Ok(row)
    }
}

async fn product(State(shop): State<Shop>, Path(id): Path<i64>) -> Result<String, StatusCode> {
    match shop.find(id).await {
        Ok(Some((name, price))) => Ok(format!(
            "{{\"id\":{id},\"name\":\"{name}\",\"price\":{price}}}"
        )),
        Ok(None) => Err(StatusCode::NOT_FOUND),
        Err(_) => Err(StatusCode::SERVICE_UNAVAILABLE),
    }
}

async fn order(
    State(shop): State<Shop>,
    Path(product): Path<i64>,
) -> Result<(StatusCode, String), StatusCode> {
    let Some((_, price)) = shop
        .find(product)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?
    else {
        return Err(StatusCode::NOT_FOUND);
    };
    let id = {
        let mut conn = sqlx_acquire(&shop.pool, &shop.pool_metrics)
            .await
            .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
        shop.db
            .time(
                "sqlite",
                "INSERT",
                "orders",
                sqlx::query("INSERT INTO orders (product, price) VALUES (?, ?)")
                    .bind(product)
                    .bind(price)
                    .execute(&mut *conn),
            )
            .await
            .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?
            .last_insert_rowid()
    };
    // The payments API, by its route template (one series, whatever the order id).
    let paid = shop
        .payments
        .post(format!("{}/payments/{id}", shop.payments_url))
        .with_extension(UrlTemplate("/payments/{order}"))
        .send()
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
    if !paid.status().is_success() {
        return Err(StatusCode::PAYMENT_REQUIRED);
    }
    Ok((StatusCode::CREATED, format!("{{\"order\":{id}}}")))
}

/// One payment in `decline_every` is declined.
async fn payment(State(shop): State<Shop>, Path(_order): Path<i64>) -> StatusCode {
    let n = shop.payment_calls.fetch_add(1, Ordering::Relaxed);
    if shop.decline_every > 0 && n % shop.decline_every == shop.decline_every - 1 {
        StatusCode::PAYMENT_REQUIRED
    } else {
        StatusCode::OK
    }
}
