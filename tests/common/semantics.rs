//! One check per CUDA feature the emulator supports, each against expectations computed here
//! from CUDA's documented semantics.

use ddpm::gpu::{Gpu, KernelArgs, LaunchConfig};
use ddpm::testing::{assert_close, rng_for};
use rand::RngExt;

fn cfg(grid: [u32; 3], block: [u32; 3]) -> LaunchConfig {
    LaunchConfig { grid, block, shared_bytes: 0 }
}

pub fn indices(gpu: &Gpu) {
    let (grid, block) = ([3u32, 2, 2], [5u32, 3, 2]);
    let (nb, nt) = (12usize, 30usize);
    let out = gpu.upload(&vec![u32::MAX; 12 * nb * nt]).unwrap();
    gpu.launch("emu_test_indices", cfg(grid, block), &KernelArgs::new().buf(&out)).unwrap();
    let got = gpu.download(&out).unwrap();
    for b in 0..nb {
        let bi = [b % 3, (b / 3) % 2, b / 6];
        for t in 0..nt {
            let ti = [t % 5, (t / 5) % 3, t / 15];
            let want: Vec<u32> = ti.iter().chain(&bi).map(|&v| v as u32).chain(block).chain(grid).collect();
            let at = 12 * (b * nt + t);
            assert_eq!(&got[at..at + 12], &want[..], "block {bi:?} thread {ti:?}");
        }
    }
}

fn reversed_chunks(x: &[f32], chunk: usize) -> Vec<f32> {
    x.chunks(chunk).flat_map(|c| c.iter().rev().copied()).collect()
}

pub fn static_shared(gpu: &Gpu) {
    let x: Vec<f32> = (0..5 * 128).map(|i| i as f32 * 0.5 - 7.0).collect();
    let input = gpu.upload(&x).unwrap();
    let out = gpu.upload(&vec![f32::NAN; x.len()]).unwrap();
    gpu.launch("emu_test_static_shared", LaunchConfig::linear(5, 128), &KernelArgs::new().buf(&input).buf(&out))
        .unwrap();
    assert_eq!(gpu.download(&out).unwrap(), reversed_chunks(&x, 128));
}

pub fn dynamic_shared(gpu: &Gpu) {
    let threads = 96;
    let x: Vec<f32> = (0..7 * threads).map(|i| (i * 37 % 101) as f32).collect();
    let input = gpu.upload(&x).unwrap();
    let out = gpu.upload(&vec![f32::NAN; x.len()]).unwrap();
    let launch = LaunchConfig::linear(7, threads as u32).with_shared(threads as u32 * 4);
    gpu.launch("emu_test_dynamic_shared", launch, &KernelArgs::new().buf(&input).buf(&out)).unwrap();
    assert_eq!(gpu.download(&out).unwrap(), reversed_chunks(&x, threads));
}

pub fn dynamic_shared_optin(gpu: &Gpu) {
    // 64 KiB is over the 48 KiB default: refused until the kernel opts in, then it runs.
    let threads = 128u32;
    let x: Vec<f32> = (0..threads).map(|i| i as f32).collect();
    let input = gpu.upload(&x).unwrap();
    let out = gpu.upload(&vec![f32::NAN; x.len()]).unwrap();
    let launch = LaunchConfig::linear(1, threads).with_shared(64 * 1024);
    let args = KernelArgs::new().buf(&input).buf(&out);
    let err = gpu.launch("emu_test_dynamic_shared", launch, &args).unwrap_err().to_string();
    assert!(err.contains("emu_test_dynamic_shared") && err.contains("shared memory"), "{err}");
    gpu.set_max_dynamic_shared("emu_test_dynamic_shared", 64 * 1024).unwrap();
    gpu.launch("emu_test_dynamic_shared", launch, &args).unwrap();
    assert_eq!(gpu.download(&out).unwrap(), reversed_chunks(&x, threads as usize));
    // A smaller opt-in later (a smaller launch of the same kernel) must not lower the attribute:
    // a graph captured with the 64 KiB launch replays it with whatever is set then.
    gpu.set_max_dynamic_shared("emu_test_dynamic_shared", 16 * 1024).unwrap();
    assert_eq!(gpu.max_dynamic_shared("emu_test_dynamic_shared"), Some(64 * 1024), "the opt-in is a high-water mark");
    let again = gpu.upload(&vec![f32::NAN; x.len()]).unwrap();
    gpu.launch("emu_test_dynamic_shared", launch, &KernelArgs::new().buf(&input).buf(&again)).unwrap();
    assert_eq!(gpu.download(&again).unwrap(), reversed_chunks(&x, threads as usize));
}

