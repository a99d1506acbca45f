//! The account's `proxy`: SOCKS5 (`socks5://`, names resolved here; `socks5h://`, names
//! resolved by the proxy) or HTTP CONNECT (`http://`), for the SMTP connection and the
//! HTTPS requests (token endpoint, Microsoft Graph). TLS and STARTTLS run end to end
//! through the tunnel: the proxy sees the greeting and EHLO, then only ciphertext.
//! Credentials in the URL (`socks5://user:pass@host:port`) are used and never shown: the
//! proxy is always named without them, and the password is registered with `scrub`.
//! A proxy that is down or refuses is a temporary failure (75) that names it. SOCKS5
//! without credentials sends its greeting and CONNECT in one flight (one round trip);
//! with credentials `tokio-socks` does the RFC 1929 exchange.

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::error::{Error, Phase, Result};

/// How the tunnel is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SOCKS5, the destination's name resolved here (RFC 1928).
    Socks5,
    /// SOCKS5, the destination's name sent to the proxy, which resolves it.
    Socks5h,
    /// HTTP `CONNECT host:port` (RFC 9110 §9.3.6).
    HttpConnect,
}

/// A parsed `proxy` value.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    pub kind: Kind,
    pub host: String,
    pub port: u16,
    /// User name and password from the URL (a secret: never shown).
    credentials: Option<(String, String)>,
    /// The URL as written, for reqwest (it holds the credentials).
    url: String,
}

impl fmt::Display for Proxy {
    /// `socks5://host:port`: never the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.kind {
            Kind::Socks5 => "socks5",
            Kind::Socks5h => "socks5h",
            Kind::HttpConnect => "http",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proxy({self})")
    }
}

