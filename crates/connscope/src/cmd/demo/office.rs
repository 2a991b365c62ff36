//! The demo's office: hosts as network namespaces on one bridge, and an
//! "internet" namespace behind a router, all made with `ip` and removed again.
//!
//! Nothing of it lives in the machine's own namespace: the bridge, the router
//! and every veth are inside the demo's namespaces, and the addresses are a
//! private /24, a ULA /64 and the documentation ranges for the outside world
//! (203.0.113.0/24, 198.51.100.0/24, 2001:db8::/32), so no packet of the demo
//! can reach a real network and two demos can use the same plan side by side.
//!
//! Names carry the demo's pid (`csdemo-PID-ws-1`). A demo holds a lock file
//! (`/run/connscope-demo/PID.lock`) for as long as it runs, so a later demo
//! tells a running demo's namespaces from a dead one's leftovers (a demo
//! killed with SIGKILL) and removes only the latter.

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Every name the demo gives a namespace starts with this.
pub const PREFIX: &str = "csdemo-";
/// Where running demos keep their lock files.
const LOCK_DIR: &str = "/run/connscope-demo";
/// `ip netns exec NS` mounts the files here over /etc (resolv.conf, hosts).
const NETNS_ETC: &str = "/etc/netns";

/// The office's DNS zone, served by the dns host.
pub const ZONE: &str = "office.lan";
/// The outside web server's name and addresses (TEST-NET-3, documentation).
pub const UPDATES_NAME: &str = "updates.example.net";
pub const UPDATES_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const UPDATES_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x443, 0, 0, 0, 0, 0x10);
/// The hidden flow's destination: an outside address no name points to.
pub const HIDDEN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const ROUTER_OUTSIDE_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const ROUTER_OUTSIDE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x443, 0, 0, 0, 0, 1);

/// What a monitored host of the office is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    Workstation,
    FileServer,
    WebServer,
    DnsServer,
    Printer,
}

/// One monitored host: a namespace with its own agent.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: &'static str,
    pub role: Role,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub netns: String,
}

impl Host {
    pub fn fqdn(&self) -> String {
        format!("{}.{ZONE}", self.name)
    }
}

/// The hosts of the office: name, role, last part of both addresses.
const PLAN: [(&str, Role, u8); 8] = [
    ("ws-1", Role::Workstation, 101),
    ("ws-2", Role::Workstation, 102),
    ("ws-3", Role::Workstation, 103),
    ("ws-4", Role::Workstation, 104),
    ("fs", Role::FileServer, 10),
    ("intranet", Role::WebServer, 20),
    ("dns", Role::DnsServer, 53),
    ("printer", Role::Printer, 30),
];

/// The office's hosts, their namespaces named with `prefix`.
pub fn plan(prefix: &str) -> Vec<Host> {
    PLAN.iter()
        .map(|&(name, role, last)| Host {
            name,
            role,
            v4: office_v4(last),
            v6: office_v6(last),
            netns: format!("{prefix}{name}"),
        })
        .collect()
}

pub fn office_v4(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 17, 0, last)
}

/// `fd00:17::101` for host .101: the same digits as IPv4, easy to match.
pub fn office_v6(last: u8) -> Ipv6Addr {
    let digits = u16::from_str_radix(&last.to_string(), 16).expect("decimal digits are hex");
    Ipv6Addr::new(0xfd00, 0x17, 0, 0, 0, 0, 0, digits)
}

/// The built office; dropping it removes its namespaces (with the bridge and
/// veths inside), their /etc files and the lock.
pub struct Office {
    pub prefix: String,
    pub hosts: Vec<Host>,
    pub router_netns: String,
    pub internet_netns: String,
    made: Vec<String>,
    lock_path: PathBuf,
    _lock: Flock<File>,
}

