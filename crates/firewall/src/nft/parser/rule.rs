//! One rule's tokens read into matches, a verdict and a comment. An
//! expression this reader does not model is kept as [`Match::Unknown`]
//! instead of failing, because it may well be valid nft (`limit rate`, `meta
//! mark set`, concatenations): the checker treats it conservatively and the
//! report lists it.

use connscope_event::Protocol;

use super::stream::{PResult, TokenStream};
use super::values::{Cursor, Kind};
use crate::nft::lexer::{Tok, Token};
use crate::nft::model::{Field, Match, Op, Rule, Value, Values, Verdict, L4};
use crate::nft::numbers::proto_number;

/// Keywords that start a new expression or statement inside a rule; an
/// expression the parser skips ends where one of these begins.
const RULE_KEYWORDS: &[&str] = &[
    "ip",
    "ip6",
    "tcp",
    "udp",
    "th",
    "meta",
    "ct",
    "iif",
    "oif",
    "iifname",
    "oifname",
    "counter",
    "log",
    "comment",
    "accept",
    "drop",
    "reject",
    "jump",
    "goto",
    "return",
    "continue",
    "queue",
    "icmp",
    "icmpv6",
    "limit",
    "notrack",
    "masquerade",
    "snat",
    "dnat",
    "redirect",
    "mark",
];

const OTHER_PROTOCOLS: &[&str] = &[
    "icmp", "icmpv6", "igmp", "sctp", "dccp", "udplite", "ah", "esp", "comp", "gre",
];

/// The rule made of `tokens` (one statement's, already taken from the stream).
pub(super) fn read_rule(input: &TokenStream, tokens: &[Token]) -> PResult<Rule> {
    let first = tokens.first().map(|t| t.pos).unwrap_or(input.last_pos);
    let mut rule = Rule {
        location: input.location(first),
        text: tokens.iter().map(token_text).collect::<Vec<_>>().join(" "),
        matches: Vec::new(),
        verdict: None,
        comment: None,
    };
    Cursor::new(input, tokens).rule_body(&mut rule)?;
    Ok(rule)
}

