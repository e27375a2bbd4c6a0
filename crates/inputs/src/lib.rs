//! logferry-inputs: the general-purpose and network inputs (`dummy`, `fluentbit_logs`,
//! `forward`, `http`, `stdin`, `syslog`, `systemd`, `tcp`). One plugin, one module, named after its Fluent
//! Bit name. Each input's loop is written against [`sink::RecordSink`], so it
//! runs the same on the engine's emitter and on a test collector.

pub mod in_dummy;
pub mod in_fluentbit_logs;
pub mod in_forward;
pub mod in_http;
pub mod in_stdin;
pub mod in_syslog;
pub mod in_systemd;
pub mod in_tcp;
pub mod net;
pub mod sink;

use logferry_core::config::{ConfigError, Entry, Section};
use logferry_engine::InputPlugin;

/// Every input in this crate, in documentation order.
pub static PLUGINS: &[&InputPlugin] = &[
    &in_dummy::PLUGIN,
    &in_fluentbit_logs::PLUGIN,
    &in_forward::PLUGIN,
    &in_http::PLUGIN,
    &in_stdin::PLUGIN,
    &in_syslog::PLUGIN,
    &in_systemd::PLUGIN,
    &in_tcp::PLUGIN,
];

/// An error about `key`, at the entry that set it (the last one), else at the section.
pub(crate) fn key_error(
    section: &Section,
    entries: &[&Entry],
    key: &str,
    reason: String,
) -> ConfigError {
    match entries
        .iter()
        .rev()
        .find(|e| e.key.eq_ignore_ascii_case(key))
    {
        Some(e) => ConfigError::key(&e.span, &e.key, reason),
        None => ConfigError::key(&section.span, key, reason),
    }
}
