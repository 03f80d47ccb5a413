//! The OpenTelemetry duration histograms every integration shares, defined once: the helpers,
//! the tower and warp middleware and the tracing layer all register them through these, so their
//! definitions can never drift apart (a second, different registration would be a conflict).

use sonde_core::{Family, Histogram, Registry, Unit};

fn duration(
    registry: &Registry,
    name: &'static str,
    description: &'static str,
    labels: impl IntoIterator<Item = &'static str>,
) -> Result<Family<Histogram>, sonde_core::Error> {
    registry
        .histogram(name)
        .description(description)
        .unit(Unit::Seconds)
        .labels(labels)
        .exemplars(true)
        .build()
}

/// `http.server.request.duration{http.request.method, http.route, http.response.status_code, error.type}`.
pub fn http_server_request_duration(
    registry: &Registry,
) -> Result<Family<Histogram>, sonde_core::Error> {
    duration(
        registry,
        "http.server.request.duration",
        "Duration of HTTP server requests.",
        [
            "http.request.method",
            "http.route",
            "http.response.status_code",
            "error.type",
        ],
    )
}

/// `http.client.request.duration{http.request.method, server.address, http.response.status_code, error.type, url.template}`.
pub fn http_client_request_duration(
    registry: &Registry,
) -> Result<Family<Histogram>, sonde_core::Error> {
    duration(
        registry,
        "http.client.request.duration",
        "Duration of HTTP client requests.",
        [
            "http.request.method",
            "server.address",
            "http.response.status_code",
            "error.type",
            "url.template",
        ],
    )
}

/// `db.client.operation.duration{db.system.name, db.operation.name, db.collection.name, error.type}`.
pub fn db_client_operation_duration(
    registry: &Registry,
) -> Result<Family<Histogram>, sonde_core::Error> {
    duration(
        registry,
        "db.client.operation.duration",
        "Duration of database client operations.",
        [
            "db.system.name",
            "db.operation.name",
            "db.collection.name",
            "error.type",
        ],
    )
}
