//! `detour serve`: the webhook, with its certificates (files, `--dev`, or
//! self-managed in the cluster).
//!
//! Layer: runtime wiring for the CLI: flags in, detour-webhook's options
//! out, then its server on detour-serve's runtime.

use anyhow::Context;
use detour_serve::{certs, https, tls};
use detour_webhook::{managed_certs, server};

use super::logging;
use crate::cli::{Cli, ServeArgs};

/// Runs the webhook until SIGTERM; returns when it has drained.
pub fn run(args: &ServeArgs, cli: &Cli) -> anyhow::Result<()> {
    // Log lines are written by a background thread, off the request path;
    // the guard flushes them at exit.
    let _log_guard = logging::init(args.log_format);
    // One crypto provider for the whole process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let host = if args.dev {
        [127, 0, 0, 1]
    } else {
        [0, 0, 0, 0]
    };
    let options = server::ServeOptions {
        listen: args.listen.unwrap_or((host, 8443).into()),
        admin_listen: args.admin_listen.unwrap_or((host, 8080).into()),
        tls: tls::TlsSource {
            cert_dir: args.cert_dir.clone(),
            client_ca: args.client_ca.clone(),
        },
        dev: args.dev,
        rules: cli.rules.source(),
        shutdown_delay: args.shutdown_delay,
        shutdown_grace: args.shutdown_grace,
        reload_interval: args.reload_interval,
        managed: managed_options(args)?,
    };
    let runtime = https::runtime().context("cannot start the runtime")?;
    runtime.block_on(server::run(options))?;
    Ok(())
}

/// `--manage-certs`: what to manage, and the cluster to manage it in.
fn managed_options(args: &ServeArgs) -> anyhow::Result<Option<server::ManagedSetup>> {
    let m = &args.managed;
    if !m.manage_certs {
        return Ok(None);
    }
    let seconds = |d: std::time::Duration| time::Duration::seconds(d.as_secs() as i64);
    let policy = managed_certs::plan::Policy {
        ca_validity: seconds(m.ca_validity),
        cert_validity: seconds(m.cert_validity),
        propagation: seconds(m.cert_sync_interval) * 2,
    };
    policy.check().map_err(|e| anyhow::anyhow!(e))?;
    Ok(Some(server::ManagedSetup {
        kubeconfig: m.kubeconfig.clone(),
        options: managed_certs::ManagedOptions {
            namespace: m.namespace.clone(),
            secret: m.cert_secret.clone(),
            webhook_configuration: m.webhook_configuration.clone(),
            names: certs::CertRequest {
                service: Some(m.service.clone()),
                namespace: m.namespace.clone(),
                dns: m.cert_dns.clone(),
                ips: m.cert_ip.clone(),
                days: 0,
            },
            policy,
            interval: m.cert_sync_interval,
        },
    }))
}
