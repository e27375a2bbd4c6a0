//! logferry-kubernetes: the `kubernetes` filter. `config` declares its options, `tag` reads
//! pod identity from the tail tag, `meta` turns any Pod JSON into the metadata Fluent Bit adds,
//! `merge` is `Merge_Log`, `api` talks to the API server (token, TLS, GET, node-scoped
//! list-then-watch), `cache` keeps metadata within bounds, `aws` is EKS pod association,
//! `local` finds the agent's own pod, `filter_kubernetes` is the plugin. `testing` (feature) is
//! the HTTPS test API server.

pub mod api;
pub mod aws;
pub mod cache;
pub mod config;
pub mod filter_kubernetes;
pub mod local;
pub mod merge;
pub mod meta;
pub mod tag;
#[cfg(feature = "testing")]
pub mod testing;

pub use filter_kubernetes::PLUGIN;
