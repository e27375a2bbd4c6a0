//! logferry-engine: plugin traits and registry, shared options, pipeline build and runtime.
//! See `README.md` and ARCHITECTURE.md for the rules this crate keeps.

pub mod budget;
pub mod common;
pub mod condition;
pub mod emitter;
pub mod metrics;
mod output;
pub mod pipeline;
pub mod plugin;
pub mod processors;
pub mod retired_tags;
mod router;
mod routes;
pub mod run;
pub mod self_log;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;

pub use emitter::Emitter;
pub use pipeline::{BuildErrors, Pipeline};
pub use plugin::{
    Batch, BatchRecords, BuildContext, Carrier, Filter, FilterPlugin, FlushResult, HeldCharge,
    Hold, Input, InputContext, InputExit, InputPlugin, Output, OutputPlugin, Part, PluginError,
    ReadRecords, Registry, Released,
};
pub use router::PACK_AT_BYTES;
pub use run::StopReason;
pub use tokio_util::sync::CancellationToken;
