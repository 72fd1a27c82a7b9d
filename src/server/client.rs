//! The client's address: the TCP peer, or, when the peer is one of `server.trusted_proxies`,
//! the address that proxy chain reports in `server.forwarded_header`.
//!
//! Owns the parsing of `Forwarded` (RFC 7239) and `X-Forwarded-For`. Only one of the two
//! headers is read (the one the proxies are configured to set): a proxy that sets one passes a
//! client's own copy of the other untouched, so reading both would let any client pick its
//! address. Must never trust a header from a peer outside the list.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::HeaderMap;

pub(crate) use crate::config::proxies::{ForwardedHeader, TrustedProxies};

/// The address a request comes from: the TCP peer, unless the peer is a trusted proxy; then
/// the right-most address in the configured header that is not itself a trusted proxy (each
/// proxy appends the address it received the request from, so everything to the left of the
/// first untrusted hop was written by the client and proves nothing). When every hop is
/// trusted, the left-most; when the hop to take is unreadable (`unknown`, an obfuscated
/// identifier, garbage) or the header is absent, the nearest trusted proxy, which is the
/// closest address the node knows.
pub(crate) fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    if trusted.nets.is_empty() || !trusted.contains(peer_ip) {
        return peer_ip;
    }
    let hops = match trusted.header {
        ForwardedHeader::XForwardedFor => forwarded_hops(headers, "x-forwarded-for", xff_hop),
        ForwardedHeader::Forwarded => forwarded_hops(headers, "forwarded", forwarded_hop),
    };
    let mut nearest = peer_ip;
    for hop in hops.iter().rev() {
        let Some(ip) = hop else {
            return nearest;
        };
        if !trusted.contains(*ip) {
            return *ip;
        }
        nearest = *ip;
    }
    nearest
}

/// Every element of every `name` header line, in order; `None` for an unreadable one. A
/// header that is not visible ASCII is one unreadable hop.
fn forwarded_hops(
    headers: &HeaderMap,
    name: &str,
    hop: fn(&str) -> Option<IpAddr>,
) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all(name) {
        let Ok(value) = value.to_str() else {
            hops.push(None);
            continue;
        };
        hops.extend(split_outside_quotes(value, ',').map(hop));
    }
    hops
}

/// `value` split at `sep` except inside double quotes (a `Forwarded` quoted string may hold
/// a comma).
fn split_outside_quotes(value: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&value[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts.into_iter()
}

/// One `X-Forwarded-For` element: an address, optionally with a port (`192.0.2.1:443`,
/// `[2001:db8::1]:443`).
fn xff_hop(element: &str) -> Option<IpAddr> {
    node(element.trim())
}

/// One `Forwarded` element (`for=192.0.2.60;proto=http;by=203.0.113.43`): its `for` node.
/// An element without `for`, or with two, is unreadable.
fn forwarded_hop(element: &str) -> Option<IpAddr> {
    let mut found = None;
    for pair in split_outside_quotes(element, ';') {
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("for") {
            if found.is_some() {
                return None;
            }
            let value = value.trim();
            let value = match value.strip_prefix('"') {
                Some(inner) => inner.strip_suffix('"')?,
                None => value,
            };
            found = Some(node(value)?);
        }
    }
    found
}

/// An RFC 7239 node, also as X-Forwarded-For writes it: `192.0.2.1`, `192.0.2.1:8080`,
/// `[2001:db8::1]`, `[2001:db8::1]:8080`, or a bare IPv6 address. `unknown` and obfuscated
/// identifiers (`_hidden`) are not addresses.
fn node(text: &str) -> Option<IpAddr> {
    let ip = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || port(after.strip_prefix(':')?)) {
            return None;
        }
        IpAddr::V6(inside.parse::<Ipv6Addr>().ok()?)
    } else if let Ok(ip) = text.parse::<IpAddr>() {
        ip
    } else {
        let (host, p) = text.rsplit_once(':')?;
        if !port(p) {
            return None;
        }
        IpAddr::V4(host.parse().ok()?)
    };
    Some(ip.to_canonical())
}

