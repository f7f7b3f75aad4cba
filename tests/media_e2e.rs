//! End-to-end media on 127.0.0.1: real sockets, the real tokio driver, real time.
//!
//! Two endpoints exchange a 440 Hz and a 1 kHz tone; each checks the dominant frequency of what
//! it heard and that the tone lasted as long as it was sent (within 2 %), and the stereo
//! recording (left customer, right robot). Then: many calls from one remote address and port
//! are told apart by local port; DTMF goes through; and, where SIPp is installed, our own stream
//! comes back from SIPp's `-rtp_echo` intact.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use vaultcall::config::MediaConfig;
use vaultcall::media::dtmf::DtmfNotice;
use vaultcall::media::g711::Law;
use vaultcall::media::rtp::{self, RtpHeader};
use vaultcall::media::session::{MediaEvent, Negotiated};
use vaultcall::media::tap::{self, TapFrame};
use vaultcall::media::tone;
use vaultcall::runtime::rtp_io::{
    self, MediaEndpoint, MediaHandle, PortPool, TapReceiver, random_seeds,
};
use vaultcall::time::{Clock, SystemClock};

/// A port range of our own per test process (others may be testing on this machine).
fn media_config(slot: u16) -> MediaConfig {
    let base = 40_000 + ((std::process::id() % 2000) as u16) * 8 + slot * 2000 % 16_000;
    MediaConfig {
        port_min: base - base % 2,
        port_max: base - base % 2 + 199,
        ..MediaConfig::default()
    }
}

fn endpoint(
    pool: &Arc<PortPool>,
    cfg: &MediaConfig,
    remote: SocketAddr,
    law: Law,
) -> MediaEndpoint {
    let sockets = pool.allocate().expect("a free port pair");
    let neg = Negotiated::g711(remote, law, Some(101));
    MediaEndpoint::new(
        sockets,
        neg,
        cfg,
        random_seeds(),
        SystemClock.mono(),
        SystemClock.wall(),
    )
    .expect("a valid negotiation")
}

/// Collects tap frames until the media ends.
#[allow(clippy::disallowed_methods)] // a test consumer task, like the shell's own
fn collect(mut taps: TapReceiver) -> tokio::task::JoinHandle<Vec<Arc<TapFrame>>> {
    tokio::spawn(async move {
        let mut v = Vec::new();
        while let Some(f) = taps.recv().await {
            v.push(f);
        }
        v
    })
}

/// The customer audio of frames that carry a tone (RMS above a silence threshold).
fn heard(frames: &[Arc<TapFrame>]) -> Vec<i16> {
    frames
        .iter()
        .filter(|f| f.customer_audio && tone::rms(&f.customer) > 1000.0)
        .flat_map(|f| f.customer.iter().copied())
        .collect()
}

fn within_2_percent(got_ms: usize, want_ms: usize) -> bool {
    let diff = got_ms.abs_diff(want_ms) as f64;
    diff <= want_ms as f64 * 0.02
}

/// `loud` (8 kHz samples of the frames that carried sound) is a tone of `hz` lasting `ms`
/// (within 2 %).
fn assert_tone(who: &str, loud: &[i16], hz: f64, ms: usize) {
    let f = tone::dominant_frequency(loud, 200.0, 3400.0, 10.0);
    assert_eq!(f, hz, "{who} heard {f} Hz");
    let got = loud.len() / 8;
    assert!(
        within_2_percent(got, ms),
        "{who} heard the tone for {got} ms, sent {ms} ms"
    );
}

fn assert_heard(who: &str, frames: &[Arc<TapFrame>], hz: f64, ms: usize) {
    assert_tone(who, &heard(frames), hz, ms);
}

