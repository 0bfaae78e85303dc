//! Audio ingest: decoding, downmix and resampling to 16 kHz mono `f32`.
