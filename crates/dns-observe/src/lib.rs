//! Names for the remote ends of a host's connections, learned the way the
//! host's own processes learned them: from the DNS answers they receive and
//! the server names (SNI) their TLS ClientHellos send. connscope never sends
//! a query of its own: a name is what the process was told, at that time, in
//! that network namespace.
//!
//! - [`socket`]: a packet socket per namespace with a classic BPF filter that
//!   lets through only answers from port 53 and (unless ClientHellos come
//!   from the eBPF backend) outgoing ClientHellos; the fallback when the eBPF
//!   backend's packet hooks do not copy both (polling backends, no cgroup v2).
//! - [`dns`] and [`sni`]: the parsing, by hickory-proto and tls-parser.
//! - [`reassembly`]: DNS messages cut out of TCP streams, across segments.
//! - [`cache`]: address -> name and connection -> SNI, bounded per namespace.
//! - [`observer`]: the thread that reads the sockets and fills the cache, or
//!   the learners that take what the eBPF backend copied.
//! - [`nft_sets`]: keeps the name sets of a loaded connscope plan filled.
//!
//! The agent asks the cache for each outgoing connection's name; see
//! docs/CAPTURE.md (Names) for how a connect waits for its ClientHello.

pub mod cache;
pub mod dns;
pub mod nft_sets;
pub mod observer;
pub mod reassembly;
pub mod sni;
pub mod socket;

pub use cache::{CachedName, NameCache};
pub use dns::Answer;
pub use nft_sets::{NameSetKeeper, NameSetStats};
pub use observer::{
    AnswerLearner, HelloLearner, Namespaces, ObservedAnswer, Observer, ObserverConfig,
    ObserverError,
};
