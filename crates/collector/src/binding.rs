//! Which host names an agent may write events for.
//!
//! The token decides the agent id, but each event names its host itself
//! (`host.name`), and the host name is what reports, the map and the firewall
//! planner group by. So an agent speaks only for the hosts bound to it: the
//! ones its tokens-file line names, or else the one host of its first stored
//! batch (kept by the store as the agent's host, so a restart keeps the
//! binding, and stores written before binding existed keep working). A host
//! already bound to another agent with a token cannot be learned (imports and
//! syslog senders own no host: an agent may take over from them). A batch
//! with any other host is refused whole.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use connscope_event::ConnectionEvent;
use connscope_store::{AgentId, Store, StoreError};

use crate::auth::Tokens;

/// Why a batch may not be stored under its agent.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    #[error("agent {agent} may not write events of host {host:?} (it speaks for {allowed})")]
    OtherHost {
        agent: String,
        host: String,
        allowed: String,
    },
    #[error("host {host:?} belongs to agent {owner}; agent {agent} cannot take it")]
    Taken {
        agent: String,
        host: String,
        owner: String,
    },
    #[error("agent {agent} has no host yet and its first batch names several: {hosts}")]
    Several { agent: String, hosts: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The hosts learned from first batches, remembered for this process (the
/// store keeps them across restarts).
#[derive(Debug, Default)]
pub(crate) struct HostBindings {
    learned: Mutex<HashMap<AgentId, String>>,
}

impl HostBindings {
    /// Checks that every event of `agent`'s batch names a host bound to it,
    /// binding the batch's host when the agent has none yet.
    pub fn check(
        &self,
        tokens: &Tokens,
        store: &dyn Store,
        agent: &AgentId,
        events: &[ConnectionEvent],
    ) -> Result<(), BindingError> {
        if let Some(allowed) = tokens.hosts_of(agent) {
            return only(agent, events, allowed);
        }
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        let host = match learned.get(agent) {
            Some(host) => host.clone(),
            None => {
                let host = first_host(tokens, store, &learned, agent, events)?;
                learned.insert(agent.clone(), host.clone());
                host
            }
        };
        only(agent, events, &BTreeSet::from([host]))
    }
}

/// The host `agent` is bound to from now on: the store's host of the agent,
/// else the one host of this batch, if no other agent has it.
fn first_host(
    tokens: &Tokens,
    store: &dyn Store,
    learned: &HashMap<AgentId, String>,
    agent: &AgentId,
    events: &[ConnectionEvent],
) -> Result<String, BindingError> {
    let agents = store.agents()?;
    if let Some(known) = agents
        .iter()
        .find(|a| &a.agent == agent && !a.host.is_empty())
    {
        return Ok(known.host.clone());
    }
    let hosts: BTreeSet<&str> = events.iter().map(|e| e.host.as_str()).collect();
    let mut hosts = hosts.into_iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        let all: Vec<&str> = events.iter().map(|e| e.host.as_str()).collect();
        return Err(BindingError::Several {
            agent: agent.0.clone(),
            hosts: format!("{:.200?}", all.into_iter().collect::<BTreeSet<_>>()),
        });
    };
    let owner = tokens
        .agent_given(host)
        .cloned()
        .or_else(|| {
            learned
                .iter()
                .find(|(_, h)| h.as_str() == host)
                .map(|(a, _)| a.clone())
        })
        .or_else(|| {
            agents
                .iter()
                .find(|a| a.host == host && tokens.has_agent(&a.agent))
                .map(|a| a.agent.clone())
        });
    match owner {
        Some(owner) if &owner != agent => Err(BindingError::Taken {
            agent: agent.0.clone(),
            host: host.to_owned(),
            owner: owner.0,
        }),
        _ => Ok(host.to_owned()),
    }
}

fn only(
    agent: &AgentId,
    events: &[ConnectionEvent],
    allowed: &BTreeSet<String>,
) -> Result<(), BindingError> {
    match events.iter().find(|e| !allowed.contains(&e.host)) {
        None => Ok(()),
        Some(e) => Err(BindingError::OtherHost {
            agent: agent.0.clone(),
            host: e.host.clone(),
            allowed: allowed
                .iter()
                .map(|h| format!("{h:?}"))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::test_support::EventBuilder;
    use connscope_event::Timestamp;
    use connscope_store::SqliteStore;

    fn event(host: &str) -> ConnectionEvent {
        EventBuilder::connect("10.0.0.1:40000", "10.0.0.2:22")
            .at(Timestamp::now())
            .host(host)
            .build()
    }

    #[test]
    fn only_agents_with_tokens_own_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.db")).unwrap();
        // An import and an agent whose token is gone both stored events of their host.
        for (agent, host) in [("import:vm", "vm"), ("retired", "db1"), ("web1", "web1")] {
            store
                .ingest(&AgentId(agent.into()), &[event(host)])
                .unwrap();
        }
        let mut tokens = Tokens::default();
        for (agent, token) in [
            ("vm", "token-of-vm-0123456"),
            ("web1", "token-of-web1-012345"),
        ] {
            tokens.insert(agent, token).unwrap();
        }
        tokens.insert("db1", "token-of-db1-0123456").unwrap();
        tokens.insert("ws1", "token-of-ws1-0123456").unwrap();
        let bindings = HostBindings::default();
        let check = |agent: &str, host: &str| {
            bindings.check(&tokens, &store, &AgentId(agent.into()), &[event(host)])
        };
        check("vm", "vm").unwrap();
        check("db1", "db1").unwrap();
        assert!(matches!(
            check("ws1", "web1"),
            Err(BindingError::Taken { .. })
        ));
        assert!(matches!(
            check("ws1", "vm"),
            Err(BindingError::Taken { .. })
        ));
        check("ws1", "ws1").unwrap();
        assert!(matches!(
            check("ws1", "ws2"),
            Err(BindingError::OtherHost { .. })
        ));
        let err = bindings
            .check(
                &tokens,
                &store,
                &AgentId("new".into()),
                &[event("a"), event("b")],
            )
            .unwrap_err();
        assert!(matches!(err, BindingError::Several { .. }), "{err}");
    }
}
