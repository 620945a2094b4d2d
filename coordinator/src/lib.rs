//! coldfuse-coordinator: the ColD Fusion coordinator as a library (the binary is a thin CLI over it),
//! so handler tests run the real router in-process.
//!
//! State lives in an object store (see `coldfuse_shared::api::keys` for the layout); the process keeps
//! a cache of it in memory and a local work directory for the current base and uploads.

pub mod auth;
pub mod bench;
pub mod edge;
pub mod error;
pub mod folding;
pub mod fusion_task;
pub mod gate;
pub mod init;
pub mod metrics;
pub mod openapi;
pub mod publish;
pub mod quarantine;
pub mod routes;
pub mod server;
pub mod signing;
pub mod state;
pub mod tar;
pub mod upload;

/// The deployment's object store (in `coldfuse_shared` so auditors read it without the coordinator).
pub use coldfuse_shared::store::{Store, StoreError};
pub use error::ApiError;
pub use state::Coordinator;
