//! A clickhouse-server of a test's own: Debian's binary started with its
//! own config, data, tmp and log directories and free loopback ports,
//! waited for until `SELECT 1` answers, killed (and its files removed)
//! on drop, also when the test panics. The system's own service, if any,
//! is neither used nor touched.
//!
//! Shared by the tests of several crates with `#[path]`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ClickHouseServer {
    child: Child,
    pub http_port: u16,
    pub tcp_port: u16,
    dir: tempfile::TempDir,
}

/// A port free right now on loopback.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ClickHouseServer {
    pub fn start() -> ClickHouseServer {
        Self::start_with_clusters(|_| String::new())
    }

    /// Starts a server whose `remote_servers` section is `clusters` of its
    /// own TCP port (XML). A port taken between choosing and binding it
    /// (other tests pick free ports too) means another try on others.
    pub fn start_with_clusters(clusters: impl Fn(u16) -> String) -> ClickHouseServer {
        let mut tries = 0;
        loop {
            let tcp_port = free_port();
            match Self::start_on(free_port(), tcp_port, &clusters(tcp_port)) {
                Ok(server) => return server,
                Err(log) if log.contains("Address already in use") && tries < 3 => tries += 1,
                Err(log) => panic!("clickhouse-server did not answer in 60 s: {log}"),
            }
        }
    }

    fn start_on(http_port: u16, tcp_port: u16, clusters: &str) -> Result<ClickHouseServer, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("cs-clickhouse-{}-", std::process::id()))
            .tempdir()
            .unwrap();
        let root = dir.path().display().to_string();
        for sub in ["data", "tmp", "log", "user_files", "format_schemas"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{root}/log/server.log</log><errorlog>{root}/log/error.log</errorlog><size>10M</size><count>1</count></logger>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{root}/data/</path>
  <tmp_path>{root}/tmp/</tmp_path>
  <user_files_path>{root}/user_files/</user_files_path>
  <format_schema_path>{root}/format_schemas/</format_schema_path>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <max_concurrent_queries>50</max_concurrent_queries>
  <timezone>UTC</timezone>
  <remote_servers>{clusters}</remote_servers>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default>
  </users>
  <profiles><default></default></profiles>
  <quotas><default></default></quotas>
</yandex>
"#
        );
        let config_path = dir.path().join("config.xml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("clickhouse-server")
            .arg(format!("--config-file={}", config_path.display()))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clickhouse-server (Debian's clickhouse-server package) starts");
        let mut server = ClickHouseServer {
            child,
            http_port,
            tcp_port,
            dir,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Waits until `SELECT 1` answers; else the server's error log. A
    /// server that exited (a port in use) is not waited for.
    fn wait_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if self
                .query("SELECT 1")
                .map(|r| r.trim() == "1")
                .unwrap_or(false)
            {
                return Ok(());
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log =
            std::fs::read_to_string(self.dir.path().join("log/error.log")).unwrap_or_default();
        Err(format!("port {}: {log}", self.http_port))
    }

    /// Runs `sql` over HTTP; the body on 200, or an error with the server's answer.
    pub fn query(&self, sql: &str) -> Result<String, String> {
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.http_port)).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let request = format!(
            "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{sql}",
            sql.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .map_err(|e| e.to_string())?;
        let (head, body) = answer.split_once("\r\n\r\n").ok_or("no HTTP answer")?;
        if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") {
            Ok(body.to_owned())
        } else {
            Err(body.to_owned())
        }
    }

    /// The store address of `database` on this server.
    pub fn location(&self, database: &str) -> String {
        format!("clickhouse://127.0.0.1:{}/{database}", self.http_port)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id (benchmarks read its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
