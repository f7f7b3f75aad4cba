//! The admin API's front door: accepts TCP connections, terminates TLS with rustls 0.23 when
//! configured, enforces HTTP limits, and forwards each request to tiny_http on a private Unix
//! socket.
//!
//! Why a front: tiny_http's own TLS feature pulls an old rustls and ring (a second crypto stack),
//! and tiny_http reads header lines without any size limit. The front gives one TLS stack, and
//! every request is framed here first: the request line and headers must fit in
//! `admin.max_header_bytes` (else 431), bodies need a `Content-Length` (411) within
//! `admin.max_body_bytes` (413), a slow or idle client is cut off after `admin.idle_timeout_secs`,
//! and at most `admin.max_connections` connections are served at once. The front adds an
//! `X-Vaultcall-Peer` header with the client's address (any such header from the client is
//! dropped), which is how the API rate-limits failed logins per address.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::telemetry::metrics::{self, Counter, Family, Gauge};

/// The header carrying the client address to the API handlers.
pub const PEER_HEADER: &str = "X-Vaultcall-Peer";
/// Most headers in one request.
const MAX_HEADERS: usize = 64;

/// Limits that SIGHUP may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrontLimits {
    /// Request line plus headers.
    pub max_header_bytes: usize,
    /// Request body.
    pub max_body_bytes: usize,
    /// Idle and slow-client timeout.
    pub idle_timeout: Duration,
}

struct FrontMetrics {
    accepted: Arc<Counter>,
    active: Arc<Gauge>,
    rejected: Arc<Family<Counter>>,
    tls_failures: Arc<Counter>,
}

impl FrontMetrics {
    fn register() -> Self {
        let r = metrics::global();
        Self {
            accepted: r
                .counter(
                    "vaultcall_admin_connections_total",
                    "Admin connections accepted.",
                    &[],
                )
                .with(&[]),
            active: r
                .gauge(
                    "vaultcall_admin_connections_active",
                    "Admin connections open now.",
                    &[],
                )
                .with(&[]),
            rejected: r.counter(
                "vaultcall_admin_requests_rejected_total",
                "Requests refused by the front before reaching the API, by reason.",
                &["reason"],
            ),
            tls_failures: r
                .counter(
                    "vaultcall_admin_tls_handshake_failures_total",
                    "TLS handshakes that failed or timed out.",
                    &[],
                )
                .with(&[]),
        }
    }
}

/// The front, bound and ready to run.
pub struct Front {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    upstream: PathBuf,
    limits: Arc<RwLock<FrontLimits>>,
    max_connections: usize,
}

/// Why a connection stopped forwarding requests.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Client closed, went idle, or the daemon is draining.
    Done,
    /// The request broke a rule; answer with this status and close.
    Reject(u16, &'static str, &'static str),
}

