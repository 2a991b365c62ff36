//! The agent's settings file, `/etc/connscope/agent.toml` in the package.
//!
//! A service needs one place to look, and tcpspy's flags must keep working on
//! the command line: so every key is a long flag's name with `_` (the
//! collector's file uses `-`; the agent's keys are also written by `connscope
//! agent enroll` with `toml_edit`, and plain top-level keys keep that simple),
//! and a flag given on the command line wins over the file. A switch set in the
//! file cannot be turned off by a flag (flags have no "off" form); a list (rules,
//! rule files) adds the flags' entries to the file's.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use clap::ValueEnum;
use serde::Deserialize;

use super::agent::{AgentArgs, Format};

/// A value that may be written as one item or as a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub(crate) fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(item) => vec![item],
            OneOrMany::Many(items) => items,
        }
    }
}

/// The file as written: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    pub foreground: Option<bool>,
    pub executables: Option<bool>,
    pub rule: Option<OneOrMany<String>>,
    pub rules_file: Option<OneOrMany<PathBuf>>,
    pub no_default_rules: Option<bool>,
    pub numeric_ports: Option<bool>,
    pub facility: Option<String>,
    pub interval_ms: Option<u64>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub backend: Option<String>,
    pub netns: Option<String>,
    pub format: Option<String>,
    pub output: Option<PathBuf>,
    pub ident: Option<String>,
    pub syslog_socket: Option<PathBuf>,
    pub host_name: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub udp: Option<bool>,
    pub max_tcp_connections: Option<u32>,
    pub packet_cgroup: Option<PathBuf>,
    pub collector: Option<OneOrMany<String>>,
    pub collector_token_file: Option<PathBuf>,
    pub collector_ca: Option<PathBuf>,
    pub collector_fingerprint: Option<String>,
    pub spool_dir: Option<PathBuf>,
    pub spool_max_bytes: Option<u64>,
    pub metrics_listen: Option<String>,
    pub no_names: Option<bool>,
    pub nft_name_sets: Option<bool>,
    pub name_grace: Option<u64>,
    pub sni_wait_ms: Option<u64>,
    pub manage_firewall: Option<bool>,
    pub admin_network: Option<OneOrMany<String>>,
    pub admin_ssh_port: Option<OneOrMany<u16>>,
    pub firewall_log_group: Option<u16>,
    pub policy_poll: Option<u64>,
    pub policy_file: Option<PathBuf>,
    pub staging: Option<String>,
}

/// A file's value that did not parse, named by file and key.
fn parse<T>(path: &Path, key: &str, value: Option<String>) -> anyhow::Result<Option<T>>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    value
        .map(|text| {
            text.parse::<T>()
                .map_err(|e| anyhow::anyhow!("{}: {key} = {text:?}: {e}", path.display()))
        })
        .transpose()
}

impl AgentFile {
    /// Reads and checks the file; errors name the file, and toml's the line.
    pub fn load(path: &Path) -> anyhow::Result<Loaded> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        let file: AgentFile =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if file.interval_ms == Some(0) {
            anyhow::bail!("{}: interval_ms must be at least 1", path.display());
        }
        if file.max_tcp_connections == Some(0) {
            anyhow::bail!("{}: max_tcp_connections must be at least 1", path.display());
        }
        Ok(Loaded {
            path: path.to_owned(),
            file,
        })
    }
}

/// A file that was read, with where it came from (for errors).
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub file: AgentFile,
}

/// The flags with the settings file of `--config` (if given) under them.
pub fn merged(mut args: AgentArgs) -> anyhow::Result<AgentArgs> {
    if let Some(path) = args.config.clone() {
        AgentFile::load(&path)?.apply_under(&mut args)?;
    }
    // `agent firewall off` finds the agent's state directory in its file.
    if let Some(command) = args.glass_command() {
        if command.state_dir.is_none() && command.config.exists() {
            command.state_dir = AgentFile::load(&command.config)?.file.state_dir;
        }
    }
    Ok(args)
}

