use ddpm::fast::gemm::{Mat, MatMut, Threads, matmul};
use std::time::Instant;
fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut b = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            f()
        }
        b = b.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    b
}
fn main() {
    let (co, kk) = (128usize, 1152usize);
    for m in [455usize, 1024, 4096] {
        let dy: Vec<f32> = (0..m * co).map(|i| (i % 7) as f32 * 0.1).collect();
        let col: Vec<f32> = (0..m * kk).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut dw = vec![0f32; co * kk];
        let mut dwt = vec![0f32; co * kk];
        let macs = (m * co * kk) as f64;
        let t = best(10, || {
            matmul(MatMut::rows(&mut dw, co, kk), Mat::rows(&dy, m, co).t(), Mat::rows(&col, m, kk), true, Threads::One)
        });
        println!("m {m}: dW[co,kk] += dy^T col: {:.1} GMAC/s", macs / t / 1e9);
        let t = best(10, || {
            matmul(
                MatMut::rows(&mut dwt, kk, co),
                Mat::rows(&col, m, kk).t(),
                Mat::rows(&dy, m, co),
                true,
                Threads::One,
            )
        });
        println!("m {m}: dW^T[kk,co] += col^T dy: {:.1} GMAC/s", macs / t / 1e9);
    }
}
