//! Shell wildcard patterns with the exact semantics tcpspy gets from
//! `fnmatch(pattern, path, FNM_PATHNAME)` in the C locale: `*`, `?` and bracket
//! expressions never match `/`, backslash escapes the next character, a leading
//! `.` needs no special match (no `FNM_PERIOD`), and case matters.
//!
//! Patterns are compiled once when a rule is read: each `/`-separated component
//! becomes a list of pieces, bracket expressions become 256-bit sets, and a
//! component without wildcards is a plain byte comparison. Matching a path is
//! then a component-by-component walk with no allocation.

use std::fmt;

/// A compiled wildcard pattern.
#[derive(Clone)]
pub(crate) struct Glob {
    pattern: String,
    /// The literal text before the first wildcard: most paths fail here, with
    /// one comparison.
    prefix: Box<[u8]>,
    /// With `FNM_PATHNAME` (exe): one entry per `/`-separated component.
    /// Without (comm): exactly one entry.
    components: Box<[Component]>,
    pathname: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Component {
    /// No wildcards: compare bytes.
    Literal(Box<[u8]>),
    Pieces(Box<[Piece]>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(Box<[u8]>),
    AnyByte,
    Star,
    Set(Box<ByteSet>),
}

/// A set of bytes, one bit each.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ByteSet([u64; 4]);

impl ByteSet {
    fn insert(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }
    fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }
}

impl Glob {
    /// `pathname`: whether `/` must be matched by a `/` in the pattern
    /// (`FNM_PATHNAME`, as tcpspy uses for executables).
    pub(crate) fn new(pattern: &str, pathname: bool) -> Glob {
        let pieces = parse_pieces(pattern.as_bytes(), pathname);
        let prefix = match pieces.first() {
            Some(Piece::Literal(bytes)) => bytes.clone(),
            _ => Box::new([]),
        };
        let mut components = Vec::new();
        if pathname {
            // Split at literal slashes: nothing else can match one.
            let mut current = Vec::new();
            for piece in pieces {
                match piece {
                    Piece::Literal(bytes) => {
                        let mut parts = bytes.split(|&b| b == b'/');
                        if let Some(first) = parts.next() {
                            push_literal(&mut current, first);
                        }
                        for part in parts {
                            components.push(finish(std::mem::take(&mut current)));
                            push_literal(&mut current, part);
                        }
                    }
                    other => current.push(other),
                }
            }
            components.push(finish(current));
        } else {
            components.push(finish(pieces));
        }
        Glob {
            pattern: pattern.to_owned(),
            prefix,
            components: components.into_boxed_slice(),
            pathname,
        }
    }

    pub(crate) fn pattern(&self) -> &str {
        &self.pattern
    }

