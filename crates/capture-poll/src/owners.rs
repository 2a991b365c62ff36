//! Which process holds a socket: socket inode -> pid, from `/proc/*/fd`.
//!
//! Neither /proc/net nor sock_diag say which process owns a socket; they give
//! its inode. The only way from there to a process is to look at every
//! process's open files for `socket:[INODE]`, which costs a readlink per open
//! file on the machine. So the map is cached, and the whole of /proc is read
//! again only when a poll meets an inode the cache does not know — at most
//! once per poll, however many new sockets it met.

use std::collections::HashMap;
use std::fs;

/// A cached socket inode -> pid map.
#[derive(Debug, Default)]
pub(crate) struct SocketOwners {
    by_inode: HashMap<u64, u32>,
}

impl SocketOwners {
    /// The pid of the process holding the socket with this inode, if the last
    /// scan found one.
    pub fn get(&self, inode: u64) -> Option<u32> {
        self.by_inode.get(&inode).copied()
    }

    /// Re-reads `/proc/*/fd` when any of `inodes` is unknown. When several
    /// processes share a socket (fork), the lowest pid wins, which is usually
    /// the parent that opened it.
    pub fn refresh_for(&mut self, inodes: impl IntoIterator<Item = u64>) {
        let unknown = inodes
            .into_iter()
            .any(|inode| inode != 0 && !self.by_inode.contains_key(&inode));
        if unknown {
            self.by_inode = scan_proc();
        }
    }
}

fn scan_proc() -> HashMap<u64, u32> {
    let mut map = HashMap::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return map;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may exit while we read it: skip what cannot be read.
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else {
                continue;
            };
            if let Some(inode) = socket_inode(target.as_os_str().as_encoded_bytes()) {
                map.entry(inode)
                    .and_modify(|owner: &mut u32| *owner = (*owner).min(pid))
                    .or_insert(pid);
            }
        }
    }
    map
}

/// The inode in a `socket:[12345]` link target.
fn socket_inode(target: &[u8]) -> Option<u64> {
    let digits = target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn parses_socket_links_only() {
        assert_eq!(socket_inode(b"socket:[4242]"), Some(4242));
        assert_eq!(socket_inode(b"pipe:[4242]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
        assert_eq!(socket_inode(b"socket:[x]"), None);
    }

    #[test]
    fn finds_own_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let inode = fs::metadata(format!("/proc/self/fd/{fd}")).unwrap().ino();
        let mut owners = SocketOwners::default();
        assert_eq!(owners.get(inode), None);
        owners.refresh_for([inode]);
        assert_eq!(owners.get(inode), Some(std::process::id()));
    }
}
