//! The `detour` binary: parse arguments, run a command, map errors to exit codes.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use detour::cli::{Cli, Command, ConfigCommand};
use detour::commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "detour: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let code = match &cli.command {
        Command::Explain(args) => {
            commands::explain(&commands::load_config(&cli.rules)?.rules, args, &mut out)?
        }
        Command::Rewrite(args) => {
            commands::rewrite(&commands::load_config(&cli.rules)?.rules, args, &mut out)?
        }
        Command::Config(ConfigCommand::Check { file }) => {
            commands::config_check(file, &cli.rules, &mut out)?
        }
    };
    out.flush()?;
    Ok(code)
}
