//! A recursive-descent parser for the nftables subset host firewalls use.
//!
//! Structure (tables, chains, sets, base chain headers, `define`, `include`,
//! `flush`, `add`/`delete`) must be well-formed, and a mistake there is an error
//! with `FILE:LINE:COL` and a caret. Inside a rule, an expression this parser
//! does not model is kept as [`Match::Unknown`] instead of failing, because it
//! may well be valid nft (`limit rate`, `meta mark set`, concatenations): the
//! checker treats it conservatively and the report lists it.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use connscope_event::Protocol;
use connscope_names::Services;

use super::lexer::{lex, Pos, Tok, Token};
use super::{
    icmpv6_type_number, BaseChain, Chain, Field, Hook, Location, Match, NamedSet, Op, Policy, Rule,
    Ruleset, Table, TableFamily, Unsupported, Value, Values, Verdict, L4,
};
use crate::net::Prefix;

/// More included files than this is taken for an include loop.
const MAX_INCLUDES: usize = 64;
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

/// Reads a ruleset file; `include` is resolved relative to the including file.
pub fn parse_file(path: &Path) -> Result<Ruleset, ParseError> {
    let text = std::fs::read(path).map_err(|e| ParseError {
        file: path.display().to_string(),
        line: 0,
        col: 0,
        message: format!("cannot read: {e}"),
        source_line: String::new(),
    })?;
    let text = String::from_utf8_lossy(&text).into_owned();
    Parser::new(path.display().to_string(), Some(path.to_path_buf()), text)?.run()
}

/// Reads ruleset text that did not come from a file (`name` is used in
/// messages); `include` is refused because there is no directory to resolve it in.
pub fn parse_str(name: &str, text: &str) -> Result<Ruleset, ParseError> {
    Parser::new(name.to_owned(), None, text.to_owned())?.run()
}

struct Source {
    name: String,
    path: Option<PathBuf>,
    text: String,
}

struct Parser {
    sources: Vec<Source>,
    tokens: VecDeque<Token>,
    defines: HashMap<String, Vec<Token>>,
    ruleset: Ruleset,
    includes: usize,
    last_pos: Pos,
}

type PResult<T> = Result<T, ParseError>;

fn words_priority(name: &str) -> Option<i32> {
    Some(match name {
        "raw" => -300,
        "mangle" => -150,
        "dstnat" => -100,
        "filter" => 0,
        "security" => 50,
        "srcnat" => 100,
        _ => return None,
    })
}

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

impl Parser {
    fn new(name: String, path: Option<PathBuf>, text: String) -> PResult<Parser> {
        let mut parser = Parser {
            sources: Vec::new(),
            tokens: VecDeque::new(),
            defines: HashMap::new(),
            ruleset: Ruleset::default(),
            includes: 0,
            last_pos: Pos {
                file: 0,
                line: 1,
                col: 1,
            },
        };
        let tokens = parser.add_source(name, path, text)?;
        parser.tokens = tokens.into();
        Ok(parser)
    }

    fn add_source(
        &mut self,
        name: String,
        path: Option<PathBuf>,
        text: String,
    ) -> PResult<Vec<Token>> {
        let file = self.sources.len();
        self.sources.push(Source { name, path, text });
        lex(&self.sources[file].text, file).map_err(|e| self.error_at(e.pos, e.message))
    }

