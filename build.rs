//! Compiles `proto/partlog/v1/partlog.proto` with the protoc binary shipped by
//! `protoc-bin-vendored`, so a fresh machine needs no system protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // prost's codec, but a request that does not decode is the caller's
        // error (INVALID_ARGUMENT), not INTERNAL.
        .codec_path("crate::proto::Codec")
        // A stored record's value is a slice of the chunk partlog read it
        // from, sent without a copy.
        .bytes(".partlog.v1.Record.value")
        // A published value stays a slice of the request's buffer until it
        // is written to the broker's socket.
        .bytes(".partlog.v1.PublishRecord.value")
        .file_descriptor_set_path(out_dir.join("partlog_descriptor.bin"))
        .compile_protos(&["proto/partlog/v1/partlog.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
