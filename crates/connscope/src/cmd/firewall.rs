//! `connscope firewall plan|check|diff` (`backtest` is in its own file): allowlists from what a host (and,
//! as evidence of what it will need, its groups and subnets) was seen doing,
//! and what-if checks of a ruleset against it. The logic lives in
//! `connscope-firewall`; this reads the store, prints and picks exit statuses.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use connscope_event::Timestamp;
use connscope_firewall::by_name::{check_with_name_sets, plan_fleet_by_name};
use connscope_firewall::check::{describe, FlowVerdict};
use connscope_firewall::from_store::{fleet_flows, fleet_groups, name_set_members, observed_flows};
use connscope_firewall::nft::{self, Ruleset};
use connscope_firewall::plan::{Evidence, IpFamily};
use connscope_firewall::render::{self, evidence_text};
use connscope_firewall::{
    diff, group_plan, plan, ExactPlanner, FleetFlows, FleetPlanner, Generalize, GroupMembers,
    GroupPlanner, ObservedFlow, Outcome, PlanOptions, SubnetPlanner,
};
use connscope_query::naming::RemoteNames;
use connscope_query::TimeRangeArgs;
use connscope_store::{Store, TimeRange};

use super::flag_error;

#[derive(Subcommand)]
pub enum FirewallCommand {
    /// Print a ruleset that allows what the host was seen doing, and nothing else.
    Plan(PlanArgs),
    /// Replay the host's stored connections against a proposed nftables
    /// ruleset; list what it would block (exit status 1 if anything).
    Check(CheckArgs),
    /// Compare the host's observed traffic with a ruleset (a file, or the one
    /// loaded now): blocked flows, unused rules, idle listening ports.
    Diff(DiffArgs),
    /// Learn plans on the history before --learn-to, replay the history after
    /// it against them: what would have been blocked, per host and edge,
    /// beside what each plan allows (exit status 1 if anything).
    Backtest(super::firewall_backtest::BacktestCmd),
}

#[derive(Args)]
#[command(after_help = "Without --from the range starts in 1970; without --to it ends now.")]
pub struct Source {
    #[command(flatten)]
    store: super::store_args::StoreArgs,
    /// The host to plan for, as it names itself in its events.
    #[arg(long)]
    host: String,
    #[command(flatten)]
    range: TimeRangeArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// An nftables script for `nft -f` (one `inet connscope` table).
    Nft,
    /// An `iptables-restore` document (IPv4).
    Iptables,
    /// An `ip6tables-restore` document (IPv6).
    Ip6tables,
    /// The plan as data, with full evidence.
    Json,
}

/// How outbound destinations are allowed.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Outbound {
    /// By address (widened as --learn and --generalize say).
    Address,
    /// By the DNS name (or TLS server name) the host learned for the
    /// address, where it learned one: an nft set per name, which
    /// `connscope agent --nft-name-sets` fills; other addresses as `address`.
    ByName,
}

/// How far a plan reaches beyond what each host itself was seen doing.
#[derive(Clone, Copy, ValueEnum)]
enum Learn {
    /// Only what the host itself did (peers widened by --widen only).
    Exact,
    /// What the host's groups did, when enough members did it; hosts in no
    /// group as `subnet`.
    Group,
    /// Each service's peers widened to the subnets they span (a /24, a /64 at most).
    Subnet,
}

