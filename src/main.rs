//! The `detour` binary: parse arguments, set up logging, run a command, and
//! map errors to exit codes (0 ok, 1 invalid input found, 2 error).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use detour::cli::{Cli, Command, ConfigCommand, LogFormat, ProxyArgs, ServeArgs};
use detour::pullthrough::{self, ProxyConfig};
use detour::{audit_command, certs, commands, managed_certs, mirror_command, server, tls};

// The admission path allocates many small strings; mimalloc is measurably
// faster than glibc malloc for it (README, Performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let code = match &cli.command {
        Command::Explain(args) => commands::explain(
            &commands::load_config(&cli.rules)?.rules,
            args,
            &mut stdout.lock(),
        )?,
        Command::Rewrite(args) => commands::rewrite(
            &commands::load_config(&cli.rules)?.rules,
            args,
            &mut stdout.lock(),
        )?,
        Command::Config(ConfigCommand::Check { file }) => {
            commands::config_check(file, &cli.rules, &mut stdout.lock())?
        }
        Command::Certs(args) => {
            let request = certs::CertRequest {
                service: args.service.clone(),
                namespace: args.namespace.clone(),
                dns: args.dns.clone(),
                ips: args.ip.clone(),
                days: args.days,
            };
            certs::write(&certs::generate(&request)?, &args.out)?;
            writeln!(
                stdout.lock(),
                "wrote {0}/ca.crt, {0}/tls.crt, {0}/tls.key for {1:?}",
                args.out.display(),
                request.dns_names()
            )?;
            0
        }
        Command::Serve(args) => {
            serve(args, &cli)?;
            0
        }
        Command::Mirror(args) => {
            let (_log_guard, config, runtime) = network_command(&cli)?;
            runtime
                .block_on(mirror_command::run(args, &config, &mut stdout.lock()))
                .map_err(|e| anyhow::anyhow!(e))?
        }
        Command::Proxy(args) => {
            proxy(args, &cli)?;
            0
        }
        Command::ContainerdConfig(args) => {
            let path = cli
                .rules
                .config
                .as_ref()
                .context("--config: the proxy's config file is required")?;
            let config = ProxyConfig::load(path)?;
            let written = pullthrough::containerd::write_all(
                &config,
                &args.mirror,
                args.ca.as_deref(),
                &args.out,
            )
            .map_err(|e| anyhow::anyhow!(e))?;
            for file in written {
                writeln!(stdout.lock(), "wrote {}", file.display())?;
            }
            0
        }
        Command::Audit(args) => {
            let (_log_guard, config, runtime) = network_command(&cli)?;
            runtime
                .block_on(audit_command::run(args, &config, &mut stdout.lock()))
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
) -> anyhow::Result<(
    detour::log_writer::FlushGuard,
    detour::config::Config,
    tokio::runtime::Runtime,
)> {
    let log_guard = init_logging(LogFormat::Text);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = commands::load_config(&cli.rules)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    Ok((log_guard, config, runtime))
}

fn serve(args: &ServeArgs, cli: &Cli) -> anyhow::Result<()> {
    // Log lines are written by a background thread, off the request path;
    // the guard flushes them at exit.
    let _log_guard = init_logging(args.log_format);
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
        rules: cli.rules.clone(),
        shutdown_delay: args.shutdown_delay,
        shutdown_grace: args.shutdown_grace,
        reload_interval: args.reload_interval,
        managed: managed_options(args)?,
    };
    let runtime = server::runtime().context("cannot start the runtime")?;
    runtime.block_on(server::run(options))?;
    Ok(())
}

fn proxy(args: &ProxyArgs, cli: &Cli) -> anyhow::Result<()> {
    let _log_guard = init_logging(args.log_format);
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
    let options = pullthrough::ProxyOptions {
        config,
        listen: args.listen.unwrap_or((host, 5443).into()),
        admin_listen: args.admin_listen.unwrap_or((host, admin_port).into()),
        tls: (!args.plain_http).then(|| tls::TlsSource {
            cert_dir: args.cert_dir.clone(),
            client_ca: None,
        }),
        dev: args.dev,
        shutdown_delay: args.shutdown_delay,
        shutdown_grace: args.shutdown_grace,
        reload_interval: args.reload_interval,
    };
    let runtime = server::runtime().context("cannot start the runtime")?;
    runtime.block_on(pullthrough::run(options))?;
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

fn init_logging(format: LogFormat) -> detour::log_writer::FlushGuard {
    use tracing_subscriber::EnvFilter;
    // kube's client logs each failed request as an error of its own; detour
    // reports the failure itself, once.
    let filter = EnvFilter::try_from_env("DETOUR_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,kube_client=off"));
    // Lines are formatted here and written in batches by a thread of their
    // own (log_writer): under load many lines share one write(2), and logging
    // wakes no other thread per line.
    let (writer, guard) = detour::log_writer::batched(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        // The stock JSON formatter's lines, written faster (log_format).
        LogFormat::Json => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(detour::log_format::JsonLines::default())
            .init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    guard
}
