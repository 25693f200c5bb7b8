#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keyshift_envelope::fuzzing::parse_header(data);
});
