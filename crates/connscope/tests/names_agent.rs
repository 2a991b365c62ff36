#![cfg(feature = "system-tests")] // root: the eBPF agent and its packet sockets, network namespaces, dnsmasq, nft
//! The agent names remote ends from what the client namespace's processes
//! were told: real dnsmasq servers (a CNAME, a local stub on 127.0.0.53, a
//! record that changes), real `getent` and `curl`, a real TLS server reached
//! by address only, and the by-name nft sets filled by `--nft-name-sets` and
//! enforced by the kernel.

mod namespaces;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use connscope_event::{
    ConnectionEvent, Direction, EventKind, Family, NameSource, Protocol, RemoteName,
};
use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use namespaces::{run, unique_suffix, wait_for_or, JsonAgent, Netns, Proc};

const WAIT: Duration = Duration::from_secs(30);
const DNS: &str = "192.0.2.1";

/// A server namespace (DNS at 192.0.2.1, a web server on every address at
/// port 8080) and a client namespace (192.0.2.2) on one veth pair.
struct Lab {
    server: Netns,
    client: Netns,
    etc: PathBuf,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(nameserver: &str) -> Lab {
        Lab::with_resolv_conf(&format!("nameserver {nameserver}\n"))
    }

    fn with_resolv_conf(resolv_conf: &str) -> Lab {
        let suffix = unique_suffix();
        let server = Netns::new(format!("nas{suffix}"));
        let client = Netns::new(format!("nac{suffix}"));
        let ipn = |ns: &Netns, args: &[&str]| {
            run(Command::new("ip").args(["-n", &ns.0]).args(args));
        };
        ipn(
            &server,
            &[
                "link", "add", "s0", "type", "veth", "peer", "name", "c0", "netns", &client.0,
            ],
        );
        for address in [DNS, "192.0.2.3"] {
            ipn(
                &server,
                &["addr", "add", &format!("{address}/24"), "dev", "s0"],
            );
        }
        for last in 10..40 {
            ipn(
                &server,
                &["addr", "add", &format!("192.0.2.{last}/32"), "dev", "s0"],
            );
        }
        ipn(&server, &["link", "set", "s0", "up"]);
        ipn(&client, &["addr", "add", "192.0.2.2/24", "dev", "c0"]);
        ipn(&client, &["link", "set", "c0", "up"]);
        // `ip netns exec` mounts this over /etc/resolv.conf.
        let etc = PathBuf::from(format!("/etc/netns/{}", client.0));
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("resolv.conf"), resolv_conf).unwrap();
        let lab = Lab {
            server,
            client,
            etc,
            dir: tempfile::tempdir().unwrap(),
        };
        let listener = lab
            .server
            .within(|| TcpListener::bind("0.0.0.0:8080"))
            .unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
        });
        lab
    }

    /// dnsmasq serving `records` (dnsmasq options) on `listen` in `ns`.
    fn dnsmasq(&self, ns: &Netns, listen: &str, records: &[&str]) -> Proc {
        let mut command = ns.command("dnsmasq");
        command
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--no-hosts",
                "--pid-file=",
            ])
            .args(["--bind-interfaces", &format!("--listen-address={listen}")])
            .args(records)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Proc::spawn(command, "dnsmasq")
    }

    /// Resolves `name` in the client with getent, waiting for the server.
    fn getent(&self, name: &str) -> String {
        let mut answer = String::new();
        wait_for_or(&format!("getent ahosts {name}"), WAIT, String::new, || {
            let out = self
                .client
                .command("getent")
                .args(["ahosts", name])
                .output()
                .unwrap();
            answer = String::from_utf8_lossy(&out.stdout).into_owned();
            out.status.success()
        });
        answer
    }

    /// `curl URL ARGS` in the client: connect time in seconds, or the failure.
    fn curl(&self, url: &str, args: &[&str]) -> Result<f64, String> {
        let out = self
            .client
            .command("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "--connect-timeout",
                "3",
                "-w",
                "%{time_connect}",
            ])
            .args(args)
            .arg(url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        match out.status.success() {
            true => Ok(text.trim().parse().unwrap()),
            false => Err(format!("curl {url}: exit {:?}", out.status.code())),
        }
    }

    fn agent(&self, args: &[&str]) -> JsonAgent {
        self.agent_on("ebpf", args)
    }

    fn agent_on(&self, backend: &str, args: &[&str]) -> JsonAgent {
        let output = self.dir.path().join("events.jsonl");
        let stderr = self.dir.path().join("agent.stderr");
        let mut command = self.client.command(env!("CARGO_BIN_EXE_connscope"));
        command
            .args([
                "agent",
                "--no-default-rules",
                "--backend",
                backend,
                "--format",
                "json",
            ])
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .arg("--output")
            .arg(&output)
            .args(args);
        JsonAgent::start(command, output, stderr, WAIT)
    }
}