impl Cursor<'_> {
    fn rule_body(&mut self, rule: &mut Rule) -> PResult<()> {
        while let Some(t) = self.peek() {
            let Tok::Word(word) = &t.tok else {
                self.unknown_match(self.i, rule);
                continue;
            };
            let start = self.i;
            self.i += 1;
            match word.as_str() {
                "ip" | "ip6" => {
                    let v4 = word == "ip";
                    let (field, kind) = match self.peek_word() {
                        Some("saddr") => (
                            if v4 { Field::Saddr4 } else { Field::Saddr6 },
                            if v4 { Kind::Addr4 } else { Kind::Addr6 },
                        ),
                        Some("daddr") => (
                            if v4 { Field::Daddr4 } else { Field::Daddr6 },
                            if v4 { Kind::Addr4 } else { Kind::Addr6 },
                        ),
                        Some("protocol") if v4 => (Field::IpProtocol, Kind::Proto),
                        Some("nexthdr") if !v4 => (Field::Ip6Nexthdr, Kind::Proto),
                        _ => {
                            self.unknown_match(start, rule);
                            continue;
                        }
                    };
                    self.i += 1;
                    self.comparison(rule, start, field, kind)?;
                }
                "tcp" | "udp" | "th" => {
                    let (l4, proto) = match word.as_str() {
                        "tcp" => (L4::Tcp, Protocol::Tcp),
                        "udp" => (L4::Udp, Protocol::Udp),
                        _ => (L4::Any, Protocol::Tcp),
                    };
                    let field = match self.peek_word() {
                        Some("dport") => Field::Dport(l4),
                        Some("sport") => Field::Sport(l4),
                        _ => {
                            self.unknown_match(start, rule);
                            continue;
                        }
                    };
                    self.i += 1;
                    self.comparison(rule, start, field, Kind::Port(proto))?;
                }
                "meta" => {
                    let key = self.peek_word();
                    let field = key.and_then(meta_field);
                    match field {
                        Some((field, kind)) if !self.is_assignment() => {
                            self.i += 1;
                            self.comparison(rule, start, field, kind)?;
                        }
                        _ => {
                            self.unknown_match(start, rule);
                        }
                    }
                }
                "iif" | "oif" | "iifname" | "oifname" => {
                    let (field, kind) = meta_field(word).expect("interface keys are meta fields");
                    self.comparison(rule, start, field, kind)?;
                }
                "ct" if self.peek_word() == Some("state") => {
                    self.i += 1;
                    self.comparison(rule, start, Field::CtState, Kind::Name)?;
                }
                "icmpv6" if self.peek_word() == Some("type") && !self.is_assignment() => {
                    self.i += 1;
                    self.comparison(rule, start, Field::Icmpv6Type, Kind::Icmpv6Type)?;
                }
                w if OTHER_PROTOCOLS.contains(&w) && !self.is_assignment() => {
                    // `icmp type echo-request`, `sctp dport 9`: a header field
                    // of a protocol the replayed TCP/UDP flows never carry.
                    let field = Field::OtherProtocol(w.to_owned());
                    self.i += 1; // the field name
                    self.comparison(rule, start, field, Kind::Any)?;
                }
                "counter" => {
                    while matches!(self.peek_word(), Some("packets" | "bytes")) {
                        self.i += 2;
                    }
                }
                "log" => {
                    while let Some(option) = self.peek_word() {
                        match option {
                            "prefix" | "level" | "group" | "snaplen" | "queue-threshold" => {
                                self.i += 2
                            }
                            "flags" => {
                                self.i += 2;
                                while matches!(
                                    self.peek(),
                                    Some(Token {
                                        tok: Tok::Comma,
                                        ..
                                    })
                                ) {
                                    self.i += 2;
                                }
                            }
                            _ => break,
                        }
                    }
                }
                "comment" => {
                    rule.comment = Some(self.expect_word("a comment string")?.to_owned());
                }
                "accept" => rule.verdict = Some(Verdict::Accept),
                "drop" => rule.verdict = Some(Verdict::Drop),
                "return" => rule.verdict = Some(Verdict::Return),
                "continue" => rule.verdict = Some(Verdict::Continue),
                "reject" => {
                    rule.verdict = Some(Verdict::Reject);
                    if self.peek_word() == Some("with") {
                        // nft adds the match the reply needs: a reset only
                        // for TCP, an ICMP type only for its IP version.
                        let implied = match self.tokens.get(self.i + 1).map(|t| &t.tok) {
                            Some(Tok::Word(w)) if w == "tcp" => Some((
                                Field::L4Proto,
                                Value::Num(u64::from(proto_number("tcp").expect("known"))),
                            )),
                            Some(Tok::Word(w)) if w == "icmp" => {
                                Some((Field::NfProto, Value::Name("ipv4".into())))
                            }
                            Some(Tok::Word(w)) if w == "icmpv6" => {
                                Some((Field::NfProto, Value::Name("ipv6".into())))
                            }
                            _ => None,
                        };
                        if let Some((field, value)) = implied {
                            rule.matches.push(Match::Cmp {
                                field,
                                op: Op::Eq,
                                values: Values::List(vec![value]),
                            });
                        }
                        self.i += 2; // with tcp|icmp|icmpv6|icmpx
                        match self.peek_word() {
                            Some("type") => self.i += 2,
                            Some(w) if !RULE_KEYWORDS.contains(&w) => self.i += 1,
                            _ => {}
                        }
                    }
                }
                "jump" | "goto" => {
                    let target = self.expect_word("a chain name")?.to_owned();
                    rule.verdict = Some(if word == "jump" {
                        Verdict::Jump(target)
                    } else {
                        Verdict::Goto(target)
                    });
                }
                "queue" => {
                    rule.verdict = Some(Verdict::Queue);
                    while let Some(w) = self.peek_word() {
                        if RULE_KEYWORDS.contains(&w) {
                            break;
                        }
                        self.i += 1;
                    }
                }
                _ => {
                    self.unknown_match(start, rule);
                }
            }
        }
        Ok(())
    }

    /// `meta mark set 1`, `ct mark set ...`: a statement, not a match.
    fn is_assignment(&self) -> bool {
        matches!(
            self.tokens.get(self.i + 1),
            Some(Token { tok: Tok::Word(w), .. }) if w == "set"
        )
    }

    /// Consumes an expression the parser does not model, from token `start`
    /// up to the next rule keyword outside braces (always at least one
    /// token), and keeps it in `rule` as [`Match::Unknown`].
    fn unknown_match(&mut self, start: usize, rule: &mut Rule) {
        self.i = start;
        let mut depth = 0usize;
        while let Some(t) = self.peek() {
            match &t.tok {
                Tok::LBrace | Tok::LParen => depth += 1,
                Tok::RBrace | Tok::RParen => depth = depth.saturating_sub(1),
                Tok::Word(w)
                    if depth == 0 && self.i > start && RULE_KEYWORDS.contains(&w.as_str()) =>
                {
                    break
                }
                _ => {}
            }
            self.i += 1;
        }
        let text = self.tokens[start..self.i]
            .iter()
            .map(token_text)
            .collect::<Vec<_>>()
            .join(" ");
        rule.matches.push(Match::Unknown(text));
    }

    /// `[op] value` after a field; a concatenation (`ip saddr . tcp dport`)
    /// makes the whole expression unknown.
    fn comparison(
        &mut self,
        rule: &mut Rule,
        start: usize,
        field: Field,
        kind: Kind,
    ) -> PResult<()> {
        if self.peek_word() == Some(".")
            || matches!(self.peek(), Some(Token { tok: Tok::Op(_), .. }) if !self.at_relational_op())
        {
            self.i = start;
            let mut text = Vec::new();
            // Up to and including the value: a set, a set reference or a word.
            while let Some(t) = self.next() {
                text.push(token_text(t));
                match &t.tok {
                    Tok::At(_) => break,
                    Tok::LBrace => {
                        let mut depth = 1;
                        while let Some(t) = self.next() {
                            text.push(token_text(t));
                            match t.tok {
                                Tok::LBrace => depth += 1,
                                Tok::RBrace => depth -= 1,
                                _ => {}
                            }
                            if depth == 0 {
                                break;
                            }
                        }
                        break;
                    }
                    _ => {}
                }
                if self.peek_word().is_some_and(|w| {
                    RULE_KEYWORDS.contains(&w)
                        && w != "tcp"
                        && w != "udp"
                        && w != "ip"
                        && w != "ip6"
                        && w != "meta"
                }) {
                    break;
                }
            }
            rule.matches.push(Match::Unknown(text.join(" ")));
            return Ok(());
        }
        let op = self.op();
        let values = self.values(kind)?;
        rule.matches.push(Match::Cmp { field, op, values });
        Ok(())
    }

    fn at_relational_op(&self) -> bool {
        matches!(
            self.peek(),
            Some(Token {
                tok: Tok::Op("==" | "!=" | "<" | ">" | "<=" | ">="),
                ..
            })
        )
    }

    fn op(&mut self) -> Op {
        let op = match self.peek().map(|t| &t.tok) {
            Some(Tok::Op("==")) => Op::Eq,
            Some(Tok::Op("!=")) => Op::Ne,
            Some(Tok::Op("<")) => Op::Lt,
            Some(Tok::Op(">")) => Op::Gt,
            Some(Tok::Op("<=")) => Op::Le,
            Some(Tok::Op(">=")) => Op::Ge,
            Some(Tok::Word(w)) => match w.as_str() {
                "eq" => Op::Eq,
                "ne" => Op::Ne,
                "lt" => Op::Lt,
                "gt" => Op::Gt,
                "le" => Op::Le,
                "ge" => Op::Ge,
                _ => return Op::Eq,
            },
            _ => return Op::Eq,
        };
        self.i += 1;
        op
    }
}

fn token_text(t: &Token) -> String {
    match &t.tok {
        Tok::Word(w) => w.clone(),
        Tok::Str(s) => format!("\"{s}\""),
        Tok::At(s) => format!("@{s}"),
        Tok::Var(s) => format!("${s}"),
        Tok::LBrace => "{".into(),
        Tok::RBrace => "}".into(),
        Tok::LParen => "(".into(),
        Tok::RParen => ")".into(),
        Tok::Comma => ",".into(),
        Tok::Semi => ";".into(),
        Tok::Newline => "\n".into(),
        Tok::Op(o) => (*o).into(),
    }
}

fn meta_field(key: &str) -> Option<(Field, Kind)> {
    Some(match key {
        "l4proto" => (Field::L4Proto, Kind::Proto),
        "nfproto" | "protocol" => (Field::NfProto, Kind::Name),
        "iif" => (Field::Iif, Kind::Name),
        "oif" => (Field::Oif, Kind::Name),
        "iifname" => (Field::Iifname, Kind::Name),
        "oifname" => (Field::Oifname, Kind::Name),
        _ => return None,
    })
}
