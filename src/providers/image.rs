//! Fetching a caller-supplied image URL without reaching our own network (SSRF).
//!
//! Image URLs come from callers (Vapi tool arguments). Checking a host and then letting the HTTP
//! client resolve it again is a race a DNS answer with a zero TTL wins (the second lookup points
//! at 169.254.169.254). So the image client resolves names through [`PublicResolver`], which
//! refuses the whole answer when any address is not public, and connects only to the addresses
//! it checked; IP literals (every spelling: `127.1`, `2130706433`, `0x7f000001`,
//! `[::ffff:127.0.0.1]`, which URL parsing normalizes) are checked before the request. The client
//! follows no redirects and uses no proxy from the environment.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::{CONNECT_TIMEOUT, IMAGE_TIMEOUT, ProviderError, classify_reqwest, read_limited};

const PROVIDER: &str = "image";

/// Why a URL was refused: its host is (or resolves to) a non-public address.
#[derive(Debug, thiserror::Error)]
#[error("the URL points at a non-public address")]
pub struct NonPublicAddress;

/// Whether `ip` is an ordinary public unicast address. Refused: loopback, private, link-local,
/// CGNAT (100.64/10), multicast, broadcast, 0.0.0.0/8, 240/4, documentation and benchmarking
/// ranges; in IPv6 also unique-local, site-local, multicast, discard-only, documentation, and
/// every form that embeds an IPv4 address whatever IPv4 it carries ([`EMBEDS_V4`]: mapped,
/// translated, compatible, NAT64, 6to4, Teredo).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    !(a == 0 // "this network", 0.0.0.0/8
        || v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_multicast()
        || v4.is_documentation()
        || a >= 240 // reserved, and 255.255.255.255
        || (a == 100 && (b & 0xc0) == 64) // CGNAT 100.64/10
        || (a == 192 && b == 0 && v4.octets()[2] == 0) // IETF protocol assignments 192.0.0/24
        || (a == 198 && (b & 0xfe) == 18)) // benchmarking 198.18/15
}

/// IPv6 prefixes that carry an IPv4 address, refused outright whatever that address is: none is
/// ever a legitimate image host, and judging by the embedded IPv4 would leave one translation
/// mechanism or another to get it wrong. `(prefix, length in bits)`.
const EMBEDS_V4: [(Ipv6Addr, u32); 7] = [
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96), // IPv4-compatible ::a.b.c.d (:: and ::1 too)
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96), // IPv4-mapped ::ffff:a.b.c.d
    (Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0, 0), 96), // IPv4-translated ::ffff:0:a.b.c.d (SIIT)
    (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96), // NAT64 well-known prefix
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // NAT64 local-use prefix
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16), // 6to4
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32), // Teredo
];

/// Whether `v6` lies in one of [`EMBEDS_V4`]'s prefixes.
fn embeds_v4(v6: Ipv6Addr) -> bool {
    let bits = u128::from(v6);
    EMBEDS_V4.iter().any(|&(prefix, len)| {
        let mask = u128::MAX << (128 - len);
        bits & mask == u128::from(prefix) & mask
    })
}

fn is_public_v6(v6: Ipv6Addr) -> bool {
    let s = v6.segments();
    !(v6.is_loopback()
        || v6.is_unspecified()
        || embeds_v4(v6)
        || v6.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10
        || (s[0] == 0x64 && s[1] == 0xff9b) // all of 64:ff9b::/32 (NAT64's and reserved)
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
        || (s[0] == 0x100 && s[1..4] == [0; 3])) // discard-only 100::/64
}

/// A DNS resolver that answers only with public addresses: if any address of a name is not
/// public, the whole lookup fails (a mixed answer is how rebinding hides).
#[derive(Debug, Default, Clone, Copy)]
pub struct PublicResolver;

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err("the image host has no address".into());
            }
            if addrs.iter().any(|a| !is_public(a.ip())) {
                return Err(Box::new(NonPublicAddress) as Box<dyn std::error::Error + Send + Sync>);
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// An HTTP client for URLs someone outside gave us (an image, an agency's webhook endpoint):
/// public addresses only, checked on the one resolution it connects with; no redirects, no
/// proxy from the environment.
#[derive(Debug, Clone)]
pub struct PublicOnly {
    pub http: reqwest::Client,
    /// Private addresses allowed (tests and demos on loopback; refused in production by config).
    pub allow_private: bool,
}

impl PublicOnly {
    pub fn new(timeout: std::time::Duration, allow_private: bool) -> PublicOnly {
        let builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("agent-meter/", env!("CARGO_PKG_VERSION")));
        let builder = if allow_private {
            builder
        } else {
            builder.dns_resolver(Arc::new(PublicResolver))
        };
        PublicOnly {
            // Building fails only when TLS cannot initialize; a plain client then still refuses
            // nothing it should not reach, because `check` refuses every URL without the resolver.
            http: builder.build().unwrap_or_default(),
            allow_private,
        }
    }

    /// `url` parsed, when its scheme is one of `schemes` and its host (an IP literal, in any
    /// spelling URL parsing normalizes) is public; the reason otherwise (never the URL).
    pub fn check(&self, url: &str, schemes: &[&str]) -> Result<reqwest::Url, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
        if !schemes.contains(&url.scheme()) {
            return Err(format!("the URL must be {}", schemes.join(" or ")));
        }
        if !self.allow_private {
            let literal = match url.host() {
                Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
                Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
                Some(url::Host::Domain(_)) => None,
                None => return Err("the URL has no host".into()),
            };
            if literal.is_some_and(|ip| !is_public(ip)) {
                return Err(NonPublicAddress.to_string());
            }
        }
        Ok(url)
    }

    /// Sends `request`; a host that resolved to a non-public address is permanent.
    pub async fn send(
        &self,
        provider: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ProviderError> {
        request.send().await.map_err(|e| {
            if refused_address(&e) {
                ProviderError::permanent(provider, NonPublicAddress.to_string())
            } else {
                classify_reqwest(provider, e)
            }
        })
    }
}

