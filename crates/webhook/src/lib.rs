//! detour-webhook: `detour serve`, the mutating admission webhook.
//!
//! [`admission`] is the hot path of every Pod creation: AdmissionReview
//! bytes in, the JSON Patch answer out, with no I/O. [`server`] is the thin
//! transport around it (axum over rustls, readiness that starts false,
//! drain-based shutdown, config and certificate reload) and counts in
//! [`metrics`]; [`premirror`] copies rewritten images into the mirror after
//! the answer and asks whether the mirror has them (`swap: if-present`);
//! [`managed_certs`] keeps the serving certificate and the webhook
//! configuration's caBundle in step in the cluster (`--manage-certs`).
//!
//! May depend on: detour-core (rules, config), detour-serve (TLS, runtime,
//! logs), detour-registry (pre-mirroring), detour-cluster (the Kubernetes
//! client that managed certificates use), axum, kube. Never on detour-proxy
//! or the binary.

pub mod admission;
pub mod managed_certs;
pub mod metrics;
pub mod premirror;
pub mod server;
