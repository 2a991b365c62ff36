//! The office's servers, real programs listening in their namespaces: the
//! office's DNS (Debian's dnsmasq, authoritative for the office zone and the
//! outside names the office uses), a file share on 445, the intranet web
//! server on `[::]:80` (one socket for IPv4 and IPv6), a printer on 9100
//! (raw) and 631 (IPP over HTTP), and outside: an HTTPS update server and
//! the listener of the hidden flow.
//!
//! The file share and the printer keep what they are sent in the demo's
//! directory (one file per client, overwritten), so they do the job of a
//! share and a print spool without an SMB or CUPS stack.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use super::child::Child;
use super::office::{Office, Role, HIDDEN_V4, UPDATES_NAME, UPDATES_V4, UPDATES_V6, ZONE};

/// Ports of the services.
pub const SHARE_PORT: u16 = 445;
pub const WEB_PORT: u16 = 80;
pub const RAW_PRINT_PORT: u16 = 9100;
pub const IPP_PORT: u16 = 631;
pub const HTTPS_PORT: u16 = 443;
pub const HIDDEN_PORT: u16 = 8022;

/// One dual-stack TCP server: `KIND PORT DIR [CERT KEY]`. `http` and `https`
/// serve DIR and take POSTs (IPP jobs) into it; `store` keeps what each
/// client sends in DIR.
const SERVER_PY: &str = r#"import http.server, os, socket, socketserver, ssl, sys
kind, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def keep(peer, data):
    name = os.path.join(root, "from-" + peer.replace(":", "_"))
    with open(name, "wb") as f:
        f.write(data)
class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
class Page(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=root, **kwargs)
    def do_POST(self):
        keep(self.client_address[0], self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.send_response(200)
        self.send_header("Content-Type", self.headers.get("Content-Type", "text/plain"))
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
class Store(socketserver.StreamRequestHandler):
    def handle(self):
        keep(self.client_address[0], self.rfile.read())
server = Server(("::", port), Store if kind == "store" else Page)
if kind == "https":
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[4], sys.argv[5])
    server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

/// Starts every server and waits until each accepts (or answers, for DNS).
pub fn start(office: &Office, dir: &Path) -> Result<Vec<Child>> {
    let data = dir.join("servers");
    let mut children = Vec::new();
    let dns = office.dns();
    children.push(start_dnsmasq(office, &data)?);
    let fs = office.with_role(Role::FileServer);
    children.push(start_python(
        &fs.netns,
        "store",
        SHARE_PORT,
        &data.join("share"),
        &[],
    )?);
    let web = office.with_role(Role::WebServer);
    let site = data.join("intranet");
    std::fs::create_dir_all(&site).with_context(|| format!("creating {}", site.display()))?;
    std::fs::write(
        site.join("index.html"),
        "<!doctype html><title>Intranet</title><h1>Office intranet</h1><p>Lunch menu, phone list, holidays.</p>\n",
    )
    .context("writing the intranet's page")?;
    children.push(start_python(&web.netns, "http", WEB_PORT, &site, &[])?);
    let printer = office.with_role(Role::Printer);
    let spool = data.join("print-spool");
    children.push(start_python(
        &printer.netns,
        "store",
        RAW_PRINT_PORT,
        &spool,
        &[],
    )?);
    children.push(start_python(&printer.netns, "http", IPP_PORT, &spool, &[])?);
    let (cert, key) = outside_certificate(&data)?;
    let updates = data.join("updates");
    std::fs::create_dir_all(&updates)
        .and_then(|()| std::fs::write(updates.join("index.html"), "no updates\n"))
        .with_context(|| format!("writing {}", updates.display()))?;
    let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
    children.push(start_python(
        &office.internet_netns,
        "https",
        HTTPS_PORT,
        &updates,
        &[&cert, &key],
    )?);
    children.push(start_python(
        &office.internet_netns,
        "store",
        HIDDEN_PORT,
        &data.join("received-outside"),
        &[],
    )?);

    let ready = [
        (&fs.netns, SocketAddr::new(IpAddr::V4(fs.v4), SHARE_PORT)),
        (&web.netns, SocketAddr::new(IpAddr::V6(web.v6), WEB_PORT)),
        (&web.netns, SocketAddr::new(IpAddr::V4(web.v4), WEB_PORT)),
        (
            &printer.netns,
            SocketAddr::new(IpAddr::V4(printer.v4), RAW_PRINT_PORT),
        ),
        (
            &printer.netns,
            SocketAddr::new(IpAddr::V4(printer.v4), IPP_PORT),
        ),
        (
            &office.internet_netns,
            SocketAddr::new(IpAddr::V4(UPDATES_V4), HTTPS_PORT),
        ),
        (
            &office.internet_netns,
            SocketAddr::new(IpAddr::V4(HIDDEN_V4), HIDDEN_PORT),
        ),
        (&dns.netns, SocketAddr::new(IpAddr::V4(dns.v4), 53)),
    ];
    for (netns, addr) in ready {
        wait_until_listening(netns, addr, &mut children)?;
    }
    Ok(children)
}

