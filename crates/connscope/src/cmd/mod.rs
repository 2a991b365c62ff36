//! One module per subcommand.

pub mod agent;
pub mod collector;
pub mod demo;
pub mod firewall;
pub mod firewall_backtest;
pub mod groups;
pub mod import;
pub mod map;
pub mod report;
pub mod rules;
pub mod ship;
pub mod store;
pub mod store_args;

/// A flag that cannot be used, named as it was typed: `--from: invalid time ...`.
pub(crate) fn flag_error(e: connscope_query::ArgError) -> anyhow::Error {
    anyhow::anyhow!("--{e}")
}
