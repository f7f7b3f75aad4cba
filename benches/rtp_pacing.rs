//! Measures the real pacing of the RTP shell: N concurrent calls, each a `MediaEndpoint`
//! sending 20 ms G.711 frames to one echo socket (as SIPp's `-rtp_echo` would), which timestamps
//! every arrival on its own thread and sends the packet back, so the calls also receive 50
//! packets a second through their jitter buffers and taps.
//!
//! Reported: send interval p50/p99/max over all calls (from arrival times on loopback), drift
//! against `first + 20 ms × k` over the run, late-packet ratio, process CPU per call and memory
//! per call. Run:
//!
//! ```text
//! cargo bench --bench rtp_pacing -- --calls 100 --seconds 60 [--record]
//! ```
//! Without `--bench` (as `cargo test --all-targets` runs it) it does a two-second smoke run.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vaultcall::config::MediaConfig;
use vaultcall::media::g711::Law;
use vaultcall::media::session::Negotiated;
use vaultcall::media::tone;
use vaultcall::runtime::rtp_io::{self, MediaEndpoint, PortPool, random_seeds};
use vaultcall::time::{Clock, SystemClock};

struct Args {
    calls: usize,
    seconds: u64,
    record: bool,
}

fn args() -> Args {
    let all: Vec<String> = std::env::args().collect();
    let bench = all.iter().any(|a| a == "--bench");
    let get = |name: &str, default: u64| {
        all.iter()
            .position(|a| a == name)
            .and_then(|i| all.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    if bench {
        Args {
            calls: get("--calls", 100) as usize,
            seconds: get("--seconds", 60),
            record: all.iter().any(|a| a == "--record"),
        }
    } else {
        Args {
            calls: 2,
            seconds: 2,
            record: false,
        }
    }
}

/// Arrival times and RTP timestamps per source port.
type Arrivals = HashMap<u16, Vec<(Instant, u32)>>;

/// Echoes until stopped; returns the CPU seconds this thread used (the peer's share, which the
/// report subtracts).
fn echo(sock: UdpSocket, stop: Arc<AtomicBool>, arrivals: Arc<Mutex<Arrivals>>) -> f64 {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("a socket option");
    let mut buf = [0u8; 2048];
    let mut local: Arrivals = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let at = SystemClock.mono();
        if n >= 12 {
            let ts = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
            local.entry(from.port()).or_default().push((at, ts));
        }
        let _ = sock.send_to(&buf[..n], from);
    }
    *arrivals.lock().expect("not poisoned") = local;
    cpu_seconds(libc::RUSAGE_THREAD)
}

fn cpu_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage writes into the struct we pass and nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn main() {
    let a = args();
    let sock = UdpSocket::bind("127.0.0.1:0").expect("an echo socket");
    // A deep receive queue (8 MiB) so that the peer, not the code under test, is never where
    // packets are lost when this shared machine stalls the echo thread.
    let size: libc::c_int = 8 << 20;
    // SAFETY: setsockopt reads `size` for the given length; the descriptor is ours and open.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let echo_addr: SocketAddr = sock.local_addr().expect("bound");
    let stop = Arc::new(AtomicBool::new(false));
    let arrivals = Arc::new(Mutex::new(Arrivals::new()));
    let echo_thread = {
        let (stop, arrivals) = (stop.clone(), arrivals.clone());
        std::thread::spawn(move || echo(sock, stop, arrivals))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let cfg = MediaConfig {
        port_min: 52_000,
        port_max: 52_000 + 2 * a.calls as u16 + 200,
        ..MediaConfig::default()
    };
    let dir = std::env::temp_dir().join(format!("vaultcall-bench-{}", std::process::id()));
    if a.record {
        std::fs::create_dir_all(&dir).expect("a temp dir");
    }
    let rss0 = rss_kib();
    let (cpu, stats, rss1) = rt.block_on(async {
        let pool = PortPool::new(&cfg);
        let mut handles = Vec::new();
        let mut recordings = Vec::new();
        let prompt = tone::sine(440.0, 10_000, 8000);
        for i in 0..a.calls {
            let sockets = pool.allocate().expect("ports");
            let neg = Negotiated::g711(echo_addr, Law::Alaw, Some(101));
            let ep = MediaEndpoint::new(
                sockets,
                neg,
                &cfg,
                random_seeds(),
                SystemClock.mono(),
                SystemClock.wall(),
            )
            .expect("a session");
            if a.record {
                let sink = rtp_io::wav_file_sink(&dir.join(format!("{i}.wav"))).expect("a file");
                recordings.push(rtp_io::record(ep.subscribe_taps(), Box::new(sink)));
            }
            let h = ep.start();
            // Talk all the time: 20 s queued now, 10 s more every 10 s below.
            for k in 0..2 {
                h.play(k, prompt.clone()).await.expect("queued");
            }
            handles.push(h);
        }
        let cpu0 = cpu_seconds(libc::RUSAGE_SELF);
        for k in 0..a.seconds / 10 {
            tokio::time::sleep(Duration::from_secs(10)).await;
            for h in &handles {
                h.play(2 + k, prompt.clone()).await.expect("queued");
            }
        }
        tokio::time::sleep(Duration::from_secs(a.seconds % 10)).await;
        let cpu = cpu_seconds(libc::RUSAGE_SELF) - cpu0;
        let rss1 = rss_kib();
        let mut stats = Vec::new();
        for h in handles {
            stats.push(h.close().await.expect("media ended cleanly"));
        }
        for r in recordings {
            r.await.expect("task").expect("recorded");
        }
        (cpu, stats, rss1)
    });
    stop.store(true, Ordering::Relaxed);
    let echo_cpu = echo_thread.join().expect("echo thread");
    if a.record {
        let _ = std::fs::remove_dir_all(&dir);
    }

    let arrivals = arrivals.lock().expect("not poisoned");
    let mut intervals = Vec::new();
    let mut drifts = Vec::new();
    for v in arrivals.values() {
        for w in v.windows(2) {
            intervals.push(w[1].0.duration_since(w[0].0).as_secs_f64() * 1000.0);
        }
        // Offset of each packet from first + 20 ms × k, k from the RTP timestamp (skipped frames
        // keep their slot); drift is how far the median offset of the last 250 packets moved
        // from that of the first 250 (medians remove the per-packet lateness, leaving only a
        // clock that runs fast or slow).
        if let Some(first) = v.first() {
            let offsets: Vec<f64> = v
                .iter()
                .map(|(at, ts)| {
                    let k = f64::from(ts.wrapping_sub(first.1)) / 160.0;
                    at.duration_since(first.0).as_secs_f64() * 1000.0 - k * 20.0
                })
                .collect();
            let n = offsets.len().min(250);
            if n > 0 {
                let med = |x: &[f64]| {
                    let mut x = x.to_vec();
                    x.sort_by(f64::total_cmp);
                    percentile(&x, 0.5)
                };
                drifts.push(med(&offsets[offsets.len() - n..]) - med(&offsets[..n]));
            }
        }
    }
    intervals.sort_by(f64::total_cmp);
    drifts.sort_by(f64::total_cmp);
    let received: u64 = stats.iter().map(|s| s.packets_received).sum();
    let late: u64 = stats.iter().map(|s| s.late_packets).sum();
    let lost: u64 = stats.iter().map(|s| s.packets_lost).sum();
    let skipped: u64 = stats.iter().map(|s| s.frames_skipped).sum();
    println!(
        "calls={} seconds={} record={} packets_timed={}",
        a.calls,
        a.seconds,
        a.record,
        intervals.len() + arrivals.len()
    );
    println!(
        "send interval ms: p50={:.3} p99={:.3} max={:.3} min={:.3}",
        percentile(&intervals, 0.5),
        percentile(&intervals, 0.99),
        intervals.last().copied().unwrap_or(f64::NAN),
        intervals.first().copied().unwrap_or(f64::NAN),
    );
    println!(
        "drift over the run (median offset, last 250 vs first 250 packets), ms: median={:.3} max={:.3} min={:.3}",
        percentile(&drifts, 0.5),
        drifts.last().copied().unwrap_or(f64::NAN),
        drifts.first().copied().unwrap_or(f64::NAN),
    );
    println!(
        "late ratio={:.5} lost={} frames_skipped={} (received {})",
        late as f64 / received.max(1) as f64,
        lost,
        skipped,
        received
    );
    // The echo thread's CPU (whole run, a slight overestimate of its share of the window) is
    // the peer's, not ours.
    let ours = (cpu - echo_cpu).max(0.0);
    println!(
        "cpu: {:.1} % of one core (echo peer {:.1} % excluded), {:.3} % per call; \
         rss: {} MiB, {:.1} KiB per call",
        ours * 100.0 / a.seconds as f64,
        echo_cpu * 100.0 / a.seconds as f64,
        ours * 100.0 / a.seconds as f64 / a.calls as f64,
        rss1 / 1024,
        rss1.saturating_sub(rss0) as f64 / a.calls as f64,
    );
}
