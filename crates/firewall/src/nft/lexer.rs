//! Tokens of the nftables language, each with the place it came from so every
//! error can point at a line and column.
//!
//! nft's own scanner decides what a word is from context (an IPv6 address and
//! `tcp dport` both contain letters and colons); here a word is any run of
//! address/name characters and the parser interprets it where it is used.

/// Where a token starts: file index into the parser's source list, 1-based
/// line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub file: usize,
    pub line: u32,
    pub col: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    /// Names, numbers, addresses, prefixes, ranges: `tcp`, `22`, `fe80::/10`, `1-9`.
    Word(String),
    /// A double-quoted string, without the quotes.
    Str(String),
    /// `@name`: a named set reference.
    At(String),
    /// `$name`: a variable reference.
    Var(String),
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    Semi,
    Newline,
    /// `=`, `==`, `!=`, `<`, `>`, `<=`, `>=`, `&`, `|`, `^`, `!`.
    Op(&'static str),
}

impl Tok {
    pub fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{w}'"),
            Tok::Str(s) => format!("string \"{s}\""),
            Tok::At(s) => format!("'@{s}'"),
            Tok::Var(s) => format!("'${s}'"),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::Semi => "';'".into(),
            Tok::Newline => "end of line".into(),
            Tok::Op(o) => format!("'{o}'"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub tok: Tok,
    pub pos: Pos,
}

/// A lexing error: position and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub pos: Pos,
    pub message: String,
}

/// `+` is a word character for priorities (`filter+5`, `filter + 5`), as `-` is.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.' | '/' | ':' | '*' | '%')
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// Splits `text` (file number `file`) into tokens. Comments and line
/// continuations are dropped; newlines are kept because they end statements.
pub fn lex(text: &str, file: usize) -> Result<Vec<Token>, LexError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1u32, 1u32);
    while i < chars.len() {
        let c = chars[i];
        let pos = Pos { file, line, col };
        let start = i;
        let tok = match c {
            '\n' => {
                i += 1;
                line += 1;
                col = 1;
                tokens.push(Token {
                    tok: Tok::Newline,
                    pos,
                });
                continue;
            }
            ' ' | '\t' | '\r' => {
                i += 1;
                col += 1;
                continue;
            }
            '\\' if chars.get(i + 1) == Some(&'\n') => {
                i += 2;
                line += 1;
                col = 1;
                continue;
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '"' => {
                i += 1;
                let body_start = i;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\n' {
                        return Err(LexError {
                            pos,
                            message: "unterminated string".into(),
                        });
                    }
                    i += 1;
                }
                if i == chars.len() {
                    return Err(LexError {
                        pos,
                        message: "unterminated string".into(),
                    });
                }
                let body: String = chars[body_start..i].iter().collect();
                i += 1;
                Tok::Str(body)
            }
            '@' | '$' => {
                i += 1;
                let name_start = i;
                while i < chars.len() && is_name_char(chars[i]) {
                    i += 1;
                }
                if i == name_start {
                    return Err(LexError {
                        pos,
                        message: format!("'{c}' must be followed by a name"),
                    });
                }
                let name: String = chars[name_start..i].iter().collect();
                if c == '@' {
                    Tok::At(name)
                } else {
                    Tok::Var(name)
                }
            }
            '{' | '}' | '(' | ')' | ',' | ';' => {
                i += 1;
                match c {
                    '{' => Tok::LBrace,
                    '}' => Tok::RBrace,
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    ',' => Tok::Comma,
                    _ => Tok::Semi,
                }
            }
            '=' | '!' | '<' | '>' | '&' | '|' | '^' => {
                let two = chars.get(i + 1) == Some(&'=');
                i += if two && matches!(c, '=' | '!' | '<' | '>') {
                    2
                } else {
                    1
                };
                Tok::Op(match (c, i - start) {
                    ('=', 2) => "==",
                    ('!', 2) => "!=",
                    ('<', 2) => "<=",
                    ('>', 2) => ">=",
                    ('=', _) => "=",
                    ('!', _) => "!",
                    ('<', _) => "<",
                    ('>', _) => ">",
                    ('&', _) => "&",
                    ('|', _) => "|",
                    _ => "^",
                })
            }
            c if is_word_char(c) => {
                while i < chars.len() && is_word_char(chars[i]) {
                    i += 1;
                }
                Tok::Word(chars[start..i].iter().collect())
            }
            other => {
                let shown = if other.is_control() {
                    format!("{:?}", other)
                } else {
                    format!("'{other}'")
                };
                return Err(LexError {
                    pos,
                    message: format!("unexpected character {shown}"),
                });
            }
        };
        col += (i - start) as u32;
        tokens.push(Token { tok, pos });
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        lex(s, 0).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn words_keep_addresses_and_ranges_whole() {
        assert_eq!(
            toks("ip6 saddr fe80::/10 tcp dport 1024-65535 # note\n"),
            vec![
                Tok::Word("ip6".into()),
                Tok::Word("saddr".into()),
                Tok::Word("fe80::/10".into()),
                Tok::Word("tcp".into()),
                Tok::Word("dport".into()),
                Tok::Word("1024-65535".into()),
                Tok::Newline,
            ]
        );
    }

    #[test]
    fn operators_strings_and_references() {
        assert_eq!(
            toks("tcp dport != @ports comment \"a b\" $x;"),
            vec![
                Tok::Word("tcp".into()),
                Tok::Word("dport".into()),
                Tok::Op("!="),
                Tok::At("ports".into()),
                Tok::Word("comment".into()),
                Tok::Str("a b".into()),
                Tok::Var("x".into()),
                Tok::Semi,
            ]
        );
    }

    #[test]
    fn errors_point_at_the_character() {
        let err = lex("table ip t {\n  chain c ` \n", 0).unwrap_err();
        assert_eq!((err.pos.line, err.pos.col), (2, 11));
        let err = lex("comment \"open\nx", 0).unwrap_err();
        assert_eq!(err.message, "unterminated string");
        assert_eq!((err.pos.line, err.pos.col), (1, 9));
    }
}
