//! `connscope doctor`: is this host ready to run the agent, and if not, why.
//!
//! An administrator who rolled the package out to 50 hosts needs the one host
//! that does not report to say, in plain words, what it lacks: each check
//! prints `ok`, `warn` (the agent runs, with less) or `FAIL` (the agent as
//! configured will not work) with how to fix it. Exit status 1 when anything
//! failed, so Ansible or a monitoring check can run it as is.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use connscope_transport::tls::client_config;
use connscope_transport::{read_token_file, CollectorTrust, DEFAULT_SPOOL_MAX_BYTES};

use super::agent::DEFAULT_STATE_DIR;
use super::agent_config::{AgentFile, Loaded, OneOrMany};

/// Where the package installs the agent's settings.
pub const DEFAULT_AGENT_CONFIG: &str = "/etc/connscope/agent.toml";
/// Oldest kernel whose eBPF features the capture uses (ring buffer, CAP_BPF).
const EBPF_KERNEL: (u32, u32) = (5, 8);

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The agent's settings file, as the service reads it.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_AGENT_CONFIG)]
    config: PathBuf,
    /// How long to wait for the collector to answer.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    timeout_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Warn,
    Fail,
}

/// One check's outcome; `fix` says what to do when it is not ok.
struct Finding {
    verdict: Verdict,
    topic: &'static str,
    detail: String,
    fix: Option<String>,
}

impl Finding {
    fn ok(topic: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            verdict: Verdict::Ok,
            topic,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(topic: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            verdict: Verdict::Warn,
            topic,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(topic: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            verdict: Verdict::Fail,
            ..Finding::warn(topic, detail, fix)
        }
    }
}

pub fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut findings = vec![
        kernel(),
        btf(),
        capabilities(),
        tracepoints(),
        clock(),
        proc_access(),
        tcpspy_daemon(),
    ];
    match AgentFile::load(&args.config) {
        Ok(loaded) => {
            findings.push(Finding::ok(
                "config",
                format!("{} reads", args.config.display()),
            ));
            findings.extend(from_config(
                &loaded,
                Duration::from_secs(args.timeout_seconds),
            ));
        }
        Err(e) => findings.push(Finding::fail(
            "config",
            format!("{e:#}"),
            format!(
                "install the connscope package (it ships {DEFAULT_AGENT_CONFIG}), fix the \
                 named line, or give the file with --config"
            ),
        )),
    }
    let mut failed = false;
    for finding in &findings {
        let mark = match finding.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        failed |= finding.verdict == Verdict::Fail;
        println!("{mark} {}: {}", finding.topic, finding.detail);
        if let Some(fix) = &finding.fix {
            println!("     fix: {fix}");
        }
    }
    println!(
        "{}",
        if failed {
            "the agent cannot work as configured: see FAIL above"
        } else {
            "the agent can run on this host"
        }
    );
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|uts| uts.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// (major, minor) of the running kernel; (0, 0) when unknown.
fn kernel_version() -> (u32, u32) {
    let release = kernel_release();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

fn kernel() -> Finding {
    let release = kernel_release();
    if kernel_version() >= EBPF_KERNEL {
        Finding::ok(
            "kernel",
            format!("{release} (eBPF capture needs 5.8 or later)"),
        )
    } else {
        Finding::warn(
            "kernel",
            format!("{release} is older than 5.8: the agent falls back to polling (sockdiag), which misses short connections"),
            "upgrade the kernel (Debian 11 and later have 5.10+)",
        )
    }
}

fn btf() -> Finding {
    let path = "/sys/kernel/btf/vmlinux";
    match std::fs::File::open(path) {
        Ok(_) => Finding::ok("btf", format!("{path} is readable")),
        Err(e) => Finding::warn(
            "btf",
            format!("{path}: {e}: without BTF the eBPF backend cannot load, the agent polls"),
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian's are)",
        ),
    }
}

/// The capabilities eBPF capture cannot start without, by number (capability.h).
const NEEDED_CAPS: [(u32, &str); 3] = [(39, "CAP_BPF"), (38, "CAP_PERFMON"), (12, "CAP_NET_ADMIN")];
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_RESOURCE: u32 = 24;
/// From this kernel on, BPF memory is charged to the cgroup, not RLIMIT_MEMLOCK.
const MEMCG_BPF_KERNEL: (u32, u32) = (5, 11);

fn capabilities() -> Finding {
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| u64::from_str_radix(line.strip_prefix("CapEff:")?.trim(), 16).ok())
        });
    let Some(effective) = effective else {
        return Finding::fail(
            "capabilities",
            "cannot read CapEff from /proc/self/status",
            "mount /proc",
        );
    };
    let has = |bit: u32| effective & (1 << bit) != 0;
    let missing: Vec<&str> = NEEDED_CAPS
        .iter()
        .filter(|(bit, _)| !has(*bit))
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Finding::fail(
            "capabilities",
            format!(
                "this process lacks {}: eBPF capture cannot start",
                missing.join(" ")
            ),
            "run the agent (and doctor) as root, or through connscope-agent.service, whose \
             CapabilityBoundingSet= grants them",
        );
    }
    if kernel_version() < MEMCG_BPF_KERNEL && !has(CAP_SYS_RESOURCE) {
        return Finding::fail(
            "capabilities",
            "this kernel charges BPF maps to RLIMIT_MEMLOCK and the process lacks CAP_SYS_RESOURCE to raise it",
            "run as root or through connscope-agent.service (it grants CAP_SYS_RESOURCE)",
        );
    }
    if !has(CAP_SYS_PTRACE) {
        return Finding::warn(
            "capabilities",
            "CAP_BPF CAP_PERFMON CAP_NET_ADMIN, but not CAP_SYS_PTRACE: executables of processes \
             started before the agent cannot be read",
            "run as root or through connscope-agent.service (it grants CAP_SYS_PTRACE)",
        );
    }
    Finding::ok(
        "capabilities",
        "CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_SYS_PTRACE",
    )
}

