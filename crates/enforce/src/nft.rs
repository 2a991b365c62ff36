//! Running `nft`: loading text as one transaction, checking it without
//! loading, and reading the kernel's tables back as JSON (parsed with serde,
//! never by scraping the text listing).
//!
//! The command is configurable (`ip netns exec NAME nft` in tests) so the
//! same code drives the host's nftables and a namespace's.

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::error::EnforceError;

/// The family and name of connscope's own table.
pub const TABLE: (&str, &str) = ("inet", connscope_firewall::render::NFT_TABLE);

/// The oldest nft connscope loads with: inet tables with NFLOG `log group`,
/// comments on rules and `-j` listings with them.
pub const MIN_VERSION: (u32, u32, u32) = (0, 9, 3);

/// How to run nft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nft {
    command: Vec<String>,
}

impl Default for Nft {
    fn default() -> Nft {
        Nft {
            command: vec!["nft".to_owned()],
        }
    }
}

/// A listing's item: only chains and rules matter here, anything else
/// (tables, sets, metainfo) is skipped.
#[derive(Debug, Deserialize)]
struct Item {
    chain: Option<Chain>,
    rule: Option<Rule>,
}

#[derive(Debug, Deserialize)]
struct Listing {
    nftables: Vec<Item>,
}

/// A chain as `nft -j` lists it; base chains have a hook.
#[derive(Debug, Clone, Deserialize)]
pub struct Chain {
    pub family: String,
    pub table: String,
    pub name: String,
    pub hook: Option<String>,
    pub prio: Option<serde_json::Value>,
    pub policy: Option<String>,
}

/// A rule as `nft -j` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Rule {
    pub family: String,
    pub table: String,
    pub chain: String,
    pub comment: Option<String>,
    pub expr: Vec<serde_json::Value>,
}

impl Rule {
    /// The packets and bytes of its anonymous counter, if it has one.
    pub fn counter(&self) -> Option<(u64, u64)> {
        self.expr.iter().find_map(|e| {
            let c = e.get("counter")?;
            Some((c.get("packets")?.as_u64()?, c.get("bytes")?.as_u64()?))
        })
    }

    /// Whether it can end a packet's way (drop or reject).
    pub fn drops(&self) -> bool {
        self.expr
            .iter()
            .any(|e| e.get("drop").is_some() || e.get("reject").is_some())
    }
}

/// The chains and rules of a JSON listing.
#[derive(Debug, Default)]
pub struct Tables {
    pub chains: Vec<Chain>,
    pub rules: Vec<Rule>,
}

/// Reads `nft -j list ...` output.
pub fn parse_listing(json: &str) -> Result<Tables, EnforceError> {
    let listing: Listing = serde_json::from_str(json).map_err(EnforceError::Listing)?;
    let mut tables = Tables::default();
    for item in listing.nftables {
        if let Some(chain) = item.chain {
            tables.chains.push(chain);
        }
        if let Some(rule) = item.rule {
            tables.rules.push(rule);
        }
    }
    Ok(tables)
}