impl Proxy {
    /// Parses `socks5://[user:pass@]host:port`, `socks5h://…` or `http://…`; the port is
    /// required (msmtp's `proxy_port` has no default either).
    pub fn parse(text: &str) -> std::result::Result<Proxy, String> {
        let url = reqwest::Url::parse(text).map_err(|e| {
            format!("`proxy` is not a URL ({e}): write socks5://HOST:PORT, socks5h://HOST:PORT or http://HOST:PORT")
        })?;
        let kind = match url.scheme() {
            "socks5" => Kind::Socks5,
            "socks5h" => Kind::Socks5h,
            "http" => Kind::HttpConnect,
            other => {
                return Err(format!(
                    "`proxy` scheme `{other}` is not supported: use socks5://, socks5h:// or http://"
                ));
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("`proxy` names no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url
            .port()
            .ok_or("`proxy` names no port: write e.g. socks5://127.0.0.1:1080")?;
        if url.path() != "/" && !url.path().is_empty() || url.query().is_some() {
            return Err("`proxy` must be only scheme://host:port".to_owned());
        }
        let credentials = (!url.username().is_empty()).then(|| {
            let decode = |s: &str| percent_decode(s);
            (decode(url.username()), decode(url.password().unwrap_or("")))
        });
        if let Some((_, password)) = &credentials {
            crate::scrub::register(password);
        }
        Ok(Proxy {
            kind,
            host,
            port,
            credentials,
            url: text.to_owned(),
        })
    }

    /// The same proxy for reqwest: every request of the client goes through it (the
    /// environment's `HTTPS_PROXY` and `NO_PROXY` are then not consulted).
    pub fn for_http(&self) -> Result<reqwest::Proxy> {
        reqwest::Proxy::all(&self.url)
            .map_err(|_| Error::config(format!("`proxy` {self} cannot serve HTTPS requests")))
    }

    /// A TCP connection to `host:port` through the proxy, the tunnel established; within
    /// `wait`. A failure is a network error (temporary) that names the proxy.
    pub async fn connect(&self, host: &str, port: u16, wait: Duration) -> Result<TcpStream> {
        match tokio::time::timeout(wait, self.tunnel(host, port)).await {
            Ok(result) => result,
            Err(_) => Err(Error::network(
                Phase::Connect,
                format!(
                    "proxy {self}: no tunnel to {host}:{port} within {} s",
                    wait.as_secs()
                ),
            )),
        }
    }

    async fn tunnel(&self, host: &str, port: u16) -> Result<TcpStream> {
        let fail = |what: String| Error::network(Phase::Connect, format!("proxy {self}: {what}"));
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| fail(format!("cannot connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        match self.kind {
            Kind::Socks5 | Kind::Socks5h => {
                // socks5:// resolves here (the proxy sees an address), socks5h:// there.
                let target: tokio_socks::TargetAddr<'static> = if self.kind == Kind::Socks5 {
                    let address = tokio::net::lookup_host((host, port))
                        .await
                        .map_err(|e| {
                            Error::network(Phase::Connect, format!("cannot resolve {host}: {e}"))
                        })?
                        .next()
                        .ok_or_else(|| {
                            Error::network(Phase::Connect, format!("{host} has no address"))
                        })?;
                    tokio_socks::TargetAddr::Ip(address)
                } else {
                    tokio_socks::TargetAddr::Domain(host.to_owned().into(), port)
                };
                match &self.credentials {
                    Some((user, password)) => {
                        tokio_socks::tcp::Socks5Stream::connect_with_password_and_socket(
                            tcp, target, user, password,
                        )
                        .await
                        .map(tokio_socks::tcp::Socks5Stream::into_inner)
                        .map_err(|e| fail(format!("refused the tunnel to {host}:{port}: {e}")))
                    }
                    None => self.socks5_pipelined(tcp, &target, host, port).await,
                }
            }
            Kind::HttpConnect => self.http_connect(tcp, host, port).await,
        }
    }

    /// SOCKS5 without authentication in one round trip: the greeting (offering only "no
    /// authentication") and the CONNECT request go in one write, then both replies are read
    /// (RFC 1928 §3, §4, §6). Waiting for the method reply first, as a general client must,
    /// would cost a second round trip on every connection.
    async fn socks5_pipelined(
        &self,
        mut tcp: TcpStream,
        target: &tokio_socks::TargetAddr<'_>,
        host: &str,
        port: u16,
    ) -> Result<TcpStream> {
        let fail = |what: String| {
            Error::network(
                Phase::Connect,
                format!("proxy {self}: refused the tunnel to {host}:{port}: {what}"),
            )
        };
        let mut request = vec![5, 1, 0, 5, 1, 0];
        match target {
            tokio_socks::TargetAddr::Ip(std::net::SocketAddr::V4(a)) => {
                request.push(1);
                request.extend_from_slice(&a.ip().octets());
            }
            tokio_socks::TargetAddr::Ip(std::net::SocketAddr::V6(a)) => {
                request.push(4);
                request.extend_from_slice(&a.ip().octets());
            }
            tokio_socks::TargetAddr::Domain(name, _) => {
                let name = name.as_bytes();
                let len = u8::try_from(name.len())
                    .map_err(|_| fail("the host name is longer than 255 bytes".to_owned()))?;
                request.push(3);
                request.push(len);
                request.extend_from_slice(name);
            }
        }
        request.extend_from_slice(&port.to_be_bytes());
        tcp.write_all(&request)
            .await
            .map_err(|e| fail(format!("cannot write: {e}")))?;
        let mut head = [0u8; 2];
        tcp.read_exact(&mut head)
            .await
            .map_err(|e| fail(format!("no answer to the greeting: {e}")))?;
        if head != [5, 0] {
            return Err(fail(format!(
                "it wants an authentication method we did not offer ({:#04x}); put                  USER:PASSWORD@ in the proxy URL",
                head[1]
            )));
        }
        let mut reply = [0u8; 4];
        tcp.read_exact(&mut reply)
            .await
            .map_err(|e| fail(format!("no answer to CONNECT: {e}")))?;
        if reply[0] != 5 || reply[1] != 0 {
            return Err(fail(socks5_reply_text(reply[1]).to_owned()));
        }
        // The bound address: skip it.
        let skip = match reply[3] {
            1 => 4 + 2,
            4 => 16 + 2,
            3 => {
                let mut len = [0u8; 1];
                tcp.read_exact(&mut len)
                    .await
                    .map_err(|e| fail(format!("a truncated reply: {e}")))?;
                usize::from(len[0]) + 2
            }
            other => {
                return Err(fail(format!(
                    "an unknown address type {other} in its reply"
                )));
            }
        };
        let mut rest = vec![0u8; skip];
        tcp.read_exact(&mut rest)
            .await
            .map_err(|e| fail(format!("a truncated reply: {e}")))?;
        Ok(tcp)
    }

    /// `CONNECT host:port HTTP/1.1`, then the proxy's reply head (bounded): a 2xx opens
    /// the tunnel; anything else is a refusal, named with its status line.
    async fn http_connect(&self, mut tcp: TcpStream, host: &str, port: u16) -> Result<TcpStream> {
        let fail = |what: String| Error::network(Phase::Connect, format!("proxy {self}: {what}"));
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some((user, password)) = &self.credentials {
            use base64::Engine as _;
            let basic =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            crate::scrub::register(&basic);
            request = format!("{request}Proxy-Authorization: Basic {basic}\r\n");
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| fail(format!("cannot send CONNECT: {e}")))?;
        // Byte by byte up to the blank line: nothing of the tunnel's first bytes (the
        // server's greeting) may be swallowed.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_HEAD {
                return Err(fail("its reply to CONNECT is too long".to_owned()));
            }
            let mut byte = [0u8; 1];
            match tcp.read(&mut byte).await {
                Ok(0) => return Err(fail("closed the connection after CONNECT".to_owned())),
                Ok(_) => head.push(byte[0]),
                Err(e) => return Err(fail(format!("cannot read its reply to CONNECT: {e}"))),
            }
        }
        let text = String::from_utf8_lossy(&head);
        let status_line = text.lines().next().unwrap_or("");
        let code = status_line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok());
        match code {
            Some(200..=299) => Ok(tcp),
            _ => Err(fail(format!(
                "refused the tunnel to {authority}: {}",
                crate::scrub::for_output(status_line, 200)
            ))),
        }
    }
}

