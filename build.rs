//! Generates the gRPC code for KEDA's external scaler interface from `proto/externalscaler.proto`
//! (needs `protoc`, the Debian package `protobuf-compiler`).
fn main() {
    println!("cargo:rerun-if-changed=proto/externalscaler.proto");
    if let Err(e) = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The product serves over hyper itself; tests and benchmarks bring their own channel.
        .build_transport(false)
        .compile_protos(&["proto/externalscaler.proto"], &["proto"])
    {
        panic!(
            "generating the external scaler code from proto/externalscaler.proto failed: {e}\n\
             (is protoc installed? sudo apt-get install -y protobuf-compiler)"
        );
    }
}
