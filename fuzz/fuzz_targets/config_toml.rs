#![no_main]
//! Fuzz target: op_agent::fuzz::config_toml (see agent/src/fuzz.rs).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| op_agent::fuzz::config_toml(data));
