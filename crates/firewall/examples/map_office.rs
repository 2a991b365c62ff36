//! Writes the map's office store (`Office::map_store`: 30 hosts in 4 stored
//! groups, ~800 edges over 16 days, hostile names) to the path given, for
//! the map's bench (`web/tests/bench-map.mjs --office-db PATH`).
//!
//!     cargo run -p connscope-firewall --features test-support --example map_office -- office.db

use connscope_firewall::office::Office;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args_os()
        .nth(1)
        .ok_or("usage: map_office STORE.db (a new file)")?;
    let path = std::path::PathBuf::from(path);
    if path.exists() {
        return Err(format!("{}: exists; give a new file", path.display()).into());
    }
    let (office, _store) = Office::map_store(&path)?;
    println!(
        "{}: {} hosts, {} events",
        path.display(),
        office.hosts.len(),
        office.event_count()
    );
    Ok(())
}
