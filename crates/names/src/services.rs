use std::collections::HashMap;
use std::sync::OnceLock;

use connscope_event::Protocol;

/// A services table, as in services(5): `name port/proto [aliases...]`.
#[derive(Debug, Default, Clone)]
pub struct Services {
    by_port: HashMap<(u16, Protocol), String>,
    by_name: HashMap<(String, Protocol), u16>,
}

impl Services {
    /// The system's table, read from `/etc/services` once per process. A missing
    /// file gives an empty table: every port is then printed as a number.
    pub fn system() -> &'static Services {
        static SYSTEM: OnceLock<Services> = OnceLock::new();
        SYSTEM.get_or_init(|| {
            std::fs::read_to_string("/etc/services")
                .map(|text| Services::parse(&text))
                .unwrap_or_default()
        })
    }

    /// Parses services(5) text. Malformed lines are skipped, as glibc does.
    pub fn parse(text: &str) -> Services {
        let mut table = Services::default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_ascii_whitespace();
            let (Some(name), Some(port_proto)) = (words.next(), words.next()) else {
                continue;
            };
            let Some((port, proto)) = port_proto.split_once('/') else {
                continue;
            };
            let (Ok(port), Ok(proto)) = (port.parse::<u16>(), proto.parse::<Protocol>()) else {
                continue;
            };
            // The first entry for a port wins, as with getservbyport(3).
            table
                .by_port
                .entry((port, proto))
                .or_insert_with(|| name.to_owned());
            for alias in std::iter::once(name).chain(words) {
                table
                    .by_name
                    .entry((alias.to_owned(), proto))
                    .or_insert(port);
            }
        }
        table
    }

    /// The service name of a port, as getservbyport(3) gives it.
    pub fn name(&self, port: u16, proto: Protocol) -> Option<&str> {
        self.by_port.get(&(port, proto)).map(String::as_str)
    }

    /// The port of a service name or alias, as getservbyname(3) gives it.
    pub fn port(&self, name: &str, proto: Protocol) -> Option<u16> {
        self.by_name.get(&(name.to_owned(), proto)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# comment
ssh\t\t22/tcp\t\t\t\t# SSH Remote Login Protocol
smtp\t\t25/tcp\t\tmail
http\t\t80/tcp\t\twww\t\t# WorldWideWeb HTTP
domain\t\t53/tcp
domain\t\t53/udp
garbage line
bad\t\t99999/tcp
";

    #[test]
    fn names_and_ports_both_ways() {
        let s = Services::parse(SAMPLE);
        assert_eq!(s.name(22, Protocol::Tcp), Some("ssh"));
        assert_eq!(s.name(80, Protocol::Tcp), Some("http"));
        assert_eq!(s.port("www", Protocol::Tcp), Some(80));
        assert_eq!(s.port("mail", Protocol::Tcp), Some(25));
        assert_eq!(s.port("domain", Protocol::Udp), Some(53));
        assert_eq!(s.name(22, Protocol::Udp), None);
        assert_eq!(s.port("bad", Protocol::Tcp), None);
    }

    #[test]
    fn system_table_knows_ssh() {
        // Debian's netbase ships /etc/services; the test machine has it.
        assert_eq!(Services::system().port("ssh", Protocol::Tcp), Some(22));
    }
}
