//! A contributor's labelled data: CSV, TSV and JSONL readers with column mapping, label vocabularies
//! or regression targets, a dev file or seeded dev split, and length-bucketed padded batches.
//!
//! Bad rows (missing column, empty text or label, invalid UTF-8, a label outside the vocabulary) are
//! left out and reported with file and line; a file with no usable row is an error, never a silent
//! zero-step training.

mod batching;
mod draws;
mod error;
mod labels;
mod load;
mod read;
mod shard;
mod spec;

pub use batching::{
    bucketed_batches, sequential_batches, sorted_batches, EncodedRow, EncodedSet, LabelledBatch,
    BUCKET_BATCHES,
};
pub use draws::Draws;
pub use error::{BadRow, BadRowKind, DataError};
pub use labels::{LabelSpace, Target};
pub use load::{load, DevSource, Example, LoadReport, TrainData};
pub use spec::{BadRowPolicy, Column, Columns, DataSpec, Format, TaskKind};