fn tracepoints() -> Finding {
    let roots = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
    let Some(root) = roots
        .iter()
        .find(|root| Path::new(root).join("events").is_dir())
    else {
        return Finding::warn(
            "tracepoints",
            "tracefs is not mounted: the agent mounts it when it starts (as root)",
            "mount -t tracefs tracefs /sys/kernel/tracing (systemd does this at boot)",
        );
    };
    let wanted = [
        "sock/inet_sock_set_state",
        "sched/sched_process_exec",
        "syscalls/sys_exit_accept4",
        "syscalls/sys_exit_accept",
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|name| !Path::new(root).join("events").join(name).is_dir())
        .copied()
        .collect();
    if missing.is_empty() {
        Finding::ok("tracepoints", format!("{} in {root}", wanted.join(" ")))
    } else {
        Finding::fail(
            "tracepoints",
            format!("{root} lacks {}", missing.join(" ")),
            "use a kernel with CONFIG_FTRACE_SYSCALLS=y (Debian's has it), or run the agent \
             with --backend sockdiag",
        )
    }
}

fn clock() -> Finding {
    // SAFETY: adjtimex with modes 0 only reads the kernel's clock state into `timex`.
    let mut timex: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut timex) };
    if state == -1 {
        return Finding::warn(
            "clock",
            format!("adjtimex: {}", std::io::Error::last_os_error()),
            "none known",
        );
    }
    if state == libc::TIME_ERROR || timex.status & libc::STA_UNSYNC != 0 {
        Finding::warn(
            "clock",
            "the kernel clock is not synchronised: event times from hosts may disagree",
            "run an NTP client (systemd-timesyncd, chrony)",
        )
    } else {
        Finding::ok(
            "clock",
            format!("synchronised (estimated error {} µs)", timex.esterror),
        )
    }
}

