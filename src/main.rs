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

use clap::{CommandFactory, FromArgMatches};

// The admission path allocates many small strings; mimalloc is measurably
// faster than glibc malloc for it (README, Performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = parse();
    match commands::run(&cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "detour: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The arguments; as `kubectl-detour` (a kubectl plugin, run as `kubectl
/// detour …`) usage and errors say `kubectl detour`.
fn parse() -> cli::Cli {
    let mut command = cli::Cli::command();
    let invoked = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&invoked)
        .file_name()
        .unwrap_or_default();
    if name == "kubectl-detour" {
        command = command.bin_name(cli::KUBECTL_PLUGIN_USAGE);
    }
    let matches = command.get_matches();
    cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}
