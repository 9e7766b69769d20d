//! The `detour` binary: parse the arguments, run the command, and map
//! errors to exit codes (0 ok, 1 invalid input found, 2 error).
//!
//! Layer: the top of the workspace. [`cli`] holds the clap types; each
//! module of [`commands`] wires the library crates together for one
//! subcommand (README, Layout).

mod cli;
mod commands;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

// The admission path allocates many small strings; mimalloc is measurably
// faster than glibc malloc for it (README, Performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(&cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "detour: {e:#}");
            ExitCode::from(2)
        }
    }
}
