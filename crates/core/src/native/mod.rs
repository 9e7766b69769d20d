//! Native mode: the rules compiled into Kubernetes admission policies, so
//! that the apiserver rewrites images itself (MutatingAdmissionPolicy, GA
//! since Kubernetes 1.36) with no webhook, certificates or Deployment.
//!
//! Layer: pure core. [`compile`] turns a loaded [`Config`] into the objects
//! `detour policy` prints: a MutatingAdmissionPolicy and its binding for
//! enforce namespaces, and a ValidatingAdmissionPolicy and its binding that
//! warns (and writes audit annotations) in audit namespaces. The CEL comes
//! from one generator: the engine's tables ([`tables`]) and its algorithm
//! ([`program`]); nothing is written per preset. What a policy cannot do
//! (copy images, ask a registry) is refused by rule name, never dropped.
//!
//! Inside: `cel` <- `tables` <- `program` <- this module.

mod cel;
mod program;
mod tables;

use serde_json::{json, Value};

use crate::config::{Config, GlobalMode, NeverPolicy};
use crate::pod::{EXCLUDED_NAMESPACES, MIRROR_POD_ANNOTATION, MODE_LABEL, SKIP_LABEL};
use crate::rules::Swap;

/// The policies' and bindings' names.
pub const MUTATING_POLICY: &str = "detour";
pub const VALIDATING_POLICY: &str = "detour-audit";
/// The label on every object `detour policy` writes, so that they can be
/// listed and deleted together (`kubectl delete … -l`).
pub const COMPONENT_LABEL: (&str, &str) = ("app.kubernetes.io/component", "native");

/// The CEL parser's limit on one expression, in code points
/// (cel-go `parser.ExpressionSizeCodePointLimit`'s default, which the
/// apiserver keeps).
pub const MAX_EXPRESSION_CODE_POINTS: usize = 100_000;
/// etcd's default request limit (`--max-request-bytes`, 1.5 MiB): a larger
/// policy is refused on create.
pub const MAX_OBJECT_BYTES: usize = 1_572_864;

/// Which namespaces the bindings select (the overlays' two shapes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Namespaces {
    /// Namespaces labelled `detour.dev/mode=enforce` are rewritten.
    #[default]
    OptIn,
    /// Every namespace is rewritten but those labelled
    /// `detour.dev/mode=off` or `=audit`.
    ClusterWide,
}

/// Why a config cannot become a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NativeError {
    #[error("rule {rule:?}: {reason}; native mode cannot do this: use the webhook for this rule, or remove `{key}` from it")]
    Unsupported {
        rule: String,
        key: &'static str,
        reason: &'static str,
    },
    #[error("{what} is {size} code points of CEL; the apiserver's CEL parser takes at most {MAX_EXPRESSION_CODE_POINTS} per expression ({count} rules, {aliases} aliases): split the config, or use the webhook")]
    ExpressionTooLarge {
        what: String,
        size: usize,
        count: usize,
        aliases: usize,
    },
    #[error("the {kind} is {size} bytes; etcd stores at most {MAX_OBJECT_BYTES} per object by default ({count} rules): split the config, or use the webhook")]
    ObjectTooLarge {
        kind: &'static str,
        size: usize,
        count: usize,
    },
    #[error("{count} rules: native mode numbers at most {} rules", tables::RULE_SLOTS - 1)]
    TooManyRules { count: usize },
}

/// Compiles `config` into the admission objects, in apply order.
pub fn compile(config: &Config, namespaces: Namespaces) -> Result<Vec<Value>, NativeError> {
    let rules = config.rules.rules();
    for rule in rules {
        if rule.mirror.premirror {
            return Err(NativeError::Unsupported {
                rule: rule.name.clone(),
                key: "premirror",
                reason: "premirror copies the image into the mirror after admission, and a policy cannot copy",
            });
        }
        if rule.mirror.swap == Swap::IfPresent {
            return Err(NativeError::Unsupported {
                rule: rule.name.clone(),
                key: "swap: if-present",
                reason: "swap: if-present asks the mirror at admission whether it has the image, and a policy cannot ask a registry",
            });
        }
    }
    if rules.len() as i64 >= tables::RULE_SLOTS {
        return Err(NativeError::TooManyRules { count: rules.len() });
    }
    let mut placeholders: Vec<String> = config.rules.placeholders().map(str::to_string).collect();
    placeholders.sort_unstable();
    let tables = tables::build(&config.rules, &placeholders);
    let settings = program::Settings {
        skip_pull_never: config.pull_policy_never == NeverPolicy::Skip,
    };
    let mut variables: Vec<(String, String)> = tables
        .entries
        .iter()
        .map(|(n, e)| (n.clone(), e.clone()))
        .collect();
    variables.extend(
        program::variables(&tables, settings)
            .into_iter()
            .map(|(n, e)| (n.to_string(), e)),
    );
    let sizes = Sizes {
        count: rules.len(),
        aliases: config.rules.aliases().len(),
    };
    for (name, expression) in &variables {
        sizes.check(&format!("variable {name}"), expression)?;
    }
    let patch = program::patch_expression();
    sizes.check("the mutation", &patch)?;

    let origin = config.origin.as_str();
    let mut objects = Vec::new();
    let auditing_everywhere = config.mode == GlobalMode::Audit;
    if !auditing_everywhere {
        let policy = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicy",
            "metadata": metadata(MUTATING_POLICY, origin),
            "spec": {
                "matchConstraints": match_constraints(),
                "matchConditions": match_conditions(),
                "variables": variables_json(&variables),
                "mutations": [{
                    "patchType": "JSONPatch",
                    "jsonPatch": {"expression": patch},
                }],
                // A CEL error (a Pod past the cost budget) must not block
                // Pod creation: the original image is kept, as when the
                // webhook is down.
                "failurePolicy": "Ignore",
                // A sidecar added by a later mutation is rewritten too.
                "reinvocationPolicy": "IfNeeded",
            },
        });
        sizes.check_object("MutatingAdmissionPolicy", &policy)?;
        objects.push(policy);
        objects.push(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": metadata(MUTATING_POLICY, origin),
            "spec": {
                "policyName": MUTATING_POLICY,
                "matchResources": match_resources(enforce_selector(namespaces)),
            },
        }));
    }
    // The validating binding selects audit namespaces only (every selected
    // namespace under `mode: audit`), so its warnings need no mode test.
    let mut audit_variables = variables;
    audit_variables.push((
        "invalid".into(),
        program::invalid_expression(&tables, settings),
    ));
    let validating = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": metadata(VALIDATING_POLICY, origin),
        "spec": {
            "matchConstraints": match_constraints(),
            "matchConditions": match_conditions(),
            "variables": variables_json(&audit_variables),
            "validations": [
                {
                    "expression": "size(variables.changes) == 0",
                    "messageExpression": program::would_rewrite_message(),
                    "reason": "Invalid",
                },
                {
                    "expression": "size(variables.invalid) == 0",
                    "messageExpression": program::invalid_message(),
                    "reason": "Invalid",
                },
            ],
            "auditAnnotations": [{
                "key": "would-rewrite",
                "valueExpression": program::would_rewrite_annotation(),
            }],
            "failurePolicy": "Ignore",
        },
    });
    sizes.check_object("ValidatingAdmissionPolicy", &validating)?;
    objects.push(validating);
    objects.push(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": metadata(VALIDATING_POLICY, origin),
        "spec": {
            "policyName": VALIDATING_POLICY,
            "validationActions": ["Warn", "Audit"],
            "matchResources": match_resources(if auditing_everywhere {
                enforce_and_audit_selector(namespaces)
            } else {
                audit_selector()
            }),
        },
    }));
    Ok(objects)
}