    pub(crate) fn matches(&self, text: &str) -> bool {
        let text = text.as_bytes();
        if !text.starts_with(&self.prefix) {
            return false;
        }
        if !self.pathname {
            return component_matches(&self.components[0], text);
        }
        let mut parts = text.split(|&b| b == b'/');
        for component in self.components.iter() {
            match parts.next() {
                Some(part) if component_matches(component, part) => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

impl PartialEq for Glob {
    fn eq(&self, other: &Glob) -> bool {
        self.pattern == other.pattern && self.pathname == other.pathname
    }
}

impl Eq for Glob {}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.pattern)
    }
}

fn push_literal(pieces: &mut Vec<Piece>, bytes: &[u8]) {
    if !bytes.is_empty() {
        pieces.push(Piece::Literal(bytes.into()));
    }
}

fn finish(pieces: Vec<Piece>) -> Component {
    match pieces.as_slice() {
        [] => Component::Literal(Box::new([])),
        [Piece::Literal(bytes)] => Component::Literal(bytes.clone()),
        _ => Component::Pieces(pieces.into_boxed_slice()),
    }
}

/// Turns pattern bytes into pieces, merging adjacent literal bytes.
fn parse_pieces(pat: &[u8], pathname: bool) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut literal = Vec::new();
    let mut i = 0;
    let flush = |literal: &mut Vec<u8>, pieces: &mut Vec<Piece>| {
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(literal).into_boxed_slice()));
        }
    };
    while i < pat.len() {
        match pat[i] {
            b'\\' if i + 1 < pat.len() => {
                literal.push(pat[i + 1]);
                i += 2;
            }
            b'?' => {
                flush(&mut literal, &mut pieces);
                pieces.push(Piece::AnyByte);
                i += 1;
            }
            b'*' => {
                flush(&mut literal, &mut pieces);
                // Consecutive stars mean the same as one.
                if pieces.last() != Some(&Piece::Star) {
                    pieces.push(Piece::Star);
                }
                i += 1;
            }
            b'[' => match parse_bracket(pat, i + 1, pathname) {
                Some((set, next)) => {
                    flush(&mut literal, &mut pieces);
                    pieces.push(Piece::Set(Box::new(set)));
                    i = next;
                }
                // An unclosed bracket is an ordinary character, as in fnmatch.
                None => {
                    literal.push(b'[');
                    i += 1;
                }
            },
            b => {
                literal.push(b);
                i += 1;
            }
        }
    }
    flush(&mut literal, &mut pieces);
    pieces
}

