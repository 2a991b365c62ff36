//! `connscope agent`: the tcpspy drop-in. tcpspy's flags keep tcpspy's
//! meaning; everything else is a long option. A service reads the same
//! settings from `--config FILE` (`agent_config` puts the file under these
//! flags before [`run`]), so the options with a default are `Option`s here and
//! get it after the merge.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use connscope_agent::output::{Destination, Facility, JsonLines, SyslogOutput, TcpspyLines};
use connscope_agent::{AgentConfig, BackendChoice, NamingConfig, RunAs, Sink};
use connscope_capture::NetnsFilter;
use connscope_rules::{ExeComparisons, RuleSet};
use connscope_tcpspy_log::LineStyle;
use connscope_transport::ShippingMonitor;

use super::agent_firewall::FirewallSetup;

/// tcpspy's init script adds this rule file whenever it exists.
const DEFAULT_RULES_FILE: &str = "/etc/tcpspy.rules";
/// Where the agent keeps its state when neither flag nor file says.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/connscope";
const DEFAULT_INTERVAL_MS: u64 = 1000;
const DEFAULT_NAME_GRACE_SECS: u64 = 300;
const DEFAULT_SNI_WAIT_MS: u64 = 500;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    action: Option<AgentAction>,
    /// Settings file (TOML, keys are the long flag names with `_`, see
    /// docs/DEPLOY.md); flags override its values.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Foreground output: tcpspy lines on standard output instead of syslog
    /// (the agent never forks, with or without -d).
    #[arg(short = 'd', long)]
    pub(crate) foreground: bool,
    /// Log the executable of each connection's process.
    #[arg(short = 'p', long)]
    pub(crate) executables: bool,
    /// Log only connections matching RULE (tcpspy rule language, see
    /// docs/RULES.md); several rules combine with OR.
    #[arg(short = 'e', long = "rule", value_name = "RULE")]
    pub(crate) rules: Vec<String>,
    /// Read rules from FILE, one per line, `#` comments.
    #[arg(short = 'f', long = "rules-file", value_name = "FILE")]
    pub(crate) rule_files: Vec<PathBuf>,
    /// Do not add /etc/tcpspy.rules (added whenever it exists, as tcpspy's
    /// init script does).
    #[arg(long)]
    pub(crate) no_default_rules: bool,
    /// Ports as numbers, not service names.
    #[arg(short = 'n', long)]
    pub(crate) numeric_ports: bool,
    /// Syslog facility [default: local1].
    #[arg(short = 'F', long, value_name = "FACILITY")]
    pub(crate) facility: Option<Facility>,
    /// Poll interval of the sockdiag and proc backends, milliseconds
    /// [default: 1000].
    #[arg(short = 'I', long, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) interval_ms: Option<u64>,
    /// Switch to USER (name or uid) once capture is running.
    #[arg(short = 'U', long, value_name = "USER")]
    pub(crate) user: Option<String>,
    /// Switch to GROUP (name or gid); defaults to USER's primary group.
    #[arg(short = 'G', long, value_name = "GROUP")]
    pub(crate) group: Option<String>,
    /// Capture backend; auto takes ebpf, else sockdiag, else proc
    /// [default: auto].
    #[arg(long)]
    pub(crate) backend: Option<BackendChoice>,
    /// Network namespaces to report: self, all (ebpf only), or an inode
    /// [default: self].
    #[arg(long)]
    pub(crate) netns: Option<NetnsFilter>,
    /// Event format [default: tcpspy].
    #[arg(long, value_enum)]
    pub(crate) format: Option<Format>,
    /// Write events to FILE (appended, reopened on SIGHUP) instead of syslog
    /// or standard output.
    #[arg(long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// Syslog program name [default: connscope].
    #[arg(long)]
    pub(crate) ident: Option<String>,
    /// Syslog socket [default: /dev/log].
    #[arg(long, value_name = "PATH")]
    pub(crate) syslog_socket: Option<PathBuf>,
    /// host.name of the events (default: this machine's host name).
    #[arg(long, value_name = "NAME")]
    pub(crate) host_name: Option<String>,
    /// Where the agent keeps its sequence number (and, by default, its
    /// spool); one agent per directory, which it locks
    /// [default: /var/lib/connscope].
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Capture UDP flows as well (tcpspy lines cannot show them; JSON can).
    #[arg(long)]
    pub(crate) udp: bool,
    /// TCP connections the eBPF backend can follow at once; its table is
    /// allocated up front (about 120 bytes of kernel memory each), and
    /// connections past it are counted as lost [default: 65536].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_tcp_connections: Option<u32>,
    /// Attach the eBPF backend's packet hooks (UDP flows with --udp, DNS
    /// answers for naming) to this cgroup v2 instead of the root: a path
    /// inside the hierarchy as /proc/PID/cgroup shows it, e.g.
    /// /system.slice/web.service. Only sockets made in it or below are seen
    /// (an accepted socket counts as made where its listener was), and
    /// sockets elsewhere pay nothing for the hooks; ClientHellos are then
    /// read from the sends of its threads only [default: /, every socket].
    #[arg(long, value_name = "PATH")]
    pub(crate) packet_cgroup: Option<PathBuf>,
    /// Serve /metrics (Prometheus) and /healthz over plain HTTP on this
    /// address, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// Do not name remote ends (naming reads DNS answers and TLS
    /// ClientHellos from the eBPF packet hooks, or with a packet socket
    /// under the other backends; see docs/CAPTURE.md, Names).
    #[arg(long, conflicts_with = "nft_name_sets")]
    pub(crate) no_names: bool,
    /// Keep the name sets of a loaded connscope plan (table inet connscope)
    /// filled with the addresses of the DNS answers the host receives (runs
    /// nft, so the agent keeps root: not with -U).
    #[arg(long, conflicts_with = "user")]
    pub(crate) nft_name_sets: bool,
    /// Seconds a name (and a set element) outlives its answer's TTL
    /// [default: 300].
    #[arg(long, value_name = "SECONDS")]
    pub(crate) name_grace: Option<u64>,
    /// Milliseconds an outgoing TCP connect without a DNS name waits for its
    /// TLS ClientHello before it is logged [default: 500].
    #[arg(long, value_name = "MS")]
    pub(crate) sni_wait_ms: Option<u64>,
    #[command(flatten)]
    pub(crate) ship: super::ship::ShipArgs,
    #[command(flatten)]
    pub(crate) firewall: super::agent_firewall::FirewallFlags,
}

