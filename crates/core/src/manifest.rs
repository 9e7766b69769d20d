//! Offline rewriting of Kubernetes manifests (`detour rewrite`).
//!
//! Layer: pure core over `serde_json::Value`. Finds the Pod specs of every
//! workload kind, rewrites container, init container and ephemeral container
//! images with a [`RuleSet`], and reports each change. Key order is kept
//! (serde_json `preserve_order`); nothing but `image` values changes.

use serde::Deserialize;
use serde_json::Value;

use crate::pod::ContainerList;
use crate::rules::{Outcome, RuleSet};

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("document {document}: invalid YAML: {message}")]
    Yaml { document: usize, message: String },
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("cannot write YAML: {0}")]
    Write(String),
}

/// One image that was (or, offline, would be) changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `Kind/name` of the object (or `Kind/<unnamed>`).
    pub object: String,
    /// Dotted field path, e.g. `spec.template.spec.containers[0].image`.
    pub field: String,
    pub from: String,
    pub to: String,
    pub rule: String,
}

/// Where the Pod spec sits in an object of `kind`.
fn pod_spec_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&["spec"]),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => Some(&["spec", "template", "spec"]),
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template", "spec"]),
        "PodTemplate" => Some(&["template", "spec"]),
        _ => None,
    }
}

/// Rewrites the images of one object (recursing into `List` items).
pub fn rewrite_object(object: &mut Value, rules: &RuleSet, changes: &mut Vec<Change>) {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind == "List" || kind.ends_with("List") {
        if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                rewrite_object(item, rules, changes);
            }
        }
        return;
    }
    let Some(path) = pod_spec_path(&kind) else {
        return;
    };
    let name = object
        .pointer("/metadata/name")
        .or_else(|| object.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    let label = format!("{kind}/{name}");
    let mut spec = &mut *object;
    for step in path {
        match spec.get_mut(*step) {
            Some(next) => spec = next,
            None => return,
        }
    }
    for field in ContainerList::ALL.map(ContainerList::field) {
        let Some(containers) = spec.get_mut(field).and_then(Value::as_array_mut) else {
            continue;
        };
        for (i, container) in containers.iter_mut().enumerate() {
            let Some(image) = container.get_mut("image") else {
                continue;
            };
            let Some(current) = image.as_str() else {
                continue;
            };
            if let Outcome::Rewritten { to, rule, .. } = rules.rewrite(current) {
                let to = to.to_string();
                changes.push(Change {
                    object: label.clone(),
                    field: format!("{}.{field}[{i}].image", path.join(".")),
                    from: current.to_string(),
                    to: to.clone(),
                    rule: rule.name.clone(),
                });
                *image = Value::String(to);
            }
        }
    }
}

/// Input format, detected from the first non-blank character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

/// Rewrites a manifest stream (multi-document YAML, or JSON) and returns the
/// rewritten text in the same format, with the list of changes.
pub fn rewrite_text(text: &str, rules: &RuleSet) -> Result<(String, Vec<Change>), ManifestError> {
    let mut changes = Vec::new();
    match detect(text) {
        Format::Json => {
            let mut out = String::new();
            for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
                let mut value = value.map_err(|e| ManifestError::Json(e.to_string()))?;
                rewrite_object(&mut value, rules, &mut changes);
                out.push_str(
                    &serde_json::to_string_pretty(&value)
                        .map_err(|e| ManifestError::Json(e.to_string()))?,
                );
                out.push('\n');
            }
            Ok((out, changes))
        }
        Format::Yaml => {
            let mut docs = Vec::new();
            for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
                let value = Value::deserialize(document).map_err(|e| ManifestError::Yaml {
                    document: i + 1,
                    message: e.to_string(),
                })?;
                docs.push(value);
            }
            let mut out = String::new();
            let mut first = true;
            for mut value in docs.into_iter().filter(|v| !v.is_null()) {
                rewrite_object(&mut value, rules, &mut changes);
                if !first {
                    out.push_str("---\n");
                }
                first = false;
                out.push_str(&to_yaml(&value)?);
            }
            Ok((out, changes))
        }
    }
}

/// `value` as YAML that kubectl reads back as written. serde_yaml_ng writes
/// YAML 1.2, where `off`, `on`, `yes`, `no`, `y` and `n` are strings and
/// need no quotes; kubectl reads YAML 1.1, where they are booleans, so that
/// a label `detour.dev/mode: "off"` written back plain is refused as `false`.
/// Those plain scalars, keys and values, are quoted; the lines of block
/// scalars (`|`), which are text, are left as they are.
pub fn to_yaml(value: &Value) -> Result<String, ManifestError> {
    let text = serde_yaml_ng::to_string(value).map_err(|e| ManifestError::Write(e.to_string()))?;
    let mut out = String::with_capacity(text.len());
    // The indentation of the key or item whose block scalar is being read.
    let mut block: Option<usize> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(at) = block {
            if line.trim().is_empty() || indent > at {
                out.push_str(line);
                out.push('\n');
                continue;
            }
            block = None;
        }
        // Sequence dashes, then `key: value`, `key:` or a lone value.
        let rest = line[indent..].trim_start_matches("- ");
        out.push_str(&line[..line.len() - rest.len()]);
        let (key, value) = match rest.split_once(": ") {
            Some((key, value)) if !key.starts_with(['"', '\'']) => (Some(key), Some(value)),
            _ => match rest.strip_suffix(':') {
                Some(key) if !key.starts_with(['"', '\'']) => (Some(key), None),
                _ => (None, Some(rest)),
            },
        };
        if let Some(key) = key {
            push_scalar(&mut out, key);
            out.push(':');
        }
        if let Some(value) = value {
            if key.is_some() {
                out.push(' ');
            }
            if value.starts_with('|') || value.starts_with('>') {
                block = Some(indent);
            }
            push_scalar(&mut out, value);
        }
        out.push('\n');
    }
    Ok(out)
}