#[derive(Args)]
#[command(after_help = "Without --from the range starts in 1970; without --to it ends now.")]
pub struct PlanArgs {
    #[command(flatten)]
    store: super::store_args::StoreArgs,
    /// The host to plan for, as it names itself in its events.
    #[arg(long, required_unless_present = "group", conflicts_with = "group")]
    host: Option<String>,
    /// Plan one ruleset for every member of this group (`connscope groups`),
    /// listing the rules only some members need.
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    #[command(flatten)]
    range: TimeRangeArgs,
    /// How far the plan generalises from the evidence (`--learn` is the
    /// same flag).
    #[arg(long, value_enum, default_value = "group", alias = "learn")]
    generalize: Learn,
    /// The share of a group's members (0 to 1) that must have used a service
    /// before the whole group gets it, or `any` for any one member.
    #[arg(long, default_value = "0.5", value_name = "SHARE|any", value_parser = parse_share)]
    min_share: f64,
    #[arg(long, value_enum, default_value = "nft")]
    format: Format,
    /// How far IPv4 peers are widened: exact, a prefix length (e.g. 24), or any.
    #[arg(long, default_value = "exact", value_name = "exact|LEN|any")]
    widen: Generalize,
    /// How far IPv6 peers are widened: exact, a prefix length (e.g. 64), or any.
    #[arg(long, default_value = "exact", value_name = "exact|LEN|any")]
    widen_v6: Generalize,
    /// Flows seen fewer times than this are listed for review instead of allowed.
    #[arg(long, default_value_t = 1, value_name = "N")]
    min_count: u64,
    /// End chains with a reject (TCP reset, ICMP admin-prohibited) instead of a silent drop.
    #[arg(long)]
    reject: bool,
    /// How outbound destinations are allowed: `address`, or `by-name` (nft only).
    #[arg(long, value_enum, default_value = "address")]
    outbound: Outbound,
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    source: Source,
    /// The proposed ruleset: nft text (as for `nft -f`) or `nft -j` JSON.
    #[arg(long, value_name = "FILE")]
    ruleset: PathBuf,
    #[command(flatten)]
    include_path: IncludePath,
}

/// Where the ruleset's `include`s are looked for, as nft's `-I`.
#[derive(Args)]
pub struct IncludePath {
    /// A directory to look for an `include`d file in when it is not next to
    /// the including file (repeatable, searched in order; nft's `-I`).
    #[arg(short = 'I', long = "includepath", value_name = "DIR")]
    dirs: Vec<PathBuf>,
}

#[derive(Args)]
pub struct DiffArgs {
    #[command(flatten)]
    source: Source,
    /// Compare with this ruleset file (nft text or `nft -j` JSON).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "live",
        required_unless_present = "live"
    )]
    ruleset: Option<PathBuf>,
    /// Compare with the ruleset loaded now (`nft -j list ruleset`).
    #[arg(long)]
    live: bool,
    #[command(flatten)]
    include_path: IncludePath,
}

pub fn run(command: FirewallCommand) -> Result<ExitCode> {
    match command {
        FirewallCommand::Plan(args) => run_plan(args),
        FirewallCommand::Check(args) => run_check(args),
        FirewallCommand::Diff(args) => run_diff(args),
        FirewallCommand::Backtest(cmd) => super::firewall_backtest::run(cmd),
    }
}

/// The store and the range its flows are read in (rollups round to hours, so
/// without --from the range starts at the epoch rather than the dawn of i64).
fn open_store(
    store: &super::store_args::StoreArgs,
    range: &TimeRangeArgs,
) -> Result<(Arc<dyn Store>, TimeRange)> {
    let now = Timestamp::now();
    let everything = TimeRange {
        from: Timestamp::from_nanos(0),
        to: now,
    };
    let range = range.resolve(now, everything).map_err(flag_error)?;
    Ok((store.open_existing()?, range))
}

fn load_flows(source: &Source) -> Result<Vec<ObservedFlow>> {
    let (store, range) = open_store(&source.store, &source.range)?;
    let stored = observed_flows(&*store, &source.host, range)?;
    if stored.unknown_direction_edges > 0 {
        tracing::warn!(
            edges = stored.unknown_direction_edges,
            "edges of unknown direction (e.g. imported tcpspy logs) are left out"
        );
    }
    if stored.flows.is_empty() {
        tracing::warn!(host = %source.host, "no connections stored for this host in the range");
    }
    Ok(stored.flows)
}

fn parse_share(s: &str) -> Result<f64, String> {
    if s == "any" {
        return Ok(0.0);
    }
    s.parse::<f64>()
        .ok()
        .filter(|share| (0.0..=1.0).contains(share))
        .ok_or_else(|| format!("expected a share from 0 to 1 or `any`, not {s:?}"))
}