/// Parses a bracket expression starting after `[`; returns the set of bytes it
/// matches and the index after its `]`, or `None` if it is not closed.
fn parse_bracket(pat: &[u8], mut i: usize, pathname: bool) -> Option<(ByteSet, usize)> {
    let negate = matches!(pat.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut set = ByteSet([0; 4]);
    let mut first = true;
    loop {
        let mut c = *pat.get(i)?;
        if c == b']' && !first {
            i += 1;
            break;
        }
        first = false;
        if c == b'[' && pat.get(i + 1) == Some(&b':') {
            if let Some(len) = pat[i + 2..].windows(2).position(|w| w == b":]") {
                let name = &pat[i + 2..i + 2 + len];
                for b in 0..=255u8 {
                    if class_contains(name, b)? {
                        set.insert(b);
                    }
                }
                i += len + 4;
                continue;
            }
        }
        if c == b'\\' {
            i += 1;
            c = *pat.get(i)?;
        }
        i += 1;
        // A range `c-d`, unless the `-` is the last character before `]`.
        if pat.get(i) == Some(&b'-') && pat.get(i + 1).is_some_and(|&d| d != b']') {
            let mut d = pat[i + 1];
            i += 2;
            if d == b'\\' {
                d = *pat.get(i)?;
                i += 1;
            }
            for b in c..=d {
                set.insert(b);
            }
        } else {
            set.insert(c);
        }
    }
    if negate {
        for word in &mut set.0 {
            *word = !*word;
        }
    }
    if pathname {
        // With FNM_PATHNAME only a literal `/` matches a slash.
        set.0[0] &= !(1 << b'/');
    }
    Some((set, i))
}

/// The C locale's character classes; `None` for an unknown class name, which
/// makes fnmatch treat the whole pattern as not matching anything we can
/// express, so we reject the bracket (it then stays a literal `[`).
fn class_contains(name: &[u8], b: u8) -> Option<bool> {
    Some(match name {
        b"alnum" => b.is_ascii_alphanumeric(),
        b"alpha" => b.is_ascii_alphabetic(),
        b"blank" => b == b' ' || b == b'\t',
        b"cntrl" => b.is_ascii_control(),
        b"digit" => b.is_ascii_digit(),
        b"graph" => b.is_ascii_graphic(),
        b"lower" => b.is_ascii_lowercase(),
        b"print" => b.is_ascii_graphic() || b == b' ',
        b"punct" => b.is_ascii_punctuation(),
        b"space" => b.is_ascii_whitespace() || b == 0x0b,
        b"upper" => b.is_ascii_uppercase(),
        b"xdigit" => b.is_ascii_hexdigit(),
        _ => return None,
    })
}

fn component_matches(component: &Component, text: &[u8]) -> bool {
    match component {
        Component::Literal(bytes) => **bytes == *text,
        Component::Pieces(pieces) => pieces_match(pieces, text),
    }
}

/// Wildcard matching with one backtrack point (the latest `*`): enough, since a
/// later star can always absorb what an earlier one would have.
fn pieces_match(pieces: &[Piece], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if let Some(piece) = pieces.get(p) {
            let advanced = match piece {
                Piece::Star => {
                    star = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                Piece::Literal(bytes) => text[t..].starts_with(bytes).then_some(bytes.len()),
                Piece::AnyByte => (t < text.len()).then_some(1),
                Piece::Set(set) => text.get(t).is_some_and(|&b| set.contains(b)).then_some(1),
            };
            if let Some(n) = advanced {
                p += 1;
                t += n;
                continue;
            }
        } else if t == text.len() {
            return true;
        }
        // Mismatch: let the latest star swallow one more byte and retry.
        match star {
            Some((sp, st)) if st < text.len() => {
                star = Some((sp, st + 1));
                p = sp;
                t = st + 1;
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe(pattern: &str, path: &str) -> bool {
        Glob::new(pattern, true).matches(path)
    }

    #[test]
    fn pathname_semantics_as_tcpspy_uses_them() {
        // Each of these was checked against tcpspy -p on /usr/bin/bash.
        assert!(exe("/usr/bin/bash", "/usr/bin/bash"));
        assert!(exe("/usr/bin/ba[rs]h", "/usr/bin/bash"));
        assert!(exe("/usr/bin/bas?", "/usr/bin/bash"));
        assert!(exe("\\/usr\\/bin\\/bash", "/usr/bin/bash"));
        assert!(exe("/usr/bin/[!x]ash", "/usr/bin/bash"));
        assert!(exe("/usr/bin/[[:alpha:]]ash", "/usr/bin/bash"));
        assert!(exe("/usr/bin/[\\a-c]ash", "/usr/bin/bash"));
        assert!(exe("/usr/bin/b[]a]sh", "/usr/bin/bash"));
        assert!(exe("/usr/bin/b*", "/usr/bin/bash"));
        assert!(!exe("*bash", "/usr/bin/bash"));
        assert!(!exe("/usr/*", "/usr/bin/bash"));
        assert!(!exe("/usr/bin/BASH", "/usr/bin/bash"));
        // No FNM_PERIOD: `*` matches a leading dot.
        assert!(exe("/root/*/x", "/root/.pyenv/x"));
    }

    #[test]
    fn stars_backtrack_within_a_component() {
        assert!(exe("/a/*b*c*d", "/a/xbxxcxd"));
        assert!(exe("/a/*.so*", "/a/libfoo.so.1"));
        assert!(!exe("/a/*b", "/a/bbbx"));
        assert!(exe("/*/*", "/a/b"));
        assert!(!exe("/*", "/a/b"));
        assert!(exe("*", ""));
        assert!(!exe("?", ""));
    }

    #[test]
    fn empty_pattern_only_matches_empty_text() {
        assert!(exe("", ""));
        assert!(!exe("", "/bin/sh"));
    }

    #[test]
    fn brackets_never_match_slash_with_pathname() {
        assert!(!exe("/a[/]b", "/a/b"));
        assert!(!exe("/a?b", "/a/b"));
        assert!(Glob::new("a?b", false).matches("a/b"));
        assert!(Glob::new("kworker/*", false).matches("kworker/0:1"));
    }

    #[test]
    fn unclosed_bracket_and_trailing_backslash_are_literal() {
        assert!(exe("/a[b", "/a[b"));
        assert!(exe("/a\\", "/a\\"));
        assert!(exe("/[a-", "/[a-"));
    }
}
