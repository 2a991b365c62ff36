//! Policies: what a host group (or one host) may do, as a document a person
//! reviews, edits and keeps versions of, rather than a ruleset regenerated
//! from history each time.
//!
//! A plan (`connscope-firewall`) is computed and thrown away; a policy is the
//! plan a person approved. So it lives as a TOML file in a stable format
//! (docs/POLICY.md): drafted from history with the plans' generalisation
//! ([`draft`]), checked for mistakes with every error naming its place
//! ([`Policy::parse`]), compared version to version ([`diff`]), replayed
//! against history with the what-if checker ([`check`]), and turned back into
//! a host's plan and nftables text ([`Policy::plan_for`], [`render`]) in audit
//! mode (would-be drops logged and let through) or enforce mode, or staged
//! per direction and port with the agent's golden rules ([`render_staged`]).
//! Once it runs, [`hygiene`] finds the rules its hosts' firewalls never
//! count and the rules much wider than the traffic they carry.

mod assign;
mod check;
mod diff;
mod document;
mod draft;
mod drift;
mod hygiene;
mod render;
mod status;

pub use assign::{AssignError, Assignments, HostAssignment, MEMBERSHIP_WINDOW};
pub use check::{check, CheckError};
pub use diff::{describe, diff, Change, PolicyDiff};
pub use document::{Drafted, Policy, PolicyError, ReviewEntry, Rule, RuleEvidence, Target, FORMAT};
pub use draft::{draft, DraftError, DraftOptions, Generalization};
pub use drift::{DriftDetector, DriftError, HOST_REFRESH, REVISION_POLL};
pub use hygiene::{
    analyse, hygiene, record_counters, Finding, HygieneError, HygieneOptions, HygieneReport,
    RuleHygiene, FEW_PEERS, WIDE_FACTOR,
};
pub use render::{render, render_staged, rule_name, GoldenRules, Mode, RULE_COMMENT_PREFIX};
pub use status::{
    host_briefs, mode_text, policy_status, staging_text, DriftEntry, DriftList, HostPolicyStatus,
    PolicyStatus,
};
