//! Generates the gRPC scoring service from `proto/` (needs `protoc`; scripts/setup.sh installs it).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/lookahead/scorer/v1/scorer.proto");
    tonic_prost_build::configure()
        .compile_protos(&["proto/lookahead/scorer/v1/scorer.proto"], &["proto"])?;
    Ok(())
}
