//! Reading a live cluster through the Kubernetes API: Pods and workload
//! templates, namespace labels, and which namespaces detour's webhook
//! configuration selects.
//!
//! Layer: Kubernetes adapter (the `kube` client over rustls). Used by
//! `detour audit` and `detour mirror --from-cluster`, and by the webhook for
//! the client of `--manage-certs` (through [`crate::kubeconfig`]); the pure modules
//! ([`crate::audit`], detour-core) never import it. Lists are paginated
//! (`limit`/`continue`), and only the fields detour needs are kept from each
//! page, so a cluster of 50,000 Pods is never one response or one heap.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingAdmissionPolicyBinding, MutatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, ObjectMeta};
use kube::api::{Api, ListParams};
use kube::Client;
use serde::de::DeserializeOwned;

use crate::audit::{self, ContainerImage, Mode, Report, Selection, Workload, MODE_LABEL};
use detour_core::config::Config;
use detour_core::native::MUTATING_POLICY;
use detour_core::pod::{MIRROR_POD_ANNOTATION, SKIP_LABEL};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no usable cluster configuration: {0}")]
    Config(String),
    #[error("cannot reach the Kubernetes API: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Api(String),
}

/// Which cluster and what part of it.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// A kubeconfig file; else `KUBECONFIG`, `~/.kube/config`, or the
    /// in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// One namespace; all when `None`.
    pub namespace: Option<String>,
    /// Objects per list request.
    pub page_size: u32,
    /// The MutatingWebhookConfiguration whose selectors give the modes.
    pub webhook: String,
}

/// What `detour audit` looks at.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub workloads: Vec<Workload>,
    /// Every namespace seen, with its `detour.dev/mode` label.
    pub namespace_labels: BTreeMap<String, Option<String>>,
    /// Namespaces that hold objects but could not be read themselves.
    pub unreadable_namespaces: BTreeSet<String>,
    pub selection: Selection,
    /// Where `selection` came from.
    pub selection_source: String,
    /// What could not be read.
    pub partial: Vec<String>,
}

