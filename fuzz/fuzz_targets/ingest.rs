//! Fuzz target `ingest`: see `harness/ingest.rs`.
#![no_main]

#[path = "../harness/ingest.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../harness/input.rs"]
mod input;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys's panic hook aborts even on panics the code under test catches (the
    // audio decoder catches symphonia's); the default hook lets those be, and an uncaught
    // panic still reaches libfuzzer-sys's catch_unwind, which aborts and reports it.
    static DEFAULT_HOOK: std::sync::Once = std::sync::Once::new();
    DEFAULT_HOOK.call_once(|| drop(std::panic::take_hook()));
    harness::run(data);
});