impl Lab {
    /// A by-name plan in the client: default-drop output, DNS and loopback
    /// allowed, port 8080 only to the addresses in the name sets `sets`.
    /// Loaded again, it replaces the table (new, empty sets).
    fn load_plan(&self, sets: &[String]) {
        let mut ruleset = String::from("table inet connscope {}\ndelete table inet connscope\n");
        ruleset += "table inet connscope {\n";
        for set in sets {
            ruleset += &format!("  set {set} {{ type ipv4_addr; flags timeout; }}\n");
        }
        ruleset += "  chain output {\n    type filter hook output priority 0; policy drop;\n";
        ruleset += "    oif \"lo\" accept\n    udp dport 53 accept\n    ct state established,related accept\n";
        for set in sets {
            ruleset += &format!("    ip daddr @{set} tcp dport 8080 accept\n");
        }
        ruleset += "  }\n}\n";
        let mut nft = self.client.command("nft");
        nft.args(["-f", "-"]).stdin(Stdio::piped());
        let mut child = nft.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ruleset.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "{ruleset}");
    }

    /// The elements of a name set in the client.
    fn set_elements(&self, set: &str) -> String {
        let out = self
            .client
            .command("nft")
            .args(["list", "set", "inet", "connscope", set])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

/// The name the agent gave the first outgoing connect to `remote`.
fn name_of_connect(agent: &JsonAgent, remote: &str) -> Option<RemoteName> {
    let remote: SocketAddr = remote.parse().unwrap();
    agent
        .first(&format!("the connect to {remote}"), WAIT, |e| {
            e.kind == EventKind::Connect && e.remote == remote
        })
        .remote_name
}

fn dns(name: &str) -> Option<RemoteName> {
    Some(RemoteName {
        name: name.into(),
        source: NameSource::Dns,
    })
}

#[test]
fn connections_are_named_after_the_name_asked_through_cname_chains() {
    let lab = Lab::new(DNS);
    let _dns = lab.dnsmasq(
        &lab.server,
        DNS,
        &[
            "--no-resolv",
            "--host-record=web.test,192.0.2.10",
            "--cname=www.test,web.test",
        ],
    );
    let agent = lab.agent(&[]);
    assert!(lab.getent("www.test").contains("192.0.2.10"));
    lab.curl("http://www.test:8080/", &[]).unwrap();
    assert_eq!(name_of_connect(&agent, "192.0.2.10:8080"), dns("www.test"));
    // An address asked for by no name stays unnamed (after its SNI wait).
    lab.curl("http://192.0.2.11:8080/", &[]).unwrap();
    assert_eq!(name_of_connect(&agent, "192.0.2.11:8080"), None);
}

/// The query getent sends to the lab's dnsmasq is a UDP flow like any other
/// (with `--udp`): under `ip netns exec`, whose fresh sysfs has no cgroup2
/// mounted, the agent mounts it for its UDP hooks rather than refusing to
/// start, and records the flow with its owner (its disconnect comes after the
/// flow's 60 s idle timeout).
#[test]
fn the_dns_query_itself_is_recorded_as_a_udp_flow() {
    let lab = Lab::new(DNS);
    let _dns = lab.dnsmasq(
        &lab.server,
        DNS,
        &["--no-resolv", "--host-record=flow.test,192.0.2.18"],
    );
    let agent = lab.agent(&["--udp"]);
    assert!(lab.getent("flow.test").contains("192.0.2.18"));
    let server: SocketAddr = format!("{DNS}:53").parse().unwrap();
    let mut connect = None;
    wait_for_or(
        "the DNS query's UDP flow",
        WAIT,
        || format!("{:#?}\n{}", agent.events(), agent.log()),
        || {
            connect = agent.events().into_iter().find(|e| {
                e.kind == EventKind::Connect && e.protocol == Protocol::Udp && e.remote == server
            });
            connect.is_some()
        },
    );
    let connect = connect.unwrap();
    assert_eq!(connect.direction, Direction::Outgoing);
    let comm = connect.process.as_ref().and_then(|p| p.comm.clone());
    assert_eq!(comm.as_deref(), Some("getent"), "{connect:#?}");
}

#[test]
fn answers_over_tcp_name_connections() {
    // glibc asks over TCP with `options use-vc`.
    let lab = Lab::with_resolv_conf(&format!("nameserver {DNS}\noptions use-vc\n"));
    let _dns = lab.dnsmasq(
        &lab.server,
        DNS,
        &["--no-resolv", "--host-record=tcp.test,192.0.2.17"],
    );
    // No UDP to port 53 at all: the answer can only come over TCP.
    let mut nft = lab.client.command("nft");
    nft.args(["add table inet no_udp_dns; add chain inet no_udp_dns out { type filter hook output priority 0; udp dport 53 drop; }"]);
    run(&mut nft);
    let agent = lab.agent(&[]);
    lab.getent("tcp.test");
    lab.curl("http://tcp.test:8080/", &[]).unwrap();
    assert_eq!(name_of_connect(&agent, "192.0.2.17:8080"), dns("tcp.test"));
}

/// A TCP answer from dnsmasq cut into segments of 36 bytes: the client
/// advertises an MSS of 48 and the server's link sends each segment as a
/// packet of its own (no GSO super-packet, which a packet socket would see
/// whole). The answer's CNAME and address reach the agent only reassembled.
#[test]
fn answers_split_across_tcp_segments_name_connections() {
    let lab = Lab::with_resolv_conf(&format!("nameserver {DNS}\noptions use-vc\n"));
    run(lab.client.command("ip").args([
        "route",
        "replace",
        "192.0.2.0/24",
        "dev",
        "c0",
        "advmss",
        "48",
    ]));
    run(lab
        .server
        .command("ip")
        .args(["link", "set", "s0", "gso_max_segs", "1"]));
    let _dns = lab.dnsmasq(
        &lab.server,
        DNS,
        &[
            "--no-resolv",
            "--host-record=split.test,192.0.2.19",
            "--cname=www.split.test,split.test",
        ],
    );
    let agent = lab.agent(&[]);
    assert!(lab.getent("www.split.test").contains("192.0.2.19"));
    lab.curl("http://www.split.test:8080/", &[]).unwrap();
    assert_eq!(
        name_of_connect(&agent, "192.0.2.19:8080"),
        dns("www.split.test")
    );
}

#[test]
fn answers_relayed_by_a_local_stub_name_connections() {
    let lab = Lab::new("127.0.0.53");
    let _dns = lab.dnsmasq(
        &lab.server,
        DNS,
        &["--no-resolv", "--host-record=stub.test,192.0.2.12"],
    );
    let _stub = lab.dnsmasq(
        &lab.client,
        "127.0.0.53",
        &["--no-resolv", &format!("--server={DNS}")],
    );
    let agent = lab.agent(&[]);
    lab.getent("stub.test");
    lab.curl("http://stub.test:8080/", &[]).unwrap();
    assert_eq!(name_of_connect(&agent, "192.0.2.12:8080"), dns("stub.test"));
    // The stub's answer over loopback came from the eBPF ingress hook, with
    // no packet socket open.
    assert!(
        agent.log().contains("name_packets_from")
            && agent.log().contains("\"the capture backend\""),
        "{}",
        agent.log()
    );
}

/// Where the eBPF hooks do not copy (here a polling backend), the packet
/// sockets see the stub's answers.
#[test]
fn answers_relayed_by_a_local_stub_name_connections_of_a_polling_backend() {
    let lab = Lab::new("127.0.0.53");
    let _dns = lab.dnsmasq(
        &lab.server,
        DNS,
        &["--no-resolv", "--host-record=polled.test,192.0.2.14"],
    );
    let _stub = lab.dnsmasq(
        &lab.client,
        "127.0.0.53",
        &["--no-resolv", &format!("--server={DNS}")],
    );
    let agent = lab.agent_on("sockdiag", &["-I", "20"]);
    lab.getent("polled.test");
    // Held open for a second (the server waits for a request that never
    // comes), so the poll sees it.
    let _ = lab
        .client
        .command("curl")
        .args(["-s", "--max-time", "1", "telnet://polled.test:8080"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        name_of_connect(&agent, "192.0.2.14:8080"),
        dns("polled.test")
    );
    assert!(
        agent.log().contains("name_packets_from") && agent.log().contains("\"the packet sockets\""),
        "{}",
        agent.log()
    );
}

#[test]
fn a_tls_server_reached_by_address_is_named_from_the_client_hello() {
    let lab = Lab::new(DNS);
    let (key, cert) = (
        lab.dir.path().join("key.pem"),
        lab.dir.path().join("cert.pem"),
    );
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=tls.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    let mut server = lab.server.command("openssl");
    server
        .args([
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            "192.0.2.13:8443",
            "-key",
        ])
        .arg(&key)
        .arg("-cert")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _server = Proc::spawn(server, "openssl s_server");
    let agent = lab.agent(&[]);
    let url = "https://tls.test:8443/";
    wait_for_or("the TLS server", WAIT, String::new, || {
        lab.curl(url, &["-k", "--resolve", "tls.test:8443:192.0.2.13"])
            .is_ok()
    });
    assert_eq!(
        name_of_connect(&agent, "192.0.2.13:8443"),
        Some(RemoteName {
            name: "tls.test".into(),
            source: NameSource::Sni
        })
    );
    // Through the veth from the eBPF egress hook, not a packet socket.
    assert!(
        agent.log().contains("name_packets_from")
            && agent.log().contains("\"the capture backend\""),
        "{}",
        agent.log()
    );
}

fn records_of(records: &[String]) -> Vec<&str> {
    records.iter().map(String::as_str).collect()
}

/// A hostile name: markup, a 63-byte label, non-ASCII and control bytes.
fn hostile_name() -> Name {
    let labels: [&[u8]; 4] = [
        b"<img src=x onerror=alert(1)>",
        &[b'x'; 63],
        "b\u{fc}cher\u{7}\n".as_bytes(),
        b"example",
    ];
    Name::from_labels(labels).unwrap()
}

/// Answers every query on 192.0.2.3:53 with `address` for the hostile name.
fn hostile_server(lab: &Lab, address: Ipv4Addr) {
    let socket = lab
        .server
        .within(|| UdpSocket::bind("192.0.2.3:53"))
        .unwrap();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 512];
        while let Ok((_, from)) = socket.recv_from(&mut buffer) {
            let mut answer = Message::query();
            answer.metadata.message_type = MessageType::Response;
            answer.add_query(Query::query(hostile_name(), RecordType::A));
            answer.add_answer(Record::from_rdata(hostile_name(), 30, RData::A(A(address))));
            let _ = socket.send_to(&answer.to_vec().unwrap(), from);
        }
    });
}

