//! `server.trusted_proxies` and `server.forwarded_header` as data: which peers may name the
//! client, and in which header. Reading the header of a request is `server::client`'s.

use std::net::IpAddr;

use ipnet::IpNet;

/// Which header the trusted proxies write the client's address into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

impl ForwardedHeader {
    /// The config spelling: `x-forwarded-for` or `forwarded`.
    pub(crate) fn parse(value: &str) -> Option<ForwardedHeader> {
        match value.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Some(ForwardedHeader::XForwardedFor),
            "forwarded" => Some(ForwardedHeader::Forwarded),
            _ => None,
        }
    }
}

/// `server.trusted_proxies` and `server.forwarded_header`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrustedProxies {
    pub(crate) nets: Vec<IpNet>,
    pub(crate) header: ForwardedHeader,
}

impl Default for TrustedProxies {
    /// Nobody is trusted: the client is always the TCP peer.
    fn default() -> Self {
        TrustedProxies {
            nets: Vec::new(),
            header: ForwardedHeader::XForwardedFor,
        }
    }
}

impl TrustedProxies {
    /// Whether `ip` is one of the trusted proxies (an IPv4-mapped IPv6 address counts as its
    /// IPv4 address).
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }
}

/// One `server.trusted_proxies` entry: `a.b.c.d/n`, `v6::/n`, or a bare address (one host).
pub(crate) fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    if text.contains('/') {
        text.parse().ok()
    } else {
        text.parse::<IpAddr>().ok().map(IpNet::from)
    }
}
