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

mod check;
mod diff;
mod document;
mod draft;
mod render;

pub use check::{check, CheckError};
pub use diff::{describe, diff, Change, PolicyDiff};
pub use document::{Drafted, Policy, PolicyError, ReviewEntry, Rule, RuleEvidence, Target, FORMAT};
pub use draft::{draft, DraftError, DraftOptions, Generalization};
pub use render::{render, render_staged, rule_name, GoldenRules, Mode, RULE_COMMENT_PREFIX};
