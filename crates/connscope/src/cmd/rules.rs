//! `connscope rules check`: read tcpspy-style rules the way the agent would and
//! print them normalised (fully parenthesised, one per line), or print every
//! problem and fail. Handy before deploying a rule file to many hosts.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use connscope_rules::RuleSet;

#[derive(Subcommand)]
pub enum RulesCommand {
    /// Check rules and print each one normalised; exit 1 on any error.
    ///
    /// Rules given with -e are named `-e #1`, `-e #2`, ... in messages. Several
    /// rules combine with OR; with none, every connection is logged.
    Check {
        /// A rule, as tcpspy's -e (may be repeated).
        #[arg(short = 'e', long = "expr", value_name = "RULE")]
        exprs: Vec<String>,
        /// A rule file, one rule per line, `#` comments, as tcpspy's -f (may be repeated).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

pub fn run(command: RulesCommand) -> anyhow::Result<ExitCode> {
    let RulesCommand::Check { exprs, files } = command;
    let mut builder = RuleSet::builder();
    for (i, text) in exprs.iter().enumerate() {
        builder = builder.add_expr(&format!("-e #{}", i + 1), text);
    }
    for path in &files {
        builder = builder.add_file(path);
    }
    let rules = match builder.build() {
        Ok(rules) => rules,
        Err(err) => {
            eprintln!("{err}");
            let n = err.diagnostics().len();
            eprintln!("{n} error{} in the rules", if n == 1 { "" } else { "s" });
            return Ok(ExitCode::FAILURE);
        }
    };
    for warning in rules.warnings() {
        eprintln!("warning: {warning}");
    }
    let mut out = std::io::stdout().lock();
    if rules.is_empty() {
        writeln!(out, "# no rules: all connections would be logged")?;
    }
    for rule in rules.rules() {
        if rule.is_empty() {
            writeln!(
                out,
                "# {}: whitespace only, matches no connection",
                rule.source()
            )?;
        } else {
            writeln!(out, "{rule}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
