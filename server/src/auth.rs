//! Bearer-token authentication (`--auth-token-file`): the token file's format, the
//! configured tokens kept only as SHA-256 digests ([`TokenSet`]), and the interceptor that
//! refuses calls without a valid `authorization: Bearer <token>` ([`Authenticator`]).
//!
//! What requires a token when the server has any: every `transcribe.v1` RPC and server
//! reflection (it describes the API and is not needed to call it; clients with a token can
//! still use it). The gRPC health service never does, so load balancers and orchestrators
//! can probe the server without a secret.
//!
//! Comparison: the presented token and every configured token are hashed to a fixed-length
//! SHA-256 digest and compared with `subtle`'s constant-time equality against every
//! configured token, without early exit, so neither a token's length nor the position of
//! the first differing byte nor which token matched shows in the response time. Refusals
//! get one generic UNAUTHENTICATED message ([`crate::RequestError::Unauthenticated`]); tokens
//! are never logged or echoed.
//!
//! # Token file
//! One token per line; blank lines and lines starting with `#` are ignored; leading and
//! trailing whitespace (including a CR of CRLF files) is trimmed. A token is visible ASCII
//! with no whitespace inside (it goes into an HTTP/2 header). A file with no token is an
//! error, so a mistake cannot silently turn authentication off.
//!
//! # Example
//! ```
//! use transcribe_server::auth::TokenSet;
//! let tokens = TokenSet::from_text("# ops team\nalpha-123\n\nbeta-456\n")?;
//! assert_eq!(tokens.len(), 2);
//! assert!(tokens.verify(b"beta-456"));
//! assert!(!tokens.verify(b"beta-45"));
//! # Ok::<(), transcribe_server::auth::TokenError>(())
//! ```

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};
use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::error::RequestError;

/// A SHA-256 digest (32 bytes).
type DigestBytes = [u8; 32];

pub use transcribe_proto::auth::{
    AUTHORIZATION, BEARER, TokenError, TokenFileError, parse_tokens, read_token_file,
};

fn digest(bytes: &[u8]) -> DigestBytes {
    Sha256::digest(bytes).into()
}

/// The accepted tokens, kept only as SHA-256 digests (so neither `Debug` nor a memory dump
/// of the configuration shows them).
#[derive(Clone)]
pub struct TokenSet {
    digests: Arc<[DigestBytes]>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("tokens", &self.digests.len())
            .finish_non_exhaustive()
    }
}

impl TokenSet {
    /// The tokens in a token list's text.
    ///
    /// # Errors
    /// As [`parse_tokens`].
    pub fn from_text(text: &str) -> Result<Self, TokenError> {
        Ok(Self::from_valid(parse_tokens(text)?))
    }

    /// The tokens in the file at `path`.
    ///
    /// # Errors
    /// As [`read_token_file`].
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        Ok(Self::from_valid(read_token_file(path)?))
    }

    fn from_valid(tokens: Vec<String>) -> Self {
        Self {
            digests: tokens.iter().map(|t| digest(t.as_bytes())).collect(),
        }
    }

    /// How many tokens are accepted (at least 1).
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Never true: a set is built from at least one token.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `presented` is one of the tokens, in time independent of its length, its
    /// content and which token (if any) it matches.
    pub fn verify(&self, presented: &[u8]) -> bool {
        let presented = digest(presented);
        let mut matched = Choice::from(0);
        for known in self.digests.iter() {
            matched |= known.ct_eq(&presented);
        }
        matched.into()
    }

    /// Checks the `authorization` metadata of a call.
    ///
    /// # Errors
    /// [`RequestError::Unauthenticated`] with the reason (for the log only) when the header
    /// is missing, not `Bearer <token>`, or the token is not accepted.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), RequestError> {
        self.check_header(metadata.get(AUTHORIZATION).map(|v| v.as_bytes()))
    }

    /// A token given as such (the WebSocket door's `token` query parameter, for browsers
    /// that cannot set headers).
    ///
    /// # Errors
    /// As [`TokenSet::check`].
    pub fn check_token(&self, token: &str) -> Result<(), RequestError> {
        if self.verify(token.as_bytes()) {
            Ok(())
        } else {
            Err(RequestError::Unauthenticated {
                reason: "unknown token",
            })
        }
    }

    /// Checks the value of an `Authorization` header (`None`: there is none), for gRPC
    /// metadata and HTTP headers alike.
    ///
    /// # Errors
    /// As [`TokenSet::check`].
    pub fn check_header(&self, value: Option<&[u8]>) -> Result<(), RequestError> {
        let refuse = |reason| Err(RequestError::Unauthenticated { reason });
        let Some(value) = value else {
            return refuse("no authorization header");
        };
        let Some(token) = bearer_token(value) else {
            return refuse("authorization is not a Bearer token");
        };
        if self.verify(token) {
            Ok(())
        } else {
            refuse("unknown token")
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value: the scheme is matched without
/// regard to case (RFC 7235 section 2.1), followed by one or more spaces, then a token with
/// no whitespace. `None` when malformed.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let scheme = BEARER.as_bytes();
    if value.len() <= scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return None;
    }
    let rest = &value[scheme.len()..];
    let start = rest.iter().position(|&b| b != b' ')?;
    if start == 0 {
        // `Bearerx...`: no space after the scheme.
        return None;
    }
    let token = rest[start..].trim_ascii_end();
    (!token.is_empty() && token.iter().all(u8::is_ascii_graphic)).then_some(token)
}