/// Two endpoints pointed at each other, as SDP offer/answer would leave them: both port pairs
/// are allocated first so that each knows the other's address.
fn pair(
    pool: &Arc<PortPool>,
    cfg: &MediaConfig,
    a_law: Law,
    b_law: Law,
) -> (MediaEndpoint, MediaEndpoint) {
    let a_sockets = pool.allocate().unwrap();
    let b_sockets = pool.allocate().unwrap();
    let (a_addr, b_addr) = (a_sockets.local_rtp(), b_sockets.local_rtp());
    let mk = |s, remote, law| {
        MediaEndpoint::new(
            s,
            Negotiated::g711(remote, law, Some(101)),
            cfg,
            random_seeds(),
            SystemClock.mono(),
            SystemClock.wall(),
        )
        .unwrap()
    };
    (mk(a_sockets, b_addr, a_law), mk(b_sockets, a_addr, b_law))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_endpoints_exchange_440_hz_and_1_khz_and_record_both_legs() {
    let cfg = media_config(0);
    let pool = PortPool::new(&cfg);
    let (a, b) = pair(&pool, &cfg, Law::Alaw, Law::Ulaw);
    let dir = tempfile::tempdir().unwrap();
    let wav_path = dir.path().join("b.wav");
    let b_recording = rtp_io::record(
        b.subscribe_taps(),
        Box::new(rtp_io::wav_file_sink(&wav_path).unwrap()),
    );
    let (a_taps, b_taps) = (collect(a.subscribe_taps()), collect(b.subscribe_taps()));
    let (a, b) = (a.start(), b.start());
    a.play(1, tone::sine(440.0, 2000, 8000)).await.unwrap();
    b.play(2, tone::sine(1000.0, 2000, 8000)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let (sa, sb) = (a.close().await.unwrap(), b.close().await.unwrap());
    let (a_frames, b_frames) = (a_taps.await.unwrap(), b_taps.await.unwrap());

    assert_heard("B", &b_frames, 440.0, 2000);
    assert_heard("A", &a_frames, 1000.0, 2000);
    for s in [&sa, &sb] {
        assert!(s.packets_sent >= 125, "{s:?}");
        assert_eq!((s.packets_lost, s.malformed), (0, 0), "{s:?}");
    }

    // The recording: left what the customer (A) said, right what the robot (B) said.
    let summary = b_recording.await.unwrap().unwrap();
    let bytes = std::fs::read(&wav_path).unwrap();
    let (left, right) = tap::read_wav_stereo(&bytes).unwrap();
    assert_eq!(left.len() as u64, summary.samples);
    let loud = |x: &[i16]| -> Vec<i16> {
        x.chunks(160)
            .filter(|c| tone::rms(c) > 1000.0)
            .flatten()
            .copied()
            .collect()
    };
    assert_tone("the recording's left channel", &loud(&left), 440.0, 2000);
    assert_tone("the recording's right channel", &loud(&right), 1000.0, 2000);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&wav_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_one_remote_address_are_told_apart_by_local_port() {
    let cfg = media_config(1);
    let pool = PortPool::new(&cfg);
    // One "SIPp": a single socket sending two calls' RTP.
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let e1 = endpoint(&pool, &cfg, peer_addr, Law::Alaw);
    let e2 = endpoint(&pool, &cfg, peer_addr, Law::Alaw);
    let (t1, t2) = (collect(e1.subscribe_taps()), collect(e2.subscribe_taps()));
    let (p1, p2) = (e1.local_rtp(), e2.local_rtp());
    let (h1, h2) = (e1.start(), e2.start());
    let tones = [
        tone::sine(440.0, 1000, 8000),
        tone::sine(1000.0, 1000, 8000),
    ];
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let mut buf = Vec::new();
    for k in 0..50usize {
        ticker.tick().await;
        for (call, (to, t)) in [(p1, &tones[0]), (p2, &tones[1])].into_iter().enumerate() {
            let mut payload = Vec::new();
            Law::Alaw.encode(&t[k * 160..(k + 1) * 160], &mut payload);
            let h = RtpHeader {
                payload_type: 8,
                marker: k == 0,
                sequence: k as u16,
                timestamp: (k * 160) as u32,
                ssrc: 100 + call as u32,
            };
            rtp::write_rtp(&h, &payload, &mut buf).unwrap();
            peer.send_to(&buf, to).await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s1, s2) = (h1.close().await.unwrap(), h2.close().await.unwrap());
    let (f1, f2) = (t1.await.unwrap(), t2.await.unwrap());
    assert_heard("call 1", &f1, 440.0, 1000);
    assert_heard("call 2", &f2, 1000.0, 1000);
    assert_eq!((s1.packets_received, s2.packets_received), (50, 50));
}

async fn dtmf_digits(h: &mut MediaHandle, until: Duration) -> String {
    let mut got = String::new();
    let deadline = tokio::time::Instant::from_std(SystemClock.mono()) + until;
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, h.next_event()).await {
        if let MediaEvent::Dtmf(DtmfNotice::End { digit, .. }) = e {
            got.push(digit);
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_goes_through_as_rfc_4733_events() {
    let cfg = media_config(2);
    let pool = PortPool::new(&cfg);
    let (a, b) = pair(&pool, &cfg, Law::Alaw, Law::Alaw);
    let (a, mut b) = (a.start(), b.start());
    for d in ['1', '#', '9', '*'] {
        a.send_dtmf(d, 100).await.unwrap();
    }
    assert_eq!(
        dtmf_digits(&mut b, Duration::from_millis(1500)).await,
        "1#9*"
    );
    let sb = b.close().await.unwrap();
    assert_eq!(sb.dtmf_received, 4);
    a.close().await.unwrap();
}

/// Our stream sent to SIPp's RTP echo (`sipp -rtp_echo`) comes back as the same tone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtp_echo_from_sipp_brings_our_tone_back() {
    let Ok(out) = std::process::Command::new("sipp").arg("-v").output() else {
        eprintln!("skipped: sipp is not installed (Debian package sip-tester)");
        return;
    };
    assert!(String::from_utf8_lossy(&out.stdout).contains("SIPp"));
    let cfg = media_config(3);
    // SIPp's media port: an even port outside our range, with the next two free.
    let mp = cfg.port_max + 1 + (cfg.port_max + 1) % 2;
    let sip_port = mp + 10;
    let mut sipp = std::process::Command::new("sipp")
        .args(["-sn", "uas", "-rtp_echo", "-nostdin", "-timeout", "20s"])
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &sip_port.to_string(),
            "-mp",
            &mp.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sipp starts");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pool = PortPool::new(&cfg);
    let sipp_media: SocketAddr = format!("127.0.0.1:{mp}").parse().unwrap();
    let e = endpoint(&pool, &cfg, sipp_media, Law::Ulaw);
    let taps = collect(e.subscribe_taps());
    let h = e.start();
    h.play(1, tone::sine(440.0, 2000, 8000)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let stats = h.close().await.unwrap();
    let _ = sipp.kill();
    let _ = sipp.wait();
    let frames = taps.await.unwrap();
    assert_heard("the echo", &frames, 440.0, 2000);
    assert!(stats.packets_received >= 120, "{stats:?}");
}
