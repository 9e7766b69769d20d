//! detour: a Kubernetes mutating admission webhook that rewrites Pod images to
//! registry mirrors.
//!
//! Dependency direction (inner to outer): [`reference`] and [`rules`] are the
//! pure core; [`config`] and [`presets`] build rules from files; [`manifest`]
//! applies them to Kubernetes objects; transport and runtime wiring sit on top.

pub mod admission;
pub mod audit;
pub mod audit_command;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod duration;
pub mod explain;
pub mod log_format;
pub mod log_writer;
pub mod managed_certs;
pub mod manifest;
pub mod metrics;
pub mod mirror;
pub mod mirror_command;
pub mod mirror_settings;
pub mod presets;
pub mod pullthrough;
pub mod reference;
pub mod rule_spec;
pub mod rules;
pub mod server;
pub mod tls;
pub mod watch;
