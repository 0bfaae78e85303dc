//! gRPC server.
