//! A Kubernetes client from a kubeconfig (or the in-cluster service
//! account), with errors that never show what the file holds.
//!
//! Layer: Kubernetes adapter. A kubeconfig carries tokens and private keys
//! (`token:`, `client-key-data:`), and a YAML parser's message quotes the
//! text around a mistake, so no parser message reaches the user: a mistake
//! is reported by the file's path, line and column only, and every other
//! failure by what to fix (the path, the context, the flag).

use std::path::Path;

use kube::config::{InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::Client;

use crate::inventory::ClusterError;

/// A client for the cluster of `kubeconfig` (else `KUBECONFIG`,
/// `~/.kube/config` or the in-cluster service account) and `context`.
pub async fn connect(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<Client, ClusterError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path).map_err(|e| explain(&e, Some(path)))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| explain(&e, Some(path)))?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| explain(&e, None))?,
        (None, None) => kube::Config::infer()
            .await
            .map_err(|e| explain_inferred(&e))?,
    };
    // The client reads the certificates and keys the file names or holds.
    let source = match kubeconfig {
        Some(path) => path.display().to_string(),
        None => "the cluster configuration".to_string(),
    };
    Client::try_from(config).map_err(|e| {
        // A certificate or key that cannot be loaded is a kubeconfig error
        // found this late; it is explained as the others are.
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cause {
            if let Some(k) = c.downcast_ref::<KubeconfigError>() {
                return explain(k, kubeconfig);
            }
            cause = c.source();
        }
        ClusterError::Config(format!("{source}: {e}"))
    })
}

/// `kube::Config::infer` tried the kubeconfig and then the Pod's service
/// account; the kubeconfig's failure is the one a user can act on.
fn explain_inferred(e: &InferConfigError) -> ClusterError {
    let kubeconfig = std::error::Error::source(e).and_then(|s| s.downcast_ref::<KubeconfigError>());
    match kubeconfig {
        Some(KubeconfigError::FindPath) | None => ClusterError::Config(
            "no kubeconfig (--kubeconfig, KUBECONFIG or ~/.kube/config) and no in-cluster service account".into(),
        ),
        Some(k) => explain(k, None),
    }
}

/// What went wrong, in words that name what to fix and quote nothing of
/// the file but its path.
fn explain(e: &KubeconfigError, path: Option<&Path>) -> ClusterError {
    let file = match path {
        Some(p) => p.display().to_string(),
        None => "the kubeconfig".to_string(),
    };
    let message = match e {
        KubeconfigError::ReadConfig(io, read) => format!("{}: {io}", read.display()),
        KubeconfigError::Parse(yaml) => match yaml.location() {
            Some(at) => format!(
                "{file}:{}:{}: not a valid kubeconfig (its text is not shown: a kubeconfig holds credentials)",
                at.line(),
                at.column()
            ),
            None => format!(
                "{file}: not a valid kubeconfig (its text is not shown: a kubeconfig holds credentials)"
            ),
        },
        KubeconfigError::CurrentContextNotSet => {
            format!("{file}: no current-context is set; name one with --context")
        }
        KubeconfigError::LoadContext(name) => {
            format!("{file}: there is no context named {name:?} (--context)")
        }
        KubeconfigError::LoadClusterOfContext(name) => {
            format!("{file}: the context names cluster {name:?}, which the file does not define")
        }
        KubeconfigError::MissingClusterUrl => {
            format!("{file}: the context's cluster has no server URL")
        }
        KubeconfigError::LoadCertificateAuthority(load) => {
            format!("{file}: certificate-authority: {}", load_error(load))
        }
        KubeconfigError::LoadClientCertificate(load) => {
            format!("{file}: client-certificate: {}", load_error(load))
        }
        KubeconfigError::LoadClientKey(load) => {
            format!("{file}: client-key: {}", load_error(load))
        }
        KubeconfigError::ParseCertificates(_) => {
            format!("{file}: a certificate is not PEM-encoded")
        }
        other => format!("{file}: {other}"),
    };
    ClusterError::Config(message)
}

/// A certificate or key given as a file or as base64 data.
fn load_error(e: &kube::config::LoadDataError) -> String {
    use kube::config::LoadDataError;
    match e {
        LoadDataError::ReadFile(io, path) => format!("{}: {io}", path.display()),
        LoadDataError::DecodeBase64(_) => "the -data value is not base64".into(),
        LoadDataError::NoBase64DataOrFile => "neither a file nor -data is given".into(),
    }
}
