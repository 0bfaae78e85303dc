//! The `transcribe.v1` gRPC API: messages, client and server stubs generated at build time
//! from `proto/transcribe/v1/transcribe.proto` (prost + tonic, with a vendored `protoc`).
//!
//! # Layout
//! - [`v1`]: the generated package `transcribe.v1` (messages, enums,
//!   [`v1::transcription_service_client`], [`v1::transcription_service_server`]).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC server reflection.
//! - [`PROTO_SOURCE`]: the `.proto` text itself, for clients in other languages.
//! - [`auth`]: the bearer-token header and the token-file format.
//! - [`duration`]: `google.protobuf.Duration` to and from `std::time::Duration`.
//! - [`json`]: the messages in proto3 JSON (the WebSocket door, the browser page).
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

/// Bearer tokens as server and clients exchange them: the header, the scheme and the
/// token-file format (one token per line; blank lines and `#` comments ignored; leading and
/// trailing whitespace trimmed; a token is visible ASCII without whitespace; a file without
/// a token is an error, so a mistake cannot silently turn authentication off).
pub mod auth {
    use std::path::{Path, PathBuf};

    /// The metadata key carrying the token (HTTP `Authorization`, lower case as HTTP/2 sends it).
    pub const AUTHORIZATION: &str = "authorization";

    /// The authentication scheme (RFC 6750 section 2.1: `Bearer` followed by one or more spaces).
    pub const BEARER: &str = "Bearer";

    /// Why a token text is not usable.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum TokenError {
        /// No token at all (only blank lines and comments). Put one token per line.
        #[error("no token (only blank lines and # comments)")]
        Empty,
        /// The token on `line` (1-based) has whitespace inside. Tokens are single words;
        /// put one per line.
        #[error("the token on line {line} contains whitespace")]
        Whitespace {
            /// The line, counting from 1.
            line: usize,
        },
        /// The token on `line` has a character that cannot go into an HTTP header (not
        /// visible ASCII). Use letters, digits and punctuation.
        #[error("the token on line {line} has a character other than visible ASCII")]
        NotVisibleAscii {
            /// The line, counting from 1.
            line: usize,
        },
    }

    /// Why a token file cannot be used (start-up fails; the message names the file).
    #[derive(Debug, thiserror::Error)]
    pub enum TokenFileError {
        /// The file could not be read (missing, no permission, not UTF-8).
        #[error("cannot read token file {}: {source}", path.display())]
        Read {
            /// The file.
            path: PathBuf,
            /// Why.
            #[source]
            source: std::io::Error,
        },
        /// The file's content is not a usable token list.
        #[error("token file {}: {source}", path.display())]
        Invalid {
            /// The file.
            path: PathBuf,
            /// What is wrong (never the token itself).
            #[source]
            source: TokenError,
        },
    }

    /// Parses a token list (see the module doc), in file order.
    ///
    /// # Errors
    /// [`TokenError`] naming the first bad line, or [`TokenError::Empty`].
    pub fn parse_tokens(text: &str) -> Result<Vec<String>, TokenError> {
        let mut tokens = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let token = raw.trim();
            if token.is_empty() || token.starts_with('#') {
                continue;
            }
            let line = index + 1;
            if token.chars().any(char::is_whitespace) {
                return Err(TokenError::Whitespace { line });
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(TokenError::NotVisibleAscii { line });
            }
            tokens.push(token.to_owned());
        }
        if tokens.is_empty() {
            return Err(TokenError::Empty);
        }
        Ok(tokens)
    }

    /// Reads and parses a token file.
    ///
    /// # Errors
    /// [`TokenFileError`] naming `path`.
    pub fn read_token_file(path: &Path) -> Result<Vec<String>, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        parse_tokens(&text).map_err(|source| TokenFileError::Invalid {
            path: path.to_owned(),
            source,
        })
    }
}

/// `google.protobuf.Duration` to and from `std::time::Duration` (servers and clients both
/// convert offsets and latencies).
pub mod duration {
    use std::time::Duration;

    /// A `google.protobuf.Duration` from a std one (saturating at `i64::MAX` seconds).
    pub fn to_proto(d: Duration) -> prost_types::Duration {
        prost_types::Duration {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        }
    }