/// The tonic interceptor in front of the authenticated services: lets every call through
/// when no tokens are configured, otherwise only calls with an accepted bearer token.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    tokens: Option<TokenSet>,
}

impl Authenticator {
    /// An interceptor accepting `tokens` (`None`: authentication off).
    pub fn new(tokens: Option<TokenSet>) -> Self {
        Self { tokens }
    }

    /// Whether calls need a token.
    pub fn is_enabled(&self) -> bool {
        self.tokens.is_some()
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(tokens) = &self.tokens else {
            return Ok(request);
        };
        match tokens.check(request.metadata()) {
            Ok(()) => Ok(request),
            Err(error) => {
                // The reason and the peer only: never the header's value.
                tracing::info!(
                    message = "Call refused.",
                    %error,
                    peer = ?request.remote_addr()
                );
                Err(error.to_status())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic::metadata::MetadataValue;

    use super::*;

    #[test]
    fn token_files_parse() -> Result<(), TokenError> {
        assert_eq!(
            parse_tokens("# comment\n\n  alpha \r\nbeta\n   # indented comment\n")?,
            ["alpha", "beta"]
        );
        assert_eq!(parse_tokens(""), Err(TokenError::Empty));
        assert_eq!(parse_tokens("# only\n\n  \n"), Err(TokenError::Empty));
        assert_eq!(
            parse_tokens("ok\nbad token\n"),
            Err(TokenError::Whitespace { line: 2 })
        );
        assert_eq!(
            parse_tokens("tab\there"),
            Err(TokenError::Whitespace { line: 1 })
        );
        assert_eq!(
            parse_tokens("caf\u{e9}"),
            Err(TokenError::NotVisibleAscii { line: 1 })
        );
        Ok(())
    }

    #[test]
    fn errors_never_show_the_token() {
        let secret = "s3cret-value with-space";
        let error = parse_tokens(secret).err().map(|e| e.to_string());
        assert!(error.is_some_and(|e| !e.contains("s3cret")));
    }

    #[test]
    fn missing_files_are_named() {
        let path = Path::new("/nonexistent/tokens.txt");
        let message = TokenSet::load(path).err().map(|e| e.to_string());
        assert!(
            message
                .as_deref()
                .is_some_and(|m| m.contains("/nonexistent/tokens.txt")),
            "{message:?}"
        );
    }

    #[test]
    fn bearer_values_parse() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer   abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"BEARER abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Bearer"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bearerabc"), None);
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer a b"), None);
        assert_eq!(bearer_token(b"abc"), None);
    }

    #[test]
    fn verify_matches_exact_tokens_only() -> Result<(), TokenError> {
        let tokens = TokenSet::from_text("alpha\nbeta-2\n")?;
        assert!(tokens.verify(b"alpha"));
        assert!(tokens.verify(b"beta-2"));
        for wrong in [&b""[..], b"alph", b"alphaa", b"Alpha", b"beta-"] {
            assert!(!tokens.verify(wrong), "{wrong:?}");
        }
        assert!(!format!("{tokens:?}").contains("alpha"));
        Ok(())
    }

    fn call(auth: &mut Authenticator, header: Option<&'static str>) -> Result<(), Code> {
        let mut request = Request::new(());
        if let Some(value) = header {
            request
                .metadata_mut()
                .insert(AUTHORIZATION, MetadataValue::from_static(value));
        }
        auth.call(request).map(drop).map_err(|s| s.code())
    }

    #[test]
    fn interceptor_refuses_without_a_good_token() -> Result<(), TokenError> {
        let mut off = Authenticator::new(None);
        assert_eq!(call(&mut off, None), Ok(()));
        let mut on = Authenticator::new(Some(TokenSet::from_text("alpha")?));
        assert_eq!(call(&mut on, Some("Bearer alpha")), Ok(()));
        for header in [
            None,
            Some("Bearer beta"),
            Some("alpha"),
            Some("Basic alpha"),
        ] {
            assert_eq!(
                call(&mut on, header),
                Err(Code::Unauthenticated),
                "{header:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn refusals_share_one_generic_message() -> Result<(), TokenError> {
        let tokens = TokenSet::from_text("alpha")?;
        let mut messages = std::collections::HashSet::new();
        for value in ["Bearer wrong-token", "junk"] {
            let mut metadata = MetadataMap::new();
            metadata.insert(AUTHORIZATION, MetadataValue::from_static(value));
            let status = tokens.check(&metadata).err().map(|e| e.to_status());
            let message = status.map(|s| s.message().to_owned()).unwrap_or_default();
            assert!(!message.contains("wrong-token"), "{message}");
            messages.insert(message);
        }
        let missing = tokens
            .check(&MetadataMap::new())
            .err()
            .map(|e| e.to_status());
        messages.insert(missing.map(|s| s.message().to_owned()).unwrap_or_default());
        assert_eq!(messages.len(), 1, "{messages:?}");
        Ok(())
    }
}
