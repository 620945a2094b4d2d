//! Access to contiguous f32 storage and splitting work over whole rows between threads.

use candle_core::{CpuStorage, Error, Layout, Result};

/// Threads the CPU kernels use (candle's setting: `RAYON_NUM_THREADS`, else the cores).
pub fn threads() -> usize {
    candle_core::utils::get_num_threads().max(1)
}

/// The f32 values of a contiguous storage view.
pub fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => Err(Error::Msg("fused kernel on a non-contiguous tensor".into())),
    }
}

/// Below this many values a kernel runs on the calling thread.
const PARALLEL_MIN: usize = 1 << 15;

/// Calls `f(first_row, rows)` on runs of whole rows of `out` (rows of `row_len` values), in parallel.
pub fn for_row_chunks(out: &mut [f32], row_len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let row_len = row_len.max(1);
    let rows = out.len() / row_len;
    let t = threads().min(rows.max(1));
    if t <= 1 || out.len() < PARALLEL_MIN {
        f(0, out);
        return;
    }
    let per = rows.div_ceil(t);
    std::thread::scope(|s| {
        let mut chunks = out.chunks_mut(per * row_len).enumerate();
        let first = chunks.next();
        for (i, chunk) in chunks {
            let f = &f;
            s.spawn(move || f(i * per, chunk));
        }
        if let Some((_, chunk)) = first {
            f(0, chunk);
        }
    });
}
