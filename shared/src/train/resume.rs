//! Run checkpoints: weights, optimizer moments, data position and early-stopping state of an
//! interrupted run, so that a resumed run continues exactly where it stopped.
//!
//! Layout of the checkpoint directory: `step-<n>/` holds `state.json`, `weights.safetensors`
//! (`body.<name>`, `head.<name>`), `optimizer.safetensors` (`m.<name>`, `v.<name>`) and, with early
//! stopping, `best.safetensors`; `LATEST` names the newest complete `step-<n>`. A new checkpoint is
//! written under a temporary name and renamed, then `LATEST` is replaced, then older ones are removed.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::{AdamW, EvalLog, StepLog, TrainError};

/// Format of `state.json`.
const FORMAT: u32 = 1;
const LATEST: &str = "LATEST";
const STATE: &str = "state.json";
const WEIGHTS: &str = "weights.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const BEST: &str = "best.safetensors";

/// The best dev evaluation so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Best {
    pub step: usize,
    pub value: f64,
    pub metrics: BTreeMap<String, f64>,
}

/// Where a run is: counters, logs and early-stopping state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunState {
    /// Optimizer steps done.
    pub step: usize,
    /// Current epoch (0-based).
    pub epoch: usize,
    /// Next micro-batch of the epoch's plan.
    pub batch_in_epoch: usize,
    /// Micro-batches done (seeds dropout).
    pub micro: u64,
    pub best: Option<Best>,
    pub evals_since_best: usize,
    pub history: Vec<StepLog>,
    pub evals: Vec<EvalLog>,
}

/// What must match for a checkpoint to be resumed by a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Fingerprint {
    /// The training config as JSON.
    pub config: String,
    pub train_examples: usize,
    pub dev_examples: usize,
    /// The label space as JSON.
    pub labels: String,
    pub total_steps: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    format: u32,
    fingerprint: Fingerprint,
    state: RunState,
    adam_steps: BTreeMap<String, u64>,
}

/// Everything a checkpoint holds.
pub(crate) struct Checkpoint<'a> {
    pub fingerprint: &'a Fingerprint,
    pub state: &'a RunState,
    pub body: &'a BTreeMap<String, Var>,
    pub head: &'a BTreeMap<String, Var>,
    pub optimizer: &'a AdamW,
    pub best: Option<&'a HashMap<String, Tensor>>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::checkpoint(path, e)
}

fn candle_err(path: &Path) -> impl Fn(candle_core::Error) -> TrainError + '_ {
    move |e| TrainError::checkpoint(path, e)
}

/// Body and head weights keyed `body.<name>` and `head.<name>` (checkpoint and best-snapshot keys),
/// each taken through `take` (a copy, or a move to the CPU).
pub(crate) fn keyed_weights(
    body: &BTreeMap<String, Var>,
    head: &BTreeMap<String, Var>,
    take: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (prefix, vars) in [("body", body), ("head", head)] {
        for (name, var) in vars {
            out.insert(format!("{prefix}.{name}"), take(var.as_tensor())?);
        }
    }
    Ok(out)
}

/// Writes a checkpoint for `ck.state.step` into `dir` and makes it the latest.
pub(crate) fn save(dir: &Path, ck: &Checkpoint<'_>) -> Result<PathBuf, TrainError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let name = format!("step-{:08}", ck.state.step);
    let staging = dir.join(format!("{name}.tmp"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(io_err(&staging))?;

    let weights = staging.join(WEIGHTS);
    let map = keyed_weights(ck.body, ck.head, |t| t.to_device(&Device::Cpu))
        .map_err(candle_err(&weights))?;
    candle_core::safetensors::save(&map, &weights).map_err(candle_err(&weights))?;

    let optimizer = staging.join(OPTIMIZER);
    let mut moments = HashMap::new();
    let mut adam_steps = BTreeMap::new();
    for (name, m, v, steps) in ck.optimizer.state()? {
        moments.insert(format!("m.{name}"), m);
        moments.insert(format!("v.{name}"), v);
        adam_steps.insert(name.to_string(), steps);
    }
    candle_core::safetensors::save(&moments, &optimizer).map_err(candle_err(&optimizer))?;

    if let Some(best) = ck.best {
        let path = staging.join(BEST);
        let map: HashMap<String, Tensor> = best
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?)))
            .collect::<Result<_, candle_core::Error>>()
            .map_err(candle_err(&path))?;
        candle_core::safetensors::save(&map, &path).map_err(candle_err(&path))?;
    }

    let saved = Saved {
        format: FORMAT,
        fingerprint: ck.fingerprint.clone(),
        state: ck.state.clone(),
        adam_steps,
    };
    let state_path = staging.join(STATE);
    let json =
        serde_json::to_string_pretty(&saved).map_err(|e| TrainError::checkpoint(&state_path, e))?;
    std::fs::write(&state_path, json).map_err(io_err(&state_path))?;

    let final_dir = dir.join(&name);
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir).map_err(io_err(&final_dir))?;
    }
    std::fs::rename(&staging, &final_dir).map_err(io_err(&final_dir))?;
    let latest_tmp = dir.join(format!("{LATEST}.tmp"));
    std::fs::write(&latest_tmp, &name).map_err(io_err(&latest_tmp))?;
    std::fs::rename(&latest_tmp, dir.join(LATEST)).map_err(io_err(dir))?;
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let file = entry.file_name().to_string_lossy().to_string();
        if file.starts_with("step-") && file != name {
            std::fs::remove_dir_all(entry.path()).map_err(io_err(&entry.path()))?;
        }
    }
    Ok(final_dir)
}

