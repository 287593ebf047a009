#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::gossip_batch(data));
