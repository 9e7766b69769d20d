//! detour-proxy: `detour proxy`, a pull-through caching registry for many
//! upstreams.
//!
//! Layering, inner to outer: [`route`] and [`config`] are pure (which
//! upstream repository a request names; what the config allows);
//! [`store`] and [`fill`] are the cache on disk and the single-flight blob
//! fills; [`service`] answers manifest, blob and tag-list requests from the
//! cache or the upstreams through detour's registry client
//! ([`detour_registry::RegistryClient`], with its address guard); [`http`]
//! speaks the Distribution API; [`run`] wires listeners, TLS reload,
//! readiness and shutdown. [`containerd`] writes node configs that point
//! containerd at the proxy.
//!
//! May depend on: detour-core (references, durations, the `mirror:`
//! settings), detour-registry (the upstream client), detour-serve (TLS,
//! runtime, shutdown), axum, tokio, reqwest (the S3 store). Never on
//! Kubernetes or on the webhook.

pub mod clients;
pub mod config;
pub mod containerd;
pub mod error;
pub mod fill;
pub mod http;
pub mod metrics;
pub mod route;
pub mod run;
pub mod s3;
pub mod service;
pub mod store;

pub use config::ProxyConfig;
pub use run::{build, run, ProxyOptions, ProxyRunError};