#[test]
fn name_sets_kept_by_the_agent_follow_a_moving_name_and_keep_unknown_names_out() {
    let lab = Lab::new(DNS);
    let racing: Vec<String> = (0..8).map(|i| format!("race{i}.test")).collect();
    let hostile_text = {
        let labels: Vec<String> = hostile_name()
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        labels.join(".")
    };
    let allowed: Vec<String> = ["moving.test", hostile_text.as_str()]
        .into_iter()
        .chain(racing.iter().map(String::as_str))
        .map(|name| connscope_names::name_set(name, Family::Ipv4))
        .collect();
    lab.load_plan(&allowed);

    let mut records = vec![
        "--no-resolv".to_owned(),
        "--host-record=moving.test,192.0.2.10".to_owned(),
        "--host-record=blocked.test,192.0.2.14".to_owned(),
    ];
    records.extend(
        racing
            .iter()
            .enumerate()
            .map(|(i, name)| format!("--host-record={name},192.0.2.{}", 20 + i)),
    );
    let server = lab.dnsmasq(&lab.server, DNS, &records_of(&records));
    let agent = lab.agent(&["--nft-name-sets"]);
    lab.getent("moving.test");

    // Resolved then connected at once by curl: every time, with the delay
    // of a first SYN lost to the race measured.
    let mut connect_times = Vec::new();
    for (i, name) in racing.iter().enumerate() {
        let seconds = lab
            .curl(&format!("http://{name}:8080/"), &[])
            .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
        connect_times.push(seconds);
        assert_eq!(
            name_of_connect(&agent, &format!("192.0.2.{}:8080", 20 + i)),
            dns(name)
        );
    }
    eprintln!("resolve-then-connect times (s): {connect_times:?}");

    lab.curl("http://moving.test:8080/", &[]).unwrap();
    server.stop();
    records[1] = "--host-record=moving.test,192.0.2.11".to_owned();
    let _server = lab.dnsmasq(&lab.server, DNS, &records_of(&records));
    wait_for_or("the new record", WAIT, String::new, || {
        lab.getent("moving.test").contains("192.0.2.11")
    });
    lab.curl("http://moving.test:8080/", &[]).unwrap();
    assert_eq!(
        name_of_connect(&agent, "192.0.2.11:8080"),
        dns("moving.test")
    );
    let unknown = lab.curl("http://blocked.test:8080/", &[]);
    assert!(unknown.is_err(), "an unknown name is blocked: {unknown:?}");

    // A hostile name fills its set through the same path, and is reported as
    // received.
    hostile_server(&lab, Ipv4Addr::new(192, 0, 2, 15));
    let connected = lab.client.within(|| {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.connect("192.0.2.3:53").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut query = Message::query();
        query.add_query(Query::query(hostile_name(), RecordType::A));
        socket.send(&query.to_vec().unwrap()).unwrap();
        socket.recv(&mut [0u8; 512]).unwrap();
        let start = Instant::now();
        TcpStream::connect_timeout(&"192.0.2.15:8080".parse().unwrap(), Duration::from_secs(5))
            .map(|_| start.elapsed())
    });
    let elapsed =
        connected.unwrap_or_else(|e| panic!("the hostile name's set: {e}\n{}", agent.log()));
    eprintln!("hostile name: connected after {elapsed:?}");
    assert_eq!(
        name_of_connect(&agent, "192.0.2.15:8080"),
        dns(&hostile_text)
    );
    assert!(
        !agent.log().contains("nft name sets: nft"),
        "{}",
        agent.log()
    );
}

