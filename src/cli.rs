//! Command-line interface: clap types only, no logic. Every flag can also be
//! set from the environment (`DETOUR_*`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::presets::PresetRef;

#[derive(Debug, Parser)]
#[command(
    name = "detour",
    version,
    about = "Rewrite Kubernetes Pod images to registry mirrors"
)]
pub struct Cli {
    #[command(flatten)]
    pub rules: RuleArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Which rules to use; shared by every command.
#[derive(Debug, Clone, Args)]
pub struct RuleArgs {
    /// Config file (YAML). Without it and without --preset, the embedded default is used.
    #[arg(long, global = true, env = "DETOUR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Add a preset (repeatable, or comma-separated): daocloud, daocloud-hosts, lank8s,
    /// aliyun, sjtu, nju, anjia0532, self-hosted=<mirror>.
    #[arg(
        long = "preset",
        global = true,
        env = "DETOUR_PRESET",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub presets: Vec<PresetRef>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show how images parse and what they are rewritten to.
    Explain(ExplainArgs),
    /// Rewrite the images in Kubernetes manifests (YAML or JSON) offline.
    Rewrite(RewriteArgs),
    /// Validate and show configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Output format; json prints one object per line.
    #[arg(
        short = 'o',
        long,
        value_enum,
        default_value = "text",
        env = "DETOUR_OUTPUT"
    )]
    pub output: OutputFormat,
    /// Images; `-` reads one image per line from standard input.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RewriteArgs {
    /// Manifest file, or `-` for standard input.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE",
        env = "DETOUR_FILENAME"
    )]
    pub file: PathBuf,
    /// Print only the changes, one per line.
    #[arg(long, env = "DETOUR_DIFF")]
    pub diff: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file and print the rules as understood.
    Check {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}