/// The client for caller-supplied image URLs.
#[derive(Debug, Clone)]
pub struct ImageFetcher {
    client: PublicOnly,
}

impl ImageFetcher {
    pub fn new(allow_private: bool) -> ImageFetcher {
        ImageFetcher {
            client: PublicOnly::new(IMAGE_TIMEOUT, allow_private),
        }
    }

    /// GETs the image at `url` (at most `max_bytes`): the bytes and the mime type (Content-Type,
    /// default `image/jpeg`). A non-public address, a bad URL, over the cap, an empty body, a
    /// non-image Content-Type or a 4xx is permanent; 408/429/5xx and network errors are
    /// transient. The URL never appears in errors (it may be signed).
    pub async fn fetch(
        &self,
        url: &str,
        max_bytes: usize,
    ) -> Result<(Vec<u8>, String), ProviderError> {
        let url = self
            .client
            .check(url, &["http", "https"])
            .map_err(|e| ProviderError::permanent(PROVIDER, format!("image: {e}")))?;
        let request = self
            .client
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "image/*");
        let response = self.client.send(PROVIDER, request).await?;
        if !response.status().is_success() {
            return Err(super::status_error(PROVIDER, response).await);
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty());
        let mime = match content_type.as_deref() {
            None | Some("application/octet-stream" | "binary/octet-stream") => "image/jpeg".into(),
            Some(m) if m.starts_with("image/") => m.to_string(),
            Some(other) => {
                return Err(ProviderError::permanent(
                    PROVIDER,
                    format!("not an image: Content-Type {other}"),
                ));
            }
        };
        let bytes = read_limited(PROVIDER, response, max_bytes).await?;
        if bytes.is_empty() {
            return Err(ProviderError::permanent(PROVIDER, "empty image"));
        }
        Ok((bytes, mime))
    }
}

/// Whether a request failed because [`PublicResolver`] refused its host.
fn refused_address(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<NonPublicAddress>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn only_ordinary_public_unicast_is_public() {
        for refused in [
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.0.170",
            "198.18.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001::1",
            "2001:db8::1",
            "2002:a9fe:a9fe::1",
            "100::1",
        ] {
            assert!(!is_public(ip(refused)), "{refused} must be refused");
        }
        // Every IPv6 form that embeds an IPv4 address is refused, whether the IPv4 inside is
        // private (169.254.169.254, 10.0.0.1, 127.0.0.1) or public (8.8.8.8).
        for embedded in [
            // IPv4-mapped, ::ffff:0:0/96
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::ffff:808:808",
            // IPv4-translated, ::ffff:0:0:0/96
            "::ffff:0:127.0.0.1",
            "::ffff:0:a9fe:a9fe",
            "::ffff:0:8.8.8.8",
            // IPv4-compatible, ::/96
            "::10.0.0.1",
            "::8.8.8.8",
            "::a9fe:a9fe",
            // NAT64, 64:ff9b::/96 and 64:ff9b:1::/48
            "64:ff9b::127.0.0.1",
            "64:ff9b::8.8.8.8",
            "64:ff9b:1::a00:1",
            "64:ff9b:1:ffff::808:808",
            // 6to4, 2002::/16 (the IPv4 in bits 16-48)
            "2002:7f00:1::1",
            "2002:808:808::1",
            "2002:ffff:ffff:ffff::1",
            // Teredo, 2001::/32 (the server's IPv4 in bits 32-64, the client's obfuscated)
            "2001:0:a9fe:a9fe::1",
            "2001:0:808:808:8000:f227:f7f7:f7f7",
            "2001:0:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            assert!(!is_public(ip(embedded)), "{embedded} must be refused");
        }
        // Just outside those prefixes is ordinary address space.
        for outside in ["2001:4860:4860::8888", "2003::1", "2a02:2e0::1"] {
            assert!(is_public(ip(outside)), "{outside} is not an embedding form");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "2606:4700::1111",
            "2a00:1450::1",
        ] {
            assert!(is_public(ip(public)), "{public} is public");
        }
    }
}
