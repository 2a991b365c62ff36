//! The parser: tcpspy's grammar, with its precedence as measured against the
//! real tcpspy 1.7d (see the crate docs): `not` binds tightest; `and` and `or`
//! have the *same* precedence and group from the left, so `a or b and c` is
//! `(a or b) and c`. A text is a sequence of rules: tcpspy's parser accepts
//! expressions one after another (`ip ip6` is two rules, either may match) and
//! reads a rule file as one stream, so a rule may continue on the next line.
//!
//! Errors never stop the parse: a syntax error abandons the rule and parsing
//! resumes at the next line; a bad value (unknown user, port out of range) is
//! recorded and parsing goes on, so one run reports every problem.

use std::net::{Ipv4Addr, Ipv6Addr};

use connscope_event::{Direction, Family, Protocol};
use connscope_names::Services;

use crate::error::Diagnostic;
use crate::expr::{mask6, End, Expr, Test};
use crate::glob::Glob;
use crate::lex::{tokenize, Keyword, Token, TokenKind};

/// What one source (an `-e` text or a rule file) holds.
pub(crate) struct Parsed {
    /// Each rule with the line it starts on.
    pub(crate) rules: Vec<(Expr, usize)>,
    pub(crate) errors: Vec<Diagnostic>,
    pub(crate) warnings: Vec<Diagnostic>,
}

pub(crate) fn parse(source: &str, text: &str, is_file: bool) -> Parsed {
    let mut parser = Parser {
        source,
        text,
        is_file,
        tokens: tokenize(text, is_file),
        pos: 0,
        errors: Vec::new(),
    };
    let mut rules = Vec::new();
    let mut warnings = Vec::new();
    let mut previous_end_line = None;
    while parser.pos < parser.tokens.len() {
        let start = parser.tokens[parser.pos].span.start;
        let line = parser.line_of(start);
        match parser.expr() {
            Ok(expr) => {
                if previous_end_line == Some(line) {
                    warnings.push(
                        parser.diagnostic(
                            start,
                            "a new rule starts here: there is no 'and' or 'or' before it, so \
                         (as in tcpspy) it is a separate rule and either rule may match"
                                .into(),
                        ),
                    );
                }
                rules.push((expr, line));
                let last = &parser.tokens[parser.pos - 1];
                previous_end_line = Some(parser.line_of(last.span.end));
            }
            Err(error) => {
                let error_line = error.line();
                parser.errors.push(error);
                // Resume with the first token on a later line.
                while parser.pos < parser.tokens.len()
                    && parser.line_of(parser.tokens[parser.pos].span.start) <= error_line
                {
                    parser.pos += 1;
                }
                previous_end_line = None;
            }
        }
    }
    Parsed {
        rules,
        errors: parser.errors,
        warnings,
    }
}

struct Parser<'a> {
    source: &'a str,
    text: &'a str,
    is_file: bool,
    tokens: Vec<Token>,
    pos: usize,
    /// Problems with values; syntax errors travel in `Err` instead.
    errors: Vec<Diagnostic>,
}

const CONDITIONS: &str =
    "user, ip, ip6, lport, rport, laddr, raddr, exe, not, '(' (or dir, proto, comm, pid)";