/// Every host's flows in the plan's range, and the store's host groups with
/// their members in it (`connscope groups`; hosts in none are planned as
/// `subnet` by the group planner).
fn load_fleet(args: &PlanArgs) -> Result<(FleetFlows, Vec<GroupMembers>)> {
    let (store, range) = open_store(&args.store, &args.range)?;
    let groups = fleet_groups(&*store, range)?;
    let fleet = fleet_flows(&*store, range)?;
    let unknown: usize = fleet.values().map(|s| s.unknown_direction_edges).sum();
    if unknown > 0 {
        tracing::warn!(
            edges = unknown,
            "edges of unknown direction (e.g. imported tcpspy logs) are left out"
        );
    }
    let fleet = fleet
        .into_iter()
        .map(|(host, stored)| (host, stored.flows))
        .collect();
    Ok((fleet, groups))
}

fn run_plan(args: PlanArgs) -> Result<ExitCode> {
    let options = PlanOptions {
        generalize_v4: args.widen,
        generalize_v6: args.widen_v6,
        min_count: args.min_count,
        reject: args.reject,
    };
    let (fleet, groups) = load_fleet(&args)?;
    let subnet = SubnetPlanner {
        options,
        ..SubnetPlanner::default()
    };
    let planner: Box<dyn FleetPlanner> = match args.generalize {
        Learn::Exact => Box::new(ExactPlanner { options }),
        Learn::Subnet => Box::new(subnet),
        Learn::Group => Box::new(GroupPlanner {
            options,
            min_share: args.min_share,
            ungrouped: subnet,
        }),
    };
    let mut plans = match args.outbound {
        Outbound::Address => planner.plan_fleet(&fleet, &groups),
        Outbound::ByName => {
            let (store, range) = open_store(&args.store, &args.range)?;
            let names = RemoteNames::load(&*store, range)?;
            plan_fleet_by_name(planner.as_ref(), &fleet, &groups, &names, options)
        }
    };
    let plan = match (&args.host, &args.group) {
        (Some(host), _) => {
            if !fleet.contains_key(host) {
                tracing::warn!(%host, "no connections stored for this host in the range");
            }
            plans
                .remove(host)
                .unwrap_or_else(|| plan(host, &[], options))
        }
        (None, Some(name)) => {
            let Some(group) = groups.iter().find(|g| g.name == *name) else {
                bail!("no group {name:?} in the store (see `connscope groups list`)");
            };
            group_plan(group, &plans)
        }
        (None, None) => bail!("--host or --group is required"),
    };
    if !plan.review.is_empty() {
        tracing::warn!(
            flows = plan.review.len(),
            "flows held for review are not allowed (see the comments)"
        );
    }
    plan.check_matchable()?;
    if !plan.named_rules.is_empty() && matches!(args.format, Format::Iptables | Format::Ip6tables) {
        bail!(
            "--outbound by-name needs nftables sets ({} rule(s) by name); use --format nft or json",
            plan.named_rules.len()
        );
    }
    let text = match args.format {
        Format::Nft => render::nft(&plan),
        Format::Iptables => render::iptables(&plan, IpFamily::Ipv4),
        Format::Ip6tables => render::iptables(&plan, IpFamily::Ipv6),
        Format::Json => serde_json::to_string_pretty(&plan)? + "\n",
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn live_ruleset() -> Result<Ruleset> {
    let out = Command::new("nft")
        .args(["-j", "list", "ruleset"])
        .output()
        .context("running `nft -j list ruleset`")?;
    if !out.status.success() {
        bail!(
            "`nft -j list ruleset` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(nft::json::parse_json(&String::from_utf8_lossy(
        &out.stdout,
    ))?)
}

fn edge_line(flow: &ObservedFlow) -> String {
    let arrow = match flow.direction {
        connscope_firewall::FlowDirection::Inbound => format!("{} -> {}", flow.remote, flow.local),
        connscope_firewall::FlowDirection::Outbound => format!("{} -> {}", flow.local, flow.remote),
    };
    format!(
        "{} {} port {} ({arrow}): {}",
        flow.direction.as_str(),
        flow.protocol,
        flow.service_port,
        evidence_text(&Evidence::of(flow))
    )
}

fn print_verdict(ruleset: &Ruleset, flow: &ObservedFlow, verdict: &FlowVerdict) {
    let tag = match verdict.outcome {
        Outcome::Blocked => "BLOCKED",
        Outcome::MaybeBlocked => "MAYBE BLOCKED",
        Outcome::Allowed => "allowed",
    };
    println!("{tag}: {}", edge_line(flow));
    for d in &verdict.dropped_by {
        println!("    dropped by {}", describe(ruleset, *d));
    }
    for u in &verdict.unknowns {
        println!("    unknown: {u}");
    }
}

fn print_unsupported(ruleset: &Ruleset) {
    if ruleset.unsupported.is_empty() {
        return;
    }
    println!("\nNot evaluated (treated as unknown: both outcomes followed, so affected flows show as MAYBE BLOCKED):");
    for u in &ruleset.unsupported {
        println!("    {}: {}", u.location, u.text);
    }
}

fn run_check(args: CheckArgs) -> Result<ExitCode> {
    let ruleset = nft::read_ruleset_file_with_include_path(&args.ruleset, &args.include_path.dirs)?;
    let flows = load_flows(&args.source)?;
    // Name sets (`--outbound by-name`) hold what the host's named
    // connections say they held.
    let (store, range) = open_store(&args.source.store, &args.source.range)?;
    let members = name_set_members(&*store, &args.source.host, range)?;
    let verdicts = check_with_name_sets(&ruleset, &flows, &members);
    let mut order: Vec<usize> = (0..flows.len())
        .filter(|&i| verdicts[i].outcome != Outcome::Allowed)
        .collect();
    order.sort_by_key(|&i| {
        (
            verdicts[i].outcome,
            flows[i].direction,
            flows[i].service_port,
            flows[i].remote,
        )
    });
    for &i in &order {
        print_verdict(&ruleset, &flows[i], &verdicts[i]);
    }
    let blocked = order
        .iter()
        .filter(|&&i| verdicts[i].outcome == Outcome::Blocked)
        .count();
    let maybe = order.len() - blocked;
    let conns: u64 = order.iter().map(|&i| flows[i].connections).sum();
    println!(
        "{blocked} of {} observed edges would be blocked, {maybe} may be ({conns} connections)",
        flows.len()
    );
    print_unsupported(&ruleset);
    Ok(if order.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn run_diff(args: DiffArgs) -> Result<ExitCode> {
    let ruleset = match &args.ruleset {
        Some(path) => nft::read_ruleset_file_with_include_path(path, &args.include_path.dirs)?,
        None => live_ruleset()?,
    };
    let flows = load_flows(&args.source)?;
    // Listeners are not in the store; they can only be read here, on the host itself.
    let listeners = if connscope_names::host_name().as_deref() == Some(args.source.host.as_str()) {
        Some(connscope_firewall::listening::local_listeners().context("reading /proc/net")?)
    } else {
        None
    };
    let d = diff(&ruleset, &flows, listeners.as_deref());
    println!("Observed but blocked ({}):", d.blocked.len());
    for (flow, verdict) in &d.blocked {
        print_verdict(&ruleset, flow, verdict);
    }
    println!("\nAllowed but never used ({}):", d.unused_rules.len());
    for id in &d.unused_rules {
        println!(
            "    {}",
            describe(&ruleset, connscope_firewall::check::Decider::Rule(*id))
        );
    }
    match &d.idle_listeners {
        Some(idle) => {
            println!("\nListening, but nobody connected ({}):", idle.len());
            for l in idle {
                println!("    {} {}:{}", l.protocol, l.addr, l.port);
            }
        }
        None => println!(
            "\nListening ports: not checked ({} is not this machine; the store does not record listeners)",
            args.source.host
        ),
    }
    print_unsupported(&ruleset);
    let differs = !d.blocked.is_empty()
        || !d.unused_rules.is_empty()
        || d.idle_listeners.as_ref().is_some_and(|l| !l.is_empty());
    Ok(if differs {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
