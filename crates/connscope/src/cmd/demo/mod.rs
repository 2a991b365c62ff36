//! `connscope demo`: a small office on one machine, so the first map a
//! newcomer sees has groups, services and something unexpected to find.
//!
//! The office is real: hosts are network namespaces on a bridge
//! ([`office`]), with real servers in them ([`services`]: dnsmasq, a file
//! share, a dual-stack intranet server, a printer, an outside HTTPS server),
//! real clients on a schedule ([`traffic`]), and one connscope agent per host
//! shipping to one collector ([`monitor`]). This file runs them in order,
//! prints what was built and what was stored, and takes everything down again
//! on Ctrl-C, SIGTERM, an error or the end of `--duration`.

mod child;
mod monitor;
mod office;
mod services;
mod traffic;

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use connscope_query::join::load_edges;
use connscope_query::report::{edges_report, Format};
use connscope_store::{SqliteStore, TimeRange};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use office::{Office, HIDDEN_V4, UPDATES_NAME, UPDATES_V4, UPDATES_V6, ZONE};

#[derive(Args)]
pub struct DemoArgs {
    /// Directory for the demo's store, certificate, agents' state and the
    /// servers' files; one running demo per directory.
    #[arg(long, value_name = "DIR", default_value = "/tmp/connscope-demo")]
    dir: PathBuf,
    /// Address of the collector (HTTPS API and map).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Stop after this many seconds (0: run until Ctrl-C).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    duration: u64,
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the demo makes network namespaces and its agents load eBPF programs: run it as root"
    );
    child::stop_on_signals()?;
    check_programs()?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let _dir_lock = lock_dir(&args.dir)?;
    let removed = office::remove_stale()?;
    if !removed.is_empty() {
        println!("== Removed the leftovers of demos that no longer run (pids {removed:?})");
    }
    let exe = std::env::current_exe().context("finding the connscope binary")?;
    let db = args.dir.join("connscope.db");

    let office = Office::build()?;
    let mut servers = services::start(&office, &args.dir)?;
    print_office(&office);
    let groups = monitor::write_groups(&db, &office)?;
    let tokens = monitor::random_tokens(office.hosts.len())?;
    let collector = monitor::start_collector(&exe, &db, args.listen, &office, &tokens)?;
    println!("== Collector: {}, store {}", collector.url, db.display());
    let mut agents = monitor::start_agents(&exe, &args.dir, &office, &collector, &tokens)?;
    println!(
        "== Agents: one per host (eBPF, --netns of its namespace), all capturing; state in {}",
        args.dir.join("agents").display()
    );
    println!(
        "== Host groups in the store: {}",
        groups
            .iter()
            .map(|g| format!("{} ({})", g.name, g.patterns.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    );

    println!("== The office's day, on a schedule:");
    for line in traffic::describe() {
        println!("   {line}");
    }
    let mut traffic = traffic::Traffic::default();
    let started = Instant::now();
    let mut next_tick = Instant::now();
    let mut printed = false;
    while !child::stop_requested()
        && (args.duration == 0 || started.elapsed() < Duration::from_secs(args.duration))
    {
        if Instant::now() >= next_tick {
            traffic.tick(&office)?;
            next_tick += Duration::from_secs(1);
        }
        if !printed && started.elapsed() >= Duration::from_secs(12) {
            print_first_edges(&db, &args, &collector)?;
            printed = true;
        }
        for child in servers.iter_mut().chain(agents.iter_mut()) {
            if !child.running() && !child::stop_requested() {
                bail!("{} stopped (see its messages above)", child.what());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("== Stopping: clients and servers, then the agents (they flush), then the collector.");
    traffic.stop();
    child::stop_all(&mut servers);
    child::stop_all(&mut agents);
    drop(collector);
    drop(office);
    println!(
        "== Stopped; the office's namespaces are removed. The store stays: {}",
        db.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The programs the office runs, with the Debian package of each.
const PROGRAMS: [(&str, &str); 7] = [
    ("ip", "iproute2"),
    ("dnsmasq", "dnsmasq-base"),
    ("python3", "python3"),
    ("openssl", "openssl"),
    ("curl", "curl"),
    ("tar", "tar"),
    ("timeout", "coreutils"),
];

/// Names every missing program at once, before anything is built.
fn check_programs() -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<String> = PROGRAMS
        .iter()
        .filter(|(program, _)| !std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        .map(|(program, package)| format!("{program} (Debian package {package})"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the demo's office needs {} in PATH: scripts/dev-setup installs them",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Takes `DIR/demo.lock` (holding our pid) for as long as the demo runs: two
/// demos on one store and one set of agent state directories would collide.
fn lock_dir(dir: &Path) -> Result<Flock<File>> {
    let path = dir.join("demo.lock");
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            bail!(
                "another connscope demo (pid {}) is running with --dir {}: stop it, or give this one another --dir and --listen",
                pid.trim(),
                dir.display()
            );
        }
        Err((_, e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
    };
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(file)
}

fn print_office(office: &Office) {
    println!(
        "== The office: namespaces {}*, bridge br0 in {} (10.17.0.0/24, fd00:17::/64), DNS zone {ZONE}",
        office.prefix, office.router_netns
    );
    println!("   {:<9} {:<15} {:<14} runs", "host", "IPv4", "IPv6");
    for host in &office.hosts {
        let runs = match host.role {
            office::Role::Workstation => "workstation (curl, bash)".to_owned(),
            office::Role::FileServer => format!("file share, tcp {}", services::SHARE_PORT),
            office::Role::WebServer => format!(
                "intranet web server, [::]:{} for IPv4 and IPv6",
                services::WEB_PORT
            ),
            office::Role::DnsServer => format!("dnsmasq for {ZONE}, udp and tcp 53"),
            office::Role::Printer => format!(
                "printer, raw {} and IPP {}",
                services::RAW_PRINT_PORT,
                services::IPP_PORT
            ),
        };
        println!("   {:<9} {:<15} {:<14} {runs}", host.name, host.v4, host.v6);
    }
    println!(
        "   {:<9} {:<15} {:<14} outside: {UPDATES_NAME} (https {}), and {HIDDEN_V4} (tcp {}), no agent",
        "internet",
        UPDATES_V4,
        UPDATES_V6,
        services::HTTPS_PORT,
        services::HIDDEN_PORT
    );
}

/// What the store holds so far, as `connscope report edges` prints it, then
/// where to look next.
fn print_first_edges(db: &Path, args: &DemoArgs, collector: &monitor::Collector) -> Result<()> {
    let store = SqliteStore::open(db).context("opening the demo store")?;
    let edges = load_edges(&store, TimeRange::ALL)?;
    println!("== What the collector stored so far ({}):", db.display());
    print!("{}", edges_report(&edges).render(Format::Table));
    println!();
    println!("The map:       https://{}/", args.listen);
    println!(
        "Certificate:   self-signed, fingerprint {}",
        collector.fingerprint
    );
    println!(
        "Reports:       connscope report edges --db {}   (also: hosts, ports)",
        db.display()
    );
    println!("Groups:        connscope groups list --db {}", db.display());
    println!(
        "Firewall plan: connscope firewall plan --db {} --host ws-1",
        db.display()
    );
    println!(
        "Something to find: one flow every few minutes is not like the others (the answer is in docs/MAP.md)."
    );
    if args.duration == 0 {
        println!("The office keeps working; Ctrl-C stops the demo and removes its namespaces.");
    }
    Ok(())
}
