//! coldfuse-shared: the pure core of coldfuse.
//!
//! Everything that does not speak HTTP lives here: differentiable encoder models written with candle
//! (`model`), Hugging Face checkpoint I/O (`checkpoint`), tokenization (`tokenize`), the batch type
//! that connects them, the contribution format (`diff`), lazily read safetensors (`tensorfile`) and
//! the fusion engine (`fusion`), labelled data readers (`data`) and the fine-tuning engine (`train`); with the `store` feature,
//! the object-store client of a deployment (`store`).
//! See `ARCHITECTURE.md` at the repository root for the map.

pub mod api;
pub mod batch;
pub mod checkpoint;
pub mod classifier;
pub mod data;
pub mod diff;
pub mod fusion;
pub mod hash;
pub mod logging;
pub mod model;
pub mod parallel;
pub mod private_file;
#[cfg(feature = "store")]
pub mod store;
pub mod synthetic;
pub mod tensorfile;
pub mod tokenize;
pub mod train;

pub use batch::Batch;
pub use checkpoint::{CheckpointError, ModelDir};
pub use classifier::{HeadInit, SequenceClassifier};
pub use model::{Architecture, ForwardCtx, ModelError};
pub use tokenize::{TextTokenizer, TokenizeError};
