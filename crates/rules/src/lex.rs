//! The lexer, modelled on tcpspy's flex scanner so that text tcpspy accepts is
//! cut into the same tokens: keywords are case-insensitive and need no space
//! after them (`ip6or ip` is `ip6 or ip`), the longest match wins at each
//! position, numbers are decimal, a port range is one token without spaces
//! (`1024-`, `-1023`, `1-2`), strings run to the next `"` with no escapes.

use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyword {
    User,
    Ip,
    Ip6,
    Lport,
    Rport,
    Laddr,
    Raddr,
    Exe,
    And,
    Or,
    Not,
    // Extensions (see the crate docs); none of them can occur in a rule that
    // tcpspy accepts, so adding them changes no tcpspy rule's tokens.
    Dir,
    In,
    Out,
    Proto,
    Tcp,
    Udp,
    Comm,
    Pid,
}

const KEYWORDS: &[(&str, Keyword)] = &[
    ("user", Keyword::User),
    ("ip", Keyword::Ip),
    ("ip6", Keyword::Ip6),
    ("lport", Keyword::Lport),
    ("rport", Keyword::Rport),
    ("laddr", Keyword::Laddr),
    ("raddr", Keyword::Raddr),
    ("exe", Keyword::Exe),
    ("and", Keyword::And),
    ("or", Keyword::Or),
    ("not", Keyword::Not),
    ("dir", Keyword::Dir),
    ("in", Keyword::In),
    ("out", Keyword::Out),
    ("proto", Keyword::Proto),
    ("tcp", Keyword::Tcp),
    ("udp", Keyword::Udp),
    ("comm", Keyword::Comm),
    ("pid", Keyword::Pid),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenKind {
    LParen,
    RParen,
    Keyword(Keyword),
    /// Decimal digits.
    Number,
    /// Digits, `-`, digits (either side may be empty).
    PortRange,
    /// An IPv4 or IPv6 address, possibly with `/mask`; checked by the parser.
    Address,
    /// The text between the quotes.
    Str(String),
    /// A `"` with no closing quote on its line.
    UnterminatedStr,
    /// `#` outside a rule file, where it does not start a comment.
    Hash,
    /// Anything else, up to the next space, parenthesis or quote.
    Unknown,
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    /// Byte range in the source text.
    pub(crate) span: Range<usize>,
}

/// Cuts `text` into tokens. In a rule file (`comments`), `#` starts a comment
/// that runs to the end of the line; in an `-e` rule tcpspy has no comments.
pub(crate) fn tokenize(text: &str, comments: bool) -> Vec<Token> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let kind = match c {
            b'(' => {
                i += 1;
                TokenKind::LParen
            }
            b')' => {
                i += 1;
                TokenKind::RParen
            }
            b'#' if comments => {
                i = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
                continue;
            }
            b'#' => {
                i += 1;
                TokenKind::Hash
            }
            b'"' => match text[i + 1..].find(['"', '\n']) {
                Some(n) if bytes[i + 1 + n] == b'"' => {
                    i += n + 2;
                    TokenKind::Str(text[start + 1..i - 1].to_owned())
                }
                found => {
                    i = found.map_or(bytes.len(), |n| i + 1 + n);
                    TokenKind::UnterminatedStr
                }
            },
            _ => {
                let (kind, len) = longest_match(&bytes[i..]);
                i += len;
                kind
            }
        };
        tokens.push(Token {
            kind,
            span: start..i,
        });
    }
    tokens
}

