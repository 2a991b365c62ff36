//! The tcpspy rule language: which connections to log.
//!
//! tcpspy(8) filters connections with rules such as
//! `not raddr 10.0.0.0/255.0.0.0 and rport 25 and (user "bob" or user "joe")`.
//! connscope's agent is a drop-in replacement, so it reads the same rules with
//! the same meaning; this crate parses them, reports every mistake with its
//! place, and evaluates them against [`ConnectionEvent`]s on the agent's hot
//! path. `docs/RULES.md` is the full language reference.
//!
//! ```
//! use connscope_rules::RuleSet;
//!
//! let rules = RuleSet::builder()
//!     .add_expr("-e #1", "rport 25 and not raddr 10.0.0.0/8")
//!     .build()
//!     .unwrap();
//! assert_eq!(rules.rules()[0].to_string(), "(rport 25 and not raddr 10.0.0.0/8)");
//! ```
//!
//! # Compatibility with tcpspy 1.7d
//!
//! The grammar, precedence and lexing follow tcpspy's, checked against the real
//! binary (`tests/tcpspy_oracle.rs` runs it side by side with this crate):
//!
//! - `not` binds tightest; **`and` and `or` have the same precedence and group
//!   from the left** ("rules are evaluated from left to right"): `a or b and c`
//!   means `(a or b) and c`. Use parentheses.
//! - Keywords are case-insensitive and need no space after them (`ip6or ip`).
//! - A text may hold several expressions one after another; each is a separate
//!   rule (`ip ip6` matches IPv4 or IPv6). A rule file is read as one stream, so
//!   a rule may continue on the next line. Such juxtaposition on one line is
//!   accepted but reported as a warning ([`RuleSet::warnings`]).
//! - Several `-e` rules and `-f` files combine with OR. A whitespace-only `-e`
//!   rule matches nothing; a file with no rules (empty, only comments) adds no
//!   rule. No rules at all means every connection matches.
//! - `#` starts a comment to the end of the line in rule files only.
//! - Numbers are decimal (leading zeros allowed); a port range is one token
//!   without spaces: `1024-65535`, `1024-`, `-1023`.
//! - `user "name"` and `lport "service"` are resolved when the rule is read
//!   (getpwnam(3), /etc/services for tcp).
//! - Addresses: `n.n.n.n`, `n.n.n.n/m.m.m.m` (any mask, even non-contiguous),
//!   `n.n.n.n/len` (1-32), `ipv6` and `ipv6/len` (1-128). The network is
//!   masked before comparing, so `laddr 127.0.0.1/8` matches 127.0.0.5. Each
//!   address comparison is false for the other family.
//! - `exe "glob"` matches the full executable path like
//!   `fnmatch(pattern, path, FNM_PATHNAME)`: `*`, `?` and `[...]` never match
//!   `/`, `\` escapes, no special leading dot, case matters. An unknown
//!   executable is matched as the empty string, so `exe ""` matches exactly
//!   the connections whose executable is unknown.
//! - Without `-p` tcpspy ignores exe comparisons (they are always true) and
//!   warns. [`ExeComparisons::AlwaysTrue`] gives that behaviour;
//!   [`RuleSet::uses_exe`] tells the caller when to warn.
//!
//! # Stricter than tcpspy
//!
//! Rules tcpspy silently misreads are errors here: `lport -` (tcpspy: every
//! port), ports above 65535 (tcpspy: taken modulo 65536), uids above
//! 4294967295. Everything else tcpspy rejects is rejected too, so a rule file
//! connscope accepts without extensions also works with tcpspy.
//!
//! Where tcpspy 1.7d is simply broken, connscope does what its manual says:
//! tcpspy rejects any rule where something follows an `exe` comparison
//! (`exe "/bin/sh" or ip` is a syntax error there), corrupts its heap when
//! given two `-e` rules ("free(): invalid next size") and then logs
//! erratically, and reads every IPv6 address from /proc as `::` on 64-bit
//! hosts (it logs `:::port`, and `laddr ::1` never matches).
//!
//! # Extensions
//!
//! Not in tcpspy; none can appear in a tcpspy rule, so they change the
//! meaning of no tcpspy rule:
//!
//! - `dir in` / `dir out`: the connection was accepted / made by this host (a
//!   connection of unknown direction matches neither).
//! - `proto tcp` / `proto udp`: the transport protocol (tcpspy sees TCP only).
//! - `comm "glob"`: the kernel's short task name, as fnmatch without
//!   `FNM_PATHNAME` (task names may contain `/`); unknown is the empty string.
//! - `pid N`: the process id owning the socket.
//!
//! # Errors
//!
//! Building a [`RuleSet`] reports every problem in every source at once, each
//! as `SOURCE:LINE:COLUMN: message` followed by the line and a caret under the
//! column. `SOURCE` is the file name as given, or `-e #N` for the N-th rule
//! given with `-e` (counting from 1).