impl Front {
    /// Wraps a bound listener. `upstream` is tiny_http's Unix socket.
    pub fn new(
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        upstream: PathBuf,
        limits: Arc<RwLock<FrontLimits>>,
        max_connections: usize,
    ) -> Self {
        Self {
            listener,
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            upstream,
            limits,
            max_connections,
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` turns true, then stops accepting and lets open connections finish
    /// the request in progress. Returns when every connection is closed.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let m = Arc::new(FrontMetrics::register());
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let mut conns = JoinSet::new();
        loop {
            if *stop.borrow() {
                break;
            }
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = stop.changed() => break,
            };
            let (tcp, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        log::warn!(error:% = e; "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.changed() => break,
            };
            let _ = tcp.set_nodelay(true);
            m.accepted.inc();
            let limits = *self.limits.read().unwrap_or_else(|p| p.into_inner());
            let upstream = self.upstream.clone();
            let tls = self.tls.clone();
            let stop = stop.clone();
            let m = m.clone();
            conns.spawn(async move {
                m.active.add(1);
                match tls {
                    None => serve_conn(tcp, peer, upstream, limits, stop, &m).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(limits.idle_timeout, acceptor.accept(tcp)).await
                        {
                            Ok(Ok(stream)) => {
                                serve_conn(stream, peer, upstream, limits, stop, &m).await
                            }
                            Ok(Err(e)) => {
                                m.tls_failures.inc();
                                log::debug!(error:% = e; "admin TLS handshake failed");
                            }
                            Err(_) => {
                                m.tls_failures.inc();
                                log::debug!("admin TLS handshake timed out");
                            }
                        }
                    }
                }
                m.active.add(-1);
                drop(permit);
            });
            while conns.try_join_next().is_some() {}
        }
        drop(self.listener);
        while conns.join_next().await.is_some() {}
    }
}

async fn serve_conn<S>(
    stream: S,
    peer: SocketAddr,
    upstream: PathBuf,
    limits: FrontLimits,
    stop: watch::Receiver<bool>,
    m: &FrontMetrics,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (cr, mut cw) = tokio::io::split(stream);
    let up = match UnixStream::connect(&upstream).await {
        Ok(u) => u,
        Err(e) => {
            log::error!(error:% = e; "admin front cannot reach the API socket");
            let _ = cw
                .write_all(&error_response(
                    503,
                    "unavailable",
                    "the API is not available",
                ))
                .await;
            let _ = cw.shutdown().await;
            return;
        }
    };
    let (mut ur, uw) = up.into_split();
    let forward = client_to_upstream(cr, uw, peer, limits, stop);
    let back = async move {
        let _ = tokio::io::copy(&mut ur, &mut cw).await;
        cw
    };
    tokio::pin!(forward);
    tokio::pin!(back);
    tokio::select! {
        outcome = &mut forward => {
            // The upstream write side is shut; tiny_http answers what it has and closes.
            if let Ok(mut cw) = tokio::time::timeout(limits.idle_timeout, &mut back).await {
                if let Outcome::Reject(status, code, message) = outcome {
                    m.rejected.with(&[code]).inc();
                    let _ = cw.write_all(&error_response(status, code, message)).await;
                }
                let _ = cw.shutdown().await;
            }
        }
        mut cw = &mut back => {
            // tiny_http closed the connection (Connection: close, or an error).
            let _ = cw.shutdown().await;
        }
    }
}

/// Reads requests from the client, checks them, and forwards them one by one.
async fn client_to_upstream<R>(
    mut cr: R,
    mut uw: tokio::net::unix::OwnedWriteHalf,
    peer: SocketAddr,
    limits: FrontLimits,
    mut stop: watch::Receiver<bool>,
) -> Outcome
where
    R: AsyncRead + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let outcome = 'conn: loop {
        // 1. The head: request line and headers.
        let (head, body_len) = loop {
            match frame_head(&buf, peer, limits) {
                Ok(Some((head, consumed, body_len))) => {
                    buf.drain(..consumed);
                    break (head, body_len);
                }
                Ok(None) => {}
                Err(reject) => break 'conn reject,
            }
            if buf.len() > limits.max_header_bytes {
                break 'conn Outcome::Reject(
                    431,
                    "header_too_large",
                    "request line and headers are too large",
                );
            }
            if buf.is_empty() && *stop.borrow() {
                break 'conn Outcome::Done;
            }
            let read = tokio::select! {
                r = tokio::time::timeout(limits.idle_timeout, cr.read_buf(&mut buf)) => r,
                _ = stop.changed(), if buf.is_empty() => break 'conn Outcome::Done,
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => break 'conn Outcome::Done,
                Ok(Ok(_)) => {}
                Err(_) if buf.is_empty() => break 'conn Outcome::Done,
                Err(_) => {
                    break 'conn Outcome::Reject(
                        408,
                        "timeout",
                        "the request was not completed in time",
                    );
                }
            }
        };
        if uw.write_all(&head).await.is_err() {
            break Outcome::Done;
        }
        // 2. The body: exactly Content-Length bytes.
        let mut remaining = body_len;
        loop {
            let n = remaining.min(buf.len());
            if n > 0 {
                if uw.write_all(&buf[..n]).await.is_err() {
                    break 'conn Outcome::Done;
                }
                buf.drain(..n);
                remaining -= n;
            }
            if remaining == 0 {
                break;
            }
            match tokio::time::timeout(limits.idle_timeout, cr.read_buf(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break 'conn Outcome::Done,
                Ok(Ok(_)) => {}
                Err(_) => {
                    break 'conn Outcome::Reject(
                        408,
                        "timeout",
                        "the request body was not completed in time",
                    );
                }
            }
        }
    };
    let _ = uw.shutdown().await;
    outcome
}

/// Parses one request head from `buf`. `Ok(None)`: need more bytes. `Ok(Some((head, consumed,
/// body_len)))`: the head to forward (with the peer header), how many bytes of `buf` it used,
/// and the body length.
fn frame_head(
    buf: &[u8],
    peer: SocketAddr,
    limits: FrontLimits,
) -> Result<Option<(Vec<u8>, usize, usize)>, Outcome> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Outcome::Reject(
                431,
                "header_too_large",
                "too many header fields",
            ));
        }
        Err(_) => {
            return Err(Outcome::Reject(
                400,
                "bad_request",
                "malformed HTTP request",
            ));
        }
    };
    if consumed > limits.max_header_bytes {
        return Err(Outcome::Reject(
            431,
            "header_too_large",
            "request line and headers are too large",
        ));
    }
    if !buf[..consumed].is_ascii() {
        // tiny_http drops such requests without an answer; say why instead.
        return Err(Outcome::Reject(
            400,
            "bad_request",
            "request line and headers must be ASCII; percent-encode the URL",
        ));
    }
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(Outcome::Reject(
            400,
            "bad_request",
            "malformed HTTP request",
        ));
    };
    let mut body_len: Option<usize> = None;
    let mut out = Vec::with_capacity(consumed + 64);
    out.extend_from_slice(format!("{method} {path} HTTP/1.{version}\r\n").as_bytes());
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case(PEER_HEADER) {
            continue;
        }
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Outcome::Reject(
                411,
                "length_required",
                "send the body with a Content-Length header",
            ));
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok());
            match (v, body_len) {
                (None, _) => {
                    return Err(Outcome::Reject(
                        400,
                        "bad_request",
                        "invalid Content-Length",
                    ));
                }
                (Some(a), Some(b)) if a != b => {
                    return Err(Outcome::Reject(
                        400,
                        "bad_request",
                        "conflicting Content-Length headers",
                    ));
                }
                (Some(a), _) => body_len = Some(a),
            }
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    let body_len = body_len.unwrap_or(0);
    if body_len > limits.max_body_bytes {
        return Err(Outcome::Reject(
            413,
            "body_too_large",
            "the request body is too large",
        ));
    }
    out.extend_from_slice(format!("{PEER_HEADER}: {peer}\r\n\r\n").as_bytes());
    Ok(Some((out, consumed, body_len)))
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// A complete HTTP/1.1 error response in the API's JSON shape, closing the connection.
fn error_response(status: u16, code: &str, message: &str) -> Vec<u8> {
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> FrontLimits {
        FrontLimits {
            max_header_bytes: 1024,
            max_body_bytes: 100,
            idle_timeout: Duration::from_secs(5),
        }
    }

    fn peer() -> SocketAddr {
        "192.0.2.7:4242".parse().unwrap()
    }

    #[test]
    fn head_gets_peer_header_and_spoofed_one_is_dropped() {
        let raw = b"POST /api/v1/tokens HTTP/1.1\r\nHost: x\r\nX-Vaultcall-Peer: 1.2.3.4:1\r\nContent-Length: 2\r\n\r\n{}NEXT";
        let (head, consumed, len) = frame_head(raw, peer(), limits()).unwrap().unwrap();
        let head = String::from_utf8(head).unwrap();
        assert_eq!(
            head,
            "POST /api/v1/tokens HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-Vaultcall-Peer: 192.0.2.7:4242\r\n\r\n"
        );
        assert_eq!(&raw[consumed..consumed + len], b"{}");
    }

    #[test]
    fn partial_head_needs_more() {
        assert_eq!(
            frame_head(b"GET /healthz HTTP/1.1\r\nHo", peer(), limits()).unwrap(),
            None
        );
    }

    #[test]
    fn limits_are_enforced() {
        let big = b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n";
        assert_eq!(
            frame_head(big, peer(), limits()).unwrap_err(),
            Outcome::Reject(413, "body_too_large", "the request body is too large")
        );
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(
            frame_head(chunked, peer(), limits()),
            Err(Outcome::Reject(411, ..))
        ));
        let dup = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert!(matches!(
            frame_head(dup, peer(), limits()),
            Err(Outcome::Reject(400, ..))
        ));
        let neg = b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n";
        assert!(matches!(
            frame_head(neg, peer(), limits()),
            Err(Outcome::Reject(400, ..))
        ));
        let long = format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(2000));
        assert!(matches!(
            frame_head(long.as_bytes(), peer(), limits()),
            Err(Outcome::Reject(431, ..))
        ));
        let utf8 = "GET /api?name=张伟 HTTP/1.1\r\n\r\n";
        assert!(matches!(
            frame_head(utf8.as_bytes(), peer(), limits()),
            Err(Outcome::Reject(400, ..))
        ));
        let garbage = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
        assert!(matches!(
            frame_head(garbage, peer(), limits()),
            Err(Outcome::Reject(400, ..))
        ));
    }

    #[test]
    fn error_response_is_well_formed() {
        let r = String::from_utf8(error_response(413, "body_too_large", "too big")).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 413 Content Too Large\r\n"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "body_too_large");
    }
}
