//! coldfuse-shared: the pure core of coldfuse.
//!
//! Everything that does not speak HTTP lives here: differentiable encoder models written with candle
//! (`model`), Hugging Face checkpoint I/O (`checkpoint`), tokenization (`tokenize`) and the batch type
//! that connects them. Later layers (training, diffs, fusion, store layout, API types) build on these.
//! See `ARCHITECTURE.md` at the repository root for the map.

pub mod batch;
pub mod checkpoint;
pub mod classifier;
pub mod model;
pub mod tokenize;

pub use batch::Batch;
pub use checkpoint::{CheckpointError, ModelDir};
pub use classifier::{HeadInit, SequenceClassifier};
pub use model::{Architecture, ForwardCtx, ModelError};
pub use tokenize::{TextTokenizer, TokenizeError};
