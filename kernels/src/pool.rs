//! A spinning worker pool for the engine's decode steps.
//!
//! One token of decode is a few hundred small parallel regions (each matrix-vector product, the
//! attention heads), tens of microseconds each. A pool whose idle threads sleep pays a futex wake
//! and a context switch per region, which cost about 15% of decode on two threads (perf). Here
//! the workers spin on an epoch counter for a while ([`spin_time`], `AUTOROUND_SPIN_US`, default
//! 2000 µs) after each job, so the next region of the same token starts at once, then park on a
//! condition variable, so an idle engine uses no CPU. llama.cpp's thread pool works the same way.
//!
//! [`Pool::run`] splits `tasks` indices over the caller and the workers by an atomic counter
//! (a thread slowed by the host takes fewer tasks). A nested call from inside a task, or a call
//! while another thread is using the pool, runs its tasks on the calling thread alone: never a
//! deadlock, only less parallelism.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

type Job<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    /// Bumped once per job; workers wait for it to change.
    epoch: AtomicU64,
    /// The current job: a pointer to a `Job` on the caller's stack, valid until `pending` is 0.
    job: AtomicPtr<()>,
    /// The next task index to take.
    next: AtomicUsize,
    tasks: AtomicUsize,
    /// Workers that have not finished the current job.
    pending: AtomicUsize,
    /// A task panicked.
    panicked: AtomicBool,
    sleepers: AtomicUsize,
    /// Set by [`Pool::rest`]: idle workers park now instead of spinning out their time.
    rest: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
}

/// A pool of `threads - 1` workers plus the calling thread.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<()>>,
    busy: Mutex<()>,
}

