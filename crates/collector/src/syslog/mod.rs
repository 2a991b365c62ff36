//! The syslog listener: tcpspy lines from hosts that still run tcpspy, and the
//! agent's own syslog output (tag `connscope`), received the way rsyslog and
//! `logger` send them.
//!
//! - Transports: UDP (one message per datagram) and TCP on the same port. TCP
//!   frames are octet-counted (`LEN SP MSG`, RFC 6587, rsyslog's
//!   `TCP_Framing="octet-counted"`) or newline-terminated (the traditional
//!   framing, `logger --tcp`); the first byte of each frame tells which.
//! - Formats: RFC 5424 (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`) and
//!   RFC 3164 (`<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG`, also with an RFC 3339
//!   time as rsyslog's high-precision templates write it). An RFC 3164 time
//!   has no year and no zone: it is read in the collector's time zone, in the
//!   year that puts it closest before now.
//! - Only messages whose program (tag / APP-NAME) is `tcpspy` or `connscope`
//!   are read, with `connscope_tcpspy_log`; everything else is counted and
//!   ignored. A tcpspy message that cannot be read is counted and logged with
//!   the reason, never stored half.
//!
//! Direction: tcpspy lines do not say who connected; the listener infers it
//! with the importer's rule ([`direction`]).
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

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connscope_event::{ConnectionEvent, Timestamp};
use connscope_store::{AgentId, EventKey, KeyedEvent, Store, StoreError};
use connscope_tcpspy_log::{ClassicTime, LogTime, Message, Origin, Parser};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};

mod direction;

use crate::config::SyslogLimits;
use crate::counters::Counters;
use crate::live::{IngestNotice, Notices};
use direction::{add_learned, learn_directions, Directions};

/// Longest message accepted (rsyslog's default maximum is 8 KiB).
const MAX_MESSAGE: usize = 64 * 1024;
/// Events are stored in batches of at most this many...
const BATCH_EVENTS: usize = 2000;
/// ...or after this long, whichever comes first.
const BATCH_DELAY: Duration = Duration::from_millis(100);

/// A syslog message as it came in.
struct Received {
    packet: Vec<u8>,
    peer: IpAddr,
    at: Timestamp,
}

/// The syslog envelope taken apart.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Envelope<'a> {
    pub host: Option<&'a str>,
    /// The program: RFC 3164 tag name or RFC 5424 APP-NAME.
    pub program: Option<&'a str>,
    pub time: EnvelopeTime,
    pub message: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnvelopeTime {
    Exact(Timestamp),
    Classic(ClassicTime),
    /// RFC 5424's nil time `-`: the time of receipt is used.
    Missing,
}

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
    shutdown: watch::Receiver<bool>,
) {
    let (tx, rx) = mpsc::channel::<Received>(10_000);
    let writer = tokio::spawn(write_events(rx, store, counters.clone(), notices));
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

async fn receive_udp(
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

async fn accept_tcp(
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
    stream: TcpStream,
    peer: IpAddr,
    limits: SyslogLimits,
    tx: mpsc::Sender<Received>,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let timed_out = |what: &str| io::Error::new(io::ErrorKind::TimedOut, what.to_owned());
    let mut reader = BufReader::new(stream);
    loop {
        let frame = tokio::select! {
            frame = async {
                tokio::time::timeout(limits.idle_timeout, reader.fill_buf())
                    .await
                    .map_err(|_| timed_out("idle too long"))??;
                tokio::time::timeout(limits.frame_timeout, read_frame(&mut reader))
                    .await
                    .map_err(|_| timed_out("a frame took too long"))?
            } => frame?,
            _ = shutdown.changed() => return Ok(()),
        };
        let Some(packet) = frame else { return Ok(()) };
        if tx
            .send(Received {
                packet,
                peer,
                at: Timestamp::now(),
            })
            .await
            .is_err()
        {
            return Ok(());
        }
    }
}

/// One frame: octet-counted when it starts with a digit, else up to a newline.
/// `None` at a clean end of stream.
async fn read_frame<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> io::Result<Option<Vec<u8>>> {
    loop {
        let first = match reader.fill_buf().await?.first() {
            None => return Ok(None),
            Some(b) => *b,
        };
        if first.is_ascii_digit() {
            let mut digits = Vec::new();
            (&mut *reader)
                .take(11)
                .read_until(b' ', &mut digits)
                .await?;
            let text = std::str::from_utf8(&digits).unwrap_or("").trim_end();
            let len: usize = text.parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad octet count {text:?}"),
                )
            })?;
            if len > MAX_MESSAGE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("message of {len} bytes is over the {MAX_MESSAGE}-byte limit"),
                ));
            }
            let mut packet = vec![0; len];
            reader.read_exact(&mut packet).await?;
            return Ok(Some(packet));
        }
        let mut line = Vec::new();
        (&mut *reader)
            .take(MAX_MESSAGE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if line.len() > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("line over the {MAX_MESSAGE}-byte limit"),
            ));
        }
        while matches!(line.last(), Some(b'\n' | b'\r' | b'\0')) {
            line.pop();
        }
        if !line.is_empty() {
            return Ok(Some(line));
        }
    }
}