/// What lane `lane` reads in each of emu_test_shuffles' 8 shuffles (indices within the warp).
fn shuffle_sources(lane: usize) -> [usize; 8] {
    let within = |w: usize| lane & !(w - 1);
    let pos = |w: usize| lane & (w - 1);
    let xor = |m: usize, w: usize| if (lane ^ m) < within(w) + w { lane ^ m } else { lane };
    [
        (lane * 7) % 32,
        within(8) + ((lane + 3) & 7),
        if lane >= 3 { lane - 3 } else { lane },
        if pos(16) >= 5 { lane - 5 } else { lane },
        if lane + 5 < 32 { lane + 5 } else { lane },
        if pos(8) + 3 < 8 { lane + 3 } else { lane },
        xor(13, 32),
        xor(12, 8),
    ]
}

pub fn shuffles(gpu: &Gpu) {
    let mut rng = rng_for("shuffles");
    let x: Vec<i32> = (0..128).map(|_| rng.random_range(-1000..1000)).collect();
    let input = gpu.upload(&x).unwrap();
    let out = gpu.upload(&vec![i32::MIN; 8 * x.len()]).unwrap();
    gpu.launch("emu_test_shuffles", LaunchConfig::linear(2, 64), &KernelArgs::new().buf(&input).buf(&out)).unwrap();
    let got = gpu.download(&out).unwrap();
    for i in 0..x.len() {
        let warp_base = i / 32 * 32;
        let want: Vec<i32> = shuffle_sources(i % 32).iter().map(|&s| x[warp_base + s]).collect();
        assert_eq!(&got[8 * i..8 * i + 8], &want[..], "thread {i}");
    }
}

pub fn shuffle_half_mask(gpu: &Gpu) {
    let mut rng = rng_for("shuffle_half_mask");
    let x: Vec<f32> = (0..64).map(|_| rng.random_range(-1.0..1.0)).collect();
    let input = gpu.upload(&x).unwrap();
    let out = gpu.upload(&vec![f32::NAN; 64]).unwrap();
    gpu.launch("emu_test_shuffle_half_mask", LaunchConfig::linear(1, 64), &KernelArgs::new().buf(&input).buf(&out))
        .unwrap();
    let want: Vec<f32> = (0..64).map(|i| x[i / 16 * 16..i / 16 * 16 + 16].iter().sum()).collect();
    assert_close("half-warp butterfly sum", &gpu.download(&out).unwrap(), &want, 1e-6, 1e-5);
}

pub fn votes(gpu: &Gpu) {
    let mut rng = rng_for("votes");
    // Warp 0: every predicate true; warp 2: none; warps 1 and 3: random.
    let x: Vec<i32> = (0..128)
        .map(|i| match i / 32 {
            0 => 3 * rng.random_range(0..100),
            2 => 3 * rng.random_range(0..100) + 1,
            _ => rng.random_range(0..300),
        })
        .collect();
    let input = gpu.upload(&x).unwrap();
    let out = gpu.upload(&vec![u32::MAX - 1; 3 * x.len()]).unwrap();
    gpu.launch("emu_test_votes", LaunchConfig::linear(2, 64), &KernelArgs::new().buf(&input).buf(&out)).unwrap();
    let got = gpu.download(&out).unwrap();
    for i in 0..x.len() {
        let warp = &x[i / 32 * 32..i / 32 * 32 + 32];
        let ballot = warp.iter().enumerate().fold(0u32, |b, (l, v)| b | (((v % 3 == 0) as u32) << l));
        let want = [ballot, (ballot != 0) as u32, (ballot == u32::MAX) as u32];
        assert_eq!(&got[3 * i..3 * i + 3], &want, "thread {i}");
    }
}