impl Loaded {
    /// Puts the file's values under the flags: a flag given wins.
    pub fn apply_under(self, args: &mut AgentArgs) -> anyhow::Result<()> {
        let Loaded { path, file } = self;
        let path = path.as_path();
        args.foreground |= file.foreground.unwrap_or(false);
        args.executables |= file.executables.unwrap_or(false);
        args.no_default_rules |= file.no_default_rules.unwrap_or(false);
        args.numeric_ports |= file.numeric_ports.unwrap_or(false);
        args.udp |= file.udp.unwrap_or(false);
        args.no_names |= file.no_names.unwrap_or(false);
        args.nft_name_sets |= file.nft_name_sets.unwrap_or(false);
        if args.no_names && args.nft_name_sets {
            anyhow::bail!(
                "{}: no_names and nft_name_sets together: the name sets are filled from the names",
                path.display()
            );
        }
        let flag_rules = std::mem::take(&mut args.rules);
        args.rules = file.rule.map(OneOrMany::into_vec).unwrap_or_default();
        args.rules.extend(flag_rules);
        let flag_files = std::mem::take(&mut args.rule_files);
        args.rule_files = file.rules_file.map(OneOrMany::into_vec).unwrap_or_default();
        args.rule_files.extend(flag_files);

        let format = file
            .format
            .map(|text| {
                Format::from_str(&text, false)
                    .map_err(|e| anyhow::anyhow!("{}: format = {text:?}: {e}", path.display()))
            })
            .transpose()?;
        args.format = args.format.or(format);
        args.facility = args.facility.or(parse(path, "facility", file.facility)?);
        args.backend = args.backend.or(parse(path, "backend", file.backend)?);
        args.netns = args.netns.or(parse(path, "netns", file.netns)?);
        args.interval_ms = args.interval_ms.or(file.interval_ms);
        args.user = args.user.take().or(file.user);
        args.group = args.group.take().or(file.group);
        args.output = args.output.take().or(file.output);
        args.ident = args.ident.take().or(file.ident);
        args.syslog_socket = args.syslog_socket.take().or(file.syslog_socket);
        args.host_name = args.host_name.take().or(file.host_name);
        args.state_dir = args.state_dir.take().or(file.state_dir);
        args.max_tcp_connections = args.max_tcp_connections.or(file.max_tcp_connections);
        args.packet_cgroup = args.packet_cgroup.take().or(file.packet_cgroup);
        args.metrics_listen =
            args.metrics_listen
                .or(parse(path, "metrics_listen", file.metrics_listen)?);
        args.name_grace = args.name_grace.or(file.name_grace);
        args.sni_wait_ms = args.sni_wait_ms.or(file.sni_wait_ms);

        let firewall = &mut args.firewall;
        firewall.manage_firewall |= file.manage_firewall.unwrap_or(false);
        if firewall.admin_networks.is_empty() {
            for network in file
                .admin_network
                .map(OneOrMany::into_vec)
                .unwrap_or_default()
            {
                firewall
                    .admin_networks
                    .extend(parse::<connscope_firewall::net::Prefix>(
                        path,
                        "admin_network",
                        Some(network),
                    )?);
            }
        }
        if firewall.admin_ssh_ports.is_empty() {
            firewall.admin_ssh_ports = file
                .admin_ssh_port
                .map(OneOrMany::into_vec)
                .unwrap_or_default();
        }
        if file.policy_poll == Some(0) {
            anyhow::bail!("{}: policy_poll must be at least 1", path.display());
        }
        firewall.firewall_log_group = firewall.firewall_log_group.or(file.firewall_log_group);
        firewall.policy_poll = firewall.policy_poll.or(file.policy_poll);
        firewall.policy_file = firewall.policy_file.take().or(file.policy_file);
        firewall.staging = firewall.staging.or(parse(path, "staging", file.staging)?);

        let ship = &mut args.ship;
        if ship.collector.is_empty() {
            ship.collector = file.collector.map(OneOrMany::into_vec).unwrap_or_default();
        }
        // The token and the trust are each one choice: a flag replaces the file's.
        if ship.collector_token.is_none() && ship.collector_token_file.is_none() {
            ship.collector_token_file = file.collector_token_file;
        }
        if ship.collector_ca.is_none() && ship.collector_fingerprint.is_none() {
            ship.collector_ca = file.collector_ca;
            if ship.collector_ca.is_none() {
                ship.collector_fingerprint =
                    parse(path, "collector_fingerprint", file.collector_fingerprint)?;
            }
        }
        ship.spool_dir = ship.spool_dir.take().or(file.spool_dir);
        ship.spool_max_bytes = ship.spool_max_bytes.or(file.spool_max_bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn merged(text: &str, flags: &[&str]) -> anyhow::Result<AgentArgs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        let mut args = Cli::try_parse_from(std::iter::once("agent").chain(flags.iter().copied()))
            .unwrap()
            .agent;
        AgentFile::load(&path)?.apply_under(&mut args)?;
        Ok(args)
    }

    /// The package's example parses, and so does every key in it uncommented.
    #[test]
    fn the_packaged_example_parses() {
        let example = include_str!("../../../../deploy/debian/agent.toml");
        merged(example, &[]).unwrap();
        let uncommented: String = example
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if is_setting(rest) => rest,
                _ => line,
            })
            .flat_map(|line| [line, "\n"])
            .collect();
        let args = merged(&uncommented, &[]).unwrap();
        assert!(!args.ship.collector.is_empty());
        assert!(args.ship.collector_token_file.is_some());
        assert!(args.metrics_listen.is_some());
        assert!(args.firewall.manage_firewall);
        assert_eq!(args.firewall.admin_networks.len(), 1);
        assert_eq!(
            args.firewall.staging,
            Some(super::super::agent_firewall::StagingArg::Audit)
        );
    }

    fn is_setting(line: &str) -> bool {
        line.split_once(" = ").is_some_and(|(key, _)| {
            !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
    }

    #[test]
    fn flags_win_over_the_file_and_lists_add_up() {
        let args = merged(
            r#"
collector = "https://collector.lan:8443"
collector_token_file = "/etc/connscope/agent.token"
collector_fingerprint = "SHA256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
state_dir = "/var/lib/from-file"
spool_max_bytes = 1000
rule = "rport 22"
rules_file = ["/etc/connscope/a.rules"]
interval_ms = 500
format = "json"
facility = "daemon"
backend = "sockdiag"
udp = true
"#,
            &[
                "--state-dir",
                "/var/lib/from-flag",
                "-e",
                "lport 80",
                "--collector-ca",
                "/etc/ca.pem",
                "-I",
                "200",
            ],
        )
        .unwrap();
        assert_eq!(args.state_dir, Some(PathBuf::from("/var/lib/from-flag")));
        assert_eq!(args.rules, ["rport 22", "lport 80"]);
        assert_eq!(args.rule_files, [PathBuf::from("/etc/connscope/a.rules")]);
        assert_eq!(args.interval_ms, Some(200));
        assert_eq!(args.format, Some(Format::Json));
        assert!(args.udp);
        assert_eq!(args.ship.collector, ["https://collector.lan:8443"]);
        assert_eq!(args.ship.spool_max_bytes, Some(1000));
        // The flag's trust replaces the file's: not both.
        assert_eq!(args.ship.collector_ca, Some(PathBuf::from("/etc/ca.pem")));
        assert!(args.ship.collector_fingerprint.is_none());
    }

    #[test]
    fn mistakes_name_the_file_and_key() {
        let err = merged("collector = \"https://c\"\ncolector_ca = \"/x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("agent.toml") && err.contains("line 2") && err.contains("colector_ca"),
            "{err}"
        );
        let err = merged("collector_fingerprint = \"SHA256:zz\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("collector_fingerprint = \"SHA256:zz\""),
            "{err}"
        );
        let err = merged("format = \"xml\"\n", &[]).unwrap_err().to_string();
        assert!(err.contains("format = \"xml\""), "{err}");
        let err = merged("admin_network = [\"10.0.0.0/33\"]\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("admin_network = \"10.0.0.0/33\""), "{err}");
        let err = merged("interval_ms = 0\n", &[]).unwrap_err().to_string();
        assert!(err.contains("interval_ms must be at least 1"), "{err}");
    }
}