/// The longest of: a keyword, a number or port range, an address. Ties go to
/// the keyword, as flex prefers the earlier rule.
fn longest_match(rest: &[u8]) -> (TokenKind, usize) {
    let keyword = KEYWORDS
        .iter()
        .filter(|(word, _)| {
            rest.len() >= word.len() && rest[..word.len()].eq_ignore_ascii_case(word.as_bytes())
        })
        .max_by_key(|(word, _)| word.len())
        .map(|&(word, kw)| (TokenKind::Keyword(kw), word.len()));

    let digits = |from: usize| {
        rest[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let low = digits(0);
    let number = if rest.get(low) == Some(&b'-') {
        Some((TokenKind::PortRange, low + 1 + digits(low + 1)))
    } else {
        (low > 0).then_some((TokenKind::Number, low))
    };

    let addr_char = |b: &u8| b.is_ascii_hexdigit() || *b == b':' || *b == b'.';
    let addr_len = rest.iter().take_while(|b| addr_char(b)).count();
    let address = rest[..addr_len]
        .iter()
        .any(|&b| b == b':' || b == b'.')
        .then(|| {
            let mut len = addr_len;
            if rest.get(len) == Some(&b'/') {
                let mask_char = |b: &&u8| b.is_ascii_digit() || **b == b'.';
                len += 1 + rest[len + 1..].iter().take_while(mask_char).count();
            }
            (TokenKind::Address, len)
        });

    let mut best: Option<(TokenKind, usize)> = None;
    for candidate in [keyword, number, address].into_iter().flatten() {
        if best.as_ref().is_none_or(|(_, len)| candidate.1 > *len) {
            best = Some(candidate);
        }
    }
    best.unwrap_or_else(|| {
        let len = rest
            .iter()
            .take_while(|&&b| !b.is_ascii_whitespace() && !matches!(b, b'(' | b')' | b'"' | b'#'))
            .count();
        (TokenKind::Unknown, len.max(1))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(TokenKind, &str)> {
        tokenize(text, true)
            .into_iter()
            .map(|t| (t.kind, &text[t.span]))
            .collect()
    }

    #[test]
    fn keywords_need_no_space_and_ignore_case() {
        use Keyword::*;
        use TokenKind::Keyword as K;
        assert_eq!(
            kinds("ip6or IP"),
            vec![(K(Ip6), "ip6"), (K(Or), "or"), (K(Ip), "IP")]
        );
        assert_eq!(
            kinds("user\"root\"and(ip)"),
            vec![
                (K(User), "user"),
                (TokenKind::Str("root".into()), "\"root\""),
                (K(And), "and"),
                (TokenKind::LParen, "("),
                (K(Ip), "ip"),
                (TokenKind::RParen, ")"),
            ]
        );
    }

    #[test]
    fn numbers_ranges_and_addresses() {
        use TokenKind::*;
        assert_eq!(kinds("25"), vec![(Number, "25")]);
        assert_eq!(
            kinds("1-2 1- -2 -"),
            vec![
                (PortRange, "1-2"),
                (PortRange, "1-"),
                (PortRange, "-2"),
                (PortRange, "-"),
            ]
        );
        assert_eq!(
            kinds("10.0.0.0/255.0.0.0"),
            vec![(Address, "10.0.0.0/255.0.0.0")]
        );
        assert_eq!(
            kinds("fe80::1/64and"),
            vec![
                (Address, "fe80::1/64"),
                (TokenKind::Keyword(self::Keyword::And), "and"),
            ]
        );
        assert_eq!(kinds("0x10"), vec![(Number, "0"), (Unknown, "x10")]);
    }

    #[test]
    fn strings_comments_and_strays() {
        use TokenKind::*;
        assert_eq!(
            kinds("\"a b\" # c \"d\"\n@"),
            vec![(Str("a b".into()), "\"a b\""), (Unknown, "@"),]
        );
        assert_eq!(
            kinds("\"open\nip"),
            vec![
                (UnterminatedStr, "\"open"),
                (TokenKind::Keyword(self::Keyword::Ip), "ip"),
            ]
        );
        let no_comments: Vec<_> = tokenize("ip # x", false)
            .into_iter()
            .map(|t| t.kind)
            .collect();
        assert_eq!(no_comments[1], Hash);
    }
}
