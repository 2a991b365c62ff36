//! `connscope firewall backtest`: plans learned before `--learn-to` replayed
//! against the history after it, printed as a table or JSON. Kept apart from
//! `firewall.rs` (plan, check, diff) because it plans every host at once
//! from one pass over the store; the work is `connscope_firewall::backtest`.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, ValueEnum};
use connscope_event::Timestamp;
use connscope_firewall::backtest::{BacktestArgs, BacktestReport, Surface};
use connscope_firewall::FlowDirection;

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Per planner: per host and in total, then the blocked edges.
    Table,
    /// The report as data (as the API answers).
    Json,
}

#[derive(Args)]
#[command(
    after_help = "Times: RFC 3339 with an offset, `now`, or back from now (-7d). \
Exit status 1 when any planner would have blocked a connection."
)]
pub struct BacktestCmd {
    #[command(flatten)]
    store: super::store_args::StoreArgs,
    /// Learn on the history before this time, test on the history after it.
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    learn_to: String,
    /// Learn from this time on (default: everything before --learn-to).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    learn_from: Option<String>,
    /// Test up to this time (default: now).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    until: Option<String>,
    /// The generalisations (planners) to compare, comma-separated: exact,
    /// subnet, group, each also as NAME+by-name (named outbound destinations
    /// by name); default: the three (`--planner` is the same flag).
    #[arg(long, value_name = "NAME,...", alias = "planner")]
    generalize: Option<String>,
    /// Also run rolling windows: learn this long, test the next --step, slide.
    #[arg(long, value_name = "SPAN")]
    window: Option<String>,
    /// How far a rolling window slides and how long it tests.
    #[arg(long, value_name = "SPAN", requires = "window")]
    step: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

pub fn run(cmd: BacktestCmd) -> Result<ExitCode> {
    let args = BacktestArgs {
        learn_from: cmd.learn_from,
        learn_to: cmd.learn_to,
        until: cmd.until,
        planner: cmd.generalize,
        window: cmd.window,
        step: cmd.step,
    };
    let request = args.resolve(Timestamp::now()).map_err(|mut e| {
        // The API's `planner` is this command's --generalize.
        if e.name == "planner" {
            e.name = "generalize";
        }
        anyhow::anyhow!("--{e}")
    })?;
    let store = cmd.store.open_existing()?;
    let report = request.run(&*store)?;
    match cmd.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => print!("{}", table(&report)),
    }
    let blocked = report
        .backtest
        .planners
        .iter()
        .any(|p| p.blocked_connections > 0);
    Ok(if blocked {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn addresses(surface: &Surface) -> String {
    if surface.address_space == u128::MAX {
        "all".to_owned()
    } else {
        surface.address_space.to_string()
    }
}

/// The report as text.
fn table(report: &BacktestReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Learned {} .. {}, tested {} .. {}",
        report.learn_from, report.learn_to, report.learn_to, report.until
    );
    for p in &report.backtest.planners {
        let _ = writeln!(out, "\nPlanner {}", p.planner);
        let _ = writeln!(
            out,
            "{:<24} {:>10} {:>10} {:>8} {:>6} {:>6} {:>12}",
            "host", "tested", "blocked", "edges", "ports", "peers", "addresses"
        );
        for h in &p.hosts {
            let name = if h.no_history {
                format!("{} (no history)", h.host)
            } else {
                h.host.clone()
            };
            let _ = writeln!(
                out,
                "{:<24} {:>10} {:>10} {:>8} {:>6} {:>6} {:>12}",
                name,
                h.tested_connections,
                h.blocked_connections,
                h.blocked.len(),
                h.surface.ports,
                h.surface.peers,
                addresses(&h.surface)
            );
        }
        let _ = writeln!(
            out,
            "{:<24} {:>10} {:>10} {:>8} {:>6} {:>6} {:>12}",
            "total",
            p.tested_connections,
            p.blocked_connections,
            p.blocked_edges,
            p.surface.ports,
            p.surface.peers,
            addresses(&p.surface)
        );
        let _ = writeln!(
            out,
            "not seen in the learning window: {} connections on {} edges",
            p.not_seen_connections, p.not_seen_edges
        );
        for h in &p.hosts {
            for b in &h.blocked {
                let arrow = match b.direction {
                    FlowDirection::Inbound => format!("{} -> {}", b.remote, b.local),
                    FlowDirection::Outbound => format!("{} -> {}", b.local, b.remote),
                };
                let _ = writeln!(
                    out,
                    "  {}: {} {} port {} ({arrow}): {} connection(s){}",
                    h.host,
                    b.direction.as_str(),
                    b.protocol,
                    b.service_port,
                    b.connections,
                    if b.not_seen_in_learning {
                        ", not seen in the learning window"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    for r in &report.rolling {
        let _ = writeln!(out, "\nRolling windows, planner {}", r.planner);
        for w in &r.windows {
            let _ = writeln!(
                out,
                "  learn {} .. {}, test .. {}: {} connections on {} edges blocked",
                w.learn_from, w.learn_to, w.test_to, w.blocked_connections, w.blocked_edges
            );
        }
        match r.new_edges_per_week {
            Some(n) => {
                let _ = writeln!(out, "  settled: {n:.1} new edges per week");
            }
            None => {
                let _ = writeln!(out, "  no window fits the range");
            }
        }
    }
    out
}
