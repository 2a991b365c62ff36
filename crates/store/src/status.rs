//! Agent statuses put together from a backend's sequence spaces, drops and
//! downtime: the same rules (lost state, reused numbers) for every backend.

use std::collections::{HashMap, HashSet};

use connscope_event::Timestamp;

use crate::{AgentId, AgentStatus, SequenceRanges};

/// The statuses being put together, one per agent state, in the order
/// they are first met.
#[derive(Default)]
pub(crate) struct Statuses {
    pub(crate) list: Vec<AgentStatus>,
    /// Where each (agent, instance) is in `list`.
    index: HashMap<(String, String), usize>,
    /// The agents with a state in `list`.
    agents: HashSet<String>,
}

impl Statuses {
    /// The status of `name`'s state `instance`, begun if it is the first
    /// met: numbering from `first_sequence`, seen from and to `seen`. A new
    /// state of an agent met before that numbers from 1 lost its state.
    pub(crate) fn of(
        &mut self,
        name: &str,
        instance: &str,
        first_sequence: u64,
        seen: (Timestamp, Timestamp),
    ) -> &mut AgentStatus {
        let key = (name.to_owned(), instance.to_owned());
        let at = match self.index.get(&key) {
            Some(&at) => at,
            None => {
                let earlier = !self.agents.insert(name.to_owned());
                self.list.push(AgentStatus {
                    agent: AgentId(name.to_owned()),
                    instance: key.1.clone(),
                    lost_state: earlier && first_sequence == 1,
                    boots: 0,
                    reused: 0,
                    conflicts: 0,
                    first_sequence,
                    host: String::new(),
                    events: 0,
                    first_seen: seen.0,
                    last_seen: seen.1,
                    sequences: SequenceRanges::new(),
                    dropped: SequenceRanges::new(),
                    dropped_by_reason: Vec::new(),
                    downtime: Vec::new(),
                });
                self.index.insert(key, self.list.len() - 1);
                self.list.len() - 1
            }
        };
        &mut self.list[at]
    }

    /// The status of `name`'s state `instance`, if it was begun.
    pub(crate) fn get(&mut self, name: &str, instance: &str) -> Option<&mut AgentStatus> {
        let at = *self.index.get(&(name.to_owned(), instance.to_owned()))?;
        Some(&mut self.list[at])
    }
}
