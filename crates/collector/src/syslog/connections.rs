//! The listener's sockets at work: UDP datagrams, and TCP connections under
//! the caps and timeouts of [`SyslogLimits`] (senders are not authenticated).
//! Each message goes to the writer ([`super::messages`]) as it came in.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connscope_event::Timestamp;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::framing::{split_frame, FramingError, MAX_MESSAGE};
use super::messages::Received;
use crate::config::SyslogLimits;
use crate::counters::Counters;

pub(super) async fn receive_udp(
    socket: UdpSocket,
    tx: mpsc::Sender<Received>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, peer)) => {
                    let message = Received { packet: buf[..len].to_vec(), peer: peer.ip(), at: Timestamp::now() };
                    if tx.send(message).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "syslog UDP receive failed"),
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// The open syslog TCP connections, in total and per source address.
#[derive(Debug)]
struct ConnectionSlots {
    limits: SyslogLimits,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One taken slot, given back on drop.
struct Slot {
    slots: Arc<ConnectionSlots>,
    peer: IpAddr,
}

impl ConnectionSlots {
    /// A slot for a connection from `peer`, if both caps allow one more.
    fn take(self: &Arc<Self>, peer: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by_peer) = &mut *open;
        let from_peer = by_peer.entry(peer).or_default();
        if *total >= self.limits.max_connections || *from_peer >= self.limits.max_per_source {
            if *from_peer == 0 {
                by_peer.remove(&peer);
            }
            return None;
        }
        *total += 1;
        *from_peer += 1;
        Some(Slot {
            slots: self.clone(),
            peer,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, by_peer) = &mut *open;
        *total -= 1;
        if let Some(n) = by_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                by_peer.remove(&self.peer);
            }
        }
    }
}

pub(super) async fn accept_tcp(
    listener: TcpListener,
    limits: SyslogLimits,
    counters: Arc<Counters>,
    tx: mpsc::Sender<Received>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(ConnectionSlots {
        limits,
        open: Mutex::default(),
    });
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(slot) = slots.take(peer.ip()) else {
                        // Dropping the stream closes it: the sender sees the
                        // refusal and may retry later.
                        counters.syslog_connections_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "syslog TCP connection over the cap, closed");
                        continue;
                    };
                    let (tx, shutdown, counters) = (tx.clone(), shutdown.clone(), counters.clone());
                    connections.spawn(async move {
                        let _slot = slot;
                        match read_tcp(stream, peer.ip(), limits, tx, shutdown).await {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                                counters.syslog_connections_timed_out.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(%peer, error = %e, "syslog TCP connection timed out");
                            }
                            Err(e) => tracing::info!(%peer, error = %e, "syslog TCP connection closed"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "syslog TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    while connections.join_next().await.is_some() {}
}

/// Reads frames from one TCP sender until it closes or the collector stops.
/// A connection that idles past `limits.idle_timeout`, or takes longer than
/// `limits.frame_timeout` for a frame it has begun, ends with `TimedOut`.
async fn read_tcp(
    mut stream: TcpStream,
    peer: IpAddr,
    limits: SyslogLimits,
    tx: mpsc::Sender<Received>,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    // Received bytes; those before `done` are framed and sent.
    let (mut received, mut done) = (Vec::new(), 0);
    // A default `BufReader`'s size: many connections may sit idle.
    let mut chunk = vec![0u8; 8 * 1024];
    // When the frame being read began; `None` between frames (idle).
    let mut frame_began: Option<Instant> = None;
    let mut at_end = false;
    loop {
        let split = split_frame(&received[done..], at_end).map_err(framing_error)?;
        let packet = split.frame.map(<[u8]>::to_vec);
        done += split.used;
        if let Some(packet) = packet {
            frame_began = (done < received.len()).then(Instant::now);
            let message = Received {
                packet,
                peer,
                at: Timestamp::now(),
            };
            if tx.send(message).await.is_err() {
                return Ok(());
            }
            continue;
        }
        if at_end {
            return Ok(());
        }
        // Moved once per read, not once per frame.
        received.drain(..done);
        done = 0;
        let (deadline, what) = match frame_began {
            Some(began) => (began + limits.frame_timeout, "a frame took too long"),
            None => (Instant::now() + limits.idle_timeout, "idle too long"),
        };
        let read = tokio::select! {
            read = tokio::time::timeout_at(deadline, stream.read(&mut chunk)) => read
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, what))??,
            _ = shutdown.changed() => return Ok(()),
        };
        if read == 0 {
            at_end = true;
        } else {
            received.extend_from_slice(&chunk[..read]);
            frame_began.get_or_insert_with(Instant::now);
        }
    }
}

fn framing_error(e: FramingError) -> io::Error {
    let kind = match e {
        FramingError::Truncated => io::ErrorKind::UnexpectedEof,
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_slots_hold_both_caps_and_come_back() {
        let slots = Arc::new(ConnectionSlots {
            limits: SyslogLimits {
                max_connections: 3,
                max_per_source: 2,
                ..crate::config::DEFAULT_SYSLOG_LIMITS
            },
            open: Mutex::default(),
        });
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        );
        let a1 = slots.take(a).unwrap();
        let _a2 = slots.take(a).unwrap();
        assert!(slots.take(a).is_none(), "per-source cap");
        let _b1 = slots.take(b).unwrap();
        assert!(slots.take(c).is_none(), "total cap");
        drop(a1);
        let _c1 = slots.take(c).unwrap();
        assert!(slots.take(a).is_none());
        let open = slots.open.lock().unwrap();
        assert_eq!(open.0, 3);
        assert_eq!(open.1.len(), 3, "{:?}", open.1);
    }
}
