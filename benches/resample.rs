//! Criterion benches of the resample ops on the CPU backend, the emulator and a GPU when present.
//! STUB: to be written.

use criterion::{Criterion, criterion_group, criterion_main};

fn benches_resample(_c: &mut Criterion) {}

criterion_group!(benches, benches_resample);
criterion_main!(benches);
