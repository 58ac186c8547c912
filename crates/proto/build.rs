//! Compiles every `.proto` under `proto/` with the system `protoc` (Debian `protobuf-compiler`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/components.proto",
        "proto/init.proto",
        "proto/join.proto",
        "proto/keyservice.proto",
        "proto/verify.proto",
        "proto/recover.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure().compile_protos(&protos, &["proto"])?;
    Ok(())
}
