//! Host groups on a real SQLite store: membership resolved from the hosts
//! and addresses seen in a range, bad definitions refused with what is
//! wrong, and suggestions from subnets, names and alike behaviour.

use connscope_event::test_support::EventBuilder;
use connscope_event::{ConnectionEvent, Direction, Timestamp};
use connscope_query::groups::{check_group, groups_by_host, members, parse_label, Membership};
use connscope_query::suggest::suggest;
use connscope_store::{AgentId, GroupKind, HostGroup, SqliteStore, Store, TimeRange};

const DAY: i64 = 86_400 * 1_000_000_000;
const T0: i64 = 1_795_478_400_000_000_000; // 2026-11-24T00:00:00Z

fn connect(host: &str, day: i64, dir: Direction, local: &str, remote: &str) -> ConnectionEvent {
    EventBuilder::connect(local, remote)
        .at_nanos(T0 + day * DAY + 3_600_000_000_000)
        .direction(dir)
        .host(host)
        .build()
}

/// Day 0: `ws-01` and `ws-02` (10.0.1.0/24) use `srv-db` (10.0.2.5) on
/// 5432 and 445; `lab1` and `lab2` (2001:db8:0:1::/64) talk to each other.
/// Day 1: `ws-03` (10.0.1.13), back from holiday, uses only 5432.
fn office(dir: &std::path::Path) -> SqliteStore {
    let store = SqliteStore::open(dir.join("office.db")).unwrap();
    let out = Direction::Outgoing;
    let inc = Direction::Incoming;
    let mut events = Vec::new();
    for (host, ip, day, ports) in [
        ("ws-01", "10.0.1.11", 0, &[5432, 445][..]),
        ("ws-02", "10.0.1.12", 0, &[5432, 445][..]),
        ("ws-03", "10.0.1.13", 1, &[5432][..]),
    ] {
        for &port in ports {
            let local = format!("{ip}:{}", 40000 + port % 1000);
            let remote = format!("10.0.2.5:{port}");
            events.push(connect(host, day, out, &local, &remote));
            events.push(connect("srv-db", day, inc, &remote, &local));
        }
    }
    events.push(connect(
        "lab1",
        0,
        out,
        "[2001:db8:0:1::5]:40000",
        "[2001:db8:0:1::6]:22",
    ));
    events.push(connect(
        "lab2",
        0,
        inc,
        "[2001:db8:0:1::6]:22",
        "[2001:db8:0:1::5]:40000",
    ));
    for host in ["ws-01", "ws-02", "ws-03", "srv-db", "lab1", "lab2"] {
        let own: Vec<_> = events.iter().filter(|e| e.host == host).cloned().collect();
        store.ingest(&AgentId(host.into()), &own).unwrap();
    }
    store
}

fn group(name: &str, kind: GroupKind, patterns: &[&str]) -> HostGroup {
    HostGroup {
        name: name.into(),
        kind,
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
        labels: vec![],
    }
}

fn day(from: i64, to: i64) -> TimeRange {
    TimeRange {
        from: Timestamp::from_nanos(T0 + from * DAY),
        to: Timestamp::from_nanos(T0 + to * DAY),
    }
}

fn membership(name: &str, hosts: &[&str], unseen: &[&str]) -> Membership {
    Membership {
        name: name.into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        unseen: unseen.iter().map(|h| h.to_string()).collect(),
    }
}

#[test]
fn members_are_the_hosts_seen_in_the_range_by_name_address_or_list() {
    let dir = tempfile::tempdir().unwrap();
    let store = office(dir.path());
    for g in [
        group("workstations", GroupKind::Names, &["ws-*"]),
        group("servers", GroupKind::Addresses, &["10.0.2.0/24"]),
        group("lab", GroupKind::Addresses, &["2001:db8:0:1::/64"]),
        group("office-net", GroupKind::Addresses, &["10.0.0.0/16"]),
        group("core", GroupKind::Hosts, &["srv-db", "gone", "lab2"]),
    ] {
        check_group(&g).unwrap();
        store.put_group(&g).unwrap();
    }
    let first_day = members(&store, day(0, 1)).unwrap();
    assert_eq!(
        first_day,
        [
            membership("workstations", &["ws-01", "ws-02"], &[]),
            membership("servers", &["srv-db"], &[]),
            membership("lab", &["lab1", "lab2"], &[]),
            membership("office-net", &["srv-db", "ws-01", "ws-02"], &[]),
            membership("core", &["lab2", "srv-db"], &["gone"]),
        ]
    );
    // ws-03 was away on day 0; over both days it is in.
    let both = members(&store, day(0, 2)).unwrap();
    assert_eq!(
        both[0],
        membership("workstations", &["ws-01", "ws-02", "ws-03"], &[])
    );
    // Only day 1: the lab was quiet, the explicit list says so.
    let second_day = members(&store, day(1, 2)).unwrap();
    assert_eq!(second_day[2], membership("lab", &[], &[]));
    assert_eq!(
        second_day[4],
        membership("core", &["srv-db"], &["gone", "lab2"])
    );

    // A host in several groups lists them in the order they were added.
    let by_host = groups_by_host(&first_day);
    assert_eq!(by_host["srv-db"], ["servers", "office-net", "core"]);
    assert_eq!(by_host["ws-01"], ["workstations", "office-net"]);
}

