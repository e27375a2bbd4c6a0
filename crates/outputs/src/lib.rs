//! logferry-outputs: the general-purpose and network outputs (`stdout`, `null`, `file`,
//! `forward`, `http`). The AWS outputs live in their own crate. One plugin, one module, named after its Fluent Bit name; [`json`] holds
//! the JSON encodings they share (msgpack is `logferry_core::msgpack`).

pub mod json;
pub mod net;
pub mod out_file;
pub mod out_forward;
pub mod out_http;
pub mod out_null;
pub mod out_stdout;

use logferry_engine::OutputPlugin;

/// Every output in this crate, in documentation order.
pub static PLUGINS: &[&OutputPlugin] = &[
    &out_file::PLUGIN,
    &out_forward::PLUGIN,
    &out_http::PLUGIN,
    &out_null::PLUGIN,
    &out_stdout::PLUGIN,
];
