//! Whisper models: names, cache, fetching and the CTranslate2 importer.
