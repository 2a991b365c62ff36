//! The agent's eyes on its own firewall: packets that a connscope policy
//! logged to NFLOG because it would drop them (audit mode, prefix
//! `connscope would-block CHAIN: `) or did drop them (enforce mode,
//! `connscope blocked CHAIN: `), read from the kernel over netlink and turned
//! into [`FirewallHit`]s that name the connection and, where the kernel still
//! knows it, the process and user behind it.
//!
//! Netlink: the rust-netlink project's `netlink-packet-netfilter` (typed
//! `nfnetlink_log` config requests and packet attributes) over its
//! `netlink-sys` socket. They are pure Rust, released together with the
//! `rtnetlink` stack many projects run, and need no C library; the `nflog`
//! crate binds libnetfilter_log (a C library and its headers on every build
//! machine, unreleased since 2019) and `neli` has no `nfnetlink_log` types, so
//! its users write the attribute layout by hand. The packet's own headers
//! (truncated to the copy range) are read with `etherparse`.
//!
//! Layers: [`decode`] (a netlink datagram -> logged packets), [`attempts`]
//! (one hit per connection attempt, a cap on floods), [`owner`] (the socket
//! and process behind a packet) and [`capture`] (the subscription on a thread
//! in the chosen network namespace, tying them together).

pub mod attempts;
pub mod capture;
pub mod decode;
pub mod hit;
pub mod owner;
#[cfg(test)]
mod records;

pub use attempts::{AttemptLimits, Attempts};
pub use capture::{NflogCapture, NflogConfig, NflogError, NflogStats};
pub use decode::{LoggedPacket, BLOCKED_PREFIX, WOULD_BLOCK_PREFIX};
pub use hit::{Chain, FirewallHit, HitKind, HitReport};
