//! Criterion benches of the conv ops on the CPU backend, the emulator and a GPU when present.
//! STUB: to be written.

use criterion::{Criterion, criterion_group, criterion_main};

fn benches_conv(_c: &mut Criterion) {}

criterion_group!(benches, benches_conv);
criterion_main!(benches);
