//! Self-managed webhook certificates (`detour serve --manage-certs`): a CA
//! and a serving certificate kept in one Secret that every replica shares,
//! and the CA bundle kept in the MutatingWebhookConfiguration.
//!
//! Layer: Kubernetes adapter (kube client). [`plan`] decides what the Secret
//! should become; this module reads and writes it with optimistic
//! concurrency (create fails if it exists, replace fails if it changed: the
//! loser re-reads and uses the winner's), puts the bundle into every webhook
//! of the configuration and puts it back if something changes it, and hands
//! each new serving certificate to the TLS server. The admission path never
//! waits on any of this.

pub mod plan;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::Client;

use detour_serve::certs::CertRequest;
use plan::{Pair, Policy, Stored};

#[derive(Debug, thiserror::Error)]
pub enum ManagedError {
    #[error("secret {0}: {1}")]
    Secret(String, String),
    #[error("mutatingwebhookconfiguration {0}: {1}")]
    Webhook(String, String),
    #[error(transparent)]
    Certs(#[from] detour_serve::certs::CertError),
}

/// What to manage, and how often to look.
#[derive(Debug, Clone)]
pub struct ManagedOptions {
    pub namespace: String,
    pub secret: String,
    pub webhook_configuration: String,
    pub names: CertRequest,
    pub policy: Policy,
    pub interval: Duration,
}

pub struct ManagedCerts {
    secrets: Api<Secret>,
    webhooks: Api<MutatingWebhookConfiguration>,
    options: ManagedOptions,
}

/// The outcome of one sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    pub serving: Pair,
    pub bundle: String,
    /// The webhook configuration's caBundle was (re)written.
    pub webhook_updated: bool,
}

impl ManagedCerts {
    pub fn new(client: Client, options: ManagedOptions) -> Self {
        ManagedCerts {
            secrets: Api::namespaced(client.clone(), &options.namespace),
            webhooks: Api::all(client),
            options,
        }
    }

    fn secret_error(&self, e: impl std::fmt::Display) -> ManagedError {
        ManagedError::Secret(
            format!("{}/{}", self.options.namespace, self.options.secret),
            e.to_string(),
        )
    }

    /// Brings the Secret up to date (creating it if needed), then the
    /// webhook configuration's caBundle.
    pub async fn sync(&self) -> Result<Synced, ManagedError> {
        let stored = self.sync_secret().await?;
        let webhook_updated = self.sync_webhook(&stored.bundle).await?;
        Ok(Synced {
            serving: stored.serving,
            bundle: stored.bundle,
            webhook_updated,
        })
    }

    async fn sync_secret(&self) -> Result<Stored, ManagedError> {
        let name = &self.options.secret;
        // A conflict means another replica wrote first: read again.
        for _ in 0..5 {
            let existing = self
                .secrets
                .get_opt(name)
                .await
                .map_err(|e| self.secret_error(e))?;
            let current = existing.as_ref().and_then(|s| {
                let data: BTreeMap<String, Vec<u8>> = s
                    .data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.0.clone()))
                    .collect();
                Stored::from_data(&data)
                    .map_err(|e| {
                        tracing::warn!(secret = %name, error = %e, "unusable certificate secret; replacing it")
                    })
                    .ok()
            });
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let Some(next) = plan::next(
                current.as_ref(),
                now,
                &self.options.policy,
                &self.options.names,
            )?
            else {
                return current.ok_or_else(|| self.secret_error("no usable data"));
            };
            let data = next
                .to_data()
                .into_iter()
                .map(|(k, v)| (k, ByteString(v)))
                .collect();
            let written = match existing {
                Some(mut secret) => {
                    // resourceVersion is kept: a replace of a changed Secret fails.
                    secret.data = Some(data);
                    self.secrets
                        .replace(name, &PostParams::default(), &secret)
                        .await
                }
                None => {
                    let secret = Secret {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            namespace: Some(self.options.namespace.clone()),
                            labels: Some(BTreeMap::from([(
                                "app.kubernetes.io/managed-by".to_string(),
                                "detour".to_string(),
                            )])),
                            ..ObjectMeta::default()
                        },
                        data: Some(data),
                        type_: Some("Opaque".into()),
                        ..Secret::default()
                    };
                    self.secrets.create(&PostParams::default(), &secret).await
                }
            };
            match written {
                Ok(_) => {
                    tracing::info!(secret = %name, phase = ?next.phase, "certificate secret written");
                    return Ok(next);
                }
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(self.secret_error(e)),
            }
        }
        Err(self.secret_error("kept changing under us (5 conflicts in a row)"))
    }

    /// Puts `bundle` into every webhook's caBundle; `true` if it wrote.
    async fn sync_webhook(&self, bundle: &str) -> Result<bool, ManagedError> {
        let name = &self.options.webhook_configuration;
        let error = |e: &dyn std::fmt::Display| ManagedError::Webhook(name.clone(), e.to_string());
        let Some(mut config) = self.webhooks.get_opt(name).await.map_err(|e| error(&e))? else {
            tracing::warn!(configuration = %name, "no such MutatingWebhookConfiguration yet");
            return Ok(false);
        };
        let wanted = ByteString(bundle.as_bytes().to_vec());
        let mut changed = false;
        for webhook in config.webhooks.iter_mut().flatten() {
            if webhook.client_config.ca_bundle.as_ref() != Some(&wanted) {
                webhook.client_config.ca_bundle = Some(wanted.clone());
                changed = true;
            }
        }
        if !changed {
            return Ok(false);
        }
        match self
            .webhooks
            .replace(name, &PostParams::default(), &config)
            .await
        {
            Ok(_) => {
                tracing::info!(configuration = %name, "caBundle written");
                Ok(true)
            }
            // Someone else changed it meanwhile: the next sync looks again.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(error(&e)),
        }
    }

    /// The first sync, retried until it succeeds (the server cannot serve
    /// without a certificate).
    pub async fn first_sync(&self) -> Synced {
        loop {
            match self.sync().await {
                Ok(synced) => return synced,
                Err(e) => {
                    tracing::error!(error = %e, "cannot set up the managed certificates; retrying");
                    tokio::time::sleep(self.options.interval).await;
                }
            }
        }
    }

    /// Syncs every interval; each new serving certificate goes to `on_new`.
    pub fn spawn(
        self,
        mut current: Pair,
        on_new: impl Fn(&Pair) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(self.options.interval).await;
                match self.sync().await {
                    Ok(synced) if synced.serving != current => {
                        on_new(&synced.serving);
                        current = synced.serving;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "certificate sync failed; the current certificate stays in use")
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
