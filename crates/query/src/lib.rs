//! Reading the store back: the connection graph for the map, joined edges and
//! the `report` tables, and per-host flows (services offered, destinations
//! reached; the firewall planner reads its flows through its own adapter).
//!
//! Everything here is built from the store's hourly rollups
//! ([`connscope_store::Store::edge_totals_by_hour`]), so it stays fast on
//! stores of billions of events; raw events are read only for what rollups
//! cannot say, which connections of an edge both its ends logged; and it only
//! uses the [`Store`] trait, so it works the same on every backend.
//!
//! The central step is the join ([`join::join_edges`]): a connection between
//! two monitored hosts is logged twice, once by the client and once by the
//! server; the two records become one edge, each connection counted once.
//!
//! [`Store`]: connscope_store::Store

pub mod flows;
pub mod graph;
pub mod join;
pub mod report;
pub mod scope;
#[cfg(test)]
mod test_fixtures;
pub mod time_arg;

pub use flows::{host_flows, HostFlows, InboundService, OutboundDestination};
pub use graph::{build_graph, Graph, GraphFilter, Scope};
pub use join::{join_edges, load_edges, CountRule, JoinedEdge, ProcessUse};
pub use time_arg::{parse_time_arg, TimeArgError};
