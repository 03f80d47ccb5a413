//! Generates the Prometheus protobuf messages (the exposition's `MetricFamily` and remote
//! write's `WriteRequest`) from the `.proto` files in `proto/`, with protox: a protobuf compiler
//! in Rust, so building needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: [&str; 2] = ["proto/metrics.proto", "proto/remote.proto"];
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