/// Takes the syslog envelope apart. `Err` names what is wrong.
pub(crate) fn parse_envelope(packet: &[u8]) -> Result<Envelope<'_>, String> {
    let mut packet = packet;
    while let Some(rest) = packet
        .strip_suffix(b"\n")
        .or(packet.strip_suffix(b"\0"))
        .or(packet.strip_suffix(b"\r"))
    {
        packet = rest;
    }
    let rest = packet.strip_prefix(b"<").ok_or("no <PRI> at the start")?;
    let close = rest
        .iter()
        .take(4)
        .position(|b| *b == b'>')
        .ok_or("no > closing the <PRI>")?;
    // Facility and severity are not used, but a bad PRI means this is not syslog.
    std::str::from_utf8(&rest[..close])
        .ok()
        .and_then(|p| p.parse::<u8>().ok())
        .filter(|p| *p <= 191)
        .ok_or("PRI is not a number from 0 to 191")?;
    let body = &rest[close + 1..];
    match body.strip_prefix(b"1 ") {
        Some(after_version) => parse_rfc5424(after_version),
        None => parse_rfc3164(body),
    }
}

fn parse_rfc3164(body: &[u8]) -> Result<Envelope<'_>, String> {
    let line = connscope_tcpspy_log::parse_syslog_prefix(body).map_err(|e| e.to_string())?;
    Ok(Envelope {
        host: Some(line.host),
        program: line.tag.map(|t| t.name),
        time: match line.time {
            LogTime::Classic(t) => EnvelopeTime::Classic(t),
            LogTime::Rfc3339(t) => EnvelopeTime::Exact(t),
        },
        message: line.message,
    })
}

fn parse_rfc5424(body: &[u8]) -> Result<Envelope<'_>, String> {
    let mut at = 0;
    let mut field = |name: &str| -> Result<Option<&[u8]>, String> {
        let end = body[at..]
            .iter()
            .position(|b| *b == b' ')
            .map(|p| at + p)
            .ok_or_else(|| format!("RFC 5424 header ends before {name}"))?;
        let value = &body[at..end];
        at = end + 1;
        Ok((value != b"-").then_some(value))
    };
    let time = field("TIMESTAMP")?;
    let host = field("HOSTNAME")?;
    let app = field("APP-NAME")?;
    let _procid = field("PROCID")?;
    let _msgid = field("MSGID")?;
    fn text<'b>(v: Option<&'b [u8]>, name: &str) -> Result<Option<&'b str>, String> {
        v.map(|v| std::str::from_utf8(v).map_err(|_| format!("{name} is not UTF-8")))
            .transpose()
    }
    let time = match text(time, "TIMESTAMP")? {
        None => EnvelopeTime::Missing,
        Some(t) => EnvelopeTime::Exact(t.parse::<Timestamp>().map_err(|e| e.to_string())?),
    };
    let host = text(host, "HOSTNAME")?;
    let program = text(app, "APP-NAME")?;
    let after_sd = skip_structured_data(body, at)?;
    let mut message = body.get(after_sd..).unwrap_or_default();
    message = message.strip_prefix(b" ").unwrap_or(message);
    message = message.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(message);
    Ok(Envelope {
        host,
        program,
        time,
        message,
    })
}

/// Returns where STRUCTURED-DATA (`-` or `[id k="v"]...`) ends.
fn skip_structured_data(body: &[u8], start: usize) -> Result<usize, String> {
    match body.get(start) {
        Some(b'-') => return Ok(start + 1),
        Some(b'[') => {}
        None => return Ok(start),
        Some(_) => return Err("STRUCTURED-DATA is neither - nor [...]".into()),
    }
    let mut at = start;
    while body.get(at) == Some(&b'[') {
        let mut in_quotes = false;
        at += 1;
        loop {
            match body.get(at) {
                None => return Err("STRUCTURED-DATA has no closing ]".into()),
                Some(b'\\') if in_quotes => at += 2,
                Some(b'"') => {
                    in_quotes = !in_quotes;
                    at += 1;
                }
                Some(b']') if !in_quotes => {
                    at += 1;
                    break;
                }
                Some(_) => at += 1,
            }
        }
    }
    Ok(at)
}

