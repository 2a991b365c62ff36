//! `connscope`: the one binary. Each subcommand lives in `cmd/` and is a thin
//! layer over a library crate: parse flags, call the library, print, pick an
//! exit status.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Reports from a store: edges, hosts (with sequence gaps), ports.
    #[command(subcommand)]
    Report(cmd::report::ReportCommand),
    /// Import tcpspy syslog files (plain, rotated, gzip) into a store.
    Import(cmd::import::ImportArgs),
    /// Stores themselves: migrate one into another (SQLite to ClickHouse).
    #[command(subcommand)]
    Store(cmd::store::StoreCommand),
    /// Everything on one machine: collector, local agent, real traffic, the map.
    Demo(cmd::demo::DemoArgs),
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
        Command::Agent(args) => cmd::agent::run(args),
        Command::Rules(command) => cmd::rules::run(command),
        Command::Collector(args) => cmd::collector::run(args),
        Command::Map(command) => cmd::map::run(command),
        Command::Firewall(command) => cmd::firewall::run(command),
        Command::Groups(command) => cmd::groups::run(command),
        Command::Report(command) => cmd::report::run(command),
        Command::Import(args) => cmd::import::run(args),
        Command::Store(command) => cmd::store::run(command),
        Command::Demo(args) => cmd::demo::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("connscope: {err:#}");
            ExitCode::FAILURE
        }
    }
}
