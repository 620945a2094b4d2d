//! Evaluation of a classifier on an encoded set: loss, predictions and metrics.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, D};

use super::{frozen::FrozenFeatures, metrics, TrainError};
use crate::{
    classifier::SequenceClassifier,
    data::{sorted_batches, EncodedSet, LabelSpace, LabelledBatch, Target},
    model::{
        loss::{cross_entropy, mse},
        ForwardCtx,
    },
};

/// Predictions of one evaluation, in set order.
#[derive(Debug, Clone, PartialEq)]
pub enum Predictions {
    /// Predicted class indices.
    Classes(Vec<u32>),
    /// Predicted values.
    Values(Vec<f32>),
}

/// The result of evaluating on a set.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// `loss` plus accuracy/macro_f1/mcc (classification) or pearson/spearman (regression).
    pub metrics: BTreeMap<String, f64>,
    /// Predictions in set order.
    pub predictions: Predictions,
}

/// The task loss of logits against batch targets.
pub(crate) fn task_loss(
    logits: &Tensor,
    targets: &Tensor,
    labels: &LabelSpace,
) -> Result<Tensor, TrainError> {
    Ok(if labels.is_regression() {
        mse(logits, targets)?
    } else {
        cross_entropy(logits, targets)?
    })
}

/// Runs `model` in eval mode (no dropout) over `set` in length-sorted batches of `batch_size`.
pub fn evaluate(
    model: &SequenceClassifier,
    set: &EncodedSet,
    labels: &LabelSpace,
    batch_size: usize,
    device: &Device,
) -> Result<Evaluation, TrainError> {
    let ctx = ForwardCtx::eval();
    evaluate_with(set, labels, batch_size, device, |lb| {
        Ok(model.forward(&lb.batch, &ctx)?.1)
    })
}

/// Runs only `model`'s head over `features`, the frozen body's output of `set` (a linear probe's dev
/// set): the same metrics as [`evaluate`] without running the body again.
pub(crate) fn evaluate_frozen(
    model: &SequenceClassifier,
    features: &FrozenFeatures,
    set: &EncodedSet,
    labels: &LabelSpace,
    batch_size: usize,
    device: &Device,
) -> Result<Evaluation, TrainError> {
    features.check_len(set.len())?;
    let ctx = ForwardCtx::eval();
    evaluate_with(set, labels, batch_size, device, |lb| {
        Ok(model.forward_head(&features.body_output(&lb.indices)?, &ctx)?)
    })
}

/// Scores the logits `logits` gives for each length-sorted batch of `set`.
fn evaluate_with(
    set: &EncodedSet,
    labels: &LabelSpace,
    batch_size: usize,
    device: &Device,
    mut logits: impl FnMut(&LabelledBatch) -> Result<Tensor, TrainError>,
) -> Result<Evaluation, TrainError> {
    let n = set.len();
    let mut loss_sum = 0.0;
    let mut classes = vec![0u32; n];
    let mut values = vec![0f32; n];
    for indices in sorted_batches(&set.lengths(), batch_size) {
        let lb = set.batch(&indices, device)?;
        let logits = logits(&lb)?;
        let loss = task_loss(&logits, &lb.targets, labels)?.to_scalar::<f32>()?;
        loss_sum += f64::from(loss) * indices.len() as f64;
        if labels.is_regression() {
            let v = logits.flatten_all()?.to_vec1::<f32>()?;
            indices.iter().zip(v).for_each(|(&i, v)| values[i] = v);
        } else {
            let p = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
            indices.iter().zip(p).for_each(|(&i, p)| classes[i] = p);
        }
    }
    let (mut metrics, predictions) = if labels.is_regression() {
        let gold: Vec<f64> = set
            .rows()
            .iter()
            .map(|r| match r.target {
                Target::Value(v) => f64::from(v),
                Target::Class(c) => f64::from(c),
            })
            .collect();
        let pred: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
        (
            metrics::regression_metrics(&gold, &pred),
            Predictions::Values(values),
        )
    } else {
        let gold: Vec<u32> = set
            .rows()
            .iter()
            .map(|r| match r.target {
                Target::Class(c) => c,
                Target::Value(v) => v as u32,
            })
            .collect();
        (
            metrics::classification_metrics(&gold, &classes),
            Predictions::Classes(classes),
        )
    };
    metrics.insert(
        "loss".into(),
        if n == 0 { 0.0 } else { loss_sum / n as f64 },
    );
    Ok(Evaluation {
        metrics,
        predictions,
    })
}
