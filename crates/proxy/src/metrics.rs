//! The proxy's Prometheus metrics (`detour_proxy_*`).
//!
//! Layer: runtime support. Labels are upstream hosts from the allow-list
//! and fixed words, so their number is bounded by the config.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub upstream: String,
    /// `manifest` or `blob`.
    pub kind: &'static str,
    /// `hit`, `miss` or `stale`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    pub upstream: String,
    /// `manifest`, `blob`, `tag` (a HEAD resolving a tag) or `tags` (a list).
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `route`, `auth`, `limit`, `unsupported`.
    pub reason: &'static str,
}

pub struct ProxyMetrics {
    registry: Registry,
    pub requests: Family<CacheLabels, Counter>,
    pub upstream_fetches: Family<FetchLabels, Counter>,
    pub upstream_bytes: Family<UpstreamLabels, Counter>,
    pub served_bytes: Family<UpstreamLabels, Counter>,
    pub upstream_errors: Family<UpstreamLabels, Counter>,
    pub stale_served: Family<UpstreamLabels, Counter>,
    pub refused: Family<RefusalLabels, Counter>,
    pub evictions: Counter,
    pub evicted_bytes: Counter,
    pub cache_bytes: Gauge,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("detour_proxy");
        let requests = Family::<CacheLabels, Counter>::default();
        registry.register(
            "requests",
            "Manifest and blob requests, by upstream and cache result",
            requests.clone(),
        );
        let upstream_fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "upstream_fetches",
            "Requests sent to upstreams, by kind",
            upstream_fetches.clone(),
        );
        let upstream_bytes = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_bytes",
            "Blob bytes received from upstreams",
            upstream_bytes.clone(),
        );
        let served_bytes = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "served_bytes",
            "Blob bytes sent to clients",
            served_bytes.clone(),
        );
        let upstream_errors = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream requests that failed (not counting 404)",
            upstream_errors.clone(),
        );
        let stale_served = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "stale_served",
            "Tags served from the cache past their TTL because the upstream could not be reached",
            stale_served.clone(),
        );
        let refused = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "refused_requests",
            "Client requests refused, by reason",
            refused.clone(),
        );
        let evictions = Counter::default();
        registry.register(
            "evictions",
            "Cache entries removed to stay under the size limit",
            evictions.clone(),
        );
        let evicted_bytes = Counter::default();
        registry.register(
            "evicted_bytes",
            "Bytes removed to stay under the size limit",
            evicted_bytes.clone(),
        );
        let cache_bytes = Gauge::default();
        registry.register(
            "cache_bytes",
            "Bytes of blobs and manifests in the cache",
            cache_bytes.clone(),
        );
        ProxyMetrics {
            registry,
            requests,
            upstream_fetches,
            upstream_bytes,
            served_bytes,
            upstream_errors,
            stale_served,
            refused,
            evictions,
            evicted_bytes,
            cache_bytes,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn upstream(host: &str) -> UpstreamLabels {
        UpstreamLabels {
            upstream: host.to_string(),
        }
    }
}