/// A yearless local time, in the collector's zone and the year that puts it
/// at most a day after `now` (a log line from December read in January
/// belongs to last year).
pub(crate) fn resolve_classic(time: ClassicTime, now: Timestamp) -> Option<Timestamp> {
    let zone = jiff::tz::TimeZone::system();
    let now_zoned = now.to_jiff().to_zoned_datetime(zone.clone());
    // Fallible: the header allows any day 1 to 31 in any month (`Feb 30`).
    let at_year = |year: i16| {
        jiff::civil::DateTime::new(
            year,
            time.month as i8,
            time.day as i8,
            time.hour as i8,
            time.minute as i8,
            time.second.min(59) as i8,
            0,
        )
        .ok()?
        .to_zoned_datetime(zone.clone())
        .ok()
        .map(|z| Timestamp::from(z.timestamp()))
    };
    let year = now_zoned.year();
    let one_day = 86_400_000_000_000;
    match at_year(year) {
        Some(this_year) if this_year.as_nanos() <= now.as_nanos().saturating_add(one_day) => {
            Some(this_year)
        }
        // Later than now, or no such day this year (Feb 29).
        _ => at_year(year - 1),
    }
}

/// What one received message turned into.
enum Outcome {
    Event {
        host: String,
        event: Box<KeyedEvent>,
    },
    /// A tcpspy/connscope status message: nothing to store.
    Notice,
    Ignored,
    Unreadable(String),
}

fn interpret(parser: &mut Parser<'_>, directions: &mut Directions, received: &Received) -> Outcome {
    let envelope = match parse_envelope(&received.packet) {
        Ok(envelope) => envelope,
        // Not syslog at all: not ours to judge, like another program's line.
        Err(_) => return Outcome::Ignored,
    };
    let Some(origin) = envelope.program.and_then(Origin::from_tag) else {
        return Outcome::Ignored;
    };
    // An empty HOSTNAME says no more than a missing one: the sender's address.
    let host = envelope
        .host
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| received.peer.to_string());
    if let Err(reason) = crate::auth::check_host_name(&host) {
        return Outcome::Unreadable(format!("host {host:?}: {reason}"));
    }
    let timestamp = match envelope.time {
        EnvelopeTime::Exact(t) => t,
        EnvelopeTime::Missing => received.at,
        EnvelopeTime::Classic(c) => match resolve_classic(c, received.at) {
            Some(t) => t,
            None => return Outcome::Unreadable(format!("time {c} does not exist here")),
        },
    };
    match parser.parse_message(origin, envelope.message) {
        Ok(Message::Connection(c)) => {
            let mut event = c.to_event(timestamp, &host);
            let key = EventKey::of_event(&event);
            directions.infer(&mut event);
            Outcome::Event {
                event: Box::new(KeyedEvent {
                    key,
                    key_time: event.timestamp,
                    event,
                }),
                host,
            }
        }
        Ok(Message::Notice(_)) => Outcome::Notice,
        Err(e) => Outcome::Unreadable(format!("from {host}: {e}")),
    }
}

async fn write_events(
    mut rx: mpsc::Receiver<Received>,
    store: Arc<dyn Store>,
    counters: Arc<Counters>,
    notices: Notices,
) {
    let mut parser = Parser::default();
    let (mut directions, mut learning) = learn_directions(&store).await;
    let mut pending: BTreeMap<String, Vec<KeyedEvent>> = BTreeMap::new();
    let mut pending_count = 0;
    loop {
        let next = if pending_count == 0 {
            rx.recv().await
        } else {
            match tokio::time::timeout(BATCH_DELAY, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    flush(&mut pending, &store, &counters, &notices).await;
                    pending_count = 0;
                    continue;
                }
            }
        };
        let Some(received) = next else { break };
        add_learned(&mut directions, &mut learning);
        match interpret(&mut parser, &mut directions, &received) {
            Outcome::Event { host, event } => {
                pending.entry(host).or_default().push(*event);
                pending_count += 1;
            }
            Outcome::Notice => {}
            Outcome::Ignored => {
                counters.syslog_ignored.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Unreadable(reason) => {
                counters.syslog_unreadable.fetch_add(1, Ordering::Relaxed);
                let reason = crate::kit::cut_echo(reason);
                tracing::warn!(%reason, "unreadable tcpspy syslog message");
            }
        }
        if pending_count >= BATCH_EVENTS {
            flush(&mut pending, &store, &counters, &notices).await;
            pending_count = 0;
        }
    }
    flush(&mut pending, &store, &counters, &notices).await;
}

