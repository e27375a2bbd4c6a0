//! `logferry`: a Fluent Bit compatible log agent. See README.md.

/// mimalloc instead of glibc's malloc: records are many small short-lived allocations made on
/// one thread and freed on another; glibc's per-thread arenas keep that memory fragmented (peak
/// RSS) and spend a fifth of the CPU in `_int_free`/`malloc_consolidate` (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // First, while this is the only thread.
    logferry::memory::tune_allocator();
    logferry::app::main()
}
