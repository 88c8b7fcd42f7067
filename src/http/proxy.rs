//! Who a web visitor is (the self-service page's, and the console's at sign-in): the TCP
//! peer, or, only when the peer is one of `server.trusted_proxies`, the address in the one
//! header the admin names (`server.proxy_header`). A visitor can send any header it likes;
//! only the one the admin's proxy sets (appending to, or replacing, whatever the visitor sent)
//! can be believed, so every other forwarding header is ignored, and so is every address left
//! of the first one that no trusted proxy vouches for. Nothing here knows what the page does
//! with the address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use actix_web::HttpRequest;
use actix_web::http::header::HeaderName;
use ipnet::IpNet;

use crate::network::parse_ip;

/// Why no visitor address could be made out: the page answers 400 rather than guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("the connection has no peer address")]
    NoPeer,
    /// An element of the chain that had to be read (right of the visitor) is not an address,
    /// or the header is not text.
    #[error("the {header} header from the proxy is not understood")]
    Malformed { header: String },
}

/// The visitor's address. From a peer that is not a trusted proxy: the peer, whatever headers
/// it sent. From a trusted proxy: the chain of addresses in `proxy_header` (several lines of it
/// joined in order) followed by the peer is walked from the right, past addresses in
/// `trusted_proxies`; the first address that is not a trusted proxy is the visitor (the
/// left-most one if all are). An element on that walk that is not an address refuses the
/// request.
pub fn visitor_address(
    request: &HttpRequest,
    trusted_proxies: &[IpNet],
    proxy_header: &str,
) -> Result<IpAddr, ProxyError> {
    let peer = request.peer_addr().ok_or(ProxyError::NoPeer)?.ip();
    let peer = parse_ip(&peer.to_string()).map_err(|_| ProxyError::NoPeer)?;
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return Ok(peer);
    }
    let malformed = || ProxyError::Malformed { header: proxy_header.to_string() };
    let name = HeaderName::from_bytes(proxy_header.as_bytes()).map_err(|_| malformed())?;
    let mut lines = Vec::new();
    for value in request.headers().get_all(name) {
        lines.push(value.to_str().map_err(|_| malformed())?);
    }
    let chain = lines.join(",");
    let forwarded = proxy_header == "forwarded";
    let mut visitor = peer;
    // RFC 9110 lists may hold empty elements; they name no hop.
    for element in split_outside_quotes(&chain, ',').into_iter().rev().filter(|e| !e.trim().is_empty()) {
        let address = if forwarded { forwarded_for(element) } else { node_address(element.trim()) };
        visitor = address.ok_or_else(malformed)?;
        if !trusted(&visitor) {
            break;
        }
    }
    Ok(visitor)
}

/// The address of one RFC 7239 element's `for=` parameter (`for=192.0.2.7`,
/// `for="[2001:db8::5]:4711"`); `None` for an element without exactly one, and for the
/// undisclosed `unknown` and obfuscated `_name` nodes.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let mut found = None;
    for pair in split_outside_quotes(element, ';') {
        let (name, value) = pair.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("for") {
            continue;
        }
        if found.is_some() {
            return None;
        }
        found = Some(unquote(value.trim())?);
    }
    node_address(&found?)
}

/// A quoted string's content (backslash escapes undone), or a token as it is.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return Some(value.to_string());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next()? } else { c });
    }
    Some(out)
}

/// An address with an optional port, as proxies write it: `192.0.2.7`, `192.0.2.7:4711`,
/// `2001:db8::5`, `[2001:db8::5]` or `[2001:db8::5]:4711` (an RFC 7239 obfuscated port,
/// `_p1`, is accepted too). IPv4-mapped IPv6 becomes IPv4, as everywhere.
fn node_address(text: &str) -> Option<IpAddr> {
    let port_ok = |port: &str| {
        port.parse::<u16>().is_ok()
            || (port.len() > 1
                && port.starts_with('_')
                && port.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
    };
    let host = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<Ipv6Addr>().ok()?;
        match after {
            "" => host,
            _ => after.strip_prefix(':').filter(|port| port_ok(port)).map(|_| host)?,
        }
    } else if text.parse::<IpAddr>().is_ok() {
        text
    } else {
        let (host, port) = text.rsplit_once(':')?;
        host.parse::<Ipv4Addr>().ok()?;
        port_ok(port).then_some(host)?
    };
    parse_ip(host).ok()
}

