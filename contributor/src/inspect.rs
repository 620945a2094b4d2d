//! `coldfuse embed` and `coldfuse classify`: quick looks at any supported HF model dir.

use std::path::Path;

use anyhow::Context;
use candle_core::Device;
use coldfuse_shared::{
    classifier::Encoder, model::bert::mean_pool, ForwardCtx, HeadInit, ModelDir,
    SequenceClassifier, TextTokenizer,
};

/// Prints mean-pooled embeddings of `texts` and their cosine similarities.
pub fn embed(model: &Path, texts: &[String]) -> anyhow::Result<()> {
    let dir = ModelDir::open(model).context("loading model")?;
    let encoder = Encoder::load(&dir, &Device::Cpu)?;
    let tk = TextTokenizer::from_dir(model, 512)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = tk.encode(&refs, None, &Device::Cpu)?;
    let out = encoder.forward(&batch, &ForwardCtx::eval())?;
    let pooled = mean_pool(&out.hidden, &batch.mask_t)?;
    let norm = pooled.sqr()?.sum_keepdim(1)?.sqrt()?;
    let unit = pooled.broadcast_div(&norm)?;
    let sims = unit.matmul(&unit.t()?)?.to_vec2::<f32>()?;
    let vecs = pooled.to_vec2::<f32>()?;
    println!(
        "model: {} ({}), embedding size {}",
        model.display(),
        dir.arch.name,
        vecs[0].len()
    );
    for (i, (text, v)) in texts.iter().zip(&vecs).enumerate() {
        let head: Vec<String> = v.iter().take(4).map(|x| format!("{x:+.4}")).collect();
        println!("[{i}] {text:?}  [{} ...]", head.join(", "));
    }
    println!("cosine similarities:");
    for (i, row) in sims.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|s| format!("{s:.3}")).collect();
        println!("[{i}] {}", cells.join("  "));
    }
    Ok(())
}

/// Prints the class probabilities of a fresh, seeded head over `texts`.
pub fn classify(model: &Path, labels: usize, texts: &[String]) -> anyhow::Result<()> {
    let dir = ModelDir::open(model).context("loading model")?;
    let clf = SequenceClassifier::load(
        &dir,
        HeadInit::Fresh {
            num_labels: labels,
            seed: 0,
        },
        &Device::Cpu,
    )?;
    let tk = TextTokenizer::from_dir(model, 512)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = tk.encode(&refs, None, &Device::Cpu)?;
    let (_, logits) = clf.forward(&batch, &ForwardCtx::eval())?;
    let probs = coldfuse_shared::model::layers::softmax_last_dim(&logits)?.to_vec2::<f32>()?;
    for (text, p) in texts.iter().zip(probs) {
        let cells: Vec<String> = p.iter().map(|x| format!("{x:.3}")).collect();
        println!("{text:?} -> [{}] (fresh, untrained head)", cells.join(", "));
    }
    Ok(())
}
