//! detour-cluster: what detour reads of a live cluster through the
//! Kubernetes API, and what `detour audit` makes of it.
//!
//! [`kubeconfig`] builds the client, with errors that never quote the
//! file; [`inventory`] lists Pods and workload templates page by page,
//! reads namespace labels and which namespaces the webhook configuration
//! selects. [`audit`] is
//! pure: it decides every image of that inventory with the current config
//! and renders the report, and lists the copies that `detour mirror
//! --from-cluster` makes.
//!
//! May depend on: detour-core, kube and k8s-openapi. Never on a registry
//! client, an HTTP server, or the webhook (which depends on this crate for
//! its Kubernetes client).

pub mod audit;
pub mod inventory;
pub mod kubeconfig;
