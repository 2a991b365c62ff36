//! The policy loop's wire contract: what an agent started with
//! `--manage-firewall` fetches (the policy assigned to its host and how it
//! is staged) and what it reports back (what it loaded, in which mode, what
//! went wrong, and its rules' hit counters).
//!
//! The collector sends the policy *document* (TOML, docs/POLICY.md), not
//! nftables text: the agent renders it for its own host name, adding the
//! golden rules only it knows (its collectors' addresses, its
//! administrators' networks), so a collector can never hand a host a
//! ruleset that locks the agent out of its own collector.

use serde::{Deserialize, Serialize};

/// GET with an agent token: 200 with an [`AssignedPolicy`], or 204 when no
/// policy is assigned to the host (the agent then removes nothing and loads
/// nothing: it keeps whatever it had, see docs/POLICY.md).
pub const AGENT_POLICY_PATH: &str = "/api/v1/agent/policy";
/// POST a [`FirewallReport`] with an agent token: the host's firewall state.
pub const AGENT_FIREWALL_PATH: &str = "/api/v1/agent/firewall";

/// Whether a direction (or a port of it) only reports what it would drop or
/// drops it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum StageMode {
    /// Log what the policy does not allow and let it through (would-block).
    #[default]
    Audit,
    /// Log what the policy does not allow and drop it (blocked).
    Enforce,
}

/// A service port: the unit of per-port staging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StagedPort {
    /// `tcp` or `udp`.
    #[serde(with = "protocol_name")]
    pub protocol: connscope_event::Protocol,
    pub port: u16,
}

/// The protocol as its name (`tcp`), the spelling of the events' JSON.
mod protocol_name {
    use connscope_event::Protocol;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(protocol: &Protocol, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(protocol.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(D::Error::custom)
    }
}

/// How one direction is staged: its mode, and the ports that already run in
/// the other mode (enforced ports while the direction audits; ports still
/// audited while it enforces), so enforcement can move port by port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionStage {
    pub mode: StageMode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except_ports: Vec<StagedPort>,
}

impl DirectionStage {
    /// The mode a connection to `port` over `protocol` meets.
    pub fn mode_for(&self, protocol: connscope_event::Protocol, port: u16) -> StageMode {
        let excepted = self
            .except_ports
            .iter()
            .any(|p| p.protocol == protocol && p.port == port);
        match (self.mode, excepted) {
            (mode, false) => mode,
            (StageMode::Audit, true) => StageMode::Enforce,
            (StageMode::Enforce, true) => StageMode::Audit,
        }
    }
}

/// How a policy is staged on its hosts: each direction on its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staging {
    pub inbound: DirectionStage,
    pub outbound: DirectionStage,
}

/// The body of [`AGENT_POLICY_PATH`]: the policy the collector's store
/// assigns to the asking host now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedPolicy {
    /// The policy's name and version in the store.
    pub name: String,
    pub version: u32,
    /// The policy document (TOML, format of docs/POLICY.md), to be rendered
    /// by the agent for its own host name.
    pub document: String,
    pub staging: Staging,
    /// Bumped on every change of the assignment (version, staging or a
    /// rollback), so an agent can tell "same as loaded" from "changed".
    pub revision: u64,
}

/// What an agent's firewall is doing, as it reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum FirewallState {
    /// connscope's table is loaded with this policy, version and staging.
    Loaded {
        name: String,
        version: u32,
        revision: u64,
        staging: Staging,
    },
    /// No policy was ever assigned or loaded.
    None,
    /// An administrator ran `connscope agent firewall off` on the host: the
    /// table is removed and stays removed until the agent is told otherwise
    /// on the host.
    BrokenGlass,
    /// The last assignment could not be loaded (pre-flight or `nft -f`
    /// failed); the previous table, if any, stays loaded.
    Failed { reason: String },
}

/// Something that happened to the host's firewall that an administrator
/// must hear about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallNotice {
    /// RFC 3339 time on the host.
    pub at: String,
    /// `tampered` (the table was changed or removed by someone else and was
    /// re-applied), `broken-glass`, `collector-lost` (kept the last policy),
    /// `preflight-failed`, `load-failed`, `loaded`.
    pub kind: String,
    pub detail: String,
}

/// One rule's counter read from the loaded table (`nft -j list table`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCounter {
    /// The policy rule it was rendered from: `inbound[2]`, `outbound[0]`, or
    /// `end:input` / `end:output` for the chain's log rule (would-block or
    /// blocked), `golden:...` for a golden rule.
    pub rule: String,
    pub packets: u64,
    pub bytes: u64,
}

/// The body of [`AGENT_FIREWALL_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallReport {
    pub host: String,
    /// RFC 3339 time on the host when the report was made.
    pub at: String,
    pub state: FirewallState,
    /// Since the last report that was accepted.
    #[serde(default)]
    pub notices: Vec<FirewallNotice>,
    /// Counters since the table was loaded (they restart at every load).
    #[serde(default)]
    pub counters: Vec<RuleCounter>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::Protocol;

    #[test]
    fn a_port_excepted_from_audit_is_enforced_and_back() {
        let ssh = StagedPort {
            protocol: Protocol::Tcp,
            port: 22,
        };
        let mut stage = DirectionStage {
            mode: StageMode::Audit,
            except_ports: vec![ssh],
        };
        assert_eq!(stage.mode_for(Protocol::Tcp, 22), StageMode::Enforce);
        assert_eq!(stage.mode_for(Protocol::Udp, 22), StageMode::Audit);
        stage.mode = StageMode::Enforce;
        assert_eq!(stage.mode_for(Protocol::Tcp, 22), StageMode::Audit);
        assert_eq!(stage.mode_for(Protocol::Tcp, 443), StageMode::Enforce);
    }

    #[test]
    fn an_assignment_reads_back_from_json() {
        let assigned = AssignedPolicy {
            name: "workstations".into(),
            version: 3,
            document: "format = 1\n".into(),
            staging: Staging {
                inbound: DirectionStage::default(),
                outbound: DirectionStage {
                    mode: StageMode::Enforce,
                    except_ports: vec![],
                },
            },
            revision: 7,
        };
        let json = serde_json::to_string(&assigned).unwrap();
        assert!(json.contains(r#""mode":"enforce""#), "{json}");
        assert_eq!(
            serde_json::from_str::<AssignedPolicy>(&json).unwrap(),
            assigned
        );
        let state = FirewallState::Failed {
            reason: "nft: no such file".into(),
        };
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(json, r#"{"state":"failed","reason":"nft: no such file"}"#);
    }
}
