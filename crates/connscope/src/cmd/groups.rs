//! `connscope groups add|list|show|remove|label|suggest`: host groups and
//! labels kept in the store. Definitions are checked here (with what is
//! wrong named) before anything is stored; members are resolved from the
//! hosts seen in --from/--to (default: everything stored), so they are
//! always today's. `suggest` only prints unless told `--apply NAME`.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use connscope_event::Timestamp;
use connscope_query::groups::{
    check_group, check_host, check_name, hosts_seen, members, parse_label, resolve, GroupView,
};
use connscope_query::suggest::suggest;
use connscope_query::TimeRangeArgs;
use connscope_store::{GroupKind, HostGroup, Store, TimeRange};

use super::flag_error;

#[derive(Subcommand)]
pub enum GroupsCommand {
    /// Define a group by name pattern, address range or list of hosts.
    Add(AddArgs),
    /// Every group with its definition and member count.
    List(ReadArgs),
    /// One group's definition and current members.
    Show(ShowArgs),
    /// Delete a group (its hosts and their labels stay).
    Remove(NameArgs),
    /// Set (key=value) or clear (key=) labels of a host.
    Label(LabelArgs),
    /// Propose groups from subnets, host names and alike behaviour.
    Suggest(SuggestArgs),
}

#[derive(Args)]
pub struct Db {
    #[command(flatten)]
    store: super::store_args::StoreArgs,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("definition").required(true)))]
pub struct AddArgs {
    #[command(flatten)]
    db: Db,
    /// The group's name: letters, digits, '.', '_', '-'.
    name: String,
    /// Hosts whose name matches one of these globs (ws-*, db?, *.hq).
    #[arg(long, num_args = 1.., value_name = "GLOB", group = "definition")]
    names: Vec<String>,
    /// Hosts seen with an address in one of these ranges (10.1.0.0/16, 2001:db8::/64).
    #[arg(long, num_args = 1.., value_name = "CIDR", group = "definition")]
    addresses: Vec<String>,
    /// These hosts, by name.
    #[arg(long, num_args = 1.., value_name = "HOST", group = "definition")]
    hosts: Vec<String>,
    /// A label of the group (role=workstation); repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Replace a group of the same name instead of refusing.
    #[arg(long)]
    replace: bool,
}

#[derive(Args)]
#[command(
    after_help = "Members are the hosts seen in --from/--to; without them, in everything stored."
)]
pub struct ReadArgs {
    #[command(flatten)]
    db: Db,
    #[command(flatten)]
    range: TimeRangeArgs,
    /// table (for people) or json (as `GET /api/v1/groups` shows groups).
    #[arg(long, default_value = "table", value_name = "FORMAT")]
    format: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Table,
    Json,
}

fn print_json(value: serde_json::Value) -> Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    read: ReadArgs,
    name: String,
}

#[derive(Args)]
pub struct NameArgs {
    #[command(flatten)]
    db: Db,
    name: String,
}

#[derive(Args)]
pub struct LabelArgs {
    #[command(flatten)]
    db: Db,
    host: String,
    /// key=value sets a label, key= clears it.
    #[arg(required = true, value_name = "KEY=VALUE")]
    labels: Vec<String>,
}

#[derive(Args)]
pub struct SuggestArgs {
    #[command(flatten)]
    read: ReadArgs,
    /// Add the suggestion of this name as a group (repeatable).
    #[arg(long, value_name = "NAME")]
    apply: Vec<String>,
}

pub fn run(command: GroupsCommand) -> Result<ExitCode> {
    match command {
        GroupsCommand::Add(args) => add(args),
        GroupsCommand::List(args) => list(&args),
        GroupsCommand::Show(args) => show(&args),
        GroupsCommand::Remove(args) => {
            let store = open(&args.db)?;
            if !store.remove_group(&args.name)? {
                bail!("no group {:?}", args.name);
            }
            println!("removed group {}", args.name);
            Ok(ExitCode::SUCCESS)
        }
        GroupsCommand::Label(args) => label(&args),
        GroupsCommand::Suggest(args) => suggest_groups(&args),
    }
}

fn open(db: &Db) -> Result<Arc<dyn Store>> {
    db.store.open_existing()
}

fn range(args: &ReadArgs) -> Result<TimeRange> {
    args.range
        .resolve(Timestamp::now(), TimeRange::ALL)
        .map_err(flag_error)
}

