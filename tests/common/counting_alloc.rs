//! A global allocator that counts the bytes each thread has live and their peak, so a
//! test can measure what a call allocates. "Allocates nothing" has to be measured:
//! with overcommit a 2 GiB reservation succeeds without touching a page, and an
//! `is_err()` afterwards cannot tell it happened.
//!
//! It sees the calling thread only: measure code that allocates on the thread that
//! calls it (the readers do), not work handed to other threads; and memory freed here
//! that another thread allocated lowers this thread's count.
//!
//! Included (`#[path]`) by the test binaries that measure, and by the library's own
//! unit tests (src/lib.rs); each of those binaries then allocates through it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    // Const-initialised and without a destructor: usable inside the allocator itself.
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grew(bytes: usize) {
    let _ = LIVE.try_with(|live| {
        live.set(live.get() + bytes);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
    });
}

fn shrank(bytes: usize) {
    // Memory freed on another thread than it came from only lowers this one's count.
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(bytes)));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counting
// touches only thread-local cells and allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout);
        shrank(layout.size());
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = System.realloc(p, layout, new_size);
        if !q.is_null() {
            // Both blocks may be live for a moment: count the new one before freeing the old.
            grew(new_size);
            shrank(layout.size());
        }
        q
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Runs `f` and returns its result with the most bytes this thread had allocated at
/// once during the call, above what it held before.
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(start));
    let r = f();
    (r, PEAK.with(Cell::get) - start)
}