impl Office {
    /// Takes this demo's lock, then builds the office.
    pub fn build() -> Result<Office> {
        let pid = std::process::id();
        std::fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
        let lock_path = Path::new(LOCK_DIR).join(format!("{pid}.lock"));
        let lock = File::create(&lock_path)
            .with_context(|| format!("creating {}", lock_path.display()))?;
        let lock = Flock::lock(lock, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("locking {}", lock_path.display()))?;
        let prefix = format!("{PREFIX}{pid}-");
        let hosts = plan(&prefix);
        let mut office = Office {
            router_netns: format!("{prefix}router"),
            internet_netns: format!("{prefix}internet"),
            prefix,
            hosts,
            made: Vec::new(),
            lock_path,
            _lock: lock,
        };
        office.make_router()?;
        for host in office.hosts.clone() {
            office.make_host(&host)?;
        }
        office.make_internet()?;
        Ok(office)
    }

    pub fn dns(&self) -> &Host {
        self.with_role(Role::DnsServer)
    }

    pub fn with_role(&self, role: Role) -> &Host {
        with_role(&self.hosts, role)
    }

    pub fn workstations(&self) -> Vec<&Host> {
        workstations(&self.hosts)
    }

    fn add_netns(&mut self, name: &str) -> Result<()> {
        ip(&["netns", "add", name])?;
        self.made.push(name.to_owned());
        ip(&["-n", name, "link", "set", "lo", "up"])
    }

    /// The router: the office's bridge (gateway .1) and the uplink to the
    /// internet namespace, forwarding between them.
    fn make_router(&mut self) -> Result<()> {
        let ns = self.router_netns.clone();
        self.add_netns(&ns)?;
        ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", office_v4(1)),
            "dev",
            "br0",
        ])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/64", office_v6(1)),
            "dev",
            "br0",
            "nodad",
        ])?;
        ip(&["-n", &ns, "link", "set", "br0", "up"])?;
        run(Command::new("ip")
            .args(["netns", "exec", &ns, "sysctl", "-qw"])
            .args(["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]))
    }

    /// A host: a veth from the bridge, both addresses, default routes via
    /// the router, and DNS pointing at the office's server.
    fn make_host(&mut self, host: &Host) -> Result<()> {
        let ns = host.netns.clone();
        let router = self.router_netns.clone();
        self.add_netns(&ns)?;
        let port = format!("p-{}", host.name);
        ip(&[
            "-n", &router, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ])?;
        ip(&["-n", &router, "link", "set", &port, "master", "br0", "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", host.v4),
            "dev",
            "eth0",
        ])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/64", host.v6),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &office_v4(1).to_string(),
        ])?;
        ip(&[
            "-n",
            &ns,
            "-6",
            "route",
            "add",
            "default",
            "via",
            &office_v6(1).to_string(),
        ])?;
        let dns = self.dns();
        write_etc(
            &ns,
            &format!(
                "nameserver {}\nnameserver {}\nsearch {ZONE}\n",
                dns.v4, dns.v6
            ),
        )
    }

    /// The outside world: one namespace with the update server's addresses
    /// and the hidden flow's destination, reached through the router.
    fn make_internet(&mut self) -> Result<()> {
        let ns = self.internet_netns.clone();
        let router = self.router_netns.clone();
        self.add_netns(&ns)?;
        ip(&[
            "-n", &router, "link", "add", "uplink", "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ])?;
        ip(&[
            "-n",
            &router,
            "addr",
            "add",
            &format!("{ROUTER_OUTSIDE_V4}/24"),
            "dev",
            "uplink",
        ])?;
        ip(&[
            "-n",
            &router,
            "addr",
            "add",
            &format!("{ROUTER_OUTSIDE_V6}/64"),
            "dev",
            "uplink",
            "nodad",
        ])?;
        ip(&["-n", &router, "link", "set", "uplink", "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{UPDATES_V4}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{HIDDEN_V4}/32"),
            "dev",
            "eth0",
        ])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{UPDATES_V6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &ROUTER_OUTSIDE_V4.to_string(),
        ])?;
        ip(&[
            "-n",
            &ns,
            "-6",
            "route",
            "add",
            "default",
            "via",
            &ROUTER_OUTSIDE_V6.to_string(),
        ])?;
        ip(&[
            "-n",
            &router,
            "route",
            "add",
            &format!("{HIDDEN_V4}/32"),
            "via",
            &UPDATES_V4.to_string(),
        ])?;
        write_etc(&ns, "")
    }
}

