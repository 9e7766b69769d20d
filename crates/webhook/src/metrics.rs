//! Prometheus metrics (prometheus-client), served on the admin port.
//!
//! Layer: runtime. Label values are bounded: modes, outcomes, reasons and
//! rule names from the config; never image names, users or credentials.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub mode: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RewriteLabels {
    pub mode: &'static str,
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    /// `cache`, `registry`, or `shared` (joined a request in flight).
    pub source: &'static str,
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub admissions: Family<AdmissionLabels, Counter>,
    pub rewrites: Family<RewriteLabels, Counter>,
    pub rejected_requests: Family<ReasonLabels, Counter>,
    pub latency: Histogram,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub config_last_reload_ok: Gauge,
    pub tls_reloads: Family<ResultLabels, Counter>,
    pub cert_expiry: Gauge,
    pub copy_queue_depth: Gauge,
    pub copies: Family<OutcomeLabels, Counter>,
    pub copied_bytes: Counter,
    pub lookups: Family<LookupLabels, Counter>,
    pub lookup_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("detour");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admissions",
            "Admission requests answered, by mode and outcome",
            admissions.clone(),
        );
        let rewrites = Family::<RewriteLabels, Counter>::default();
        registry.register(
            "image_rewrites",
            "Images rewritten (enforce) or that would be (audit), by rule",
            rewrites.clone(),
        );
        let rejected_requests = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "rejected_requests",
            "Requests answered 4xx because they could not be read",
            rejected_requests.clone(),
        );
        // 25 µs .. ~400 ms: the decision itself is microseconds.
        let latency = Histogram::new(exponential_buckets(25e-6, 2.0, 15));
        registry.register(
            "admission_duration_seconds",
            "Time to read, decide and answer one admission request",
            latency.clone(),
        );
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reload attempts, by result",
            config_reloads.clone(),
        );
        let config_last_reload_ok = Gauge::default();
        registry.register(
            "config_last_reload_successful",
            "1 if the last config load succeeded, 0 if the last good config is still in force after a failure",
            config_last_reload_ok.clone(),
        );
        let tls_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "Serving certificate reload attempts, by result",
            tls_reloads.clone(),
        );
        let cert_expiry = Gauge::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate in use, as a Unix timestamp",
            cert_expiry.clone(),
        );
        let copy_queue_depth = Gauge::default();
        registry.register(
            "premirror_queue_depth",
            "Pre-mirror copies waiting for a slot",
            copy_queue_depth.clone(),
        );
        let copies = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "premirror_copies",
            "Pre-mirror copies by outcome (queued, duplicate, dropped_queue_full, copied, already_present, failed)",
            copies.clone(),
        );
        let copied_bytes = Counter::default();
        registry.register(
            "premirror_copied_bytes",
            "Blob bytes sent to mirrors by pre-mirror copies",
            copied_bytes.clone(),
        );
        let lookups = Family::<LookupLabels, Counter>::default();
        registry.register(
            "mirror_lookups",
            "swap: if-present lookups by source (cache, registry, or shared: joined a request in flight) and result",
            lookups.clone(),
        );
        // 1 ms .. ~16 s.
        let lookup_latency = Histogram::new(exponential_buckets(1e-3, 2.0, 15));
        registry.register(
            "mirror_lookup_duration_seconds",
            "Time the mirror took to answer one manifest HEAD",
            lookup_latency.clone(),
        );
        Metrics {
            registry,
            copy_queue_depth,
            copies,
            copied_bytes,
            lookups,
            lookup_latency,
            admissions,
            rewrites,
            rejected_requests,
            latency,
            config_reloads,
            config_last_reload_ok,
            tls_reloads,
            cert_expiry,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn count_reload(family: &Family<ResultLabels, Counter>, ok: bool) {
        family
            .get_or_create(&ResultLabels {
                result: if ok { "success" } else { "failure" },
            })
            .inc();
    }
}
