//! One module per subcommand.

pub mod agent;
pub mod collector;
pub mod demo;
pub mod firewall;
pub mod import;
pub mod map;
pub mod report;
pub mod rules;
pub mod ship;
