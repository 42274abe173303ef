//! The tensor-core attention with its output in bf16 (kernels/attention_bf16.cu `_to_bf16`, and the
//! backward's dQ kernels that read it, `_out_bf16`), on the emulator (tests/attention_bf16.rs) and
//! on a GPU (tests/gpu.rs). The forward must store the f32 kernel's out rounded to nearest even with
//! the same lse; the backward from a bf16 out must give the bits the f32-out backward gives on that
//! out widened (exact), dq, dk and dv alike. Every instantiation (SHAPES), into poisoned outputs.

use super::attention_bf16_checks::{SHAPES, random_case, run, shape};
use ddpm::cuda::attention_bf16::{attention_bwd_bf16, attention_fwd_bf16};
use ddpm::gpu::{Buffer, Gpu};
use half::bf16;
use rand::{RngExt, SeedableRng, rngs::StdRng};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// dq, dk, dv of the backward from `out` (either type), poisoned first.
fn grads<T: ddpm::cuda::attention_bf16::AttentionOut>(
    gpu: &Gpu,
    s: &ddpm::shapes::AttentionShape,
    [q, k, v, dout]: [&Buffer<bf16>; 4],
    out: &Buffer<T>,
    lse: &Buffer<f32>,
) -> [Vec<u32>; 3] {
    let poisoned = || gpu.upload(&vec![f32::NAN; s.len()]).unwrap();
    let (mut dq, mut dk, mut dv) = (poisoned(), poisoned(), poisoned());
    attention_bwd_bf16(s, q, k, v, out, lse, dout, &mut dq, &mut dk, &mut dv).unwrap();
    [dq, dk, dv].map(|g| bits(&gpu.download(&g).unwrap()))
}

pub fn bf16_output(gpu: &Gpu) {
    let mut rng = StdRng::seed_from_u64(0xa77e_b160);
    for sh in &SHAPES {
        let s = shape(sh);
        let c = random_case(&mut rng, s, sh.4);
        let (out, lse) = run(gpu, &c);
        let (q, k, v) = (gpu.upload(&c.q).unwrap(), gpu.upload(&c.k).unwrap(), gpu.upload(&c.v).unwrap());
        let mut out_b = gpu.upload(&vec![bf16::NAN; s.len()]).unwrap();
        let mut lse_b = gpu.upload(&vec![f32::NAN; s.lse_len()]).unwrap();
        attention_fwd_bf16(&s, &q, &k, &v, &mut out_b, &mut lse_b).unwrap();
        let got: Vec<u16> = gpu.download(&out_b).unwrap().iter().map(|x| x.to_bits()).collect();
        let want: Vec<u16> = out.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
        assert!(got == want, "{s:?}: the bf16 out is not the f32 out rounded");
        assert!(bits(&gpu.download(&lse_b).unwrap()) == bits(&lse), "{s:?}: lse differs with a bf16 out");

        let dout: Vec<bf16> = (0..s.len()).map(|_| bf16::from_f32(rng.random_range(-1.0f32..1.0))).collect();
        let dout = gpu.upload(&dout).unwrap();
        let widened: Vec<f32> = gpu.download(&out_b).unwrap().iter().map(|x| x.to_f32()).collect();
        let (lse_g, widened) = (gpu.upload(&lse).unwrap(), gpu.upload(&widened).unwrap());
        let from_bf16 = grads(gpu, &s, [&q, &k, &v, &dout], &out_b, &lse_g);
        let from_widened = grads(gpu, &s, [&q, &k, &v, &dout], &widened, &lse_g);
        for (name, (a, b)) in ["dq", "dk", "dv"].iter().zip(from_bf16.iter().zip(&from_widened)) {
            assert!(a == b, "{s:?}: {name} from the bf16 out is not the f32-out backward's on it widened");
        }
    }
}
