//! The training loop: micro-batches accumulated into optimizer steps, scheduled learning rate,
//! clipping, dev evaluation, early stopping, checkpoints and resume.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::{
    eval::{evaluate, evaluate_frozen, task_loss},
    frozen::FrozenFeatures,
    progress::{Progress, ProgressMode},
    resume::{self, Best, Checkpoint, Fingerprint, RunState},
    AdamW, AdamWParams, LinearSchedule, Metric, TrainConfig, TrainError,
};
use crate::{
    checkpoint::ModelDir,
    classifier::{HeadInit, SequenceClassifier},
    data::{bucketed_batches, sequential_batches, EncodedSet, LabelSpace, TrainData},
    model::{precision, ForwardCtx},
    tokenize::TextTokenizer,
};

/// Where and how often to write run checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointOptions {
    /// The checkpoint directory (created if missing).
    pub dir: PathBuf,
    /// Write a checkpoint every this many optimizer steps.
    pub every_steps: usize,
    /// Continue from the latest checkpoint in `dir`, if any.
    pub resume: bool,
}

/// How a run executes (as opposed to what it computes, which is [`TrainConfig`]).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The device to train on (the model must live there).
    pub device: Device,
    /// Progress display.
    pub progress: ProgressMode,
    /// Run checkpoints.
    pub checkpoint: Option<CheckpointOptions>,
    /// Stop after this many optimizer steps as if interrupted (after writing a checkpoint when
    /// checkpoints are on); for time budgets and resume tests.
    pub stop_after_steps: Option<usize>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            progress: ProgressMode::Auto,
            checkpoint: None,
            stop_after_steps: None,
        }
    }
}

/// One optimizer step of the loss curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// Steps done (1-based).
    pub step: usize,
    /// Epoch the step belongs to (0-based).
    pub epoch: usize,
    /// Mean training loss over the step's examples.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Wall time of the step (forward, backward, optimizer) in seconds.
    #[serde(default)]
    pub seconds: f64,
}

/// One dev evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalLog {
    /// Steps done when evaluated.
    pub step: usize,
    /// Epoch of the last step (0-based).
    pub epoch: usize,
    /// Dev metrics.
    pub metrics: BTreeMap<String, f64>,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// All epochs or `max_steps` done.
    Finished,
    /// The dev metric stopped improving.
    EarlyStopped,
    /// `stop_after_steps` reached: resume to finish.
    Interrupted,
}

/// The result of a run: the fine-tuned body (same names as the base, to be diffed and shared) and the
/// task head (kept local), with metrics and logs.
pub struct TrainOutcome {
    /// The fine-tuned model.
    pub model: SequenceClassifier,
    /// Body parameters by canonical name.
    pub body: BTreeMap<String, Var>,
    /// Head parameters by name.
    pub head: BTreeMap<String, Var>,
    /// The label space the head predicts.
    pub labels: LabelSpace,
    /// Final dev metrics (the best ones when early stopping restored them) plus `train_loss`.
    pub metrics: BTreeMap<String, f64>,
    /// Training examples.
    pub num_examples: usize,
    /// Optimizer steps done.
    pub steps: usize,
    /// The loss curve.
    pub history: Vec<StepLog>,
    /// Dev evaluations.
    pub evals: Vec<EvalLog>,
    /// Why the run ended.
    pub stop: StopReason,
}

impl std::fmt::Debug for TrainOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TrainOutcome(steps={}, stop={:?}, metrics={:?})",
            self.steps, self.stop, self.metrics
        )
    }
}

/// Fine-tunes `base` with a fresh task head on `data`: tokenizes with the base's tokenizer, then runs
/// a [`Trainer`].
pub fn fine_tune(
    base: &ModelDir,
    data: &TrainData,
    cfg: &TrainConfig,
    opts: &RunOptions,
) -> Result<TrainOutcome, TrainError> {
    cfg.validate()?;
    let tokenizer = TextTokenizer::from_dir(&base.path, cfg.max_len)?;
    let train = EncodedSet::encode(&data.train, &tokenizer)?;
    let dev = match &data.dev {
        Some(d) => Some(EncodedSet::encode(d, &tokenizer)?),
        None => None,
    };
    let head = HeadInit::Fresh {
        num_labels: data.labels.num_outputs(),
        seed: cfg.seed,
    };
    let model = SequenceClassifier::load(base, head, &opts.device)?;
    Trainer::new(model, data.labels.clone(), cfg.clone(), opts.clone())?.run(&train, dev.as_ref())
}

