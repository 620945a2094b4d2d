//! coldfuse-contributor: what a site does. Talk to the coordinator (`client`, with retries in
//! `retry`), remember where it is (`settings`, `login`), pull the fused base (`pull`), fine-tune it on
//! local data into a contribution (`args`, `train`), upload it (`submit`), run that loop (`run_loop`),
//! keep and check signed receipts (`receipt`), and audit a published iteration (`verify`). The `coldfuse`
//! binary (`contributor/cli`) is a thin command line over it; the lab crate (`contributor/lab`) builds
//! the demo, evaluation and benchmarks on top.

pub mod args;
pub mod client;
pub mod evaluate;
pub mod gate;
pub mod heldout;
pub mod inspect;
pub mod login;
pub mod progress;
pub mod pull;
pub mod receipt;
pub mod retry;
pub mod run_loop;
pub mod settings;
pub mod status;
pub mod submit;
pub mod train;
pub mod verify;

pub use client::{Client, ClientError};
pub use settings::{ConnectArgs, Settings};

/// Adds the next step to a coordinator error that does not carry one yet.
pub fn with_hint(e: anyhow::Error) -> anyhow::Error {
    let hint = e
        .chain()
        .find_map(|c| c.downcast_ref::<ClientError>())
        .and_then(ClientError::hint);
    match hint {
        Some(h) if !e.chain().any(|c| c.to_string() == h) => e.context(h),
        _ => e,
    }
}