fn add(args: AddArgs) -> Result<ExitCode> {
    let (kind, patterns) = if !args.names.is_empty() {
        (GroupKind::Names, args.names)
    } else if !args.addresses.is_empty() {
        (GroupKind::Addresses, args.addresses)
    } else {
        (GroupKind::Hosts, args.hosts)
    };
    let mut labels = args
        .labels
        .iter()
        .map(|l| parse_label(l))
        .collect::<Result<Vec<_>, _>>()?;
    labels.sort();
    if let Some(pair) = labels.windows(2).find(|w| w[0].0 == w[1].0) {
        bail!("label key {:?} given twice", pair[0].0);
    }
    let group = HostGroup {
        name: args.name,
        kind,
        patterns,
        labels,
    };
    check_group(&group)?;
    let store = open(&args.db)?;
    if !args.replace && store.groups()?.iter().any(|g| g.name == group.name) {
        bail!(
            "group {:?} exists; `groups remove` it or add with --replace",
            group.name
        );
    }
    store.put_group(&group)?;
    let members = resolve(&group, &hosts_seen(&*store, TimeRange::ALL)?)?;
    println!(
        "added group {} ({} {}): {} member(s) now",
        group.name,
        kind.as_str(),
        group.patterns.join(" "),
        members.hosts.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn labels_text(labels: &[(String, String)]) -> String {
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join(",")
}

fn list(args: &ReadArgs) -> Result<ExitCode> {
    let store = open(&args.db)?;
    let groups = store.groups()?;
    let memberships = members(&*store, range(args)?)?;
    if args.format == Output::Json {
        let views: Vec<GroupView> = groups
            .into_iter()
            .zip(memberships)
            .map(|(g, m)| GroupView::new(g, m))
            .collect();
        return print_json(serde_json::to_value(views)?);
    }
    if groups.is_empty() {
        println!("no groups (see `connscope groups suggest`)");
    }
    for (group, membership) in groups.iter().zip(&memberships) {
        println!(
            "{}\t{} {}\t{}\t{} member(s)",
            group.name,
            group.kind.as_str(),
            group.patterns.join(" "),
            labels_text(&group.labels),
            membership.hosts.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn show(args: &ShowArgs) -> Result<ExitCode> {
    let store = open(&args.read.db)?;
    let Some(group) = store.groups()?.into_iter().find(|g| g.name == args.name) else {
        bail!("no group {:?}", args.name);
    };
    let members = resolve(&group, &hosts_seen(&*store, range(&args.read)?)?)?;
    if args.read.format == Output::Json {
        return print_json(serde_json::to_value(GroupView::new(group, members))?);
    }
    println!("group {}", group.name);
    println!("  {}: {}", group.kind.as_str(), group.patterns.join(" "));
    if !group.labels.is_empty() {
        println!("  labels: {}", labels_text(&group.labels));
    }
    println!("  members ({}):", members.hosts.len());
    for host in &members.hosts {
        println!("    {host}");
    }
    if !members.unseen.is_empty() {
        println!("  listed but not seen: {}", members.unseen.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}

fn label(args: &LabelArgs) -> Result<ExitCode> {
    check_host(&args.host)?;
    let mut changes = Vec::new();
    for text in &args.labels {
        match text.strip_suffix('=') {
            Some(key) if !key.contains('=') => {
                check_name("label key", key)?;
                changes.push((key.to_string(), None));
            }
            _ => {
                let (key, value) = parse_label(text)?;
                changes.push((key, Some(value)));
            }
        }
    }
    let store = open(&args.db)?;
    for (key, value) in &changes {
        store.set_host_label(&args.host, key, value.as_deref())?;
    }
    let now: Vec<String> = store
        .host_labels()?
        .into_iter()
        .filter(|l| l.host == args.host)
        .map(|l| format!("{}={}", l.key, l.value))
        .collect();
    println!("{}: {}", args.host, now.join(","));
    Ok(ExitCode::SUCCESS)
}

fn suggest_groups(args: &SuggestArgs) -> Result<ExitCode> {
    let store = open(&args.read.db)?;
    let suggestions = suggest(&*store, range(&args.read)?)?;
    for name in &args.apply {
        let Some(s) = suggestions.iter().find(|s| &s.name == name) else {
            bail!("no suggestion {name:?} (run `groups suggest` to see them)");
        };
        if store.groups()?.iter().any(|g| g.name == s.name) {
            bail!("group {name:?} exists; add it under another name with `groups add`");
        }
        store.put_group(&s.group())?;
        println!("added group {name}");
    }
    if !args.apply.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    if args.read.format == Output::Json {
        return print_json(serde_json::to_value(&suggestions)?);
    }
    if suggestions.is_empty() {
        println!("no suggestions");
    }
    for s in &suggestions {
        println!(
            "{}\t{} {}\t{}\n    would have: {}",
            s.name,
            s.kind.as_str(),
            s.patterns.join(" "),
            s.why,
            s.hosts.join(" ")
        );
    }
    if !suggestions.is_empty() {
        println!("(nothing applied: use `groups add` or `groups suggest --apply NAME`)");
    }
    Ok(ExitCode::SUCCESS)
}
