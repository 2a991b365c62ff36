//! Firewall planning from observed traffic.
//!
//! - [`plan()`] turns one host's observed flows ([`ObservedFlow`]) into an
//!   allowlist ([`Plan`]); [`render`] writes it as nftables or iptables-restore.
//! - [`by_name`] allows outbound destinations by the DNS name the host
//!   learned for them (nft sets the agent fills) instead of their addresses.
//! - [`fleet`] and [`generalise`] plan many hosts at once, from their groups'
//!   and subnets' evidence as well as their own.
//! - [`nft`] reads a proposed or loaded ruleset (text or `nft -j` JSON) into a
//!   model of the subset host firewalls use.
//! - [`check()`] replays observed flows against such a ruleset and says, per
//!   flow, whether it would pass; [`diff()`] adds unused rules and idle
//!   listeners on top; [`map_check`] answers the same per edge of the map's
//!   graph.
//! - [`fleet`] plans every host at once ([`FleetPlanner`]); [`backtest()`]
//!   learns such plans on the past and replays the following days against
//!   them, per host and edge, beside the surface each plan allows. With the
//!   `test-support` feature, `office` generates the office history its tests
//!   and bench use.
//!
//! Everything here is pure except [`listening::local_listeners`], file
//! reading in [`nft::parse_file`] and [`from_store`], the one reader of what a
//! host did from the store (which [`backtest::backtest_store`] calls); the CLI
//! lives in the `connscope` binary, so tests feed flows directly.

pub mod backtest;
pub mod by_name;
pub mod check;
pub mod diff;
pub mod fleet;
pub mod flow;
pub mod from_store;
pub mod generalise;
pub mod listening;
pub mod map_check;
pub mod net;
pub mod nft;
#[cfg(any(test, feature = "test-support"))]
pub mod office;
pub mod plan;
pub mod render;
pub mod sanitize;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;

pub use backtest::{backtest, Backtest, BacktestError};
pub use check::{check, FlowVerdict, Outcome};
pub use diff::{diff, Diff};
pub use fleet::{ExactPlanner, FleetFlows, FleetPlanner, GroupMembers};
pub use flow::{FlowDirection, ObservedFlow};
pub use generalise::{group_plan, GroupPlanner, SubnetPlanner};
pub use plan::{plan, Basis, Generalize, Plan, PlanOptions};
