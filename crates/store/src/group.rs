//! Host groups and labels as the store keeps them: plain rows of text, so
//! every backend (SQLite now, ClickHouse later) stores the same thing.
//!
//! The store does not interpret a group's patterns (globs, CIDRs, host
//! names): it keeps what the user gave. Checking and matching them is
//! `connscope-query`'s (`groups`), which resolves membership from the hosts
//! and addresses the store saw; so a group stays valid as hosts come and go,
//! and its members are always today's.

/// How a group says which hosts belong to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupKind {
    /// Host names matching one of the patterns (globs such as `ws-*`).
    Names,
    /// Hosts seen with an address in one of the ranges (CIDRs).
    Addresses,
    /// The hosts listed, by name.
    Hosts,
}

impl GroupKind {
    /// The word a backend stores (and the CLI and API show).
    pub fn as_str(self) -> &'static str {
        match self {
            GroupKind::Names => "names",
            GroupKind::Addresses => "addresses",
            GroupKind::Hosts => "hosts",
        }
    }

    /// The kind [`GroupKind::as_str`] wrote.
    pub fn parse(word: &str) -> Option<GroupKind> {
        [GroupKind::Names, GroupKind::Addresses, GroupKind::Hosts]
            .into_iter()
            .find(|kind| kind.as_str() == word)
    }
}

/// One host group's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGroup {
    pub name: String,
    pub kind: GroupKind,
    /// Globs, CIDRs or host names (by `kind`), in the order given.
    pub patterns: Vec<String>,
    /// `key=value` labels of the group, ordered by key; a key at most once.
    pub labels: Vec<(String, String)>,
}

/// One label of one host (`role=workstation`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostLabel {
    pub host: String,
    pub key: String,
    pub value: String,
}
