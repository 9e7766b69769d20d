//! `detour proxy`: the pull-through cache, from its config file or `--dev`.
//!
//! Layer: runtime wiring for the CLI: flags in, detour-proxy's options out.

use anyhow::Context;
use detour_proxy::ProxyConfig;
use detour_serve::{https, tls};

use super::logging;
use crate::cli::{Cli, ProxyArgs};

/// Runs the pull-through proxy until SIGTERM.
pub fn run(args: &ProxyArgs, cli: &Cli) -> anyhow::Result<()> {
    let _log_guard = logging::init(args.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match (&cli.rules.config, args.dev) {
        (Some(path), _) => ProxyConfig::load(path)?,
        (None, true) => ProxyConfig::dev(std::env::temp_dir().join("detour-proxy-cache")),
        (None, false) => anyhow::bail!("--config: the proxy's config file is required (or --dev)"),
    };
    let host = if args.dev {
        [127, 0, 0, 1]
    } else {
        [0, 0, 0, 0]
    };
    let admin_port = if args.dev { 8081 } else { 8080 };
    let options = detour_proxy::ProxyOptions {
        config,
        listen: args.listen.unwrap_or((host, 5443).into()),
        admin_listen: args.admin_listen.unwrap_or((host, admin_port).into()),
        tls: (!args.plain_http).then(|| tls::TlsSource {
            // --dev makes throwaway certificates: not in the working directory.
            cert_dir: match (&args.cert_dir, args.dev) {
                (Some(dir), _) => dir.clone(),
                (None, true) => std::env::temp_dir().join("detour-proxy-dev-certs"),
                (None, false) => "certs".into(),
            },
            client_ca: None,
        }),
        dev: args.dev,
        shutdown_delay: args.shutdown_delay,
        shutdown_grace: args.shutdown_grace,
        reload_interval: args.reload_interval,
    };
    let runtime = https::runtime().context("cannot start the runtime")?;
    runtime.block_on(detour_proxy::run(options))?;
    Ok(())
}
