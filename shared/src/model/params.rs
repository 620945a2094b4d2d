//! Where model weights come from: a loaded checkpoint or a fresh seeded initialisation.
//!
//! Modules ask a [`Params`] for each tensor by its Hugging Face name and shape. Every tensor handed out
//! is a trainable candle `Var`, recorded under its full name so that the body can later be saved,
//! diffed and fused by name.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
};

use candle_core::{DType, Device, Tensor, Var};
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, Normal};

use super::ModelError;

/// How a tensor is initialised when it is created fresh (transformers' `_init_weights`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Normal(0, initializer_range).
    Normal,
    /// All zeros (biases).
    Zeros,
    /// All ones (LayerNorm weights).
    Ones,
}

struct Inner {
    device: Device,
    /// Loaded tensors by canonical name, with a label of where they came from.
    source: Option<(Arc<BTreeMap<String, Tensor>>, String)>,
    /// Seeded RNG and normal std for fresh tensors; with a source, used only under `optional()`.
    init: (Mutex<StdRng>, f64),
    vars: Mutex<BTreeMap<String, Var>>,
    created: Mutex<BTreeSet<String>>,
}

/// A handle onto a set of named trainable parameters, with a name prefix (like candle's `VarBuilder`).
#[derive(Clone)]
pub struct Params {
    inner: Arc<Inner>,
    prefix: String,
    /// Whether a tensor missing from the source may be created fresh under this handle.
    allow_init: bool,
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Params(prefix={:?}, vars={})",
            self.prefix,
            self.names().len()
        )
    }
}

impl Params {
    fn build(
        device: &Device,
        source: Option<(Arc<BTreeMap<String, Tensor>>, String)>,
        seed: u64,
        std: f64,
    ) -> Self {
        let allow_init = source.is_none();
        let inner = Inner {
            device: device.clone(),
            source,
            init: (Mutex::new(StdRng::seed_from_u64(seed)), std),
            vars: Mutex::new(BTreeMap::new()),
            created: Mutex::new(BTreeSet::new()),
        };
        Self {
            inner: Arc::new(inner),
            prefix: String::new(),
            allow_init,
        }
    }

    /// Parameters read from `tensors` (canonical names); a missing tensor is an error naming `origin`,
    /// except under [`Params::optional`], where it is created with a fixed-seed init of normal `std`.
    pub fn load(
        tensors: Arc<BTreeMap<String, Tensor>>,
        origin: &str,
        device: &Device,
        std: f64,
    ) -> Self {
        Self::build(device, Some((tensors, origin.to_string())), 0, std)
    }

    /// Fresh parameters from a seeded init with the given normal std.
    pub fn init(device: &Device, seed: u64, std: f64) -> Self {
        Self::build(device, None, seed, std)
    }

    /// A handle whose names are prefixed with `name.`.
    pub fn pp(&self, name: &str) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Self {
            inner: Arc::clone(&self.inner),
            prefix,
            allow_init: self.allow_init,
        }
    }

    /// A handle under which tensors missing from the source are created fresh instead of failing
    /// (for parts HF also initialises when absent, such as BERT's pooler).
    pub fn optional(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            prefix: self.prefix.clone(),
            allow_init: true,
        }
    }

    /// The device tensors are placed on.
    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Returns the trainable tensor `name` with the given shape, loading or creating it.
    pub fn get(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor, ModelError> {
        let full = self.full_name(name);
        if let Some(v) = self.lock_vars().get(&full) {
            return Ok(v.as_tensor().clone());
        }
        let tensor = match self.lookup(&full, shape)? {
            Some(t) => t,
            None => self.create(&full, shape, init)?,
        };
        let var = Var::from_tensor(&tensor)?;
        let out = var.as_tensor().clone();
        self.lock_vars().insert(full, var);
        Ok(out)
    }

    fn lookup(&self, full: &str, shape: &[usize]) -> Result<Option<Tensor>, ModelError> {
        let Some((tensors, origin)) = &self.inner.source else {
            return Ok(None);
        };
        let Some(t) = tensors.get(full) else {
            if self.allow_init {
                tracing::warn!(
                    tensor = full,
                    origin = origin.as_str(),
                    "tensor missing, initialising fresh"
                );
                return Ok(None);
            }
            return Err(ModelError::MissingTensor {
                name: full.to_string(),
                origin: origin.clone(),
            });
        };
        if t.dims() != shape {
            return Err(ModelError::ShapeMismatch {
                name: full.to_string(),
                origin: origin.clone(),
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
            });
        }
        Ok(Some(t.to_dtype(DType::F32)?.to_device(&self.inner.device)?))
    }

    fn create(&self, full: &str, shape: &[usize], init: Init) -> Result<Tensor, ModelError> {
        let (rng, std) = &self.inner.init;
        let n: usize = shape.iter().product();
        let dev = &self.inner.device;
        let t = match init {
            Init::Zeros => Tensor::zeros(shape, DType::F32, dev)?,
            Init::Ones => Tensor::ones(shape, DType::F32, dev)?,
            Init::Normal => {
                let normal = Normal::new(0.0f32, *std as f32)
                    .map_err(|e| ModelError::BadInput(format!("initializer std {std}: {e}")))?;
                let mut rng = rng.lock().unwrap_or_else(|e| e.into_inner());
                let data: Vec<f32> = (0..n).map(|_| normal.sample(&mut *rng)).collect();
                Tensor::from_vec(data, shape, dev)?
            }
        };
        self.inner
            .created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(full.to_string());
        Ok(t)
    }

    fn lock_vars(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Var>> {
        self.inner.vars.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// All parameters handed out so far, by full name.
    pub fn vars(&self) -> BTreeMap<String, Var> {
        self.lock_vars().clone()
    }

    /// Names of all parameters handed out so far.
    pub fn names(&self) -> Vec<String> {
        self.lock_vars().keys().cloned().collect()
    }

    /// Names of parameters that were created fresh rather than loaded.
    pub fn created(&self) -> Vec<String> {
        self.inner
            .created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
