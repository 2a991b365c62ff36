//! The tokens the statement parser reads: the lexer's tokens of every source
//! file, with the files an `include` names (see [`include`](super::include))
//! spliced in after its statement ends, and `$variables` expanded as they are
//! reached. Both are bounded: include depth as in nft, cycles refused, and
//! the token count, so neither `include` nor `define` doubling can exhaust
//! memory. It keeps the sources, so it is also where a position becomes a
//! [`ParseError`] with a caret, or a rule's [`Location`].

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};

use super::include;
use crate::nft::lexer::{lex, Pos, Tok, Token};
use crate::nft::model::Location;

/// At most this many files are being read at once, the top one included
/// (nft's limit: 15 levels of include below the top file).
const MAX_INCLUDE_DEPTH: usize = 16;
/// At most this many files are read for one ruleset (globs fan out).
const MAX_INCLUDED_FILES: usize = 4096;
/// Variable expansion may not grow the token stream past this (`define`
/// doubling attacks).
const MAX_TOKENS: usize = 2_000_000;

/// A ruleset that cannot be read: where and why, with the offending line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    pub file: String,
    pub line: u32,
    pub col: u32,
    pub message: String,
    /// The source line the error is on, for the caret display.
    pub source_line: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )?;
        if !self.source_line.is_empty() || self.col > 0 {
            let caret_at = (self.col as usize).saturating_sub(1);
            let pad: String = self
                .source_line
                .chars()
                .take(caret_at)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n{}\n{pad}^", self.source_line)?;
        }
        Ok(())
    }
}

pub(super) type PResult<T> = Result<T, ParseError>;

struct Source {
    name: String,
    /// Where the file is, and the same canonicalized (to tell a cycle); `None`
    /// for text that did not come from a file.
    path: Option<(PathBuf, PathBuf)>,
    /// The source whose `include` read this one.
    included_by: Option<usize>,
    text: String,
}

/// The tokens of one ruleset and of every file it includes, taken in order.
pub(super) struct TokenStream {
    sources: Vec<Source>,
    tokens: VecDeque<Token>,
    defines: HashMap<String, Vec<Token>>,
    include_path: Vec<PathBuf>,
    /// Where the last token taken starts: an error at the end of input points here.
    pub(super) last_pos: Pos,
}

impl TokenStream {
    /// The tokens of `text`. `path` is where its `include`s are resolved
    /// from, then `include_path` (nft's `-I`); without a path `include` is
    /// refused.
    pub(super) fn new(
        name: String,
        path: Option<PathBuf>,
        include_path: &[PathBuf],
        text: String,
    ) -> PResult<TokenStream> {
        let mut stream = TokenStream {
            sources: Vec::new(),
            tokens: VecDeque::new(),
            defines: HashMap::new(),
            include_path: include_path.to_vec(),
            last_pos: Pos {
                file: 0,
                line: 1,
                col: 1,
            },
        };
        let path = path.map(|path| {
            let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            (path, canonical)
        });
        let tokens = stream.add_source(name, path, None, text)?;
        stream.tokens = tokens.into();
        Ok(stream)
    }

    fn add_source(
        &mut self,
        name: String,
        path: Option<(PathBuf, PathBuf)>,
        included_by: Option<usize>,
        text: String,
    ) -> PResult<Vec<Token>> {
        let file = self.sources.len();
        self.sources.push(Source {
            name,
            path,
            included_by,
            text,
        });
        lex(&self.sources[file].text, file).map_err(|e| self.error_at(e.pos, e.message))
    }

    pub(super) fn error_at(&self, pos: Pos, message: impl Into<String>) -> ParseError {
        let source = &self.sources[pos.file];
        let source_line = source
            .text
            .lines()
            .nth(pos.line.saturating_sub(1) as usize)
            .unwrap_or("")
            .to_owned();
        ParseError {
            file: source.name.clone(),
            line: pos.line,
            col: pos.col,
            message: message.into(),
            source_line,
        }
    }

    pub(super) fn location(&self, pos: Pos) -> Location {
        Location::Text {
            file: self.sources[pos.file].name.clone(),
            line: pos.line,
            col: pos.col,
        }
    }

