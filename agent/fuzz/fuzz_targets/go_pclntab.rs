#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kspan::protocol::fuzzing::go_pclntab(data));