pub fn sync_reductions(gpu: &Gpu) {
    let mut rng = rng_for("sync_reductions");
    let threads = 100; // not a multiple of the warp size
    let x: Vec<i32> = (0..4 * threads)
        .map(|i| match i / threads {
            0 => rng.random_range(1..50),
            1 => rng.random_range(-50..1),
            _ => rng.random_range(-50..50),
        })
        .collect();
    let input = gpu.upload(&x).unwrap();
    let out = gpu.upload(&[-7i32; 12]).unwrap();
    let launch = LaunchConfig::linear(4, threads as u32);
    gpu.launch("emu_test_sync_reductions", launch, &KernelArgs::new().buf(&input).buf(&out)).unwrap();
    let got = gpu.download(&out).unwrap();
    for b in 0..4 {
        let block = &x[b * threads..(b + 1) * threads];
        let count = block.iter().filter(|&&v| v > 0).count() as i32;
        let want = [count, (count == threads as i32) as i32, (count > 0) as i32];
        assert_eq!(&got[3 * b..3 * b + 3], &want, "block {b}");
    }
}

pub fn atomics(gpu: &Gpu) {
    let mut rng = rng_for("atomics");
    let (blocks, threads) = (8usize, 128usize);
    let x: Vec<i32> = (0..blocks * threads).map(|_| rng.random_range(0..1000)).collect();
    let input = gpu.upload(&x).unwrap();
    let fsum = gpu.upload(&[0f32]).unwrap();
    let isum = gpu.upload(&[0i32]).unwrap();
    let umax = gpu.upload(&[0u32]).unwrap();
    let imin = gpu.upload(&[i32::MAX]).unwrap();
    let cas = gpu.upload(&[0u32]).unwrap();
    let block_sums = gpu.upload(&vec![-1i32; blocks]).unwrap();
    let args = KernelArgs::new().buf(&input).buf(&fsum).buf(&isum).buf(&umax).buf(&imin).buf(&cas).buf(&block_sums);
    gpu.launch("emu_test_atomics", LaunchConfig::linear(blocks as u32, threads as u32), &args).unwrap();
    let n = x.len();
    assert_eq!(gpu.download(&fsum).unwrap(), [0.5 * n as f32]);
    assert_eq!(gpu.download(&isum).unwrap(), [x.iter().sum::<i32>()]);
    assert_eq!(gpu.download(&umax).unwrap(), [x.iter().map(|&v| (v * 7 % 1000) as u32).max().unwrap()]);
    assert_eq!(gpu.download(&imin).unwrap(), [x.iter().map(|&v| v - 500).min().unwrap()]);
    assert_eq!(gpu.download(&cas).unwrap(), [n as u32]);
    let want: Vec<i32> = x.chunks(threads).map(|c| c.iter().sum()).collect();
    assert_eq!(gpu.download(&block_sums).unwrap(), want);
}

pub fn math(gpu: &Gpu) {
    let mut rng = rng_for("math");
    let n = 1000; // not a multiple of the block size: the tail threads return early
    let x: Vec<f32> = (0..n).map(|_| rng.random_range(-3.0..3.0)).collect();
    let input = gpu.upload(&x).unwrap();
    let out = gpu.upload(&vec![f32::NAN; 8 * n]).unwrap();
    let args = KernelArgs::new().buf(&input).buf(&out).u32(n as u32);
    gpu.launch("emu_test_math", LaunchConfig::for_elements(n, 256), &args).unwrap();
    let want: Vec<f32> = x
        .iter()
        .flat_map(|&v| {
            let v = v as f64;
            [
                v.exp(),
                1.0 / (v.abs() + 1.0).sqrt(),
                v / 3.0,
                (v.abs() + 1.0).ln(),
                v.sin(),
                v.cos(),
                v.tanh(),
                v.max(0.0) + v.min(0.0) * 0.5,
            ]
            .map(|r| r as f32)
        })
        .collect();
    // The GPU's fast intrinsics (__expf, __sinf, ...) are within a few ulp on this range.
    assert_close("math functions", &gpu.download(&out).unwrap(), &want, 2e-6, 4e-6);
}

