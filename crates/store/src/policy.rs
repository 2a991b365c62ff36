//! The policy loop's records (issue 21): the policy documents the collector
//! keeps, version by version; which policy each group or host is assigned,
//! with every change kept so a rollback restores exactly the assignment
//! before; what each host's agent last reported about its firewall; and the
//! drift edges, one record per edge, which is also what makes a drift alert
//! go out once.
//!
//! Staging and the firewall state are the wire contract's own types
//! ([`connscope_protocol::policy`]): the store keeps what the agents and the
//! CLI speak instead of a copy of it.

use std::fmt;
use std::net::IpAddr;

use connscope_event::{Direction, Protocol, Timestamp};
use connscope_protocol::policy::{FirewallNotice, FirewallState, StageMode, Staging};

/// One stored version of a policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    pub name: String,
    /// 1 for the first version of `name`, then one more per changed document.
    pub version: u32,
    /// The document's TOML text, byte for byte as pushed.
    pub document: String,
    pub created: Timestamp,
    pub author: String,
    pub comment: String,
}

/// What a policy is assigned to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AssignmentTarget {
    /// A host group (`connscope groups`), by name.
    Group(String),
    /// One host, by the name its agent sends.
    Host(String),
}

impl AssignmentTarget {
    /// `group` or `host`.
    pub fn kind(&self) -> &'static str {
        match self {
            AssignmentTarget::Group(_) => "group",
            AssignmentTarget::Host(_) => "host",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            AssignmentTarget::Group(name) | AssignmentTarget::Host(name) => name,
        }
    }

    /// The target from its kind and name as [`AssignmentTarget::kind`] spells it.
    pub fn from_parts(kind: &str, name: String) -> Option<AssignmentTarget> {
        match kind {
            "group" => Some(AssignmentTarget::Group(name)),
            "host" => Some(AssignmentTarget::Host(name)),
            _ => None,
        }
    }
}

impl fmt::Display for AssignmentTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.name())
    }
}

/// A policy version and how it is staged: what an assignment assigns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignedVersion {
    pub policy: String,
    pub version: u32,
    pub staging: Staging,
}

/// One change of a target's assignment, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyAssignment {
    pub target: AssignmentTarget,
    /// `None`: the target's assignment was withdrawn (a rollback past its
    /// first assignment); its hosts then have no policy from it.
    pub assigned: Option<AssignedVersion>,
    /// Given by the store; higher for every later change of any target.
    pub revision: u64,
    pub at: Timestamp,
    /// Who made the change (the CLI's user).
    pub by: String,
}

/// A change to store: a [`PolicyAssignment`] before the store numbers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentChange {
    pub target: AssignmentTarget,
    pub assigned: Option<AssignedVersion>,
    pub at: Timestamp,
    pub by: String,
}

/// The last firewall report of a host's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFirewall {
    pub host: String,
    pub state: FirewallState,
    /// When the agent made the report (its clock).
    pub reported_at: Timestamp,
}

/// A notice a host's agent reported, kept as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNotice {
    pub host: String,
    pub notice: FirewallNotice,
}

/// One drift edge: connections a host made or accepted that the policy
/// assigned to it does not allow, one record per (host, direction,
/// protocol, port, remote address). What the first connection showed
/// (process, user, local address, name, policy) stays; times and the count
/// grow with later ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftRecord {
    pub host: String,
    pub direction: Direction,
    pub protocol: Protocol,
    /// The service port: local for incoming, remote for outgoing.
    pub port: u16,
    pub remote: IpAddr,
    pub local: IpAddr,
    pub remote_name: Option<String>,
    pub executable: Option<String>,
    pub user: Option<String>,
    pub policy: String,
    pub version: u32,
    /// The mode the policy runs that direction and port in.
    pub mode: StageMode,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub connections: u64,
}

/// Whether retention removes a notice dated `at` (the host's RFC 3339
/// time) given the raw-event `cutoff`. A notice whose date does not parse
/// is kept: nothing says it is old.
pub(crate) fn notice_expired(at: &str, cutoff: Timestamp) -> bool {
    at.parse::<Timestamp>().is_ok_and(|at| at < cutoff)
}

/// A store's spelling of a [`StageMode`].
pub(crate) fn mode_name(mode: StageMode) -> &'static str {
    match mode {
        StageMode::Audit => "audit",
        StageMode::Enforce => "enforce",
    }
}

pub(crate) fn parse_mode(name: &str) -> Option<StageMode> {
    match name {
        "audit" => Some(StageMode::Audit),
        "enforce" => Some(StageMode::Enforce),
        _ => None,
    }
}
