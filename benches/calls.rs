//! Concurrent-call benchmark: vaultcall places N calls to a SIPp UAS that echoes RTP back
//! (`-rtp_echo`), each call repeating a 5-second prompt and recording both legs to a stereo WAV file
//! (recording taps on), and measures over a steady-state window:
//! CPU per call, memory per call, the RTP send interval (p50/p99/max, bucket resolution) and
//! the late-packet ratio. Then, as a baseline in the same run, two SIPp instances do the same
//! (a SIPp UAC playing G.711 audio from a pcap to a SIPp UAS echoing it) and their CPU is
//! measured the same way.
//!
//! Run: `cargo bench --bench calls -- --calls 100 --seconds 40` (needs `sipp`). Results go
//! to docs/benchmarks.md with the command that produced them; nothing here asserts timing.
#![allow(clippy::disallowed_methods)] // a benchmark reads real time and spawns real tasks

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use vaultcall::config::{Config, TrunkConfig};
use vaultcall::media::session::MediaEvent;
use vaultcall::runtime::rtp_io::{MediaEndpoint, PortPool, random_seeds, record, wav_file_sink};
use vaultcall::runtime::sip_endpoint::{
    Command as EpCommand, EndpointConfig, EndpointHandle, SipEndpoint, ToCall,
};
use vaultcall::runtime::trunk::{self, CallSetup};
use vaultcall::sip::dialog::{CallEvent, CallOutput, OutboundCall};
use vaultcall::sip::transaction::Target;
use vaultcall::time::{Clock, SystemClock};

struct Args {
    calls: usize,
    seconds: u64,
    baseline: bool,
}

fn args() -> Args {
    let mut a = Args {
        calls: 100,
        seconds: 40,
        baseline: true,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        match v[i].as_str() {
            "--calls" => {
                a.calls = v[i + 1].parse().expect("--calls N");
                i += 1;
            }
            "--seconds" => {
                a.seconds = v[i + 1].parse().expect("--seconds S");
                i += 1;
            }
            "--no-baseline" => a.baseline = false,
            _ => {}
        }
        i += 1;
    }
    a
}

/// User + system CPU seconds of a process (`self` or a pid).
fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = pid.map_or("/proc/self/stat".to_owned(), |p| format!("/proc/{p}/stat"));
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
    let ticks: f64 = f.get(11).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn rss_mib(pid: Option<u32>) -> f64 {
    let path = pid.map_or("/proc/self/status".to_owned(), |p| {
        format!("/proc/{p}/status")
    });
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Cumulative bucket counts of one histogram in the metrics text.
fn histogram(name: &str) -> Vec<(f64, u64)> {
    let text = vaultcall::telemetry::metrics::global().render();
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.parse().ok()?))
        })
        .collect()
}

