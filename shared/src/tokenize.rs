//! Tokenization with the `tokenizers` crate: `tokenizer.json`, or RoBERTa's `vocab.json` + `merges.txt`,
//! or BERT's `vocab.txt`, always with our own truncation and longest-in-batch padding.
//!
//! A directory with only a SentencePiece model (DeBERTa-v3 as published: `spm.model`) is an error that
//! gives the one-line transformers command converting it to `tokenizer.json`; reimplementing that
//! conversion here would be a second, unverified copy of transformers' converter.

use std::path::{Path, PathBuf};

use candle_core::Device;
use tokenizers::{
    decoders::{
        byte_level::ByteLevel as ByteLevelDecoder, wordpiece::WordPiece as WordPieceDecoder,
    },
    models::{bpe::BPE, wordpiece::WordPiece},
    normalizers::bert::BertNormalizer,
    pre_tokenizers::{bert::BertPreTokenizer, byte_level::ByteLevel},
    processors::{bert::BertProcessing, roberta::RobertaProcessing},
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

use crate::{batch::Batch, model::ModelError};

/// An error while loading a tokenizer or encoding text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizeError {
    /// The model directory has no tokenizer files.
    #[error(
        "{0}: no tokenizer found (expected tokenizer.json, vocab.json + merges.txt, or vocab.txt)"
    )]
    Missing(PathBuf),
    /// The directory has only a SentencePiece model, which we do not read: it must be converted once.
    #[error(
        "{dir}: only a SentencePiece model ({file}) and no tokenizer.json; convert it once with \
         transformers (pip install transformers sentencepiece protobuf), which writes tokenizer.json \
         next to it:\n  {command}"
    )]
    SentencePieceOnly {
        /// The model directory.
        dir: PathBuf,
        /// The SentencePiece file found.
        file: String,
        /// The one-line conversion command for this directory.
        command: String,
    },
    /// A tokenizer file could not be loaded.
    #[error("{path}: cannot load tokenizer: {message}")]
    Load {
        /// The file.
        path: PathBuf,
        /// The tokenizers error.
        message: String,
    },
    /// No padding token is known.
    #[error("{0}: tokenizer has no padding token ([PAD] or <pad>)")]
    NoPadToken(PathBuf),
    /// Encoding failed.
    #[error("cannot tokenize: {0}")]
    Encode(String),
    /// The encoded batch could not be built.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// One unpadded encoded input: `(token ids, segment ids)`.
pub type TokenRow = (Vec<u32>, Vec<u32>);

/// A tokenizer that turns texts (or text pairs) into padded [`Batch`]es.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Maximum tokens per sequence, special tokens included.
    pub max_len: usize,
    pad_id: u32,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TextTokenizer(max_len={})", self.max_len)
    }
}

impl TextTokenizer {
    /// Loads the tokenizer of a model directory, truncating to `max_len` tokens.
    pub fn from_dir(dir: &Path, max_len: usize) -> Result<Self, TokenizeError> {
        let json = dir.join("tokenizer.json");
        let mut inner = if json.is_file() {
            Tokenizer::from_file(&json).map_err(|e| load_err(&json, e))?
        } else if dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file() {
            byte_level_bpe(dir)?
        } else if dir.join("vocab.txt").is_file() {
            wordpiece(dir)?
        } else if let Some(file) = SENTENCEPIECE_FILES.iter().find(|f| dir.join(f).is_file()) {
            return Err(TokenizeError::SentencePieceOnly {
                dir: dir.to_path_buf(),
                file: file.to_string(),
                command: convert_command(dir),
            });
        } else {
            return Err(TokenizeError::Missing(dir.to_path_buf()));
        };
        let (pad_id, pad_token) =
            pad_token(&inner).ok_or_else(|| TokenizeError::NoPadToken(dir.into()))?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| load_err(dir, e))?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token,
        }));
        Ok(Self {
            inner,
            max_len,
            pad_id,
        })
    }

    /// Encodes single texts, or text pairs when `pairs` is given, into one padded batch.
    pub fn encode(
        &self,
        texts: &[&str],
        pairs: Option<&[&str]>,
        device: &Device,
    ) -> Result<Batch, TokenizeError> {
        let encodings = encode_batch(&self.inner, texts, pairs)?;
        let seq_len = encodings.first().map(|e| e.len()).unwrap_or(0);
        let (mut ids, mut mask, mut types) = (Vec::new(), Vec::new(), Vec::new());
        for enc in &encodings {
            ids.extend_from_slice(enc.get_ids());
            mask.extend_from_slice(enc.get_attention_mask());
            types.extend_from_slice(enc.get_type_ids());
        }
        Ok(Batch::new(
            ids,
            mask,
            Some(types),
            encodings.len(),
            seq_len,
            device,
        )?)
    }

    /// Encodes single texts, or text pairs when `pairs` is given, each on its own without padding:
    /// `(token ids, segment ids)` per input, truncated like [`TextTokenizer::encode`].
    pub fn encode_each(
        &self,
        texts: &[&str],
        pairs: Option<&[&str]>,
    ) -> Result<Vec<TokenRow>, TokenizeError> {
        let mut unpadded = self.inner.clone();
        unpadded.with_padding(None);
        let encodings = encode_batch(&unpadded, texts, pairs)?;
        Ok(encodings
            .iter()
            .map(|e| (e.get_ids().to_vec(), e.get_type_ids().to_vec()))
            .collect())
    }

    /// The padding token id that [`TextTokenizer::encode`] pads with.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The id of a token, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

