//! Per-agent bearer tokens.
//!
//! The token decides who an agent is: the collector stores a batch under the
//! agent id its token maps to, never under anything the request says about
//! itself, so one leaked token cannot write into another agent's sequence
//! space. Tokens are kept as SHA-256 digests: a lookup then compares digests,
//! which tells a timing attacker nothing about the token's characters.
//!
//! A token also speaks for a set of host names, the `host.name` its events may
//! carry (see [`crate::binding`]): given in the tokens file, or else learned
//! from the agent's first batch. Without it an enrolled workstation could
//! write flows under a server's name, and so into that server's firewall plan.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use connscope_protocol::Fingerprint;
use connscope_store::AgentId;

use crate::error::CollectorError;

/// The longest host name accepted, in bytes: a DNS name's limit.
pub const MAX_HOST_NAME: usize = 253;

/// Token digest -> agent id, and the host names each agent was given.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_digest: HashMap<Fingerprint, AgentId>,
    hosts: HashMap<AgentId, BTreeSet<String>>,
}

/// Whether `host` may be a host name: 1 to 253 bytes, no white space or
/// control characters.
pub fn check_host_name(host: &str) -> Result<(), String> {
    if host.is_empty() || host.len() > MAX_HOST_NAME {
        return Err(format!(
            "a host name has 1 to {MAX_HOST_NAME} bytes, not {}",
            host.len()
        ));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a host name has no white space or control characters".into());
    }
    Ok(())
}

/// Whether `agent` may be an agent id: ids are what `report hosts` shows,
/// so they are limited to a tame character set, and `syslog@` is taken.
pub fn check_agent_id(agent: &str) -> Result<(), String> {
    if agent.is_empty()
        || agent.len() > MAX_HOST_NAME
        || !agent
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
    {
        return Err(format!(
            "agent id {agent:.60?}: use 1 to {MAX_HOST_NAME} letters, digits and - _ . @ only"
        ));
    }
    if agent.starts_with("syslog@") {
        return Err(format!(
            "agent id {agent:?}: the syslog@ prefix is reserved for syslog senders"
        ));
    }
    Ok(())
}

impl Tokens {
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Adds one agent's token. Agent ids are what `report hosts` shows, so
    /// they are limited to a tame character set; a token used twice is refused.
    pub fn insert(&mut self, agent: &str, token: &str) -> Result<(), String> {
        check_agent_id(agent)?;
        if token.len() < 16 || token.chars().any(char::is_whitespace) {
            return Err(format!(
                "token of agent {agent:?}: use at least 16 characters and no white space"
            ));
        }
        let digest = Fingerprint::of(token.as_bytes());
        if let Some(other) = self.by_digest.insert(digest, AgentId(agent.to_owned())) {
            return Err(format!(
                "agents {:?} and {agent:?} have the same token",
                other.0
            ));
        }
        Ok(())
    }

    /// Lets `agent` write events of these hosts only (instead of the one its
    /// first batch names).
    pub fn bind_hosts<'h>(
        &mut self,
        agent: &str,
        hosts: impl IntoIterator<Item = &'h str>,
    ) -> Result<(), String> {
        if !self.has_agent(&AgentId(agent.to_owned())) {
            return Err(format!("hosts for agent {agent:?}, which has no token"));
        }
        let mut set = BTreeSet::new();
        for host in hosts {
            check_host_name(host)
                .map_err(|e| format!("host {host:.40?} of agent {agent:?}: {e}"))?;
            set.insert(host.to_owned());
        }
        if !set.is_empty() {
            self.hosts
                .entry(AgentId(agent.to_owned()))
                .or_default()
                .extend(set);
        }
        Ok(())
    }

    /// Whether `agent` has a token here.
    pub fn has_agent(&self, agent: &AgentId) -> bool {
        self.by_digest.values().any(|a| a == agent)
    }

    /// The host names `agent` was given; `None` when it was given none.
    pub fn hosts_of(&self, agent: &AgentId) -> Option<&BTreeSet<String>> {
        self.hosts.get(agent)
    }

    /// The agent that was given `host`, if any.
    pub fn agent_given(&self, host: &str) -> Option<&AgentId> {
        self.hosts
            .iter()
            .find(|(_, hosts)| hosts.contains(host))
            .map(|(agent, _)| agent)
    }

    /// Reads `AGENT-ID TOKEN [HOST,HOST...]` lines; blank lines and `#`
    /// comments are skipped. Without hosts, the agent is bound to the host
    /// name of its first batch.
    pub fn load_file(&mut self, path: &Path) -> Result<(), CollectorError> {
        let text = std::fs::read_to_string(path).map_err(|e| CollectorError::Config {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at_line = |reason: String| CollectorError::Config {
                path: path.to_owned(),
                reason: format!("line {}: {reason}", number + 1),
            };
            let mut fields = line.split_whitespace();
            let (Some(agent), Some(token), hosts, None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(at_line("expected `AGENT-ID TOKEN [HOST,HOST...]`".into()));
            };
            self.insert(agent, token).map_err(at_line)?;
            self.bind_hosts(agent, hosts.into_iter().flat_map(|h| h.split(',')))
                .map_err(at_line)?;
        }
        Ok(())
    }

    /// The agent a presented token belongs to.
    pub fn agent_for(&self, token: &str) -> Option<&AgentId> {
        self.by_digest.get(&Fingerprint::of(token.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_agents_and_bad_ones_are_refused() {
        let mut tokens = Tokens::default();
        tokens.insert("web1", "0123456789abcdef").unwrap();
        assert_eq!(tokens.agent_for("0123456789abcdef").unwrap().0, "web1");
        assert!(tokens.agent_for("0123456789abcdeF").is_none());
        assert!(tokens.insert("web 2", "0123456789abcdeX").is_err());
        assert!(tokens.insert("web2", "short").is_err());
        assert!(tokens.insert("syslog@x", "0123456789abcdeY").is_err());
        let err = tokens.insert("web3", "0123456789abcdef").unwrap_err();
        assert!(err.contains("same token"), "{err}");
    }

    #[test]
    fn a_bad_tokens_file_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "web1 0123456789abcdef\nweb2\n").unwrap();
        let err = Tokens::default().load_file(&path).unwrap_err().to_string();
        assert!(err.contains("tokens") && err.contains("line 2"), "{err}");
        std::fs::write(&path, "web1 0123456789abcdef web1,,x\n").unwrap();
        let err = Tokens::default().load_file(&path).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("1 to 253"), "{err}");
    }

    #[test]
    fn a_tokens_file_line_may_name_the_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(
            &path,
            "web1 0123456789abcdef\nws1 0123456789abcdeX ws1,ws1.lan\n",
        )
        .unwrap();
        let mut tokens = Tokens::default();
        tokens.load_file(&path).unwrap();
        let ws1 = tokens.agent_for("0123456789abcdeX").unwrap().clone();
        let hosts: Vec<&str> = tokens
            .hosts_of(&ws1)
            .unwrap()
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(hosts, ["ws1", "ws1.lan"]);
        assert!(tokens.hosts_of(&AgentId("web1".into())).is_none());
        assert_eq!(tokens.agent_given("ws1.lan"), Some(&ws1));
        let err = tokens.bind_hosts("nobody", ["h"]).unwrap_err();
        assert!(err.contains("no token"), "{err}");
    }
}