thread_local! {
    /// Set while this thread runs a pool's task (a nested `run` then stays on this thread).
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

/// How long an idle worker spins before it parks: `AUTOROUND_SPIN_US` microseconds (default
/// 2000).
pub fn spin_time() -> Duration {
    static T: OnceLock<Duration> = OnceLock::new();
    *T.get_or_init(|| {
        let us = std::env::var("AUTOROUND_SPIN_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000u64);
        Duration::from_micros(us)
    })
}

impl Pool {
    /// A pool running jobs on `threads` threads (the caller and `threads - 1` workers).
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            next: AtomicUsize::new(0),
            tasks: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            rest: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("autoround-decode-{i}"))
                    .spawn(move || worker(&s))
                    .expect("spawning a decode worker thread")
            })
            .collect();
        Pool {
            shared,
            workers,
            busy: Mutex::new(()),
        }
    }

    /// The process-wide pool with `threads` threads (made on first use, kept for the process).
    pub fn global(threads: usize) -> &'static Pool {
        static POOLS: Mutex<Vec<(usize, &'static Pool)>> = Mutex::new(Vec::new());
        let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, p)) = pools.iter().find(|(n, _)| *n == threads) {
            return p;
        }
        let p: &'static Pool = Box::leak(Box::new(Pool::new(threads)));
        pools.push((threads, p));
        p
    }

    /// Calls `f` once on every element of `items`, spread over the pool's threads.
    pub fn for_each<T: Send>(&self, items: &mut [T], f: &(dyn Fn(&mut T) + Sync)) {
        struct Items<T>(*mut T);
        // SAFETY: the pointer is only used to hand out each element to one task (below).
        unsafe impl<T: Send> Sync for Items<T> {}
        let base = Items(items.as_mut_ptr());
        let base = &base;
        self.run(items.len(), &|i| {
            // SAFETY: `run` calls this once for each `i < items.len()`, so each element is
            // borrowed mutably by exactly one task, while `items` is borrowed by this call.
            f(unsafe { &mut *base.0.add(i) })
        });
    }

    /// Calls `f(i, j, chunk)` for every chunk `j` of every slice `outs[i]`, chunks of `per[i]`
    /// elements (the last one shorter), spread over the pool's threads. Allocates nothing: the
    /// decode steps' products and attention heads use it.
    ///
    /// # Panics
    /// If `per` has fewer entries than `outs` or one of them is zero.
    pub fn for_each_chunk<T: Send>(
        &self,
        outs: &mut [&mut [T]],
        per: &[usize],
        f: &(dyn Fn(usize, usize, &mut [T]) + Sync),
    ) {
        assert!(per.len() >= outs.len() && per[..outs.len()].iter().all(|&p| p > 0));
        let tasks: usize = outs
            .iter()
            .zip(per)
            .map(|(o, &p)| o.len().div_ceil(p))
            .sum();
        struct Outs<'s, 'e, T>(*mut &'s mut [T], usize, std::marker::PhantomData<&'e ()>);
        // SAFETY: the pointer is only used to hand out disjoint chunks, one per task (below).
        unsafe impl<T: Send> Sync for Outs<'_, '_, T> {}
        let base = Outs(outs.as_mut_ptr(), outs.len(), std::marker::PhantomData);
        let base = &base;
        self.run(tasks, &|mut k| {
            for (i, &p) in per.iter().enumerate().take(base.1) {
                // SAFETY: `i < outs.len()`; the slice header is only read.
                let (ptr, len) = unsafe {
                    let o = &*base.0.add(i);
                    (o.as_ptr() as *mut T, o.len())
                };
                let n = len.div_ceil(p);
                if k < n {
                    let start = k * p;
                    let end = (start + p).min(len);
                    // SAFETY: `run` calls this once per task number, and each task number
                    // names one chunk `start..end` of one slice: the chunks are disjoint and
                    // inside `outs[i]`, which this call borrows mutably.
                    let chunk =
                        unsafe { std::slice::from_raw_parts_mut(ptr.add(start), end - start) };
                    return f(i, k, chunk);
                }
                k -= n;
            }
        });
    }

    /// Lets the idle workers park at once rather than spin: for callers about to run other
    /// threads (rayon's) on the same cores, which spinning workers would slow. The next
    /// [`run`](Self::run) wakes them.
    pub fn rest(&self) {
        self.shared.rest.store(true, Relaxed);
    }

    /// The number of threads a job runs on.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(i)` for every `i < tasks`, spread over the pool's threads; returns when all are
    /// done. A panic in a task is raised again here.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        let nested = IN_TASK.with(|c| c.get());
        let guard = if self.workers.is_empty() || tasks == 1 || nested {
            None
        } else {
            self.busy.try_lock().ok()
        };
        let Some(_guard) = guard else {
            (0..tasks).for_each(f);
            return;
        };
        let s = &*self.shared;
        let job: Job<'_> = f;
        s.job.store(&job as *const Job<'_> as *mut (), Relaxed);
        s.next.store(0, Relaxed);
        s.tasks.store(tasks, Relaxed);
        s.panicked.store(false, Relaxed);
        s.pending.store(self.workers.len(), Relaxed);
        s.rest.store(false, Relaxed);
        s.epoch.fetch_add(1, SeqCst);
        if s.sleepers.load(SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| take_tasks(s, job)));
        IN_TASK.with(|c| c.set(false));
        // The workers may still read `job` until they have all checked out.
        while s.pending.load(Acquire) != 0 {
            std::hint::spin_loop();
        }
        s.job.store(std::ptr::null_mut(), Relaxed);
        if let Err(e) = mine {
            std::panic::resume_unwind(e);
        }
        if s.panicked.load(Relaxed) {
            panic!("a task of the decode pool panicked");
        }
    }
}