    /// The next token with `$variables` expanded in place.
    pub(super) fn peek(&mut self) -> PResult<Option<&Token>> {
        while let Some(Token {
            tok: Tok::Var(name),
            pos,
        }) = self.tokens.front()
        {
            let (name, pos) = (name.clone(), *pos);
            let Some(value) = self.defines.get(&name) else {
                return Err(self.error_at(pos, format!("undefined variable ${name}")));
            };
            if self.tokens.len() + value.len() > MAX_TOKENS {
                return Err(self.error_at(pos, "variable expansion is too large"));
            }
            let value = value.clone();
            self.tokens.pop_front();
            for t in value.into_iter().rev() {
                self.tokens.push_front(t);
            }
        }
        Ok(self.tokens.front())
    }

    pub(super) fn next(&mut self) -> PResult<Option<Token>> {
        self.peek()?;
        let t = self.tokens.pop_front();
        if let Some(t) = &t {
            self.last_pos = t.pos;
        }
        Ok(t)
    }

    pub(super) fn peek_tok(&mut self) -> PResult<Option<Tok>> {
        Ok(self.peek()?.map(|t| t.tok.clone()))
    }

    pub(super) fn expect_next(&mut self, what: &str) -> PResult<Token> {
        match self.next()? {
            Some(t) => Ok(t),
            None => Err(self.error_at(
                self.last_pos,
                format!("unexpected end of file, expected {what}"),
            )),
        }
    }

    pub(super) fn expect_word(&mut self, what: &str) -> PResult<(String, Pos)> {
        let t = self.expect_next(what)?;
        match t.tok {
            Tok::Word(w) => Ok((w, t.pos)),
            Tok::Str(s) => Ok((s, t.pos)),
            other => Err(self.error_at(
                t.pos,
                format!("expected {what}, found {}", other.describe()),
            )),
        }
    }

    pub(super) fn expect(&mut self, tok: Tok, what: &str) -> PResult<Pos> {
        let t = self.expect_next(what)?;
        if t.tok == tok {
            Ok(t.pos)
        } else {
            Err(self.error_at(
                t.pos,
                format!("expected {what}, found {}", t.tok.describe()),
            ))
        }
    }

    pub(super) fn skip_separators(&mut self) -> PResult<()> {
        while matches!(self.peek_tok()?, Some(Tok::Newline | Tok::Semi)) {
            self.next()?;
        }
        Ok(())
    }

    /// The end of a statement: newline, `;`, end of file, or (not consumed) `}`.
    pub(super) fn end_statement(&mut self) -> PResult<()> {
        match self.peek()? {
            None
            | Some(Token {
                tok: Tok::RBrace, ..
            }) => Ok(()),
            Some(Token {
                tok: Tok::Newline | Tok::Semi,
                ..
            }) => {
                self.next()?;
                Ok(())
            }
            Some(t) => {
                let t = t.clone();
                Err(self.error_at(
                    t.pos,
                    format!("expected end of statement, found {}", t.tok.describe()),
                ))
            }
        }
    }

    /// Tokens to the end of the statement, newlines inside braces included.
    pub(super) fn statement_tokens(&mut self) -> PResult<Vec<Token>> {
        let mut out = Vec::new();
        let mut depth = 0usize;
        loop {
            match self.peek_tok()? {
                None => break,
                Some(Tok::Newline | Tok::Semi) if depth == 0 => break,
                Some(Tok::RBrace) if depth == 0 => break,
                _ => {}
            }
            let t = self.next()?.expect("peeked");
            match t.tok {
                Tok::LBrace => depth += 1,
                Tok::RBrace => depth -= 1,
                Tok::Newline => continue,
                _ => {}
            }
            out.push(t);
        }
        if depth > 0 {
            return Err(self.error_at(self.last_pos, "unclosed '{'"));
        }
        Ok(out)
    }

