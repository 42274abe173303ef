//! `fast::threads::hot`: a call run on a rayon worker while the other workers poll for jobs
//! instead of parking. Each case runs under a timeout: a spinner that never stops shows up as a
//! hang, which the timeout turns into a failure.

use ddpm::fast::threads::hot;
use rayon::prelude::*;
use std::collections::BTreeSet;
use std::sync::mpsc;
use std::sync::{Mutex, Once};
use std::time::Duration;

/// Workers of the global pool in this test binary (set before any other rayon use here).
const WORKERS: usize = 3;

fn pool() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| rayon::ThreadPoolBuilder::new().num_threads(WORKERS).build_global().expect("global pool"));
}

/// Runs `f` on a fresh thread outside the pool and fails if it has not returned in 60 s.
fn within_timeout<R: Send + 'static>(what: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    pool();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("{what}: no result after 60 s (hung)"))
}

/// A parallel loop whose items take long enough that an awake worker steals some: the sum, and
/// the workers that ran items.
fn parallel_work() -> (u64, BTreeSet<usize>) {
    let seen = Mutex::new(BTreeSet::new());
    let sum = (0..64u64)
        .into_par_iter()
        .map(|i| {
            seen.lock().unwrap().insert(rayon::current_thread_index().expect("on a worker"));
            std::thread::sleep(Duration::from_millis(2));
            i * i
        })
        .sum();
    (sum, seen.into_inner().unwrap())
}

/// 0^2 + 1^2 + ... + 63^2.
const SUM: u64 = 63 * 64 * 127 / 6;

#[test]
fn runs_on_a_worker_and_the_others_take_jobs() {
    for spin in [true, false] {
        let (index, (sum, seen)) =
            within_timeout("hot", move || hot(spin, || (rayon::current_thread_index(), parallel_work())));
        assert!(index.is_some(), "spin {spin}: the body ran outside the pool");
        assert_eq!(sum, SUM, "spin {spin}");
        assert!(seen.len() >= 2, "spin {spin}: one worker ran all 64 items: {seen:?}");
    }
}

#[test]
fn consecutive_and_nested_calls_return() {
    let results = within_timeout("nested", || {
        (0..20).map(|i| hot(true, || hot(i % 2 == 0, || parallel_work().0) + hot(true, || i))).collect::<Vec<_>>()
    });
    assert_eq!(results, (0..20).map(|i| SUM + i).collect::<Vec<_>>());
}

#[test]
fn a_panic_in_the_body_stops_the_spinners_and_reaches_the_caller() {
    let caught = within_timeout("panic", || {
        std::panic::catch_unwind(|| {
            hot(true, || {
                let _ = parallel_work();
                panic!("planted");
            })
        })
        .is_err()
    });
    assert!(caught);
    // The pool still works afterwards.
    assert_eq!(within_timeout("after panic", || hot(true, || parallel_work().0)), SUM);
}

#[test]
fn one_worker_runs_the_body_itself() {
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let got = within_timeout("one worker", move || one.install(|| hot(true, parallel_work)));
    assert_eq!(got.0, SUM);
    assert_eq!(got.1, BTreeSet::from([0]));
}
