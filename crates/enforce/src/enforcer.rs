//! The host's own table over time: applying assignments, restoring it when
//! someone else changes it, honouring break-glass, reading its counters, and
//! collecting the notices the agent reports.
//!
//! The agent calls [`Enforcer::apply`] with each new assignment and
//! [`Enforcer::watch`] every few seconds; the enforcer never decides on its
//! own to open or close anything beyond re-loading what it last loaded.

use std::path::Path;

use connscope_policy::{render_staged, rule_name, GoldenRules, Policy};
use connscope_protocol::policy::{AssignedPolicy, FirewallNotice, FirewallState, RuleCounter};
use tracing::{info, warn};

use crate::error::EnforceError;
use crate::nft::Nft;
use crate::preflight::{preflight, Preflight};
use crate::state::{Saved, StateDir};

/// What the enforcer needs to know about its host.
#[derive(Debug, Clone)]
pub struct EnforceConfig {
    /// The host name policies are rendered for (the events' host).
    pub host: String,
    pub golden: GoldenRules,
    /// The NFLOG group would-block and blocked packets are logged to.
    pub log_group: u16,
    pub nft: Nft,
}

/// What is loaded now, as loaded.
#[derive(Debug, Clone)]
struct Loaded {
    assigned: AssignedPolicy,
    text: String,
    /// `nft -s list table inet connscope` right after loading.
    listing: String,
}

/// The host's connscope table and what happened to it.
#[derive(Debug)]
pub struct Enforcer {
    config: EnforceConfig,
    state: StateDir,
    loaded: Option<Loaded>,
    /// The last assignment that was not loaded, and why: not tried again
    /// until another one comes (each try would repeat the notice).
    failed: Option<(AssignedPolicy, String)>,
    broken_glass: bool,
    notices: Vec<FirewallNotice>,
}

/// The current time as the reports spell it.
fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// Switches connscope's firewall off on the host at once (break-glass): the
/// marker first, so a running agent does not load again, then the table.
pub fn break_glass(state_dir: &Path, nft: &Nft, by: &str) -> Result<(), EnforceError> {
    StateDir::new(state_dir).set_marker(&format!("switched off at {} by {by}", now()))?;
    nft.remove_table()
}

/// Lets the agent load again after [`break_glass`]; whether it was off.
pub fn glass_restored(state_dir: &Path) -> Result<bool, EnforceError> {
    StateDir::new(state_dir).clear_marker()
}

impl Enforcer {
    /// An enforcer keeping its files in `state_dir` (the agent's).
    pub fn new(config: EnforceConfig, state_dir: &Path) -> Enforcer {
        Enforcer {
            config,
            state: StateDir::new(state_dir),
            loaded: None,
            failed: None,
            broken_glass: false,
            notices: Vec::new(),
        }
    }

    fn notice(&mut self, kind: &str, detail: String) {
        info!(kind, %detail, "firewall");
        self.notices.push(FirewallNotice {
            at: now(),
            kind: kind.to_owned(),
            detail,
        });
    }

    /// Records something for the next report (e.g. `collector-lost`).
    pub fn note(&mut self, kind: &str, detail: String) {
        self.notice(kind, detail);
    }

    /// The notices since the last call, for a report.
    pub fn take_notices(&mut self) -> Vec<FirewallNotice> {
        std::mem::take(&mut self.notices)
    }

    /// Whether notices wait for a report.
    pub fn has_notices(&self) -> bool {
        !self.notices.is_empty()
    }

    /// Gives back notices a report could not deliver, oldest first.
    pub fn return_notices(&mut self, mut notices: Vec<FirewallNotice>) {
        notices.append(&mut self.notices);
        self.notices = notices;
    }

    /// The assignment loaded now.
    pub fn loaded(&self) -> Option<&AssignedPolicy> {
        self.loaded.as_ref().map(|l| &l.assigned)
    }

    /// The state to report.
    pub fn state(&self) -> FirewallState {
        if self.broken_glass {
            return FirewallState::BrokenGlass;
        }
        if let Some((_, reason)) = &self.failed {
            return FirewallState::Failed {
                reason: reason.clone(),
            };
        }
        match &self.loaded {
            Some(l) => FirewallState::Loaded {
                name: l.assigned.name.clone(),
                version: l.assigned.version,
                revision: l.assigned.revision,
                staging: l.assigned.staging.clone(),
            },
            None => FirewallState::None,
        }
    }

    /// At start: honours a break-glass marker, else loads the assignment kept
    /// on disk (the host enforces what it enforced before the restart,
    /// whether or not a collector answers). Returns what was loaded.
    pub fn resume(&mut self) -> Result<Option<AssignedPolicy>, EnforceError> {
        if self.check_glass()? {
            return Ok(None);
        }
        let Some(saved) = self.state.load_assignment()? else {
            return Ok(None);
        };
        self.apply(&saved.assigned)?;
        self.notice(
            "loaded",
            format!(
                "kept from disk: policy {} v{} revision {}, applied {} (until a collector assigns another)",
                saved.assigned.name, saved.assigned.version, saved.assigned.revision, saved.applied_at
            ),
        );
        Ok(Some(saved.assigned))
    }

