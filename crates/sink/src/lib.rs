//! The seam between the agent and its outputs: the [`Sink`] trait, and what
//! the agent hands every sink besides events ([`RunStart`], [`LossCause`]).
//!
//! Every output takes batches of finished events (numbered, named, filtered)
//! from the agent's output thread, never from the capture thread, so a slow
//! output can only make the agent's queue overflow (counted), never stall the
//! kernel reader. The trait sits below both the agent (local outputs) and
//! `connscope-transport` (the shipping output), so neither depends on the
//! other and the binary only wires sources to sinks.

use std::io;

use connscope_event::ConnectionEvent;

/// Why an output could not take or deliver events.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// An output defined elsewhere (e.g. the shipping output) failed.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// Why events were lost before the agent could number them: the agent gives
/// them numbers of their own and tells every output ([`Sink::lost`]), so
/// the collector learns of the loss instead of only the agent's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossCause {
    /// The kernel side could not deliver them: ring buffer full, connection
    /// table full, or a probe run skipped by the kernel's recursion
    /// protection, counted as many events as it can cost: an upper bound.
    Kernel,
    /// The outputs were too slow and the capture queue was full. Counted
    /// before the rules, so some of them might not have been selected.
    Queue,
    /// Their sequence numbers could not be recorded in the state file.
    StateWrite,
}

/// An output of the agent.
pub trait Sink: Send {
    /// Short name for statistics and logs (`stdout`, `syslog`, a file name).
    fn name(&self) -> &str;

    /// Takes a batch of events. Returns how many events this output has no
    /// form for (tcpspy lines cannot show UDP flows or failed connects);
    /// they are skipped, not errors.
    fn write_batch(&mut self, events: &[ConnectionEvent]) -> Result<u64, OutputError>;

    /// Pushes out what is buffered; called whenever the agent's queue runs
    /// empty, so a quiet agent never sits on events.
    fn flush(&mut self) -> Result<(), OutputError>;

    /// Called once before the first batch with who numbers the events; the
    /// shipping output sends it with every batch.
    fn begin(&mut self, _run: &RunStart) -> Result<(), OutputError> {
        Ok(())
    }

    /// Numbers `first..=last` stand for events lost before numbering, for
    /// `cause`. Outputs that report to someone (the shipping output) pass it
    /// on; local outputs have no form for it (the agent logs the loss).
    fn lost(&mut self, _first: u64, _last: u64, _cause: LossCause) -> Result<(), OutputError> {
        Ok(())
    }

    /// SIGHUP: reopen files, so a rotated log is let go of.
    fn reopen(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    /// Exit: deliver everything and release resources. Defaults to a flush.
    fn close(&mut self) -> Result<(), OutputError> {
        self.flush()
    }
}

/// Who numbers a run's events: sent with every batch, so the collector
/// keeps sequence spaces apart (the agent's `sequence` module says how they
/// are made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStart {
    /// The state directory's id, made with it.
    pub instance: String,
    /// This run's id, new at every start.
    pub boot: String,
    /// The first number this run hands out.
    pub first_sequence: u64,
    /// The numbers the previous run had handed out or reserved when it
    /// stopped without closing (a crash): some may be in the spool, the
    /// rest were lost or never used.
    pub crashed: Option<(u64, u64)>,
    /// When the agent was not running: from the last time the previous run
    /// wrote its state (its stop; after a crash, its last numbering, which
    /// for an idle agent may be well before the crash) to this start.
    /// Connections in this window were not seen. `None` for a new state.
    pub down: Option<(std::time::SystemTime, std::time::SystemTime)>,
}