struct Sizes {
    count: usize,
    aliases: usize,
}

impl Sizes {
    fn check(&self, what: &str, expression: &str) -> Result<(), NativeError> {
        let size = expression.chars().count();
        if size > MAX_EXPRESSION_CODE_POINTS {
            return Err(NativeError::ExpressionTooLarge {
                what: what.to_string(),
                size,
                count: self.count,
                aliases: self.aliases,
            });
        }
        Ok(())
    }

    fn check_object(&self, kind: &'static str, object: &Value) -> Result<(), NativeError> {
        let size = object.to_string().len();
        if size > MAX_OBJECT_BYTES {
            return Err(NativeError::ObjectTooLarge {
                kind,
                size,
                count: self.count,
            });
        }
        Ok(())
    }
}

fn metadata(name: &str, origin: &str) -> Value {
    json!({
        "name": name,
        "labels": {
            "app.kubernetes.io/name": "detour",
            COMPONENT_LABEL.0: COMPONENT_LABEL.1,
        },
        "annotations": {
            "detour.dev/generated-by": format!("detour policy {}", env!("CARGO_PKG_VERSION")),
            "detour.dev/config": origin,
        },
    })
}

fn variables_json(variables: &[(String, String)]) -> Value {
    Value::Array(
        variables
            .iter()
            .map(|(name, expression)| json!({"name": name, "expression": expression}))
            .collect(),
    )
}

/// Pod creation and `kubectl debug`'s ephemeral containers, as the webhook.
fn match_constraints() -> Value {
    json!({
        "resourceRules": [
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
             "resources": ["pods"], "scope": "Namespaced"},
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
             "resources": ["pods/ephemeralcontainers"], "scope": "Namespaced"},
        ],
        "matchPolicy": "Equivalent",
    })
}

/// Static Pods' mirror objects are left alone: the kubelet rejects changes.
fn match_conditions() -> Value {
    json!([{
        "name": "not-a-static-pod-mirror",
        "expression": format!(
            "!has(object.metadata.annotations) || !({} in object.metadata.annotations)",
            cel::string(MIRROR_POD_ANNOTATION)
        ),
    }])
}

fn match_resources(namespace_selector: Value) -> Value {
    json!({
        "namespaceSelector": namespace_selector,
        "objectSelector": {"matchExpressions": [
            {"key": SKIP_LABEL, "operator": "NotIn", "values": ["true"]},
        ]},
    })
}

fn selector(mode: Value) -> Value {
    json!({"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": EXCLUDED_NAMESPACES},
        mode,
    ]})
}

/// Under `mode: audit` every selected namespace is audited.
fn enforce_and_audit_selector(namespaces: Namespaces) -> Value {
    selector(match namespaces {
        Namespaces::OptIn => {
            json!({"key": MODE_LABEL, "operator": "In", "values": ["enforce", "audit"]})
        }
        Namespaces::ClusterWide => {
            json!({"key": MODE_LABEL, "operator": "NotIn", "values": ["off"]})
        }
    })
}

fn enforce_selector(namespaces: Namespaces) -> Value {
    selector(match namespaces {
        Namespaces::OptIn => json!({"key": MODE_LABEL, "operator": "In", "values": ["enforce"]}),
        Namespaces::ClusterWide => {
            json!({"key": MODE_LABEL, "operator": "NotIn", "values": ["off", "audit"]})
        }
    })
}

/// Audit namespaces only: there the policy warns of what would change (and
/// of images that are not references); in enforce namespaces the mutation
/// has done the work, and a second evaluation per Pod would cost as much
/// again (measured: README, Performance).
fn audit_selector() -> Value {
    selector(json!({"key": MODE_LABEL, "operator": "In", "values": ["audit"]}))
}

#[cfg(test)]
mod tests;
