//! Values as a rule or a set's elements give them: addresses, networks and
//! ranges, ports and service names, protocol and ICMPv6 type names, plain
//! names; one at a time, comma lists, `{ ... }` sets or `@set` references.
//! How a word is read depends on the field it is compared with ([`Kind`]).
//! The [`Cursor`] over one statement's tokens that reads them is shared with
//! the rule reader.

use std::net::IpAddr;

use connscope_event::Protocol;
use connscope_names::Services;

use super::stream::{PResult, ParseError, TokenStream};
use crate::net::Prefix;
use crate::nft::lexer::{Pos, Tok, Token};
use crate::nft::model::{Value, Values};
use crate::nft::numbers::{icmpv6_type_number, proto_number};

/// How the values of a field are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Addr4,
    Addr6,
    Port(Protocol),
    Proto,
    Icmpv6Type,
    /// Interface names, ct states, nfproto names: kept as names.
    Name,
    /// Values of fields the checker never compares: read loosely.
    Any,
}

/// Reads the tokens of one rule (or a set's element list).
pub(super) struct Cursor<'p> {
    input: &'p TokenStream,
    pub(super) tokens: &'p [Token],
    /// The next token's index.
    pub(super) i: usize,
}

impl<'p> Cursor<'p> {
    pub(super) fn new(input: &'p TokenStream, tokens: &'p [Token]) -> Cursor<'p> {
        Cursor {
            input,
            tokens,
            i: 0,
        }
    }

    pub(super) fn peek(&self) -> Option<&'p Token> {
        self.tokens.get(self.i)
    }

    pub(super) fn peek_word(&self) -> Option<&'p str> {
        match self.peek() {
            Some(Token {
                tok: Tok::Word(w), ..
            }) => Some(w),
            _ => None,
        }
    }

    pub(super) fn next(&mut self) -> Option<&'p Token> {
        let t = self.tokens.get(self.i);
        self.i += 1;
        t
    }

    pub(super) fn err(&self, pos: Option<Pos>, message: impl Into<String>) -> ParseError {
        let pos = pos
            .or_else(|| self.tokens.last().map(|t| t.pos))
            .unwrap_or(self.input.last_pos);
        self.input.error_at(pos, message)
    }

    pub(super) fn expect_op(&mut self, op: &str) -> PResult<()> {
        match self.next() {
            Some(Token {
                tok: Tok::Op(o), ..
            }) if *o == op => Ok(()),
            t => Err(self.err(t.map(|t| t.pos), format!("expected '{op}'"))),
        }
    }

    pub(super) fn expect_word(&mut self, what: &str) -> PResult<&'p str> {
        match self.next() {
            Some(Token {
                tok: Tok::Word(w) | Tok::Str(w),
                ..
            }) => Ok(w),
            Some(t) => Err(self.err(
                Some(t.pos),
                format!("expected {what}, found {}", t.tok.describe()),
            )),
            None => Err(self.err(None, format!("expected {what} at the end of the rule"))),
        }
    }

    pub(super) fn values(&mut self, kind: Kind) -> PResult<Values> {
        match self.next() {
            Some(Token {
                tok: Tok::At(name), ..
            }) => Ok(Values::Set(name.clone())),
            Some(Token {
                tok: Tok::LBrace, ..
            }) => {
                let mut list = Vec::new();
                loop {
                    match self.next() {
                        Some(Token {
                            tok: Tok::RBrace, ..
                        }) => break,
                        Some(Token {
                            tok: Tok::Comma, ..
                        }) => {}
                        Some(
                            t @ Token {
                                tok: Tok::Word(_) | Tok::Str(_),
                                ..
                            },
                        ) => {
                            list.push(self.value(t, kind)?);
                            // Per-element options in set declarations.
                            while let Some(opt) = self.peek_word() {
                                match opt {
                                    "timeout" | "expires" | "comment" => self.i += 2,
                                    "counter" => {
                                        self.i += 1;
                                        while matches!(self.peek_word(), Some("packets" | "bytes"))
                                        {
                                            self.i += 2;
                                        }
                                    }
                                    _ => break,
                                }
                            }
                        }
                        Some(t) => {
                            return Err(self.err(
                                Some(t.pos),
                                format!("unexpected {} in a set", t.tok.describe()),
                            ))
                        }
                        None => return Err(self.err(None, "unclosed '{' in a set")),
                    }
                }
                Ok(Values::List(list))
            }
            Some(
                t @ Token {
                    tok: Tok::Word(_) | Tok::Str(_),
                    ..
                },
            ) => {
                let mut list = vec![self.value(t, kind)?];
                // Flag lists without braces: `ct state established,related`.
                while matches!(
                    self.peek(),
                    Some(Token {
                        tok: Tok::Comma,
                        ..
                    })
                ) {
                    self.i += 1;
                    match self.next() {
                        Some(
                            t @ Token {
                                tok: Tok::Word(_) | Tok::Str(_),
                                ..
                            },
                        ) => list.push(self.value(t, kind)?),
                        t => return Err(self.err(t.map(|t| t.pos), "expected a value after ','")),
                    }
                }
                Ok(Values::List(list))
            }
            Some(t) => Err(self.err(
                Some(t.pos),
                format!("expected a value, found {}", t.tok.describe()),
            )),
            None => Err(self.err(None, "expected a value at the end of the rule")),
        }
    }

    fn value(&self, t: &Token, kind: Kind) -> PResult<Value> {
        let text = match &t.tok {
            Tok::Word(w) | Tok::Str(w) => w.as_str(),
            _ => unreachable!("callers pass words and strings"),
        };
        let bad = |what: &str| self.err(Some(t.pos), format!("expected {what}, found '{text}'"));
        match kind {
            Kind::Addr4 | Kind::Addr6 => {
                let v4 = kind == Kind::Addr4;
                let family_ok = |a: &IpAddr| a.is_ipv4() == v4;
                let what = if v4 {
                    "an IPv4 address or network"
                } else {
                    "an IPv6 address or network"
                };
                if let Ok(p) = text.parse::<Prefix>() {
                    return if family_ok(&p.addr()) {
                        Ok(Value::Addr(p))
                    } else {
                        Err(bad(what))
                    };
                }
                if let Some((a, b)) = text.split_once('-') {
                    if let (Ok(a), Ok(b)) = (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
                        if family_ok(&a) && family_ok(&b) {
                            return Ok(Value::AddrRange(a, b));
                        }
                    }
                }
                Err(bad(what))
            }
            Kind::Port(proto) => {
                if let Ok(n) = text.parse::<u16>() {
                    return Ok(Value::Num(u64::from(n)));
                }
                if let Some((a, b)) = text.split_once('-') {
                    let port = |s: &str| {
                        s.parse::<u16>()
                            .ok()
                            .or_else(|| Services::system().port(s, proto))
                    };
                    if let (Some(a), Some(b)) = (port(a), port(b)) {
                        return Ok(Value::NumRange(u64::from(a), u64::from(b)));
                    }
                }
                Services::system()
                    .port(text, proto)
                    .map(|p| Value::Num(u64::from(p)))
                    .ok_or_else(|| bad("a port number, range or service name"))
            }
            Kind::Proto => {
                if let Ok(n) = text.parse::<u8>() {
                    return Ok(Value::Num(u64::from(n)));
                }
                proto_number(text)
                    .map(|n| Value::Num(u64::from(n)))
                    .ok_or_else(|| bad("a protocol name or number"))
            }
            Kind::Icmpv6Type => icmpv6_type_number(text)
                .map(|n| Value::Num(u64::from(n)))
                .ok_or_else(|| bad("an ICMPv6 type name or number")),
            Kind::Name | Kind::Any => Ok(Value::Name(text.to_owned())),
        }
    }
}
