#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clm_fuzz::sms_kannel_dlr(data));