#[test]
fn bad_definitions_say_what_is_wrong() {
    let err = |g: HostGroup| check_group(&g).unwrap_err().to_string();
    assert_eq!(
        err(group("", GroupKind::Names, &["ws-*"])),
        "a group name must not be empty"
    );
    assert!(
        err(group("<b>ws</b>", GroupKind::Names, &["ws-*"])).contains("contains '<'"),
        "{}",
        err(group("<b>ws</b>", GroupKind::Names, &["ws-*"]))
    );
    let glob = err(group("ws", GroupKind::Names, &["ws-[0-9"]));
    assert!(
        glob.starts_with("name pattern \"ws-[0-9\" is not a valid glob"),
        "{glob}"
    );
    let cidr = err(group("n", GroupKind::Addresses, &["10.0.0.300/8"]));
    assert!(
        cidr.contains("\"10.0.0.300\" is not an IP address"),
        "{cidr}"
    );
    let cidr = err(group("n", GroupKind::Addresses, &["10.1.2.3/16"]));
    assert!(cidr.contains("did you mean 10.1.0.0/16?"), "{cidr}");
    let cidr = err(group("n", GroupKind::Addresses, &["2001:db8::/129"]));
    assert!(
        cidr.contains("prefix length \"129\" is not 0 to 128"),
        "{cidr}"
    );
    let cidr = err(group("n", GroupKind::Addresses, &["10.0.0.0"]));
    assert!(cidr.contains("no /prefix length"), "{cidr}");
    let host = err(group("h", GroupKind::Hosts, &["ws 1"]));
    assert!(host.contains("host name \"ws 1\" contains ' '"), "{host}");
    assert_eq!(
        err(group("e", GroupKind::Hosts, &[])),
        "group \"e\" has no hosts to match"
    );
    assert_eq!(
        parse_label("role").unwrap_err().to_string(),
        "label \"role\" is not key=value"
    );
    assert!(parse_label("role=<script>")
        .unwrap_err()
        .to_string()
        .contains("label value \"<script>\" contains '<'"));
    assert_eq!(
        parse_label("role=workstation").unwrap(),
        ("role".to_string(), "workstation".to_string())
    );
    // What passes.
    check_group(&group("ws.hq_1", GroupKind::Names, &["ws-?[0-9]*", "*.hq"])).unwrap();
    check_group(&group("v6", GroupKind::Addresses, &["::/0", "fd00::/8"])).unwrap();
}

#[test]
fn suggestions_come_from_subnets_names_and_alike_services_and_are_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = office(dir.path());
    let got: Vec<(String, GroupKind, Vec<String>, Vec<String>)> = suggest(&store, day(0, 2))
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.kind, s.patterns, s.hosts))
        .collect();
    let s = |name: &str, kind, patterns: &[&str], hosts: &[&str]| {
        (
            name.to_string(),
            kind,
            patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        got,
        [
            s(
                "net-10-0-1-0-24",
                GroupKind::Addresses,
                &["10.0.1.0/24"],
                &["ws-01", "ws-02", "ws-03"]
            ),
            s(
                "net-2001-db8-0-1---64",
                GroupKind::Addresses,
                &["2001:db8:0:1::/64"],
                &["lab1", "lab2"]
            ),
            s("lab", GroupKind::Names, &["lab*"], &["lab1", "lab2"]),
            s(
                "ws",
                GroupKind::Names,
                &["ws-*"],
                &["ws-01", "ws-02", "ws-03"]
            ),
            // ws-03 used only 5432: not alike.
            s(
                "alike-1",
                GroupKind::Hosts,
                &["ws-01", "ws-02"],
                &["ws-01", "ws-02"]
            ),
        ]
    );
    assert!(
        store.groups().unwrap().is_empty(),
        "suggesting stores nothing"
    );
    // A definition already stored is not suggested again.
    store
        .put_group(&group("workstations", GroupKind::Names, &["ws-*"]))
        .unwrap();
    let names: Vec<String> = suggest(&store, day(0, 2))
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(
        names,
        ["net-10-0-1-0-24", "net-2001-db8-0-1---64", "lab", "alike-1"]
    );
}