pub fn vector_types(gpu: &Gpu) {
    let mut rng = rng_for("vector_types");
    let n = 77;
    let f: Vec<f32> = (0..4 * n).map(|_| rng.random_range(-10.0..10.0)).collect();
    let i: Vec<i32> = (0..4 * n).map(|_| rng.random_range(-1000..1000)).collect();
    let (fin, iin) = (gpu.upload(&f).unwrap(), gpu.upload(&i).unwrap());
    let fout = gpu.upload(&vec![f32::NAN; 4 * n]).unwrap();
    let iout = gpu.upload(&vec![0i32; 4 * n]).unwrap();
    let f2 = gpu.upload(&vec![f32::NAN; 2 * n]).unwrap();
    let args = KernelArgs::new().buf(&fin).buf(&fout).buf(&iin).buf(&iout).buf(&f2).u32(n as u32);
    gpu.launch("emu_test_vector_types", LaunchConfig::for_elements(n, 32), &args).unwrap();
    let (gf, gi, g2) = (gpu.download(&fout).unwrap(), gpu.download(&iout).unwrap(), gpu.download(&f2).unwrap());
    for k in 0..n {
        let a = &f[4 * k..4 * k + 4];
        let b = &i[4 * k..4 * k + 4];
        assert_eq!(&gf[4 * k..4 * k + 4], &[a[3], a[2] * 2.0, a[1] + 1.0, a[0]], "float4 {k}");
        assert_eq!(&gi[4 * k..4 * k + 4], &[b[0] + b[1], b[1] - b[2], b[2] * b[3], -b[3]], "int4 {k}");
        assert_eq!(&g2[2 * k..2 * k + 2], &[a[0] + a[1], a[2] - a[3]], "float2 {k}");
    }
}

pub fn half_bf16(gpu: &Gpu) {
    use half::{bf16, f16};
    let mut rng = rng_for("half_bf16");
    let mut x: Vec<f32> =
        (0..1000).map(|_| rng.random_range(-100.0f32..100.0) * rng.random_range(0.0f32..1.0).powi(6)).collect();
    x.extend([0.0, -0.0, 1e-8, 6.1e-5, 65504.0, 65520.0, 1e30, -3.0e38, 1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0]);
    let n = x.len();
    let input = gpu.upload(&x).unwrap();
    let b = gpu.upload(&vec![bf16::NAN; n]).unwrap();
    let h = gpu.alloc::<u32>(n.div_ceil(2)).unwrap(); // __half buffer: 2 bytes per element
    let back = gpu.upload(&vec![f32::NAN; 2 * n]).unwrap();
    let args = KernelArgs::new().buf(&input).buf(&b).buf(&h).buf(&back).u32(n as u32);
    gpu.launch("emu_test_half_bf16", LaunchConfig::for_elements(n, 128), &args).unwrap();
    let (gb, gback) = (gpu.download(&b).unwrap(), gpu.download(&back).unwrap());
    for (k, &v) in x.iter().enumerate() {
        assert_eq!(gb[k].to_bits(), bf16::from_f32(v).to_bits(), "bf16 of {v}");
        assert_eq!(gback[2 * k].to_bits(), bf16::from_f32(v).to_f32().to_bits(), "bf16 round trip of {v}");
        assert_eq!(gback[2 * k + 1].to_bits(), f16::from_f32(v).to_f32().to_bits(), "half round trip of {v}");
    }
}