/// SplitMix64: independent seeds per epoch and micro-batch from one run seed.
fn mix(seed: u64, salt: u64) -> u64 {
    let mut z = seed ^ salt.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fine-tunes a model built by the caller (any head) on encoded data.
pub struct Trainer {
    model: SequenceClassifier,
    labels: LabelSpace,
    cfg: TrainConfig,
    opts: RunOptions,
    metric: Metric,
    /// Body features of the training set given by the caller (linear probe).
    given_train: Option<FrozenFeatures>,
    /// Body features of the dev set given by the caller (linear probe).
    given_dev: Option<FrozenFeatures>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Trainer({:?}, {:?})", self.model, self.cfg)
    }
}

/// Mutable pieces of a run.
struct Run {
    state: RunState,
    optimizer: AdamW,
    best_weights: Option<HashMap<String, Tensor>>,
    /// The linear probe's body features of the training set, computed once.
    frozen: Option<FrozenFeatures>,
    /// The linear probe's body features of the dev set, computed at the first evaluation.
    frozen_dev: Option<FrozenFeatures>,
}

impl Trainer {
    /// A trainer for `model`, whose head must have one output per label (or one for regression).
    pub fn new(
        model: SequenceClassifier,
        labels: LabelSpace,
        cfg: TrainConfig,
        opts: RunOptions,
    ) -> Result<Self, TrainError> {
        cfg.validate()?;
        let metric = cfg.metric_for(labels.is_regression())?;
        if model.num_labels != labels.num_outputs() {
            return Err(TrainError::Config(format!(
                "the head has {} outputs but the task {}",
                model.num_labels,
                labels.num_outputs()
            )));
        }
        if let Some(ck) = &opts.checkpoint {
            if ck.every_steps == 0 {
                return Err(TrainError::Config("checkpoint every 0 steps".into()));
            }
        }
        Ok(Self {
            model,
            labels,
            cfg,
            opts,
            metric,
            given_train: None,
            given_dev: None,
        })
    }

    /// A linear probe on body features computed by the caller ([`FrozenFeatures::compute`] with
    /// this trainer's model, or a subset of them): `train` for the training set given to
    /// [`Trainer::run`], `dev` for its dev set. Saves running the body when probing one base many
    /// times.
    pub fn with_features(
        mut self,
        train: FrozenFeatures,
        dev: Option<FrozenFeatures>,
    ) -> Result<Self, TrainError> {
        if !self.cfg.linear_probe {
            return Err(TrainError::Config(
                "body features are for a linear probe; the whole body is training".into(),
            ));
        }
        self.given_train = Some(train);
        self.given_dev = dev;
        Ok(self)
    }

    fn trainable(&self) -> BTreeMap<String, Var> {
        let mut vars = self.model.head_vars();
        if !self.cfg.linear_probe {
            vars.extend(self.model.encoder.vars());
        }
        vars
    }

    fn epoch_plan(&self, lengths: &[usize], epoch: usize) -> Vec<Vec<usize>> {
        if self.cfg.shuffle {
            bucketed_batches(
                lengths,
                self.cfg.batch_size,
                mix(self.cfg.seed, epoch as u64),
            )
        } else {
            sequential_batches(lengths.len(), self.cfg.batch_size)
        }
    }

