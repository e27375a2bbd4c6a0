//! logferry-kubernetes: the `kubernetes` filter. `config` declares its options, `tag` reads
//! pod identity from the tail tag, `meta` turns Pod JSON into the metadata Fluent Bit adds,
//! `api` talks to the API server (token, TLS, GET, node-scoped watch), `cache` keeps metadata,
//! `filter_kubernetes` is the plugin. `testing` (feature) is the HTTPS test API server.

pub mod api;
pub mod cache;
pub mod config;
pub mod filter_kubernetes;
pub mod meta;
pub mod tag;
#[cfg(feature = "testing")]
pub mod testing;

pub use filter_kubernetes::PLUGIN;