async fn flush(
    pending: &mut BTreeMap<String, Vec<KeyedEvent>>,
    store: &Arc<dyn Store>,
    counters: &Counters,
    notices: &Notices,
) {
    for (host, events) in std::mem::take(pending) {
        let agent = AgentId(format!("syslog@{host}"));
        let store = store.clone();
        let result = tokio::task::spawn_blocking(move || {
            let report = store.ingest_keyed(&agent, &events)?;
            let events: Vec<ConnectionEvent> = events.into_iter().map(|k| k.event).collect();
            let notice = IngestNotice::of("syslog", &agent.0, &events, &report);
            Ok::<_, StoreError>((report, notice))
        })
        .await;
        match result {
            Ok(Ok((report, notice))) => {
                if let Some(notice) = notice {
                    notices.publish(notice);
                }
                counters
                    .syslog_events_stored
                    .fetch_add(report.stored, Ordering::Relaxed);
                counters
                    .syslog_events_duplicate
                    .fetch_add(report.duplicates, Ordering::Relaxed);
            }
            Ok(Err(e)) => tracing::error!(%host, error = %e, "cannot store syslog events"),
            Err(e) => tracing::error!(%host, error = %e, "syslog store task failed"),
        }
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3164_as_logger_and_rsyslog_send_it() {
        let e = parse_envelope(b"<13>Nov 24 19:22:17 web1 tcpspy[812]: connect: user root, local 10.0.0.1:40000, remote 10.0.0.2:ssh\n").unwrap();
        assert_eq!(e.host, Some("web1"));
        assert_eq!(e.program, Some("tcpspy"));
        assert!(matches!(e.time, EnvelopeTime::Classic(c) if c.day == 24 && c.hour == 19));
        assert!(e.message.starts_with(b"connect: user root"));

        let e =
            parse_envelope(b"<86>2026-11-24T19:22:17.123456+01:00 db1 connscope: disconnect: x")
                .unwrap();
        assert_eq!((e.host, e.program), (Some("db1"), Some("connscope")));
        assert!(matches!(e.time, EnvelopeTime::Exact(_)));
    }

    #[test]
    fn rfc5424_with_and_without_structured_data() {
        let e = parse_envelope(
            b"<13>1 2026-11-24T19:22:17.000001Z web1 tcpspy 812 - [timeQuality tzKnown=\"1\" isSynced=\"0\"][x a=\"q\\]\"] \xEF\xBB\xBFconnect: hi",
        )
        .unwrap();
        assert_eq!((e.host, e.program), (Some("web1"), Some("tcpspy")));
        assert_eq!(e.message, b"connect: hi");
        assert_eq!(
            e.time,
            EnvelopeTime::Exact("2026-11-24T19:22:17.000001Z".parse().unwrap())
        );
        let e = parse_envelope(b"<13>1 - - sshd - - - hello").unwrap();
        assert_eq!(
            (e.host, e.program, e.time),
            (None, Some("sshd"), EnvelopeTime::Missing)
        );
        assert_eq!(e.message, b"hello");
        assert!(parse_envelope(b"<13>1 2026-11-24T19:22:17Z h a p m [open").is_err());
        assert!(parse_envelope(b"no pri").is_err());
        assert!(parse_envelope(b"<999>x").is_err());
    }

    #[test]
    fn classic_times_get_the_year_before_now() {
        let t = |month, day| ClassicTime {
            month,
            day,
            hour: 12,
            minute: 0,
            second: 0,
        };
        let now: Timestamp = "2027-01-15T00:00:00Z".parse().unwrap();
        let dec = resolve_classic(t(12, 20), now).unwrap();
        assert!(dec.to_string().starts_with("2026-12-2"), "{dec}");
        let jan = resolve_classic(t(1, 10), now).unwrap();
        assert!(jan.to_string().starts_with("2027-01-1"), "{jan}");
    }

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

    #[tokio::test]
    async fn frames_are_octet_counted_or_newline_terminated() {
        let data: &[u8] = b"11 <13>1 hello5 <1>x\n<13>plain line\r\n\n<14>last";
        let mut reader = BufReader::new(data);
        let mut frames = Vec::new();
        while let Some(frame) = read_frame(&mut reader).await.unwrap() {
            frames.push(String::from_utf8(frame).unwrap());
        }
        assert_eq!(
            frames,
            ["<13>1 hello", "<1>x\n", "<13>plain line", "<14>last"]
        );
        let mut bad = BufReader::new(&b"99999999 <1>x"[..]);
        assert!(read_frame(&mut bad).await.is_err());
    }
}
