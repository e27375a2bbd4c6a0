//! `logferry`: a Fluent Bit compatible log agent. See README.md.

fn main() -> std::process::ExitCode {
    logferry::app::main()
}
