//! The statements of a ruleset: the commands at the top level (`table`,
//! `flush`, `add`/`insert`, `delete`, `define`, `include`), and inside a table
//! its chains and sets, inside a chain its base chain header, policy and
//! rules; `include` may stand anywhere a statement may, as in nft. This structure must be well formed: a mistake is an error with
//! `FILE:LINE:COL` and a caret. A rule's own tokens go to [`read_rule`].

use super::rule::read_rule;
use super::sets;
use super::stream::{PResult, TokenStream};
use crate::nft::lexer::{Pos, Tok, Token};
use crate::nft::model::{
    BaseChain, Chain, Hook, Match, Policy, Rule, Ruleset, Table, TableFamily, Unsupported,
};

/// Builds the ruleset statement by statement.
pub(super) struct Parser {
    input: TokenStream,
    ruleset: Ruleset,
}

/// The numbers of the priority names a base chain may give (`priority filter`).
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

impl Parser {
    pub(super) fn new(input: TokenStream) -> Parser {
        Parser {
            input,
            ruleset: Ruleset::default(),
        }
    }

    pub(super) fn run(mut self) -> PResult<Ruleset> {
        loop {
            self.input.skip_separators()?;
            let Some(t) = self.input.next()? else { break };
            let Tok::Word(word) = &t.tok else {
                return Err(self.input.error_at(
                    t.pos,
                    format!("expected a command, found {}", t.tok.describe()),
                ));
            };
            match word.as_str() {
                "table" => self.table_command()?,
                "flush" => self.flush()?,
                "define" | "redefine" => self.input.define()?,
                "undefine" => self.input.undefine()?,
                "include" => {
                    // Ends its own statement before the included ones start.
                    self.input.include(t.pos)?;
                    continue;
                }
                "add" | "create" => self.add(false)?,
                "insert" => self.add(true)?,
                "delete" | "destroy" => self.delete()?,
                other => {
                    return Err(self.input.error_at(
                        t.pos,
                        format!("unknown command '{other}'; expected table, define, include, flush, add, insert or delete"),
                    ))
                }
            }
            self.input.end_statement()?;
        }
        Ok(self.ruleset)
    }