mod error;
mod expr;
mod glob;
mod lex;
mod parse;
mod program;

use std::fmt;
use std::path::Path;

use connscope_event::ConnectionEvent;

pub use error::{Diagnostic, RulesError};

pub use expr::ExeComparisons;
use expr::Expr;
use program::Program;

/// One rule: a boolean expression over a connection's properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `None`: a whitespace-only `-e` rule, which matches nothing.
    expr: Option<Expr>,
    source: String,
    line: usize,
}

impl Rule {
    /// Where the rule was written: the file name or `-e #N`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The 1-based line the rule starts on.
    pub fn line(&self) -> usize {
        self.line
    }

    /// True for a whitespace-only rule, which matches no connection.
    pub fn is_empty(&self) -> bool {
        self.expr.is_none()
    }

    /// Whether the rule compares executables (`exe`).
    pub fn uses_exe(&self) -> bool {
        self.expr.as_ref().is_some_and(Expr::uses_exe)
    }

    /// Evaluates the rule by walking its parse tree: the definition of what a
    /// rule means. [`RuleSet::matches`] runs a compiled form that must always
    /// give the same answer, and is several times faster.
    pub fn matches_by_tree_walk(&self, ev: &ConnectionEvent, exe: ExeComparisons) -> bool {
        self.expr.as_ref().is_some_and(|e| e.eval(ev, exe))
    }
}

impl fmt::Display for Rule {
    /// The normalised form: every `and`/`or` in parentheses, names kept,
    /// networks masked and masks shortened to a prefix length where they can
    /// be. It parses back to the same rule. An empty rule prints as nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.expr {
            Some(expr) => expr.fmt(f),
            None => Ok(()),
        }
    }
}

/// A set of rules: a connection matches if any rule matches it, and every
/// connection matches an empty set (tcpspy logs everything without rules).
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    warnings: Vec<Diagnostic>,
    program: Program,
}

impl RuleSet {
    pub fn builder() -> RuleSetBuilder {
        RuleSetBuilder::default()
    }

    /// Whether the connection is to be logged. This is the hot path.
    #[inline]
    pub fn matches(&self, ev: &ConnectionEvent) -> bool {
        self.program.matches(ev)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// No rules were given: every connection matches.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule compares executables; an agent that cannot see them
    /// should warn, as tcpspy does without `-p`.
    pub fn uses_exe(&self) -> bool {
        self.rules.iter().any(Rule::uses_exe)
    }

    /// Things that are valid but probably not meant, such as two rules on one
    /// line with no `and`/`or` between them.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }
}

/// Collects rules from `-e` texts and `-f` files, and every problem in them.
#[derive(Debug, Default)]
pub struct RuleSetBuilder {
    rules: Vec<Rule>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    exe: ExeComparisons,
}

impl RuleSetBuilder {
    /// Adds a rule given on the command line (`-e`), named `source_name` in
    /// messages (connscope uses `-e #N`). A whitespace-only text adds a rule
    /// that matches nothing, as in tcpspy.
    pub fn add_expr(mut self, source_name: &str, text: &str) -> Self {
        let parsed = parse::parse(source_name, text, false);
        let any = !parsed.rules.is_empty() || !parsed.errors.is_empty();
        self.absorb(source_name, parsed);
        if !any {
            self.rules.push(Rule {
                expr: None,
                source: source_name.to_owned(),
                line: 1,
            });
        }
        self
    }

    /// Adds a rule file (`-f`): rules one per line, `#` comments.
    pub fn add_file(mut self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        let name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let parsed = parse::parse(&name, &text, true);
                self.absorb(&name, parsed);
            }
            Err(err) => self.errors.push(Diagnostic::whole_source(
                &name,
                format!("cannot read rule file: {err}"),
            )),
        }
        self
    }

    /// How `exe` comparisons evaluate; see [`ExeComparisons`].
    pub fn exe_comparisons(mut self, mode: ExeComparisons) -> Self {
        self.exe = mode;
        self
    }

    /// The rule set, or every problem found in any source.
    pub fn build(self) -> Result<RuleSet, RulesError> {
        if !self.errors.is_empty() {
            return Err(RulesError::new(self.errors));
        }
        let program = Program::compile(
            self.rules.iter().filter_map(|r| r.expr.as_ref()),
            !self.rules.is_empty(),
            self.exe,
        );
        Ok(RuleSet {
            rules: self.rules,
            warnings: self.warnings,
            program,
        })
    }

    fn absorb(&mut self, source: &str, parsed: parse::Parsed) {
        self.rules
            .extend(parsed.rules.into_iter().map(|(expr, line)| Rule {
                expr: Some(expr),
                source: source.to_owned(),
                line,
            }));
        self.errors.extend(parsed.errors);
        self.warnings.extend(parsed.warnings);
    }
}

#[cfg(test)]
mod tests;
