//! One HTTPS connection as the load generator uses it: TCP with `TCP_NODELAY`, TLS trusting the
//! vault's CA only, HTTP/1.1 keep-alive, one request at a time. No pool sits in between, so what
//! is measured is the server plus the cost of one client connection.

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::HeaderValue;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The scheme, host and port of a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Host as written in the URL (an IPv6 literal keeps its brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Origin {
    /// `host:port`, for the Host header.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The host without IPv6 brackets, for name resolution and TLS.
    pub fn bare_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// Splits `https://host[:port][/path[?query]]` into its origin and its path (`/` when absent).
pub fn split_url(url: &str) -> Result<(Origin, String)> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| anyhow!("{url} is not an https:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => {
            let port = authority[i + 1..]
                .parse::<u16>()
                .with_context(|| format!("{url} has an invalid port"))?;
            (&authority[..i], port)
        }
        _ => (authority, 443),
    };
    if host.is_empty() {
        bail!("{url} has no host");
    }
    Ok((
        Origin {
            host: host.to_owned(),
            port,
        },
        path.to_owned(),
    ))
}

/// Opens connections to one origin.
#[derive(Clone)]
pub struct Connector {
    tls: TlsConnector,
    server_name: ServerName<'static>,
    addrs: Arc<[SocketAddr]>,
    authority: HeaderValue,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("server_name", &self.server_name)
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Resolves `origin` and prepares TLS trusting the PEM certificates in `ca_pem` only.
    pub async fn new(origin: &Origin, ca_pem: &[u8]) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots
                .add(cert.context("the CA file holds an invalid certificate")?)
                .context("the CA certificate is not usable")?;
        }
        if roots.is_empty() {
            bail!("the CA file holds no certificate");
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = ServerName::try_from(origin.bare_host().to_owned())
            .with_context(|| format!("{} is not a valid TLS server name", origin.host))?;
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((origin.bare_host(), origin.port))
            .await
            .with_context(|| format!("cannot resolve {}", origin.host))?
            .collect();
        if addrs.is_empty() {
            bail!("{} resolves to no address", origin.host);
        }
        Ok(Connector {
            tls: TlsConnector::from(Arc::new(config)),
            server_name,
            addrs: addrs.into(),
            authority: HeaderValue::from_str(&origin.authority())?,
        })
    }

    /// The Host header value.
    pub fn authority(&self) -> &HeaderValue {
        &self.authority
    }

    /// Opens a connection: the first resolved address that accepts, then the TLS handshake.
    pub async fn connect(&self) -> Result<Connection> {
        let mut last_error = None;
        let mut tcp = None;
        for addr in self.addrs.iter() {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last_error = Some(anyhow!("cannot connect to {addr}: {e}")),
            }
        }
        let tcp = match tcp {
            Some(t) => t,
            None => return Err(last_error.unwrap_or_else(|| anyhow!("no address to connect to"))),
        };
        tcp.set_nodelay(true)?;
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .context("TLS handshake failed")?;
        let (sender, driver) = http1::handshake(TokioIo::new(tls)).await?;
        Ok(Connection {
            sender,
            driver: Some(driver),
        })
    }
}

type Driver = http1::Connection<TokioIo<TlsStream<TcpStream>>, Full<Bytes>>;

/// An open HTTP/1.1 connection.
#[derive(Debug)]
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    /// The future that does the connection's IO, polled only while a request is in flight
    /// (nothing arrives unasked on an HTTP/1.1 client connection); `None` once it has ended.
    driver: Option<Driver>,
}

impl Connection {
    /// Whether the connection can take another request.
    pub fn is_open(&self) -> bool {
        self.driver.is_some()
    }

    /// Sends `request` and reads the whole response. Any failure leaves the connection unusable:
    /// open a new one.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes)> {
        let Some(driver) = self.driver.as_mut() else {
            bail!("the connection is closed");
        };
        let sender = &mut self.sender;
        let exchange = async {
            sender.ready().await.context("the connection is closed")?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        tokio::pin!(exchange);
        tokio::select! {
            biased;
            outcome = &mut exchange => outcome,
            ended = driver => {
                self.driver = None;
                // A response may have been delivered just before the end (`Connection: close`):
                // with the driver gone, the exchange finishes at once, with it or with an error.
                exchange.await.map_err(|e| match ended {
                    Ok(()) => e.context("the server closed the connection"),
                    Err(ended) => e.context(format!("the connection failed: {ended}")),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        let (o, p) = split_url("https://localhost:8443/t/oauth2/v2.0/token").unwrap();
        assert_eq!(o.host, "localhost");
        assert_eq!(o.port, 8443);
        assert_eq!(p, "/t/oauth2/v2.0/token");
        let (o, p) = split_url("https://[::1]:9000").unwrap();
        assert_eq!(o.bare_host(), "::1");
        assert_eq!(o.authority(), "[::1]:9000");
        assert_eq!(p, "/");
        let (o, _) = split_url("https://vault.example").unwrap();
        assert_eq!(o.port, 443);
        assert!(split_url("http://localhost:1").is_err());
        assert!(split_url("https://localhost:x").is_err());
    }
}
