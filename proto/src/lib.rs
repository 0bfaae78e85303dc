//! gRPC API types.
