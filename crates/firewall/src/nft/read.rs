//! One door for a ruleset that arrives as text (the map's firewall mode sends
//! it in a request): nft syntax or `nft -j` JSON, told apart by the first
//! non-blank character as the CLI does, and every error with its 1-based line
//! and column when known, so a user can find it. `include` is refused: text
//! from a request has no directory to resolve it in.

use serde::Serialize;

use super::json::{parse_json, JsonRulesetError};
use super::{parse_str, Ruleset};

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
    if text.trim_start().starts_with('{') {
        return parse_json(text).map_err(|e| {
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
        });
    }
    parse_str(name, text).map_err(|e| RulesetError {
        error: e.to_string(),
        line: (e.line > 0).then_some(e.line),
        column: (e.col > 0).then_some(e.col),
    })
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
}