impl Nft {
    /// nft run as `command` (its first element the program, e.g.
    /// `["ip", "netns", "exec", "lab", "nft"]`).
    pub fn with_command(command: Vec<String>) -> Nft {
        assert!(!command.is_empty(), "a command names a program");
        Nft { command }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, EnforceError> {
        let mut cmd = Command::new(&self.command[0]);
        cmd.args(&self.command[1..]).args(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let shown = || format!("{} {}", self.command.join(" "), args.join(" "));
        let mut child = cmd.spawn().map_err(|source| EnforceError::NftMissing {
            command: shown(),
            source,
        })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // nft reads all of stdin before it answers; a write error shows
            // up as its failure below.
            let _ = pipe.write_all(text.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|source| EnforceError::NftMissing {
                command: shown(),
                source,
            })?;
        if !out.status.success() {
            return Err(EnforceError::Nft {
                command: shown(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `nft --version`, checked against [`MIN_VERSION`].
    pub fn version(&self) -> Result<String, EnforceError> {
        let out = self.run(&["--version"], None)?;
        let found = parse_version(&out)?;
        if found < MIN_VERSION {
            let (a, b, c) = MIN_VERSION;
            return Err(EnforceError::NftTooOld {
                found: format!("{}.{}.{}", found.0, found.1, found.2),
                needed: format!("{a}.{b}.{c}"),
            });
        }
        Ok(format!("{}.{}.{}", found.0, found.1, found.2))
    }

    /// `nft -c -f -`: the kernel's own check of `text`, nothing loaded.
    pub fn check(&self, text: &str) -> Result<(), EnforceError> {
        self.run(&["-c", "-f", "-"], Some(text)).map(drop)
    }

    /// `nft -f -`: `text` loaded as one transaction.
    pub fn load(&self, text: &str) -> Result<(), EnforceError> {
        self.run(&["-f", "-"], Some(text)).map(drop)
    }

    /// Removes connscope's table (nothing else), whether or not it exists.
    pub fn remove_table(&self) -> Result<(), EnforceError> {
        let (family, name) = TABLE;
        self.load(&format!(
            "table {family} {name}\ndelete table {family} {name}\n"
        ))
    }

    /// connscope's table as nft lists it without counters (`-s`), or `None`
    /// when it is not loaded: what the tamper check compares.
    pub fn table_listing(&self) -> Result<Option<String>, EnforceError> {
        let (family, name) = TABLE;
        self.optional(&["-s", "list", "table", family, name])
    }

    /// connscope's table as JSON with its counters, `None` when not loaded.
    pub fn table_json(&self) -> Result<Option<Tables>, EnforceError> {
        let (family, name) = TABLE;
        self.optional(&["-j", "list", "table", family, name])?
            .map(|json| parse_listing(&json))
            .transpose()
    }

    /// The host's whole ruleset as JSON.
    pub fn ruleset_json(&self) -> Result<Tables, EnforceError> {
        parse_listing(&self.run(&["-j", "list", "ruleset"], None)?)
    }

    fn optional(&self, args: &[&str]) -> Result<Option<String>, EnforceError> {
        match self.run(args, None) {
            Ok(out) => Ok(Some(out)),
            Err(EnforceError::Nft { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// `nftables v1.0.6 (Lester Gooch #5)` -> (1, 0, 6).
fn parse_version(out: &str) -> Result<(u32, u32, u32), EnforceError> {
    let bad = || EnforceError::NftVersion(out.trim().to_owned());
    let word = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .ok_or_else(bad)?;
    let mut parts = word.split('.').map(|p| p.parse::<u32>());
    let mut next = || parts.next().unwrap_or(Ok(0)).map_err(|_| bad());
    Ok((next()?, next()?, next()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_from_nft_output() {
        assert_eq!(
            parse_version("nftables v1.0.6 (Lester Gooch #5)\n").unwrap(),
            (1, 0, 6)
        );
        assert_eq!(parse_version("nftables v0.9").unwrap(), (0, 9, 0));
        assert!(parse_version("nftables").is_err());
        assert!(parse_version("nftables vX.1").is_err());
    }

    #[test]
    fn a_listing_gives_its_chains_rules_and_counters() {
        let json = r#"{"nftables":[{"metainfo":{"version":"1.0.6","json_schema_version":1}},
            {"table":{"family":"inet","name":"site","handle":1}},
            {"chain":{"family":"inet","table":"site","name":"input","handle":1,"type":"filter","hook":"input","prio":-10,"policy":"accept"}},
            {"rule":{"family":"inet","table":"site","chain":"input","handle":2,"comment":"connscope rule inbound[0]",
              "expr":[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":9}},
                      {"counter":{"packets":3,"bytes":180}},{"drop":null}]}}]}"#;
        let tables = parse_listing(json).unwrap();
        assert_eq!(tables.chains[0].hook.as_deref(), Some("input"));
        assert_eq!(tables.rules[0].counter(), Some((3, 180)));
        assert!(tables.rules[0].drops());
        assert!(matches!(
            parse_listing("{\"nftables\": 3}"),
            Err(EnforceError::Listing(_))
        ));
    }
}
