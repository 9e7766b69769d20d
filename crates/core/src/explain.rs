//! `detour explain`: one image's parse and rewrite decision, as text for
//! people or as one JSON object per line for scripts.
//!
//! Layer: pure presentation over the core. The JSON record is a contract:
//! `{"input","valid","error","domain","path","tag","digest","normalized","rewritten","rule"}`,
//! null where a field does not apply.

use std::fmt::Write as _;

use serde::Serialize;

use crate::reference::Reference;
use crate::rules::{Outcome, RuleSet};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExplainRecord {
    pub input: String,
    pub valid: bool,
    pub error: Option<String>,
    pub domain: Option<String>,
    pub path: Option<String>,
    pub tag: Option<String>,
    pub digest: Option<String>,
    pub normalized: Option<String>,
    pub rewritten: Option<String>,
    pub rule: Option<String>,
}

pub fn record(rules: &RuleSet, input: &str) -> ExplainRecord {
    let mut rec = ExplainRecord {
        input: input.to_string(),
        valid: false,
        error: None,
        domain: None,
        path: None,
        tag: None,
        digest: None,
        normalized: None,
        rewritten: None,
        rule: None,
    };
    match Reference::parse(input) {
        Ok(r) => {
            rec.valid = true;
            rec.domain = Some(r.domain().to_string());
            rec.path = Some(r.path().to_string());
            rec.tag = r.tag().map(str::to_string);
            rec.digest = r.digest().map(str::to_string);
            rec.normalized = Some(r.to_string());
        }
        Err(e) => rec.error = Some(e.to_string()),
    }
    if let Outcome::Rewritten { to, rule, .. } = rules.rewrite(input) {
        rec.rewritten = Some(to.to_string());
        rec.rule = Some(rule.name.clone());
    }
    rec
}

/// A human-readable explanation, several lines.
pub fn text(rules: &RuleSet, input: &str) -> String {
    let mut out = String::new();
    let explanation = rules.explain(input);
    let _ = writeln!(out, "image:       {input}");
    match Reference::parse(input) {
        Ok(r) => {
            let _ = writeln!(out, "domain:      {}", r.domain());
            let _ = writeln!(out, "path:        {}", r.path());
            let _ = writeln!(
                out,
                "tag:         {}",
                r.tag().unwrap_or("(none; the runtime pulls :latest)")
            );
            let _ = writeln!(out, "digest:      {}", r.digest().unwrap_or("(none)"));
            let _ = writeln!(out, "normalized:  {r}");
            let _ = writeln!(out, "familiar:    {}", r.familiar());
        }
        Err(e) => {
            let _ = writeln!(out, "invalid:     {e}");
        }
    }
    for c in &explanation.candidates {
        let via = if c.via_alias { " (via alias)" } else { "" };
        match &c.declined {
            Some(why) => {
                let _ = writeln!(
                    out,
                    "tried:       {} [{}]{via}: declined, {why}",
                    c.rule, c.source
                );
            }
            None => {
                let _ = writeln!(out, "matched:     {} [{}]{via}", c.rule, c.source);
            }
        }
    }
    match &explanation.outcome {
        Outcome::Rewritten {
            to, rule, alias, ..
        } => {
            if let Some(a) = alias {
                let _ = writeln!(out, "alias:       {} = {}", a.from, a.to);
            }
            let _ = writeln!(
                out,
                "rule:        {} (kind {}, source {})",
                rule.name,
                rule.transform.kind(),
                rule.source
            );
            let _ = writeln!(out, "result:      {to}");
        }
        Outcome::Unchanged(_, why) => {
            let _ = writeln!(out, "result:      unchanged: {why}");
        }
        Outcome::Placeholder => {
            let _ = writeln!(
                out,
                "result:      unchanged: placeholder image that another webhook replaces"
            );
        }
        Outcome::Invalid(_) => {
            let _ = writeln!(out, "result:      unchanged: not a valid image reference");
        }
    }
    out
}
