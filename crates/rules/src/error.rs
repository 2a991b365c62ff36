//! Diagnostics: every problem found while reading rules, each pointing at its
//! source, line and column, printed compiler-style with the line and a caret.

use std::fmt;

/// One problem in the rules, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    source: String,
    /// 1-based; 0 when the problem is with the source as a whole (unreadable file).
    line: usize,
    /// 1-based, counted in characters.
    column: usize,
    line_text: String,
    message: String,
}

impl Diagnostic {
    /// A problem at byte offset `at` of `text`.
    pub(crate) fn at(source: &str, text: &str, at: usize, message: String) -> Diagnostic {
        let line_start = text[..at].rfind('\n').map_or(0, |n| n + 1);
        let line_end = text[at..].find('\n').map_or(text.len(), |n| at + n);
        Diagnostic {
            source: source.to_owned(),
            line: text[..line_start].matches('\n').count() + 1,
            column: text[line_start..at].chars().count() + 1,
            line_text: text[line_start..line_end].trim_end_matches('\r').to_owned(),
            message,
        }
    }

    pub(crate) fn whole_source(source: &str, message: String) -> Diagnostic {
        Diagnostic {
            source: source.to_owned(),
            line: 0,
            column: 0,
            line_text: String::new(),
            message,
        }
    }

    /// The file name, or `-e #N` for the N-th rule given on the command line.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// 1-based line, 0 if the problem is not at a place in the text.
    pub fn line(&self) -> usize {
        self.line
    }

    /// 1-based column in characters, 0 if the problem is not at a place in the text.
    pub fn column(&self) -> usize {
        self.column
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Diagnostic {
    /// `source:line:col: message`, then the line, then a caret under the column.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: {}", self.source, self.message);
        }
        writeln!(
            f,
            "{}:{}:{}: {}",
            self.source, self.line, self.column, self.message
        )?;
        writeln!(f, "    {}", self.line_text)?;
        // Keep tabs so the caret lines up however the terminal expands them.
        let pad: String = self
            .line_text
            .chars()
            .take(self.column - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(f, "    {pad}^")
    }
}

/// Every problem found in a set of rules; building fails if there is any.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RulesError {
    diagnostics: Vec<Diagnostic>,
}

impl RulesError {
    pub(crate) fn new(diagnostics: Vec<Diagnostic>) -> RulesError {
        RulesError { diagnostics }
    }

    /// All problems, in the order the sources were added.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            diagnostic.fmt(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caret_under_the_column_on_the_right_line() {
        let text = "ip\n\tuser \"joe\" and rport\n";
        let d = Diagnostic::at("rules", text, text.find("rport").unwrap(), "m".into());
        assert_eq!((d.line(), d.column()), (2, 17));
        assert_eq!(
            d.to_string(),
            "rules:2:17: m\n    \tuser \"joe\" and rport\n    \t               ^"
        );
    }
}
