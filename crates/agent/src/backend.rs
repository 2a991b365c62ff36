//! Which capture backend the agent runs: eBPF when the kernel allows it, else
//! sock_diag, else /proc polling — or the one `--backend` forces.

use std::fmt;
use std::str::FromStr;

use connscope_capture::{CaptureBackend, CaptureConfig, CaptureError};
use connscope_capture_ebpf::EbpfBackend;
use connscope_capture_poll::{ProcBackend, SockDiagBackend};

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// The best one that starts: ebpf, sockdiag, proc.
    #[default]
    Auto,
    Ebpf,
    SockDiag,
    Proc,
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "ebpf" => Ok(BackendChoice::Ebpf),
            "sockdiag" => Ok(BackendChoice::SockDiag),
            "proc" => Ok(BackendChoice::Proc),
            _ => Err(format!(
                "unknown backend {s:?}; expected one of: auto ebpf sockdiag proc"
            )),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Ebpf => "ebpf",
            BackendChoice::SockDiag => "sockdiag",
            BackendChoice::Proc => "proc",
        })
    }
}

fn open_one(
    choice: BackendChoice,
    config: &CaptureConfig,
) -> Result<Box<dyn CaptureBackend>, CaptureError> {
    Ok(match choice {
        BackendChoice::Ebpf | BackendChoice::Auto => Box::new(EbpfBackend::open(config)?),
        BackendChoice::SockDiag => Box::new(SockDiagBackend::open(config)?),
        BackendChoice::Proc => Box::new(ProcBackend::open(config)?),
    })
}

/// Opens the chosen backend and logs, in one line, which one runs and why.
pub fn open_backend(
    choice: BackendChoice,
    config: &CaptureConfig,
) -> Result<Box<dyn CaptureBackend>, CaptureError> {
    if choice != BackendChoice::Auto {
        let backend = open_one(choice, config)?;
        tracing::info!("capture backend: {choice} (forced by --backend)");
        return Ok(backend);
    }
    let mut reasons = Vec::new();
    for candidate in [
        BackendChoice::Ebpf,
        BackendChoice::SockDiag,
        BackendChoice::Proc,
    ] {
        match open_one(candidate, config) {
            Ok(backend) => {
                if reasons.is_empty() {
                    tracing::info!("capture backend: {candidate} (the default)");
                } else {
                    tracing::warn!(
                        "capture backend: {candidate}, because {}",
                        reasons.join("; and ")
                    );
                }
                return Ok(backend);
            }
            Err(err) => reasons.push(err.to_string()),
        }
    }
    Err(CaptureError::Unavailable {
        backend: "auto",
        reason: reasons.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_print() {
        for name in ["auto", "ebpf", "sockdiag", "proc"] {
            assert_eq!(name.parse::<BackendChoice>().unwrap().to_string(), name);
        }
        assert!("bpf"
            .parse::<BackendChoice>()
            .unwrap_err()
            .contains("expected one of: auto ebpf sockdiag proc"));
    }
}
