//! `coldfuse bench fuse`: fusing N contributions of a roberta-base-sized model, warm in page cache,
//! against the raw read speed of the same files and a NumPy reference, all in one run.

use std::{
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use anyhow::{bail, Context};
use clap::Args;
use coldfuse_shared::{
    diff::{BaseInfo, BaseRef, DiffManifest, DiffReader, Encoding, BASE_WEIGHTS, DIFF_FILE},
    fusion::{fuse_weights, FuseOptions, FusionConfig, StrategyConfig},
    tensorfile::TensorFile,
};

use coldfuse_shared::synthetic as synth;

use super::{python, sys};

const NUMPY_SCRIPT: &str = include_str!("../../../../scripts/bench/fuse_numpy.py");

/// Arguments of `coldfuse bench fuse`.
#[derive(Debug, Args)]
pub struct FuseArgs {
    /// Parameters of the synthetic model (roberta-base: 125 M).
    #[arg(long, default_value_t = 125_000_000)]
    params: usize,
    /// Number of contributions.
    #[arg(long, default_value_t = 8)]
    contributions: usize,
    /// Encoding of the diff files (f32, bf16, f16, int8, topk:D).
    #[arg(long, default_value = "f32")]
    encoding: Encoding,
    /// Fusion strategy (see the coordinator docs), e.g. `mean`, `median`, `ties:density=0.2`.
    #[arg(long, default_value = "mean")]
    strategy: StrategyConfig,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Where the synthetic files are written (kept and reused; default: the coldfuse cache).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Skip the NumPy reference.
    #[arg(long)]
    no_numpy: bool,
    /// Elements per work item of the engine.
    #[arg(long, default_value_t = FuseOptions::default().chunk_elements)]
    chunk: usize,
    /// Timed repetitions of each measurement (the best is reported).
    #[arg(long, default_value_t = 2)]
    repeat: usize,
}

/// Runs the benchmark.
pub fn run(args: FuseArgs) -> anyhow::Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let root = args.dir.clone().unwrap_or_else(|| {
        python::cache_dir().join(format!(
            "bench-fuse/{}-{}-{}",
            args.params,
            args.contributions,
            args.encoding.to_string().replace(':', "_")
        ))
    });
    let (base_sha, manifests) = prepare(&root, &args)?;
    let base_dir = root.join("base");
    let mut files = vec![base_dir.join(BASE_WEIGHTS)];
    files.extend((0..args.contributions).map(|i| synth::diff_dir(&root, i).join(DIFF_FILE)));
    let input_bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let model_mb = std::fs::metadata(&files[0])?.len() as f64 / 1048576.0;
    let gb = input_bytes as f64 / 1e9;
    println!(
        "fusing {} contributions ({}) of a {:.1} M-parameter model: {gb:.2} GB of input, {threads} threads",
        args.contributions,
        args.encoding,
        args.params as f64 / 1e6
    );
    read_all(&files, threads)?; // warm the page cache
    let read_s = best(args.repeat, || read_all(&files, threads))?;
    let read_1_s = best(args.repeat, || read_all(&files, 1))?;
    let read_gbs = gb / read_s.min(read_1_s);
    println!("  raw read (warm, best of 1/{threads} threads): {read_gbs:.2} GB/s");

    let out_dir = root.join("out");
    std::fs::create_dir_all(&out_dir)?;
    let info = BaseInfo::open_with_sha256(&base_dir, base_sha)?;
    let readers = manifests
        .iter()
        .enumerate()
        .map(|(i, m)| {
            DiffReader::open(&synth::diff_dir(&root, i).join(DIFF_FILE), m.clone(), &info)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let config = FusionConfig {
        strategy: args.strategy.clone(),
        clip_norm: None,
        clip_to_median: None,
        cap_examples_to_median: None,
    };
    // Like the NumPy reference, leave the output in page cache (durability is the publisher's job;
    // the coordinator's fusion syncs, see below for what that costs).
    let options = FuseOptions {
        threads: Some(threads),
        sync: false,
        chunk_elements: args.chunk,
        ..FuseOptions::default()
    };
    let out = out_dir.join("coldfuse.safetensors");
    let rss_reset = sys::reset_peak_rss();
    let mut ours_s = f64::INFINITY;
    for _ in 0..args.repeat.max(1) {
        let _ = std::fs::remove_file(&out);
        let t = Instant::now();
        fuse_weights(&info, &readers, &config, &out, &options)?;
        ours_s = ours_s.min(t.elapsed().as_secs_f64());
    }
    let peak_rss = sys::peak_rss_mb().filter(|_| rss_reset);
    let ours_gbs = gb / ours_s;
    println!(
        "  coldfuse {}: {ours_s:.3} s, {ours_gbs:.2} GB/s, peak RSS {} (one model: {model_mb:.0} MB)",
        args.strategy,
        peak_rss.map_or("n/a".into(), |m| format!("{m:.0} MB")),
    );

    let numpy_gbs = if args.no_numpy || args.strategy != StrategyConfig::Mean {
        println!("  numpy: skipped (it implements `mean` only)");
        None
    } else {
        let numpy_s = numpy(&root, &files, args.repeat)?;
        let g = gb / numpy_s;
        println!("  numpy mean: {numpy_s:.3} s, {g:.2} GB/s");
        let diff = max_abs_difference(&out_dir.join("numpy.safetensors"), &out)?;
        println!("  max |coldfuse − numpy| over all weights: {diff:.2e} (f64 vs f32 accumulation)");
        Some(g)
    };
    let ratio_to_read = ours_gbs / read_gbs;
    let ratio_to_numpy = numpy_gbs.map(|n| ours_gbs / n);
    println!(
        "  coldfuse / read: {ratio_to_read:.2}×{}",
        ratio_to_numpy.map_or(String::new(), |r| format!(", coldfuse / numpy: {r:.2}×"))
    );
    let json = serde_json::json!({
        "params": args.params,
        "contributions": args.contributions,
        "encoding": args.encoding.to_string(),
        "strategy": args.strategy.to_string(),
        "threads": threads,
        "input_gb": gb,
        "model_mb": model_mb,
        "read_gb_per_s": read_gbs,
        "coldfuse_gb_per_s": ours_gbs,
        "coldfuse_seconds": ours_s,
        "numpy_gb_per_s": numpy_gbs,
        "peak_rss_mb": peak_rss,
        "ratio_to_read": ratio_to_read,
        "ratio_to_numpy": ratio_to_numpy,
    });
    println!("{json}");
    Ok(())
}

/// Creates (or reuses) the base and diffs under `root`; returns the base hash and the manifests.
fn prepare(root: &Path, args: &FuseArgs) -> anyhow::Result<(String, Vec<DiffManifest>)> {
    let marker = root.join("ready.json");
    if let Ok(text) = std::fs::read(&marker) {
        let (sha, manifests): (String, Vec<DiffManifest>) = serde_json::from_slice(&text)?;
        if manifests.len() == args.contributions {
            return Ok((sha, manifests));
        }
    }
    let _ = std::fs::remove_dir_all(root);
    let layout = synth::roberta_like(args.params);
    let started = Instant::now();
    eprintln!("writing synthetic files under {} ...", root.display());
    let sha = synth::write_base(&root.join("base"), &layout)?;
    let base = BaseRef {
        id: "bench".into(),
        sha256: sha.clone(),
    };
    let manifests = (0..args.contributions)
        .map(|i| synth::write_diff(&synth::diff_dir(root, i), &base, &layout, args.encoding, i))
        .collect::<Result<Vec<_>, _>>()?;
    std::fs::write(&marker, serde_json::to_vec(&(&sha, &manifests))?)?;
    eprintln!("  written in {:.1} s", started.elapsed().as_secs_f64());
    Ok((sha, manifests))
}

/// The best wall time of `repeat` runs of `f`.
fn best(repeat: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// Reads every byte of `files` with `threads` threads (8 MiB positional reads into reused buffers).
fn read_all(files: &[PathBuf], threads: usize) -> anyhow::Result<()> {
    const BLOCK: u64 = 8 << 20;
    let mut blocks = Vec::new();
    let opened = files
        .iter()
        .map(|f| std::fs::File::open(f).with_context(|| f.display().to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, f) in opened.iter().enumerate() {
        let len = f.metadata()?.len();
        blocks.extend((0..len.div_ceil(BLOCK)).map(|b| (i, b * BLOCK, BLOCK.min(len - b * BLOCK))));
    }
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> std::io::Result<u64> {
                    let mut buf = vec![0u8; BLOCK as usize];
                    let mut sum = 0u64;
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(i, off, len)) = blocks.get(k) else {
                            return Ok(sum);
                        };
                        opened[i].read_exact_at(&mut buf[..len as usize], off)?;
                        sum = sum.wrapping_add(buf[0] as u64);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("reader thread")?;
        }
        Ok(())
    })
}

/// Runs the NumPy reference `repeat` times; returns its best time (as it reports it).
fn numpy(root: &Path, files: &[PathBuf], repeat: usize) -> anyhow::Result<f64> {
    let python = python::numpy_python()?;
    let script = root.join("fuse_numpy.py");
    std::fs::write(&script, NUMPY_SCRIPT)?;
    let out = root.join("out/numpy.safetensors");
    let mut best = f64::INFINITY;
    for _ in 0..repeat.max(1) {
        let output = Command::new(&python)
            .arg(&script)
            .arg(&out)
            .args(files)
            .output()
            .context("running the NumPy reference")?;
        if !output.status.success() {
            bail!(
                "NumPy reference failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let line = String::from_utf8_lossy(&output.stdout);
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .with_context(|| format!("NumPy reference printed `{line}`"))?;
        best = best.min(v["seconds"].as_f64().context("no seconds")?);
    }
    Ok(best)
}

/// The largest absolute difference between the float tensors of two weights files with the same
/// tensors (an error if their names or shapes differ).
fn max_abs_difference(a: &Path, b: &Path) -> anyhow::Result<f32> {
    let (fa, fb) = (TensorFile::open(a)?, TensorFile::open(b)?);
    let mut worst = 0f32;
    let (mut va, mut vb, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
    for ta in &fa.header.tensors {
        let tb = fb.info(&ta.name)?;
        if ta.shape != tb.shape {
            bail!("`{}`: shapes {:?} and {:?}", ta.name, ta.shape, tb.shape);
        }
        if !ta.dtype.is_weight_float() {
            continue;
        }
        va.resize(ta.numel(), 0f32);
        vb.resize(ta.numel(), 0f32);
        fa.read_f32(ta, 0, &mut va, &mut scratch)?;
        fb.read_f32(tb, 0, &mut vb, &mut scratch)?;
        for (x, y) in va.iter().zip(&vb) {
            worst = worst.max((x - y).abs());
        }
    }
    Ok(worst)
}
