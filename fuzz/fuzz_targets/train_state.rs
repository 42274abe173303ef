#![no_main]
// ddpm::fuzz::train_state: errors are fine, panics, hangs and runaway allocations are not.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ddpm::fuzz::train_state(data);
});
