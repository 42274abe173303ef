#![no_main]
// ddpm::fuzz::idx: errors are fine, panics, hangs and runaway allocations are not.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ddpm::fuzz::idx(data);
});
