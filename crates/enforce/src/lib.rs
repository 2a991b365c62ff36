//! The agent's hands on its host's firewall.
//!
//! A collector assigns a policy; this crate turns it into the one table
//! connscope owns on the host (`inet connscope`) and keeps it there, without
//! ever touching another table: each load is a single `nft -f` transaction
//! that replaces only that table (never `flush ruleset`), preceded by a
//! pre-flight ([`preflight`]) that refuses a ruleset which would cut the
//! agent off its collector. The loaded table is compared with what was loaded
//! every few seconds and restored when someone changed or removed it; its
//! counters are read back by the rule names the render put in comments; the
//! last assignment is kept on disk so a restart keeps enforcing it; and an
//! administrator's break-glass ([`break_glass`]) removes the table at once
//! and keeps the agent from loading until it is lifted. The NFLOG hits of
//! the loaded policy become events ([`hit_event`]) for the agent's pipeline.

mod enforcer;
mod error;
mod hits;
pub mod nft;
mod preflight;
mod state;

pub use enforcer::{break_glass, glass_restored, EnforceConfig, Enforcer};
pub use error::EnforceError;
pub use hits::hit_event;
pub use nft::Nft;
pub use preflight::{collectors_pass, conflicts, preflight, Conflict, Preflight};
pub use state::{Saved, StateDir};
