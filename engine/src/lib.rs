//! Whisper inference through whisper-rs.
