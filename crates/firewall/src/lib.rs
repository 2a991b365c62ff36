//! Firewall planning from observed traffic.
//!
//! - [`plan()`] turns one host's observed flows ([`ObservedFlow`]) into an
//!   allowlist ([`Plan`]); [`render`] writes it as nftables or iptables-restore.
//! - [`nft`] reads a proposed or loaded ruleset (text or `nft -j` JSON) into a
//!   model of the subset host firewalls use.
//! - [`check()`] replays observed flows against such a ruleset and says, per
//!   flow, whether it would pass; [`diff()`] adds unused rules and idle
//!   listeners on top.
//!
//! Everything here is pure except [`listening::local_listeners`], file
//! reading in [`nft::parse_file`] and [`from_store`], the thin adapter that
//! reads one host's flows from the store; the CLI lives in the `connscope`
//! binary, and tests feed flows directly.

pub mod check;
pub mod diff;
pub mod flow;
pub mod from_store;
pub mod listening;
pub mod net;
pub mod nft;
pub mod plan;
pub mod render;
pub mod sanitize;

pub use check::{check, FlowVerdict, Outcome};
pub use diff::{diff, Diff};
pub use flow::{FlowDirection, ObservedFlow};
pub use plan::{plan, Generalize, Plan, PlanOptions};