impl Parser<'_> {
    fn line_of(&self, at: usize) -> usize {
        self.text[..at].matches('\n').count() + 1
    }

    fn diagnostic(&self, at: usize, message: String) -> Diagnostic {
        Diagnostic::at(self.source, self.text, at, message)
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn token_text(&self, token: &Token) -> &str {
        &self.text[token.span.clone()]
    }

    /// A syntax error: expected `what`, found the next token. In a rule file a
    /// token on a later line than `after` is reported as the end of the line,
    /// which is where the rule the user wrote is incomplete.
    fn expected(&self, what: &str, after: &Token) -> Diagnostic {
        let after_line = self.line_of(after.span.end);
        match self.peek() {
            Some(token) if !self.is_file || self.line_of(token.span.start) == after_line => {
                let found = self.describe(token);
                self.diagnostic(token.span.start, format!("{what}, found {found}"))
            }
            Some(_) => {
                let end_of_line = after.span.end
                    + self.text[after.span.end..]
                        .find('\n')
                        .unwrap_or(self.text.len() - after.span.end);
                self.diagnostic(end_of_line, format!("{what}, found end of line"))
            }
            None => {
                let end = if self.is_file {
                    after.span.end
                } else {
                    self.text.trim_end().len()
                };
                let found = if self.is_file {
                    "end of file"
                } else {
                    "end of rule"
                };
                self.diagnostic(end, format!("{what}, found {found}"))
            }
        }
    }

    fn describe(&self, token: &Token) -> String {
        match &token.kind {
            TokenKind::Str(s) => format!("the string \"{s}\""),
            TokenKind::UnterminatedStr => "a string with no closing '\"'".into(),
            _ => format!("'{}'", self.token_text(token)),
        }
    }

    fn bump(&mut self) -> Token {
        let token = self.tokens[self.pos].clone();
        self.pos += 1;
        token
    }

    /// expr := unary (("and" | "or") unary)*, grouping from the left.
    fn expr(&mut self) -> Result<Expr, Diagnostic> {
        let mut left = self.unary(None)?;
        while let Some(TokenKind::Keyword(op @ (Keyword::And | Keyword::Or))) =
            self.peek().map(|t| t.kind.clone())
        {
            let op_token = self.bump();
            let right = self.unary(Some(&op_token))?;
            left = match op {
                Keyword::And => Expr::And(Box::new(left), Box::new(right)),
                _ => Expr::Or(Box::new(left), Box::new(right)),
            };
        }
        Ok(left)
    }

    /// unary := "not" unary | "(" expr ")" | condition. `after` is the operator
    /// before it, for messages.
    fn unary(&mut self, after: Option<&Token>) -> Result<Expr, Diagnostic> {
        let Some(token) = self.peek().cloned() else {
            // Not at the start of a rule (that needs a token), so one was consumed.
            let previous = self.tokens[self.pos - 1].clone();
            let after = after.unwrap_or(&previous);
            let what = format!("expected a condition after '{}'", self.token_text(after));
            return Err(self.expected(&what, after));
        };
        match token.kind {
            TokenKind::Keyword(Keyword::Not) => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary(Some(&token))?)))
            }
            TokenKind::LParen => {
                self.pos += 1;
                let inner = self.expr()?;
                match self.peek() {
                    Some(t) if t.kind == TokenKind::RParen => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    _ => {
                        let column = self.diagnostic(token.span.start, String::new()).column();
                        let last = self.tokens[self.pos - 1].clone();
                        Err(self.expected(
                            &format!("expected ')' to close the '(' at column {column}"),
                            &last,
                        ))
                    }
                }
            }
            TokenKind::Keyword(
                kw @ (Keyword::User
                | Keyword::Ip
                | Keyword::Ip6
                | Keyword::Lport
                | Keyword::Rport
                | Keyword::Laddr
                | Keyword::Raddr
                | Keyword::Exe
                | Keyword::Dir
                | Keyword::Proto
                | Keyword::Comm
                | Keyword::Pid),
            ) => self.condition(kw),
            _ => Err(self.not_a_condition(&token, after)),
        }
    }

    fn not_a_condition(&self, token: &Token, after: Option<&Token>) -> Diagnostic {
        let at = token.span.start;
        let text = self.token_text(token);
        let message = match &token.kind {
            TokenKind::Hash => "'#' starts a comment only in a rule file (-f)".to_owned(),
            TokenKind::UnterminatedStr => "this string has no closing '\"'".to_owned(),
            TokenKind::RParen => "')' without a matching '('".to_owned(),
            TokenKind::Unknown => format!("unknown word '{text}'; expected one of {CONDITIONS}"),
            TokenKind::Number | TokenKind::PortRange => format!(
                "expected a condition, found '{text}' \
                 (port ranges are written without spaces, as in 1024-65535)"
            ),
            _ => match after {
                Some(op) => format!(
                    "expected a condition after '{}', found {}",
                    self.token_text(op),
                    self.describe(token)
                ),
                None => format!(
                    "expected a condition ({CONDITIONS}), found {}",
                    self.describe(token)
                ),
            },
        };
        self.diagnostic(at, message)
    }

    fn condition(&mut self, kw: Keyword) -> Result<Expr, Diagnostic> {
        let kw_token = self.bump();
        let test = match kw {
            Keyword::Ip => Test::Family(Family::Ipv4),
            Keyword::Ip6 => Test::Family(Family::Ipv6),
            Keyword::User => self.user(&kw_token)?,
            Keyword::Lport => self.port(&kw_token, End::Local)?,
            Keyword::Rport => self.port(&kw_token, End::Remote)?,
            Keyword::Laddr => self.address(&kw_token, End::Local)?,
            Keyword::Raddr => self.address(&kw_token, End::Remote)?,
            Keyword::Exe => Test::Exe(Glob::new(
                &self.string(&kw_token, "a quoted pattern")?,
                true,
            )),
            Keyword::Comm => Test::Comm(Glob::new(
                &self.string(&kw_token, "a quoted pattern")?,
                false,
            )),
            Keyword::Dir => match self.peek().map(|t| t.kind.clone()) {
                Some(TokenKind::Keyword(Keyword::In)) => {
                    self.pos += 1;
                    Test::Direction(Direction::Incoming)
                }
                Some(TokenKind::Keyword(Keyword::Out)) => {
                    self.pos += 1;
                    Test::Direction(Direction::Outgoing)
                }
                _ => return Err(self.expected("expected 'in' or 'out' after 'dir'", &kw_token)),
            },
            Keyword::Proto => match self.peek().map(|t| t.kind.clone()) {
                Some(TokenKind::Keyword(Keyword::Tcp)) => {
                    self.pos += 1;
                    Test::Protocol(Protocol::Tcp)
                }
                Some(TokenKind::Keyword(Keyword::Udp)) => {
                    self.pos += 1;
                    Test::Protocol(Protocol::Udp)
                }
                _ => return Err(self.expected("expected 'tcp' or 'udp' after 'proto'", &kw_token)),
            },
            Keyword::Pid => match self.peek().map(|t| t.kind.clone()) {
                Some(TokenKind::Number) => {
                    let token = self.bump();
                    Test::Pid(self.number(&token, "process id", u32::MAX))
                }
                _ => return Err(self.expected("expected a process id after 'pid'", &kw_token)),
            },
            Keyword::Not
            | Keyword::And
            | Keyword::Or
            | Keyword::In
            | Keyword::Out
            | Keyword::Tcp
            | Keyword::Udp => unreachable!("unary passes only condition keywords"),
        };
        Ok(Expr::Test(test))
    }

    /// A decimal number up to `max`; a bigger one is recorded as an error
    /// (tcpspy silently wraps it) and 0 stands in.
    fn number(&mut self, token: &Token, what: &str, max: u32) -> u32 {
        let text = self.token_text(token);
        match text.parse::<u32>() {
            Ok(n) if n <= max => n,
            _ => {
                let message = format!("{what} {text} is out of range (0-{max})");
                self.errors.push(self.diagnostic(token.span.start, message));
                0
            }
        }
    }

    fn string(&mut self, kw: &Token, what: &str) -> Result<String, Diagnostic> {
        match self.peek().map(|t| t.kind.clone()) {
            Some(TokenKind::Str(s)) => {
                self.pos += 1;
                Ok(s)
            }
            _ => {
                let kw_text = self.token_text(kw).to_owned();
                Err(self.expected(&format!("expected {what} after '{kw_text}'"), kw))
            }
        }
    }

    fn user(&mut self, kw: &Token) -> Result<Test, Diagnostic> {
        match self.peek().map(|t| t.kind.clone()) {
            Some(TokenKind::Number) => {
                let token = self.bump();
                let uid = self.number(&token, "user id", u32::MAX);
                Ok(Test::User { uid, name: None })
            }
            Some(TokenKind::Str(name)) => {
                let token = self.bump();
                // getpwnam(3), as tcpspy: a quoted number is a name, not a uid.
                let uid = nix::unistd::User::from_name(&name)
                    .ok()
                    .flatten()
                    .map(|u| u.uid.as_raw());
                if uid.is_none() {
                    let message = format!("unknown user \"{name}\"");
                    self.errors.push(self.diagnostic(token.span.start, message));
                }
                Ok(Test::User {
                    uid: uid.unwrap_or(0),
                    name: Some(name),
                })
            }
            _ => Err(self.expected("expected a user id or \"name\" after 'user'", kw)),
        }
    }

    fn port(&mut self, kw: &Token, end: End) -> Result<Test, Diagnostic> {
        let kw_text = self.token_text(kw).to_owned();
        let Some(token) = self.peek().cloned() else {
            let what = format!("expected a port or service name after '{kw_text}'");
            return Err(self.expected(&what, kw));
        };
        let (low, high, service) = match &token.kind {
            TokenKind::Number => {
                self.pos += 1;
                let port = self.number(&token, "port", 65535) as u16;
                (port, port, None)
            }
            TokenKind::PortRange => {
                self.pos += 1;
                let text = self.token_text(&token).to_owned();
                let (low, high) = text.split_once('-').expect("a range token has a '-'");
                if low.is_empty() && high.is_empty() {
                    let message =
                        "a port range needs at least one end: low-high, low- or -high".to_owned();
                    self.errors.push(self.diagnostic(token.span.start, message));
                }
                let end_port = |parser: &mut Self, s: &str, default: u16, offset: usize| {
                    if s.is_empty() {
                        return default;
                    }
                    let part = Token {
                        kind: TokenKind::Number,
                        span: token.span.start + offset..token.span.start + offset + s.len(),
                    };
                    parser.number(&part, "port", 65535) as u16
                };
                let l = end_port(self, low, 0, 0);
                let h = end_port(self, high, 65535, low.len() + 1);
                if l > h {
                    let message =
                        format!("port range {text} is backwards (low end above high end)");
                    self.errors.push(self.diagnostic(token.span.start, message));
                }
                (l, h, None)
            }
            TokenKind::Str(name) => {
                self.pos += 1;
                match Services::system().port(name, Protocol::Tcp) {
                    Some(port) => (port, port, Some(name.clone())),
                    None => {
                        let message = format!("unknown service \"{name}\" (not in /etc/services)");
                        self.errors.push(self.diagnostic(token.span.start, message));
                        (0, 0, Some(name.clone()))
                    }
                }
            }
            TokenKind::Unknown => {
                let word = self.token_text(&token);
                let message = format!(
                    "expected a port or service name after '{kw_text}', found '{word}' \
                     (service names are quoted, as in \"{word}\")"
                );
                return Err(self.diagnostic(token.span.start, message));
            }
            _ => {
                let what = format!("expected a port or service name after '{kw_text}'");
                return Err(self.expected(&what, kw));
            }
        };
        Ok(Test::Port {
            end,
            low,
            high,
            service,
        })
    }

    fn address(&mut self, kw: &Token, end: End) -> Result<Test, Diagnostic> {
        let token = match self.peek() {
            Some(t) if t.kind == TokenKind::Address => self.bump(),
            _ => {
                let kw_text = self.token_text(kw).to_owned();
                let what =
                    format!("expected an address (n.n.n.n[/mask] or ipv6[/len]) after '{kw_text}'");
                return Err(self.expected(&what, kw));
            }
        };
        let text = self.token_text(&token).to_owned();
        let (addr, mask) = match text.split_once('/') {
            Some((a, m)) => (a, Some(m)),
            None => (text.as_str(), None),
        };
        let mask_at = token.span.start + addr.len() + 1;
        let bad = |parser: &mut Self, at: usize, message: String| {
            parser.errors.push(parser.diagnostic(at, message));
        };
        if addr.contains(':') {
            let ip = addr.parse::<Ipv6Addr>().unwrap_or_else(|_| {
                bad(
                    self,
                    token.span.start,
                    format!("invalid IPv6 address '{addr}'"),
                );
                Ipv6Addr::UNSPECIFIED
            });
            let prefix = match mask {
                None => 128,
                Some(m) => match m.parse::<u8>() {
                    Ok(p @ 1..=128) => p,
                    _ => {
                        let message = if m.contains('.') {
                            format!("invalid netmask '{m}': an IPv6 address takes a prefix length (1-128)")
                        } else {
                            format!("invalid prefix length '{m}' (1-128)")
                        };
                        bad(self, mask_at, message);
                        128
                    }
                },
            };
            Ok(Test::Addr6 {
                end,
                net: u128::from(ip) & mask6(prefix),
                prefix,
            })
        } else {
            let ip = addr.parse::<Ipv4Addr>().unwrap_or_else(|_| {
                bad(
                    self,
                    token.span.start,
                    format!("invalid IPv4 address '{addr}' (expected n.n.n.n)"),
                );
                Ipv4Addr::UNSPECIFIED
            });
            let mask = match mask {
                None => u32::MAX,
                Some(m) if m.contains('.') => match m.parse::<Ipv4Addr>() {
                    Ok(mask) => u32::from(mask),
                    Err(_) => {
                        bad(
                            self,
                            mask_at,
                            format!("invalid netmask '{m}' (expected m.m.m.m)"),
                        );
                        u32::MAX
                    }
                },
                Some(m) => match m.parse::<u8>() {
                    Ok(len @ 1..=32) => u32::MAX << (32 - u32::from(len)),
                    _ => {
                        // tcpspy rejects /0 too; 'ip' matches every IPv4 address.
                        bad(self, mask_at, format!("invalid prefix length '{m}' (1-32)"));
                        u32::MAX
                    }
                },
            };
            Ok(Test::Addr4 {
                end,
                net: u32::from(ip) & mask,
                mask,
            })
        }
    }
}
