//! `connscope generate` (hidden): man pages and shell completions from the
//! clap definitions, so the package's manual never drifts from `--help`.
//! `scripts/package` runs it on the release binary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use clap_complete::Shell;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Write one man page per command (connscope.1, connscope-agent.1, ...) here.
    #[arg(long, value_name = "DIR")]
    man: Option<PathBuf>,
    /// Write bash, zsh and fish completions here (connscope.bash, _connscope,
    /// connscope.fish).
    #[arg(long, value_name = "DIR")]
    completions: Option<PathBuf>,
}

pub fn run(command: clap::Command, args: GenerateArgs) -> anyhow::Result<ExitCode> {
    if args.man.is_none() && args.completions.is_none() {
        anyhow::bail!("give --man DIR, --completions DIR or both");
    }
    if let Some(dir) = &args.man {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        clap_mangen::generate_to(command.clone(), dir)
            .with_context(|| format!("writing man pages to {}", dir.display()))?;
    }
    if let Some(dir) = &args.completions {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            clap_complete::generate_to(shell, &mut command.clone(), "connscope", dir)
                .with_context(|| format!("writing {shell} completions to {}", dir.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
