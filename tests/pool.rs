//! The caching allocator: a loop that allocates the same sizes every iteration reaches a steady
//! state with no further device allocations.

use ddpm::gpu::Gpu;

#[test]
fn steady_state_loop_does_not_call_the_device_allocator() {
    let gpu = Gpu::emulator().unwrap();
    let sizes = [1usize, 300, 4096, 100_000, 3_000_000];
    let step = |gpu: &Gpu| {
        let bufs: Vec<_> = sizes.iter().map(|&n| gpu.alloc::<f32>(n).unwrap()).collect();
        drop(bufs);
    };
    step(&gpu);
    let after_first = gpu.memory_stats();
    assert_eq!(after_first.device_allocations, sizes.len() as u64);
    assert_eq!(after_first.in_use_bytes, 0);
    for _ in 0..10 {
        step(&gpu);
    }
    let after = gpu.memory_stats();
    assert_eq!(after.device_allocations, after_first.device_allocations, "steady state allocates nothing new");
    assert!(after.peak_in_use_bytes >= sizes.iter().sum::<usize>() * 4);
    gpu.empty_cache().unwrap();
    let trimmed = gpu.memory_stats();
    assert_eq!(trimmed.reserved_bytes, 0);
    assert_eq!(trimmed.device_frees, sizes.len() as u64);
}

#[test]
fn live_buffers_are_never_handed_out_twice() {
    let gpu = Gpu::emulator().unwrap();
    let a = gpu.upload(&[1.0f32; 64]).unwrap();
    let b = gpu.upload(&[2.0f32; 64]).unwrap();
    assert_ne!(a.device_ptr(), b.device_ptr());
    assert_eq!(gpu.download(&a).unwrap(), vec![1.0; 64]);
    let a_ptr = a.device_ptr();
    drop(a);
    let c = gpu.alloc::<f32>(60).unwrap();
    assert_eq!(c.device_ptr(), a_ptr, "a freed block of the same size class is reused");
    assert_eq!(gpu.download(&b).unwrap(), vec![2.0; 64]);
}

#[test]
fn emptying_the_cache_is_refused_while_capturing() {
    let gpu = Gpu::emulator().unwrap();
    drop(gpu.alloc::<f32>(1000).unwrap());
    let cached = gpu.memory_stats().reserved_bytes;
    assert!(cached > 0);
    gpu.begin_capture().unwrap();
    let err = gpu.empty_cache().unwrap_err().to_string();
    assert!(err.contains("while capturing a graph"), "{err}");
    assert_eq!(gpu.memory_stats().reserved_bytes, cached, "nothing freed during the capture");
    let graph = gpu.end_capture().unwrap();
    gpu.empty_cache().unwrap();
    assert_eq!(gpu.memory_stats().reserved_bytes, 0);
    drop(graph);
}
