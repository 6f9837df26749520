//! The `asenet` binary: see `asenet --help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = asenet::cli::Cli::parse();
    asenet::cli::run(cli)
}