/// Appends a plain scalar, quoted when YAML 1.1 would read it as a boolean.
fn push_scalar(out: &mut String, scalar: &str) {
    const YAML_1_1_BOOLEANS: [&str; 6] = ["y", "n", "yes", "no", "on", "off"];
    if YAML_1_1_BOOLEANS.contains(&scalar.to_ascii_lowercase().as_str()) {
        out.push('"');
        out.push_str(scalar);
        out.push('"');
    } else {
        out.push_str(scalar);
    }
}

fn detect(text: &str) -> Format {
    match text.trim_start().chars().next() {
        Some('{') | Some('[') => Format::Json,
        _ => Format::Yaml,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn set() -> RuleSet {
        Config::from_yaml(
            "rules: [{source: '*', kind: full-reference, target: m.example}]",
            "t",
        )
        .unwrap()
        .rules
    }

    #[test]
    fn every_workload_kind_and_container_list() {
        let kinds = [
            ("Pod", "spec"),
            ("Deployment", "spec.template.spec"),
            ("StatefulSet", "spec.template.spec"),
            ("DaemonSet", "spec.template.spec"),
            ("ReplicaSet", "spec.template.spec"),
            ("ReplicationController", "spec.template.spec"),
            ("Job", "spec.template.spec"),
            ("CronJob", "spec.jobTemplate.spec.template.spec"),
            ("PodTemplate", "template.spec"),
        ];
        for (kind, path) in kinds {
            let mut spec = serde_json::json!({
                "containers": [{"name": "a", "image": "nginx"}],
                "initContainers": [{"name": "b", "image": "quay.io/x/y:1"}],
                "ephemeralContainers": [{"name": "c", "image": "busybox"}],
            });
            for step in path.split('.').rev() {
                spec = serde_json::json!({ step: spec });
            }
            let mut object = spec;
            object["kind"] = kind.into();
            object["metadata"] = serde_json::json!({"name": "n"});
            let mut changes = vec![];
            rewrite_object(&mut object, &set(), &mut changes);
            assert_eq!(changes.len(), 3, "{kind}");
            assert_eq!(changes[0].field, format!("{path}.containers[0].image"));
            assert_eq!(changes[1].to, "m.example/quay.io/x/y:1");
            assert_eq!(changes[2].object, format!("{kind}/n"));
        }
    }

    #[test]
    fn lists_recurse_and_other_kinds_are_untouched() {
        let mut list = serde_json::json!({"kind": "List", "items": [
            {"kind": "Pod", "metadata": {"generateName": "p-"}, "spec": {"containers": [{"name": "a", "image": "nginx"}]}},
            {"kind": "ConfigMap", "data": {"image": "nginx"}},
            {"kind": "Pod", "spec": {"containers": [{"name": "bad", "image": "Not Valid"}, {"name": "n", "image": 7}]}},
        ]});
        let before = list.clone();
        let mut changes = vec![];
        rewrite_object(&mut list, &set(), &mut changes);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].object, "Pod/p-");
        assert_eq!(list["items"][1], before["items"][1]);
        assert_eq!(list["items"][2], before["items"][2]);
    }

    #[test]
    fn yaml_1_1_booleans_are_quoted_outside_block_scalars() {
        let value: Value = serde_json::json!({
            "labels": {"detour.dev/mode": "off", "a": "On", "b": "offer", "on": "x"},
            "values": ["off", "audit", "no"],
            "script": "mode: off\n- no\n",
            "after": "yes",
        });
        let text = to_yaml(&value).unwrap();
        assert!(text.contains("detour.dev/mode: \"off\"\n"), "{text}");
        assert!(
            text.contains("a: \"On\"\n") && text.contains("b: offer\n"),
            "{text}"
        );
        assert!(text.contains("- \"off\"\n- audit\n- \"no\"\n"), "{text}");
        assert!(text.contains("after: \"yes\"\n"), "{text}");
        assert!(text.contains("  \"on\": x\n"), "{text}");
        // The block scalar's text is the text given.
        assert!(text.contains("  mode: off\n  - no\n"), "{text}");
        let back: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(back, value);
    }
}