/// Reads the inventory; `progress` is told the number of objects read.
pub async fn inventory(
    client: &Client,
    opts: &ClusterOptions,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Inventory, ClusterError> {
    let mut inv = Inventory::default();
    read_selection(client, opts, &mut inv).await?;
    read_namespaces(client, opts, &mut inv).await?;
    let ns = opts.namespace.as_deref();
    let page = opts.page_size.max(1);
    let mut read = 0usize;
    let mut tick = |workloads: &mut Vec<Workload>, w: Option<Workload>| {
        read += 1;
        if read % 200 == 0 {
            progress(read);
        }
        workloads.extend(w);
    };
    macro_rules! kind {
        ($type:ty, $kind:literal, $map:expr) => {{
            let api: Api<$type> = match ns {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            let map = $map;
            let result = list_pages(&api, page, |item: $type| {
                tick(&mut inv.workloads, map(item));
            })
            .await;
            if let Err(e) = result {
                let scope = match ns {
                    Some(ns) => Scope::Namespace(ns),
                    None => Scope::AllNamespaces,
                };
                partial_or_fail(&mut inv.partial, &format!("list {}", $kind), scope, e)?;
            }
        }};
    }
    kind!(Pod, "Pod", |p: Pod| {
        let spec = p.spec.as_ref()?;
        Some(workload("Pod", &p.metadata, &p.metadata, spec))
    });
    kind!(Deployment, "Deployment", |d: Deployment| {
        template_workload("Deployment", &d.metadata, &d.spec.template)
    });
    kind!(StatefulSet, "StatefulSet", |s: StatefulSet| {
        template_workload("StatefulSet", &s.metadata, &s.spec.template)
    });
    kind!(DaemonSet, "DaemonSet", |d: DaemonSet| {
        template_workload("DaemonSet", &d.metadata, &d.spec.template)
    });
    // A ReplicaSet of a Deployment, or a Job of a CronJob, repeats its
    // owner's template: only those without a controlling owner are listed.
    kind!(ReplicaSet, "ReplicaSet", |r: ReplicaSet| {
        if has_controller(&r.metadata) {
            return None;
        }
        template_workload("ReplicaSet", &r.metadata, r.spec.template.as_ref()?)
    });
    kind!(Job, "Job", |j: Job| {
        if has_controller(&j.metadata) {
            return None;
        }
        template_workload("Job", &j.metadata, &j.spec.as_ref()?.template)
    });
    kind!(CronJob, "CronJob", |c: CronJob| {
        let template = &c.spec.job_template.spec.as_ref()?.template;
        template_workload("CronJob", &c.metadata, template)
    });
    progress(read);
    // Namespaces that hold objects but could not be read themselves: their
    // label, and so their mode, is not known.
    for w in &inv.workloads {
        if !inv.namespace_labels.contains_key(&w.namespace) {
            inv.namespace_labels.insert(w.namespace.clone(), None);
            inv.unreadable_namespaces.insert(w.namespace.clone());
        }
    }
    Ok(inv)
}

/// Lists every page of `api`, handing each object to `each`.
async fn list_pages<K>(api: &Api<K>, page: u32, mut each: impl FnMut(K)) -> Result<(), kube::Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut params = ListParams::default().limit(page);
    loop {
        let list = api.list(&params).await?;
        let next = list.metadata.continue_.clone();
        list.items.into_iter().for_each(&mut each);
        match next {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(()),
        }
    }
}

impl Inventory {
    /// What the config does to this inventory, namespace by namespace.
    pub fn report(self, config: &Config) -> Report {
        let modes: BTreeMap<String, Mode> = self
            .namespace_labels
            .iter()
            .map(|(ns, label)| {
                let mode = if self.unreadable_namespaces.contains(ns) {
                    self.selection.mode_unread(ns)
                } else {
                    self.selection.mode(ns, label.as_deref(), config.mode)
                };
                (ns.clone(), mode)
            })
            .collect();
        Report {
            findings: audit::findings(&self.workloads, &modes, config),
            namespaces: modes,
            partial: self.partial,
            mirror_errors: BTreeMap::new(),
        }
    }
}

/// A refusal (403) or a kind the cluster does not serve (404) makes the
/// result partial; anything else (no connection, expired credentials) is
/// the command's error.
fn partial_or_fail(
    partial: &mut Vec<String>,
    what: &str,
    scope: Scope,
    error: kube::Error,
) -> Result<(), ClusterError> {
    let scope = match scope {
        Scope::Namespace(ns) => format!(" in namespace {ns}"),
        Scope::AllNamespaces => " in all namespaces".to_string(),
        Scope::Cluster => String::new(),
    };
    match &error {
        kube::Error::Api(status) if status.code == 403 => {
            partial.push(format!("{what}{scope}: forbidden ({})", status.message));
            Ok(())
        }
        kube::Error::Api(status) if status.code == 404 => {
            partial.push(format!("{what}: not served by this cluster"));
            Ok(())
        }
        kube::Error::Api(status) if status.code == 401 => Err(ClusterError::Api(format!(
            "{what}: unauthorized (expired or wrong credentials): {}",
            status.message
        ))),
        kube::Error::Api(status) => Err(ClusterError::Api(format!(
            "{what}{scope}: {} ({})",
            status.message, status.code
        ))),
        other => Err(ClusterError::Unreachable(unreachable(what, other))),
    }
}

/// Where a request looked: one namespace, every namespace, or a
/// cluster-scoped object (which has no namespace to name).
#[derive(Debug, Clone, Copy)]
enum Scope<'a> {
    Namespace(&'a str),
    AllNamespaces,
    Cluster,
}

/// Why the API could not be reached, with every cause: the client's own
/// words (`client error (Connect)`) say the same for nothing listening and
/// for a certificate the kubeconfig does not trust; the causes tell them
/// apart.
fn unreachable(what: &str, error: &kube::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut cause = std::error::Error::source(error);
    while let Some(c) = cause {
        let text = c.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
    }
    let chain = parts.join(": ");
    if chain.contains("invalid peer certificate") || chain.contains("certificate verify") {
        format!(
            "{what}: the apiserver's certificate is not trusted (check certificate-authority in the kubeconfig): {chain}"
        )
    } else {
        format!("{what}: {chain}")
    }
}

/// The modes come from the webhook configuration as installed: its enforce
/// entry's `detour.dev/mode` operator (`In`: opt-in, `NotIn`: cluster-wide)
/// and the namespaces it excludes by name.
async fn read_selection(
    client: &Client,
    opts: &ClusterOptions,
    inv: &mut Inventory,
) -> Result<(), ClusterError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let name = &opts.webhook;
    match api.get_opt(name).await {
        Ok(Some(config)) => {
            inv.selection = selection_of(&config);
            inv.selection_source = format!(
                "MutatingWebhookConfiguration {name} ({})",
                inv.selection.shape()
            );
        }
        Ok(None) => read_native_selection(client, name, inv).await?,
        Err(e) => {
            partial_or_fail(
                &mut inv.partial,
                &format!("get mutatingwebhookconfiguration {name}"),
                Scope::Cluster,
                e,
            )?;
            inv.selection_source = format!(
                "MutatingWebhookConfiguration {name} unreadable: modes as under the opt-in overlay"
            );
        }
    }
    Ok(())
}

