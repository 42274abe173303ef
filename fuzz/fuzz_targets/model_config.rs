#![no_main]
// ddpm::fuzz::model_config: errors are fine, panics, hangs and runaway allocations are not.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ddpm::fuzz::model_config(data);
});
