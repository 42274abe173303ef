//! Tensor layouts at the edges. The engine keeps activations NHWC (channels innermost: what
//! implicit-GEMM convolutions and attention want, with no transposes between layers) and
//! convolution weights OHWI. PyTorch and diffusers use NCHW activations and OIHW weights, so
//! data is converted once on load and save, never inside the model.

/// [n, c, h, w] -> [n, h, w, c]
pub fn nchw_to_nhwc(x: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    assert_eq!(x.len(), n * c * h * w, "nchw_to_nhwc: shape does not match the data");
    let mut out = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..h * w {
                out[(b * h * w + p) * c + ch] = x[(b * c + ch) * h * w + p];
            }
        }
    }
    out
}

/// [n, h, w, c] -> [n, c, h, w]
pub fn nhwc_to_nchw(x: &[f32], n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    assert_eq!(x.len(), n * c * h * w, "nhwc_to_nchw: shape does not match the data");
    let mut out = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..h * w {
                out[(b * c + ch) * h * w + p] = x[(b * h * w + p) * c + ch];
            }
        }
    }
    out
}

/// Convolution weights [out, in, kh, kw] -> [out, kh, kw, in]: the same permutation as
/// activations, with "out" in the batch position.
pub fn oihw_to_ohwi(wt: &[f32], o: usize, i: usize, kh: usize, kw: usize) -> Vec<f32> {
    nchw_to_nhwc(wt, o, i, kh, kw)
}

/// [out, kh, kw, in] -> [out, in, kh, kw]
pub fn ohwi_to_oihw(wt: &[f32], o: usize, i: usize, kh: usize, kw: usize) -> Vec<f32> {
    nhwc_to_nchw(wt, o, i, kh, kw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nchw_element_lands_at_its_nhwc_index() {
        let (n, c, h, w) = (2, 3, 4, 5);
        let x: Vec<f32> = (0..n * c * h * w).map(|i| i as f32).collect();
        let y = nchw_to_nhwc(&x, n, c, h, w);
        // element (b=1, c=2, y=3, x=4)
        assert_eq!(y[((h + 3) * w + 4) * c + 2], x[((c + 2) * h + 3) * w + 4]);
        assert_eq!(nhwc_to_nchw(&y, n, c, h, w), x);
    }

    #[test]
    fn weight_permutation_round_trips() {
        let (o, i, k) = (4, 3, 3);
        let wt: Vec<f32> = (0..o * i * k * k).map(|v| v as f32 * 0.5).collect();
        let ohwi = oihw_to_ohwi(&wt, o, i, k, k);
        // weight (o=2, i=1, ky=0, kx=2) is at [2][0][2][1] in OHWI
        assert_eq!(ohwi[((2 * k) * k + 2) * i + 1], wt[((2 * i + 1) * k) * k + 2]);
        assert_eq!(ohwi_to_oihw(&ohwi, o, i, k, k), wt);
    }
}
