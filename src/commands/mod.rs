//! One module per subcommand; each wires the library crates together and
//! returns the process's exit code.
//!
//! Layer: runtime wiring for the CLI. The modules import the library crates
//! and [`crate::cli`]; none imports another subcommand's module, except
//! that `audit` and `mirror --from-cluster` both read the cluster through
//! [`cluster`].

mod audit;
mod certs;
mod cluster;
mod config_check;
mod containerd_config;
mod explain;
mod logging;
mod mirror;
mod policy;
mod proxy;
mod rewrite;
mod serve;

use std::io::{Read, Write};
use std::path::Path;

use anyhow::Context;
use detour_core::config::{Config, ConfigError};
use detour_core::manifest;
use detour_serve::log_writer;

use crate::cli::{Cli, Command, ConfigCommand, LogFormat};

/// Why an offline command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: more than {1} bytes")]
    TooLarge(String, u64),
    #[error(transparent)]
    Native(#[from] detour_core::native::NativeError),
}

/// Runs the command the arguments name; returns the exit code.
pub fn run(cli: &Cli) -> anyhow::Result<i32> {
    let stdout = std::io::stdout();
    let code = match &cli.command {
        Command::Explain(args) => {
            explain::run(&cli.rules.source().load()?.rules, args, &mut stdout.lock())?
        }
        Command::Rewrite(args) => {
            rewrite::run(&cli.rules.source().load()?.rules, args, &mut stdout.lock())?
        }
        Command::Config(ConfigCommand::Check { file }) => {
            config_check::run(file, &cli.rules, &mut stdout.lock())?
        }
        Command::Certs(args) => certs::run(args, &mut stdout.lock())?,
        Command::Serve(args) => {
            serve::run(args, cli)?;
            0
        }
        Command::Mirror(args) => {
            let (_log_guard, config, runtime) = network_command(cli)?;
            runtime
                .block_on(mirror::run(args, &config, &mut stdout.lock()))
                .map_err(|e| anyhow::anyhow!(e))?
        }
        Command::Proxy(args) => {
            proxy::run(args, cli)?;
            0
        }
        Command::ContainerdConfig(args) => containerd_config::run(args, cli, &mut stdout.lock())?,
        Command::Policy(args) => {
            policy::run(&cli.rules.source().load()?, args, &mut stdout.lock())?
        }
        Command::Audit(args) => {
            let (_log_guard, config, runtime) = network_command(cli)?;
            runtime
                .block_on(audit::run(args, &config, &mut stdout.lock()))
                .map_err(|e| anyhow::anyhow!(e))?
        }
    };
    stdout.lock().flush()?;
    Ok(code)
}

/// What a command that talks to registries or the Kubernetes API needs:
/// text logs, the process's one crypto provider, the config and a runtime.
fn network_command(
    cli: &Cli,
) -> anyhow::Result<(log_writer::FlushGuard, Config, tokio::runtime::Runtime)> {
    let log_guard = logging::init(LogFormat::Text);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = cli.rules.source().load()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    Ok((log_guard, config, runtime))
}

/// Reads a file (or standard input for `-`), refusing more than `limit` bytes.
fn read_input(file: &Path, limit: u64) -> Result<String, CommandError> {
    let name = file.display().to_string();
    let mut text = String::new();
    if name == "-" {
        std::io::stdin()
            .take(limit + 1)
            .read_to_string(&mut text)
            .map_err(|e| CommandError::Io(name.clone(), e))?;
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(limit + 1).read_to_string(&mut text))
            .map_err(|e| CommandError::Io(name.clone(), e))?;
    }
    if text.len() as u64 > limit {
        return Err(CommandError::TooLarge(name, limit));
    }
    Ok(text)
}
