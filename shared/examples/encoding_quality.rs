//! What each diff encoding does to upload size and to model quality, on a real fine-tuning run:
//! all-MiniLM-L6-v2 fine-tuned on 160 SMS messages; its body diff is stored in every encoding, decoded
//! back onto the base, and the fine-tuned model (same head) is evaluated on 200 held-out messages.
//!
//! ```text
//! eval "$(scripts/assets.sh)"
//! cargo run --release -p coldfuse-shared --example encoding_quality
//! ```

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use coldfuse_shared::{
    data::{load, DataSpec, DevSource, EncodedSet, Format, TrainData},
    diff::{
        BaseInfo, BaseRef, ContributionInfo, DiffBuilder, DiffReader, Encoding, Scratch, DIFF_FILE,
    },
    train::{evaluate, fine_tune, ProgressMode, RunOptions, TrainConfig},
    ModelDir, TextTokenizer,
};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name} is not set: eval \"$(scripts/assets.sh)\"")),
    )
}

fn main() -> anyhow::Result<()> {
    let spec = DataSpec::label_then_text(Format::Tsv);
    let all = load(&env_path("COLDFUSE_SMS_SPAM"), &DevSource::None, &spec)?;
    let mut rows = all.train.clone();
    rows.shuffle(&mut StdRng::seed_from_u64(11));
    let dev: Vec<_> = rows.split_off(160).into_iter().take(200).collect();
    let data = TrainData {
        train: rows,
        dev: Some(dev.clone()),
        ..all
    };
    let minilm = env_path("COLDFUSE_MINILM_DIR");
    let base = ModelDir::open(&minilm)?;
    let cfg = TrainConfig {
        learning_rate: 2e-4,
        batch_size: 16,
        grad_accumulation: 1,
        epochs: 2,
        max_len: 64,
        warmup_ratio: 0.1,
        ..TrainConfig::default()
    };
    let opts = RunOptions {
        progress: ProgressMode::Log,
        ..RunOptions::default()
    };
    let out = fine_tune(&base, &data, &cfg, &opts)?;
    let tokenizer = TextTokenizer::from_dir(&minilm, cfg.max_len)?;
    let dev_set = EncodedSet::encode(&dev, &tokenizer)?;
    let info = BaseInfo::open(&minilm)?;
    let base_ref = BaseRef {
        id: "minilm".into(),
        sha256: info.sha256.clone(),
    };
    let exact: Vec<(String, Tensor)> = out
        .body
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap()))
        .collect();
    let tmp = tempfile::tempdir()?;
    let mut rows = Vec::new();
    let mut f32_bytes = 0u64;
    for encoding in [
        Encoding::F32,
        Encoding::Bf16,
        Encoding::F16,
        Encoding::Int8,
        Encoding::TopK { density: 0.1 },
        Encoding::TopK { density: 0.01 },
    ] {
        // Restore the exact fine-tuned weights, write the diff, then put base + decoded diff back.
        for (k, t) in &exact {
            out.body[k].set(t)?;
        }
        let dir = tmp.path().join(encoding.to_string().replace(':', "_"));
        let mut builder = DiffBuilder::new(encoding)?;
        builder.add_body(&base, &out.body)?;
        let info_c = ContributionInfo {
            contributor: "site".into(),
            num_examples: 160,
            metrics: Default::default(),
        };
        let manifest = builder.finish(&dir, base_ref.clone(), "bert", info_c)?;
        let reader = DiffReader::open(&dir.join(DIFF_FILE), manifest.clone(), &info)?;
        let (mut err_sq, mut norm_sq) = (0f64, 0f64);
        let mut scratch = Scratch::default();
        for t in reader.tensors() {
            let mut decoded = vec![0f32; t.numel];
            reader.decode(t, 0, &mut decoded, 1.0, &mut scratch)?;
            let canon = coldfuse_shared::checkpoint::canonical(&t.name, "bert").0;
            let base_t = base.tensors[&canon].to_dtype(DType::F32)?;
            let exact_diff: Vec<f32> = (&exact.iter().find(|(k, _)| *k == canon).unwrap().1
                - &base_t)?
                .flatten_all()?
                .to_vec1()?;
            for (d, e) in decoded.iter().zip(&exact_diff) {
                err_sq += ((d - e) as f64).powi(2);
                norm_sq += (*e as f64).powi(2);
            }
            let restored =
                (base_t + Tensor::from_vec(decoded, base.tensors[&canon].dims(), &Device::Cpu)?)?;
            out.body[&canon].set(&restored)?;
        }
        let eval = evaluate(&out.model, &dev_set, &out.labels, 32, &Device::Cpu)?;
        if encoding == Encoding::F32 {
            f32_bytes = manifest.diff_bytes;
        }
        let row = serde_json::json!({
            "encoding": encoding.to_string(),
            "bytes": manifest.diff_bytes,
            "size_vs_f32": manifest.diff_bytes as f64 / f32_bytes as f64,
            "relative_l2_error": (err_sq / norm_sq).sqrt(),
            "dev_accuracy": eval.metrics["accuracy"],
            "dev_mcc": eval.metrics["mcc"],
            "dev_loss": eval.metrics["loss"],
        });
        println!("{row}");
        rows.push(row);
    }
    println!("\n| encoding | diff MB | size vs f32 | relative L2 error of the diff | dev accuracy | dev MCC |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.1} | {:.2} | {:.1e} | {:.4} | {:.4} |",
            r["encoding"].as_str().unwrap(),
            r["bytes"].as_f64().unwrap() / 1e6,
            r["size_vs_f32"].as_f64().unwrap(),
            r["relative_l2_error"].as_f64().unwrap(),
            r["dev_accuracy"].as_f64().unwrap(),
            r["dev_mcc"].as_f64().unwrap()
        );
    }
    Ok(())
}
