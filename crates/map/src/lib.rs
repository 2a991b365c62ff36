//! The connection map: the web UI that the collector serves at `/`, and the
//! self-contained HTML export that `connscope map export` writes.
//!
//! The UI is plain JavaScript with D3.js, bundled by esbuild when this crate
//! builds (see `build.rs`) and embedded in the binary, so nothing is fetched
//! from anywhere at run time. The collector only has to hand out [`asset`]s
//! with the headers they carry; the UI reads the graph from the collector's
//! API (`/api/v1/graph`). The export puts the same code and one graph into a
//! single HTML file that works from a `file://` URL.
//!
//! Data from the monitored hosts (host names, executable paths, user names) is
//! never markup: the UI writes it as text, the served pages forbid inline
//! script by their Content-Security-Policy, and the export escapes the graph
//! JSON so that nothing in it can close the element it sits in.

mod assets;
mod export;

pub use assets::{asset, Asset, CONTENT_SECURITY_POLICY};
pub use export::{export_html, ExportError};
