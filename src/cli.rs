//! Command-line interface: clap types only, no logic. Every flag can also be
//! set from the environment (`DETOUR_*`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use detour_core::config::{Config, ConfigSource, MirrorSettings};
use detour_core::duration::parse_duration;
use detour_core::presets::PresetRef;

/// How kubectl runs detour when the binary is installed as `kubectl-detour`.
pub const KUBECTL_PLUGIN_USAGE: &str = "kubectl detour";

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
    /// Config file (YAML): the rules (without it and without --preset, the embedded default),
    /// or for `proxy` and `containerd-config` the proxy's config.
    #[arg(long, global = true, env = "DETOUR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Add a preset (repeatable, or comma-separated): daocloud, daocloud-hosts, lank8s,
    /// aliyun, sjtu, nju, anjia0532, self-hosted=<mirror>, self-hosted-hosts=<domain>.
    #[arg(
        long = "preset",
        global = true,
        env = "DETOUR_PRESET",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub presets: Vec<PresetRef>,
}

impl RuleArgs {
    /// The config file and presets these flags name.
    pub fn source(&self) -> ConfigSource {
        ConfigSource {
            config: self.config.clone(),
            presets: self.presets.clone(),
        }
    }
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
    /// Run the admission webhook (HTTPS) and its admin server.
    Serve(ServeArgs),
    /// Write a CA and a serving certificate for the webhook Service.
    Certs(CertsArgs),
    /// Copy images into a mirror registry now (every platform, same digests).
    Mirror(MirrorArgs),
    /// What the config would change in a live cluster, namespace by namespace.
    Audit(AuditArgs),
    /// Run a pull-through caching registry for the upstreams of a proxy config (--config).
    Proxy(ProxyArgs),
    /// Write containerd hosts.toml files that pull each upstream of a proxy config through the proxy.
    ContainerdConfig(ContainerdConfigArgs),
    /// Print admission policies that make the apiserver rewrite images itself (native mode,
    /// Kubernetes 1.36+): no webhook, certificates or Deployment. Apply with
    /// `kubectl apply --server-side -f -`.
    Policy(PolicyArgs),
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Which namespaces are rewritten: opt-in (labelled detour.dev/mode=enforce) or cluster-wide
    /// (all but those labelled detour.dev/mode=off or =audit); namespaces labelled =audit get
    /// warnings only; never kube-system or detour-system.
    #[arg(long, value_enum, default_value_t = NamespaceScope::OptIn)]
    pub namespaces: NamespaceScope,
    /// yaml: multi-document YAML; json: one v1 List.
    #[arg(short = 'o', long, value_enum, default_value_t = PolicyFormat::Yaml)]
    pub output: PolicyFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NamespaceScope {
    OptIn,
    ClusterWide,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyFormat {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Registry address. Default 0.0.0.0:5443, or 127.0.0.1:5443 with --dev.
    #[arg(long, env = "DETOUR_PROXY_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Admin address (plain HTTP: /livez, /readyz, /metrics). Default 0.0.0.0:8080, or 127.0.0.1:8081 with --dev.
    #[arg(long, env = "DETOUR_ADMIN_LISTEN")]
    pub admin_listen: Option<std::net::SocketAddr>,
    /// Directory with tls.crt (chain) and tls.key; reloaded when they change. Default
    /// `certs`, or with --dev a directory under the system's temporary directory.
    #[arg(long, env = "DETOUR_CERT_DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Serve plain HTTP (behind a TLS-terminating load balancer).
    #[arg(long, env = "DETOUR_PLAIN_HTTP")]
    pub plain_http: bool,
    /// Development mode: the public upstreams (unless --config), a cache in the temporary
    /// directory, throwaway certificates, 127.0.0.1, and how to pull through it.
    #[arg(long, env = "DETOUR_DEV")]
    pub dev: bool,
    #[arg(long, value_enum, default_value = "text", env = "DETOUR_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// How long to keep serving after SIGTERM while readiness is false.
    #[arg(long, default_value = "5s", value_parser = parse_duration, env = "DETOUR_SHUTDOWN_DELAY")]
    pub shutdown_delay: std::time::Duration,
    /// How long in-flight pulls may take to finish after that.
    #[arg(long, default_value = "60s", value_parser = parse_duration, env = "DETOUR_SHUTDOWN_GRACE")]
    pub shutdown_grace: std::time::Duration,
    /// Safety-net interval for re-checking certificate files (events trigger at once).
    #[arg(long, default_value = "2s", value_parser = parse_duration, env = "DETOUR_RELOAD_INTERVAL")]
    pub reload_interval: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct ContainerdConfigArgs {
    /// The proxy as nodes reach it, e.g. https://mirror.example.com:5443 (no path).
    #[arg(long, value_name = "URL")]
    pub mirror: String,
    /// CA certificate (path on the node) that the proxy's certificate chains to.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// containerd's config_path.
    #[arg(long, default_value = "/etc/containerd/certs.d", value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// Images to copy. Each goes where the config's rules rewrite it, or to --to. A source may
    /// also be `oci:DIR[:NAME]` (an OCI image layout), `oci-archive:FILE[:NAME]` (the same as
    /// one tar) or `docker-archive:FILE[:NAME]` (what `docker save` writes): every image in it,
    /// or the one named.
    #[arg(value_name = "SRC")]
    pub images: Vec<String>,
    /// Destination for a single image (a repository, with or without a tag), or
    /// `oci:DIR` (an OCI image layout) or `oci-archive:FILE` (the same as one tar), which
    /// take every image, named as written.
    #[arg(long, value_name = "DST")]
    pub to: Option<String>,
    /// A file of images, one per line (`#` comments and blank lines ignored).
    #[arg(short = 'f', long = "file", value_name = "LIST")]
    pub list: Vec<PathBuf>,
    /// Copy every image that these Kubernetes manifests use and that the rules rewrite.
    #[arg(long, value_name = "FILE")]
    pub from_manifests: Vec<PathBuf>,
    /// Copy only these platforms (os/arch[/variant]); changes the index digest.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Vec<detour_core::mirror_settings::PlatformFilter>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Copy every image that the rules rewrite among the images a cluster runs
    /// (Pods and workload templates; see `detour audit`).
    #[arg(long)]
    pub from_cluster: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Blobs copied at once.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Copy the images alone, without the signatures, attestations, SBOMs and other
    /// referrers attached to them (cosign's tags, OCI 1.1 referrers), which travel by default.
    #[arg(long)]
    pub no_attached_artifacts: bool,
    /// Text summary, or one JSON report per image.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

/// How to reach registries; adds to the config's `mirror:` section.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Docker config.json files with registry credentials (beside mirror.credentials).
    #[arg(long, env = "DETOUR_MIRROR_CREDENTIALS", value_name = "FILE")]
    pub credentials: Vec<PathBuf>,
    /// Extra CA certificates (PEM) for registry TLS.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Vec<PathBuf>,
    /// Registries (host[:port]) reached over plain HTTP.
    #[arg(long, value_name = "HOST")]
    pub plain_http: Vec<String>,
    /// Permit loopback registry addresses.
    #[arg(long)]
    pub allow_loopback: bool,
    /// Forward proxy for every registry (default: HTTPS_PROXY/HTTP_PROXY/NO_PROXY).
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// Hosts reached without the proxy (as NO_PROXY; repeatable).
    #[arg(long, value_name = "HOST")]
    pub no_proxy: Vec<String>,
    /// A file with user:password for the proxy.
    #[arg(long, value_name = "FILE")]
    pub proxy_credentials: Option<PathBuf>,
    /// Retries after connection errors, 5xx and 429.
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// Limit for each registry request (and between reads of a blob).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<std::time::Duration>,
}

/// Which cluster to read, and which part of it.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Kubeconfig file (default: KUBECONFIG, ~/.kube/config, or the in-cluster service account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Only this namespace (default: all).
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Objects per list request (lists are paginated).
    #[arg(long, default_value_t = 500, value_name = "N")]
    pub page_size: u32,
    /// The MutatingWebhookConfiguration whose selectors give each namespace's mode.
    #[arg(long, default_value = "detour", value_name = "NAME")]
    pub webhook_configuration: String,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Ask the mirror (a HEAD per rewritten image) whether it has each image.
    #[arg(long)]
    pub check_mirror: bool,
    /// Exit with CODE (default 3) when the mirror lacks a rewritten image (asks the mirror:
    /// implies --check-mirror).
    #[arg(long, value_name = "CODE", num_args = 0..=1, default_missing_value = "3")]
    pub fail_on_missing: Option<u8>,
    /// With --fail-on-missing, fail too when the mirror could not be asked about an image
    /// (its state is unknown), rather than pass having checked nothing.
    #[arg(long, requires = "fail_on_missing")]
    pub fail_on_unknown: bool,
    /// Mirror lookups at once.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub lookups: usize,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// A table by namespace and a summary, or one JSON document.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// No progress, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Webhook address (HTTPS). Default 0.0.0.0:8443, or 127.0.0.1:8443 with --dev.
    #[arg(long, env = "DETOUR_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Admin address (plain HTTP: /livez, /readyz, /metrics). Default 0.0.0.0:8080, or 127.0.0.1:8080 with --dev.
    #[arg(long, env = "DETOUR_ADMIN_LISTEN")]
    pub admin_listen: Option<std::net::SocketAddr>,
    /// Directory with tls.crt (chain) and tls.key; reloaded when they change.
    #[arg(long, env = "DETOUR_CERT_DIR", default_value = "certs")]
    pub cert_dir: PathBuf,
    /// Require client certificates signed by this CA (PEM), so only the apiserver can call.
    #[arg(long, env = "DETOUR_CLIENT_CA", value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// Development mode: generate a throwaway CA and certificate for 127.0.0.1 if none exist,
    /// listen on 127.0.0.1, and print a command that posts a sample AdmissionReview.
    #[arg(long, env = "DETOUR_DEV")]
    pub dev: bool,
    #[arg(long, value_enum, default_value = "text", env = "DETOUR_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// How long to keep answering after SIGTERM while readiness is false (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = parse_duration, env = "DETOUR_SHUTDOWN_DELAY")]
    pub shutdown_delay: std::time::Duration,
    /// How long in-flight requests may take to finish after that.
    #[arg(long, default_value = "20s", value_parser = parse_duration, env = "DETOUR_SHUTDOWN_GRACE")]
    pub shutdown_grace: std::time::Duration,
    /// Safety-net interval for re-checking certificate and config files (events trigger at once).
    #[arg(long, default_value = "2s", value_parser = parse_duration, env = "DETOUR_RELOAD_INTERVAL")]
    pub reload_interval: std::time::Duration,
    #[command(flatten)]
    pub managed: ManagedCertArgs,
}

/// Self-managed certificates: a CA and serving certificate in a Secret that
/// every replica shares, and the CA bundle kept in the webhook configuration.
#[derive(Debug, Clone, Args)]
pub struct ManagedCertArgs {
    /// Manage the certificates through the Kubernetes API instead of reading --cert-dir.
    #[arg(long, env = "DETOUR_MANAGE_CERTS")]
    pub manage_certs: bool,
    /// The Secret that holds them (created if missing).
    #[arg(
        long,
        default_value = "detour-certs",
        env = "DETOUR_CERT_SECRET",
        value_name = "NAME"
    )]
    pub cert_secret: String,
    /// detour's namespace (the Secret's and the Service's).
    #[arg(
        long,
        default_value = "detour-system",
        env = "DETOUR_NAMESPACE",
        value_name = "NS"
    )]
    pub namespace: String,
    /// The Service the apiserver calls: its names go into the certificate.
    #[arg(
        long,
        default_value = "detour",
        env = "DETOUR_SERVICE",
        value_name = "NAME"
    )]
    pub service: String,
    /// Extra DNS names for the certificate.
    #[arg(
        long,
        env = "DETOUR_CERT_DNS",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub cert_dns: Vec<String>,
    /// IP addresses for the certificate.
    #[arg(long, env = "DETOUR_CERT_IP", value_delimiter = ',', value_name = "IP")]
    pub cert_ip: Vec<std::net::IpAddr>,
    /// The MutatingWebhookConfiguration whose caBundle detour keeps.
    #[arg(
        long,
        default_value = "detour",
        env = "DETOUR_WEBHOOK_CONFIGURATION",
        value_name = "NAME"
    )]
    pub webhook_configuration: String,
    /// Validity of the serving certificate (renewed with a third left).
    #[arg(long, default_value = "90d", value_parser = parse_duration, env = "DETOUR_CERT_VALIDITY")]
    pub cert_validity: std::time::Duration,
    /// Validity of the CA (rotated with an overlap when a third is left).
    #[arg(long, default_value = "3650d", value_parser = parse_duration, env = "DETOUR_CA_VALIDITY")]
    pub ca_validity: std::time::Duration,
    /// How often the Secret and the caBundle are checked.
    #[arg(long, default_value = "30s", value_parser = parse_duration, env = "DETOUR_CERT_SYNC_INTERVAL")]
    pub cert_sync_interval: std::time::Duration,
    /// Kubeconfig file (default: in-cluster service account, KUBECONFIG, ~/.kube/config).
    #[arg(long, env = "DETOUR_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Output directory for ca.crt, tls.crt and tls.key.
    #[arg(long, env = "DETOUR_CERTS_OUT", value_name = "DIR")]
    pub out: PathBuf,
    /// Service name: the certificate covers NAME, NAME.NS, NAME.NS.svc, NAME.NS.svc.cluster.local.
    #[arg(long, env = "DETOUR_CERTS_SERVICE", value_name = "NAME")]
    pub service: Option<String>,
    #[arg(
        long,
        default_value = "detour-system",
        env = "DETOUR_CERTS_NAMESPACE",
        value_name = "NS"
    )]
    pub namespace: String,
    /// Extra DNS names (repeatable).
    #[arg(long, env = "DETOUR_CERTS_DNS", value_delimiter = ',')]
    pub dns: Vec<String>,
    /// IP addresses (repeatable).
    #[arg(long, env = "DETOUR_CERTS_IP", value_delimiter = ',')]
    pub ip: Vec<std::net::IpAddr>,
    /// Validity of the serving certificate in days (the CA gets ten times as long).
    #[arg(long, default_value_t = 365, env = "DETOUR_CERTS_DAYS")]
    pub days: i64,
}

impl RegistryArgs {
    /// The config's `mirror:` settings with the registry flags on top.
    pub fn settings(&self, config: &Config) -> MirrorSettings {
        let mut s = config.mirror.clone();
        s.credentials.extend(self.credentials.iter().cloned());
        s.ca_files.extend(self.ca_file.iter().cloned());
        s.plain_http.extend(self.plain_http.iter().cloned());
        s.allow_loopback |= self.allow_loopback;
        s.allow_loopback_setting = "--allow-loopback (or mirror.allowLoopback in the config)";
        if let Some(proxy) = &self.proxy {
            s.proxy = Some(proxy.clone());
        }
        s.no_proxy.extend(self.no_proxy.iter().cloned());
        if let Some(file) = &self.proxy_credentials {
            s.proxy_credentials = Some(file.clone());
        }
        if let Some(n) = self.retries {
            s.retries = n;
        }
        if let Some(t) = self.timeout {
            s.request_timeout = detour_core::duration::ConfigDuration(t);
        }
        s
    }
}