    /// A std duration from a `google.protobuf.Duration`; `None` when negative or malformed.
    pub fn to_std(d: &prost_types::Duration) -> Option<Duration> {
        let seconds = u64::try_from(d.seconds).ok()?;
        let nanos = u32::try_from(d.nanos).ok().filter(|n| *n < 1_000_000_000)?;
        Some(Duration::new(seconds, nanos))
    }
}

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

/// The messages in proto3 JSON, the canonical mapping (lowerCamelCase names, enums by name,
/// durations as `"1.500s"`, 64-bit integers as strings, default values left out; input also
/// takes the proto field names), through `prost-reflect` and [`FILE_DESCRIPTOR_SET`], so the
/// JSON always follows the `.proto`.
pub mod json {
    use std::sync::LazyLock;

    use prost::{Message, Name};
    use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};

    /// Why a message could not be converted.
    #[derive(Debug, thiserror::Error)]
    pub enum JsonError {
        /// The text is not JSON of the message (syntax, an unknown field, a wrong type).
        #[error("{0}")]
        Invalid(String),
        /// The descriptors lack the message: a build defect, not the input's fault.
        #[error("no descriptor for {0}")]
        NoDescriptor(String),
    }

    static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
        DescriptorPool::decode(super::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
    });

    fn descriptor<M: Name>() -> Result<prost_reflect::MessageDescriptor, JsonError> {
        let name = M::full_name();
        POOL.as_ref()
            .ok()
            .and_then(|pool| pool.get_message_by_name(&name))
            .ok_or(JsonError::NoDescriptor(name))
    }

    /// `message` as proto3 JSON.
    ///
    /// # Errors
    /// [`JsonError::NoDescriptor`] only (a build defect).
    ///
    /// # Example
    /// ```
    /// use transcribe_proto::v1::{StreamingRecognitionResult, StreamingRecognizeResponse};
    /// let response = StreamingRecognizeResponse {
    ///     results: vec![StreamingRecognitionResult { is_final: true, ..Default::default() }],
    ///     ..Default::default()
    /// };
    /// let json = transcribe_proto::json::to_json(&response)?;
    /// assert_eq!(json, r#"{"results":[{"isFinal":true}]}"#);
    /// # Ok::<(), transcribe_proto::json::JsonError>(())
    /// ```
    pub fn to_json<M: Message + Name>(message: &M) -> Result<String, JsonError> {
        let dynamic =
            DynamicMessage::decode(descriptor::<M>()?, message.encode_to_vec().as_slice())
                .map_err(|e| JsonError::NoDescriptor(format!("{}: {e}", M::full_name())))?;
        let mut out = serde_json::Serializer::new(Vec::new());
        dynamic
            .serialize_with_options(&mut out, &SerializeOptions::new())
            .map_err(|e| JsonError::Invalid(e.to_string()))?;
        String::from_utf8(out.into_inner()).map_err(|e| JsonError::Invalid(e.to_string()))
    }

    /// Parses proto3 JSON into a message; unknown fields are refused.
    ///
    /// # Errors
    /// [`JsonError::Invalid`] says what is wrong with the text.
    ///
    /// # Example
    /// ```
    /// use transcribe_proto::v1::{AudioEncoding, StreamingRecognitionConfig};
    /// let config: StreamingRecognitionConfig = transcribe_proto::json::from_json(
    ///     r#"{"config": {"audioFormat": {"encoding": "AUDIO_ENCODING_LINEAR16",
    ///        "sampleRateHertz": 48000}}, "interimResults": true,
    ///        "interim_results_interval": "0.5s"}"#,
    /// )?;
    /// let format = config.config.unwrap_or_default().audio_format.unwrap_or_default();
    /// assert_eq!(format.encoding(), AudioEncoding::Linear16);
    /// assert!(config.interim_results);
    /// assert_eq!(config.interim_results_interval.map(|d| d.nanos), Some(500_000_000));
    /// assert!(transcribe_proto::json::from_json::<StreamingRecognitionConfig>("{\"x\": 1}").is_err());
    /// # Ok::<(), transcribe_proto::json::JsonError>(())
    /// ```
    pub fn from_json<M: Message + Name + Default>(text: &str) -> Result<M, JsonError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let dynamic = DynamicMessage::deserialize_with_options(
            descriptor::<M>()?,
            &mut de,
            &DeserializeOptions::new(),
        )
        .map_err(|e| JsonError::Invalid(e.to_string()))?;
        de.end().map_err(|e| JsonError::Invalid(e.to_string()))?;
        M::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| JsonError::Invalid(e.to_string()))
    }
}
