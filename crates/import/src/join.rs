//! Disconnects joined with their connects, per host and 4-tuple: a joined
//! disconnect carries the connection's duration, and its connect's process
//! when it names none (tcpspy often logs `proc (unknown)` on disconnect, the
//! process being gone).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use connscope_event::{ConnectionEvent, EventKind, ProcessInfo, Timestamp};

use crate::hash::FastHash;

/// Per host, connects waiting for their disconnect.
#[derive(Default)]
pub(crate) struct OpenConnections {
    by_host: HashMap<String, HostConnections, FastHash>,
}

/// (local, remote) -> when it was opened and by which process.
type HostConnections =
    HashMap<(SocketAddr, SocketAddr), (Timestamp, Option<Arc<ProcessInfo>>), FastHash>;

impl OpenConnections {
    /// Remembers connects and gives disconnects their duration (and their
    /// connect's process when they name none); true when a disconnect found
    /// its connect.
    pub(crate) fn join(&mut self, event: &mut ConnectionEvent) -> bool {
        if !self.by_host.contains_key(&event.host) {
            self.by_host.insert(event.host.clone(), HashMap::default());
        }
        let open = self
            .by_host
            .get_mut(&event.host)
            .expect("inserted above when missing");
        let key = (event.local, event.remote);
        match event.kind {
            EventKind::Connect => {
                open.insert(key, (event.timestamp, event.process.clone()));
                false
            }
            EventKind::Disconnect => match open.remove(&key) {
                Some((opened, process)) => {
                    if let Some(close) = &mut event.close {
                        close.duration_ns = event.timestamp.nanos_since(opened);
                    }
                    if event.process.is_none() {
                        event.process = process;
                    }
                    true
                }
                None => false,
            },
            EventKind::ConnectFailed | EventKind::WouldBlock | EventKind::Blocked => false,
        }
    }
}
