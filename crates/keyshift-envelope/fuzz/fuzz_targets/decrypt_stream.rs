#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = keyshift_envelope::fuzzing::decrypt_stream(data);
});
