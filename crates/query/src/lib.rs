//! Reading the store back: the connection graph for the map, joined edges and
//! the `report` tables. (The firewall planner reads one host's flows itself:
//! `connscope_firewall::from_store`.)
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

pub mod args;
pub mod graph;
pub mod groups;
pub mod hits;
pub mod join;
pub mod naming;
pub mod report;
pub mod scope;
pub mod suggest;
#[cfg(test)]
mod test_fixtures;

pub use args::{ArgError, GraphFilterArgs, TimeRangeArgs};
pub use graph::{
    build_graph, data_span, logged_edge, DataSpan, EdgeEnds, EdgeId, Graph, GraphFilter, NodeId,
    Scope,
};
pub use join::{join_edges, load_edges, CountRule, JoinedEdge, ProcessUse};
