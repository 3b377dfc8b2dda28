//! Generated `partlog.v1` types, client and server (from
//! `proto/partlog/v1/partlog.proto`, compiled by `build.rs`).

#![allow(clippy::all, clippy::pedantic)]

tonic::include_proto!("partlog.v1");

/// Encoded descriptors of `partlog.v1`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("partlog_descriptor");