fn counter(name: &str) -> u64 {
    let text = vaultcall::telemetry::metrics::global().render();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The smallest bucket bound holding quantile `q` of the observations between two snapshots.
fn quantile(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> f64 {
    let delta: Vec<(f64, u64)> = after
        .iter()
        .zip(before)
        .map(|((le, a), (_, b))| (*le, a - b))
        .collect();
    let total = delta.last().map_or(0, |d| d.1);
    delta
        .iter()
        .find(|(_, c)| *c as f64 >= q * total as f64)
        .map_or(f64::NAN, |d| d.0)
}

/// SIPp in `log`'s folder, where `pcap/` holds Debian's sample G.711 captures.
fn sipp(args: &[&str], log: &Path) -> Child {
    let dir = log.parent().expect("log folder");
    let pcap = dir.join("pcap");
    if !pcap.exists() {
        std::os::unix::fs::symlink("/usr/share/sip-tester", &pcap).expect("pcap link");
    }
    Command::new("sipp")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("sipp (Debian sip-tester) is installed")
}

const UAS: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="echoing UAS">
  <recv request="INVITE" />
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=sipp 1 1 IN IP4 [local_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 8
a=rtpmap:8 PCMA/8000
]]></send>
  <recv request="ACK" />
  <recv request="BYE" />
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"#;

struct CallResult {
    answered: bool,
    late: u64,
    received: u64,
}

/// One call's part: how long to hold it, where to record, its seed, the prompt it repeats.
struct Plan {
    hold: Duration,
    rec: PathBuf,
    seed: u64,
    prompt: Arc<[i16]>,
}

async fn one_call(
    cfg: Arc<Config>,
    ep: EndpointHandle,
    target: Target,
    pool: Arc<PortPool>,
    plan: Plan,
) -> CallResult {
    let Plan {
        hold,
        rec,
        seed,
        prompt,
    } = plan;
    let clock = SystemClock;
    let t = &cfg.sip.trunks[0];
    let Ok(sockets) = pool.allocate() else {
        return CallResult {
            answered: false,
            late: 0,
            received: 0,
        };
    };
    let setup = CallSetup {
        cfg: &cfg,
        trunk: t,
        credentials: None,
        sip_local: ep.local(),
        rtp_local: sockets.local_rtp(),
        session_id: seed,
    };
    let mut call = OutboundCall::new(trunk::call_config(&setup, "13800000000"), seed, "127.0.0.1");
    let call_id = call.call_id().to_owned();
    let (tx, mut rx) = mpsc::channel(64);
    ep.send(EpCommand::Attach {
        call_id: call_id.clone(),
        events: tx,
    })
    .await;
    call.start(clock.mono());
    let mut sockets = Some(sockets);
    let mut media = None;
    let mut recording = None;
    let mut hangup_at = None;
    let mut answered = false;
    let mut media_ended = false;
    loop {
        let now = clock.mono();
        let mut ended = false;
        while let Some(out) = call.poll_output() {
            match out {
                CallOutput::Send(m) => {
                    ep.send(EpCommand::Send {
                        call_id: call_id.clone(),
                        target,
                        message: m,
                    })
                    .await;
                }
                CallOutput::SendAck(m) | CallOutput::Resend(m) => {
                    ep.send(EpCommand::SendRaw { target, message: m }).await;
                }
                CallOutput::Respond { tx, response } => {
                    ep.send(EpCommand::Respond {
                        tx,
                        message: response,
                    })
                    .await;
                }
                CallOutput::Event(CallEvent::Answered(n)) => {
                    answered = true;
                    if let (Some(params), Some(s)) = (trunk::media_params(&n, None), sockets.take())
                    {
                        let m = MediaEndpoint::new(
                            s,
                            params,
                            &cfg.media,
                            random_seeds(),
                            clock.mono(),
                            clock.wall(),
                        )
                        .expect("media");
                        let sink = wav_file_sink(&rec).expect("recording file");
                        recording = Some(record(m.subscribe_taps(), Box::new(sink)));
                        let handle = m.start();
                        let _ = handle.play(1, prompt.to_vec()).await;
                        media = Some(handle);
                    }
                    hangup_at = Some(now + hold);
                }
                CallOutput::Event(CallEvent::Ended(_)) => ended = true,
                CallOutput::Event(_) => {}
            }
        }
        if ended {
            break;
        }
        let wake = [call.poll_timeout(), hangup_at]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_secs(3600));
        let media_event = async {
            match media.as_mut() {
                Some(m) if !media_ended => m.next_event().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = media_event => match ev {
                // The prompt again, as a script would say its next line.
                Some(MediaEvent::PlaybackFinished { .. }) => {
                    if let Some(m) = &media {
                        let _ = m.play(1, prompt.to_vec()).await;
                    }
                }
                Some(_) => {}
                None => media_ended = true,
            },
            m = rx.recv() => match m {
                Some(ToCall::Response(r)) => call.handle_response(clock.mono(), *r),
                Some(ToCall::Request(tx, r)) => call.handle_request(clock.mono(), tx, *r),
                Some(ToCall::Ack(a)) => call.handle_ack(clock.mono(), &a),
                Some(ToCall::Timeout(m, c)) => call.handle_request_timeout(clock.mono(), &m, c),
                Some(ToCall::TransportError(m, c)) => call.handle_transport_error(clock.mono(), &m, c),
                None => break,
            },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                let now = clock.mono();
                if hangup_at.is_some_and(|h| now >= h) {
                    hangup_at = None;
                    call.hangup(now, "bench");
                }
                if call.poll_timeout().is_some_and(|t| t <= now) {
                    call.handle_timeout(now);
                }
            }
        }
    }
    let stats = match media {
        Some(m) => m.close().await.ok(),
        None => None,
    };
    if let Some(r) = recording {
        let _ = r.await;
    }
    ep.send(EpCommand::Detach { call_id }).await;
    CallResult {
        answered,
        late: stats.as_ref().map_or(0, |s| s.late_packets),
        received: stats.as_ref().map_or(0, |s| s.packets_received),
    }
}

