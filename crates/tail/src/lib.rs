//! logferry-tail: the `tail` input. See `README.md`; `in_tail` is the plugin, `format` the
//! Docker/CRI framing, `db` the Fluent Bit compatible offsets DB, `acks` the ordered commit of
//! offsets after delivery, `marker` Fluent Bit 5.x's offset marker.

pub mod acks;
pub mod config;
pub mod db;
pub mod format;
pub mod in_tail;
pub mod marker;

pub use in_tail::PLUGIN;
