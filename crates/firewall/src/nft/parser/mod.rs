//! A recursive-descent parser for the nftables subset host firewalls use, in
//! stages: the lexer's tokens become a [`stream`] (the files an [`include`]
//! names spliced in, variables expanded), read as [`statements`] (tables, chains, base chain
//! headers, `flush`, `add`/`delete`); a chain's rule goes to [`rule`] for its
//! matches and verdict, a set's body to [`sets`]; both read [`values`] as the
//! field they belong to needs them.
//!
//! Structure must be well-formed, and a mistake there is an error with
//! `FILE:LINE:COL` and a caret. Inside a rule, an expression this parser does
//! not model is kept as [`Match::Unknown`](crate::nft::Match::Unknown) instead
//! of failing: the checker treats it conservatively and the report lists it.

mod include;
mod rule;
mod sets;
mod statements;
mod stream;
mod values;

use std::path::{Path, PathBuf};

use statements::Parser;
pub use stream::ParseError;
use stream::TokenStream;

use crate::nft::model::Ruleset;

/// Reads a ruleset file; `include` is resolved relative to the including file.
pub fn parse_file(path: &Path) -> Result<Ruleset, ParseError> {
    parse_file_with_include_path(path, &[])
}

/// Reads a ruleset file as [`parse_file`] does; an `include` not found next
/// to the including file is looked for in each of `include_path` (nft's `-I`).
pub fn parse_file_with_include_path(
    path: &Path,
    include_path: &[PathBuf],
) -> Result<Ruleset, ParseError> {
    let text = std::fs::read(path).map_err(|e| ParseError {
        file: path.display().to_string(),
        line: 0,
        col: 0,
        message: format!("cannot read: {e}"),
        source_line: String::new(),
    })?;
    let text = String::from_utf8_lossy(&text).into_owned();
    Parser::new(TokenStream::new(
        path.display().to_string(),
        Some(path.to_path_buf()),
        include_path,
        text,
    )?)
    .run()
}

/// Reads ruleset text that did not come from a file (`name` is used in
/// messages); `include` is refused because there is no directory to resolve it in.
pub fn parse_str(name: &str, text: &str) -> Result<Ruleset, ParseError> {
    Parser::new(TokenStream::new(
        name.to_owned(),
        None,
        &[],
        text.to_owned(),
    )?)
    .run()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base_priorities(text: &str) -> Vec<i32> {
        let ruleset = parse_str("t.nft", text).unwrap_or_else(|e| panic!("{e}"));
        ruleset.tables[0]
            .chains
            .iter()
            .filter_map(|c| c.base.as_ref().map(|b| b.priority))
            .collect()
    }

    #[test]
    fn priorities_take_a_signed_offset_either_way_it_is_spaced() {
        let text = "table inet t {\n chain a { type filter hook input priority filter + 5; }\n chain b { type filter hook input priority filter+5; }\n chain c { type filter hook input priority mangle - 5; }\n chain d { type filter hook input priority raw-5; }\n}\n";
        assert_eq!(base_priorities(text), [5, 5, -155, -305]);
    }
}
