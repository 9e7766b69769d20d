//! Reading the cluster for `detour audit` and `detour mirror
//! --from-cluster`: the flags in, detour-cluster's inventory out, with a
//! spinner on a terminal.
//!
//! Layer: runtime wiring for the CLI.

use std::io::IsTerminal;

use detour_cluster::inventory::{self, ClusterOptions, Inventory};
use detour_cluster::kubeconfig;
use detour_core::config::Config;

use crate::cli::ClusterArgs;

fn options(args: &ClusterArgs) -> ClusterOptions {
    ClusterOptions {
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
        namespace: args.namespace.clone(),
        page_size: args.page_size,
        webhook: args.webhook_configuration.clone(),
    }
}

/// Reads the cluster, with a spinner on a terminal when `progress`.
pub async fn read(args: &ClusterArgs, progress: bool) -> Result<Inventory, String> {
    let opts = options(args);
    let client = kubeconfig::connect(opts.kubeconfig.as_deref(), opts.context.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    let spinner = indicatif::ProgressBar::new_spinner();
    if !(progress && std::io::stderr().is_terminal()) {
        spinner.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    spinner.set_message("reading the cluster");
    let tell = |n: usize| spinner.set_message(format!("read {n} objects"));
    let read = inventory::inventory(&client, &opts, &tell).await;
    spinner.finish_and_clear();
    read.map_err(|e| e.to_string())
}

/// `detour mirror --from-cluster`: the (image, rewritten image) pairs of
/// every Pod and workload template in the cluster.
pub async fn cluster_copies(
    args: &ClusterArgs,
    config: &Config,
    progress: bool,
) -> Result<Vec<(String, String)>, String> {
    let inventory = read(args, progress).await?;
    let partial = inventory.partial.clone();
    let report = inventory.report(config);
    for note in &partial {
        eprintln!("detour: partial: {note}");
    }
    Ok(report
        .copies()
        .into_iter()
        .map(|(from, to)| (from.to_string(), to.to_string()))
        .collect())
}
