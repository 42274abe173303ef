//! Criterion benches of the norm_linear ops on the CPU backend, the emulator and a GPU when present.
//! STUB: to be written.

use criterion::{Criterion, criterion_group, criterion_main};

fn benches_norm_linear(_c: &mut Criterion) {}

criterion_group!(benches, benches_norm_linear);
criterion_main!(benches);