/// Reads the executable link of every process: the agent does so for the
/// connections of processes that started before it.
fn proc_access() -> Finding {
    let mut readable = 0;
    let mut denied = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        match std::fs::read_link(entry.path().join("exe")) {
            Ok(_) => readable += 1,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                denied.push(entry.file_name().to_string_lossy().into_owned())
            }
            // Kernel threads have no executable; processes may exit meanwhile.
            Err(_) => {}
        }
    }
    if denied.is_empty() {
        Finding::ok(
            "/proc",
            format!("the executables of all {readable} processes are readable"),
        )
    } else {
        Finding::warn(
            "/proc",
            format!(
                "the executables of {} of {} processes are not readable (pids {}): their connections \
                 will have none",
                denied.len(),
                denied.len() + readable,
                denied.iter().take(5).cloned().collect::<Vec<_>>().join(" ")
            ),
            "run the agent as root with CAP_SYS_PTRACE (the unit grants it); check /proc is not mounted with hidepid",
        )
    }
}

/// tcpspy and the agent would log every connection twice to syslog.
fn tcpspy_daemon() -> Finding {
    let running = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("comm")).ok())
        .any(|comm| comm.trim() == "tcpspy");
    if running {
        Finding::warn(
            "tcpspy",
            "a tcpspy daemon runs on this host: both would log each connection",
            "stop and disable it (systemctl disable --now tcpspy); connscope reads /etc/tcpspy.rules",
        )
    } else {
        Finding::ok("tcpspy", "no tcpspy daemon runs beside the agent")
    }
}

/// The checks that depend on the settings file: collector, token, spool.
fn from_config(loaded: &Loaded, timeout: Duration) -> Vec<Finding> {
    let file = &loaded.file;
    let state_dir = file
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let spool_dir = file
        .spool_dir
        .clone()
        .unwrap_or_else(|| state_dir.join("spool"));
    let mut findings = Vec::new();
    let urls = file
        .collector
        .clone()
        .map(OneOrMany::into_vec)
        .unwrap_or_default();
    if urls.is_empty() {
        findings.push(Finding::ok(
            "collector",
            "none configured: the agent logs to syslog, as tcpspy",
        ));
        return findings;
    }
    findings.push(match &file.collector_token_file {
        Some(path) => match read_token_file(path) {
            Ok(_) => Finding::ok("token", format!("{} holds a token", path.display())),
            Err(e) => Finding::fail(
                "token",
                e.to_string(),
                "run `connscope agent enroll URL TOKEN` with the line `connscope collector enroll HOST` printed",
            ),
        },
        None => Finding::fail(
            "token",
            "collector is set but collector_token_file is not",
            "run `connscope agent enroll URL TOKEN`, or set collector_token_file",
        ),
    });
    let trust = match (&file.collector_ca, &file.collector_fingerprint) {
        (Some(ca), _) => Some(CollectorTrust::CaFile(ca.clone())),
        (None, Some(text)) => text.parse().ok().map(CollectorTrust::Fingerprint),
        (None, None) => None,
    };
    // Every collector the agent may fail over to must answer.
    match trust {
        Some(trust) => findings.extend(urls.iter().map(|url| collector(url, &trust, timeout))),
        None => findings.push(Finding::fail(
            "collector",
            "neither collector_fingerprint nor collector_ca is set (or the fingerprint does not parse)",
            "run `connscope agent enroll URL TOKEN`, or set collector_fingerprint to what the collector prints at start",
        )),
    }
    findings.push(spool(
        &spool_dir,
        file.spool_max_bytes.unwrap_or(DEFAULT_SPOOL_MAX_BYTES),
    ));
    findings
}

