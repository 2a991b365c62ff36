#![cfg(feature = "system-tests")] // root: a network namespace and packet sockets
//! The observer in a namespace of its own, fed real packets over loopback:
//! the kernel filter passes only answers arriving from port 53 and
//! ClientHellos leaving (counted packet by packet), on IPv4 and IPv6, and
//! what passes becomes names; a receive-only socket passes the answers alone.

use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use connscope_dns_observe::observer::own_netns;
use connscope_dns_observe::{NameCache, Namespaces, Observer, ObserverConfig};
use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("nao{tag}{}", std::process::id());
        assert!(Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success());
        let ns = Netns(name);
        let up = ["-n", &ns.0, "link", "set", "lo", "up"];
        assert!(Command::new("ip").args(up).status().unwrap().success());
        ns
    }

    fn inode(&self) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(self.path()).unwrap())
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }

    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(self.path()).unwrap();
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: a namespace fd; this thread only.
                    assert_eq!(
                        unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                        0
                    );
                    f()
                })
                .join()
                .unwrap()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn response(name: &str, data: RData) -> Vec<u8> {
    let name = Name::from_ascii(name).unwrap();
    let mut message = Message::query();
    message.metadata.message_type = MessageType::Response;
    message.add_query(Query::query(name.clone(), RecordType::A));
    message.add_answer(Record::from_rdata(name, 60, data));
    message.to_vec().unwrap()
}

/// The first flight of a real TLS client (rustls) asking for `name`.
fn client_hello(name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let server = name.to_owned().try_into().unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    hello
}

/// In `ns`, over loopback on IPv4 and IPv6: a query to port 53 and its
/// answer, an HTTP request and a ClientHello. Returns the TLS connections.
fn traffic(ns: &Netns) -> Vec<(SocketAddr, SocketAddr)> {
    ns.run(|| {
        let mut connections = Vec::new();
        for (server, answer) in [
            (
                "127.0.0.1",
                response("four.test.", RData::A(A(Ipv4Addr::new(192, 0, 2, 4)))),
            ),
            (
                "::1",
                response(
                    "six.test.",
                    RData::AAAA(AAAA(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 6))),
                ),
            ),
        ] {
            let dns = UdpSocket::bind((server, 53)).unwrap();
            let client = UdpSocket::bind((server, 0)).unwrap();
            // A query to port 53 must not pass; the answer from it must.
            client
                .send_to(b"query bytes", dns.local_addr().unwrap())
                .unwrap();
            let (_, from) = dns.recv_from(&mut [0u8; 512]).unwrap();
            dns.send_to(&answer, from).unwrap();
            client.recv(&mut [0u8; 512]).unwrap();

            let listener = TcpListener::bind((server, 0)).unwrap();
            let mut stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let _accepted = listener.accept().unwrap();
            stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            let mut tls = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let _accepted_tls = listener.accept().unwrap();
            tls.write_all(&client_hello(
                &format!("hello.{server}.test").replace(':', "x"),
            ))
            .unwrap();
            connections.push((tls.local_addr().unwrap(), tls.peer_addr().unwrap()));
        }
        connections
    })
}

/// Waits for the observer to count `answers` and `hellos`, then a little
/// longer for anything else the filter might let through.
fn wait_for(observer: &Observer, answers: u64, hellos: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while observer.stats().answers.load(Ordering::Relaxed) < answers
        || observer.stats().hellos.load(Ordering::Relaxed) < hellos
    {
        assert!(Instant::now() < deadline, "{:?}", observer.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
}

fn assert_answers_named(names: &mut NameCache, netns: u64) {
    let now = Instant::now();
    let four = names
        .name_of(netns, IpAddr::from([192, 0, 2, 4]), now)
        .unwrap();
    assert_eq!(&*four.asked, "four.test");
    let six: IpAddr = "2001:db8::6".parse().unwrap();
    assert_eq!(&*names.name_of(netns, six, now).unwrap().asked, "six.test");
    assert_eq!(names.name_of(own_netns().unwrap(), six, now), None);
}

#[test]
fn only_answers_and_client_hellos_pass_the_filter_and_become_names() {
    let ns = Netns::new("s");
    let config = ObserverConfig {
        namespaces: Namespaces::Inode(ns.inode()),
        ..ObserverConfig::default()
    };
    assert_ne!(ns.inode(), own_netns().unwrap());
    let observer = Observer::start(&config, None).unwrap();
    let connections = traffic(&ns);
    wait_for(&observer, 2, 2);
    assert_eq!(
        observer.stats().packets.load(Ordering::Relaxed),
        4,
        "two answers and two hellos, nothing else: {:?}",
        observer.stats()
    );
    let names = observer.names();
    let mut names = names.lock().unwrap();
    let netns = ns.inode();
    assert_answers_named(&mut names, netns);
    let now = Instant::now();
    let hellos: Vec<String> = connections
        .iter()
        .map(|(local, remote)| {
            names
                .sni_of(netns, *local, *remote, now)
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(hellos, ["hello.127.0.0.1.test", "hello.xx1.test"]);
}

/// The agent's mode with the eBPF backend: no packet sockets, the
/// ClientHellos the backend copied come in through the learner, and a cut
/// one names nothing.
#[test]
fn without_sockets_hellos_come_through_the_learner() {
    let config = ObserverConfig {
        packet_sockets: false,
        ..ObserverConfig::default()
    };
    let observer = Observer::start(&config, None).unwrap();
    let netns = own_netns().unwrap();
    let (local, remote) = (
        "10.9.0.1:40000".parse().unwrap(),
        "10.9.0.2:443".parse().unwrap(),
    );
    let learner = observer.hello_learner();
    let hello = client_hello("learned.test");
    learner.learn(netns, local, remote, &hello[..hello.len() - 1]);
    assert_eq!(
        observer.stats().hellos.load(Ordering::Relaxed),
        0,
        "a cut hello names nothing"
    );
    learner.learn(netns, local, remote, &hello);
    assert_eq!(observer.stats().hellos.load(Ordering::Relaxed), 1);
    assert_eq!(observer.stats().packets.load(Ordering::Relaxed), 0);
    let names = observer.names();
    let mut names = names.lock().unwrap();
    assert_eq!(
        names
            .sni_of(netns, local, remote, Instant::now())
            .as_deref(),
        Some("learned.test")
    );
}
