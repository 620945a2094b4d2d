//! `coldfuse`: the contributor CLI. For now it embeds or classifies text with a local HF model dir;
//! pull/train/submit/run arrive with the contributor issue.

mod bench;

use std::path::PathBuf;

use anyhow::Context;
use candle_core::Device;
use clap::{Parser, Subcommand};
use coldfuse_shared::{
    classifier::Encoder, model::bert::mean_pool, ForwardCtx, HeadInit, ModelDir,
    SequenceClassifier, TextTokenizer,
};

/// coldfuse: collaborative fine-tuning of one shared encoder (ColD Fusion), contributor side.
#[derive(Debug, Parser)]
#[command(name = "coldfuse", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Embed sentences with a model dir (mean pooling) and print their cosine similarities.
    Embed {
        /// Hugging Face model directory (config.json, weights, tokenizer).
        #[arg(long, env = "COLDFUSE_MODEL")]
        model: PathBuf,
        /// Sentences to embed.
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Classify sentences with a fresh (untrained, seeded) head: a smoke test of the full model path.
    Classify {
        /// Hugging Face model directory.
        #[arg(long, env = "COLDFUSE_MODEL")]
        model: PathBuf,
        /// Number of labels of the fresh head.
        #[arg(long, default_value_t = 2)]
        labels: usize,
        /// Sentences to classify.
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Benchmarks (release build): speed against a baseline measured in the same run.
    Bench {
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Embed { model, texts } => embed(&model, &texts),
        Command::Classify {
            model,
            labels,
            texts,
        } => classify(&model, labels, &texts),
        Command::Bench { which } => bench::run(which),
    }
}

fn embed(model: &std::path::Path, texts: &[String]) -> anyhow::Result<()> {
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

fn classify(model: &std::path::Path, labels: usize, texts: &[String]) -> anyhow::Result<()> {
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
