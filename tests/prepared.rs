//! Weights kept prepared across calls (src/fast/prepared.rs): the forward convolutions (1x1,
//! im2col, Winograd F(2x2) and F(4x4)) and the linear layer give the same bits with the cache
//! on and off, on the calls that prepare and keep and on the calls that hit; a weight changed in
//! place is seen at the next call; nothing is kept past the budget. The cache's budget is
//! process-wide, so every test here holds `BUDGET`.

mod common;

use common::say;
use ddpm::fast::{bf16, conv, linear, prepared};
use ddpm::shapes::{Conv2dShape, LinearShape};
use ddpm::testing::{random_vec, rng_for};
use std::sync::Mutex;

static BUDGET: Mutex<()> = Mutex::new(());

/// One op on weights `w`: its output for fixed inputs, NaN-poisoned before each run.
type Op = Box<dyn Fn(&[f32]) -> Vec<f32>>;

fn conv_op(s: Conv2dShape) -> (Op, usize) {
    let mut rng = rng_for(&format!("prepared conv {s:?}"));
    let x = random_vec(&mut rng, s.x_len(), -1.0, 1.0);
    let b = random_vec(&mut rng, s.out_c, -1.0, 1.0);
    let op = move |w: &[f32]| {
        let mut y = vec![f32::NAN; s.y_len()];
        conv::conv2d_fwd(&s, &x, w, Some(&b), &mut y);
        y
    };
    (Box::new(op), s.w_len())
}

/// The bf16 forward on its portable path (rounded weights kept, then the f32 op's own).
fn bf16_conv_op(s: Conv2dShape) -> (Op, usize) {
    let mut rng = rng_for(&format!("prepared bf16 conv {s:?}"));
    let x = random_vec(&mut rng, s.x_len(), -1.0, 1.0);
    let op = move |w: &[f32]| {
        let mut y = vec![f32::NAN; s.y_len()];
        bf16::conv::conv2d_fwd(&s, &x, w, None, &mut y);
        y
    };
    (Box::new(op), s.w_len())
}

fn bf16_linear_op(s: LinearShape) -> (Op, usize) {
    let mut rng = rng_for("prepared bf16 linear");
    let x = random_vec(&mut rng, s.rows * s.in_features, -1.0, 1.0);
    let op = move |w: &[f32]| {
        let mut y = vec![f32::NAN; s.rows * s.out_features];
        bf16::linear::linear_fwd(&s, &x, w, None, &mut y);
        y
    };
    (Box::new(op), s.out_features * s.in_features)
}

fn linear_op(s: LinearShape) -> (Op, usize) {
    let mut rng = rng_for("prepared linear");
    let x = random_vec(&mut rng, s.rows * s.in_features, -1.0, 1.0);
    let b = random_vec(&mut rng, s.out_features, -1.0, 1.0);
    let op = move |w: &[f32]| {
        let mut y = vec![f32::NAN; s.rows * s.out_features];
        linear::linear_fwd(&s, &x, w, Some(&b), &mut y);
        y
    };
    (Box::new(op), s.out_features * s.in_features)
}

