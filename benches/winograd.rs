//! F(2x2, 3x3) vs F(4x4, 3x3) Winograd vs im2col (src/fast/conv.rs, winograd.rs, winograd4.rs)
//! side by side in one process, on the cifar10 UNet's 3x3 shapes (those of benches/fast_conv.rs)
//! at batch 16 and 1, forward and input gradient (issue #11). Each round runs the three
//! algorithms back to back, so a shared machine's load hits all three alike; the line gives each
//! one's median over the rounds, its spread (min-max), and the ratios of the medians. Forward,
//! input gradient and weight gradient (src/fast/winograd_grad.rs).
//!
//!   cargo bench --bench winograd [-- --rounds 9] [--op fwd|bwd_input|bwd_weight]
//!
//! Without --bench (`cargo test --benches`) it checks that the three agree on one small shape.

use ddpm::fast::conv::{Conv3x3Algo, conv3x3_bwd_weight_with, conv3x3_with};
use ddpm::fast::simd::SimdLevel;
use ddpm::shapes::Conv2dShape;
use ddpm::testing::{random_vec, rng_for};
use std::time::Instant;

const ALGOS: [Conv3x3Algo; 3] = [Conv3x3Algo::Im2col, Conv3x3Algo::WinogradF2, Conv3x3Algo::WinogradF4];

/// (name, batch 16 shape, also at batch 1).
fn shapes() -> Vec<(&'static str, Conv2dShape, bool)> {
    vec![
        ("3x3_128_32x32", Conv2dShape::conv3x3(16, 32, 32, 128, 128), true),
        ("3x3_256_16x16", Conv2dShape::conv3x3(16, 16, 16, 256, 256), true),
        ("3x3_256_8x8", Conv2dShape::conv3x3(16, 8, 8, 256, 256), true),
        ("3x3_512to256_4x4", Conv2dShape::conv3x3(16, 4, 4, 512, 256), false),
        ("3x3_384to128_32x32", Conv2dShape::conv3x3(16, 32, 32, 384, 128), false),
    ]
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Fwd,
    BwdInput,
    BwdWeight,
}

/// Milliseconds per call of each algorithm, one Vec of rounds each.
fn time_rounds(s: &Conv2dShape, op: Op, rounds: usize) -> [Vec<f64>; 3] {
    let mut rng = rng_for("winograd bench");
    let backward = op == Op::BwdInput;
    let (x_len, y_len) = if backward { (s.y_len(), s.x_len()) } else { (s.x_len(), s.y_len()) };
    let x = random_vec(&mut rng, x_len, -1.0, 1.0);
    let w = random_vec(&mut rng, s.w_len(), -1.0, 1.0);
    let b = random_vec(&mut rng, s.out_c, -1.0, 1.0);
    let dy = random_vec(&mut rng, s.y_len(), -1.0, 1.0);
    let bias = (op == Op::Fwd).then_some(&b[..]);
    let mut y = vec![0.0; y_len];
    let mut dw = vec![0.0; s.w_len()];
    // Calls per timing: about 20 ms of work at ~100 GFLOP/s.
    let flops = 2.0 * (s.batch * s.in_h * s.in_w * 9 * s.in_c * s.out_c) as f64;
    let calls = (2e9 / flops).ceil().max(1.0) as usize;
    let mut out: [Vec<f64>; 3] = Default::default();
    for round in 0..=rounds {
        for (i, &algo) in ALGOS.iter().enumerate() {
            let t = Instant::now();
            for _ in 0..calls {
                match op {
                    Op::BwdWeight => conv3x3_bwd_weight_with(algo, s, &x, &dy, &mut dw),
                    _ => conv3x3_with(algo, backward, s, &x, &w, bias, &mut y),
                }
            }
            // Round 0 warms the caches and scratch buffers.
            if round > 0 {
                out[i].push(t.elapsed().as_secs_f64() * 1e3 / calls as f64);
            }
        }
    }
    out
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn smoke() {
    let s = Conv2dShape::conv3x3(2, 9, 7, 16, 24);
    let mut rng = rng_for("winograd smoke");
    let (x, w) = (random_vec(&mut rng, s.x_len(), -1.0, 1.0), random_vec(&mut rng, s.w_len(), -1.0, 1.0));
    let ys: Vec<Vec<f32>> = ALGOS
        .iter()
        .map(|&a| {
            let mut y = vec![0.0; s.y_len()];
            conv3x3_with(a, false, &s, &x, &w, None, &mut y);
            y
        })
        .collect();
    for y in &ys[1..] {
        let worst = y.iter().zip(&ys[0]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-3, "winograd bench smoke: algorithms differ by {worst}");
    }
    println!("winograd bench: smoke check only (run with --bench to time)");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return smoke();
    }
    let rounds = args.iter().position(|a| a == "--rounds").map_or(9, |i| args[i + 1].parse().expect("--rounds N"));
    let only = args.iter().position(|a| a == "--op").map(|i| args[i + 1].as_str());
    println!("cpu: {}", SimdLevel::describe());
    println!("ms per call, median of {rounds} rounds [min-max]; ratios of medians");
    for (name, s16, also_b1) in shapes() {
        let batches: &[usize] = if also_b1 { &[16, 1] } else { &[16] };
        for &batch in batches {
            let s = Conv2dShape { batch, ..s16 };
            for (op, op_name) in [(Op::Fwd, "fwd"), (Op::BwdInput, "bwd_input"), (Op::BwdWeight, "bwd_weight")] {
                if only.is_some_and(|o| o != op_name) {
                    continue;
                }
                let t = time_rounds(&s, op, rounds);
                let m: Vec<f64> = t.iter().map(|v| median(v)).collect();
                let cell = |i: usize| {
                    let (lo, hi) = t[i].iter().fold((f64::MAX, 0f64), |(l, h), &v| (l.min(v), h.max(v)));
                    format!("{:8.3} [{:.3}-{:.3}]", m[i], lo, hi)
                };
                println!(
                    "{name:20} b{batch:<2} {op_name:10} im2col {}  F2 {}  F4 {}  F4/F2 {:.3}  F4/im2col {:.3}  F2/im2col {:.3}",
                    cell(0),
                    cell(1),
                    cell(2),
                    m[2] / m[1],
                    m[2] / m[0],
                    m[1] / m[0],
                );
            }
        }
    }
}
