//! Which process holds a socket: socket inode -> pid, from `/proc/*/fd`.
//!
//! Neither /proc/net, sock_diag nor an eBPF socket iterator says which process
//! owns a socket; they give its inode. The only way from there to a process is
//! to read every process's open files for `socket:[INODE]`. Every backend
//! reads them here, so they name the same owner for the same socket.
//!
//! One socket can be held by several processes (a parent and the children it
//! forked, a socket passed over a Unix socket). The owner is the **oldest**
//! holder: the one that opened the socket, or handed it on, started before
//! everyone it handed it to. Pids wrap, so the lowest pid is not always the
//! oldest; it only breaks a tie between processes started in the same tick.
//!
//! The walk is hand-written rather than the `procfs` crate's: the crate opens,
//! reads and stats each file descriptor (four system calls) where a readlink
//! is enough, and the eBPF backend walks every open file on the machine while
//! its ring buffer fills (benches/socket_owners.rs measures both; a test
//! checks this walk against the crate).

use std::collections::HashMap;
use std::fs;

use crate::process::start_time;

/// Socket inode -> pid of its oldest holder, for every socket on the machine.
pub type SocketOwners = HashMap<u64, u32>;

/// Links read between two calls of `meanwhile`: a few milliseconds' worth.
pub const LINKS_PER_PAUSE: usize = 64;

/// Reads the owners of every socket. Calls `meanwhile` every
/// [`LINKS_PER_PAUSE`] links (the eBPF backend drains its ring buffer there);
/// its error ends the walk. Processes that exit during the walk are skipped.
pub fn socket_owners<E>(mut meanwhile: impl FnMut() -> Result<(), E>) -> Result<SocketOwners, E> {
    let mut owners = SocketOwners::new();
    let mut started = HashMap::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Ok(owners);
    };
    let mut links = 0usize;
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        held_sockets(pid, &mut links, &mut meanwhile, |inode| {
            owners
                .entry(inode)
                .and_modify(|owner| *owner = older(*owner, pid, &mut started))
                .or_insert(pid);
        })?;
    }
    Ok(owners)
}

/// Calls `found` with the inode of each socket process `pid` holds, and
/// `meanwhile` every [`LINKS_PER_PAUSE`] links counted in `links`.
fn held_sockets<E>(
    pid: u32,
    links: &mut usize,
    meanwhile: &mut impl FnMut() -> Result<(), E>,
    mut found: impl FnMut(u64),
) -> Result<(), E> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Ok(()); // exited meanwhile, or not ours to read
    };
    for fd in fds.flatten() {
        *links += 1;
        if *links % LINKS_PER_PAUSE == 0 {
            meanwhile()?;
        }
        if let Some(inode) = fs::read_link(fd.path())
            .ok()
            .and_then(|target| socket_inode(target.as_os_str().as_encoded_bytes()))
        {
            found(inode);
        }
    }
    Ok(())
}

/// The older of two processes holding one socket. A process whose start
/// time cannot be read has exited: the living one is the better name.
fn older(a: u32, b: u32, started: &mut HashMap<u32, Option<u64>>) -> u32 {
    let mut start = |pid: u32| *started.entry(pid).or_insert_with(|| start_time(pid));
    let key = |start: Option<u64>, pid: u32| (start.is_none(), start, pid);
    let (start_a, start_b) = (start(a), start(b));
    if key(start_a, a) <= key(start_b, b) {
        a
    } else {
        b
    }
}

/// The inode in a `socket:[12345]` link target.
fn socket_inode(target: &[u8]) -> Option<u64> {
    let digits = target.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    fn inode_of(fd: &impl AsRawFd) -> u64 {
        fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap()
            .ino()
    }

    #[test]
    fn parses_socket_links_only() {
        assert_eq!(socket_inode(b"socket:[4242]"), Some(4242));
        assert_eq!(socket_inode(b"pipe:[4242]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
        assert_eq!(socket_inode(b"socket:[x]"), None);
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"pipe:[12345]"), None);
    }

    #[test]
    fn finds_own_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let owners = socket_owners(|| Ok::<_, ()>(())).unwrap();
        assert_eq!(owners.get(&inode_of(&listener)), Some(&std::process::id()));
    }

    #[test]
    fn meanwhile_runs_during_the_walk_and_its_error_ends_it() {
        let mut calls = 0;
        socket_owners(|| {
            calls += 1;
            Ok::<_, ()>(())
        })
        .unwrap();
        assert!(
            calls > 0,
            "this machine has more than {LINKS_PER_PAUSE} open files"
        );
        assert_eq!(socket_owners(|| Err("stop")), Err("stop"));
    }

    /// A `sleep` child that inherited `socket` (std opens it close-on-exec;
    /// the child clears that on its copy only) and holds it until killed.
    fn child_holding(socket: &impl AsRawFd) -> std::process::Child {
        let fd = socket.as_raw_fd();
        // SAFETY: the closure only calls fcntl, which is async-signal-safe.
        let child = unsafe {
            Command::new("sleep")
                .arg("30")
                .stdin(Stdio::null())
                .pre_exec(move || {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                    Ok(())
                })
                .spawn()
                .unwrap()
        };
        // Its open files are sleep's once its comm is.
        for _ in 0..500 {
            if fs::read_to_string(format!("/proc/{}/comm", child.id()))
                .is_ok_and(|comm| comm.trim_end() == "sleep")
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child
    }

    fn sockets_of(pid: u32) -> Vec<u64> {
        let mut inodes = Vec::new();
        held_sockets(pid, &mut 0, &mut || Ok::<_, ()>(()), |inode| {
            inodes.push(inode)
        })
        .unwrap();
        inodes.sort_unstable();
        inodes
    }

    /// A socket shared with a forked child belongs to the parent, which
    /// started first, whichever pid the child got.
    #[test]
    fn a_socket_shared_with_a_child_belongs_to_the_older_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut child = child_holding(&listener);
        let inode = inode_of(&listener);
        let me = std::process::id();
        assert_eq!(sockets_of(child.id()), [inode]);

        let mut started = HashMap::new();
        // Either order of meeting them names the parent.
        assert_eq!(older(me, child.id(), &mut started), me);
        assert_eq!(older(child.id(), me, &mut started), me);
        assert_eq!(
            older(u32::MAX, me, &mut started),
            me,
            "a gone process loses"
        );
        let owners = socket_owners(|| Ok::<_, ()>(())).unwrap();
        assert_eq!(owners.get(&inode), Some(&me));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The hand-written reading against the `procfs` crate's, on a process
    /// whose open files stay put (this one's change as tests run).
    #[test]
    fn held_sockets_agree_with_the_procfs_crate() {
        let udp = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let mut child = child_holding(&udp);
        let process = procfs::process::Process::new(child.id() as i32).unwrap();
        let mut from_crate: Vec<u64> = process
            .fd()
            .unwrap()
            .flatten()
            .filter_map(|fd| match fd.target {
                procfs::process::FDTarget::Socket(inode) => Some(inode),
                _ => None,
            })
            .collect();
        from_crate.sort_unstable();
        assert!(from_crate.contains(&inode_of(&udp)));
        assert_eq!(sockets_of(child.id()), from_crate);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
