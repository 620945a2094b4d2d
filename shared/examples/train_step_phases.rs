//! Where a fine-tuning step's time goes: forward, loss, backward, gradient accumulation and AdamW,
//! timed separately (median over steps) for an HF model dir at a given batch shape, with dropout on.
//!
//! `cargo run --release -p coldfuse-shared --example train_step_phases -- MODEL_DIR [BATCH SEQ STEPS]`
//! (MODEL_DIR defaults to `$COLDFUSE_MINILM_DIR`; set `RAYON_NUM_THREADS` for the thread count, and
//! `MIMALLOC_PURGE_DELAY=-1` to keep freed memory as the `coldfuse` CLI does).

use std::{collections::BTreeMap, time::Instant};

use candle_core::Device;
use coldfuse_shared::{
    data::{EncodedRow, EncodedSet, Target},
    model::loss::cross_entropy,
    train::{AdamW, AdamWParams},
    ForwardCtx, HeadInit, ModelDir, SequenceClassifier,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// The allocator the `coldfuse` CLI uses, so the split matches what a contributor sees.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model_dir = args
        .first()
        .cloned()
        .or_else(|| std::env::var("COLDFUSE_MINILM_DIR").ok())
        .expect("MODEL_DIR or COLDFUSE_MINILM_DIR");
    let num = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (batch, seq, steps) = (num(1, 16), num(2, 128), num(3, 5));
    let dir = ModelDir::open(&model_dir)?;
    let model = SequenceClassifier::load(
        &dir,
        HeadInit::Fresh {
            num_labels: 2,
            seed: 0,
        },
        &Device::Cpu,
    )?;
    let mut vars = model.head_vars();
    vars.extend(model.encoder.vars());
    let mut opt = AdamW::new(
        &vars,
        AdamWParams {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        },
    )?;
    let mut rng = StdRng::seed_from_u64(0);
    let vocab = dir.config["vocab_size"].as_u64().unwrap_or(30000) as u32;
    let rows: Vec<EncodedRow> = (0..batch)
        .map(|_| EncodedRow {
            ids: (0..seq).map(|_| rng.random_range(1000..vocab)).collect(),
            type_ids: vec![0; seq],
            target: Target::Class(rng.random_range(0..2)),
        })
        .collect();
    let set = EncodedSet::from_rows(rows, 0);
    let indices: Vec<usize> = (0..batch).collect();
    let mut phases: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for step in 0..=steps {
        let mut t = Instant::now();
        let mut lap = |name: &'static str, t: &mut Instant| {
            if step > 0 {
                phases
                    .entry(name)
                    .or_default()
                    .push(t.elapsed().as_secs_f64());
            }
            *t = Instant::now();
        };
        let lb = set.batch(&indices, &Device::Cpu)?;
        let ctx = ForwardCtx::train(step as u64);
        let out = model.encoder.forward(&lb.batch, &ctx)?;
        lap("1 forward body", &mut t);
        let logits = model.forward_head(&out, &ctx)?;
        let loss = cross_entropy(&logits, &lb.targets)?;
        let _ = loss.to_scalar::<f32>()?;
        lap("2 forward head + loss", &mut t);
        let grads = loss.backward()?;
        lap("3 backward", &mut t);
        opt.accumulate(&grads, 1.0)?;
        drop(grads);
        lap("4 gradient accumulation", &mut t);
        let norm = opt.grad_norm()?;
        opt.step(5e-5, (1.0 / (norm + 1e-6)).min(1.0))?;
        lap("5 clip + AdamW", &mut t);
    }
    let median = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let total: f64 = phases.values().map(median).sum();
    println!("batch {batch} × {seq}, {steps} steps (median per phase):");
    for (name, v) in &phases {
        let m = median(v);
        println!("  {name:<26} {m:>7.3} s  {:>5.1}%", 100.0 * m / total);
    }
    println!("  {:<26} {total:>7.3} s", "total");
    Ok(())
}