/// Without a webhook configuration: native mode's policy binding, as
/// `detour policy` names it, selects the enforce namespaces the way the
/// webhook's entry does.
async fn read_native_selection(
    client: &Client,
    webhook: &str,
    inv: &mut Inventory,
) -> Result<(), ClusterError> {
    let name = MUTATING_POLICY;
    let bindings: Api<MutatingAdmissionPolicyBinding> = Api::all(client.clone());
    match bindings.get_opt(name).await {
        Ok(Some(binding)) => {
            let expressions = binding
                .spec
                .as_ref()
                .and_then(|s| s.match_resources.as_ref())
                .and_then(|m| m.namespace_selector.as_ref())
                .and_then(|s| s.match_expressions.as_ref());
            inv.selection = selection_from(expressions.into_iter().flatten());
            inv.selection_source = format!(
                "MutatingAdmissionPolicyBinding {name} (native mode, {})",
                inv.selection.shape()
            );
        }
        Ok(None) => {
            inv.selection_source = format!(
                "no MutatingWebhookConfiguration {webhook} or MutatingAdmissionPolicyBinding {name}: modes as under the opt-in overlay"
            );
        }
        Err(e) => {
            partial_or_fail(
                &mut inv.partial,
                &format!("get mutatingadmissionpolicybinding {name}"),
                Scope::Cluster,
                e,
            )?;
            inv.selection_source = format!(
                "no MutatingWebhookConfiguration {webhook}, and MutatingAdmissionPolicyBinding {name} unreadable: modes as under the opt-in overlay"
            );
        }
    }
    Ok(())
}

fn selection_of(config: &MutatingWebhookConfiguration) -> Selection {
    let Some(webhooks) = &config.webhooks else {
        return Selection::default();
    };
    let enforce = webhooks
        .iter()
        .find(|w| w.name.starts_with("enforce."))
        .or(webhooks.first());
    let Some(enforce) = enforce else {
        return Selection::default();
    };
    let expressions = enforce
        .namespace_selector
        .as_ref()
        .and_then(|s| s.match_expressions.as_ref());
    selection_from(expressions.into_iter().flatten())
}

/// The modes an enforce namespace selector gives (a webhook entry's, or
/// native mode's policy binding's).
fn selection_from<'a>(
    expressions: impl Iterator<Item = &'a LabelSelectorRequirement>,
) -> Selection {
    let mut selection = Selection::default();
    for e in expressions {
        match (e.key.as_str(), e.operator.as_str()) {
            (MODE_LABEL, "NotIn") => selection.cluster_wide = true,
            (MODE_LABEL, _) => selection.cluster_wide = false,
            ("kubernetes.io/metadata.name", "NotIn") => {
                selection.excluded = e.values.iter().flatten().cloned().collect();
            }
            _ => {}
        }
    }
    selection
}

async fn read_namespaces(
    client: &Client,
    opts: &ClusterOptions,
    inv: &mut Inventory,
) -> Result<(), ClusterError> {
    let api: Api<Namespace> = Api::all(client.clone());
    let label = |n: &Namespace| {
        n.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MODE_LABEL))
            .cloned()
    };
    let result = match &opts.namespace {
        Some(ns) => match api.get(ns).await {
            Ok(n) => {
                inv.namespace_labels.insert(ns.clone(), label(&n));
                Ok(())
            }
            Err(e) => Err(e),
        },
        None => {
            list_pages(&api, opts.page_size.max(1), |n: Namespace| {
                let name = n.metadata.name.clone().unwrap_or_default();
                inv.namespace_labels.insert(name, label(&n));
            })
            .await
        }
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) => partial_or_fail(&mut inv.partial, "read namespaces", Scope::Cluster, e),
    }
}

fn has_controller(meta: &ObjectMeta) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true))
}

fn template_workload(
    kind: &'static str,
    meta: &ObjectMeta,
    template: &PodTemplateSpec,
) -> Option<Workload> {
    let pod_meta = template.metadata.clone().unwrap_or_default();
    Some(workload(kind, meta, &pod_meta, template.spec.as_ref()?))
}

/// `meta` names the object; `pod_meta` carries the Pods' labels.
fn workload(
    kind: &'static str,
    meta: &ObjectMeta,
    pod_meta: &ObjectMeta,
    spec: &PodSpec,
) -> Workload {
    let never = |policy: &Option<String>| policy.as_deref() == Some("Never");
    let mut containers = Vec::new();
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        containers.push(ContainerImage {
            container: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            pull_never: never(&c.image_pull_policy),
        });
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        containers.push(ContainerImage {
            container: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            pull_never: never(&c.image_pull_policy),
        });
    }
    Workload {
        namespace: meta.namespace.clone().unwrap_or_default(),
        kind,
        name: meta.name.clone().unwrap_or_default(),
        skip_label: pod_meta
            .labels
            .as_ref()
            .and_then(|l| l.get(SKIP_LABEL))
            .is_some_and(|v| v == "true"),
        mirror_pod: pod_meta
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(MIRROR_POD_ANNOTATION)),
        containers,
    }
}
