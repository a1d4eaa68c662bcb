//! Running the chunks of a pass in parallel, with the waiting done by spinning.
//!
//! A pass gives each thread one chunk of tiles; the pass is over when the slowest
//! chunk is. rayon parks a thread that waits for another's job, and on a 2-vCPU VM
//! waking it took 40-110 µs per training step on average (measured from the last
//! chunk's end to the pass's end); the parked vCPU also ran its next chunk less evenly
//! (chunks of equal work ended 1.0-2.3 ms apart per step, 0.75 ms when the threads
//! spin). So a thread whose chunk is done spins until the others are done too.
//! The closures must be serial work of about equal size (the chunks of a pass).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use rayon::prelude::*;

/// `f(i, &mut items[i])` for every item, in parallel on the current rayon pool; a
/// thread whose item is done spins until all are, for at most as long as its own
/// item took (items are meant to be equal work). It spins only while every item
/// has been started: one not started yet may sit in this thread's own queue. The
/// bound keeps a closure that waits on nested parallel work correct, if slower: a
/// thread that stole its item while waiting inside such work would otherwise spin
/// on top of what another item waits for.
pub fn for_each_chunk<T: Send, F: Fn(usize, &mut T) + Sync>(items: &mut [T], f: F) {
    let n = items.len();
    let (started, finished) = (AtomicUsize::new(0), AtomicUsize::new(0));
    items.par_iter_mut().enumerate().for_each(|(i, item)| {
        started.fetch_add(1, Ordering::AcqRel);
        let t = Instant::now();
        f(i, item);
        let took = t.elapsed();
        finished.fetch_add(1, Ordering::AcqRel);
        let waiting = Instant::now();
        while started.load(Ordering::Acquire) == n && finished.load(Ordering::Acquire) < n {
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            if waiting.elapsed() > took {
                break;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
    }

    #[test]
    fn every_item_runs_once_with_its_index() {
        for threads in [1, 2, 3, 8] {
            for n in [0, 1, 2, 3, 7, 16] {
                let mut items = vec![0usize; n];
                pool(threads).install(|| for_each_chunk(&mut items, |i, v| *v += i + 1));
                assert_eq!(items, (1..=n).collect::<Vec<_>>(), "{threads} threads, {n} items");
            }
        }
    }

    #[test]
    fn items_that_wait_on_nested_parallel_work_still_finish() {
        // Such items let a waiting thread steal another item on top of a job an item
        // waits for; the spin must give up rather than deadlock.
        for threads in [2, 3, 4] {
            let pool = pool(threads);
            for round in 0..20u64 {
                let mut items = vec![0u64; 5 + round as usize % 4];
                pool.install(|| {
                    for_each_chunk(&mut items, |i, v| {
                        let heavy: u64 = (0..20_000 * (1 + i as u64 % 3)).into_par_iter().map(|x| x % 7).sum();
                        let mut inner = vec![0u64; 3];
                        for_each_chunk(&mut inner, |j, w| {
                            *w = (0..5_000u64).into_par_iter().map(|x| x % (j as u64 + 2)).sum()
                        });
                        *v = heavy + inner.iter().sum::<u64>();
                    })
                });
                let want = |i: u64| {
                    let heavy: u64 = (0..20_000 * (1 + i % 3)).map(|x| x % 7).sum();
                    heavy + (0..3u64).map(|j| (0..5_000u64).map(|x| x % (j + 2)).sum::<u64>()).sum::<u64>()
                };
                assert!(items.iter().enumerate().all(|(i, &v)| v == want(i as u64)), "{threads} threads");
            }
        }
    }
}