    /// Trains on `train`, evaluating on `dev` when given.
    pub fn run(
        mut self,
        train: &EncodedSet,
        dev: Option<&EncodedSet>,
    ) -> Result<TrainOutcome, TrainError> {
        if train.is_empty() {
            return Err(TrainError::Config("no training examples".into()));
        }
        if self.cfg.early_stopping.is_some() && dev.is_none() {
            return Err(TrainError::Config("early stopping needs a dev set".into()));
        }
        let cfg = &self.cfg;
        // Every forward pass of the run (a linear probe's frozen features, the steps, dev evaluations)
        // happens on this thread, in the run's precision.
        let _precision = precision::autocast(cfg.precision);
        let batches_per_epoch = train.len().div_ceil(cfg.batch_size);
        let steps_per_epoch = batches_per_epoch.div_ceil(cfg.grad_accumulation);
        let total = cfg.max_steps.unwrap_or(cfg.epochs * steps_per_epoch);
        let schedule = LinearSchedule {
            peak: cfg.learning_rate,
            warmup: cfg
                .warmup_steps
                .unwrap_or_else(|| LinearSchedule::warmup_steps(cfg.warmup_ratio, total)),
            total,
        };
        let fingerprint = Fingerprint {
            config: serde_json::to_string(cfg).map_err(|e| TrainError::Config(e.to_string()))?,
            train_examples: train.len(),
            dev_examples: dev.map_or(0, EncodedSet::len),
            labels: serde_json::to_string(&self.labels)
                .map_err(|e| TrainError::Config(e.to_string()))?,
            total_steps: total,
        };
        let optimizer = AdamW::new(
            &self.trainable(),
            AdamWParams {
                beta1: cfg.adam_beta1,
                beta2: cfg.adam_beta2,
                eps: cfg.adam_epsilon,
                weight_decay: cfg.weight_decay,
            },
        )?;
        let frozen = match (cfg.linear_probe, self.given_train.take()) {
            (true, Some(given)) => {
                given.check_len(train.len())?;
                Some(given)
            }
            (true, None) => Some(FrozenFeatures::compute(
                &self.model.encoder,
                train,
                cfg.eval_batch_size,
                &self.opts.device,
            )?),
            (false, _) => None,
        };
        let frozen_dev = self.given_dev.take();
        if let (Some(f), Some(dev)) = (&frozen_dev, dev) {
            f.check_len(dev.len())?;
        }
        let mut run = Run {
            state: RunState::default(),
            optimizer,
            best_weights: None,
            frozen,
            frozen_dev,
        };
        self.maybe_resume(&fingerprint, &mut run)?;
        tracing::info!(
            examples = train.len(),
            dev = dev.map_or(0, EncodedSet::len),
            total_steps = total,
            warmup = schedule.warmup,
            values = run.optimizer.num_values(),
            linear_probe = cfg.linear_probe,
            start_step = run.state.step,
            "training"
        );
        let progress = Progress::new(self.opts.progress, total, run.state.step, cfg.log_every);
        let stop = self.train_loop(train, dev, &schedule, &fingerprint, &progress, &mut run);
        progress.finish();
        let stop = stop?;
        self.finish(train.len(), dev, run, stop)
    }

    fn maybe_resume(&self, fingerprint: &Fingerprint, run: &mut Run) -> Result<(), TrainError> {
        let Some(ck) = self.opts.checkpoint.as_ref().filter(|c| c.resume) else {
            return Ok(());
        };
        let Some(loaded) = resume::load_latest(&ck.dir, fingerprint)? else {
            tracing::info!(dir = %ck.dir.display(), "no checkpoint to resume; starting fresh");
            return Ok(());
        };
        resume::restore_vars(
            &self.model.encoder.vars(),
            "body",
            &loaded.weights,
            &loaded.dir,
        )?;
        resume::restore_vars(
            &self.model.head_vars(),
            "head",
            &loaded.weights,
            &loaded.dir,
        )?;
        run.optimizer
            .load_state(loaded.optimizer)
            .map_err(|m| TrainError::checkpoint(&loaded.dir, m))?;
        run.best_weights = loaded.best;
        run.state = loaded.state;
        tracing::info!(dir = %loaded.dir.display(), step = run.state.step, "resumed");
        Ok(())
    }