    /// `[family] name`, family defaulting to `ip` as in nft.
    fn family_and_name(&mut self) -> PResult<(TableFamily, String)> {
        let (first, pos) = self.input.expect_word("a table family or name")?;
        if let Some(family) = TableFamily::from_name(&first) {
            if let Some(Tok::Word(_) | Tok::Str(_)) = self.input.peek_tok()? {
                let (name, _) = self.input.expect_word("a table name")?;
                return Ok((family, name));
            }
        }
        if first.is_empty() {
            return Err(self.input.error_at(pos, "empty table name"));
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
            .ok_or_else(|| {
                self.input
                    .error_at(pos, format!("no table {} {name}", family.as_str()))
            })
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
        if let Some(Tok::LBrace) = self.input.peek_tok()? {
            self.input.next()?;
            self.table_body(table)?;
        }
        Ok(())
    }

    fn table_body(&mut self, table: usize) -> PResult<()> {
        loop {
            self.input.skip_separators()?;
            let t = self.input.expect_next("'}' closing the table")?;
            let word = match &t.tok {
                Tok::RBrace => return Ok(()),
                Tok::Word(w) => w.clone(),
                other => {
                    return Err(self.input.error_at(
                        t.pos,
                        format!("expected chain, set or '}}', found {}", other.describe()),
                    ))
                }
            };
            match word.as_str() {
                "chain" => {
                    let (name, _) = self.input.expect_word("a chain name")?;
                    let chain = self.chain_index(table, &name);
                    self.input.expect(Tok::LBrace, "'{' after the chain name")?;
                    self.chain_body(table, chain)?;
                }
                "set" => {
                    let (name, _) = self.input.expect_word("a set name")?;
                    self.input.expect(Tok::LBrace, "'{' after the set name")?;
                    let set = sets::read_set(&mut self.input, &name)?;
                    sets::merge(&mut self.ruleset.tables[table].sets, set);
                }
                "flags" | "comment" => {
                    self.input.statement_tokens()?;
                }
                "include" => {
                    self.input.include(t.pos)?;
                    continue;
                }
                "map" | "flowtable" | "counter" | "quota" | "ct" | "limit" | "secmark"
                | "synproxy" => {
                    // Named objects the checker does not model; a rule that
                    // uses one is itself unknown.
                    self.input.statement_tokens_until_block()?;
                    self.input.skip_block()?;
                    self.ruleset.unsupported.push(Unsupported {
                        location: self.input.location(t.pos),
                        text: format!("{word} object (not evaluated)"),
                    });
                }
                other => {
                    return Err(self.input.error_at(
                        t.pos,
                        format!("unknown table statement '{other}'; expected chain or set"),
                    ))
                }
            }
            self.input.end_statement()?;
        }
    }

    fn chain_body(&mut self, table: usize, chain: usize) -> PResult<()> {
        loop {
            self.input.skip_separators()?;
            let Some(t) = self.input.peek()?.cloned() else {
                return Err(self.input.error_at(
                    self.input.last_pos,
                    "unexpected end of file, expected '}' closing the chain",
                ));
            };
            match &t.tok {
                Tok::RBrace => {
                    self.input.next()?;
                    return Ok(());
                }
                Tok::Word(w) if w == "type" => {
                    self.input.next()?;
                    self.base_chain_header(table, chain)?;
                }
                Tok::Word(w) if w == "policy" => {
                    self.input.next()?;
                    let (policy, pos) = self.input.expect_word("accept or drop")?;
                    let policy = match policy.as_str() {
                        "accept" => Policy::Accept,
                        "drop" => Policy::Drop,
                        other => {
                            return Err(self.input.error_at(
                                pos,
                                format!("invalid policy '{other}'; expected accept or drop"),
                            ))
                        }
                    };
                    match &mut self.ruleset.tables[table].chains[chain].base {
                        Some(base) => base.policy = policy,
                        None => {
                            return Err(self.input.error_at(
                                t.pos,
                                "policy given for a chain that is not a base chain",
                            ))
                        }
                    }
                }
                Tok::Word(w) if w == "comment" || w == "devices" || w == "flags" => {
                    self.input.statement_tokens()?;
                }
                Tok::Word(w) if w == "include" => {
                    self.input.next()?;
                    self.input.include(t.pos)?;
                    continue;
                }
                _ => {
                    let tokens = self.input.statement_tokens()?;
                    let rule = self.rule(&tokens)?;
                    self.ruleset.tables[table].chains[chain].rules.push(rule);
                }
            }
            self.input.end_statement()?;
        }
    }

    fn base_chain_header(&mut self, table: usize, chain: usize) -> PResult<()> {
        let (kind, kind_pos) = self.input.expect_word("a chain type")?;
        if !matches!(kind.as_str(), "filter" | "nat" | "route") {
            return Err(self.input.error_at(
                kind_pos,
                format!("unknown chain type '{kind}'; expected filter, nat or route"),
            ));
        }
        let (kw, kw_pos) = self.input.expect_word("'hook'")?;
        if kw != "hook" {
            return Err(self
                .input
                .error_at(kw_pos, format!("expected 'hook', found '{kw}'")));
        }
        let (hook_name, hook_pos) = self.input.expect_word("a hook name")?;
        let hook = Hook::from_name(&hook_name).ok_or_else(|| {
            self.input
                .error_at(hook_pos, format!("unknown hook '{hook_name}'"))
        })?;
        let (mut kw, mut kw_pos) = self.input.expect_word("'priority'")?;
        if kw == "device" {
            self.input.expect_next("a device name")?;
            (kw, kw_pos) = self.input.expect_word("'priority'")?;
        }
        if kw != "priority" {
            return Err(self
                .input
                .error_at(kw_pos, format!("expected 'priority', found '{kw}'")));
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
        let (word, pos) = self.input.expect_word("a priority")?;
        let bad = |p: &Parser| p.input.error_at(pos, format!("invalid priority '{word}'"));
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
                let (n, npos) = self.input.expect_word("a priority offset")?;
                let n = n.parse::<i32>().map_err(|_| {
                    self.input
                        .error_at(npos, format!("invalid priority offset '{n}'"))
                })?;
                if sign == "-" {
                    -n
                } else {
                    n
                }
            }
            None => match self.input.peek_tok()? {
                Some(Tok::Word(w)) if w == "-" || w == "+" => {
                    self.input.next()?;
                    let (n, npos) = self.input.expect_word("a priority offset")?;
                    let n = n.parse::<i32>().map_err(|_| {
                        self.input
                            .error_at(npos, format!("invalid priority offset '{n}'"))
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

    fn flush(&mut self) -> PResult<()> {
        let (what, pos) = self.input.expect_word("ruleset, table or chain")?;
        match what.as_str() {
            "ruleset" => {
                let family = match self.input.peek_tok()? {
                    Some(Tok::Word(w)) => {
                        let (_, fpos) = self.input.expect_word("a family")?;
                        Some(TableFamily::from_name(&w).ok_or_else(|| {
                            self.input.error_at(fpos, format!("unknown family '{w}'"))
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
                let (chain, cpos) = self.input.expect_word("a chain name")?;
                match self.ruleset.tables[table]
                    .chains
                    .iter_mut()
                    .find(|c| c.name == chain)
                {
                    Some(c) => c.rules.clear(),
                    None => {
                        return Err(self
                            .input
                            .error_at(cpos, format!("no chain {chain} in table {name}")))
                    }
                }
            }
            other => {
                return Err(self.input.error_at(
                    pos,
                    format!("cannot flush '{other}'; expected ruleset, table or chain"),
                ))
            }
        }
        Ok(())
    }

    fn add(&mut self, insert: bool) -> PResult<()> {
        let (what, pos) = self
            .input
            .expect_word("table, chain, rule, set or element")?;
        match (what.as_str(), insert) {
            ("table", false) => self.table_command(),
            ("chain", false) => {
                let (family, name) = self.family_and_name()?;
                let table = self.existing_table(family, &name, pos)?;
                let (chain, _) = self.input.expect_word("a chain name")?;
                let chain = self.chain_index(table, &chain);
                if let Some(Tok::LBrace) = self.input.peek_tok()? {
                    self.input.next()?;
                    self.chain_body(table, chain)?;
                }
                Ok(())
            }
            ("rule", _) => {
                let (family, name) = self.family_and_name()?;
                let table = self.existing_table(family, &name, pos)?;
                let (chain_name, cpos) = self.input.expect_word("a chain name")?;
                let chain = self.ruleset.tables[table]
                    .chains
                    .iter()
                    .position(|c| c.name == chain_name)
                    .ok_or_else(|| {
                        self.input
                            .error_at(cpos, format!("no chain {chain_name} in table {name}"))
                    })?;
                let tokens = self.input.statement_tokens()?;
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
                let (set, _) = self.input.expect_word("a set name")?;
                self.input.expect(Tok::LBrace, "'{'")?;
                let set = sets::read_set(&mut self.input, &set)?;
                sets::merge(&mut self.ruleset.tables[table].sets, set);
                Ok(())
            }
            ("element", false) => {
                let (family, name) = self.family_and_name()?;
                let table = self.existing_table(family, &name, pos)?;
                let (set, spos) = self.input.expect_word("a set name")?;
                let tokens = self.input.statement_tokens()?;
                let Some(index) = self.ruleset.tables[table]
                    .sets
                    .iter()
                    .position(|s| s.name == set)
                else {
                    return Err(self
                        .input
                        .error_at(spos, format!("no set {set} in table {name}")));
                };
                let set = &mut self.ruleset.tables[table].sets[index];
                sets::add_elements(&self.input, &tokens, set)?;
                Ok(())
            }
            (other, _) => Err(self.input.error_at(
                pos,
                format!("cannot {} '{other}'", if insert { "insert" } else { "add" }),
            )),
        }
    }

    fn delete(&mut self) -> PResult<()> {
        let (what, pos) = self.input.expect_word("table")?;
        if what != "table" {
            return Err(self.input.error_at(
                pos,
                format!("only 'delete table' is supported, not 'delete {what}'"),
            ));
        }
        let (family, name) = self.family_and_name()?;
        let table = self.existing_table(family, &name, pos)?;
        self.ruleset.tables.remove(table);
        Ok(())
    }

    /// A rule, listed as unsupported when part of it is not evaluated.
    fn rule(&mut self, tokens: &[Token]) -> PResult<Rule> {
        let rule = read_rule(&self.input, tokens)?;
        if rule.matches.iter().any(|m| matches!(m, Match::Unknown(_))) {
            self.ruleset.unsupported.push(Unsupported {
                location: rule.location.clone(),
                text: rule.text.clone(),
            });
        }
        Ok(rule)
    }
}