/// Issue 18's acceptance end to end: the agent names what the client did,
/// the store keeps it, `firewall plan --outbound by-name` plans from the
/// store, the plan is loaded with `nft -f` in the client's namespace, and
/// the agent keeping its sets lets the client follow the name to its new
/// address while an unknown name stays blocked; `firewall check` of the
/// plan agrees with the kernel on the connections made under it.
#[test]
fn a_by_name_plan_from_the_store_follows_a_moving_name_with_the_agents_sets() {
    use connscope_firewall::by_name::{check_with_name_sets, plan_fleet_by_name};
    use connscope_firewall::from_store::{fleet_flows, name_set_members};
    use connscope_firewall::test_support::FlowBuilder;
    use connscope_firewall::{nft, render, ExactPlanner, FlowDirection, Outcome, PlanOptions};
    use connscope_query::naming::RemoteNames;
    use connscope_store::{AgentId, SqliteStore, Store, TimeRange};

    let lab = Lab::new(DNS);
    let mut records = vec![
        "--no-resolv".to_owned(),
        "--host-record=moving.test,192.0.2.10".to_owned(),
        "--host-record=blocked.test,192.0.2.14".to_owned(),
    ];
    let server = lab.dnsmasq(&lab.server, DNS, &records_of(&records));
    let store = SqliteStore::open(lab.dir.path().join("store.db")).unwrap();
    // The agent sees every namespace: only the client's events are its history.
    let inode = std::fs::metadata(format!("/run/netns/{}", lab.client.0))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    let ingest = |events: Vec<ConnectionEvent>| {
        let client: Vec<ConnectionEvent> =
            events.into_iter().filter(|e| e.netns == inode).collect();
        let host = client[0].host.clone();
        store.ingest(&AgentId(host), &client).unwrap();
    };

    // Learning: the agent names what the client does, without a firewall.
    let host = {
        let agent = lab.agent(&[]);
        lab.getent("moving.test");
        lab.curl("http://moving.test:8080/", &[]).unwrap();
        lab.curl("http://192.0.2.16:8080/", &[]).unwrap();
        assert_eq!(
            name_of_connect(&agent, "192.0.2.10:8080"),
            dns("moving.test")
        );
        assert_eq!(name_of_connect(&agent, "192.0.2.16:8080"), None);
        let events = agent.events();
        let host = events[0].host.clone();
        ingest(events);
        host
    };

    let fleet = fleet_flows(&store, TimeRange::ALL)
        .unwrap()
        .into_iter()
        .map(|(h, s)| (h, s.flows))
        .collect();
    let names = RemoteNames::load(&store, TimeRange::ALL).unwrap();
    let options = PlanOptions::default();
    let plans = plan_fleet_by_name(&ExactPlanner { options }, &fleet, &[], &names, options);
    let plan = &plans[&host];
    let named: Vec<&str> = plan.named_rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(named, ["moving.test"], "{plan:#?}");
    let text = render::nft(plan);
    let file = lab.dir.path().join("plan.nft");
    std::fs::write(&file, &text).unwrap();
    run(lab.client.command("nft").arg("-f").arg(&file));
    // The agent ran without `--udp`, so it recorded no flow of getent's and
    // curl's DNS queries to the lab's server (the plan has none): allowed by
    // hand, as an admin would review it, or nothing resolves under the plan.
    run(lab.client.command("nft").args([
        "add",
        "rule",
        "inet",
        "connscope",
        "output",
        "ip",
        "daddr",
        DNS,
        "udp",
        "dport",
        "53",
        "accept",
    ]));

    // Enforcing: the name moves; the agent keeps the sets.
    server.stop();
    records[1] = "--host-record=moving.test,192.0.2.11".to_owned();
    let _server = lab.dnsmasq(&lab.server, DNS, &records_of(&records));
    let agent = lab.agent(&["--nft-name-sets"]);
    wait_for_or("the new record", WAIT, String::new, || {
        lab.getent("moving.test").contains("192.0.2.11")
    });
    lab.curl("http://moving.test:8080/", &[])
        .unwrap_or_else(|e| {
            panic!(
                "the moved name must be reachable: {e}\n{text}\n{}",
                agent.log()
            )
        });
    lab.curl("http://192.0.2.16:8080/", &[])
        .expect("the literal address stays allowed");
    let unknown = lab.curl("http://blocked.test:8080/", &[]);
    assert!(unknown.is_err(), "an unknown name is blocked: {unknown:?}");
    assert_eq!(
        name_of_connect(&agent, "192.0.2.11:8080"),
        dns("moving.test")
    );
    ingest(agent.events());

    // The check of the plan as written, its name sets filled from the
    // store, agrees with what the kernel did.
    let written = nft::read_ruleset("plan.nft", &text).unwrap();
    let members = name_set_members(&store, &host, TimeRange::ALL).unwrap();
    let local: std::net::IpAddr = "192.0.2.2".parse().unwrap();
    let flow = |remote: &str| {
        FlowBuilder::new(FlowDirection::Outbound, local, remote, 8080)
            .seen(
                connscope_event::Timestamp::now(),
                connscope_event::Timestamp::now(),
            )
            .build()
    };
    let flows = [flow("192.0.2.11"), flow("192.0.2.16"), flow("192.0.2.14")];
    let outcomes: Vec<Outcome> = check_with_name_sets(&written, &flows, &members)
        .into_iter()
        .map(|v| v.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [Outcome::Allowed, Outcome::Allowed, Outcome::Blocked],
        "check agrees with the kernel"
    );
}

#[test]
fn a_plan_loaded_after_the_answers_gets_its_sets_filled_and_again_when_reloaded() {
    let lab = Lab::new(DNS);
    let _dns = lab.dnsmasq(
        &lab.server,
        DNS,
        &["--no-resolv", "--host-record=late.test,192.0.2.16"],
    );
    let agent = lab.agent(&["--nft-name-sets"]);
    // The application resolves before any plan is loaded ...
    lab.getent("late.test");
    let sets = [connscope_names::name_set("late.test", Family::Ipv4)];
    for load in ["loaded", "reloaded"] {
        // ... so the set is filled from the answer remembered, and the first
        // connect passes without waiting for a retransmission.
        lab.load_plan(&sets);
        wait_for_or(
            &format!("the {load} plan's set filled"),
            WAIT,
            || format!("{}\n{}", lab.set_elements(&sets[0]), agent.log()),
            || lab.set_elements(&sets[0]).contains("192.0.2.16"),
        );
        let seconds = lab.curl("http://192.0.2.16:8080/", &[]).unwrap();
        assert!(seconds < 0.5, "{load}: connected after {seconds} s");
    }
}