    /// Skips a `{ ... }` block (the opening brace not yet consumed).
    pub(super) fn skip_block(&mut self) -> PResult<()> {
        let open = self.expect(Tok::LBrace, "'{'")?;
        let mut depth = 1usize;
        while depth > 0 {
            match self.next()? {
                None => return Err(self.error_at(open, "unclosed '{'")),
                Some(Token {
                    tok: Tok::LBrace, ..
                }) => depth += 1,
                Some(Token {
                    tok: Tok::RBrace, ..
                }) => depth -= 1,
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Consumes the words before a `{` (e.g. `map name`, `ct helper name`).
    pub(super) fn statement_tokens_until_block(&mut self) -> PResult<()> {
        while let Some(tok) = self.peek_tok()? {
            if tok == Tok::LBrace {
                return Ok(());
            }
            let t = self.next()?.expect("peeked");
            if matches!(t.tok, Tok::Newline | Tok::Semi | Tok::RBrace) {
                return Err(self.error_at(t.pos, "expected '{'"));
            }
        }
        Err(self.error_at(self.last_pos, "unexpected end of file, expected '{'"))
    }

    pub(super) fn define(&mut self) -> PResult<()> {
        let (name, _) = self.expect_word("a variable name")?;
        self.expect(Tok::Op("="), "'='")?;
        let value = self.statement_tokens()?;
        if value.is_empty() {
            return Err(self.error_at(self.last_pos, format!("empty value for ${name}")));
        }
        self.defines.insert(name, value);
        Ok(())
    }

    /// `include "NAME"` (the word already taken): ends the statement, then
    /// puts the tokens of every file NAME stands for in front of what follows.
    pub(super) fn include(&mut self, pos: Pos) -> PResult<()> {
        let t = self.expect_next("a file name")?;
        let Tok::Str(name) = t.tok else {
            return Err(self.error_at(t.pos, "include needs a quoted file name"));
        };
        self.end_statement()?;
        let Some((base, _)) = self.sources[pos.file].path.clone() else {
            return Err(self.error_at(
                pos,
                "include is only supported in rulesets read from a file",
            ));
        };
        if self.including_chain(pos.file).len() >= MAX_INCLUDE_DEPTH {
            return Err(self.error_at(
                pos,
                format!("include nested too deeply, max {MAX_INCLUDE_DEPTH} levels"),
            ));
        }
        let cannot = |stream: &TokenStream, why: &dyn fmt::Display| {
            stream.error_at(t.pos, format!("cannot include \"{name}\": {why}"))
        };
        let dir = base.parent().unwrap_or(Path::new("."));
        let paths =
            include::resolve(&name, dir, &self.include_path).map_err(|e| cannot(self, &e))?;
        let mut spliced = Vec::new();
        for path in paths {
            let canonical = std::fs::canonicalize(&path).map_err(|e| cannot(self, &e))?;
            self.refuse_cycle(pos.file, &canonical, t.pos)?;
            if self.sources.len() >= MAX_INCLUDED_FILES {
                return Err(self.error_at(
                    t.pos,
                    format!("more than {MAX_INCLUDED_FILES} files included"),
                ));
            }
            let text = std::fs::read(&path)
                .map_err(|e| cannot(self, &format_args!("reading {}: {e}", path.display())))?;
            let text = String::from_utf8_lossy(&text).into_owned();
            let name = path.display().to_string();
            spliced.extend(self.add_source(name, Some((path, canonical)), Some(pos.file), text)?);
            // A file's last statement ends with the file.
            spliced.push(Token {
                tok: Tok::Newline,
                pos,
            });
        }
        if self.tokens.len() + spliced.len() > MAX_TOKENS {
            return Err(self.error_at(t.pos, "included files are too large"));
        }
        for tok in spliced.into_iter().rev() {
            self.tokens.push_front(tok);
        }
        Ok(())
    }

    /// `file` and the files that included it, innermost first.
    fn including_chain(&self, file: usize) -> Vec<usize> {
        std::iter::successors(Some(file), |&f| self.sources[f].included_by).collect()
    }

    /// An error if `canonical` is `file` itself or one of the files including it.
    fn refuse_cycle(&self, file: usize, canonical: &Path, at: Pos) -> PResult<()> {
        let chain = self.including_chain(file);
        let Some(cut) = chain.iter().position(|&f| {
            self.sources[f]
                .path
                .as_ref()
                .is_some_and(|(_, c)| c == canonical)
        }) else {
            return Ok(());
        };
        let names: Vec<&str> = chain[..=cut]
            .iter()
            .rev()
            .chain(std::iter::once(&chain[cut]))
            .map(|&f| self.sources[f].name.as_str())
            .collect();
        Err(self.error_at(at, format!("include cycle: {}", names.join(" -> "))))
    }

    pub(super) fn undefine(&mut self) -> PResult<()> {
        let (name, _) = self.expect_word("a variable name")?;
        self.defines.remove(&name);
        Ok(())
    }
}
