//! `connscope`: the one binary. Each subcommand lives in `cmd/` and is a thin
//! layer over a library crate: parse flags, call the library, print, pick an
//! exit status.

mod cmd;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "connscope", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Record connections: the tcpspy drop-in daemon (tcpspy's flags).
    Agent(cmd::agent::AgentArgs),
    /// Check tcpspy-compatible connection rules.
    #[command(subcommand)]
    Rules(cmd::rules::RulesCommand),
    /// Run the collector: HTTPS ingest and query API, syslog listener.
    Collector(cmd::collector::CollectorArgs),
    /// The connection map: export it as one HTML file.
    #[command(subcommand)]
    Map(cmd::map::MapCommand),
    /// Firewall rulesets from observed traffic: plan, check, diff.
    #[command(subcommand)]
    Firewall(cmd::firewall::FirewallCommand),
    /// Host groups and labels: add, list, show, remove, label, suggest.
    #[command(subcommand)]
    Groups(cmd::groups::GroupsCommand),
    /// Firewall policies per group or host: draft, show, edit-check, diff, check, render.
    #[command(subcommand)]
    Policy(cmd::policy::PolicyCommand),
    /// Reports from a store: edges, hosts (with sequence gaps), ports.
    #[command(subcommand)]
    Report(cmd::report::ReportCommand),
    /// Import tcpspy syslog files (plain, rotated, gzip) into a store.
    Import(cmd::import::ImportArgs),
    /// Stores themselves: migrate one into another (SQLite to ClickHouse).
    #[command(subcommand)]
    Store(cmd::store::StoreCommand),
    /// A small office in network namespaces, one agent per host, a collector,
    /// traffic on a schedule, the map; Ctrl-C removes it.
    Demo(cmd::demo::DemoArgs),
    /// Check this host can run the agent: kernel, BTF, capabilities, collector, spool.
    Doctor(cmd::doctor::DoctorArgs),
    /// Man pages and shell completions for the package.
    #[command(hide = true)]
    Generate(cmd::generate::GenerateArgs),
}

fn main() -> ExitCode {
    // Logs go to stderr so that stdout stays clean for events and reports.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CONNSCOPE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent(args) => cmd::agent_config::merged(args).and_then(cmd::agent::run),
        Command::Rules(command) => cmd::rules::run(command),
        Command::Collector(args) => cmd::collector::run(args),
        Command::Map(command) => cmd::map::run(command),
        Command::Firewall(command) => cmd::firewall::run(command),
        Command::Groups(command) => cmd::groups::run(command),
        Command::Policy(command) => cmd::policy::run(command),
        Command::Report(command) => cmd::report::run(command),
        Command::Import(args) => cmd::import::run(args),
        Command::Store(command) => cmd::store::run(command),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Doctor(args) => cmd::doctor::run(args),
        Command::Generate(args) => cmd::generate::run(Cli::command(), args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("connscope: {err:#}");
            ExitCode::FAILURE
        }
    }
}