    fn train_loop(
        &self,
        train: &EncodedSet,
        dev: Option<&EncodedSet>,
        schedule: &LinearSchedule,
        fingerprint: &Fingerprint,
        progress: &Progress,
        run: &mut Run,
    ) -> Result<StopReason, TrainError> {
        let cfg = &self.cfg;
        let lengths = train.lengths();
        let mut plan = (run.state.epoch, self.epoch_plan(&lengths, run.state.epoch));
        while run.state.step < schedule.total {
            if plan.0 != run.state.epoch {
                plan = (run.state.epoch, self.epoch_plan(&lengths, run.state.epoch));
            }
            let start = run.state.batch_in_epoch;
            let end = (start + cfg.grad_accumulation).min(plan.1.len());
            let started = std::time::Instant::now();
            let loss = self.accumulate(train, &plan.1[start..end], run)?;
            let grad_norm = run.optimizer.grad_norm()?;
            if !grad_norm.is_finite() {
                return Err(TrainError::Diverged {
                    step: run.state.step,
                    what: "gradient norm",
                    value: grad_norm,
                });
            }
            let clip = cfg
                .max_grad_norm
                .map_or(1.0, |max| (max / (grad_norm + 1e-6)).min(1.0));
            let lr = schedule.lr(run.state.step);
            run.optimizer.step(lr, clip)?;
            // A GPU runs the update asynchronously: wait for it so the step's time is its own.
            self.opts.device.synchronize()?;

            let epoch = run.state.epoch;
            run.state.step += 1;
            run.state.batch_in_epoch = end;
            let epoch_done = end == plan.1.len();
            if epoch_done {
                run.state.epoch += 1;
                run.state.batch_in_epoch = 0;
            }
            let step = run.state.step;
            run.state.history.push(StepLog {
                step,
                epoch,
                loss,
                lr,
                grad_norm,
                seconds: started.elapsed().as_secs_f64(),
            });
            progress.step(step, epoch, loss, lr, grad_norm);

            let eval_due = match cfg.eval_every {
                Some(every) => step.is_multiple_of(every),
                None => epoch_done,
            };
            let mut stop = None;
            if let (Some(dev), true) = (dev, eval_due) {
                if self.evaluate_dev(dev, epoch, progress, run)? {
                    stop = Some(StopReason::EarlyStopped);
                }
            }
            let interrupted = self.opts.stop_after_steps == Some(step) && step < schedule.total;
            if interrupted {
                stop = Some(StopReason::Interrupted);
            }
            if let Some(ck) = &self.opts.checkpoint {
                if step.is_multiple_of(ck.every_steps) || interrupted {
                    self.save_checkpoint(&ck.dir, fingerprint, run, progress)?;
                }
            }
            if let Some(reason) = stop {
                return Ok(reason);
            }
        }
        Ok(StopReason::Finished)
    }

    /// Forward and backward over one step's micro-batches; returns the step's mean loss.
    fn accumulate(
        &self,
        train: &EncodedSet,
        window: &[Vec<usize>],
        run: &mut Run,
    ) -> Result<f64, TrainError> {
        let cfg = &self.cfg;
        let examples: usize = window.iter().map(Vec::len).sum();
        let mut loss_sum = 0.0;
        for indices in window {
            let lb = train.batch(indices, &self.opts.device)?;
            let ctx = if cfg.dropout {
                ForwardCtx::train(mix(cfg.seed, run.state.micro | 1 << 63))
            } else {
                ForwardCtx::train_without_dropout()
            };
            let logits = if let Some(frozen) = &run.frozen {
                self.model
                    .forward_head(&frozen.body_output(indices)?, &ctx)?
            } else {
                self.model.forward(&lb.batch, &ctx)?.1
            };
            let loss = task_loss(&logits, &lb.targets, &self.labels)?;
            let value = f64::from(loss.to_scalar::<f32>()?);
            if !value.is_finite() {
                return Err(TrainError::Diverged {
                    step: run.state.step,
                    what: "loss",
                    value,
                });
            }
            let share = indices.len() as f64 / examples as f64;
            loss_sum += value * share;
            let grads = loss.backward()?;
            run.optimizer.accumulate(&grads, share as f32)?;
            run.state.micro += 1;
        }
        Ok(loss_sum)
    }

