//! Limits on rendering one template, so that a mistaken or hostile template fails with a clean,
//! located error instead of hanging `plan` or aborting the whole process.
//!
//! Three limits, each can be raised by an environment variable when a template legitimately
//! needs more:
//! - **fuel** (`PICAOPS_TEMPLATE_FUEL`, instructions of minijinja's engine per render): stops
//!   loops that would run for hours (`range(100000)` inside `range(100000)`). minijinja checks it
//!   itself and its error carries the template line.
//! - **memory** (`PICAOPS_TEMPLATE_MEMORY_MB`, MiB held at once by one render, output and
//!   intermediate values together): stops a string doubled 40 times. minijinja cannot be asked to
//!   check this (`s ~ s` is not hookable), so every render runs on its own thread and the
//!   process's allocator ([`Counting`]) counts what that thread holds. When a render asks for
//!   more than its budget, the allocation is NOT made: the rendering thread is parked for good,
//!   holding what it had (at most the budget) until picaops exits, and the caller gets an error.
//!   An allocator may neither fail (that aborts the process) nor unwind (undefined behaviour);
//!   parking is what is left, and it is sound.
//! - **time** (`PICAOPS_TEMPLATE_SECONDS`, wall-clock seconds per render): a last resort for
//!   work the fuel does not see (one filter on a huge value). The render is abandoned; its thread
//!   is parked at its next allocation.
//!
//! Parked threads keep their memory: once they hold more than [`PARKED_CAP_BUDGETS`] budgets (at
//! least [`PARKED_CAP_MIN_BYTES`]), new renders are refused rather than piling up more. A thread that is panicking is not parked (the
//! panic hook holds a process-wide lock while it allocates); nothing else in a render holds a lock
//! another thread needs (renders share no mutable state, and print nothing).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Default fuel. The repo's and the lab's playbooks use at most a few thousand per render (see
/// the README); ten million is about a second of rendering.
pub const DEFAULT_FUEL: u64 = 10_000_000;
/// Default memory budget of one render, in MiB. Real templates need well under 1 MiB.
pub const DEFAULT_MEMORY_MB: usize = 64;
/// Default wall-clock limit of one render, in seconds.
pub const DEFAULT_SECONDS: u64 = 60;
/// New renders are refused once parked renders hold this many memory budgets (and at least
/// [`PARKED_CAP_MIN_BYTES`]).
pub const PARKED_CAP_BUDGETS: usize = 4;
pub const PARKED_CAP_MIN_BYTES: usize = 512 << 20;

pub const FUEL_VAR: &str = "PICAOPS_TEMPLATE_FUEL";
pub const MEMORY_VAR: &str = "PICAOPS_TEMPLATE_MEMORY_MB";
pub const SECONDS_VAR: &str = "PICAOPS_TEMPLATE_SECONDS";

/// Stack of a rendering thread: deep macro recursion is refused by minijinja at its own limit,
/// which needs more than the 2 MiB a thread gets by default (pages are only used when touched).
const STACK_BYTES: usize = 64 << 20;

/// A limit variable of the environment that cannot be used (every render then says so).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("{var}={text:?} is not a positive whole number; unset it for the default ({default})")]
    NotPositive {
        var: &'static str,
        text: String,
        default: u64,
    },
    /// `PICAOPS_TEMPLATE_MEMORY_MB` beyond what the address space holds.
    #[error("{MEMORY_VAR}={0} is more memory than exists")]
    TooMuchMemory(u64),
}

/// The limits of one render.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub fuel: u64,
    pub memory_bytes: usize,
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: DEFAULT_FUEL,
            memory_bytes: DEFAULT_MEMORY_MB << 20,
            time: Duration::from_secs(DEFAULT_SECONDS),
        }
    }
}

impl Limits {
    /// The defaults, overridden by the environment. `Err` names the variable that is not a
    /// positive whole number.
    pub fn from_env() -> Result<Limits, LimitsError> {
        let read = |var: &'static str, default: u64| -> Result<u64, LimitsError> {
            match std::env::var(var) {
                Err(_) => Ok(default),
                Ok(text) => match text.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(LimitsError::NotPositive { var, text, default }),
                },
            }
        };
        let memory_mb = read(MEMORY_VAR, DEFAULT_MEMORY_MB as u64)?;
        Ok(Limits {
            fuel: read(FUEL_VAR, DEFAULT_FUEL)?,
            memory_bytes: usize::try_from(memory_mb)
                .ok()
                .and_then(|mb| mb.checked_mul(1 << 20))
                .filter(|b| *b <= isize::MAX as usize / 2)
                .ok_or(LimitsError::TooMuchMemory(memory_mb))?,
            time: Duration::from_secs(read(SECONDS_VAR, DEFAULT_SECONDS)?),
        })
    }
}

