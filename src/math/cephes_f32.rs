//! Scalar ports of the float32 log and sincos in PyTorch's `avx_mathfun.h` (Cephes polynomials,
//! after Julien Pommier's sse_mathfun), which torch.randn uses on x86 CPUs with AVX2 (AVX-512
//! machines too: that kernel has no AVX-512 variant). PyTorch's build (GCC, -mavx2 -mfma, default
//! FP contraction) fuses some multiply-add pairs of the header into FMAs; the `mul_add` calls below
//! are exactly those (read off GCC's assembly of the header), every other step is one rounded
//! float32 operation, so the results match PyTorch bit for bit (tests/diffusion.rs).
//! The constants are the header's, digit for digit.
#![allow(clippy::excessive_precision)]

/// log256_ps for one lane (x > 0).
pub fn log(x: f32) -> f32 {
    const P: [f32; 9] = [
        7.0376836292E-2,
        -1.1514610310E-1,
        1.1676998740E-1,
        -1.2420140846E-1,
        1.4249322787E-1,
        -1.6668057665E-1,
        2.0000714765E-1,
        -2.4999993993E-1,
        3.3333331174E-1,
    ];
    if !(x > 0.0) {
        return f32::NAN;
    }
    let x = x.max(f32::from_bits(0x0080_0000)); // cut off denormals
    let exponent = ((x.to_bits() >> 23) as i32) - 0x7f;
    let mut x = f32::from_bits((x.to_bits() & !0x7f80_0000) | 0.5f32.to_bits()); // mantissa in [0.5, 1)
    let mut e = exponent as f32 + 1.0;
    let below = x < std::f32::consts::FRAC_1_SQRT_2;
    let tmp = if below { x } else { 0.0 };
    x -= 1.0;
    e -= if below { 1.0 } else { 0.0 };
    x += tmp;
    let z = x * x;
    let mut y = P[0];
    for &p in &P[1..] {
        y = y.mul_add(x, p);
    }
    y *= x;
    y = y.mul_add(z, e * -2.12194440e-4);
    y = (-z).mul_add(0.5, y);
    x += y;
    e.mul_add(0.693359375, x)
}

/// sincos256_ps for one lane: (sin x, cos x).
pub fn sincos(x: f32) -> (f32, f32) {
    let mut sign_sin = x.is_sign_negative();
    let mut x = x.abs();
    let j = (((x * 1.27323954473516) as i32) + 1) & !1; // 4/pi, then round up to even
    let y = j as f32;
    let swap_sin = j & 4 != 0;
    let first_poly = j & 2 == 0;
    x = y.mul_add(-0.78515625, x);
    x = y.mul_add(-2.4187564849853515625e-4, x);
    x = y.mul_add(-3.77489497744594108e-8, x);
    let sign_cos = !(j - 2) & 4 != 0;
    sign_sin ^= swap_sin;
    let z = x * x;
    let mut c = 2.443315711809948E-005f32.mul_add(z, -1.388731625493765E-003);
    c = c.mul_add(z, 4.166664568298827E-002);
    c *= z;
    c = c.mul_add(z, -(z * 0.5));
    c += 1.0;
    let mut s = (-1.9515295891E-4f32).mul_add(z, 8.3321608736E-3);
    s = s.mul_add(z, -1.6666654611E-1);
    s *= z;
    s = s.mul_add(x, x);
    let (sin, cos) = if first_poly { (s, c) } else { (c, s) };
    (if sign_sin { -sin } else { sin }, if sign_cos { -cos } else { cos })
}
