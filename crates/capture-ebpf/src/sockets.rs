//! Which process holds which socket, from /proc/*/fd: the owners of the
//! connections that were open before the backend started (the kernel saw no
//! connect() or accept() for them). Read once, at start.
//!
//! The walk reads one link per open file on the machine: 45,000 took 3.9 s
//! here, while the programs are attached and records keep coming. Left
//! undrained, the ring buffer (26,000 records) overflowed in a start-up burst
//! of 4,000 connections a second, so the caller drains it every few links.

use std::collections::HashMap;
use std::fs;

/// Links read between two calls of `meanwhile` (about 100 µs each here).
const LINKS_PER_PAUSE: usize = 64;

/// Socket inode -> pid of a process holding it (the first found). Calls
/// `meanwhile` every [`LINKS_PER_PAUSE`] links; its error ends the walk.
pub(crate) fn socket_owners<E>(
    mut meanwhile: impl FnMut() -> Result<(), E>,
) -> Result<HashMap<u64, u32>, E> {
    let mut owners = HashMap::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Ok(owners);
    };
    let mut links = 0usize;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue; // exited meanwhile
        };
        for fd in fds.flatten() {
            links += 1;
            if links % LINKS_PER_PAUSE == 0 {
                meanwhile()?;
            }
            if let Some(inode) = fs::read_link(fd.path())
                .ok()
                .and_then(|target| socket_inode(target.to_str()?))
            {
                owners.entry(inode).or_insert(pid);
            }
        }
    }
    Ok(owners)
}

fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn parses_socket_links() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("pipe:[12345]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn finds_our_own_socket() {
        use std::os::fd::AsRawFd;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = fs::metadata(format!("/proc/self/fd/{}", listener.as_raw_fd()))
            .unwrap()
            .ino();
        let owners = socket_owners(|| Ok::<_, ()>(())).unwrap();
        assert_eq!(owners.get(&inode), Some(&std::process::id()));
    }
}