    fn error_at(&self, pos: Pos, message: impl Into<String>) -> ParseError {
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

    fn location(&self, pos: Pos) -> Location {
        Location::Text {
            file: self.sources[pos.file].name.clone(),
            line: pos.line,
            col: pos.col,
        }
    }

    /// The next token with `$variables` expanded in place.
    fn peek(&mut self) -> PResult<Option<&Token>> {
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

    fn next(&mut self) -> PResult<Option<Token>> {
        self.peek()?;
        let t = self.tokens.pop_front();
        if let Some(t) = &t {
            self.last_pos = t.pos;
        }
        Ok(t)
    }

    fn peek_tok(&mut self) -> PResult<Option<Tok>> {
        Ok(self.peek()?.map(|t| t.tok.clone()))
    }

    fn expect_next(&mut self, what: &str) -> PResult<Token> {
        match self.next()? {
            Some(t) => Ok(t),
            None => Err(self.error_at(
                self.last_pos,
                format!("unexpected end of file, expected {what}"),
            )),
        }
    }

    fn expect_word(&mut self, what: &str) -> PResult<(String, Pos)> {
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

    fn expect(&mut self, tok: Tok, what: &str) -> PResult<Pos> {
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

    fn skip_separators(&mut self) -> PResult<()> {
        while matches!(self.peek_tok()?, Some(Tok::Newline | Tok::Semi)) {
            self.next()?;
        }
        Ok(())
    }

    /// The end of a statement: newline, `;`, end of file, or (not consumed) `}`.
    fn end_statement(&mut self) -> PResult<()> {
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
    fn statement_tokens(&mut self) -> PResult<Vec<Token>> {
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
    fn skip_block(&mut self) -> PResult<()> {
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

    fn run(mut self) -> PResult<Ruleset> {
        loop {
            self.skip_separators()?;
            let Some(t) = self.next()? else { break };
            let Tok::Word(word) = &t.tok else {
                return Err(self.error_at(
                    t.pos,
                    format!("expected a command, found {}", t.tok.describe()),
                ));
            };
            match word.as_str() {
                "table" => self.table_command()?,
                "flush" => self.flush()?,
                "define" | "redefine" => self.define()?,
                "undefine" => {
                    let (name, _) = self.expect_word("a variable name")?;
                    self.defines.remove(&name);
                }
                "include" => self.include(t.pos)?,
                "add" | "create" => self.add(false)?,
                "insert" => self.add(true)?,
                "delete" | "destroy" => self.delete()?,
                other => {
                    return Err(self.error_at(
                        t.pos,
                        format!("unknown command '{other}'; expected table, define, include, flush, add, insert or delete"),
                    ))
                }
            }
            self.end_statement()?;
        }
        Ok(self.ruleset)
    }

    /// `[family] name`, family defaulting to `ip` as in nft.
    fn family_and_name(&mut self) -> PResult<(TableFamily, String)> {
        let (first, pos) = self.expect_word("a table family or name")?;
        if let Some(family) = TableFamily::from_name(&first) {
            if let Some(Tok::Word(_) | Tok::Str(_)) = self.peek_tok()? {
                let (name, _) = self.expect_word("a table name")?;
                return Ok((family, name));
            }
        }
        if first.is_empty() {
            return Err(self.error_at(pos, "empty table name"));
        }
        Ok((TableFamily::Ip, first))
    }

    fn table_index(&mut self, family: TableFamily, name: &str) -> usize {
        if let Some(i) = self
            .ruleset
            .tables
            .iter()
            .position(|t| t.family == family && t.name == name)
        {
            return i;
        }
        self.ruleset.tables.push(Table {
            family,
            name: name.to_owned(),
            chains: Vec::new(),
            sets: Vec::new(),
        });
        self.ruleset.tables.len() - 1
    }

    fn existing_table(&self, family: TableFamily, name: &str, pos: Pos) -> PResult<usize> {
        self.ruleset
            .tables
            .iter()
            .position(|t| t.family == family && t.name == name)
            .ok_or_else(|| self.error_at(pos, format!("no table {} {name}", family.as_str())))
    }

    fn chain_index(&mut self, table: usize, name: &str) -> usize {
        let chains = &mut self.ruleset.tables[table].chains;
        if let Some(i) = chains.iter().position(|c| c.name == name) {
            return i;
        }
        chains.push(Chain {
            name: name.to_owned(),
            base: None,
            rules: Vec::new(),
        });
        chains.len() - 1
    }

    fn table_command(&mut self) -> PResult<()> {
        let (family, name) = self.family_and_name()?;
        let table = self.table_index(family, &name);
        if let Some(Tok::LBrace) = self.peek_tok()? {
            self.next()?;
            self.table_body(table)?;
        }
        Ok(())
    }

    fn table_body(&mut self, table: usize) -> PResult<()> {
        loop {
            self.skip_separators()?;
            let t = self.expect_next("'}' closing the table")?;
            let word = match &t.tok {
                Tok::RBrace => return Ok(()),
                Tok::Word(w) => w.clone(),
                other => {
                    return Err(self.error_at(
                        t.pos,
                        format!("expected chain, set or '}}', found {}", other.describe()),
                    ))
                }
            };
            match word.as_str() {
                "chain" => {
                    let (name, _) = self.expect_word("a chain name")?;
                    let chain = self.chain_index(table, &name);
                    self.expect(Tok::LBrace, "'{' after the chain name")?;
                    self.chain_body(table, chain)?;
                }
                "set" => {
                    let (name, _) = self.expect_word("a set name")?;
                    self.expect(Tok::LBrace, "'{' after the set name")?;
                    self.set_body(table, &name)?;
                }
                "flags" | "comment" => {
                    self.statement_tokens()?;
                }
                "map" | "flowtable" | "counter" | "quota" | "ct" | "limit" | "secmark"
                | "synproxy" => {
                    // Named objects the checker does not model; a rule that
                    // uses one is itself unknown.
                    self.statement_tokens_until_block()?;
                    self.skip_block()?;
                    self.ruleset.unsupported.push(Unsupported {
                        location: self.location(t.pos),
                        text: format!("{word} object (not evaluated)"),
                    });
                }
                other => {
                    return Err(self.error_at(
                        t.pos,
                        format!("unknown table statement '{other}'; expected chain or set"),
                    ))
                }
            }
            self.end_statement()?;
        }
    }

    /// Consumes the words before a `{` (e.g. `map name`, `ct helper name`).
    fn statement_tokens_until_block(&mut self) -> PResult<()> {
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

    fn chain_body(&mut self, table: usize, chain: usize) -> PResult<()> {
        loop {
            self.skip_separators()?;
            let Some(t) = self.peek()?.cloned() else {
                return Err(self.error_at(
                    self.last_pos,
                    "unexpected end of file, expected '}' closing the chain",
                ));
            };
            match &t.tok {
                Tok::RBrace => {
                    self.next()?;
                    return Ok(());
                }
                Tok::Word(w) if w == "type" => {
                    self.next()?;
                    self.base_chain_header(table, chain)?;
                }
                Tok::Word(w) if w == "policy" => {
                    self.next()?;
                    let (policy, pos) = self.expect_word("accept or drop")?;
                    let policy = match policy.as_str() {
                        "accept" => Policy::Accept,
                        "drop" => Policy::Drop,
                        other => {
                            return Err(self.error_at(
                                pos,
                                format!("invalid policy '{other}'; expected accept or drop"),
                            ))
                        }
                    };
                    match &mut self.ruleset.tables[table].chains[chain].base {
                        Some(base) => base.policy = policy,
                        None => {
                            return Err(self.error_at(
                                t.pos,
                                "policy given for a chain that is not a base chain",
                            ))
                        }
                    }
                }
                Tok::Word(w) if w == "comment" || w == "devices" || w == "flags" => {
                    self.statement_tokens()?;
                }
                _ => {
                    let tokens = self.statement_tokens()?;
                    let rule = self.rule(&tokens)?;
                    self.ruleset.tables[table].chains[chain].rules.push(rule);
                }
            }
            self.end_statement()?;
        }
    }

    fn base_chain_header(&mut self, table: usize, chain: usize) -> PResult<()> {
        let (kind, kind_pos) = self.expect_word("a chain type")?;
        if !matches!(kind.as_str(), "filter" | "nat" | "route") {
            return Err(self.error_at(
                kind_pos,
                format!("unknown chain type '{kind}'; expected filter, nat or route"),
            ));
        }
        let (kw, kw_pos) = self.expect_word("'hook'")?;
        if kw != "hook" {
            return Err(self.error_at(kw_pos, format!("expected 'hook', found '{kw}'")));
        }
        let (hook_name, hook_pos) = self.expect_word("a hook name")?;
        let hook = Hook::from_name(&hook_name)
            .ok_or_else(|| self.error_at(hook_pos, format!("unknown hook '{hook_name}'")))?;
        let (mut kw, mut kw_pos) = self.expect_word("'priority'")?;
        if kw == "device" {
            self.expect_next("a device name")?;
            (kw, kw_pos) = self.expect_word("'priority'")?;
        }
        if kw != "priority" {
            return Err(self.error_at(kw_pos, format!("expected 'priority', found '{kw}'")));
        }
        let priority = self.priority()?;
        let policy = Policy::Accept;
        self.ruleset.tables[table].chains[chain].base = Some(BaseChain {
            kind,
            hook,
            priority,
            policy,
        });
        Ok(())
    }

    fn priority(&mut self) -> PResult<i32> {
        let (word, pos) = self.expect_word("a priority")?;
        let bad = |p: &Parser| p.error_at(pos, format!("invalid priority '{word}'"));
        if let Ok(n) = word.parse::<i32>() {
            return Ok(n);
        }
        // `filter`, `filter - 10`, `filter+10`
        let (name, rest) = match word.find(['+', '-']) {
            Some(i) => (&word[..i], Some(word[i..].to_owned())),
            None => (word.as_str(), None),
        };
        let base = words_priority(name).ok_or_else(|| bad(self))?;
        let offset = match rest {
            Some(r) if r.len() > 1 => r.parse::<i32>().map_err(|_| bad(self))?,
            Some(sign) => {
                let (n, npos) = self.expect_word("a priority offset")?;
                let n = n
                    .parse::<i32>()
                    .map_err(|_| self.error_at(npos, format!("invalid priority offset '{n}'")))?;
                if sign == "-" {
                    -n
                } else {
                    n
                }
            }
            None => match self.peek_tok()? {
                Some(Tok::Word(w)) if w == "-" || w == "+" => {
                    self.next()?;
                    let (n, npos) = self.expect_word("a priority offset")?;
                    let n = n.parse::<i32>().map_err(|_| {
                        self.error_at(npos, format!("invalid priority offset '{n}'"))
                    })?;
                    if w == "-" {
                        -n
                    } else {
                        n
                    }
                }
                _ => 0,
            },
        };
        Ok(base.saturating_add(offset))
    }

    fn set_body(&mut self, table: usize, name: &str) -> PResult<()> {
        let mut key: Option<Kind> = None;
        let mut elements: Option<Vec<Value>> = Some(Vec::new());
        let mut supported = true;
        loop {
            self.skip_separators()?;
            let t = self.expect_next("'}' closing the set")?;
            let word = match &t.tok {
                Tok::RBrace => break,
                Tok::Word(w) => w.clone(),
                other => {
                    return Err(self.error_at(
                        t.pos,
                        format!("expected a set property, found {}", other.describe()),
                    ))
                }
            };
            let tokens = self.statement_tokens()?;
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
                            return Err(
                                self.error_at(t.pos, "set elements given before the set type")
                            );
                        }
                        continue;
                    };
                    let mut cursor = Cursor::new(self, &tokens);
                    cursor.expect_op("=")?;
                    let values = cursor.values(kind)?;
                    if let (Some(list), Values::List(new)) = (&mut elements, values) {
                        list.extend(new);
                    }
                }
                "flags" | "timeout" | "gc-interval" | "size" | "policy" | "counter"
                | "auto-merge" | "comment" => {}
                other => {
                    return Err(self.error_at(t.pos, format!("unknown set property '{other}'")))
                }
            }
            self.end_statement()?;
        }
        if !supported {
            elements = None;
        }
        let sets = &mut self.ruleset.tables[table].sets;
        match sets.iter_mut().find(|s| s.name == name) {
            Some(existing) => match (&mut existing.elements, elements) {
                (Some(old), Some(new)) => old.extend(new),
                (slot, new) => *slot = slot.take().and(new),
            },
            None => sets.push(NamedSet {
                name: name.to_owned(),
                elements,
            }),
        }
        Ok(())
    }

    fn flush(&mut self) -> PResult<()> {
        let (what, pos) = self.expect_word("ruleset, table or chain")?;
        match what.as_str() {
            "ruleset" => {
                let family =
                    match self.peek_tok()? {
                        Some(Tok::Word(w)) => {
                            let (_, fpos) = self.expect_word("a family")?;
                            Some(TableFamily::from_name(&w).ok_or_else(|| {
                                self.error_at(fpos, format!("unknown family '{w}'"))
                            })?)
                        }
                        _ => None,
                    };
                self.ruleset
                    .tables
                    .retain(|t| family.is_some_and(|f| f != t.family));
            }
            "table" => {
                let (family, name) = self.family_and_name()?;
                let table = self.existing_table(family, &name, pos)?;
                for chain in &mut self.ruleset.tables[table].chains {
                    chain.rules.clear();
                }
                for set in &mut self.ruleset.tables[table].sets {
                    set.elements = set.elements.take().map(|_| Vec::new());
                }
            }
            "chain" => {
                let (family, name) = self.family_and_name()?;
                let table = self.existing_table(family, &name, pos)?;
                let (chain, cpos) = self.expect_word("a chain name")?;
                match self.ruleset.tables[table]
                    .chains
                    .iter_mut()
                    .find(|c| c.name == chain)
                {
                    Some(c) => c.rules.clear(),
                    None => {
                        return Err(self.error_at(cpos, format!("no chain {chain} in table {name}")))
                    }
                }
            }
            other => {
                return Err(self.error_at(
                    pos,
                    format!("cannot flush '{other}'; expected ruleset, table or chain"),
                ))
            }
        }
        Ok(())
    }

    fn define(&mut self) -> PResult<()> {
        let (name, _) = self.expect_word("a variable name")?;
        self.expect(Tok::Op("="), "'='")?;
        let value = self.statement_tokens()?;
        if value.is_empty() {
            return Err(self.error_at(self.last_pos, format!("empty value for ${name}")));
        }
        self.defines.insert(name, value);
        Ok(())
    }

    fn include(&mut self, pos: Pos) -> PResult<()> {
        let t = self.expect_next("a file name")?;
        let Tok::Str(name) = t.tok else {
            return Err(self.error_at(t.pos, "include needs a quoted file name"));
        };
        let Some(base) = self.sources[pos.file].path.clone() else {
            return Err(self.error_at(
                pos,
                "include is only supported in rulesets read from a file",
            ));
        };
        self.includes += 1;
        if self.includes > MAX_INCLUDES {
            return Err(self.error_at(
                pos,
                format!("more than {MAX_INCLUDES} includes (an include loop?)"),
            ));
        }
        let path = base.parent().unwrap_or(Path::new(".")).join(&name);
        let text = std::fs::read(&path)
            .map_err(|e| self.error_at(t.pos, format!("cannot include {}: {e}", path.display())))?;
        let text = String::from_utf8_lossy(&text).into_owned();
        let tokens = self.add_source(path.display().to_string(), Some(path), text)?;
        if self.tokens.len() + tokens.len() > MAX_TOKENS {
            return Err(self.error_at(t.pos, "included files are too large"));
        }
        // The included file's statements run before the rest of this one.
        self.tokens.push_front(Token {
            tok: Tok::Newline,
            pos,
        });
        for tok in tokens.into_iter().rev() {
            self.tokens.push_front(tok);
        }
        Ok(())
    }

    fn add(&mut self, insert: bool) -> PResult<()> {
        let (what, pos) = self.expect_word("table, chain, rule, set or element")?;
        match (what.as_str(), insert) {
            ("table", false) => self.table_command(),
            ("chain", false) => {
                let (family, name) = self.family_and_name()?;
                let table = self.existing_table(family, &name, pos)?;
                let (chain, _) = self.expect_word("a chain name")?;
                let chain = self.chain_index(table, &chain);
                if let Some(Tok::LBrace) = self.peek_tok()? {
                    self.next()?;
                    self.chain_body(table, chain)?;
                }
                Ok(())
            }
            ("rule", _) => {
                let (family, name) = self.family_and_name()?;
                let table = self.existing_table(family, &name, pos)?;
                let (chain_name, cpos) = self.expect_word("a chain name")?;
                let chain = self.ruleset.tables[table]
                    .chains
                    .iter()
                    .position(|c| c.name == chain_name)
                    .ok_or_else(|| {
                        self.error_at(cpos, format!("no chain {chain_name} in table {name}"))
                    })?;
                let tokens = self.statement_tokens()?;
                let rule = self.rule(&tokens)?;
                let rules = &mut self.ruleset.tables[table].chains[chain].rules;
                if insert {
                    rules.insert(0, rule);
                } else {
                    rules.push(rule);
                }
                Ok(())
            }
            ("set", false) => {
                let (family, name) = self.family_and_name()?;
                let table = self.existing_table(family, &name, pos)?;
                let (set, _) = self.expect_word("a set name")?;
                self.expect(Tok::LBrace, "'{'")?;
                self.set_body(table, &set)
            }
            ("element", false) => {
                let (family, name) = self.family_and_name()?;
                let table = self.existing_table(family, &name, pos)?;
                let (set, spos) = self.expect_word("a set name")?;
                let tokens = self.statement_tokens()?;
                let Some(index) = self.ruleset.tables[table]
                    .sets
                    .iter()
                    .position(|s| s.name == set)
                else {
                    return Err(self.error_at(spos, format!("no set {set} in table {name}")));
                };
                let kind = self.ruleset.tables[table].sets[index]
                    .elements
                    .as_ref()
                    .and_then(|els| els.first().map(kind_of_value));
                let mut cursor = Cursor::new(self, &tokens);
                let values = cursor.values(kind.unwrap_or(Kind::Any))?;
                if let (Some(list), Values::List(new)) =
                    (&mut self.ruleset.tables[table].sets[index].elements, values)
                {
                    list.extend(new);
                }
                Ok(())
            }
            (other, _) => Err(self.error_at(
                pos,
                format!("cannot {} '{other}'", if insert { "insert" } else { "add" }),
            )),
        }
    }

    fn delete(&mut self) -> PResult<()> {
        let (what, pos) = self.expect_word("table")?;
        if what != "table" {
            return Err(self.error_at(
                pos,
                format!("only 'delete table' is supported, not 'delete {what}'"),
            ));
        }
        let (family, name) = self.family_and_name()?;
        let table = self.existing_table(family, &name, pos)?;
        self.ruleset.tables.remove(table);
        Ok(())
    }

    fn rule(&mut self, tokens: &[Token]) -> PResult<Rule> {
        let first = tokens.first().map(|t| t.pos).unwrap_or(self.last_pos);
        let text = tokens.iter().map(token_text).collect::<Vec<_>>().join(" ");
        let location = self.location(first);
        let mut cursor = Cursor::new(self, tokens);
        let mut rule = Rule {
            location,
            text,
            matches: Vec::new(),
            verdict: None,
            comment: None,
        };
        cursor.rule_body(&mut rule)?;
        if rule.matches.iter().any(|m| matches!(m, Match::Unknown(_))) {
            self.ruleset.unsupported.push(Unsupported {
                location: rule.location.clone(),
                text: rule.text.clone(),
            });
        }
        Ok(rule)
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

/// How the values of a field are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
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

/// Reads the tokens of one rule (or a set's element list).
struct Cursor<'p> {
    parser: &'p Parser,
    tokens: &'p [Token],
    i: usize,
}

impl<'p> Cursor<'p> {
    fn new(parser: &'p Parser, tokens: &'p [Token]) -> Cursor<'p> {
        Cursor {
            parser,
            tokens,
            i: 0,
        }
    }

    fn peek(&self) -> Option<&'p Token> {
        self.tokens.get(self.i)
    }

    fn peek_word(&self) -> Option<&'p str> {
        match self.peek() {
            Some(Token {
                tok: Tok::Word(w), ..
            }) => Some(w),
            _ => None,
        }
    }

    fn next(&mut self) -> Option<&'p Token> {
        let t = self.tokens.get(self.i);
        self.i += 1;
        t
    }

    fn err(&self, pos: Option<Pos>, message: impl Into<String>) -> ParseError {
        let pos = pos
            .or_else(|| self.tokens.last().map(|t| t.pos))
            .unwrap_or(self.parser.last_pos);
        self.parser.error_at(pos, message)
    }

    fn expect_op(&mut self, op: &str) -> PResult<()> {
        match self.next() {
            Some(Token {
                tok: Tok::Op(o), ..
            }) if *o == op => Ok(()),
            t => Err(self.err(t.map(|t| t.pos), format!("expected '{op}'"))),
        }
    }

    fn expect_word(&mut self, what: &str) -> PResult<&'p str> {
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

    fn values(&mut self, kind: Kind) -> PResult<Values> {
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

/// IP protocol numbers of the names nft accepts for them.
pub(crate) fn proto_number(name: &str) -> Option<u8> {
    Some(match name {
        "icmp" => 1,
        "igmp" => 2,
        "tcp" => 6,
        "udp" => 17,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "icmpv6" | "ipv6-icmp" => 58,
        "sctp" => 132,
        "udplite" => 136,
        "dccp" => 33,
        "comp" => 108,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base_priorities(text: &str) -> Vec<i32> {
        let ruleset = parse_str("t.nft", text).unwrap_or_else(|e| panic!("{e}"));
        ruleset.tables[0]
            .chains
            .iter()
            .filter_map(|c| c.base.as_ref().map(|b| b.priority))
            .collect()
    }

    #[test]
    fn priorities_take_a_signed_offset_either_way_it_is_spaced() {
        let text = "table inet t {\n chain a { type filter hook input priority filter + 5; }\n chain b { type filter hook input priority filter+5; }\n chain c { type filter hook input priority mangle - 5; }\n chain d { type filter hook input priority raw-5; }\n}\n";
        assert_eq!(base_priorities(text), [5, 5, -155, -305]);
    }
}
