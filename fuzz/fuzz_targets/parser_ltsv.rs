#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| logferry_fuzz_targets::parser_ltsv(data));
