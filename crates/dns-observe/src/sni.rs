//! The server name of a TLS ClientHello (tls-parser does the parsing).

use tls_parser::{
    parse_tls_extensions, parse_tls_plaintext, SNIType, TlsExtension, TlsMessage,
    TlsMessageHandshake,
};

/// The host name a ClientHello asks for, if the record holds a whole
/// ClientHello with a server name. A ClientHello split over several TCP
/// segments is not reassembled (only the first segment is captured).
pub fn server_name(record: &[u8]) -> Option<String> {
    let (_, plaintext) = parse_tls_plaintext(record).ok()?;
    plaintext.msg.iter().find_map(|message| match message {
        TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)) => {
            let (_, extensions) = parse_tls_extensions(hello.ext?).ok()?;
            extensions.iter().find_map(|extension| match extension {
                TlsExtension::SNI(names) => names
                    .iter()
                    .find(|(kind, _)| *kind == SNIType::HostName)
                    .map(|(_, name)| String::from_utf8_lossy(name).into_owned())
                    .filter(|name| crate::dns::keepable(name)),
                _ => None,
            })
        }
        _ => None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal TLS 1.2 ClientHello record asking for `name`.
    pub(crate) fn client_hello(name: &[u8]) -> Vec<u8> {
        let mut sni = Vec::new();
        let entry_len = name.len() + 3;
        sni.extend_from_slice(&[0x00, 0x00]); // extension: server_name
        sni.extend_from_slice(&((entry_len + 2) as u16).to_be_bytes());
        sni.extend_from_slice(&(entry_len as u16).to_be_bytes());
        sni.push(0); // host_name
        sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni.extend_from_slice(name);
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7; 32]); // random
        body.push(0); // no session id
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[0x01, 0x00]); // null compression
        body.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        body.extend_from_slice(&sni);
        let mut handshake = vec![0x01];
        handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        handshake.extend_from_slice(&body);
        let mut record = vec![0x16, 0x03, 0x01];
        record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
        record.extend_from_slice(&handshake);
        record
    }

    #[test]
    fn the_server_name_of_a_client_hello() {
        assert_eq!(
            server_name(&client_hello(b"tls.example")).as_deref(),
            Some("tls.example")
        );
        assert_eq!(
            server_name(&client_hello(b"<b>\x01.example")).as_deref(),
            Some("<b>\u{1}.example")
        );
    }

    #[test]
    fn a_cut_record_or_another_message_gives_no_name() {
        let hello = client_hello(b"tls.example");
        assert_eq!(server_name(&hello[..hello.len() - 3]), None);
        assert_eq!(server_name(b"\x16\x03\x01\x00\x01\x02"), None);
        assert_eq!(server_name(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(
            server_name(&client_hello(&[b'a'; 300])),
            None,
            "refused, not cut"
        );
    }
}