/// A port, or an RFC 7239 obfuscated port (`_abc`).
fn port(text: &str) -> bool {
    text.parse::<u16>().is_ok()
        || (text.starts_with('_')
            && text.len() > 1
            && text[1..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::proxies::parse_net;

    fn trusted(nets: &[&str], header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies {
            nets: nets.iter().map(|n| parse_net(n).unwrap()).collect(),
            header,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const PEER: &str = "10.0.0.5:40000";
    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;
    const FWD: ForwardedHeader = ForwardedHeader::Forwarded;

    fn resolve(t: &TrustedProxies, pairs: &[(&'static str, &str)]) -> IpAddr {
        client_ip(PEER.parse().unwrap(), &headers(pairs), t)
    }

    #[test]
    fn nets_parse_with_and_without_a_prefix() {
        assert_eq!(parse_net("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(
            parse_net(" 192.0.2.7 ").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            parse_net("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(parse_net("::1").unwrap().to_string(), "::1/128");
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0/8",
            "2001:db8::/129",
            "example.com",
            "10.0.0.0/",
        ] {
            assert!(parse_net(bad).is_none(), "{bad}");
        }
        assert_eq!(ForwardedHeader::parse("Forwarded"), Some(FWD));
        assert_eq!(ForwardedHeader::parse("X-Forwarded-For"), Some(XFF));
        assert_eq!(ForwardedHeader::parse("x-real-ip"), None);
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let none = TrustedProxies::default();
        assert_eq!(
            resolve(&none, &[("x-forwarded-for", "198.51.100.7")]),
            ip("10.0.0.5")
        );
        let other = trusted(&["192.0.2.0/24"], XFF);
        assert_eq!(
            resolve(&other, &[("x-forwarded-for", "198.51.100.7")]),
            ip("10.0.0.5")
        );
        // An IPv4-mapped peer is its IPv4 address.
        let mapped: SocketAddr = "[::ffff:10.0.0.5]:1".parse().unwrap();
        assert_eq!(client_ip(mapped, &HeaderMap::new(), &none), ip("10.0.0.5"));
    }

    #[test]
    fn x_forwarded_for_gives_the_right_most_untrusted_hop() {
        let t = trusted(&["10.0.0.0/8"], XFF);
        assert_eq!(
            resolve(&t, &[("x-forwarded-for", "198.51.100.7")]),
            ip("198.51.100.7")
        );
        // The client wrote the left part itself.
        let spoofed = [("x-forwarded-for", "1.1.1.1, 198.51.100.7, 10.0.0.9")];
        assert_eq!(resolve(&t, &spoofed), ip("198.51.100.7"));
        // Several header lines are one list, in order.
        let lines = [
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "198.51.100.7 ,10.1.2.3"),
        ];
        assert_eq!(resolve(&t, &lines), ip("198.51.100.7"));
        // Ports and brackets.
        assert_eq!(
            resolve(&t, &[("x-forwarded-for", "198.51.100.7:4711")]),
            ip("198.51.100.7")
        );
        let v6 = [("x-forwarded-for", "[2001:db8::7]:4711")];
        assert_eq!(resolve(&t, &v6), ip("2001:db8::7"));
        assert_eq!(
            resolve(&t, &[("x-forwarded-for", "2001:db8::7")]),
            ip("2001:db8::7")
        );
        // Every hop trusted: the left-most.
        assert_eq!(
            resolve(&t, &[("x-forwarded-for", "10.9.9.9, 10.0.0.9")]),
            ip("10.9.9.9")
        );
        // No header: the proxy itself.
        assert_eq!(resolve(&t, &[]), ip("10.0.0.5"));
        // The `Forwarded` header is not read when the proxies set X-Forwarded-For.
        assert_eq!(
            resolve(&t, &[("forwarded", "for=198.51.100.9")]),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn garbage_stops_at_the_nearest_trusted_hop() {
        let t = trusted(&["10.0.0.0/8"], XFF);
        for garbage in [
            "unknown",
            "",
            "not an ip",
            "300.1.1.1",
            "1.2.3.4:99999",
            "[::1",
            "_x",
        ] {
            let h = [(
                "x-forwarded-for",
                format!("198.51.100.7, {garbage}, 10.0.0.9"),
            )];
            let h: Vec<(&'static str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert_eq!(resolve(&t, &h), ip("10.0.0.9"), "{garbage}");
        }
        // Garbage to the left of the first untrusted hop does not matter.
        let h = [("x-forwarded-for", "garbage, 198.51.100.7")];
        assert_eq!(resolve(&t, &h), ip("198.51.100.7"));
        // A header that is not ASCII is one unreadable hop.
        let mut map = HeaderMap::new();
        map.append(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"\xff").unwrap(),
        );
        assert_eq!(client_ip(PEER.parse().unwrap(), &map, &t), ip("10.0.0.5"));
    }

    #[test]
    fn forwarded_gives_the_right_most_untrusted_for() {
        let t = trusted(&["10.0.0.0/8", "2001:db8:cafe::/48"], FWD);
        let cases = [
            ("for=198.51.100.7", "198.51.100.7"),
            ("For=\"198.51.100.7\"", "198.51.100.7"),
            ("for=\"198.51.100.7:4711\";proto=https", "198.51.100.7"),
            ("for=\"[2001:db8::17]:4711\"", "2001:db8::17"),
            ("for=\"[2001:db8::17]\";by=10.0.0.1", "2001:db8::17"),
            (
                "proto=https;for=198.51.100.7 ;host=\"a;b,c\"",
                "198.51.100.7",
            ),
            (
                "for=1.1.1.1, for=198.51.100.7;by=x, for=\"[2001:db8:cafe::1]\"",
                "198.51.100.7",
            ),
            ("for=198.51.100.7:_port", "198.51.100.7"),
        ];
        for (value, want) in cases {
            assert_eq!(resolve(&t, &[("forwarded", value)]), ip(want), "{value}");
        }
        // Unreadable hops: the nearest trusted one.
        for value in [
            "for=unknown",
            "for=_hidden",
            "proto=https",
            "for=\"198.51.100.7",
            "for=[2001:db8::17]:x",
            "for=1.1.1.1;for=2.2.2.2",
        ] {
            let h = [("forwarded", value)];
            assert_eq!(resolve(&t, &h), ip("10.0.0.5"), "{value}");
        }
        // X-Forwarded-For is not read when the proxies set Forwarded.
        assert_eq!(
            resolve(&t, &[("x-forwarded-for", "198.51.100.9")]),
            ip("10.0.0.5")
        );
    }
}