#[derive(Subcommand, Debug)]
enum AgentAction {
    /// Enroll this host with a collector: exchange the token `connscope
    /// collector enroll` printed for this agent's own, write it and the
    /// collector's URL and fingerprint to the settings, check the connection.
    Enroll(super::enroll::AgentEnrollArgs),
    /// Break-glass on this host: `off` removes connscope's firewall table
    /// at once and keeps the agent from loading one until `on`.
    Firewall(super::agent_firewall::FirewallCommand),
}

impl AgentArgs {
    /// `connscope agent firewall off|on`, when that is the command.
    pub(crate) fn glass_command(&mut self) -> Option<&mut super::agent_firewall::FirewallCommand> {
        match &mut self.action {
            Some(AgentAction::Firewall(command)) => Some(command),
            _ => None,
        }
    }

    pub(crate) fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }

    fn format(&self) -> Format {
        self.format.unwrap_or(Format::Tcpspy)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// tcpspy's lines: syslog bodies, or `tcpspy -d` lines.
    Tcpspy,
    /// JSON Lines, schema in docs/EVENTS.md.
    Json,
}

/// Runs the agent with `args` as merged with the settings file (`agent_config`).
pub fn run(mut args: AgentArgs) -> anyhow::Result<ExitCode> {
    match args.action.take() {
        Some(AgentAction::Enroll(enroll)) => return super::enroll::agent_enroll(enroll),
        Some(AgentAction::Firewall(command)) => {
            return super::agent_firewall::glass(command, Path::new(DEFAULT_STATE_DIR))
        }
        None => {}
    }
    let rules = read_rules(&args)?;
    let run_as = RunAs::resolve(args.user.as_deref(), args.group.as_deref())?;
    let (outputs, shipping) = open_outputs(&args)?;

    let mut config = AgentConfig::new(rules);
    config.capture.netns = args.netns.unwrap_or_default();
    config.capture.poll_interval =
        Duration::from_millis(args.interval_ms.unwrap_or(DEFAULT_INTERVAL_MS));
    config.capture.udp = args.udp;
    if let Some(max) = args.max_tcp_connections {
        config.capture.max_tcp_connections = max;
    }
    config.capture.packet_cgroup = args.packet_cgroup.clone();
    config.backend = args.backend.unwrap_or_default();
    config.state_dir = args.state_dir();
    config.naming = (!args.no_names).then(|| NamingConfig {
        sni_wait: Duration::from_millis(args.sni_wait_ms.unwrap_or(DEFAULT_SNI_WAIT_MS)),
        grace: Duration::from_secs(args.name_grace.unwrap_or(DEFAULT_NAME_GRACE_SECS)),
        nft_name_sets: args.nft_name_sets,
        ..NamingConfig::default()
    });
    config.run_as = run_as;
    if let Some(name) = args.host_name.clone() {
        config.host_name = name;
    }
    let collector = super::ship::collector_access(&args.ship)?;
    let mut firewall = match FirewallSetup::from_flags(
        &args.firewall,
        args.user.is_some(),
        args.state_dir(),
        &config.host_name,
        collector,
    )? {
        Some((setup, hits)) => {
            config.injected = Some(hits);
            Some(setup)
        }
        None => None,
    };
    let mut managing = None;
    let metrics_listen = args.metrics_listen;
    let summary = connscope_agent::run_observed(config, outputs, |statistics| {
        if let Some(addr) = metrics_listen {
            super::agent_metrics::serve(addr, statistics, shipping)?;
        }
        if let Some(setup) = firewall.take() {
            managing = Some(setup.start()?);
        }
        Ok(())
    })?;
    if let Some(running) = managing {
        running.stop();
    }
    Ok(match summary.capture_error {
        Some(_) => ExitCode::FAILURE,
        None => ExitCode::SUCCESS,
    })
}