/// The first host of `role` (the plan has every role).
pub fn with_role(hosts: &[Host], role: Role) -> &Host {
    hosts
        .iter()
        .find(|h| h.role == role)
        .expect("the plan has every role")
}

pub fn workstations(hosts: &[Host]) -> Vec<&Host> {
    hosts
        .iter()
        .filter(|h| h.role == Role::Workstation)
        .collect()
}

impl Drop for Office {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            remove_netns(ns);
        }
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// `/etc/netns/NS/resolv.conf` (the given servers; none for "") and an
/// `/etc/hosts` of loopback only, so names come from the office's DNS.
fn write_etc(ns: &str, resolv: &str) -> Result<()> {
    let dir = Path::new(NETNS_ETC).join(ns);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("resolv.conf"), resolv)
        .and_then(|()| std::fs::write(dir.join("hosts"), "127.0.0.1 localhost\n::1 localhost\n"))
        .with_context(|| format!("writing {}", dir.display()))
}

/// Stops what still runs in `ns` (only the demo's processes run there),
/// deletes it and its /etc files.
fn remove_netns(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
    let _ = std::fs::remove_dir_all(Path::new(NETNS_ETC).join(ns));
}

/// Removes the namespaces (and /etc/netns files) of demos that no longer
/// run: those whose lock file is gone or no longer held. Returns the pids of
/// the demos cleaned up.
pub fn remove_stale() -> Result<Vec<u32>> {
    let mut by_pid: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
    for dir in ["/run/netns", NETNS_ETC] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(PREFIX)
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
            else {
                continue;
            };
            by_pid.entry(pid).or_default().push(name);
        }
    }
    let mut removed = Vec::new();
    for (pid, mut namespaces) in by_pid {
        if pid == std::process::id() || is_running(pid)? {
            continue;
        }
        namespaces.sort();
        namespaces.dedup();
        for ns in &namespaces {
            remove_netns(ns);
        }
        let _ = std::fs::remove_file(Path::new(LOCK_DIR).join(format!("{pid}.lock")));
        removed.push(pid);
    }
    Ok(removed)
}

/// Whether the demo of `pid` still holds its lock.
fn is_running(pid: u32) -> Result<bool> {
    let path = Path::new(LOCK_DIR).join(format!("{pid}.lock"));
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => Ok(false),
        Err((_, Errno::EWOULDBLOCK)) => Ok(true),
        Err((_, e)) => Err(e).with_context(|| format!("checking the lock {}", path.display())),
    }
}

fn ip(args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(args))
}

fn run(command: &mut Command) -> Result<()> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_has_every_role_unique_names_and_addresses_in_the_office_networks() {
        let hosts = plan("csdemo-1-");
        for role in [
            Role::FileServer,
            Role::WebServer,
            Role::DnsServer,
            Role::Printer,
        ] {
            assert_eq!(with_role(&hosts, role).role, role);
        }
        assert_eq!(workstations(&hosts).len(), 4);
        let names: std::collections::BTreeSet<_> = hosts.iter().map(|h| h.name).collect();
        let v4: std::collections::BTreeSet<_> = hosts.iter().map(|h| h.v4).collect();
        assert_eq!((names.len(), v4.len()), (hosts.len(), hosts.len()));
        let ws1 = &hosts[0];
        assert_eq!(
            (ws1.netns.as_str(), ws1.v4.to_string(), ws1.v6.to_string()),
            ("csdemo-1-ws-1", "10.17.0.101".into(), "fd00:17::101".into())
        );
        for host in &hosts {
            assert!(host.v4.octets()[..3] == [10, 17, 0] && host.v4 != office_v4(1));
            assert_eq!(host.v6.segments()[..4], [0xfd00, 0x17, 0, 0]);
        }
    }
}
