//! Process-wide settings for CPU training speed, applied first thing in `main`:
//! - the allocator: mimalloc, told to keep freed memory for reuse. A training step allocates and frees
//!   many large tensors; the system allocator, or mimalloc with its default 1 s purge delay (a step
//!   takes longer), hands freed pages back to the kernel, which zeroes (transparent huge) pages again
//!   when they fault back in: ≈10% of a CPU step (`coldfuse bench train`);
//! - candle's element-wise thread pool spins 25 000 times before parking between ops; next to the
//!   matmul threads on a small machine that spinning takes a core from them (≈10% of a step of short
//!   sequences on 2 cores), so it parks sooner.

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// The allocator of every coldfuse process.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's option enum (`mimalloc.h`); the Rust bindings lack a name.
const PURGE_DELAY: mi_option_t = 15;
/// Its default in mimalloc 3's `options.c` (milliseconds), checked before changing it so that a
/// renumbered enum in a later mimalloc changes nothing rather than the wrong option.
const PURGE_DELAY_DEFAULT: std::ffi::c_long = 1000;

/// Spins of candle's element-wise pool before a worker parks (candle's default: 25 000).
const BARRIER_SPINS: &str = "200";

/// Applies both settings, each unless the user set its environment variable.
pub fn apply() {
    keep_freed_memory();
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // Still single-threaded here: nothing reads the environment concurrently.
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", BARRIER_SPINS);
    }
}

/// Keeps freed memory in the process instead of returning it to the kernel (unless the user set
/// `MIMALLOC_PURGE_DELAY`); returns whether the setting was applied.
#[allow(unsafe_code)]
fn keep_freed_memory() -> bool {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return false;
    }
    // SAFETY: both calls take and return plain integers; mimalloc's options are process-global
    // atomics, valid to read and set at any time from any thread.
    unsafe {
        if mi_option_get(PURGE_DELAY) != PURGE_DELAY_DEFAULT {
            return false;
        }
        mi_option_set(PURGE_DELAY, -1);
        mi_option_get(PURGE_DELAY) == -1
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn purge_delay_is_the_option_we_think() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert!(
                super::keep_freed_memory(),
                "mimalloc's purge_delay option is not number 15 with default 1000 ms any more"
            );
        }
    }
}
