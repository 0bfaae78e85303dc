//! The `transcribe.v1` gRPC API: messages, client and server stubs generated at build time
//! from `proto/transcribe/v1/transcribe.proto` (prost + tonic, with a vendored `protoc`).
//!
//! # Layout
//! - [`v1`]: the generated package `transcribe.v1` (messages, enums,
//!   [`v1::transcription_service_client`], [`v1::transcription_service_server`]).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC server reflection.
//! - [`PROTO_SOURCE`]: the `.proto` text itself, for clients in other languages.
//!
//! # Example
//! ```
//! use transcribe_proto::v1::{AudioEncoding, AudioFormat};
//! let format = AudioFormat {
//!     encoding: AudioEncoding::Linear16.into(),
//!     sample_rate_hertz: 16_000,
//!     audio_channel_count: 1,
//! };
//! assert_eq!(format.encoding(), AudioEncoding::Linear16);
//! ```
#![warn(missing_docs)]

/// The `transcribe.v1` package (generated; see the `.proto` file for field docs).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("transcribe.v1");
}

/// Encoded `FileDescriptorSet` of `transcribe.v1` and its imports, for
/// `tonic_reflection::server::Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("transcribe_v1_descriptor");

/// The `.proto` source this crate was generated from.
pub const PROTO_SOURCE: &str = include_str!("../transcribe/v1/transcribe.proto");

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::v1;

    #[test]
    fn descriptor_set_names_the_service() -> Result<(), prost::DecodeError> {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET)?;
        let file = set.file.iter().find(|f| f.package() == "transcribe.v1");
        let services: Vec<&str> = file
            .map(|f| f.service.iter().map(|s| s.name()).collect())
            .unwrap_or_default();
        assert_eq!(services, ["TranscriptionService"]);
        Ok(())
    }

    #[test]
    fn request_round_trips() -> Result<(), prost::DecodeError> {
        let req = v1::StreamingRecognizeRequest {
            streaming_request: Some(
                v1::streaming_recognize_request::StreamingRequest::AudioContent(vec![1, 2, 3, 4]),
            ),
        };
        let bytes = req.encode_to_vec();
        assert_eq!(
            v1::StreamingRecognizeRequest::decode(bytes.as_slice())?,
            req
        );
        Ok(())
    }
}
