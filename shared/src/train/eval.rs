//! Evaluation of a classifier on an encoded set: loss, predictions and metrics.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, D};

use super::{metrics, TrainError};
use crate::{
    classifier::SequenceClassifier,
    data::{sorted_batches, EncodedSet, LabelSpace, Target},
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
    let n = set.len();
    let ctx = ForwardCtx::eval();
    let mut loss_sum = 0.0;
    let mut classes = vec![0u32; n];
    let mut values = vec![0f32; n];
    for indices in sorted_batches(&set.lengths(), batch_size) {
        let lb = set.batch(&indices, device)?;
        let (_, logits) = model.forward(&lb.batch, &ctx)?;
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
