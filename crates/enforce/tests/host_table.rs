#![cfg(feature = "system-tests")] // root: network namespaces and nftables

//! The enforcer on a host (a network namespace) with a table of its own:
//! every step (audit, enforce, a refused assignment, tamper restore, restart
//! from disk, break-glass and back, removal) leaves the host's table byte for
//! byte as it was, and connscope's table is restored when someone flushes,
//! edits or deletes it.

use std::path::Path;
use std::process::Command;

use connscope_enforce::{break_glass, glass_restored, EnforceConfig, EnforceError, Enforcer, Nft};
use connscope_policy::GoldenRules;
use connscope_protocol::policy::{
    AssignedPolicy, DirectionStage, FirewallState, StageMode, Staging,
};

/// A network namespace that exists while the value lives.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("csenf-{tag}-{}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]));
        Netns { name }
    }

    fn nft(&self) -> Nft {
        Nft::with_command(
            ["ip", "netns", "exec", &self.name, "nft"]
                .map(str::to_owned)
                .to_vec(),
        )
    }

    fn exec(&self, args: &[&str]) -> String {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args))
    }

    /// `nft list ruleset` without connscope's table: every other table.
    fn others(&self) -> String {
        self.exec(&["nft", "list", "tables"])
            .lines()
            .filter(|l| l.trim() != "table inet connscope")
            .map(|l| {
                let mut words = l.split_whitespace().skip(1);
                let (family, name) = (words.next().unwrap(), words.next().unwrap());
                self.exec(&["nft", "list", "table", family, name])
            })
            .collect()
    }

    fn ours(&self) -> Option<String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "nft",
                "-s",
                "list",
                "table",
                "inet",
                "connscope",
            ])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8(out.stdout).unwrap())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const POLICY: &str = r#"
format = 1
name = "ws"
target = { group = "ws" }

[[outbound]]
protocol = "tcp"
ports = [445]
peers = ["10.0.0.9"]
"#;

fn assignment(revision: u64, mode: StageMode) -> AssignedPolicy {
    let stage = DirectionStage {
        mode,
        except_ports: vec![],
    };
    AssignedPolicy {
        name: "ws".into(),
        version: 1,
        document: POLICY.into(),
        staging: Staging {
            inbound: stage.clone(),
            outbound: stage,
        },
        revision,
    }
}

fn enforcer(ns: &Netns, state: &Path) -> Enforcer {
    let config = EnforceConfig {
        host: "ws-01".into(),
        golden: GoldenRules {
            collectors: vec!["10.0.0.5:7443".parse().unwrap()],
            admin_networks: vec!["10.9.0.0/16".parse().unwrap()],
            ssh_ports: vec![],
        },
        log_group: 6470,
        nft: ns.nft(),
    };
    Enforcer::new(config, state)
}

fn kinds(enforcer: &mut Enforcer) -> Vec<String> {
    enforcer
        .take_notices()
        .into_iter()
        .map(|n| n.kind)
        .collect()
}

#[test]
fn the_host_table_survives_every_step_and_tampering_is_restored() {
    let state = tempfile::tempdir().unwrap();
    let ns = Netns::new("steps");
    ns.exec(&[
        "nft",
        "add table inet site; add chain inet site input { type filter hook input priority -10; policy accept; }; add rule inet site input tcp dport 9 counter drop comment \"site rule\"",
    ]);
    let site = ns.others();
    assert!(site.contains("site rule"), "{site}");

    let mut fw = enforcer(&ns, state.path());
    assert_eq!(fw.resume().unwrap(), None, "nothing kept yet");
    let preflight = fw.apply(&assignment(1, StageMode::Audit)).unwrap().unwrap();
    assert_eq!(
        preflight.conflicts.len(),
        1,
        "the site table can drop on input"
    );
    assert_eq!(kinds(&mut fw), ["conflict", "loaded"]);
    assert!(matches!(
        fw.state(),
        FirewallState::Loaded { revision: 1, .. }
    ));
    assert_eq!(ns.others(), site);
    assert_eq!(
        fw.apply(&assignment(1, StageMode::Audit)).unwrap(),
        None,
        "same assignment"
    );

    fw.apply(&assignment(2, StageMode::Enforce)).unwrap();
    assert_eq!(ns.others(), site);
    let loaded = ns.ours().unwrap();
    assert!(loaded.contains("group 6470 drop"), "{loaded}");
    let names: Vec<String> = fw.counters().unwrap().into_iter().map(|c| c.rule).collect();
    for name in [
        "golden:established",
        "golden:collector",
        "golden:ssh",
        "outbound[0]",
        "end:input",
        "end:output",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }

    // A refused assignment leaves the loaded table as it was.
    let mut broken = assignment(3, StageMode::Enforce);
    broken
        .document
        .push_str("[[outbound]]\nprotocol = \"tcp\"\nports = [70000]\n");
    assert!(matches!(
        fw.apply(&broken),
        Err(EnforceError::Policy { .. })
    ));
    assert!(matches!(fw.state(), FirewallState::Failed { .. }));
    assert_eq!(kinds(&mut fw), ["conflict", "loaded", "preflight-failed"]);
    assert_eq!(fw.apply(&broken).unwrap(), None, "not tried again");
    assert!(fw.take_notices().is_empty(), "nor reported again");
    assert_eq!(ns.ours().as_deref(), Some(loaded.as_str()));

    assert!(!fw.watch().unwrap(), "untouched");
    for tamper in [
        "flush table inet connscope",
        "add rule inet connscope output accept",
        "delete table inet connscope",
    ] {
        ns.exec(&["nft", tamper]);
        assert_ne!(ns.ours().as_deref(), Some(loaded.as_str()));
        assert!(fw.watch().unwrap(), "{tamper} is restored");
        assert_eq!(
            ns.ours().as_deref(),
            Some(loaded.as_str()),
            "after {tamper}"
        );
        assert_eq!(kinds(&mut fw), ["tampered"]);
        assert_eq!(ns.others(), site);
    }

    // A restart (the table gone with it): the assignment kept on disk loads.
    drop(fw);
    ns.exec(&["nft", "delete table inet connscope"]);
    let mut fw = enforcer(&ns, state.path());
    let kept = fw.resume().unwrap().unwrap();
    assert_eq!(kept.revision, 2);
    assert_eq!(ns.ours().as_deref(), Some(loaded.as_str()));
    let notices = fw.take_notices();
    assert!(
        notices
            .iter()
            .any(|n| n.detail.starts_with("kept from disk")),
        "{notices:?}"
    );

    // Break-glass: gone at once, not loaded again until lifted.
    break_glass(state.path(), &ns.nft(), "test").unwrap();
    assert_eq!(ns.ours(), None);
    assert!(!fw.watch().unwrap());
    assert_eq!(fw.state(), FirewallState::BrokenGlass);
    assert_eq!(kinds(&mut fw), ["broken-glass"]);
    assert!(matches!(
        fw.apply(&assignment(4, StageMode::Audit)),
        Err(EnforceError::BrokenGlass)
    ));
    assert_eq!(ns.ours(), None);
    assert!(glass_restored(state.path()).unwrap());
    fw.watch().unwrap();
    assert_eq!(
        ns.ours().as_deref(),
        Some(loaded.as_str()),
        "the kept assignment is back"
    );
    assert!(matches!(
        fw.state(),
        FirewallState::Loaded { revision: 2, .. }
    ));

    fw.remove().unwrap();
    assert_eq!(ns.ours(), None);
    assert_eq!(ns.others(), site);
}