/// Why a render was stopped by [`run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// It needed more than `limit` bytes at once.
    Memory { limit: usize },
    /// It ran longer than `limit`.
    Time { limit: Duration },
    /// Earlier renders that were stopped hold `held` bytes; no more renders are started.
    Refused { held: usize },
    /// The code it ran panicked (a bug of picaops or minijinja), with the panic's message.
    Panic(String),
    /// No thread could be started.
    Spawn(String),
}

impl Stop {
    /// One sentence for a person: what limit, and how to raise it if the template is legitimate.
    pub fn explain(&self) -> String {
        match self {
            Stop::Memory { limit } => format!(
                "rendering needed more than {} MiB of memory at once (the limit of one template: \
                 its output and the values it builds); a string or list that keeps doubling? If this \
                 template is legitimate, raise {MEMORY_VAR}",
                limit >> 20
            ),
            Stop::Time { limit } => format!(
                "rendering took more than {} s (the limit of one template); if this template is \
                 legitimate, raise {SECONDS_VAR}",
                limit.as_secs()
            ),
            Stop::Refused { held } => format!(
                "not rendered: templates stopped earlier at their memory limit still hold {} MiB; \
                 fix those first",
                held >> 20
            ),
            Stop::Panic(message) => format!(
                "rendering failed unexpectedly (a bug in picaops, please report it): {message}"
            ),
            Stop::Spawn(message) => format!("could not start rendering: {message}"),
        }
    }
}

/// The process's allocator: the system's, counting what a rendering thread holds.
pub struct Counting;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

thread_local! {
    /// The render this thread runs, null outside [`run`]'s threads.
    static WATCH: Cell<*const Watch> = const { Cell::new(std::ptr::null()) };
}

/// Bytes held by parked renders.
static PARKED: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Done,
    OverMemory,
}

/// What the allocator and the waiting caller share about one render.
struct Watch {
    limit: isize,
    /// Bytes allocated minus bytes freed by the rendering thread (negative when it frees
    /// what others allocated: the caller's values it was given).
    live: AtomicIsize,
    peak: AtomicIsize,
    /// The caller gave up (time): the next allocation parks the thread.
    cancelled: AtomicBool,
    state: Mutex<State>,
    changed: Condvar,
}

fn current() -> Option<&'static Watch> {
    let ptr = WATCH.try_with(Cell::get).unwrap_or(std::ptr::null());
    // SAFETY: a non-null pointer was set by `run`'s thread from an `Arc<Watch>` that thread keeps
    // alive until it has reset the pointer to null (or forever, when it is parked).
    unsafe { ptr.as_ref() }
}

#[inline]
fn charge(bytes: usize) {
    let Some(watch) = current() else { return };
    let bytes = bytes as isize;
    let live = watch.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
    // A panicking thread is never parked: the panic hook allocates (a backtrace) while holding
    // the lock every other panicking thread needs. It unwinds out of the render right after.
    if (live > watch.limit || watch.cancelled.load(Ordering::Relaxed)) && !std::thread::panicking()
    {
        park(watch, live - bytes);
    }
    watch.peak.fetch_max(live, Ordering::Relaxed);
}

#[inline]
fn credit(bytes: usize) {
    if let Some(watch) = current() {
        watch.live.fetch_sub(bytes as isize, Ordering::Relaxed);
    }
}

/// Stops the rendering thread for good without making the allocation it asked for. Nothing here
/// allocates (futex-based mutex, condvar and park), and nothing is counted any more.
#[cold]
fn park(watch: &Watch, held: isize) -> ! {
    let _ = WATCH.try_with(|w| w.set(std::ptr::null()));
    PARKED.fetch_add(held.max(0) as usize, Ordering::Relaxed);
    {
        let mut state = watch.state.lock().unwrap_or_else(|p| p.into_inner());
        if *state == State::Running {
            *state = State::OverMemory;
        }
    }
    watch.changed.notify_all();
    loop {
        std::thread::park();
    }
}

// SAFETY: every call goes to `System` with the same arguments; the counting around it touches
// only a const-initialised thread-local and atomics, never allocates, and never unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        credit(layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            charge(new_size - layout.size());
        }
        let out = System.realloc(ptr, layout, new_size);
        if new_size < layout.size() && !out.is_null() {
            credit(layout.size() - new_size);
        }
        out
    }
}

