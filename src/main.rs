//! The `asenet` binary: see `asenet --help`.

#![forbid(unsafe_code)]

use clap::Parser;

// mimalloc: the resolver and the reflector store hold many small strings and vectors; with
// glibc malloc a third of the resolve benchmark went to free-list work (docs/benchmarks.md).
// The benches declare the same allocator so their figures are the binary's. The feature
// `system-alloc` leaves it out, for heap profilers that hook malloc (heaptrack; see
// docs/benchmarks.md).
#[cfg(not(any(feature = "system-alloc", feature = "heap-stats")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// `heap-stats`: the same allocator, counting the bytes live on the heap (requested sizes).
#[cfg(all(feature = "heap-stats", not(feature = "system-alloc")))]
#[global_allocator]
static GLOBAL: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

/// `heap-stats`: appends `<seconds since start> <bytes live>` to the file `ASENET_HEAP_LOG`
/// names, twice a second, from a thread of its own.
#[cfg(all(feature = "heap-stats", not(feature = "system-alloc")))]
fn log_heap() {
    use std::io::Write;
    let Some(path) = std::env::var_os("ASENET_HEAP_LOG") else {
        return;
    };
    let started = std::time::Instant::now();
    std::thread::spawn(move || {
        let Ok(mut file) = std::fs::File::create(&path) else {
            return;
        };
        loop {
            let line = format!(
                "{:.1} {}\n",
                started.elapsed().as_secs_f64(),
                GLOBAL.allocated()
            );
            if file.write_all(line.as_bytes()).is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    });
}

fn main() -> std::process::ExitCode {
    #[cfg(all(feature = "heap-stats", not(feature = "system-alloc")))]
    log_heap();
    let cli = asenet::cli::Cli::parse();
    asenet::cli::run(cli)
}