/// A checkpoint read back: state, weights by prefixed name, optimizer state, best snapshot.
pub(crate) struct Loaded {
    pub dir: PathBuf,
    pub state: RunState,
    pub weights: HashMap<String, Tensor>,
    pub optimizer: BTreeMap<String, (Vec<f32>, Vec<f32>, u64)>,
    pub best: Option<HashMap<String, Tensor>>,
}

/// Reads the latest checkpoint of `dir`, if there is one; it must match `fingerprint`.
pub(crate) fn load_latest(
    dir: &Path,
    fingerprint: &Fingerprint,
) -> Result<Option<Loaded>, TrainError> {
    let latest = dir.join(LATEST);
    if !latest.is_file() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&latest).map_err(io_err(&latest))?;
    let ck = dir.join(name.trim());
    let state_path = ck.join(STATE);
    let text = std::fs::read_to_string(&state_path).map_err(io_err(&state_path))?;
    let saved: Saved =
        serde_json::from_str(&text).map_err(|e| TrainError::checkpoint(&state_path, e))?;
    if saved.format != FORMAT {
        return Err(TrainError::ResumeMismatch {
            path: ck,
            message: format!(
                "checkpoint format {} (this build reads {FORMAT})",
                saved.format
            ),
        });
    }
    if &saved.fingerprint != fingerprint {
        return Err(TrainError::ResumeMismatch {
            path: ck,
            message: describe_mismatch(&saved.fingerprint, fingerprint),
        });
    }
    let read = |file: &str| -> Result<HashMap<String, Tensor>, TrainError> {
        let path = ck.join(file);
        candle_core::safetensors::load(&path, &Device::Cpu).map_err(candle_err(&path))
    };
    let weights = read(WEIGHTS)?;
    let mut moments = read(OPTIMIZER)?;
    let mut optimizer = BTreeMap::new();
    for (name, steps) in saved.adam_steps {
        let mut take = |key: String| -> Result<Vec<f32>, TrainError> {
            let t = moments.remove(&key).ok_or_else(|| {
                TrainError::checkpoint(ck.join(OPTIMIZER), format!("no tensor {key}"))
            })?;
            t.to_vec1::<f32>().map_err(candle_err(&ck))
        };
        let m = take(format!("m.{name}"))?;
        let v = take(format!("v.{name}"))?;
        optimizer.insert(name, (m, v, steps));
    }
    let best = if ck.join(BEST).is_file() {
        Some(read(BEST)?)
    } else {
        None
    };
    Ok(Some(Loaded {
        dir: ck,
        state: saved.state,
        weights,
        optimizer,
        best,
    }))
}

fn describe_mismatch(saved: &Fingerprint, now: &Fingerprint) -> String {
    if saved.config != now.config {
        return format!(
            "training config differs (saved {}, now {})",
            saved.config, now.config
        );
    }
    if saved.labels != now.labels {
        return format!("labels differ (saved {}, now {})", saved.labels, now.labels);
    }
    format!(
        "data differs (saved {} train / {} dev examples and {} steps, now {} / {} and {})",
        saved.train_examples,
        saved.dev_examples,
        saved.total_steps,
        now.train_examples,
        now.dev_examples,
        now.total_steps
    )
}

/// Copies saved values into `vars` (names prefixed with `prefix.`); every var must be present.
pub(crate) fn restore_vars(
    vars: &BTreeMap<String, Var>,
    prefix: &str,
    saved: &HashMap<String, Tensor>,
    origin: &Path,
) -> Result<(), TrainError> {
    for (name, var) in vars {
        let key = format!("{prefix}.{name}");
        let t = saved
            .get(&key)
            .ok_or_else(|| TrainError::checkpoint(origin, format!("no tensor {key}")))?;
        if t.dims() != var.dims() {
            return Err(TrainError::checkpoint(
                origin,
                format!("{key} has shape {:?}, the model {:?}", t.dims(), var.dims()),
            ));
        }
        var.set(&t.to_device(var.device())?)?;
    }
    Ok(())
}
