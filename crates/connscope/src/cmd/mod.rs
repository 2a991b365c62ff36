//! One module per subcommand.

pub mod agent;
pub mod agent_config;
pub mod agent_firewall;
pub mod agent_metrics;
pub mod collector;
pub mod demo;
pub mod doctor;
pub mod enroll;
pub mod firewall;
pub mod firewall_backtest;
pub mod generate;
pub mod groups;
pub mod import;
pub mod map;
pub mod policy;
pub mod policy_store;
pub mod report;
pub mod rules;
pub mod ship;
pub mod store;
pub mod store_args;

/// A flag that cannot be used, named as it was typed: `--from: invalid time ...`.
pub(crate) fn flag_error(e: connscope_query::ArgError) -> anyhow::Error {
    anyhow::anyhow!("--{e}")
}
