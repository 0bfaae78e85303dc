//! The transcribe gRPC server (work in progress).
#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod pool;
