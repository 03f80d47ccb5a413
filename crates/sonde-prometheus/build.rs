//! Generates the Prometheus protobuf messages (the exposition's `MetricFamily` and remote
//! write's `WriteRequest`) with prost-build from `proto/descriptors.bin`: the descriptor set of
//! the `.proto` files in `proto/`, compiled by protox and kept in the repository, so building
//! needs neither `protoc` nor a protobuf compiler of its own. A test (`proto::tests::
//! the_descriptor_set_is_the_proto_files_compiled`) fails when the two drift apart and says how
//! to write it again.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/descriptors.bin");
    let descriptors =
        prost_types::FileDescriptorSet::decode(&include_bytes!("proto/descriptors.bin")[..])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
