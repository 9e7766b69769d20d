//! `detour containerd-config`: the `hosts.toml` files that point each node's
//! containerd at the proxy, from the proxy's own config.
//!
//! Layer: runtime wiring for the CLI over detour-proxy's writer.

use std::io::Write;

use anyhow::Context;
use detour_proxy::ProxyConfig;

use crate::cli::{Cli, ContainerdConfigArgs};

/// Writes one `hosts.toml` per upstream and names each file written.
pub fn run(args: &ContainerdConfigArgs, cli: &Cli, out: &mut dyn Write) -> anyhow::Result<i32> {
    let path = cli
        .rules
        .config
        .as_ref()
        .context("--config: the proxy's config file is required")?;
    let config = ProxyConfig::load(path)?;
    let written =
        detour_proxy::containerd::write_all(&config, &args.mirror, args.ca.as_deref(), &args.out)
            .map_err(|e| anyhow::anyhow!(e))?;
    for file in written {
        writeln!(out, "wrote {}", file.display())?;
    }
    Ok(0)
}
