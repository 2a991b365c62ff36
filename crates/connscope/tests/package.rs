#![cfg(feature = "system-tests")] // root: mount and network namespaces, dpkg in an overlay of /, eBPF, lintian
//! The Debian package end to end, with the tools that judge packages: lintian,
//! dpkg (install, upgrade, remove, purge), systemd-analyze, man, bash.
//!
//! dpkg runs for real, maintainer scripts, adduser and deb-systemd-helper
//! included, but not on this machine: in a chroot whose root is an overlay of
//! this machine's / over a tmpfs, inside private mount and network
//! namespaces. So the package meets a real Debian 12 system (this one, as it
//! is), every write lands in the tmpfs, and when the test ends the namespaces
//! and all they hold disappear; the machine and the build tree's binary stay
//! as they were (the test checks). The units' ExecStart lines then run in
//! that chroot as written, with the units' user, state directories,
//! capability bounding sets, ambient capabilities and no-new-privs (setpriv),
//! without systemd as PID 1.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_connscope");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The two packages the tests install: the version and its successor.
struct Debs {
    first: PathBuf,
    second: PathBuf,
}

/// Built once per run into cargo's scratch directory for tests, where the
/// next run overwrites them (a static's temporary directory is never dropped).
fn debs() -> &'static Debs {
    static DEBS: OnceLock<Debs> = OnceLock::new();
    DEBS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("packages");
        std::fs::create_dir_all(&dir).unwrap();
        let build = |version: &str| {
            let out = Command::new(repo().join("scripts/package"))
                .args([
                    "--binary",
                    BIN,
                    "--version",
                    version,
                    "--compression",
                    "gzip",
                    "--out",
                ])
                .arg(&dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        };
        Debs {
            first: build("0.1.0-1"),
            second: build("0.1.0-2"),
        }
    })
}

#[test]
fn lintian_finds_no_errors() {
    let out = Command::new("lintian")
        .args(["--fail-on", "error", "--no-tag-display-limit"])
        .arg(&debs().first)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "lintian failed:\n{report}");
    assert!(
        !report.lines().any(|line| line.starts_with("E:")),
        "{report}"
    );
    // Each warning is justified in docs/DEPLOY.md; a new one must be too.
    let deploy = std::fs::read_to_string(repo().join("docs/DEPLOY.md")).unwrap();
    for line in report.lines().filter(|line| line.starts_with("W:")) {
        let tag = line.split_whitespace().nth(2).unwrap();
        assert!(
            deploy.contains(tag),
            "lintian warning {tag} is not in docs/DEPLOY.md: {line}"
        );
    }
}

/// A chroot of this machine's / with every write in a tmpfs, in its own
/// mount and network namespaces, held open by a sleeping process.
struct Overlay {
    holder: Child,
    base: PathBuf,
    services: Vec<Child>,
}

