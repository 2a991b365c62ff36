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
    /// Check tcpspy-compatible connection rules.
    #[command(subcommand)]
    Rules(cmd::rules::RulesCommand),
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
        Command::Rules(command) => cmd::rules::run(command),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("connscope: {err:#}");
            ExitCode::FAILURE
        }
    }
}
