//! An encoder body with a sequence-classification head: what a contributor fine-tunes.

use std::{collections::BTreeMap, path::Path};

use candle_core::{Device, Tensor, Var};

use crate::{
    batch::Batch,
    checkpoint::{CheckpointError, ModelDir},
    model::{Architecture, Body, BodyOutput, ForwardCtx, Head, ModelError, Params},
};

/// An encoder body loaded from a model directory, every weight a trainable `Var`.
pub struct Encoder {
    /// The architecture.
    pub arch: &'static Architecture,
    body: Box<dyn Body>,
    params: Params,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoder({}, {:?})", self.arch.name, self.params)
    }
}

impl Encoder {
    /// Builds the body from a loaded model directory onto `device`.
    pub fn load(dir: &ModelDir, device: &Device) -> Result<Self, CheckpointError> {
        let wrap = |source| CheckpointError::model(&dir.path, source);
        let params = Params::load(
            dir.tensors.clone(),
            &dir.origin(),
            device,
            dir.initializer_range(),
        );
        let body = dir.arch.body(&dir.config, &params).map_err(wrap)?;
        Ok(Self {
            arch: dir.arch,
            body,
            params,
        })
    }

    /// Runs the body.
    pub fn forward(&self, batch: &Batch, ctx: &ForwardCtx) -> Result<BodyOutput, ModelError> {
        self.body.forward(batch, ctx)
    }

    /// The body's trainable parameters by canonical name.
    pub fn vars(&self) -> BTreeMap<String, Var> {
        self.params.vars()
    }

    /// Parameters the checkpoint lacked and that were initialised fresh (e.g. a BERT pooler).
    pub fn created(&self) -> Vec<String> {
        self.params.created()
    }
}

/// Where the classification head comes from.
#[derive(Debug, Clone, Copy)]
pub enum HeadInit {
    /// A fresh head with transformers' init, seeded.
    Fresh {
        /// Number of output labels (1 = regression).
        num_labels: usize,
        /// RNG seed for the init.
        seed: u64,
    },
    /// The head stored in a task checkpoint (`*ForSequenceClassification`).
    FromCheckpoint,
}

/// A body plus a task head.
pub struct SequenceClassifier {
    /// The shared, fused part.
    pub encoder: Encoder,
    head: Box<dyn Head>,
    head_params: Params,
    /// Number of outputs of the head.
    pub num_labels: usize,
}

impl std::fmt::Debug for SequenceClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SequenceClassifier({:?}, labels={})",
            self.encoder, self.num_labels
        )
    }
}

impl SequenceClassifier {
    /// Loads the body of `dir` and attaches a head.
    pub fn load(dir: &ModelDir, head: HeadInit, device: &Device) -> Result<Self, CheckpointError> {
        Self::with_head(Encoder::load(dir, device)?, dir, head, device)
    }

    /// Attaches a head to `encoder`, a body loaded from `dir` (e.g. a fresh head on a body kept
    /// from an earlier run).
    pub fn with_head(
        encoder: Encoder,
        dir: &ModelDir,
        head: HeadInit,
        device: &Device,
    ) -> Result<Self, CheckpointError> {
        let wrap = |source| CheckpointError::model(&dir.path, source);
        let (head_params, num_labels) = match head {
            HeadInit::Fresh { num_labels, seed } => (
                Params::init(device, seed, dir.initializer_range()),
                num_labels,
            ),
            HeadInit::FromCheckpoint => {
                let n = dir.num_labels().ok_or_else(|| {
                    wrap(ModelError::BadInput(
                        "config.json has no id2label/num_labels".into(),
                    ))
                })?;
                (
                    Params::load(
                        dir.tensors.clone(),
                        &dir.origin(),
                        device,
                        dir.initializer_range(),
                    ),
                    n,
                )
            }
        };
        if num_labels == 0 {
            return Err(wrap(ModelError::BadInput(
                "a head needs at least one label".into(),
            )));
        }
        let head = dir
            .arch
            .head(&dir.config, &head_params, num_labels)
            .map_err(wrap)?;
        Ok(Self {
            encoder,
            head,
            head_params,
            num_labels,
        })
    }

    /// Logits `[batch, num_labels]` (and the body output they came from).
    pub fn forward(
        &self,
        batch: &Batch,
        ctx: &ForwardCtx,
    ) -> Result<(BodyOutput, Tensor), ModelError> {
        let out = self.encoder.forward(batch, ctx)?;
        let logits = self.head.forward(&out, ctx)?;
        Ok((out, logits))
    }

    /// Logits from a body output computed elsewhere (e.g. a frozen body's detached output).
    pub fn forward_head(&self, out: &BodyOutput, ctx: &ForwardCtx) -> Result<Tensor, ModelError> {
        self.head.forward(out, ctx)
    }

    /// The head's parameters by name (`classifier.*`).
    pub fn head_vars(&self) -> BTreeMap<String, Var> {
        self.head_params.vars()
    }

    /// Writes the current body (no head) as an HF model directory based on `dir`.
    pub fn save_body(&self, dir: &ModelDir, out: &Path) -> Result<(), CheckpointError> {
        dir.save_with_body(out, &self.encoder.vars())
    }
}