/// Connects, shakes hands with the configured trust, asks `/api/v1/health`.
fn collector(url: &str, trust: &CollectorTrust, timeout: Duration) -> Finding {
    let fix_url = "check the collector runs (systemctl status connscope-collector on it), the \
                   URL, and firewalls between";
    let uri: hyper::Uri = match url.parse() {
        Ok(uri) => uri,
        Err(e) => {
            return Finding::fail(
                "collector",
                format!("{url:?}: {e}"),
                "write https://HOST:PORT",
            )
        }
    };
    let (Some("https"), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return Finding::fail(
            "collector",
            format!("{url:?} is not https://HOST:PORT"),
            "write https://HOST:PORT",
        );
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let addrs: Vec<_> = match (host.as_str(), port).to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            return Finding::fail(
                "collector",
                format!("{host}: {e}"),
                "check the name resolves on this host",
            )
        }
    };
    let Some(stream) = addrs
        .iter()
        .find_map(|addr| TcpStream::connect_timeout(addr, timeout).ok())
    else {
        return Finding::fail(
            "collector",
            format!("{url} is unreachable (tried {addrs:?})"),
            fix_url,
        );
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let config = match client_config(trust) {
        Ok(config) => config,
        Err(e) => return Finding::fail("collector", e.to_string(), "fix collector_ca"),
    };
    let server_name = match rustls::pki_types::ServerName::try_from(host.clone()) {
        Ok(name) => name,
        Err(e) => {
            return Finding::fail(
                "collector",
                format!("{host}: {e}"),
                "write https://HOST:PORT",
            )
        }
    };
    let connection = match rustls::ClientConnection::new(Arc::clone(&config), server_name) {
        Ok(connection) => connection,
        Err(e) => return Finding::fail("collector", e.to_string(), fix_url),
    };
    let mut tls = rustls::StreamOwned::new(connection, stream);
    let request =
        format!("GET /api/v1/health HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
    let mut answer = Vec::new();
    let outcome = tls
        .write_all(request.as_bytes())
        .and_then(|()| tls.read_to_end(&mut answer));
    match outcome {
        Ok(_) if answer.starts_with(b"HTTP/1.1 200") => Finding::ok(
            "collector",
            format!("{url} answers and its certificate matches the pinned trust"),
        ),
        Ok(_) => Finding::fail(
            "collector",
            format!(
                "{url} answered {:?} to /api/v1/health",
                String::from_utf8_lossy(answer.split(|&b| b == b'\r').next().unwrap_or(&[]))
            ),
            fix_url,
        ),
        Err(e) if is_certificate_error(&e) => Finding::fail(
            "collector",
            format!("{url}: the certificate does not match: {e}"),
            "the collector's certificate changed or the fingerprint is wrong: compare with the \
             `fingerprint:` line the collector prints at start and enroll again",
        ),
        Err(e) => Finding::fail("collector", format!("{url}: {e}"), fix_url),
    }
}

fn is_certificate_error(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::InvalidCertificate(_) | rustls::Error::General(_)
            )
        })
}

fn spool(dir: &Path, max_bytes: u64) -> Finding {
    if !dir.exists() {
        return Finding::ok(
            "spool",
            format!(
                "{} does not exist yet (the agent makes it at start)",
                dir.display()
            ),
        );
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            return Finding::fail(
                "spool",
                format!("{} cannot be read: {e}", dir.display()),
                "make it a directory the agent (root) can read and write, or remove it so the agent makes it",
            )
        }
    };
    let mut bytes = 0;
    let mut files = 0;
    for entry in entries {
        match entry.and_then(|entry| entry.metadata()) {
            Ok(meta) => {
                bytes += meta.len();
                files += 1;
            }
            Err(e) => {
                return Finding::fail(
                    "spool",
                    format!("{}: {e}", dir.display()),
                    "check the disk and the directory's permissions",
                )
            }
        }
    }
    if let Err(e) = nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK) {
        return Finding::fail(
            "spool",
            format!("{} is not writable: {e}", dir.display()),
            "check the file system is mounted read-write and the directory belongs to root",
        );
    }
    let detail = format!(
        "{}: {files} files, {bytes} of {max_bytes} bytes",
        dir.display()
    );
    if bytes * 10 > max_bytes * 9 {
        Finding::warn(
            "spool",
            format!("{detail}: nearly full, the oldest batches will be dropped"),
            "check the collector is reachable (see above); raise spool_max_bytes if outages are long",
        )
    } else {
        Finding::ok("spool", detail)
    }
}
