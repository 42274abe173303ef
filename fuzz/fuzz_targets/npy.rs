#![no_main]
// ddpm::fuzz::npy: errors are fine, panics, hangs and runaway allocations are not.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ddpm::fuzz::npy(data);
});
