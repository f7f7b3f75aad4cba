//! SQLite storage: one writer thread owns the write connection; readers share a small pool.
//!
//! Writes are closures sent to the writer over a bounded queue. The writer groups the jobs it
//! finds waiting into one transaction (each job in its own savepoint, so one failing job does
//! not undo the others) and answers each job only after the commit is durable: an `Ok` from
//! [`Store::write`] means the row is on disk (with `synchronous = full`, across a power loss).
//!
//! The database runs in WAL mode with foreign keys on, `busy_timeout` set and
//! `secure_delete` on (erased rows are overwritten, not left in free pages).

pub mod audit;
pub mod calls;
pub mod erasure;
pub mod migrate;
pub mod scripts;
pub mod subjects;
pub mod tokens;
pub mod transcriptions;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::time::Clock;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::config::{StoreConfig, Synchronous};
use crate::telemetry::metrics::{self, Counter, Gauge, Histogram};

/// Most jobs the writer puts in one transaction.
const MAX_BATCH: usize = 64;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A migration failed; the database is unchanged.
    #[error("migration {version} ({name}) failed, database left unchanged: {source}")]
    Migration {
        /// Version that failed.
        version: i64,
        /// Its name.
        name: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The database was written by a newer vaultcall.
    #[error(
        "database schema version {database} is newer than this vaultcall supports ({binary}); downgrades are not supported"
    )]
    SchemaTooNew {
        /// Version found.
        database: i64,
        /// Version this binary knows.
        binary: i64,
    },
    /// An applied migration differs from the one embedded in this binary.
    #[error(
        "migration {version} ({name}) recorded in the database differs from the one in this binary"
    )]
    MigrationMismatch {
        /// Version.
        version: i64,
        /// Name.
        name: &'static str,
    },
    /// WAL mode could not be enabled (e.g. a network file system).
    #[error("cannot enable WAL journal mode (got {0:?}); use a local file system")]
    NoWal(String),
    /// Creating the directory or setting permissions failed.
    #[error("cannot prepare {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The store is shutting down or its writer thread is gone.
    #[error("the store is closed")]
    Closed,
    /// A job's commit failed after the job itself succeeded.
    #[error("commit failed: {0}")]
    Commit(String),
    /// A row the caller asked for does not exist.
    #[error("not found")]
    NotFound,
}

impl StoreError {
    /// Whether this is a schema problem that should stop start-up with exit 78.
    pub fn is_schema(&self) -> bool {
        matches!(
            self,
            Self::Migration { .. } | Self::SchemaTooNew { .. } | Self::MigrationMismatch { .. }
        )
    }
}

type Finish = Box<dyn FnOnce(Option<&StoreError>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;

enum Msg {
    Write(Job),
    Ping(oneshot::Sender<()>),
    /// `PRAGMA wal_checkpoint(TRUNCATE)` between transactions.
    Checkpoint(oneshot::Sender<Result<WalCheckpoint, StoreError>>),
    /// Refuse new jobs, finish the queued ones, checkpoint, exit.
    Shutdown,
}

struct StoreMetrics {
    queue_depth: Arc<Gauge>,
    batches: Arc<Counter>,
    jobs: Arc<Counter>,
    failed_commits: Arc<Counter>,
    commit_seconds: Arc<Histogram>,
}

impl StoreMetrics {
    fn register() -> Self {
        let r = metrics::global();
        Self {
            queue_depth: r
                .gauge(
                    "vaultcall_store_write_queue_depth",
                    "Write jobs waiting for the writer thread.",
                    &[],
                )
                .with(&[]),
            batches: r
                .counter(
                    "vaultcall_store_write_transactions_total",
                    "Transactions committed by the writer.",
                    &[],
                )
                .with(&[]),
            jobs: r
                .counter(
                    "vaultcall_store_write_jobs_total",
                    "Write jobs executed.",
                    &[],
                )
                .with(&[]),
            failed_commits: r
                .counter(
                    "vaultcall_store_commit_failures_total",
                    "Transactions whose commit failed.",
                    &[],
                )
                .with(&[]),
            commit_seconds: r
                .histogram(
                    "vaultcall_store_transaction_seconds",
                    "Time from BEGIN to durable COMMIT.",
                    &[],
                    metrics::LATENCY_BUCKETS,
                )
                .with(&[]),
        }
    }
}

/// Read-only connections, lent one at a time.
struct ReadPool {
    /// `None` once the store is closed.
    conns: Mutex<Option<Vec<Connection>>>,
    ready: Condvar,
}

/// Handle to the database. Cheap to clone; all clones share the writer and the pool.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Msg>,
    readers: Arc<ReadPool>,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
    path: PathBuf,
    metrics: Arc<StoreMetrics>,
}

