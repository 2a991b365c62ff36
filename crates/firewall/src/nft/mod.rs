//! An nftables ruleset as the checker needs it: tables, chains, sets and rules
//! reduced to the matches and verdicts that decide a new connection's fate.
//!
//! Two readers fill it: [`parse_file`]/[`parse_str`] for the text language
//! (what `nft -f` loads) and [`json::parse_json`] for `nft -j list ruleset`;
//! [`read_ruleset`] and [`read_ruleset_file`] take either.
//! Whatever either cannot interpret is kept as [`Match::Unknown`] in its rule,
//! and listed in [`Ruleset::unsupported`], so the checker can be conservative
//! about it rather than silently wrong.

pub mod json;
pub mod lexer;
mod model;
mod numbers;
mod parser;
mod read;

pub use model::{
    BaseChain, Chain, Field, Hook, Location, Match, NamedSet, Op, Policy, Rule, Ruleset, Table,
    TableFamily, Unsupported, Value, Values, Verdict, L4,
};
pub use parser::{parse_file, parse_file_with_include_path, parse_str, ParseError};
pub use read::{
    read_ruleset, read_ruleset_file, read_ruleset_file_with_include_path, RulesetError,
};
