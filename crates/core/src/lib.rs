//! detour-core: what detour decides, with no I/O of its own.
//!
//! For every product of the workspace: the image reference grammar
//! ([`reference`]), the rules engine and its decision cache ([`rules`]), the
//! typed config with its rule schema, `mirror:` settings and built-in
//! presets ([`config`], [`rule_spec`], [`mirror_settings`], [`presets`]),
//! the names detour uses in Pods ([`pod`]), the offline manifest rewrite
//! ([`manifest`]) and the explanation of one image ([`explain`]).
//!
//! May depend on: serde and its formats, thiserror, foldhash, tracing (the
//! facade only). Never on tokio, an HTTP stack, a registry or Kubernetes
//! client, or file watching; reading a config file is the one file access.
//! Every other crate depends on this one; it depends on none of them.
//!
//! Inside, in dependency order: `reference` <- `rules` <- `rule_spec`,
//! `duration`, `mirror_settings` <- `presets` <- `config` <- `manifest`,
//! `explain`; `pod` stands alone.
#![forbid(unsafe_code)]

pub mod config;
pub mod duration;
pub mod explain;
pub mod manifest;
pub mod mirror_settings;
pub mod native;
pub mod pod;
pub mod presets;
pub mod reference;
pub mod rule_spec;
pub mod rules;