fn take_tasks(s: &Shared, job: Job<'_>) {
    let tasks = s.tasks.load(Relaxed);
    IN_TASK.with(|c| c.set(true));
    loop {
        let i = s.next.fetch_add(1, Relaxed);
        if i >= tasks {
            break;
        }
        job(i);
    }
    IN_TASK.with(|c| c.set(false));
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        // Spin for the next job, then park.
        let start = Instant::now();
        let mut spins = 0u32;
        let epoch = loop {
            let e = s.epoch.load(Acquire);
            if e != seen {
                break e;
            }
            if s.stop.load(Relaxed) {
                return;
            }
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(1024) && (s.rest.load(Relaxed) || start.elapsed() > spin_time())
            {
                let mut g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                s.sleepers.fetch_add(1, SeqCst);
                while s.epoch.load(SeqCst) == seen && !s.stop.load(SeqCst) {
                    g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                s.sleepers.fetch_sub(1, SeqCst);
            }
        };
        seen = epoch;
        // SAFETY: the caller stored a pointer to its `Job` before bumping the epoch and keeps it
        // alive until every worker has decremented `pending` below.
        let job: Job<'_> = unsafe { *(s.job.load(Relaxed) as *const Job<'_>) };
        if catch_unwind(AssertUnwindSafe(|| take_tasks(s, job))).is_err() {
            IN_TASK.with(|c| c.set(false));
            s.panicked.store(true, Relaxed);
        }
        s.pending.fetch_sub(1, Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        let pool = Pool::new(3);
        for tasks in [0, 1, 2, 7, 1000] {
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            pool.run(tasks, &|i| {
                hits[i].fetch_add(1, Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Relaxed) == 1), "{tasks} tasks");
        }
    }

    #[test]
    fn parked_workers_wake_up_and_nested_runs_stay_local() {
        let pool = Pool::new(2);
        std::thread::sleep(spin_time() + Duration::from_millis(20)); // let the worker park
        let sum = AtomicUsize::new(0);
        pool.run(64, &|i| {
            pool.run(4, &|j| {
                sum.fetch_add(i * 4 + j, Relaxed);
            });
        });
        assert_eq!(sum.load(Relaxed), (0..256).sum::<usize>());
    }

    #[test]
    fn a_panicking_task_is_raised_in_the_caller_and_the_pool_keeps_working() {
        let pool = Pool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(16, &|i| assert!(i != 5, "task five"));
        }));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        pool.run(16, &|_| {
            n.fetch_add(1, Relaxed);
        });
        assert_eq!(n.load(Relaxed), 16);
    }

    #[test]
    fn for_each_chunk_covers_every_element_once_in_its_chunk() {
        let pool = Pool::new(3);
        let mut a = vec![0usize; 1000];
        let mut b = vec![0usize; 7];
        let mut c: Vec<usize> = Vec::new();
        pool.for_each_chunk(
            &mut [&mut a, &mut b, &mut c],
            &[64, 3, 5],
            &|i, j, chunk| {
                for (k, x) in chunk.iter_mut().enumerate() {
                    *x += 1 + i * 1_000_000 + j * 1000 + k;
                }
            },
        );
        let want =
            |i: usize, per: usize, at: usize| 1 + i * 1_000_000 + (at / per) * 1000 + at % per;
        assert!(a.iter().enumerate().all(|(at, &x)| x == want(0, 64, at)));
        assert!(b.iter().enumerate().all(|(at, &x)| x == want(1, 3, at)));
    }

    #[test]
    fn for_each_hands_out_every_element_once() {
        let pool = Pool::new(2);
        let mut v: Vec<u64> = (0..999).collect();
        pool.for_each(&mut v, &|x| *x = *x * 3 + 1);
        assert!(v.iter().enumerate().all(|(i, x)| *x == i as u64 * 3 + 1));
    }

    #[test]
    fn concurrent_callers_share_a_pool() {
        let pool = Pool::global(2);
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| {
                    for _ in 0..200 {
                        let n = AtomicUsize::new(0);
                        pool.run(8, &|_| {
                            n.fetch_add(1, Relaxed);
                        });
                        assert_eq!(n.load(Relaxed), 8);
                    }
                });
            }
        });
    }
}