/// Peak figures of the renders of a process, for `PICAOPS_LOG=picaops=debug`.
#[derive(Debug, Default)]
pub struct Usage {
    pub renders: AtomicUsize,
    pub peak_memory: AtomicUsize,
}

/// Runs `work` on a thread of its own under `limits` (memory and time; fuel is minijinja's).
pub fn run<T: Send + 'static>(
    limits: &Limits,
    usage: &Usage,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Stop> {
    let held = PARKED.load(Ordering::Relaxed);
    let cap = limits
        .memory_bytes
        .saturating_mul(PARKED_CAP_BUDGETS)
        .max(PARKED_CAP_MIN_BYTES);
    if held > cap {
        return Err(Stop::Refused { held });
    }
    let watch = Arc::new(Watch {
        limit: limits.memory_bytes as isize,
        live: AtomicIsize::new(0),
        peak: AtomicIsize::new(0),
        cancelled: AtomicBool::new(false),
        state: Mutex::new(State::Running),
        changed: Condvar::new(),
    });
    let slot: Arc<Mutex<Option<std::thread::Result<T>>>> = Arc::new(Mutex::new(None));
    let (thread_watch, thread_slot) = (watch.clone(), slot.clone());
    let handle = std::thread::Builder::new()
        .name("picaops-template".into())
        .stack_size(STACK_BYTES)
        .spawn(move || {
            let _ = WATCH.try_with(|w| w.set(Arc::as_ptr(&thread_watch)));
            let out = catch_unwind(AssertUnwindSafe(work));
            let _ = WATCH.try_with(|w| w.set(std::ptr::null()));
            *thread_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(out);
            *thread_watch.state.lock().unwrap_or_else(|p| p.into_inner()) = State::Done;
            thread_watch.changed.notify_all();
        })
        .map_err(|e| Stop::Spawn(e.to_string()))?;
    let deadline = Instant::now() + limits.time;
    let mut state = watch.state.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        match *state {
            State::Done => break,
            State::OverMemory => {
                return Err(Stop::Memory {
                    limit: limits.memory_bytes,
                })
            }
            State::Running => {
                let now = Instant::now();
                if now >= deadline {
                    watch.cancelled.store(true, Ordering::Relaxed);
                    return Err(Stop::Time { limit: limits.time });
                }
                state = watch
                    .changed
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
    }
    drop(state);
    let _ = handle.join();
    usage.renders.fetch_add(1, Ordering::Relaxed);
    usage.peak_memory.fetch_max(
        watch.peak.load(Ordering::Relaxed).max(0) as usize,
        Ordering::Relaxed,
    );
    let out = slot
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .ok_or_else(|| Stop::Panic("the rendering thread gave no result".into()))?;
    out.map_err(|payload| {
        Stop::Panic(
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(memory_mb: usize, seconds: u64) -> Limits {
        Limits {
            fuel: DEFAULT_FUEL,
            memory_bytes: memory_mb << 20,
            time: Duration::from_secs(seconds),
        }
    }

    #[test]
    fn a_render_within_budget_returns_its_value_and_counts_its_peak() {
        let usage = Usage::default();
        let out = run(&limits(8, 10), &usage, || vec![7u8; 1 << 20].len()).unwrap();
        assert_eq!(out, 1 << 20);
        assert!(usage.peak_memory.load(Ordering::Relaxed) >= 1 << 20);
    }

    #[test]
    fn growing_past_the_memory_budget_is_an_error_not_an_abort() {
        let usage = Usage::default();
        let got = run(&limits(4, 10), &usage, || {
            let mut s = String::from("x");
            for _ in 0..40 {
                s = format!("{s}{s}");
            }
            s.len()
        });
        assert_eq!(got, Err(Stop::Memory { limit: 4 << 20 }));
    }

    #[test]
    fn a_panic_inside_is_an_error() {
        let got = run(&limits(8, 10), &Usage::default(), || -> u8 {
            panic!("boom {}", 1)
        });
        assert_eq!(got, Err(Stop::Panic("boom 1".into())));
    }

    #[test]
    fn work_past_the_time_limit_is_abandoned() {
        let started = Instant::now();
        let got = run(
            &Limits {
                time: Duration::from_millis(200),
                ..Limits::default()
            },
            &Usage::default(),
            || loop {
                // Allocates, so the abandoned thread parks instead of spinning on.
                std::hint::black_box(vec![0u8; 16]);
            },
        );
        assert_eq!(
            got.map(|_: ()| ()),
            Err(Stop::Time {
                limit: Duration::from_millis(200)
            })
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
