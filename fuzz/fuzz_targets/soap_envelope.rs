#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clm_fuzz::soap_envelope(data));