fn configure(conn: &Connection, cfg: &StoreConfig) -> Result<(), StoreError> {
    conn.busy_timeout(Duration::from_millis(cfg.busy_timeout_ms))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    let sync = match cfg.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the database, applies migrations, starts the writer thread.
    pub fn open(path: &Path, cfg: &StoreConfig, now_ms: i64) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::fs::ensure_private_dir(dir).map_err(|source| StoreError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        restrict_mode(path)?;
        configure(&conn, cfg)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal(mode));
        }
        let (from, to) = migrate::migrate(&mut conn, migrate::MIGRATIONS, now_ms)?;
        if from != to {
            log::info!(from = from, to = to; "database schema migrated");
        }
        let mut readers = Vec::with_capacity(cfg.read_connections);
        for _ in 0..cfg.read_connections {
            let r = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            configure(&r, cfg)?;
            readers.push(r);
        }
        let metrics = Arc::new(StoreMetrics::register());
        let (tx, rx) = mpsc::channel(cfg.write_queue);
        let m = metrics.clone();
        let writer = std::thread::Builder::new()
            .name("vc-store-writer".into())
            .spawn(move || writer_loop(conn, rx, &m))
            .map_err(|source| StoreError::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            tx,
            readers: Arc::new(ReadPool {
                conns: Mutex::new(Some(readers)),
                ready: Condvar::new(),
            }),
            writer: Arc::new(Mutex::new(Some(writer))),
            path: path.to_owned(),
            metrics,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes on disk: database plus WAL.
    pub fn disk_bytes(&self) -> u64 {
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        size(&self.path) + size(Path::new(&wal))
    }

    fn job<R, E, F>(f: F) -> (Job, oneshot::Receiver<Result<R, E>>)
    where
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<R, E> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let res = f(conn);
            let ok = res.is_ok();
            let finish: Finish = Box::new(move |commit_err| {
                let out = match commit_err {
                    Some(e) if ok => Err(E::from(StoreError::Commit(e.to_string()))),
                    _ => res,
                };
                let _ = reply.send(out);
            });
            (ok, finish)
        });
        (job, rx)
    }

    /// Like [`Store::write`] for closures with their own error type: an `Err` rolls the job's
    /// changes back, as with `StoreError`. For modules that mix queries with checks of their
    /// own (decrypting, validating) inside one transaction.
    pub fn write_with<R, E, F>(&self, f: F) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<R, E> + Send + 'static,
    {
        let (job, rx) = Self::job(f);
        self.metrics.queue_depth.add(1);
        if self.tx.blocking_send(Msg::Write(job)).is_err() {
            self.metrics.queue_depth.add(-1);
            return Err(StoreError::Closed.into());
        }
        rx.blocking_recv()
            .map_err(|_| E::from(StoreError::Closed))?
    }

    /// Copies the WAL into the database and truncates it to zero bytes, so that old page
    /// images (for example a data key destroyed by an erasure) do not linger in the WAL.
    /// Other connections reading at that moment can keep the WAL from being reset; the result
    /// says whether it was.
    pub fn checkpoint_truncate(&self) -> Result<WalCheckpoint, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .blocking_send(Msg::Checkpoint(tx))
            .map_err(|_| StoreError::Closed)?;
        rx.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` in the writer's transaction and waits until it is committed. For threads
    /// outside the async runtime (admin workers, CLI).
    pub fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        self.write_with(f)
    }

    /// The async form of [`Store::write`], for tokio tasks.
    pub async fn write_async<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let (job, rx) = Self::job::<R, StoreError, F>(f);
        self.metrics.queue_depth.add(1);
        if self.tx.send(Msg::Write(job)).await.is_err() {
            self.metrics.queue_depth.add(-1);
            return Err(StoreError::Closed);
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Resolves when the writer has worked through everything queued before it: the
    /// watchdog's proof that the writer is alive.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Ping(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// Runs a read-only query on a pooled connection (blocks while all are lent).
    pub fn read<R>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let conn = {
            let mut g = self.readers.conns.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                match g.as_mut() {
                    None => return Err(StoreError::Closed),
                    Some(pool) => {
                        if let Some(c) = pool.pop() {
                            break c;
                        }
                    }
                }
                g = self
                    .readers
                    .ready
                    .wait(g)
                    .unwrap_or_else(|p| p.into_inner());
            }
        };
        let out = f(&conn);
        if let Some(pool) = self
            .readers
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            pool.push(conn);
        }
        self.readers.ready.notify_one();
        out
    }

    /// Stops accepting writes, lets the writer finish what is queued, checkpoints the WAL into
    /// the database and joins the thread. Other clones see [`StoreError::Closed`] afterwards.
    pub fn close(self) {
        // Readers first, so that the writer's close is the last one and SQLite removes the WAL.
        let readers = self
            .readers
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(readers);
        self.readers.ready.notify_all();
        // Other clones may still hold senders, so the writer is told explicitly; jobs queued
        // before this message still run, later ones fail with `Closed`.
        let _ = self.tx.blocking_send(Msg::Shutdown);
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn restrict_mode(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        StoreError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

/// Result of a WAL checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalCheckpoint {
    /// Whether every frame was copied and the WAL truncated (no reader was in the way).
    pub complete: bool,
    /// Frames in the WAL before the checkpoint.
    pub wal_frames: i64,
}

fn checkpoint(conn: &Connection) -> Result<WalCheckpoint, StoreError> {
    let (busy, log, done): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(WalCheckpoint {
        complete: busy == 0 && log == done,
        wal_frames: log,
    })
}

fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<Msg>, m: &StoreMetrics) {
    let mut pings = Vec::new();
    let mut checkpoints = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Write(j) => jobs.push(j),
                Msg::Ping(p) => pings.push(p),
                Msg::Checkpoint(c) => checkpoints.push(c),
                Msg::Shutdown => rx.close(),
            }
            if jobs.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        m.queue_depth.add(-(jobs.len() as i64));
        if !jobs.is_empty() {
            run_batch(&mut conn, std::mem::take(&mut jobs), m);
        }
        for p in pings.drain(..) {
            let _ = p.send(());
        }
        for c in checkpoints.drain(..) {
            let _ = c.send(checkpoint(&conn));
        }
    }
    // Closed and drained (or every sender is gone): shutting down.
    if let Err(e) = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
        log::warn!(error:% = e; "final WAL checkpoint failed; SQLite replays the WAL at next start");
    }
    if let Err((_, e)) = conn.close() {
        log::warn!(error:% = e; "closing the database failed");
    }
}

fn run_batch(conn: &mut Connection, jobs: Vec<Job>, m: &StoreMetrics) {
    let clock = crate::time::SystemClock;
    let started = clock.mono();
    let mut finishes = Vec::with_capacity(jobs.len());
    let n = jobs.len() as u64;
    let commit = (|| -> Result<(), StoreError> {
        let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for job in jobs {
            let sp = tx.savepoint()?;
            let (ok, finish) = job(&sp);
            if ok {
                sp.commit()?;
            } else {
                // Dropping a savepoint rolls it back; only this job's changes are undone.
                drop(sp);
            }
            finishes.push(finish);
        }
        tx.commit()?;
        Ok(())
    })();
    m.jobs.add(n);
    match &commit {
        Ok(()) => {
            m.batches.inc();
            m.commit_seconds.observe(
                clock
                    .mono()
                    .saturating_duration_since(started)
                    .as_secs_f64(),
            );
        }
        Err(e) => {
            m.failed_commits.inc();
            log::error!(error:% = e, jobs = n; "store transaction failed");
        }
    }
    let err = commit.err();
    for f in finishes {
        f(err.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Store {
        Store::open(&dir.join("t.db"), &StoreConfig::default(), 1).unwrap()
    }

    #[test]
    fn writes_are_visible_to_readers_after_ack() {
        let d = tempfile::tempdir().unwrap();
        let s = open(d.path());
        s.write(|c| {
            c.execute("INSERT INTO tasks (name, status, created_at_ms, updated_at_ms) VALUES ('t', 'draft', 1, 1)", [])?;
            Ok(())
        })
        .unwrap();
        let n: i64 = s
            .read(|c| Ok(c.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(n, 1);
        let mode: String = s
            .read(|c| Ok(c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(mode, "wal");
        s.close();
    }

    #[test]
    fn a_failing_job_does_not_undo_its_batch_neighbours() {
        let d = tempfile::tempdir().unwrap();
        let s = open(d.path());
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    s.write(move |c| {
                        c.execute(
                            "INSERT INTO tasks (name, status, created_at_ms, updated_at_ms) VALUES (?1, 'draft', 1, 1)",
                            [format!("t{i}")],
                        )?;
                        if i % 2 == 1 {
                            // Violates the CHECK constraint: this job fails, its insert is undone.
                            c.execute("UPDATE tasks SET status = 'bogus' WHERE name = ?1", [format!("t{i}")])?;
                        }
                        Ok(i)
                    })
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 4);
        let n: i64 = s
            .read(|c| Ok(c.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(n, 4);
        s.close();
    }

    #[test]
    fn foreign_keys_are_enforced() {
        let d = tempfile::tempdir().unwrap();
        let s = open(d.path());
        let e = s
            .write(|c| {
                c.execute("INSERT INTO turns (call_id, seq, speaker, start_ms, end_ms) VALUES (999, 1, 'robot', 0, 1)", [])?;
                Ok(())
            })
            .unwrap_err();
        assert!(e.to_string().contains("FOREIGN KEY"), "{e}");
        s.close();
    }

    #[test]
    fn database_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let s = open(&d.path().join("sub"));
        let mode = std::fs::metadata(s.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(d.path().join("sub"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        s.close();
    }

    #[tokio::test]
    async fn ping_and_async_write() {
        let d = tempfile::tempdir().unwrap();
        let s = open(d.path());
        s.ping().await.unwrap();
        let id = s
            .write_async(|c| {
                c.execute("INSERT INTO tasks (name, status, created_at_ms, updated_at_ms) VALUES ('a', 'draft', 1, 1)", [])?;
                Ok(c.last_insert_rowid())
            })
            .await
            .unwrap();
        assert_eq!(id, 1);
        tokio::task::spawn_blocking(move || s.close())
            .await
            .unwrap();
    }
}
