//! SIP over TCP and TLS (RFC 3261 §18): one task per connection frames the byte stream with
//! Content-Length ([`StreamFramer`]) and hands whole messages to the endpoint; the endpoint
//! writes through a bounded queue per connection. TLS uses rustls 0.23 (aws-lc-rs) with
//! certificate verification against the trunk's CA file or the system bundle.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::sip::message::{Framed, Message, Rejection, StreamFramer};
use crate::sip::transaction::Transport;

/// The system CA bundle on Debian.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Messages one connection may have waiting to be written.
pub const CONN_QUEUE: usize = 256;
/// How long a connection attempt (TCP and TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a connection task tells the endpoint.
#[derive(Debug)]
pub enum StreamEvent {
    /// A complete message.
    Message {
        /// Peer.
        from: SocketAddr,
        /// TCP or TLS.
        transport: Transport,
        /// The message.
        message: Box<Message>,
    },
    /// A malformed message (answered on the same connection when possible).
    Rejected {
        /// Peer.
        from: SocketAddr,
        /// What the parser decided.
        rejection: Rejection,
    },
    /// A CRLF CRLF keepalive ping (RFC 5626 §3.5.1): answer with CRLF.
    Ping {
        /// Peer.
        from: SocketAddr,
    },
    /// The connection is gone.
    Closed {
        /// Peer.
        from: SocketAddr,
    },
}

/// How to reach a TLS peer.
#[derive(Debug, Clone)]
pub struct TlsPeer {
    /// The name its certificate must carry (a DNS name or an IP address).
    pub name: ServerName<'static>,
    /// Client configuration with the trust roots.
    pub config: Arc<rustls::ClientConfig>,
}

/// Why TLS could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum StreamTlsError {
    /// The CA file could not be read or holds no certificate.
    #[error("CA file {0}: {1}")]
    Ca(String, String),
    /// The host is not a valid TLS server name.
    #[error("{0:?} is not a valid TLS server name")]
    Name(String),
}

/// A TLS client configuration trusting the certificates in `ca_file` (PEM), or the system
/// bundle when absent.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, StreamTlsError> {
    let path = ca_file.unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
    let shown = path.display().to_string();
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| StreamTlsError::Ca(shown.clone(), e.to_string()))?;
    for c in certs {
        let c = c.map_err(|e| StreamTlsError::Ca(shown.clone(), e.to_string()))?;
        roots
            .add(c)
            .map_err(|e| StreamTlsError::Ca(shown.clone(), e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(StreamTlsError::Ca(shown, "no certificates".into()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StreamTlsError::Ca(shown, e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A server name for `host` (IP addresses are matched against the certificate's IP SANs).
pub fn server_name(host: &str) -> Result<ServerName<'static>, StreamTlsError> {
    ServerName::try_from(host.to_owned()).map_err(|_| StreamTlsError::Name(host.to_owned()))
}

/// Connects to `to` (TLS when `tls` is given) and runs the connection until it closes.
pub async fn connect(
    to: SocketAddr,
    tls: Option<TlsPeer>,
    writes: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Sender<StreamEvent>,
) {
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            log::warn!(peer:% = to, error:% = e; "SIP connection failed");
            let _ = events.send(StreamEvent::Closed { from: to }).await;
            return;
        }
        Err(_) => {
            log::warn!(peer:% = to; "SIP connection timed out");
            let _ = events.send(StreamEvent::Closed { from: to }).await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    match tls {
        None => run(tcp, to, Transport::Tcp, writes, events).await,
        Some(peer) => {
            let connector = tokio_rustls::TlsConnector::from(peer.config);
            match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(peer.name, tcp)).await {
                Ok(Ok(s)) => run(s, to, Transport::Tls, writes, events).await,
                Ok(Err(e)) => {
                    log::warn!(peer:% = to, error:% = e; "SIP TLS handshake failed");
                    let _ = events.send(StreamEvent::Closed { from: to }).await;
                }
                Err(_) => {
                    log::warn!(peer:% = to; "SIP TLS handshake timed out");
                    let _ = events.send(StreamEvent::Closed { from: to }).await;
                }
            }
        }
    }
}

/// Reads and frames messages from `stream` and writes what arrives on `writes`, until either
/// side ends; then tells the endpoint.
pub async fn run<S>(
    stream: S,
    from: SocketAddr,
    transport: Transport,
    mut writes: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Sender<StreamEvent>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let mut framer = StreamFramer::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            n = r.read(&mut buf) => {
                let n = match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                framer.push(&buf[..n]);
                while let Some(item) = framer.next_item() {
                    let ev = match item {
                        Framed::Message(message) => StreamEvent::Message { from, transport, message },
                        Framed::Rejected(rejection) => StreamEvent::Rejected { from, rejection },
                        Framed::Ping => StreamEvent::Ping { from },
                    };
                    if events.send(ev).await.is_err() {
                        return;
                    }
                }
            }
            out = writes.recv() => match out {
                Some(bytes) => {
                    if w.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    let _ = w.shutdown().await;
    let _ = events.send(StreamEvent::Closed { from }).await;
}
