//! Named sets: a set's declared type decides how its elements are read
//! ([`Kind`]); a type the checker does not evaluate (concatenations, marks)
//! leaves the set without elements, so every lookup in it is unknown.
//! `add element` and a set declared twice add to the set already there.

use connscope_event::Protocol;

use super::stream::{PResult, TokenStream};
use super::values::{Cursor, Kind};
use crate::nft::lexer::{Tok, Token};
use crate::nft::model::{NamedSet, Value, Values};

/// A set's `{ ... }` body (the brace consumed): its type and elements.
pub(super) fn read_set(input: &mut TokenStream, name: &str) -> PResult<NamedSet> {
    let mut key: Option<Kind> = None;
    let mut elements: Option<Vec<Value>> = Some(Vec::new());
    let mut supported = true;
    loop {
        input.skip_separators()?;
        let t = input.expect_next("'}' closing the set")?;
        let word = match &t.tok {
            Tok::RBrace => break,
            Tok::Word(w) => w.clone(),
            other => {
                return Err(input.error_at(
                    t.pos,
                    format!("expected a set property, found {}", other.describe()),
                ))
            }
        };
        let tokens = input.statement_tokens()?;
        match word.as_str() {
            "type" | "typeof" => {
                let words: Vec<String> = tokens
                    .iter()
                    .filter_map(|t| match &t.tok {
                        Tok::Word(w) => Some(w.clone()),
                        _ => None,
                    })
                    .collect();
                key = set_kind(&word, &words);
                if key.is_none() {
                    supported = false;
                }
            }
            "elements" => {
                let Some(kind) = key else {
                    if supported {
                        return Err(input.error_at(t.pos, "set elements given before the set type"));
                    }
                    continue;
                };
                let mut cursor = Cursor::new(input, &tokens);
                cursor.expect_op("=")?;
                let values = cursor.values(kind)?;
                if let (Some(list), Values::List(new)) = (&mut elements, values) {
                    list.extend(new);
                }
            }
            "flags" | "timeout" | "gc-interval" | "size" | "policy" | "counter" | "auto-merge"
            | "comment" => {}
            other => return Err(input.error_at(t.pos, format!("unknown set property '{other}'"))),
        }
        input.end_statement()?;
    }
    if !supported {
        elements = None;
    }
    Ok(NamedSet {
        name: name.to_owned(),
        elements,
        partly: Vec::new(),
    })
}

/// Adds `set` to a table's `sets`, or its elements to the set of that name.
pub(super) fn merge(sets: &mut Vec<NamedSet>, set: NamedSet) {
    match sets.iter_mut().find(|s| s.name == set.name) {
        Some(existing) => match (&mut existing.elements, set.elements) {
            (Some(old), Some(new)) => old.extend(new),
            (slot, new) => *slot = slot.take().and(new),
        },
        None => sets.push(set),
    }
}

/// `add element`'s values, read as the kind of the set's first element.
pub(super) fn add_elements(
    input: &TokenStream,
    tokens: &[Token],
    set: &mut NamedSet,
) -> PResult<()> {
    let kind = set
        .elements
        .as_ref()
        .and_then(|els| els.first().map(kind_of_value));
    let mut cursor = Cursor::new(input, tokens);
    let values = cursor.values(kind.unwrap_or(Kind::Any))?;
    if let (Some(list), Values::List(new)) = (&mut set.elements, values) {
        list.extend(new);
    }
    Ok(())
}

fn kind_of_value(v: &Value) -> Kind {
    match v {
        Value::Addr(p) if p.is_ipv4() => Kind::Addr4,
        Value::Addr(_) => Kind::Addr6,
        Value::AddrRange(a, _) if a.is_ipv4() => Kind::Addr4,
        Value::AddrRange(..) => Kind::Addr6,
        Value::Num(_) | Value::NumRange(..) => Kind::Port(Protocol::Tcp),
        Value::Name(_) => Kind::Name,
    }
}

fn set_kind(keyword: &str, words: &[String]) -> Option<Kind> {
    if words.iter().any(|w| w == ".") {
        return None; // concatenations
    }
    let joined = words.join(" ");
    Some(match (keyword, joined.as_str()) {
        ("type", "ipv4_addr") | ("typeof", "ip saddr" | "ip daddr") => Kind::Addr4,
        ("type", "ipv6_addr") | ("typeof", "ip6 saddr" | "ip6 daddr") => Kind::Addr6,
        ("type", "inet_service")
        | ("typeof", "tcp dport" | "tcp sport" | "th dport" | "th sport") => {
            Kind::Port(Protocol::Tcp)
        }
        ("typeof", "udp dport" | "udp sport") => Kind::Port(Protocol::Udp),
        ("type", "inet_proto") | ("typeof", "meta l4proto" | "ip protocol" | "ip6 nexthdr") => {
            Kind::Proto
        }
        ("type", "icmpv6_type") | ("typeof", "icmpv6 type") => Kind::Icmpv6Type,
        ("type", "ifname" | "iface_index")
        | ("typeof", "iifname" | "oifname" | "meta iifname" | "meta oifname") => Kind::Name,
        _ => return None,
    })
}
