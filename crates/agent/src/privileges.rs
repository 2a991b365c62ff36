//! Dropping root after start-up (tcpspy's `-U USER` and `-G GROUP`).
//!
//! Everything that needs root happens before the switch: the BPF programs are
//! loaded and attached, the netlink sockets opened, the output files and the
//! sequence file opened or handed to the user. After it the agent only reads
//! the ring buffer (an mmap that needs no privilege) and /proc. Reading
//! `/proc/PID/exe`, `comm` and `fd/` of another user's process is a ptrace
//! access check, so a plain unprivileged agent would lose the executable of
//! every process but its own. tcpspy lives with that ("you may require
//! superuser privileges", tcpspy(8)); connscope keeps exactly two
//! capabilities across the switch instead:
//!
//! - `CAP_SYS_PTRACE`: passes the ptrace access check of /proc/PID/exe and
//!   /proc/PID/fd (read-only use: the agent never attaches to anything);
//! - `CAP_DAC_READ_SEARCH`: reads /proc/PID/fd directories and cmdlines
//!   whatever their mode.
//!
//! Everything else is gone: no CAP_SYS_ADMIN, CAP_BPF or CAP_NET_ADMIN, so the
//! agent can load no new program, join no netlink group and write no file
//! it does not own. What this loses: reopening an output file on SIGHUP needs
//! the user to be allowed to create it in its directory, and a syslog daemon
//! restart is survived only if `/dev/log` is writable by the user (it is, on
//! every common system).

use std::io;

use connscope_names::{group_id, uid_for_name};

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The user and group to run as after start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    /// `None`: keep the uid, change only the group (`-G` without `-U`).
    pub uid: Option<u32>,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("-U: user `{0}' unknown")]
    UnknownUser(String),
    #[error("-G: group `{0}' unknown")]
    UnknownGroup(String),
    #[error("cannot switch to uid {uid} gid {gid}: {what}: {source}")]
    Switch {
        uid: u32,
        gid: u32,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

impl RunAs {
    /// Resolves `-U` and `-G` as tcpspy does: names or numbers; `-U` without
    /// `-G` takes the user's primary group. `None` when neither is given.
    pub fn resolve(
        user: Option<&str>,
        group: Option<&str>,
    ) -> Result<Option<RunAs>, PrivilegeError> {
        let uid = user
            .map(|u| uid_for_name(u).ok_or_else(|| PrivilegeError::UnknownUser(u.to_owned())))
            .transpose()?;
        let gid = match (group, uid) {
            (Some(g), _) => {
                group_id(g).ok_or_else(|| PrivilegeError::UnknownGroup(g.to_owned()))?
            }
            (None, Some(uid)) => primary_group(uid)
                .ok_or_else(|| PrivilegeError::UnknownUser(user.unwrap_or_default().to_owned()))?,
            (None, None) => return Ok(None),
        };
        Ok(Some(RunAs { uid, gid }))
    }

    /// Switches for good, keeping CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH.
    pub fn switch(self) -> Result<(), PrivilegeError> {
        let uid = self.uid.unwrap_or_else(|| nix::unistd::getuid().as_raw());
        let fail = |what| {
            move |source| PrivilegeError::Switch {
                uid,
                gid: self.gid,
                what,
                source,
            }
        };
        // SAFETY: plain system calls on integers; each result is checked.
        unsafe {
            check(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0)).map_err(fail("prctl"))?;
            check(libc::setgroups(1, &self.gid)).map_err(fail("setgroups"))?;
            check(libc::setresgid(self.gid, self.gid, self.gid)).map_err(fail("setgid"))?;
            check(libc::setresuid(uid, uid, uid)).map_err(fail("setuid"))?;
            check(libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0)).map_err(fail("prctl"))?;
        }
        keep_only_read_capabilities().map_err(fail("capset"))
    }
}

fn primary_group(uid: u32) -> Option<u32> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.gid.as_raw())
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets the permitted and effective sets to the two read capabilities (and
/// nothing inheritable). capset(2) has no libc wrapper: the raw call is used.
fn keep_only_read_capabilities() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let keep = (1 << CAP_SYS_PTRACE) | (1 << CAP_DAC_READ_SEARCH);
    let header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        Data {
            effective: keep,
            permitted: keep,
            inheritable: 0,
        },
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: header and data match the kernel's v3 layout and outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    check(rc as libc::c_int)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_like_tcpspy() {
        assert_eq!(RunAs::resolve(None, None).unwrap(), None);
        let nobody = RunAs::resolve(Some("nobody"), None).unwrap().unwrap();
        assert_eq!(nobody.uid, Some(65534));
        assert_eq!(Some(nobody.gid), primary_group(65534));
        let group_only = RunAs::resolve(None, Some("0")).unwrap().unwrap();
        assert_eq!(group_only, RunAs { uid: None, gid: 0 });
        let err = RunAs::resolve(Some("no-such-user-x"), None).unwrap_err();
        assert_eq!(err.to_string(), "-U: user `no-such-user-x' unknown");
        let err = RunAs::resolve(Some("root"), Some("no-such-group-x")).unwrap_err();
        assert_eq!(err.to_string(), "-G: group `no-such-group-x' unknown");
    }
}