impl Overlay {
    fn new() -> Overlay {
        let base = std::env::temp_dir().join(format!("cs-pkg-root-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let holder = Command::new("unshare")
            .args([
                "--mount",
                "--net",
                "--propagation",
                "private",
                "--",
                "sleep",
                "3600",
            ])
            .spawn()
            .unwrap();
        let overlay = Overlay {
            holder,
            base,
            services: Vec::new(),
        };
        // unshare has made the namespaces once its mount namespace differs.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{}/ns/mnt", overlay.holder.id())).ok()
            == std::fs::read_link("/proc/self/ns/mnt").ok()
        {
            assert!(Instant::now() < deadline, "unshare did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let b = overlay.base.display();
        overlay.in_namespaces(&format!(
            "set -e
             mount -t tmpfs -o size=2g cs-pkg {b}
             mkdir {b}/upper {b}/work {b}/merged
             mount -t overlay cs-pkg -o lowerdir=/,upperdir={b}/upper,workdir={b}/work {b}/merged
             mount -t proc proc {b}/merged/proc
             mount -t sysfs sysfs {b}/merged/sys
             mount -t tracefs tracefs {b}/merged/sys/kernel/tracing
             mount --rbind /dev {b}/merged/dev
             mount -t tmpfs tmpfs {b}/merged/run
             mount -t tmpfs tmpfs {b}/merged/tmp
             ip link set lo up"
        ));
        overlay
    }

    fn merged(&self) -> PathBuf {
        self.base.join("merged")
    }

    /// A path of the chroot as this process can open it.
    fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/root{}{inside}",
            self.holder.id(),
            self.merged().display()
        ))
    }

    /// Whether the chroot has this path (a symlink counts, whatever it points to).
    fn has(&self, inside: &str) -> bool {
        std::fs::symlink_metadata(self.path(inside)).is_ok()
    }

    fn nsenter(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.holder.id().to_string(), "-m", "-n", "--"]);
        cmd
    }

    fn in_namespaces(&self, script: &str) {
        let out = self.nsenter().args(["sh", "-c", script]).output().unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `script` with sh in the chroot.
    fn sh(&self, script: &str) -> Output {
        self.nsenter()
            .arg("chroot")
            .arg(self.merged())
            .args(["sh", "-c", script])
            .output()
            .unwrap()
    }

    /// Runs `script` and returns its stdout; it must succeed.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "{script}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Starts `argv` in the chroot; its stdout lines arrive on the receiver.
    fn spawn(&mut self, argv: &[String]) -> Receiver<String> {
        let mut child = self
            .nsenter()
            .arg("chroot")
            .arg(self.merged())
            .args(argv)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let (send, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        self.services.push(child);
        lines
    }

    fn copy_in(&self, file: &Path) -> String {
        let inside = format!("/tmp/{}", file.file_name().unwrap().to_string_lossy());
        std::fs::copy(file, self.path(&inside)).unwrap();
        inside
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        // The namespaces (and every mount in them) end with their last process.
        for service in &mut self.services {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(service.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for service in &mut self.services {
            let _ = service.wait();
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = std::fs::remove_dir(&self.base);
    }
}

/// The `[Service]` settings of a unit file, as systemd would read them.
fn unit(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.starts_with('['))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// The command line that runs a unit's ExecStart the way systemd would: the
/// unit's User/Group, UMask, capability bounding set, ambient capabilities
/// and no-new-privs; capabilities this machine's own bounding set lacks
/// cannot be granted and are left out (CAP_SYS_RESOURCE in some sandboxes).
fn as_the_unit(settings: &BTreeMap<String, String>) -> Vec<String> {
    let exec = &settings["ExecStart"];
    assert!(
        !exec.contains(['"', '\'', '$', '%']),
        "ExecStart needs no quoting: {exec}"
    );
    let ours = bounding_set();
    let caps = |key: &str| -> String {
        let list: Vec<String> = settings
            .get(key)
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|cap| cap.trim_start_matches("CAP_").to_lowercase())
            .filter(|cap| ours.contains(cap))
            .map(|cap| format!(",+{cap}"))
            .collect();
        format!("-all{}", list.concat())
    };
    let mut argv: Vec<String> = vec!["sh".into(), "-c".into()];
    argv.push(format!(
        "umask {}; exec \"$@\"",
        settings.get("UMask").map(String::as_str).unwrap_or("0022")
    ));
    argv.push("unit".into());
    argv.push("setpriv".into());
    if let Some(user) = settings.get("User") {
        argv.push(format!("--reuid={user}"));
        argv.push(format!("--regid={}", settings.get("Group").unwrap_or(user)));
        argv.push("--init-groups".into());
    }
    argv.push(format!("--bounding-set={}", caps("CapabilityBoundingSet")));
    argv.push(format!("--inh-caps={}", caps("AmbientCapabilities")));
    argv.push(format!("--ambient-caps={}", caps("AmbientCapabilities")));
    if settings.get("NoNewPrivileges").map(String::as_str) == Some("yes") {
        argv.push("--no-new-privs".into());
    }
    argv.extend(exec.split_whitespace().map(str::to_owned));
    argv
}

/// This process's capability bounding set, as setpriv names them.
fn bounding_set() -> Vec<String> {
    let out = Command::new("setpriv").arg("--list-caps").output().unwrap();
    let all: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    all.into_iter()
        .enumerate()
        .filter(|(bit, _)| bnd & (1 << bit) != 0)
        .map(|(_, name)| name)
        .collect()
}

/// Makes a unit's StateDirectory= as systemd does: owned by its user, its mode.
fn state_directory(overlay: &Overlay, settings: &BTreeMap<String, String>) -> String {
    let dir = format!("/var/lib/{}", settings["StateDirectory"]);
    let owner = settings.get("User").map(String::as_str).unwrap_or("root");
    let group = settings.get("Group").map(String::as_str).unwrap_or(owner);
    let mode = settings
        .get("StateDirectoryMode")
        .map(String::as_str)
        .unwrap_or("0755");
    overlay.ok(&format!("install -d -o {owner} -g {group} -m {mode} {dir}"));
    dir
}

fn wait_line(lines: &Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no line starting with {prefix:?}"));
        if let Some(rest) = line.strip_prefix(prefix) {
            return rest.to_owned();
        }
    }
}

/// What the package would change on this machine, and the build's binary.
fn host_state() -> (bool, bool, bool, Vec<u8>) {
    (
        Path::new("/etc/connscope").exists(),
        Path::new("/usr/bin/connscope").exists(),
        Command::new("getent")
            .args(["passwd", "connscope"])
            .status()
            .unwrap()
            .success(),
        std::fs::read(BIN).unwrap(),
    )
}

#[test]
fn install_run_upgrade_remove_and_purge() {
    let before = host_state();
    let debs = debs();
    {
        let mut root = Overlay::new();
        let first = root.copy_in(&debs.first);
        let second = root.copy_in(&debs.second);
        let had_user = root.sh("getent passwd connscope").status.success();

        // Install: binary, units, conffiles, user, agent enabled, collector not.
        root.ok(&format!("dpkg -i {first}"));
        assert_eq!(
            root.ok("dpkg-query -W -f '${Status} ${Version}' connscope"),
            "install ok installed 0.1.0-1"
        );
        root.ok("getent passwd connscope");
        assert_eq!(
            root.ok("stat -c '%a %U %G' /etc/connscope/collector.toml")
                .trim(),
            "640 root connscope"
        );
        let wants = "/etc/systemd/system/multi-user.target.wants";
        assert!(root.has(&format!("{wants}/connscope-agent.service")));
        assert!(!root.has(&format!("{wants}/connscope-collector.service")));
        root.ok(
            "systemd-analyze verify /lib/systemd/system/connscope-agent.service \
             /lib/systemd/system/connscope-collector.service",
        );
        let page = root.ok("MANWIDTH=80 man connscope-agent 2>&1 | col -b");
        assert!(
            page.contains("--collector-fingerprint") && page.contains("tcpspy"),
            "{page}"
        );
        let page = root.ok("MANWIDTH=80 man -l /usr/share/man/man1/connscope-doctor.1.gz | col -b");
        assert!(page.contains("connscope-doctor"), "{page}");
        let complete = root.ok(
            "bash -c 'source /usr/share/bash-completion/completions/connscope; complete -p connscope'",
        );
        assert!(complete.contains("connscope"), "{complete}");
        let words = root.ok(
            "bash -c 'source /usr/share/bash-completion/completions/connscope; \
             COMP_WORDS=(connscope ag); COMP_CWORD=1; _connscope connscope ag connscope; \
             echo ${COMPREPLY[@]}'",
        );
        assert!(words.split_whitespace().any(|w| w == "agent"), "{words}");

        // The units as written: a collector, and an agent shipping to it.
        let collector_unit = unit(
            &std::fs::read_to_string(root.path("/lib/systemd/system/connscope-collector.service"))
                .unwrap(),
        );
        let agent_unit = unit(
            &std::fs::read_to_string(root.path("/lib/systemd/system/connscope-agent.service"))
                .unwrap(),
        );
        let token = "tok-ws-pkg-0123456789abcdef";
        let reader = "tok-reader-0123456789abcdef";
        root.ok(&format!(
            "printf '\\n[tokens]\\nws-pkg = \"{token}\"\\n[read-tokens]\\ntest = \"{reader}\"\\n' \
             >>/etc/connscope/collector.toml"
        ));
        let store_dir = state_directory(&root, &collector_unit);
        let collector = root.spawn(&as_the_unit(&collector_unit));
        let listening = wait_line(&collector, "listening: ");
        assert_eq!(listening, "https://0.0.0.0:8443");
        let fingerprint = wait_line(&collector, "fingerprint: ");
        assert_eq!(
            root.ok(&format!("stat -c %U {store_dir}/connscope.db"))
                .trim(),
            "connscope",
            "the store belongs to the unit's user"
        );

        root.ok(&format!(
            "umask 077; printf '%s\\n' {token} >/etc/connscope/agent.token
             cat >>/etc/connscope/agent.toml <<EOF
collector = \"https://127.0.0.1:8443\"
collector_token_file = \"/etc/connscope/agent.token\"
collector_fingerprint = \"{fingerprint}\"
host_name = \"ws-pkg\"
EOF"
        ));
        state_directory(&root, &agent_unit);
        let _agent = root.spawn(&as_the_unit(&agent_unit));
        let doctor = root.sh("connscope doctor");
        let report = String::from_utf8_lossy(&doctor.stdout);
        assert!(doctor.status.success(), "{report}");
        assert!(
            report.contains("ok   collector: https://127.0.0.1:8443 answers"),
            "{report}"
        );

        // Events flow: the agent's own uploads and a request of ours.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            root.sh("curl -sk https://127.0.0.1:8443/api/v1/health");
            let hosts = root.ok(&format!(
                "curl -sfk -H 'Authorization: Bearer {reader}' https://127.0.0.1:8443/api/v1/hosts"
            ));
            let hosts: serde_json::Value = serde_json::from_str(&hosts).unwrap();
            let shipped = hosts.as_array().unwrap().iter().any(|entry| {
                entry["agent"] == "ws-pkg"
                    && entry["host"] == "ws-pkg"
                    && entry["events"].as_u64() > Some(0)
            });
            if shipped {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no events from the agent: {hosts}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        assert!(root.path("/var/lib/connscope/spool").is_dir());

        // Upgrade: the administrator's edits of the conffiles stay.
        root.ok(&format!("dpkg -i {second}"));
        assert_eq!(
            root.ok("dpkg-query -W -f '${Status} ${Version}' connscope"),
            "install ok installed 0.1.0-2"
        );
        assert!(root
            .ok("cat /etc/connscope/agent.toml")
            .contains("host_name = \"ws-pkg\""));
        assert!(root
            .ok("cat /etc/connscope/collector.toml")
            .contains("ws-pkg"));
        root.ok(
            "zcat /usr/share/doc/connscope/changelog.Debian.gz | head -1 | grep -F '(0.1.0-2)'",
        );

        // Remove: the program goes, the configuration stays.
        root.ok("dpkg --remove connscope");
        assert_eq!(
            root.ok("dpkg-query -W -f '${Status}' connscope"),
            "deinstall ok config-files"
        );
        assert!(!root.path("/usr/bin/connscope").exists());
        assert!(root.path("/etc/connscope/agent.toml").exists());
        assert!(root.path("/etc/connscope/agent.token").exists());

        // Purge: configuration, state and enablement go; the user stays.
        root.ok("dpkg --purge connscope");
        assert!(!root
            .sh("dpkg-query -W connscope 2>/dev/null | grep -q .")
            .status
            .success());
        assert!(!root.path("/etc/connscope").exists());
        assert!(!root.path("/var/lib/connscope").exists());
        assert!(!root.path("/var/lib/connscope-collector").exists());
        assert!(!root.has(&format!("{wants}/connscope-agent.service")));
        if !had_user {
            root.ok("getent passwd connscope");
        }
    }
    assert_eq!(
        host_state(),
        before,
        "the machine and the build's binary are unchanged"
    );
}

#[test]
fn the_ansible_playbook_passes_syntax_and_check_mode_on_localhost() {
    let dir = tempfile::Builder::new()
        .prefix(&format!("cs-ansible-{}-", std::process::id()))
        .tempdir()
        .unwrap();
    let inventory = dir.path().join("inventory.ini");
    // Local connection as root: no sudo to become through.
    let host = "localhost ansible_connection=local ansible_become=false \
                ansible_python_interpreter=/usr/bin/python3";
    std::fs::write(
        &inventory,
        format!("[connscope_collector]\n{host}\n\n[connscope_agents]\n{host}\n"),
    )
    .unwrap();
    let playbook = repo().join("deploy/ansible/connscope.yml");
    let run = |extra: &[&str]| {
        let out = Command::new("ansible-playbook")
            .arg("-i")
            .arg(&inventory)
            .arg(&playbook)
            .arg("-e")
            .arg(format!("connscope_deb={}", debs().first.display()))
            .arg("-e")
            .arg(format!(
                "connscope_deb_dest={}",
                dir.path().join("connscope.deb").display()
            ))
            .args(extra)
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_HOME", dir.path().join("ansible-home"))
            .env("ANSIBLE_LOCAL_TEMP", dir.path().join("ansible-local"))
            .env("ANSIBLE_REMOTE_TEMP", dir.path().join("ansible-remote"))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "ansible-playbook {extra:?}:\n{text}");
        text
    };
    run(&["--syntax-check"]);
    let before = host_state();
    let recap = run(&["--check"]);
    assert!(recap.contains("failed=0"), "{recap}");
    // Check mode would install the package here; it must not have.
    assert!(recap.contains("Install the package"), "{recap}");
    assert_eq!(host_state(), before);
}
