//! Keeping rayon's workers awake across a run of many small parallel ops.
//!
//! rayon parks an idle worker after a few rounds of `sched_yield` (a futex sleep), and the next
//! join must wake it: a system call on the joining thread and, on a virtual machine, an IPI to a
//! halted vCPU that answers tens of microseconds later. A b1 sampling step of the cifar10 UNet
//! joins hundreds of times per model evaluation (146 context switches and 294 futex calls per
//! evaluation, measured), so the wake-ups cost more than the joins. OpenMP runtimes (oneDNN's,
//! under PyTorch) spin for a while before parking; [`hot`] keeps the workers polling for as long
//! as one call runs, and runs that call on a worker so the calling thread (often `main`, outside
//! the pool) waits once instead of once per op.

use std::sync::atomic::{AtomicBool, Ordering};

/// Idle polls in a row after which a spinning worker also offers its core to the OS (a
/// `sched_yield`), so that a data loader or communication thread sharing the core still runs.
const POLLS_BEFORE_YIELD: u32 = 1 << 10;

/// Whether `ddpm` commands keep the other workers polling: not with `DDPM_SPIN=0` (rayon's own
/// parking, for A/B runs and machines shared with other work), nor in a rank of several (ranks
/// on one machine share its cores, and a spinning worker would take one from another rank).
pub fn spin_enabled() -> bool {
    std::env::var("DDPM_SPIN").as_deref() != Ok("0") && crate::dist::launched_ranks() <= 1
}

/// Runs `f` on one of rayon's workers; with `spin`, every other worker polls for jobs until `f`
/// returns (or unwinds) instead of parking. Spinning costs the other cores for as long as `f`
/// runs, so wrap compute (model evaluations, training steps), not waiting.
pub fn hot<R: Send>(spin: bool, f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_num_threads() < 2 {
        return f();
    }
    // `scope` runs its body on a worker of the current pool (inline when already on one).
    rayon::scope(|_| {
        if !spin {
            return f();
        }
        let me = rayon::current_thread_index();
        let stop = AtomicBool::new(false);
        rayon::in_place_scope(|s| {
            s.spawn_broadcast(|_, ctx| {
                // The worker running `f` meets its own copy only when idle inside `f` (or at the
                // scope's end): spinning there would wait on itself.
                if Some(ctx.index()) != me {
                    poll_until(&stop);
                }
            });
            // Set on return and on unwind alike: a panic in `f` must not leave the spinners
            // running, or the scope would wait for them forever.
            let _stop = StopOnDrop(&stop);
            f()
        })
    })
}

/// How long a spinner stays without finding a job before it gives its worker back to rayon.
///
/// Not only to save the core: a spinner is a job, and a worker may start it while waiting inside
/// a piece of `f` it stole (a worker still busy when the spinners were sent out meets its copy
/// late). The spinner then sits on top of that piece, which cannot finish before the spinner
/// returns, while `f` waits for the piece: with "until `f` returns" as the only exit, that hung
/// tests/fast_threads.rs about once in six runs. Once everything but that piece is done the
/// spinner finds no work, and this bound ends the wait (a rare stall, not a hang). A spinner that
/// leaves does not come back for the rest of the call, so the bound must outlast a command's
/// serial stretches (model setup, weight initialisation): at 10 ms a cifar10 b1 `ddpm bench`
/// lost its spinners before the first evaluation (60.6 ms against 53.6 per evaluation); at 1 s
/// it keeps them (53.2).
const IDLE_EXIT: std::time::Duration = std::time::Duration::from_millis(1000);

/// Runs the pool's pending jobs until `stop` is set, or until none has come for IDLE_EXIT.
fn poll_until(stop: &AtomicBool) {
    let mut idle = 0u32;
    let mut idle_since = None;
    while !stop.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            (idle, idle_since) = (0, None);
        } else if idle < POLLS_BEFORE_YIELD {
            idle += 1;
            std::hint::spin_loop();
        } else {
            let since = *idle_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > IDLE_EXIT {
                return;
            }
            std::thread::yield_now();
        }
    }
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}
