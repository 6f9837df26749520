//! The `asenet` binary: see `asenet --help`.

#![forbid(unsafe_code)]

use clap::Parser;

// mimalloc: the resolver and the reflector store hold many small strings and vectors; with
// glibc malloc a third of the resolve benchmark went to free-list work (docs/benchmarks.md).
// The benches declare the same allocator so their figures are the binary's. The feature
// `system-alloc` leaves it out, for heap profilers that hook malloc (heaptrack; see
// docs/benchmarks.md).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = asenet::cli::Cli::parse();
    asenet::cli::run(cli)
}