    /// Renders, checks and loads `assigned` (unless it is what is loaded, or
    /// what failed last), then keeps it on disk. On failure the previous
    /// table stays and the state says why.
    pub fn apply(&mut self, assigned: &AssignedPolicy) -> Result<Option<Preflight>, EnforceError> {
        if self.check_glass()? {
            return Err(EnforceError::BrokenGlass);
        }
        if self.loaded().is_some_and(|l| l == assigned)
            || self.failed.as_ref().is_some_and(|(f, _)| f == assigned)
        {
            return Ok(None);
        }
        let prepared = self.prepare(assigned);
        let loaded = match prepared {
            Ok((text, preflight)) => self
                .install(assigned, text, &preflight)
                .map(|()| preflight)
                .map_err(|e| ("load-failed", e)),
            Err(e) => Err(("preflight-failed", e)),
        };
        match loaded {
            Ok(preflight) => {
                self.failed = None;
                Ok(Some(preflight))
            }
            Err((kind, e)) => {
                warn!(error = %e, "policy not loaded");
                self.failed = Some((assigned.clone(), e.to_string()));
                self.notice(
                    kind,
                    format!(
                        "policy {} v{} revision {}: {e}",
                        assigned.name, assigned.version, assigned.revision
                    ),
                );
                Err(e)
            }
        }
    }

    /// The assignment rendered for this host, and its pre-flight.
    fn prepare(&mut self, assigned: &AssignedPolicy) -> Result<(String, Preflight), EnforceError> {
        let policy = Policy::parse(&assigned.document).map_err(|source| EnforceError::Policy {
            name: assigned.name.clone(),
            version: assigned.version,
            source,
        })?;
        let text = render_staged(
            &policy,
            &self.config.host,
            &assigned.staging,
            &self.config.golden,
            self.config.log_group,
        );
        let preflight = preflight(&self.config.nft, &text, &self.config.golden)?;
        Ok((text, preflight))
    }

    /// Loads `text` as one transaction and keeps the assignment on disk.
    fn install(
        &mut self,
        assigned: &AssignedPolicy,
        text: String,
        preflight: &Preflight,
    ) -> Result<(), EnforceError> {
        for conflict in &preflight.conflicts {
            self.notice("conflict", conflict.to_string());
        }
        self.config.nft.load(&text)?;
        let listing = self.config.nft.table_listing()?.unwrap_or_default();
        self.loaded = Some(Loaded {
            assigned: assigned.clone(),
            text,
            listing,
        });
        self.state.save_assignment(&Saved {
            assigned: assigned.clone(),
            applied_at: now(),
        })?;
        self.notice(
            "loaded",
            format!(
                "policy {} v{} revision {} (nft {})",
                assigned.name, assigned.version, assigned.revision, preflight.nft_version
            ),
        );
        Ok(())
    }

    /// Notices the break-glass marker coming and going; whether glass is
    /// broken now. Coming: the table is removed (again: the command did it
    /// already) and reported. Going: the saved assignment is loaded again.
    fn check_glass(&mut self) -> Result<bool, EnforceError> {
        let marker = self.state.marker()?;
        match (marker, self.broken_glass) {
            (Some(text), false) => {
                self.broken_glass = true;
                self.loaded = None;
                self.config.nft.remove_table()?;
                self.notice("broken-glass", text);
            }
            (None, true) => {
                self.broken_glass = false;
                self.notice(
                    "loaded",
                    "break-glass lifted on the host (`connscope agent firewall on`)".to_owned(),
                );
            }
            _ => {}
        }
        Ok(self.broken_glass)
    }

    /// The periodic check: break-glass, and the loaded table compared with
    /// what was loaded; changed or removed by someone else, it is loaded
    /// again and a `tampered` notice recorded. Returns whether it restored.
    pub fn watch(&mut self) -> Result<bool, EnforceError> {
        let was_broken = self.broken_glass;
        if self.check_glass()? {
            return Ok(false);
        }
        if was_broken {
            self.resume()?;
            return Ok(false);
        }
        let Some(loaded) = &self.loaded else {
            return Ok(false);
        };
        let now = self.config.nft.table_listing()?;
        if now.as_deref() == Some(loaded.listing.as_str()) {
            return Ok(false);
        }
        let what = if now.is_none() { "removed" } else { "changed" };
        let text = loaded.text.clone();
        self.config.nft.load(&text)?;
        let listing = self.config.nft.table_listing()?.unwrap_or_default();
        let assigned = loaded.assigned.clone();
        if let Some(l) = self.loaded.as_mut() {
            l.listing = listing;
        }
        self.notice(
            "tampered",
            format!(
                "connscope's table was {what} outside the agent; policy {} v{} revision {} loaded again",
                assigned.name, assigned.version, assigned.revision
            ),
        );
        Ok(true)
    }

    /// The loaded table's counters by rule name, summed over the nft rules a
    /// policy rule became (both families of a golden rule, for instance).
    pub fn counters(&self) -> Result<Vec<RuleCounter>, EnforceError> {
        if self.loaded.is_none() {
            return Ok(Vec::new());
        }
        let Some(tables) = self.config.nft.table_json()? else {
            return Ok(Vec::new());
        };
        let mut counters: Vec<RuleCounter> = Vec::new();
        for rule in &tables.rules {
            let (Some(name), Some((packets, bytes))) =
                (rule.comment.as_deref().and_then(rule_name), rule.counter())
            else {
                continue;
            };
            match counters.iter_mut().find(|c| c.rule == name) {
                Some(c) => {
                    c.packets += packets;
                    c.bytes += bytes;
                }
                None => counters.push(RuleCounter {
                    rule: name.to_owned(),
                    packets,
                    bytes,
                }),
            }
        }
        Ok(counters)
    }

    /// Removes connscope's table (the agent's own removal, e.g. when it is
    /// told to stop managing the firewall).
    pub fn remove(&mut self) -> Result<(), EnforceError> {
        self.config.nft.remove_table()?;
        self.loaded = None;
        Ok(())
    }
}
