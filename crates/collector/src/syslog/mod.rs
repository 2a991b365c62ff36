//! The syslog listener: tcpspy lines from hosts that still run tcpspy, and the
//! agent's own syslog output (tag `connscope`), received the way rsyslog and
//! `logger` send them.
//!
//! - Transports: UDP (one message per datagram) and TCP on the same port. TCP
//!   frames are octet-counted (`LEN SP MSG`, RFC 6587, rsyslog's
//!   `TCP_Framing="octet-counted"`) or newline-terminated (the traditional
//!   framing, `logger --tcp`); the first byte of each frame tells which
//!   ([`framing`]).
//! - Formats: RFC 5424 and RFC 3164 ([`envelope`]). An RFC 3164 time has no
//!   year and no zone: it is read in the collector's time zone, in the year
//!   that puts it closest before now.
//! - Only messages whose program (tag / APP-NAME) is `tcpspy` or `connscope`
//!   are read, with `connscope_tcpspy_log`; everything else is counted and
//!   ignored. A tcpspy message that cannot be read is counted and logged with
//!   the reason, never stored half.
//!
//! Direction: tcpspy lines do not say who connected; the listener infers it
//! with the importer's rule (`direction`).
//!
//! Identity: the host is the HOSTNAME of the syslog header (the sender's IP
//! address when the header has none), and events are stored under the agent
//! id `syslog@HOST`. The lines carry no sequence number, so the store
//! identifies them by a hash of their content as read, before the direction
//! is inferred ([`connscope_store::EventKey::of_event`]): a message rsyslog
//! sends twice (it may resend after a reconnect) is stored once, even when
//! the evidence for its direction grew in between. Two genuinely distinct
//! events identical in every field — same second, same addresses and ports,
//! same process and user — would count as one; the local port of a new
//! connection makes that practically impossible.
//!
//! Senders are not authenticated, so TCP connections are limited
//! ([`SyslogLimits`]): a total and a per-address cap (a connection over
//! either is closed at once), an idle timeout, and a time limit for each
//! frame once it has begun. Idle connections cost a file handle each; without
//! the caps a thousand of them once took every handle the agents needed.
//!
//! The parts: [`framing`] and [`envelope`] are pure (fuzzed, `fuzz.rs` and
//! `fuzz/`); `connections` serves the sockets, `messages` turns what they
//! receive into stored events, and this module starts both.

mod connections;
mod direction;
pub mod envelope;
pub mod framing;
#[cfg(test)]
mod fuzz;
mod messages;
#[cfg(test)]
mod oracle;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use connscope_store::Store;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};

use crate::config::SyslogLimits;
use crate::counters::Counters;
use crate::drift::DriftCheck;
use crate::live::Notices;
use connections::{accept_tcp, receive_udp};
use messages::{write_events, Received};

/// Bound sockets, so a caller can learn the port before serving.
pub(crate) struct SyslogSockets {
    udp: UdpSocket,
    tcp: TcpListener,
    limits: SyslogLimits,
}

impl SyslogSockets {
    /// Binds TCP and UDP on the same address (on port 0, UDP takes the port
    /// the kernel gave TCP).
    pub async fn bind(addr: SocketAddr, limits: SyslogLimits) -> io::Result<SyslogSockets> {
        let tcp = TcpListener::bind(addr).await?;
        let udp = UdpSocket::bind(tcp.local_addr()?).await?;
        Ok(SyslogSockets { udp, tcp, limits })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Receives until `shutdown`, then stores what is pending and returns.
pub(crate) async fn serve(
    sockets: SyslogSockets,
    store: Arc<dyn Store>,
    counters: Arc<Counters>,
    notices: Notices,
    drift: DriftCheck,
    shutdown: watch::Receiver<bool>,
) {
    let (tx, rx) = mpsc::channel::<Received>(10_000);
    let writer = tokio::spawn(write_events(rx, store, counters.clone(), notices, drift));
    let udp = tokio::spawn(receive_udp(sockets.udp, tx.clone(), shutdown.clone()));
    let tcp = tokio::spawn(accept_tcp(
        sockets.tcp,
        sockets.limits,
        counters,
        tx,
        shutdown,
    ));
    let _ = udp.await;
    let _ = tcp.await;
    // Every sender is gone now, so the writer drains the channel and ends.
    let _ = writer.await;
}