/// RFC 1928 §6's reply codes.
fn socks5_reply_text(code: u8) -> &'static str {
    match code {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "an unknown SOCKS5 reply",
    }
}

/// The longest reply head to CONNECT we read (bytes).
const MAX_HEAD: usize = 8192;

/// `%40` → `@` in a URL's user name or password.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_schemes_parse_and_show_no_credentials() {
        let p = Proxy::parse("socks5://bob:s%40cret@127.0.0.1:1080").unwrap();
        assert_eq!(
            (p.kind, p.host.as_str(), p.port),
            (Kind::Socks5, "127.0.0.1", 1080)
        );
        assert_eq!(p.credentials, Some(("bob".to_owned(), "s@cret".to_owned())));
        assert_eq!(p.to_string(), "socks5://127.0.0.1:1080");
        assert!(!format!("{p:?}").contains("cret"));
        assert_eq!(
            Proxy::parse("socks5h://proxy.example:9050").unwrap().kind,
            Kind::Socks5h
        );
        let h = Proxy::parse("http://[::1]:3128").unwrap();
        assert_eq!((h.kind, h.host.as_str()), (Kind::HttpConnect, "::1"));
        assert_eq!(h.to_string(), "http://[::1]:3128");
    }

    #[test]
    fn a_proxy_without_port_or_with_another_scheme_is_refused() {
        for (bad, says) in [
            ("socks5://127.0.0.1", "no port"),
            ("https://proxy:443", "not supported"),
            ("socks4://proxy:1080", "not supported"),
            ("127.0.0.1:1080", "not a URL"),
            ("http://proxy:3128/path", "only scheme://host:port"),
        ] {
            let e = Proxy::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