fn main() {
    let a = args();
    let tmp = tempfile::tempdir().expect("tempdir");
    let sip_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let uas_xml = tmp.path().join("uas.xml");
    std::fs::write(&uas_xml, UAS).unwrap();
    let mut uas = sipp(
        &[
            "-sf",
            uas_xml.to_str().unwrap(),
            "-i",
            "127.0.0.1",
            "-p",
            &sip_port.to_string(),
            "-mi",
            "127.0.0.1",
            "-rtp_echo",
            "-nostdin",
            "-m",
            &a.calls.to_string(),
            "-max_socket",
            "65000",
        ],
        &tmp.path().join("uas.log"),
    );
    std::thread::sleep(Duration::from_millis(500));

    let mut cfg = Config::default();
    cfg.sip.listen = "127.0.0.1:0".parse().unwrap();
    cfg.media.port_min = 40_000;
    cfg.media.port_max = 40_000 + 2 * a.calls as u16 + 99;
    cfg.sip.trunks.push(TrunkConfig {
        codecs: vec!["pcma".into()],
        max_calls: a.calls as u32,
        calls_per_second: 100,
        session_expires_secs: 0,
        keepalive_secs: 0,
        ..TrunkConfig::new("sipp", "127.0.0.1", sip_port, "4008001234")
    });
    let cfg = Arc::new(cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let hold = Duration::from_secs(a.seconds);
    let ramp = Duration::from_millis(20 * a.calls as u64 + 2000);
    let (results, window) = rt.block_on(async {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let ep_cfg = EndpointConfig {
            listen: cfg.sip.listen,
            public: None,
            timers: trunk::timers(&cfg),
            max_transactions: 100_000,
            seed: 7,
            user_agent: "vaultcall-bench".into(),
        };
        let (endpoint, handle) = SipEndpoint::bind(ep_cfg, Vec::new(), clock).await.unwrap();
        let (stop_tx, stop_rx) = watch::channel(false);
        let ep_task = tokio::spawn(endpoint.run(stop_rx));
        let target = trunk::resolve(&cfg.sip.trunks[0]).await.unwrap();
        let pool = PortPool::new(&cfg.media);
        let rss0 = rss_mib(None);
        let mut tasks = Vec::new();
        // A 5-second prompt (the length of a typical script line), repeated by every call.
        let prompt: Arc<[i16]> = vaultcall::media::tone::sine(440.0, 5_000, 8000).into();
        // 50 new calls per second, like a dialer under its CPS cap.
        for i in 0..a.calls {
            let plan = Plan {
                hold,
                rec: tmp.path().join(format!("rec-{i}.wav")),
                seed: 1000 + i as u64,
                prompt: prompt.clone(),
            };
            tasks.push(tokio::spawn(one_call(
                cfg.clone(),
                handle.clone(),
                target,
                pool.clone(),
                plan,
            )));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Steady state: every call answered and playing.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (h0, l0, c0, t0) = (
            histogram("vaultcall_rtp_send_interval_seconds"),
            counter("vaultcall_rtp_late_packets_total"),
            cpu_seconds(None),
            Instant::now(),
        );
        let rss1 = rss_mib(None);
        let window = hold.saturating_sub(ramp).max(Duration::from_secs(5));
        tokio::time::sleep(window).await;
        let (h1, l1, c1, t1) = (
            histogram("vaultcall_rtp_send_interval_seconds"),
            counter("vaultcall_rtp_late_packets_total"),
            cpu_seconds(None),
            Instant::now(),
        );
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let _ = stop_tx.send(true);
        let _ = ep_task.await;
        let secs = (t1 - t0).as_secs_f64();
        let w = (
            (c1 - c0) / secs,
            (rss1 - rss0) / a.calls as f64,
            quantile(&h0, &h1, 0.5),
            quantile(&h0, &h1, 0.99),
            quantile(&h0, &h1, 1.0),
            l1 - l0,
            secs,
        );
        (results, w)
    });
    let _ = uas.kill();
    let _ = uas.wait();
    let answered = results.iter().filter(|r| r.answered).count();
    let received: u64 = results.iter().map(|r| r.received).sum();
    let late: u64 = results.iter().map(|r| r.late).sum();
    let (cores, mib_per_call, p50, p99, max, late_window, secs) = window;
    println!(
        "vaultcall: {} calls, {answered} answered, window {secs:.1} s",
        a.calls
    );
    println!(
        "  CPU {:.3} cores total = {:.2} ms of CPU per call per second; memory {:.2} MiB per call",
        cores,
        cores * 1000.0 / a.calls as f64,
        mib_per_call
    );
    println!(
        "  RTP send interval p50 <= {:.1} ms, p99 <= {:.1} ms, max <= {:.1} ms (bucket bounds)",
        p50 * 1e3,
        p99 * 1e3,
        max * 1e3
    );
    println!(
        "  late packets {late} of {received} received ({:.4} %); {late_window} late in the window",
        if received == 0 {
            0.0
        } else {
            late as f64 * 100.0 / received as f64
        }
    );

    if a.baseline {
        // Two SIPp instances doing the same: a UAS echoing RTP, a UAC playing a G.711 pcap.
        let port2 = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut uas2 = sipp(
            &[
                "-sn",
                "uas",
                "-i",
                "127.0.0.1",
                "-p",
                &port2.to_string(),
                "-mi",
                "127.0.0.1",
                "-rtp_echo",
                "-nostdin",
                "-max_socket",
                "65000",
            ],
            &tmp.path().join("uas2.log"),
        );
        std::thread::sleep(Duration::from_millis(500));
        let uac_port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut uac = sipp(
            &[
                &format!("127.0.0.1:{port2}"),
                "-sn",
                "uac_pcap",
                "-i",
                "127.0.0.1",
                "-p",
                &uac_port.to_string(),
                "-mi",
                "127.0.0.1",
                "-l",
                &a.calls.to_string(),
                "-r",
                "50",
                "-m",
                &(a.calls * 100).to_string(),
                "-nostdin",
                "-max_socket",
                "65000",
            ],
            &tmp.path().join("uac.log"),
        );
        std::thread::sleep(ramp);
        let (u0, s0, t0) = (
            cpu_seconds(Some(uac.id())),
            cpu_seconds(Some(uas2.id())),
            Instant::now(),
        );
        std::thread::sleep(Duration::from_secs(10));
        let (u1, s1, t1) = (
            cpu_seconds(Some(uac.id())),
            cpu_seconds(Some(uas2.id())),
            Instant::now(),
        );
        let secs = (t1 - t0).as_secs_f64();
        let (uac_rss, uas_rss) = (rss_mib(Some(uac.id())), rss_mib(Some(uas2.id())));
        let _ = uac.kill();
        let _ = uac.wait();
        let _ = uas2.kill();
        let _ = uas2.wait();
        println!(
            "SIPp baseline ({} concurrent calls, uac_pcap -> uas -rtp_echo):",
            a.calls
        );
        println!(
            "  UAC {:.3} cores ({:.1} MiB), UAS {:.3} cores ({:.1} MiB); per call {:.2} ms of CPU per second",
            (u1 - u0) / secs,
            uac_rss,
            (s1 - s0) / secs,
            uas_rss,
            ((u1 - u0) + (s1 - s0)) / secs * 1000.0 / a.calls as f64
        );
    }
}
