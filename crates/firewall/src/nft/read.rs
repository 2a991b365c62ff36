//! One door for a ruleset, whether it is a file (`connscope firewall check`)
//! or text from a request (the map's firewall mode): nft syntax or `nft -j`
//! JSON, told apart by the first non-blank character, and every error with
//! its 1-based line and column when known, so a user can find it. `include`
//! is resolved next to a file and refused in text from a request, which has
//! no directory to resolve it in.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::json::{parse_json, JsonRulesetError};
use super::{parse_file_with_include_path, parse_str, ParseError, Ruleset};

/// A ruleset that cannot be read: why, and where (1-based) when known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{error}")]
pub struct RulesetError {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

/// Reads nft text, or `nft -j` JSON when it starts with `{`; `name` is the
/// file name that error messages and rule locations show.
pub fn read_ruleset(name: &str, text: &str) -> Result<Ruleset, RulesetError> {
    if is_json(text.as_bytes()) {
        return read_json(name, text);
    }
    parse_str(name, text).map_err(RulesetError::from)
}

/// Reads a ruleset file as [`read_ruleset`] reads text, resolving `include`
/// relative to it.
pub fn read_ruleset_file(path: &Path) -> Result<Ruleset, RulesetError> {
    read_ruleset_file_with_include_path(path, &[])
}

/// Reads a ruleset file as [`read_ruleset_file`] does, looking for an
/// `include` not found next to the including file in each of `include_path`
/// (nft's `-I`).
pub fn read_ruleset_file_with_include_path(
    path: &Path,
    include_path: &[PathBuf],
) -> Result<Ruleset, RulesetError> {
    let bytes = std::fs::read(path).map_err(|e| RulesetError {
        error: format!("reading {}: {e}", path.display()),
        line: None,
        column: None,
    })?;
    if is_json(&bytes) {
        return read_json(
            &path.display().to_string(),
            &String::from_utf8_lossy(&bytes),
        );
    }
    parse_file_with_include_path(path, include_path).map_err(RulesetError::from)
}

/// JSON starts with `{`; nft text never does.
fn is_json(text: &[u8]) -> bool {
    text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn read_json(name: &str, text: &str) -> Result<Ruleset, RulesetError> {
    parse_json(text).map_err(|e| {
        let (line, column) = match &e {
            JsonRulesetError::Syntax { line, column, .. } => {
                (u32::try_from(*line).ok(), u32::try_from(*column).ok())
            }
            JsonRulesetError::Shape(_) => (None, None),
        };
        RulesetError {
            error: format!("{name}: {e}"),
            line,
            column,
        }
    })
}

impl From<ParseError> for RulesetError {
    fn from(e: ParseError) -> RulesetError {
        RulesetError {
            error: e.to_string(),
            line: (e.line > 0).then_some(e.line),
            column: (e.col > 0).then_some(e.col),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moved from the collector's firewall handler.
    #[test]
    fn a_malformed_ruleset_names_line_and_column() {
        let read = |text| read_ruleset("ruleset", text);
        let err = read("table inet f {\n  chain input {\n    tcp dport 70000 accept\n  }\n}\n")
            .unwrap_err();
        assert_eq!(err.line, Some(3), "{err:?}");
        assert!(err.column.is_some(), "{err:?}");
        assert!(err.error.starts_with("ruleset:3:"), "{err:?}");

        let err = read("{\"nftables\": [\n  {\"table\": }\n]}").unwrap_err();
        assert_eq!((err.line, err.column.is_some()), (Some(2), true), "{err:?}");

        let err = read("include \"/etc/passwd\"\n").unwrap_err();
        assert_eq!(err.line, Some(1), "{err:?}");
    }

    #[test]
    fn text_and_json_read_into_the_same_ruleset_model() {
        let text = read_ruleset(
            "r.nft",
            "table inet f {\n  chain output {\n    type filter hook output priority 0; policy drop;\n  }\n}\n",
        )
        .unwrap();
        let json = read_ruleset(
            "r.json",
            r#"  {"nftables": [{"table": {"family": "inet", "name": "f", "handle": 1}},
              {"chain": {"family": "inet", "table": "f", "name": "output", "handle": 1,
                         "type": "filter", "hook": "output", "prio": 0, "policy": "drop"}}]}"#,
        )
        .unwrap();
        assert_eq!(text.tables.len(), 1);
        assert_eq!(json.tables.len(), 1);
        assert_eq!(text.tables[0].name, json.tables[0].name);
        assert_eq!(text.tables[0].chains.len(), json.tables[0].chains.len());
    }

    #[test]
    fn a_file_is_read_with_its_includes_and_may_be_json() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let main = write(
            "main.nft",
            "table inet f {\n  chain input {\n    type filter hook input priority 0; policy drop;\n  }\n}\n",
        );
        assert_eq!(read_ruleset_file(&main).unwrap().tables.len(), 1);
        // Read as a file: `include` is looked for next to it, not refused.
        let with_include = write("with-include.nft", "include \"absent.nft\"\n");
        let err = read_ruleset_file(&with_include).unwrap_err();
        assert!(err.error.contains("cannot include"), "{err:?}");
        assert_eq!(err.line, Some(1), "{err:?}");

        let json = write("live.json", "\n {\"nftables\": [\n  {\"table\": }\n]}");
        let err = read_ruleset_file(&json).unwrap_err();
        assert_eq!(err.line, Some(3), "{err:?}");
        assert!(
            err.error.starts_with(&json.display().to_string()),
            "{err:?}"
        );

        let err = read_ruleset_file(&dir.path().join("missing.nft")).unwrap_err();
        assert!(err.error.starts_with("reading "), "{err:?}");
    }
}