/// `text` split at `separator` where it is not inside a quoted string.
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn net(text: &str) -> IpNet {
        crate::network::parse_network(text).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// The visitor of a request from `peer` with `headers`, behind `trusted` reading `header`.
    fn visitor(peer: &str, headers: &[(&str, &str)], trusted: &[&str], header: &str) -> Result<IpAddr, ProxyError> {
        let request =
            headers.iter().fold(TestRequest::default().peer_addr(peer.parse().unwrap()), |r, h| r.append_header(*h));
        let trusted: Vec<IpNet> = trusted.iter().map(|t| net(t)).collect();
        visitor_address(&request.to_http_request(), &trusted, header)
    }

    const XFF: &str = "x-forwarded-for";

    #[test]
    fn a_peer_that_is_not_a_trusted_proxy_is_the_visitor_whatever_it_sends() {
        let headers = [("X-Forwarded-For", "203.0.113.7"), ("Forwarded", "for=203.0.113.8")];
        assert_eq!(visitor("10.0.0.2:40000", &headers, &[], XFF), Ok(ip("10.0.0.2")));
        assert_eq!(visitor("10.0.0.2:40000", &headers, &["10.0.1.0/24"], "forwarded"), Ok(ip("10.0.0.2")));
        assert_eq!(
            visitor("10.0.0.2:40000", &[("X-Forwarded-For", "not an address")], &[], XFF),
            Ok(ip("10.0.0.2")),
            "nothing of an untrusted peer's headers is read"
        );
    }

    #[test]
    fn only_the_named_header_is_believed() {
        let headers = [("Forwarded", "for=198.51.100.66"), ("X-Forwarded-For", "203.0.113.7")];
        assert_eq!(visitor("10.0.0.2:1", &headers, &["10.0.0.0/8"], XFF), Ok(ip("203.0.113.7")));
        assert_eq!(visitor("10.0.0.2:1", &headers, &["10.0.0.0/8"], "forwarded"), Ok(ip("198.51.100.66")));
        assert_eq!(
            visitor("10.0.0.2:1", &[("Forwarded", "for=198.51.100.66")], &["10.0.0.0/8"], XFF),
            Ok(ip("10.0.0.2")),
            "a proxy that sent no X-Forwarded-For forwarded nobody: the peer itself"
        );
        let real_ip = [("X-Real-IP", "203.0.113.9"), ("X-Forwarded-For", "198.51.100.66")];
        assert_eq!(visitor("10.0.0.2:1", &real_ip, &["10.0.0.0/8"], "x-real-ip"), Ok(ip("203.0.113.9")));
    }

    #[test]
    fn the_right_most_address_no_trusted_proxy_vouches_for_is_the_visitor() {
        let chain = [("X-Forwarded-For", "198.51.100.66, 203.0.113.7, 10.0.0.9, 10.0.0.8")];
        assert_eq!(visitor("10.0.0.2:1", &chain, &["10.0.0.0/8"], XFF), Ok(ip("203.0.113.7")));
        assert_eq!(
            visitor("10.0.0.2:1", &chain, &["10.0.0.2/32"], XFF),
            Ok(ip("10.0.0.8")),
            "a hop only the visitor vouches for is not a proxy"
        );
        let lines = [("X-Forwarded-For", "198.51.100.66"), ("X-Forwarded-For", "203.0.113.7, 10.0.0.9")];
        assert_eq!(visitor("10.0.0.2:1", &lines, &["10.0.0.0/8"], XFF), Ok(ip("203.0.113.7")), "lines join in order");
        let all_proxies = [("X-Forwarded-For", "10.0.0.9, 10.0.0.8")];
        assert_eq!(visitor("10.0.0.2:1", &all_proxies, &["10.0.0.0/8"], XFF), Ok(ip("10.0.0.9")));
    }

    #[test]
    fn a_malformed_address_on_the_walk_is_refused_and_one_left_of_the_visitor_is_never_read() {
        let refused = |value: &str, header: &str| {
            let name = if header == "forwarded" { "Forwarded" } else { "X-Forwarded-For" };
            visitor("10.0.0.2:1", &[(name, value)], &["10.0.0.0/8"], header)
        };
        let malformed = Err(ProxyError::Malformed { header: XFF.into() });
        assert_eq!(refused("203.0.113.7, not-an-ip", XFF), malformed);
        assert_eq!(refused("203.0.113.7, 10.0.0.9:x", XFF), malformed);
        assert_eq!(refused("203.0.113.256", XFF), malformed);
        assert_eq!(refused("not-an-ip, 203.0.113.7", XFF), Ok(ip("203.0.113.7")));
        let malformed = Err(ProxyError::Malformed { header: "forwarded".into() });
        assert_eq!(refused("for=unknown", "forwarded"), malformed, "an undisclosed hop");
        assert_eq!(refused("for=_hidden", "forwarded"), malformed, "an obfuscated hop");
        assert_eq!(refused("proto=https", "forwarded"), malformed, "a hop without for=");
        assert_eq!(refused("for=203.0.113.7;for=203.0.113.8", "forwarded"), malformed);
        assert_eq!(refused("for=\"[2001:db8::5]:4711", "forwarded"), malformed, "an open quote");
    }

    #[test]
    fn addresses_are_read_in_the_forms_proxies_write_them() {
        let cases = [
            ("203.0.113.7", "203.0.113.7"),
            (" 203.0.113.7:4711 ", "203.0.113.7"),
            ("2001:db8::5", "2001:db8::5"),
            ("[2001:db8::5]", "2001:db8::5"),
            ("[2001:db8::5]:4711", "2001:db8::5"),
            ("::ffff:203.0.113.7", "203.0.113.7"),
        ];
        for (written, meant) in cases {
            assert_eq!(visitor("10.0.0.2:1", &[("X-Forwarded-For", written)], &["10.0.0.0/8"], XFF), Ok(ip(meant)));
        }
        let forwarded = [
            ("for=203.0.113.7;proto=https", "203.0.113.7"),
            ("For=\"[2001:db8::5]:4711\"", "2001:db8::5"),
            ("proto=https;for=\"203.0.113.7:_p1\";by=10.0.0.2", "203.0.113.7"),
            ("for=\"198.51.100.1\\\"\", for=203.0.113.7", "203.0.113.7"),
            ("for=203.0.113.7;ext=\"a, b;c\"", "203.0.113.7"),
        ];
        for (written, meant) in forwarded {
            assert_eq!(
                visitor("10.0.0.2:1", &[("Forwarded", written)], &["10.0.0.0/8"], "forwarded"),
                Ok(ip(meant)),
                "{written}"
            );
        }
    }
}
