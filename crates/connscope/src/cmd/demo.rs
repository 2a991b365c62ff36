//! `connscope demo`: the whole path on one machine in one step.
//!
//! It runs the real parts as separate processes, as an administrator would:
//! a collector on loopback with the embedded SQLite store, a local agent
//! (eBPF capture) shipping to it over HTTPS, and real traffic between real
//! programs (python3's web server, curl, bash) on loopback. When the first
//! connections are stored it prints them as `connscope report edges` does and
//! the map's address, then keeps making a little traffic so the map stays live.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use connscope_query::join::load_edges;
use connscope_query::report::{edges_report, Format};
use connscope_store::{SqliteStore, TimeRange};

const AGENT_ID: &str = "demo-agent";

#[derive(Args)]
pub struct DemoArgs {
    /// Directory for the demo's store, certificate, agent state and spool.
    #[arg(long, value_name = "DIR", default_value = "/tmp/connscope-demo")]
    dir: PathBuf,
    /// Address of the collector (HTTPS API and map).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Stop after this many seconds (0: run until Ctrl-C).
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    duration: u64,
}

/// A child process that is stopped (SIGTERM, then waited for) when dropped, so
/// no part of the demo outlives it.
struct Running {
    name: &'static str,
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::warn!(name = self.name, "did not stop in 10 s; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: nix::libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the demo's agent loads eBPF programs: run it as root"
    );
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let exe = std::env::current_exe().context("finding the connscope binary")?;
    let db = args.dir.join("connscope.db");
    let token = random_token()?;

    let (collector, url, fingerprint) = start_collector(&exe, &args, &db, &token)?;
    let agent = start_agent(&exe, &args.dir, &url, &fingerprint, &token)?;
    let servers = start_web_servers()?;

    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::Handler(request_stop))
        }
        .context("installing the signal handler")?;
    }

    println!("== Making real connections on loopback (curl and bash -> python3 web servers)");
    make_traffic(&servers, 5)?;
    let edges = wait_for_edges(&db, servers.len(), Duration::from_secs(30))?;
    println!("== What the collector stored ({}):", db.display());
    print!("{edges}");
    println!();
    println!("The map:       https://{}/", args.listen);
    println!("Certificate:   self-signed, fingerprint {fingerprint}");
    println!(
        "Reports:       connscope report edges --db {}   (also: hosts, ports)",
        db.display()
    );
    println!(
        "Firewall plan: connscope firewall plan --db {} --host {}",
        db.display(),
        connscope_names::host_name_or_localhost()
    );
    if args.duration == 0 {
        println!("Making a little traffic every 5 s so the map stays live; Ctrl-C stops the demo.");
    }

    let started = Instant::now();
    let mut last_traffic = Instant::now();
    while !STOP.load(Ordering::Relaxed)
        && (args.duration == 0 || started.elapsed() < Duration::from_secs(args.duration))
    {
        std::thread::sleep(Duration::from_millis(200));
        if last_traffic.elapsed() >= Duration::from_secs(5) {
            make_traffic(&servers, 1)?;
            last_traffic = Instant::now();
        }
    }
    println!("== Stopping: the agent flushes what it captured, then the collector stops.");
    drop(servers);
    drop(agent);
    drop(collector);
    Ok(ExitCode::SUCCESS)
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Starts the collector and reads its start-up facts (address, fingerprint)
/// from its standard output.
fn start_collector(
    exe: &Path,
    args: &DemoArgs,
    db: &Path,
    token: &str,
) -> Result<(Running, String, String)> {
    let mut child = Command::new(exe)
        .arg("collector")
        .arg("--db")
        .arg(db)
        .arg("--listen")
        .arg(args.listen.to_string())
        .arg("--token")
        .arg(format!("{AGENT_ID}={token}"))
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the collector")?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let collector = Running {
        name: "collector",
        child,
    };
    let mut url = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the collector's output")?;
        if let Some(rest) = line.strip_prefix("listening: ") {
            url = Some(rest.to_owned());
        }
        if let Some(fingerprint) = line.strip_prefix("fingerprint: ") {
            let Some(url) = url else {
                bail!("the collector printed its fingerprint before its address");
            };
            println!("== Collector: {url}, store {}", db.display());
            return Ok((collector, url, fingerprint.to_owned()));
        }
    }
    bail!(
        "the collector stopped before it was listening on {} (is the port in use?)",
        args.listen
    )
}

fn start_agent(
    exe: &Path,
    dir: &Path,
    url: &str,
    fingerprint: &str,
    token: &str,
) -> Result<Running> {
    let state = dir.join("agent");
    let child = Command::new(exe)
        .args(["agent", "-p", "--no-default-rules", "--udp"])
        .arg("--state-dir")
        .arg(&state)
        .args(["--collector", url])
        .args(["--collector-token", token])
        .args(["--collector-fingerprint", fingerprint])
        .stdout(Stdio::null())
        .spawn()
        .context("starting the agent")?;
    println!(
        "== Agent: eBPF capture, shipping to the collector, state in {}",
        state.display()
    );
    // The agent attaches its programs before it captures; give it that moment.
    std::thread::sleep(Duration::from_secs(2));
    Ok(Running {
        name: "agent",
        child,
    })
}

/// `python3 -m http.server` minus its start-up lookup of the machine's fully
/// qualified name, which would send a DNS query off the machine.
const WEB_SERVER_PY: &str = "import http.server, socket, socketserver, sys
class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    address_family = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
Server((sys.argv[1], int(sys.argv[2])), http.server.SimpleHTTPRequestHandler).serve_forever()
";

/// python3's web server on IPv4 and IPv6 loopback, each on a free port.
fn start_web_servers() -> Result<Vec<(Running, SocketAddr)>> {
    let mut servers = Vec::new();
    for ip in ["127.0.0.1", "::1"] {
        let port = std::net::TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .context("finding a free port")?
            .port();
        let child = Command::new("python3")
            .args(["-c", WEB_SERVER_PY, ip, &port.to_string()])
            .current_dir("/usr/share/doc")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting python3's web server")?;
        let addr = SocketAddr::new(ip.parse().expect("literal address"), port);
        servers.push((
            Running {
                name: "python3 web server",
                child,
            },
            addr,
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (_, addr) in &servers {
        while std::net::TcpStream::connect(addr).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the web server on {addr} did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(servers)
}

/// Real clients: curl fetches a page, bash opens a raw TCP connection.
fn make_traffic(servers: &[(Running, SocketAddr)], rounds: usize) -> Result<()> {
    for _ in 0..rounds {
        for (_, addr) in servers {
            let url = format!("http://{addr}/");
            let status = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "--max-time", "5", &url])
                .status()
                .context("running curl")?;
            anyhow::ensure!(status.success(), "curl {url} failed: {status}");
            let script = format!("exec 3<>/dev/tcp/{}/{}", addr.ip(), addr.port());
            Command::new("bash")
                .args(["-c", &script])
                .status()
                .context("running bash")?;
        }
    }
    Ok(())
}

/// Waits until the store holds at least `expected` edges, then renders them.
fn wait_for_edges(db: &Path, expected: usize, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let store = SqliteStore::open(db).context("opening the demo store")?;
        let edges = load_edges(&store, TimeRange::ALL)?;
        if edges.len() >= expected || Instant::now() >= deadline {
            anyhow::ensure!(
                !edges.is_empty(),
                "no connection reached the store in {timeout:?}: see the agent's and collector's log above"
            );
            return Ok(edges_report(&edges).render(Format::Table));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
