//! logferry-core: the event model, tags and match rules, and the configuration model with its
//! Fluent Bit readers. Everything here is synchronous and runtime-free; see `README.md`.

pub mod chunk;
pub mod config;
pub mod event;
pub mod fb_regex;
pub mod forward;
pub mod json_fast;
pub mod msgpack;
pub mod packed;
pub mod record_accessor;
pub mod tag;

pub use chunk::{Chunk, Delivery, DeliveryStatus, Held, MemCharge};
pub use event::{EventTime, Map, Record, Str, Value};
pub use tag::{Matcher, Tag};
