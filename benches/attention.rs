//! Criterion benches of the attention ops on the CPU backend, the emulator and a GPU when present.
//! STUB: to be written.

use criterion::{Criterion, criterion_group, criterion_main};

fn benches_attention(_c: &mut Criterion) {}

criterion_group!(benches, benches_attention);
criterion_main!(benches);
