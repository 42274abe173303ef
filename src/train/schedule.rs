//! Step-dependent training schedules: the learning rate (linear warmup, then constant or
//! cosine decay to zero) and diffusers' EMA decay.

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LrSchedule {
    Constant,
    Cosine,
}

/// Learning rate at `step` (1-based) of `total`: linear warmup over `warmup` steps (as diffusers'
/// get_scheduler: lr * step / warmup), then constant or half-cosine to zero.
pub fn learning_rate(base: f32, schedule: LrSchedule, step: u64, warmup: u64, total: u64) -> f32 {
    if step <= warmup && warmup > 0 {
        return base * step as f32 / warmup as f32;
    }
    match schedule {
        LrSchedule::Constant => base,
        LrSchedule::Cosine => {
            let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
            (base as f64 * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())) as f32
        }
    }
}

/// diffusers' EMAModel.get_decay with use_ema_warmup: 1 - (1 + s / inv_gamma)^-power with
/// s = step - 1, 0 at the first step, capped at `max_decay`.
pub fn ema_decay(step: u64, inv_gamma: f64, power: f64, max_decay: f64) -> f32 {
    let s = step.saturating_sub(1);
    if s == 0 {
        return 0.0;
    }
    (1.0 - (1.0 + s as f64 / inv_gamma).powf(-power)).min(max_decay).max(0.0) as f32
}
