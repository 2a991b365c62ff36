//! A DNS response as the names it gives addresses: the name asked for, the
//! CNAME chain followed from it, and the A/AAAA records at its end.
//!
//! Parsing is hickory-proto's; this module only walks the chain. A response
//! that answers with addresses of names outside the chain (a hostile server)
//! names none of them: only what the chain from the question reaches counts.

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{Name, RData};

/// The longest CNAME chain followed (resolvers stop at 8 to 16).
const MAX_CHAIN: usize = 16;

/// What one response said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The name the process asked for, as received (no trailing dot).
    pub asked: String,
    /// The CNAME targets after `asked`, in order; the last one holds the
    /// addresses (empty when the addresses are `asked`'s own).
    pub chain: Vec<String>,
    /// Each address with the seconds it may be used: the smallest TTL of its
    /// record and the CNAME records leading to it.
    pub addresses: Vec<(IpAddr, u32)>,
}

impl Answer {
    /// Every name of the answer: the one asked for, then the chain.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.asked.as_str()).chain(self.chain.iter().map(String::as_str))
    }
}

/// Why a datagram is not an answer to learn from.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("not a DNS message: {0}")]
    Malformed(#[from] hickory_proto::serialize::binary::DecodeError),
    #[error("a query, not a response")]
    NotAResponse,
    #[error("no question")]
    NoQuestion,
}

/// The addresses a response gives, if any (an NXDOMAIN or an answer without
/// A/AAAA records is `Ok(None)`).
pub fn parse_response(bytes: &[u8]) -> Result<Option<Answer>, DnsError> {
    let message = Message::from_vec(bytes)?;
    if message.metadata.message_type != MessageType::Response {
        return Err(DnsError::NotAResponse);
    }
    let question = message.queries.first().ok_or(DnsError::NoQuestion)?;
    if message.metadata.response_code != ResponseCode::NoError || message.answers.is_empty() {
        return Ok(None);
    }
    let mut current: &Name = &question.name;
    let mut chain = Vec::new();
    let mut chain_ttl = u32::MAX;
    while chain.len() < MAX_CHAIN {
        let next = message
            .answers
            .iter()
            .find_map(|record| match &record.data {
                RData::CNAME(target) if record.name == *current => Some((&target.0, record.ttl)),
                _ => None,
            });
        let Some((target, ttl)) = next else { break };
        chain_ttl = chain_ttl.min(ttl);
        chain.push(display_name(target));
        current = target;
    }
    let addresses: Vec<(IpAddr, u32)> = message
        .answers
        .iter()
        .filter(|record| record.name == *current)
        .filter_map(|record| {
            let address = match &record.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                _ => return None,
            };
            Some((address, record.ttl.min(chain_ttl)))
        })
        .collect();
    let asked = display_name(&question.name);
    if addresses.is_empty() || !keepable(&asked) {
        return Ok(None);
    }
    Ok(Some(Answer {
        asked,
        chain,
        addresses,
    }))
}

/// Whether an event can carry `name`: a longer one is refused, never cut (a
/// cut name is another name).
pub(crate) fn keepable(name: &str) -> bool {
    !name.is_empty() && name.len() <= connscope_event::MAX_REMOTE_NAME_LEN
}

/// A name as received: its labels' bytes joined by dots, without the root's
/// trailing dot. Bytes that are not UTF-8 become U+FFFD (a `String` cannot
/// hold them); everything else, `<`, control bytes, dots inside a label, is
/// kept for the readers to escape.
fn display_name(name: &Name) -> String {
    // One string, no allocation per label (every answer makes a few).
    let mut text = String::with_capacity(64);
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        text.push_str(&String::from_utf8_lossy(label));
    }
    text
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_proto::op::{Message, MessageType, Query};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;

    /// A name of raw labels, as a hostile server may send it.
    pub(crate) fn raw_name(labels: &[&[u8]]) -> Name {
        Name::from_labels(labels.iter().copied()).unwrap()
    }

    /// A response to `asked` with these answer records, wire form.
    pub(crate) fn response(asked: &Name, answers: Vec<Record>) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 7;
        message.metadata.message_type = MessageType::Response;
        message.add_query(Query::query(asked.clone(), RecordType::A));
        for record in answers {
            message.add_answer(record);
        }
        message.to_vec().unwrap()
    }

    pub(crate) fn record(name: &Name, ttl: u32, data: RData) -> Record {
        Record::from_rdata(name.clone(), ttl, data)
    }

    #[test]
    fn a_cname_chain_names_its_addresses_after_the_name_asked() {
        let www = Name::from_ascii("WWW.Example.org.").unwrap();
        let cdn = Name::from_ascii("edge.cdn.example.net.").unwrap();
        let bytes = response(
            &www,
            vec![
                record(&www, 300, RData::CNAME(CNAME(cdn.clone()))),
                record(&cdn, 60, RData::A(A(Ipv4Addr::new(192, 0, 2, 7)))),
                record(&cdn, 600, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))),
                // Not on the chain: ignored.
                record(
                    &Name::from_ascii("bank.example.").unwrap(),
                    60,
                    RData::A(A(Ipv4Addr::new(198, 51, 100, 1))),
                ),
            ],
        );
        let answer = parse_response(&bytes).unwrap().unwrap();
        assert_eq!(answer.asked, "WWW.Example.org");
        assert_eq!(answer.chain, ["edge.cdn.example.net"]);
        assert_eq!(
            answer.addresses,
            [
                (IpAddr::from([192, 0, 2, 7]), 60),
                (IpAddr::V6(Ipv6Addr::LOCALHOST), 300)
            ]
        );
    }

    #[test]
    fn hostile_names_are_kept_as_received() {
        let hostile = raw_name(&[b"<img src=x onerror=alert(1)>", b"ex\x07\nample"]);
        let long = raw_name(&[&[b'a'; 63], "bücher".as_bytes(), b"example"]);
        for (name, expected) in [
            (
                &hostile,
                "<img src=x onerror=alert(1)>.ex\u{7}\nample".to_owned(),
            ),
            (&long, format!("{}.bücher.example", "a".repeat(63))),
        ] {
            let bytes = response(
                name,
                vec![record(name, 5, RData::A(A(Ipv4Addr::new(192, 0, 2, 1))))],
            );
            assert_eq!(parse_response(&bytes).unwrap().unwrap().asked, expected);
        }
    }

    #[test]
    fn queries_garbage_and_empty_answers_teach_nothing() {
        let name = Name::from_ascii("a.example.").unwrap();
        let mut query = Message::query();
        query.add_query(Query::query(name.clone(), RecordType::A));
        assert!(matches!(
            parse_response(&query.to_vec().unwrap()),
            Err(DnsError::NotAResponse)
        ));
        assert!(parse_response(b"\x00\x01garbage").is_err());
        assert_eq!(parse_response(&response(&name, vec![])).unwrap(), None);
    }
}
