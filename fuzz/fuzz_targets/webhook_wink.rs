#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clm_fuzz::webhook_wink(data));
