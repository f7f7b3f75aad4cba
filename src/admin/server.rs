//! tiny_http on a private Unix socket, with a fixed pool of worker threads calling
//! [`api::handle`]. Only the [`front`](super::front) connects to the socket (its directory is
//! 0700 and the socket 0600).

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::AdminContext;
use super::api::{self, ApiRequest, Method};
use super::front::PEER_HEADER;

/// Longest Unix socket path the kernel accepts (sun_path is 108 bytes including the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The socket path is too long for `sun_path`.
    #[error(
        "admin socket path {0} is longer than {MAX_SOCKET_PATH} bytes; set paths.runtime_dir to a shorter directory"
    )]
    PathTooLong(PathBuf),
    /// Binding failed.
    #[error("cannot bind admin socket {path}: {message}")]
    Bind {
        /// The socket.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The running server.
pub struct ApiServer {
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    heartbeat: Arc<AtomicU64>,
    born: Instant,
    clock: Arc<dyn crate::time::Clock>,
    socket: PathBuf,
}

impl ApiServer {
    /// Binds `socket` (replacing a stale one) and starts `threads` workers.
    pub fn start(
        ctx: Arc<AdminContext>,
        socket: &Path,
        threads: usize,
    ) -> Result<Self, ServerError> {
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ServerError::PathTooLong(socket.to_owned()));
        }
        let bind_err = |message: String| ServerError::Bind {
            path: socket.to_owned(),
            message,
        };
        if let Some(dir) = socket.parent() {
            crate::fs::ensure_private_dir(dir).map_err(|e| bind_err(e.to_string()))?;
        }
        match std::fs::remove_file(socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind_err(e.to_string())),
        }
        let server = tiny_http::Server::http_unix(socket).map_err(|e| bind_err(e.to_string()))?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| bind_err(e.to_string()))?;
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let heartbeat = Arc::new(AtomicU64::new(0));
        let born = ctx.clock.mono();
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let (server, stop, ctx, hb) =
                (server.clone(), stop.clone(), ctx.clone(), heartbeat.clone());
            let h = std::thread::Builder::new()
                .name(format!("vc-admin-{i}"))
                .spawn(move || worker(&server, &stop, &ctx, &hb, born))
                .map_err(|e| bind_err(e.to_string()))?;
            workers.push(h);
        }
        Ok(Self {
            server,
            stop,
            workers,
            heartbeat,
            born,
            clock: ctx.clock.clone(),
            socket: socket.to_owned(),
        })
    }

    /// Time since any worker last came round its loop (the watchdog's liveness signal).
    pub fn since_heartbeat(&self) -> Duration {
        let last = Duration::from_millis(self.heartbeat.load(Ordering::Relaxed));
        self.clock
            .mono()
            .saturating_duration_since(self.born)
            .saturating_sub(last)
    }

    /// Lets workers finish the request in hand, then stops them and closes the socket.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        for w in self.workers {
            let _ = w.join();
        }
        drop(self.server);
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn worker(
    server: &tiny_http::Server,
    stop: &AtomicBool,
    ctx: &AdminContext,
    hb: &AtomicU64,
    born: Instant,
) {
    while !stop.load(Ordering::SeqCst) {
        let age = ctx.clock.mono().saturating_duration_since(born);
        hb.store(age.as_millis() as u64, Ordering::Relaxed);
        match server.recv_timeout(Duration::from_millis(250)) {
            Ok(Some(req)) => serve(ctx, req),
            Ok(None) => {}
            Err(e) => {
                log::debug!(error:% = e; "admin server receive error");
                // A worker thread of the shell, not a core: back off instead of spinning.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn header(req: &tiny_http::Request, name: &str) -> Option<String> {
    req.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str().to_owned())
}

fn serve(ctx: &AdminContext, mut req: tiny_http::Request) {
    let _work = ctx.lifecycle.work();
    let started = ctx.clock.mono();
    let max_body = ctx
        .settings
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .max_body_bytes;
    let url = req.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let mut body = Vec::new();
    let read_ok = req
        .as_reader()
        .take(max_body as u64 + 1)
        .read_to_end(&mut body)
        .is_ok();
    let method = Method::parse(req.method().as_str());
    let api_req = ApiRequest {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        authorization: header(&req, "Authorization"),
        peer: header(&req, PEER_HEADER).and_then(|p| p.parse::<SocketAddr>().ok()),
        body,
    };
    let resp = if !read_ok || api_req.body.len() > max_body {
        api::ApiResponse {
            status: 413,
            content_type: "application/json; charset=utf-8",
            headers: vec![("Cache-Control", "no-store".into())],
            body:
                br#"{"error":{"code":"body_too_large","message":"the request body is too large"}}"#
                    .to_vec(),
            route: "unmatched",
            stream: None,
        }
    } else {
        api::handle(ctx, &api_req)
    };
    let status = resp.status.to_string();
    ctx.metrics
        .requests
        .with(&[resp.route, method.as_str(), &status])
        .inc();
    let took = ctx.clock.mono().saturating_duration_since(started);
    ctx.metrics
        .latency
        .with(&[resp.route])
        .observe(took.as_secs_f64());
    log::debug!(method = method.as_str(), route = resp.route, status = resp.status; "admin request");
    let mut headers = Vec::with_capacity(resp.headers.len() + 2);
    let mut add = |name: &str, value: &str| {
        if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            headers.push(h);
        }
    };
    add("Content-Type", resp.content_type);
    add("Server", "vaultcall");
    for (k, v) in &resp.headers {
        add(k, v);
    }
    let status = tiny_http::StatusCode(resp.status);
    // A streamed body (decrypted playback) goes out as it is read, always with its exact
    // Content-Length (never chunked): if reading fails midway the connection is closed and the
    // client sees a body shorter than announced, not a well-terminated one.
    let sent = match resp.stream {
        Some((reader, len)) => req.respond(
            tiny_http::Response::new(status, headers, reader, usize::try_from(len).ok(), None)
                .with_chunked_threshold(usize::MAX),
        ),
        None => {
            let len = resp.body.len();
            req.respond(tiny_http::Response::new(
                status,
                headers,
                std::io::Cursor::new(resp.body),
                Some(len),
                None,
            ))
        }
    };
    if let Err(e) = sent {
        log::debug!(error:% = e; "admin response not delivered");
    }
}