fn read_rules(args: &AgentArgs) -> anyhow::Result<RuleSet> {
    let mut builder = RuleSet::builder().exe_comparisons(if args.executables {
        ExeComparisons::Evaluate
    } else {
        ExeComparisons::AlwaysTrue
    });
    for (i, rule) in args.rules.iter().enumerate() {
        builder = builder.add_expr(&format!("-e #{}", i + 1), rule);
    }
    for file in &args.rule_files {
        builder = builder.add_file(file);
    }
    let default_file = PathBuf::from(DEFAULT_RULES_FILE);
    if !args.no_default_rules && default_file.exists() {
        tracing::info!("reading rules from {DEFAULT_RULES_FILE}");
        builder = builder.add_file(default_file);
    }
    let rules = builder.build()?;
    for warning in rules.warnings() {
        tracing::warn!("{warning}");
    }
    if rules.uses_exe() && !args.executables {
        tracing::warn!("exe rules are ignored (always true) without -p, as in tcpspy");
    }
    Ok(rules)
}

/// The outputs, and a monitor of the shipping output when there is one.
type Outputs = (Vec<Box<dyn Sink>>, Option<ShippingMonitor>);

fn open_outputs(args: &AgentArgs) -> anyhow::Result<Outputs> {
    let style = LineStyle {
        show_exe: args.executables,
        numeric_ports: args.numeric_ports,
    };
    let format = args.format();
    let destination = match (&args.output, args.foreground, format) {
        (Some(file), _, _) => Some(Destination::File(file.clone())),
        (None, true, _) | (None, _, Format::Json) => Some(Destination::Stdout),
        (None, false, Format::Tcpspy) => None,
    };
    let (shipping, monitor) = super::ship::open(&args.ship, &args.state_dir())?.unzip();
    let output: Box<dyn Sink> = match (destination, format) {
        (Some(dest), Format::Tcpspy) => Box::new(TcpspyLines::open(dest, style)?),
        (Some(dest), Format::Json) => Box::new(JsonLines::open(dest)?),
        // Shipping replaces the default syslog output; -d or --output add one.
        (None, _) if shipping.is_some() => return Ok((shipping.into_iter().collect(), monitor)),
        (None, _) => Box::new(
            SyslogOutput::open(
                args.syslog_socket
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/dev/log")),
                args.facility.unwrap_or_default(),
                args.ident.as_deref().unwrap_or("connscope"),
                style,
            )
            .context("syslog output (use -d or --output to log elsewhere)")?,
        ),
    };
    Ok((std::iter::once(output).chain(shipping).collect(), monitor))
}
