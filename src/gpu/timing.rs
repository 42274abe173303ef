//! Device timing for benchmarks. Host clocks around one launch and a synchronisation measure
//! the ~10 us of launch and round trip, not a 1-3 us kernel, and a working set that fits in the
//! L2 (60 MB on an H200) is timed out of the cache, not HBM. So: device events around a batch
//! of launches, with twice the L2's size overwritten before each batch. Bandwidth figures still
//! need working sets well over the L2 (benches/ops.rs uses 256 MB buffers on a GPU), since the
//! launches after the first in a batch find a small working set in the cache.

use super::{Buffer, Device, Gpu};
use anyhow::Result;
use std::time::Duration;

/// Times batches of launches on one device.
pub struct DeviceTimer {
    gpu: Gpu,
    /// Twice the L2's size, overwritten before each batch (none on the emulator, which has no
    /// cache of its own to flush).
    flush: Option<Buffer<f32>>,
}

impl DeviceTimer {
    pub fn new(gpu: &Gpu) -> Result<Self> {
        let flush = match &gpu.inner.device {
            Device::Cuda(d) => Some(gpu.alloc::<f32>((2 * d.l2_bytes()?).div_ceil(4))?),
            Device::Emulator(_) => None,
        };
        Ok(DeviceTimer { gpu: gpu.clone(), flush })
    }

    /// Evicts the L2 by overwriting a buffer twice its size (queued on the stream).
    pub fn flush_l2(&self) -> Result<()> {
        if let (Some(buf), Device::Cuda(d)) = (&self.flush, &self.gpu.inner.device) {
            d.memset_async(buf.device_ptr(), buf.len() * 4)?;
        }
        Ok(())
    }

    /// The device time of `iters` calls of `f` queued back to back, between two events recorded
    /// after an L2 flush (the flush is not timed). Warm up before the first batch.
    pub fn time_batch(&self, iters: u64, f: &mut dyn FnMut() -> Result<()>) -> Result<Duration> {
        self.flush_l2()?;
        let start = self.gpu.record_event()?;
        for _ in 0..iters {
            f()?;
        }
        let end = self.gpu.record_event()?;
        Ok(Duration::from_secs_f64(start.elapsed_ms(&end)? as f64 / 1e3))
    }
}

/// The dense bf16 tensor-core peak in TFLOP/s and how it was computed: SMs x the highest SM clock
/// the driver reports x bf16 multiply-adds per clock per SM x 2. Per SM (4 tensor cores): 1024 on
/// sm_80 (A100: 108 SMs x 1410 MHz gives the datasheet's 312 TFLOP/s) and 2048 on sm_90 (H100 and
/// H200: 132 SMs x 1830 MHz gives the datasheet's 989 TFLOP/s; these parts report 1980 MHz, which
/// gives about 8% more, so a percentage of this peak is the stricter one). None on the emulator and
/// on parts whose rate per SM is not written here.
pub fn bf16_dense_peak(gpu: &Gpu) -> Result<Option<(f64, String)>> {
    peak(gpu, "bf16", [1024, 2048])
}

/// The f32 peak without tensor cores (what the f32 path's SIMT kernels can reach), computed like
/// [`bf16_dense_peak`]: SMs x the highest SM clock x f32 FMA lanes per SM (64 on sm_80: A100's
/// datasheet 19.5 TFLOP/s; 128 on sm_90: H100/H200's 67 TFLOP/s) x 2.
pub fn f32_simt_peak(gpu: &Gpu) -> Result<Option<(f64, String)>> {
    peak(gpu, "f32", [64, 128])
}

/// SMs x clock x multiply-adds per clock per SM (`per_sm` for sm_80 and sm_90) x 2, and how.
fn peak(gpu: &Gpu, what: &str, per_sm: [u32; 2]) -> Result<Option<(f64, String)>> {
    let Device::Cuda(d) = &gpu.inner.device else { return Ok(None) };
    let (sms, khz, (major, minor)) = d.compute_units()?;
    let per_sm = match (major, minor) {
        (8, 0) => per_sm[0],
        (9, 0) => per_sm[1],
        _ => return Ok(None),
    };
    let tflops = sms as f64 * khz as f64 * 1e3 * per_sm as f64 * 2.0 / 1e12;
    let how = format!("{sms} SMs x {} MHz x {per_sm} {what} FMA/clk/SM (sm_{major}{minor}) x 2", khz / 1000);
    Ok(Some((tflops, how)))
}
