//! Building flows in tests: one builder instead of a hand-written function
//! per test file. Only compiled with the `test-support` feature, which crates
//! enable in their dev-dependencies.
//!
//! ```
//! # use connscope_firewall::{test_support::FlowBuilder, FlowDirection};
//! let flow = FlowBuilder::new(FlowDirection::Inbound, "10.0.0.5", "10.1.2.3", 22)
//!     .connections(3)
//!     .processes(["/usr/sbin/sshd"])
//!     .build();
//! assert_eq!((flow.service_port, flow.connections), (22, 3));
//! ```

use std::net::IpAddr;

use connscope_event::{Protocol, Timestamp};

use crate::flow::{FlowDirection, ObservedFlow};

/// What a test may give as an address.
pub trait Address {
    fn ip(self) -> IpAddr;
}

impl Address for IpAddr {
    fn ip(self) -> IpAddr {
        self
    }
}

impl Address for &str {
    fn ip(self) -> IpAddr {
        self.parse()
            .unwrap_or_else(|_| panic!("{self:?} is not an IP address"))
    }
}

/// An [`ObservedFlow`] under construction: one TCP connection, seen at time
/// 0, owned by no known process or user, until told otherwise.
#[derive(Debug, Clone)]
pub struct FlowBuilder {
    flow: ObservedFlow,
}

impl FlowBuilder {
    pub fn new(
        direction: FlowDirection,
        local: impl Address,
        remote: impl Address,
        service_port: u16,
    ) -> FlowBuilder {
        FlowBuilder {
            flow: ObservedFlow {
                direction,
                protocol: Protocol::Tcp,
                local: local.ip(),
                remote: remote.ip(),
                service_port,
                connections: 1,
                first_seen: Timestamp::from_nanos(0),
                last_seen: Timestamp::from_nanos(0),
                processes: Vec::new(),
                users: Vec::new(),
            },
        }
    }

    pub fn protocol(mut self, protocol: Protocol) -> FlowBuilder {
        self.flow.protocol = protocol;
        self
    }

    pub fn connections(mut self, connections: u64) -> FlowBuilder {
        self.flow.connections = connections;
        self
    }

    /// First and last seen.
    pub fn seen(mut self, first: Timestamp, last: Timestamp) -> FlowBuilder {
        self.flow.first_seen = first;
        self.flow.last_seen = last;
        self
    }

    pub fn processes<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> FlowBuilder {
        self.flow.processes = names.into_iter().map(Into::into).collect();
        self
    }

    pub fn users<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> FlowBuilder {
        self.flow.users = names.into_iter().map(Into::into).collect();
        self
    }

    pub fn build(self) -> ObservedFlow {
        self.flow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_what_the_struct_literal_builds() {
        let by_hand = ObservedFlow {
            direction: FlowDirection::Outbound,
            protocol: Protocol::Udp,
            local: "2001:db8::1".parse().unwrap(),
            remote: "2001:db8::53".parse().unwrap(),
            service_port: 53,
            connections: 4,
            first_seen: Timestamp::from_nanos(10),
            last_seen: Timestamp::from_nanos(20),
            processes: vec!["/usr/bin/dig".into()],
            users: vec!["joe".into(), "root".into()],
        };
        let remote: IpAddr = "2001:db8::53".parse().unwrap();
        let built = FlowBuilder::new(FlowDirection::Outbound, "2001:db8::1", remote, 53)
            .protocol(Protocol::Udp)
            .connections(4)
            .seen(Timestamp::from_nanos(10), Timestamp::from_nanos(20))
            .processes(["/usr/bin/dig"])
            .users([String::from("joe"), String::from("root")])
            .build();
        assert_eq!(built, by_hand);
    }
}