fn start_python(netns: &str, kind: &str, port: u16, dir: &Path, extra: &[&str]) -> Result<Child> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", netns, "python3", "-c", SERVER_PY, kind])
        .arg(port.to_string())
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    Child::spawn(command, format!("{kind} server on port {port} in {netns}"))
}

/// dnsmasq on the dns host's addresses only, answering for the office zone
/// and the outside names from its own records; it forwards nothing, so no
/// query of the demo leaves the machine.
fn start_dnsmasq(office: &Office, data: &Path) -> Result<Child> {
    let dns = office.dns();
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let mut command = Command::new("ip");
    command
        .args([
            "netns",
            "exec",
            &dns.netns,
            "dnsmasq",
            "--keep-in-foreground",
        ])
        .args([
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
        ])
        .arg(format!("--listen-address={}", dns.v4))
        .arg(format!("--listen-address={}", dns.v6))
        .args(["--user=root", "--group=root", "--log-queries"])
        .arg(format!(
            "--log-facility={}",
            data.join("dnsmasq.log").display()
        ))
        .arg(format!("--pid-file={}", data.join("dnsmasq.pid").display()))
        .arg(format!("--domain={ZONE}"))
        .arg(format!("--local=/{ZONE}/"))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for host in &office.hosts {
        command.arg(format!(
            "--host-record={},{},{},{}",
            host.fqdn(),
            host.name,
            host.v4,
            host.v6
        ));
    }
    command.arg(format!(
        "--host-record={UPDATES_NAME},{UPDATES_V4},{UPDATES_V6}"
    ));
    Child::spawn(command, format!("dnsmasq in {}", dns.netns))
}

/// A self-signed certificate for the outside update server (curl is told
/// not to check it: the demo has no CA).
fn outside_certificate(data: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (data.join("updates.crt"), data.join("updates.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-days", "30", "-subj", &format!("/CN={UPDATES_NAME}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("running openssl (Debian package openssl)")?;
    ensure!(
        out.status.success(),
        "openssl could not make the update server's certificate: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok((cert, key))
}

/// Waits until `addr` accepts a TCP connection from inside `netns` (or a
/// server has died, which is an error naming it).
fn wait_until_listening(netns: &str, addr: SocketAddr, children: &mut [Child]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let target = match addr {
        SocketAddr::V4(a) => format!("{}/{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("{}/{}", a.ip(), a.port()),
    };
    loop {
        let ok = Command::new("ip")
            .args(["netns", "exec", netns, "bash", "-c"])
            .arg(format!("exec 3<>/dev/tcp/{target}"))
            .stderr(Stdio::null())
            .status()
            .context("running bash")?
            .success();
        if ok {
            return Ok(());
        }
        if super::child::stop_requested() {
            anyhow::bail!("stopped by a signal while the servers were starting");
        }
        if let Some(dead) = children
            .iter_mut()
            .find_map(|c| (!c.running()).then(|| c.what().to_owned()))
        {
            anyhow::bail!("{dead} stopped at start (see its messages above)");
        }
        ensure!(
            Instant::now() < deadline,
            "nothing listens on {addr} in {netns} after 15 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