/// SentencePiece models shipped without tokenizer.json (DeBERTa-v3's `spm.model`, XLM-R's).
const SENTENCEPIECE_FILES: &[&str] = &["spm.model", "sentencepiece.bpe.model"];

/// The shell line that makes transformers write tokenizer.json into `dir` (verified by
/// scripts/golden/make_fixtures.py, which builds the DeBERTa fixture tokenizers with it).
fn convert_command(dir: &Path) -> String {
    let d = dir
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('\'', "\\'");
    format!(
        "python -c \"from transformers import AutoTokenizer; \
         AutoTokenizer.from_pretrained('{d}').save_pretrained('{d}')\""
    )
}

/// Encodes texts, or text pairs, with special tokens and the tokenizer's own truncation and padding.
fn encode_batch(
    tk: &Tokenizer,
    texts: &[&str],
    pairs: Option<&[&str]>,
) -> Result<Vec<tokenizers::Encoding>, TokenizeError> {
    let encodings = match pairs {
        None => tk.encode_batch(texts.to_vec(), true),
        Some(p) => {
            if p.len() != texts.len() {
                return Err(TokenizeError::Encode(format!(
                    "{} texts but {} pair texts",
                    texts.len(),
                    p.len()
                )));
            }
            let inputs: Vec<_> = texts.iter().zip(p).map(|(a, b)| (*a, *b)).collect();
            tk.encode_batch(inputs, true)
        }
    };
    encodings.map_err(|e| TokenizeError::Encode(e.to_string()))
}

fn load_err(path: &Path, e: impl std::fmt::Display) -> TokenizeError {
    TokenizeError::Load {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn pad_token(tk: &Tokenizer) -> Option<(u32, String)> {
    if let Some(p) = tk.get_padding() {
        return Some((p.pad_id, p.pad_token.clone()));
    }
    ["[PAD]", "<pad>"]
        .iter()
        .find_map(|t| tk.token_to_id(t).map(|id| (id, t.to_string())))
}

fn special_id(tk: &Tokenizer, token: &str, path: &Path) -> Result<u32, TokenizeError> {
    tk.token_to_id(token)
        .ok_or_else(|| load_err(path, format!("vocabulary lacks `{token}`")))
}

/// RoBERTa's byte-level BPE from `vocab.json` + `merges.txt` (as transformers' `RobertaTokenizer`).
fn byte_level_bpe(dir: &Path) -> Result<Tokenizer, TokenizeError> {
    let vocab = dir.join("vocab.json");
    let merges = dir.join("merges.txt");
    let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .build()
        .map_err(|e| load_err(&vocab, e))?;
    let mut tk = Tokenizer::new(bpe);
    let specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"];
    tk.add_special_tokens(specials.map(|s| AddedToken::from(s, true)))
        .map_err(|e| load_err(&vocab, e))?;
    let cls = special_id(&tk, "<s>", &vocab)?;
    let sep = special_id(&tk, "</s>", &vocab)?;
    tk.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tk.with_decoder(Some(ByteLevelDecoder::default()));
    tk.with_post_processor(Some(
        RobertaProcessing::new(("</s>".into(), sep), ("<s>".into(), cls))
            .trim_offsets(true)
            .add_prefix_space(false),
    ));
    Ok(tk)
}

/// BERT's WordPiece from `vocab.txt` (as transformers' `BertTokenizer`, lower-casing unless
/// `tokenizer_config.json` says `do_lower_case: false`).
fn wordpiece(dir: &Path) -> Result<Tokenizer, TokenizeError> {
    let vocab = dir.join("vocab.txt");
    let lower = std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("do_lower_case").and_then(|b| b.as_bool()))
        .unwrap_or(true);
    let wp = WordPiece::from_file(&vocab.to_string_lossy())
        .unk_token("[UNK]".into())
        .build()
        .map_err(|e| load_err(&vocab, e))?;
    let mut tk = Tokenizer::new(wp);
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
    tk.add_special_tokens(specials.map(|s| AddedToken::from(s, true)))
        .map_err(|e| load_err(&vocab, e))?;
    let cls = special_id(&tk, "[CLS]", &vocab)?;
    let sep = special_id(&tk, "[SEP]", &vocab)?;
    tk.with_normalizer(Some(BertNormalizer::new(true, true, None, lower)))
        .map_err(|e| load_err(&vocab, e))?;
    tk.with_pre_tokenizer(Some(BertPreTokenizer));
    tk.with_decoder(Some(WordPieceDecoder::default()));
    tk.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), sep),
        ("[CLS]".into(), cls),
    )));
    Ok(tk)
}
