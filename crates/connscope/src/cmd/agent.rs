//! `connscope agent`: the tcpspy drop-in. tcpspy's flags keep tcpspy's
//! meaning; everything else is a long option.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use connscope_agent::output::{Destination, Facility, JsonLines, SyslogOutput, TcpspyLines};
use connscope_agent::{AgentConfig, BackendChoice, NamingConfig, RunAs, Sink};
use connscope_capture::{CaptureConfig, NetnsFilter};
use connscope_rules::{ExeComparisons, RuleSet};
use connscope_tcpspy_log::LineStyle;

/// tcpspy's init script adds this rule file whenever it exists.
const DEFAULT_RULES_FILE: &str = "/etc/tcpspy.rules";

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Foreground output: tcpspy lines on standard output instead of syslog
    /// (the agent never forks, with or without -d).
    #[arg(short = 'd')]
    foreground: bool,
    /// Log the executable of each connection's process.
    #[arg(short = 'p')]
    executables: bool,
    /// Log only connections matching RULE (tcpspy rule language, see
    /// docs/RULES.md); several rules combine with OR.
    #[arg(short = 'e', value_name = "RULE")]
    rules: Vec<String>,
    /// Read rules from FILE, one per line, `#` comments.
    #[arg(short = 'f', value_name = "FILE")]
    rule_files: Vec<PathBuf>,
    /// Do not add /etc/tcpspy.rules (added whenever it exists, as tcpspy's
    /// init script does).
    #[arg(long)]
    no_default_rules: bool,
    /// Ports as numbers, not service names.
    #[arg(short = 'n')]
    numeric_ports: bool,
    /// Syslog facility.
    #[arg(short = 'F', value_name = "FACILITY", default_value = "local1")]
    facility: Facility,
    /// Poll interval of the sockdiag and proc backends, milliseconds.
    #[arg(short = 'I', value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    interval_ms: u64,
    /// Switch to USER (name or uid) once capture is running.
    #[arg(short = 'U', value_name = "USER")]
    user: Option<String>,
    /// Switch to GROUP (name or gid); defaults to USER's primary group.
    #[arg(short = 'G', value_name = "GROUP")]
    group: Option<String>,
    /// Capture backend; auto takes ebpf, else sockdiag, else proc.
    #[arg(long, default_value = "auto")]
    backend: BackendChoice,
    /// Network namespaces to report: self, all (ebpf only), or an inode.
    #[arg(long, default_value = "self")]
    netns: NetnsFilter,
    /// Event format.
    #[arg(long, value_enum, default_value_t = Format::Tcpspy)]
    format: Format,
    /// Write events to FILE (appended, reopened on SIGHUP) instead of syslog
    /// or standard output.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Syslog program name.
    #[arg(long, default_value = "connscope")]
    ident: String,
    /// Syslog socket.
    #[arg(long, value_name = "PATH", default_value = "/dev/log")]
    syslog_socket: PathBuf,
    /// host.name of the events (default: this machine's host name).
    #[arg(long, value_name = "NAME")]
    host_name: Option<String>,
    /// Where the agent keeps its sequence number (and, by default, its
    /// spool); one agent per directory, which it locks.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/connscope")]
    state_dir: PathBuf,
    /// Capture UDP flows as well (tcpspy lines cannot show them; JSON can).
    #[arg(long)]
    udp: bool,
    /// TCP connections the eBPF backend can follow at once; its table is
    /// allocated up front (about 120 bytes of kernel memory each), and
    /// connections past it are counted as lost.
    #[arg(long, value_name = "N", default_value_t = CaptureConfig::default().max_tcp_connections,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_tcp_connections: u32,
    /// Do not name remote ends (naming reads DNS answers and TLS
    /// ClientHellos with a packet socket; see docs/CAPTURE.md, Names).
    #[arg(long, conflicts_with = "nft_name_sets")]
    no_names: bool,
    /// Keep the name sets of a loaded connscope plan (table inet connscope)
    /// filled with the addresses of the DNS answers the host receives (runs
    /// nft, so the agent keeps root: not with -U).
    #[arg(long, conflicts_with = "user")]
    nft_name_sets: bool,
    /// Seconds a name (and a set element) outlives its answer's TTL.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    name_grace: u64,
    /// Milliseconds an outgoing TCP connect without a DNS name waits for its
    /// TLS ClientHello before it is logged.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    sni_wait_ms: u64,
    #[command(flatten)]
    ship: super::ship::ShipArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// tcpspy's lines: syslog bodies, or `tcpspy -d` lines.
    Tcpspy,
    /// JSON Lines, schema in docs/EVENTS.md.
    Json,
}

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let rules = read_rules(&args)?;
    let run_as = RunAs::resolve(args.user.as_deref(), args.group.as_deref())?;
    let outputs = open_outputs(&args)?;

    let mut config = AgentConfig::new(rules);
    config.capture.netns = args.netns;
    config.capture.poll_interval = Duration::from_millis(args.interval_ms);
    config.capture.udp = args.udp;
    config.capture.max_tcp_connections = args.max_tcp_connections;
    config.backend = args.backend;
    config.state_dir = args.state_dir;
    config.run_as = run_as;
    config.naming = (!args.no_names).then(|| NamingConfig {
        sni_wait: Duration::from_millis(args.sni_wait_ms),
        grace: Duration::from_secs(args.name_grace),
        nft_name_sets: args.nft_name_sets,
        ..NamingConfig::default()
    });
    if let Some(name) = args.host_name {
        config.host_name = name;
    }
    let summary = connscope_agent::run(config, outputs)?;
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

fn open_outputs(args: &AgentArgs) -> anyhow::Result<Vec<Box<dyn Sink>>> {
    let style = LineStyle {
        show_exe: args.executables,
        numeric_ports: args.numeric_ports,
    };
    let destination = match (&args.output, args.foreground, args.format) {
        (Some(file), _, _) => Some(Destination::File(file.clone())),
        (None, true, _) | (None, _, Format::Json) => Some(Destination::Stdout),
        (None, false, Format::Tcpspy) => None,
    };
    let shipping = super::ship::open(&args.ship, &args.state_dir)?;
    let output: Box<dyn Sink> = match (destination, args.format) {
        (Some(dest), Format::Tcpspy) => Box::new(TcpspyLines::open(dest, style)?),
        (Some(dest), Format::Json) => Box::new(JsonLines::open(dest)?),
        // Shipping replaces the default syslog output; -d or --output add one.
        (None, _) if shipping.is_some() => return Ok(shipping.into_iter().collect()),
        (None, _) => Box::new(
            SyslogOutput::open(
                args.syslog_socket.clone(),
                args.facility,
                &args.ident,
                style,
            )
            .context("syslog output (use -d or --output to log elsewhere)")?,
        ),
    };
    Ok(std::iter::once(output).chain(shipping).collect())
}