    /// Evaluates on dev and updates the best result; returns whether early stopping triggers.
    fn evaluate_dev(
        &self,
        dev: &EncodedSet,
        epoch: usize,
        progress: &Progress,
        run: &mut Run,
    ) -> Result<bool, TrainError> {
        let cfg = &self.cfg;
        let eval = self.evaluate_set(dev, &mut run.frozen_dev)?;
        let step = run.state.step;
        let value = eval
            .metrics
            .get(self.metric.key())
            .copied()
            .unwrap_or(f64::NAN);
        progress.suspend(|| {
            tracing::info!(step, epoch, metrics = ?eval.metrics, "dev evaluation");
        });
        run.state.evals.push(EvalLog {
            step,
            epoch,
            metrics: eval.metrics.clone(),
        });
        let min_delta = cfg.early_stopping.map_or(0.0, |e| e.min_delta);
        let improved = match &run.state.best {
            None => true,
            Some(best) if self.metric.higher_is_better() => value > best.value + min_delta,
            Some(best) => value < best.value - min_delta,
        };
        if improved {
            run.state.best = Some(Best {
                step,
                value,
                metrics: eval.metrics,
            });
            run.state.evals_since_best = 0;
            if cfg.early_stopping.is_some_and(|e| e.restore_best) {
                run.best_weights = Some(self.snapshot()?);
            }
            return Ok(false);
        }
        run.state.evals_since_best += 1;
        Ok(cfg
            .early_stopping
            .is_some_and(|e| run.state.evals_since_best >= e.patience))
    }

    /// A copy of every body and head weight, keyed as in checkpoints.
    fn snapshot(&self) -> Result<HashMap<String, Tensor>, TrainError> {
        let (body, head) = (self.model.encoder.vars(), self.model.head_vars());
        Ok(resume::keyed_weights(&body, &head, Tensor::copy)?)
    }

    fn save_checkpoint(
        &self,
        dir: &std::path::Path,
        fingerprint: &Fingerprint,
        run: &Run,
        progress: &Progress,
    ) -> Result<(), TrainError> {
        let body = self.model.encoder.vars();
        let head = self.model.head_vars();
        let written = resume::save(
            dir,
            &Checkpoint {
                fingerprint,
                state: &run.state,
                body: &body,
                head: &head,
                optimizer: &run.optimizer,
                best: run.best_weights.as_ref(),
            },
        )?;
        progress.suspend(|| {
            tracing::info!(step = run.state.step, dir = %written.display(), "checkpoint written");
        });
        Ok(())
    }

    /// Evaluates the current model on `dev`; a linear probe runs the body over it once (into
    /// `frozen_dev`) and then only the head.
    fn evaluate_set(
        &self,
        dev: &EncodedSet,
        frozen_dev: &mut Option<FrozenFeatures>,
    ) -> Result<super::Evaluation, TrainError> {
        let (batch, device) = (self.cfg.eval_batch_size, &self.opts.device);
        if !self.cfg.linear_probe || dev.is_empty() {
            return evaluate(&self.model, dev, &self.labels, batch, device);
        }
        let features = match frozen_dev.take() {
            Some(f) => f,
            None => FrozenFeatures::compute(&self.model.encoder, dev, batch, device)?,
        };
        let eval = evaluate_frozen(&self.model, &features, dev, &self.labels, batch, device);
        *frozen_dev = Some(features);
        eval
    }

    fn finish(
        self,
        num_examples: usize,
        dev: Option<&EncodedSet>,
        mut run: Run,
        stop: StopReason,
    ) -> Result<TrainOutcome, TrainError> {
        let body = self.model.encoder.vars();
        let head = self.model.head_vars();
        let mut metrics = BTreeMap::new();
        if stop != StopReason::Interrupted {
            if let (Some(best), Some(weights)) = (&run.state.best, &run.best_weights) {
                resume::restore_vars(&body, "body", weights, std::path::Path::new("best"))?;
                resume::restore_vars(&head, "head", weights, std::path::Path::new("best"))?;
                tracing::info!(
                    step = best.step,
                    value = best.value,
                    "restored the best weights"
                );
                metrics = best.metrics.clone();
            } else if let Some(dev) = dev {
                let last = run.state.evals.last().filter(|e| e.step == run.state.step);
                metrics = match last {
                    Some(e) => e.metrics.clone(),
                    None => self.evaluate_set(dev, &mut run.frozen_dev)?.metrics,
                };
            }
        }
        if let Some(last) = run.state.history.last() {
            metrics.insert("train_loss".into(), last.loss);
        }
        Ok(TrainOutcome {
            body,
            head,
            labels: self.labels,
            metrics,
            num_examples,
            steps: run.state.step,
            history: run.state.history,
            evals: run.state.evals,
            stop,
            model: self.model,
        })
    }
}
