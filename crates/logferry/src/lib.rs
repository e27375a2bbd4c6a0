//! The `logferry` binary's library half: command line, plugin registry and the run loop, kept
//! out of `main.rs` so that tests can drive them.

pub mod app;
pub mod aws_init;
pub mod cli;
pub mod logging;
pub mod memory;
pub mod registry;