/// The ops under test, named: each kind of prepared weights, odd channel counts included.
fn ops() -> Vec<(&'static str, Op, usize)> {
    let f4 = Conv2dShape::conv3x3(4, 32, 32, 24, 40);
    let f2 = Conv2dShape::conv3x3(1, 31, 32, 24, 40);
    assert!(conv::uses_winograd(&f4) && conv::uses_winograd(&f2), "the Winograd shapes no longer use Winograd");
    let named = [
        ("1x1", conv_op(Conv2dShape::conv1x1(2, 5, 7, 37, 19))),
        ("im2col stride 2", conv_op(Conv2dShape::downsample(1, 9, 11, 13, 21, 1))),
        ("im2col 3 channels", conv_op(Conv2dShape::conv3x3(1, 6, 5, 3, 17))),
        ("Winograd F4", conv_op(f4)),
        ("Winograd F2", conv_op(f2)),
        ("linear", linear_op(LinearShape { rows: 3, in_features: 45, out_features: 29 })),
        ("bf16 Winograd F2", bf16_conv_op(f2)),
        ("bf16 1x1", bf16_conv_op(Conv2dShape::conv1x1(1, 3, 5, 33, 17))),
        ("bf16 linear", bf16_linear_op(LinearShape { rows: 2, in_features: 31, out_features: 18 })),
    ];
    // The bf16 ops on their portable path on every CPU (the packed ones keep nothing).
    bf16::force_kernel(Some(None));
    named.into_iter().map(|(name, (op, w_len))| (name, op, w_len)).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn kept_weights_give_the_same_bits_and_follow_changes() {
    let _guard = BUDGET.lock().unwrap_or_else(|e| e.into_inner());
    for (name, op, w_len) in ops() {
        let mut w = random_vec(&mut rng_for(name), w_len, -1.0, 1.0);
        prepared::set_budget(Some(0));
        let want = bits(&op(&w));
        prepared::set_budget(Some(1 << 30));
        prepared::clear();
        // First call: seen; second: prepared and kept; later: kept copies.
        for call in 0..4 {
            assert!(bits(&op(&w)) == want, "{name}: call {call} with the cache differs from without it");
        }
        assert!(prepared::held_bytes() > 0, "{name}: nothing was kept after 4 calls on the same weights");

        // A weight changed in place (same address) must be seen at once.
        w[w_len / 2] += 0.5;
        let got = bits(&op(&w));
        prepared::set_budget(Some(0));
        let changed = bits(&op(&w));
        assert!(changed != want, "{name}: the changed weight does not change the output");
        assert!(got == changed, "{name}: the output after a weight changed in place came from the old weights");
        say(&format!("{name}: same bits with and without the cache; a weight changed in place was seen"));
    }
    prepared::set_budget(None);
    prepared::clear();
}

#[test]
fn nothing_is_kept_past_the_budget() {
    let _guard = BUDGET.lock().unwrap_or_else(|e| e.into_inner());
    prepared::clear();
    prepared::set_budget(Some(1024));
    for (name, op, w_len) in ops() {
        let w = random_vec(&mut rng_for(name), w_len, -1.0, 1.0);
        let first = bits(&op(&w));
        for _ in 0..3 {
            assert!(bits(&op(&w)) == first, "{name}: over the budget, the bits changed");
        }
        assert_eq!(prepared::held_bytes(), 0, "{name}: kept past a 1 KiB budget");
    }
    prepared::set_budget(None);
}

/// Under a freeze (the sampler's, over its parameters) a kept entry is compared once, then used
/// without a compare until the freeze ends; after it, every use compares again.
#[test]
fn frozen_weights_are_compared_once() {
    let _guard = BUDGET.lock().unwrap_or_else(|e| e.into_inner());
    prepared::set_budget(Some(1 << 30));
    for (name, op, w_len) in ops() {
        prepared::clear();
        let mut w = random_vec(&mut rng_for(name), w_len, -1.0, 1.0);
        let want = bits(&op(&w));
        assert!(bits(&op(&w)) == want, "{name}: second call");
        {
            let _frozen = prepared::freeze([&w[..]]);
            let before = prepared::compares();
            for call in 0..3 {
                assert!(bits(&op(&w)) == want, "{name}: frozen call {call} differs");
            }
            assert_eq!(prepared::compares() - before, 1, "{name}: compares under one freeze");
        }
        let before = prepared::compares();
        assert!(bits(&op(&w)) == want, "{name}: after the freeze");
        assert_eq!(prepared::compares() - before, 1, "{name}: no compare after the freeze ended");
        w[0] -= 0.25;
        let changed = bits(&op(&w));
        prepared::set_budget(Some(0));
        assert!(changed == bits(&op(&w)), "{name}: a change after the freeze was not seen");
        prepared::set_budget(Some(1 << 30));
    }
    prepared::set_budget(None);
    prepared::clear();
}
