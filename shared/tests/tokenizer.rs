//! RoBERTa's byte-level BPE built from vocab.json + merges.txt (no tokenizer.json) against transformers.

mod common;

use candle_core::Device;
use coldfuse_shared::{TextTokenizer, TokenizeError};

#[test]
fn roberta_vocab_merges_tokenizer_matches_transformers() {
    let dir = common::fixture("roberta_tiny").join("model");
    assert!(!dir.join("tokenizer.json").exists());
    let tk = TextTokenizer::from_dir(&dir, 64).unwrap();
    let m = common::meta("roberta_tiny");
    let texts = m["tokenizer"]["texts"].as_array().unwrap();
    for (text, want) in texts.iter().zip(common::token_ids(&m, "single")) {
        let got = tk
            .encode(&[text.as_str().unwrap()], None, &Device::Cpu)
            .unwrap();
        assert_eq!(got.ids, want, "ids of {text}");
    }
    let pairs = m["tokenizer"]["pair_texts"].as_array().unwrap();
    for (pair, want) in pairs.iter().zip(common::token_ids(&m, "pairs")) {
        let (a, b) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        let got = tk.encode(&[a], Some(&[b]), &Device::Cpu).unwrap();
        assert_eq!(got.ids, want, "ids of pair {a} / {b}");
    }
    let batch = tk
        .encode(&["a b c d e f", "a"], None, &Device::Cpu)
        .unwrap();
    let pad = tk.token_id("<pad>").unwrap();
    assert_eq!(batch.ids[batch.seq_len * 2 - 1], pad, "padded with <pad>");
}

#[test]
fn tokenizer_missing_files_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = TextTokenizer::from_dir(tmp.path(), 16).unwrap_err();
    assert!(matches!(err, TokenizeError::Missing(_)));
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    std::fs::write(tmp.path().join("tokenizer.json"), "{ not json").unwrap();
    let err = TextTokenizer::from_dir(tmp.path(), 16).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}
