//! End to end against real SIP peers nobody here wrote, on 127.0.0.1 only: baresip (Debian
//! `baresip-core`) as an auto-answering callee, SIPp (Debian `sip-tester`) as a UAS that answers
//! with fixed status codes. `vaultcall dial` places each call.
#![allow(clippy::disallowed_methods)] // tests drive real processes in real time

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use vaultcall::media::tone::{dominant_frequency, rms, sine};

/// Each test gets its own RTP port range (tests run in parallel).
fn media_range() -> (u16, u16) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let i = NEXT.fetch_add(1, Ordering::SeqCst);
    let base = 32_000 + i * 200 + (std::process::id() % 20) as u16 * 1000 % 20_000;
    (base, base + 99)
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_wav(path: &Path, rate: u32, samples: &[i16]) {
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(&data);
    std::fs::write(path, b).unwrap();
}

fn vaultcall_config(dir: &Path, trunk_port: u16, extra_trunk: &str) -> PathBuf {
    let (lo, hi) = media_range();
    let cfg = format!(
        "[paths]\ndata_dir = \"{d}/var\"\n[log]\nlevel = \"debug\"\ntarget = \"stderr\"\n[sip]\nlisten = \"127.0.0.1:0\"\n\
         [media]\nport_min = {lo}\nport_max = {hi}\n\
         [[sip.trunks]]\nname = \"peer\"\nhost = \"127.0.0.1\"\nport = {trunk_port}\ncaller_id = \"4008001234\"\n\
         keepalive_secs = 0\nsession_expires_secs = 0\n{extra_trunk}\n",
        d = dir.display()
    );
    let p = dir.join("vaultcall.toml");
    std::fs::write(&p, cfg).unwrap();
    p
}

struct Dialed {
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

impl Dialed {
    fn status_code(&self) -> u8 {
        let line = self
            .stdout
            .lines()
            .find(|l| l.starts_with("Outcome: status code "))
            .unwrap_or_else(|| panic!("no outcome:\n{}\n{}", self.stdout, self.stderr));
        line["Outcome: status code ".len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
    fn line(&self, prefix: &str) -> String {
        self.stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_default()
            .to_owned()
    }
}

fn dial(config: &Path, args: &[&str]) -> Dialed {
    let out = Command::new(common::BIN)
        .args(["dial", "13800000000", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    Dialed {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
    }
}

/// A running peer process, killed on drop.
struct Peer {
    child: Child,
    log: PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(log: &Path, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(needle)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {}:\n{}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// baresip answering automatically as sip:13800000000@127.0.0.1:port, playing `source`
/// (hanging up by itself when the file ends) and recording what it hears in `dir`.
fn baresip(dir: &Path, port: u16, source: &Path) -> Peer {
    baresip_with(dir, port, source, "")
}

/// baresip with extra config lines (e.g. its `cons` control socket).
fn baresip_with(dir: &Path, port: u16, source: &Path, extra: &str) -> Peer {
    let cfg = format!(
        "sip_listen\t127.0.0.1:{port}\nmodule_path\t/usr/lib/baresip/modules\nmodule\tg711.so\nmodule\taufile.so\nmodule\tsndfile.so\n\
         module_app\taccount.so\nmodule_app\tmenu.so\naudio_player\taufile,{d}/discard.wav\naudio_source\taufile,{src}\n\
         audio_alert\taufile,{d}/discard.wav\nsnd_path\t{d}\n",
        d = dir.display(),
        src = source.display()
    ) + extra;
    std::fs::write(dir.join("config"), cfg).unwrap();
    std::fs::write(
        dir.join("accounts"),
        format!(
            "<sip:13800000000@127.0.0.1:{port}>;regint=0;answermode=auto;audio_codecs=PCMA,PCMU\n"
        ),
    )
    .unwrap();
    let log = dir.join("baresip.log");
    let child = Command::new("baresip")
        .arg("-f")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("baresip is installed (make setup)");
    wait_for(&log, "baresip is ready", Duration::from_secs(15));
    Peer { child, log }
}

fn read_stereo(path: &Path) -> (Vec<i16>, Vec<i16>) {
    let bytes = std::fs::read(path).unwrap();
    let w = vaultcall::media::resample::read_wav(&bytes).unwrap();
    assert_eq!((w.rate, w.channels), (8000, 2));
    w.samples.chunks_exact(2).map(|f| (f[0], f[1])).unzip()
}

/// Milliseconds of 20 ms frames whose RMS is above a floor: how long a tone really sounded.
fn active_ms(samples: &[i16]) -> u64 {
    samples.chunks(160).filter(|f| rms(f) > 1000.0).count() as u64 * 20
}

#[test]
fn call_to_baresip_carries_audio_both_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_udp_port();
    write_wav(&dir.join("far-1k.wav"), 8000, &sine(1000.0, 30_000, 12_000));
    write_wav(
        &dir.join("robot-440.wav"),
        16_000,
        &sine(440.0, 3_000, 12_000)
            .iter()
            .flat_map(|s| [*s, *s])
            .collect::<Vec<_>>(),
    );
    let peer = baresip(dir, port, &dir.join("far-1k.wav"));
    let cfg = vaultcall_config(dir, port, "");
    let rec = dir.join("rec.wav");
    let d = dial(
        &cfg,
        &[
            "--play",
            dir.join("robot-440.wav").to_str().unwrap(),
            "--record",
            rec.to_str().unwrap(),
            "--seconds",
            "4",
        ],
    );
    assert_eq!(d.code, Some(0), "{}\n{}", d.stdout, d.stderr);
    assert_eq!(d.status_code(), 1, "{}", d.stdout);
    assert!(d.stdout.contains("← 200"), "{}", d.stdout);
    assert!(
        d.line("Outcome:").contains("hangup by Robot"),
        "{}",
        d.stdout
    );
    let media = d.line("Media:");
    assert!(media.contains("lost 0 "), "{media}");

    // Our recording: left = customer (baresip's 1 kHz), right = robot (our 440 Hz).
    let (left, right) = read_stereo(&rec);
    let f_left = dominant_frequency(&left[4000..20_000], 200.0, 3800.0, 5.0);
    let f_right = dominant_frequency(&right[4000..20_000], 200.0, 3800.0, 5.0);
    assert!(
        (f_left - 1000.0).abs() <= 10.0,
        "customer channel at {f_left} Hz"
    );
    assert!(
        (f_right - 440.0).abs() <= 10.0,
        "robot channel at {f_right} Hz"
    );
    // The robot's 3 s prompt lasted 3 s (within 2 %).
    let robot_ms = active_ms(&right);
    assert!(
        (2940..=3060).contains(&robot_ms),
        "robot prompt lasted {robot_ms} ms"
    );

    // What baresip heard: our 440 Hz, for 3 s within 2 %.
    drop(peer);
    let heard = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .ends_with("-dec.wav")
        })
        .expect("baresip's recording of what it received");
    let bytes = std::fs::read(&heard).unwrap();
    let w = vaultcall::media::resample::read_wav(&bytes).unwrap();
    let mono = vaultcall::media::resample::to_mono(&w);
    let at8k = vaultcall::media::resample::resample(&mono, w.rate, 8000);
    let f = dominant_frequency(&at8k[2000..18_000], 200.0, 3800.0, 5.0);
    assert!((f - 440.0).abs() <= 10.0, "baresip heard {f} Hz");
    let heard_ms = active_ms(&at8k);
    assert!(
        (2940..=3060).contains(&heard_ms),
        "baresip heard the prompt for {heard_ms} ms"
    );
}

#[test]
fn baresip_hanging_up_is_a_customer_bye() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_udp_port();
    // baresip hangs up when its 2 s source file ends.
    write_wav(
        &dir.join("far-short.wav"),
        8000,
        &sine(1000.0, 2_000, 12_000),
    );
    let _peer = baresip(dir, port, &dir.join("far-short.wav"));
    let cfg = vaultcall_config(dir, port, "");
    let d = dial(&cfg, &["--seconds", "15"]);
    assert_eq!(d.status_code(), 1, "{}", d.stdout);
    assert!(
        d.line("Outcome:").contains("hangup by Customer, cause bye"),
        "{}",
        d.stdout
    );
    assert!(d.stdout.contains("← BYE"), "{}", d.stdout);
    let talk: f64 = d
        .line("Talk time:")
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!((1.5..4.0).contains(&talk), "talk time {talk}");
}

/// A SIPp UAS scenario answering every INVITE with `code` (and waiting for the ACK).
fn sipp_final(code: u16, reason: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uas {code}">
  <recv request="INVITE" />
  <send>
    <![CDATA[
SIP/2.0 {code} {reason}
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

    ]]>
  </send>
  <recv request="ACK" />
</scenario>
"#
    )
}

/// Rings and waits for our CANCEL, then ends the INVITE with 487 (RFC 3261 §9.2).
const SIPP_RING_FOREVER: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uas ringing">
  <recv request="INVITE" />
  <send>
    <![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

    ]]>
  </send>
  <recv request="CANCEL" />
  <send>
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

    ]]>
  </send>
  <send>
    <![CDATA[
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
CSeq: 1 INVITE
Content-Length: 0

    ]]>
  </send>
  <recv request="ACK" />
</scenario>
"#;

fn sipp(dir: &Path, port: u16, scenario: &str) -> Peer {
    let file = dir.join("uas.xml");
    std::fs::write(&file, scenario).unwrap();
    let log = dir.join("sipp.log");
    let child = Command::new("sipp")
        .args(["-sf"])
        .arg(&file)
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "60s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("sipp is installed (Debian sip-tester; make setup)");
    // SIPp binds immediately; give it a moment to read the scenario.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
        std::thread::sleep(Duration::from_millis(50));
    }
    Peer { child, log }
}

#[test]
fn failure_responses_map_to_status_codes() {
    for (code, reason, want) in [
        (486, "Busy Here", 8),
        (603, "Decline", 3),
        (503, "Service Unavailable", 12),
        (404, "Not Found", 5),
        (480, "Temporarily Unavailable", 6),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let port = free_udp_port();
        let mut peer = sipp(tmp.path(), port, &sipp_final(code, reason));
        let cfg = vaultcall_config(tmp.path(), port, "");
        let d = dial(&cfg, &[]);
        assert_eq!(d.status_code(), want, "{code}: {}", d.stdout);
        assert!(
            d.stdout.contains(&format!("← {code} {reason}")),
            "{}",
            d.stdout
        );
        // SIPp got its ACK and finished the scenario successfully.
        let status = wait_exit(&mut peer.child, Duration::from_secs(10));
        assert_eq!(
            status,
            Some(0),
            "sipp failed for {code}: {}",
            std::fs::read_to_string(&peer.log).unwrap_or_default()
        );
    }
}

#[test]
fn ring_timeout_cancels_and_is_no_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let mut peer = sipp(tmp.path(), port, SIPP_RING_FOREVER);
    let cfg = vaultcall_config(tmp.path(), port, "ring_timeout_secs = 5");
    let started = Instant::now();
    let d = dial(&cfg, &[]);
    assert_eq!(d.status_code(), 4, "{}", d.stdout);
    assert!(
        d.line("Outcome:").contains("cause ring_timeout"),
        "{}",
        d.stdout
    );
    assert!(d.stdout.contains("→ CANCEL"), "{}", d.stdout);
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert_eq!(
        wait_exit(&mut peer.child, Duration::from_secs(10)),
        Some(0),
        "{}",
        std::fs::read_to_string(&peer.log).unwrap_or_default()
    );
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kamailio as a registrar that challenges REGISTER with digest (qop=auth) and knows one
/// user, `vc`, with password `s3cret` (compared by `pv_auth_check`, no database needed).
fn kamailio(dir: &Path, port: u16) -> Peer {
    let cfg = format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=1
listen=udp:127.0.0.1:{port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
modparam("usrloc", "db_mode", 0)
request_route {{
    if (is_method("REGISTER")) {{
        $var(pw) = "s3cret";
        if (!pv_auth_check("$fd", "$var(pw)", "0", "1")) {{
            auth_challenge("$fd", "1");
            exit;
        }}
        consume_credentials();
        if (!save("location")) {{ sl_reply_error(); }}
        exit;
    }}
    if (is_method("OPTIONS")) {{
        sl_send_reply("200", "OK");
        exit;
    }}
    sl_send_reply("404", "Not Here");
}}
"#
    );
    let file = dir.join("kamailio.cfg");
    std::fs::write(&file, cfg).unwrap();
    let log = dir.join("kamailio.log");
    let child = Command::new("kamailio")
        .arg("-f")
        .arg(&file)
        .args([
            "-DD",
            "-E",
            "-n",
            "1",
            "-Y",
            dir.to_str().unwrap(),
            "-P",
            dir.join("k.pid").to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("kamailio is installed (make setup)");
    wait_for(&log, "INFO", Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(300));
    Peer { child, log }
}

fn trunk_state(
    d: &common::Daemon,
    token: &str,
    want: &str,
    timeout: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let t = d.get("/api/v1/trunks", Some(token)).json()["trunks"][0].clone();
        if t["registration"] == want {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "trunk never reached {want}: {t}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn registering_daemon(dir: &Path, port: u16, password: &str) -> common::Daemon {
    use std::os::unix::fs::PermissionsExt;
    let pw = dir.join("trunk.password");
    std::fs::write(&pw, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (lo, hi) = media_range();
    let extra = format!(
        "[media]\nport_min = {lo}\nport_max = {hi}\n\n[[sip.trunks]]\nname = \"kamailio\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         caller_id = \"4008001234\"\nusername = \"vc\"\npassword_file = \"{}\"\nregister = true\nregister_expires_secs = 120\nkeepalive_secs = 1\n",
        pw.display()
    );
    common::Daemon::start_in(dir, &common::test_config(dir, "", &extra))
}

#[test]
fn registers_with_kamailio_through_a_digest_challenge() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let _k = kamailio(tmp.path(), port);
    let mut d = registering_daemon(tmp.path(), port, "s3cret");
    let admin = d.bootstrap();
    let t = trunk_state(&d, &admin, "registered", Duration::from_secs(15));
    let secs = t["registration_secs"].as_u64().unwrap();
    assert!((100..=120).contains(&secs), "{t}");
    // OPTIONS keepalive every second: Kamailio answers, so the trunk is alive.
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.get("/api/v1/trunks", Some(&admin)).json()["trunks"][0]["alive"] != true {
        assert!(Instant::now() < deadline, "keepalive never succeeded");
        std::thread::sleep(Duration::from_millis(100));
    }
    d.stop();
    assert!(
        d.log_text().contains("trunk unregistered"),
        "unregister on shutdown:\n{}",
        d.log_text()
    );
}

#[test]
fn a_wrong_password_is_a_failed_registration_with_backoff() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let _k = kamailio(tmp.path(), port);
    let mut d = registering_daemon(tmp.path(), port, "wrong");
    let admin = d.bootstrap();
    let t = trunk_state(&d, &admin, "failed", Duration::from_secs(15));
    assert_eq!(t["registration_error"], 401, "{t}");
    let retry = t["registration_secs"].as_u64().unwrap();
    assert!((20..=40).contains(&retry), "retry in {retry} s: {t}");
    assert!(
        !d.log_text().contains("wrong"),
        "the password must never reach the log"
    );
    d.stop();
}

#[test]
fn dtmf_both_ways_with_baresip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_udp_port();
    let cons = free_udp_port();
    write_wav(&dir.join("far.wav"), 8000, &sine(1000.0, 30_000, 8000));
    let peer = baresip_with(
        dir,
        port,
        &dir.join("far.wav"),
        &format!("module\tcons.so\ncons_listen\t127.0.0.1:{cons}\n"),
    );
    let cfg = vaultcall_config(dir, port, "");
    let child = Command::new(common::BIN)
        .args(["dial", "13800000000", "--config"])
        .arg(&cfg)
        .args(["--dtmf", "159#", "--seconds", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Once the call is up, press 7 and 3 on baresip (key down, then 0x04 to release).
    wait_for(&peer.log, "Call established", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in ["7", "3"] {
        s.send_to(d.as_bytes(), ("127.0.0.1", cons)).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        s.send_to(b"\x04", ("127.0.0.1", cons)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("DTMF received: 73"), "{stdout}");
    let log = std::fs::read_to_string(&peer.log).unwrap();
    let got: String = log
        .match_indices("received event: '")
        .filter_map(|(i, _)| {
            let rest = &log[i + "received event: '".len()..];
            rest.contains("(end=1")
                .then(|| rest.chars().next())
                .flatten()
                .filter(|_| rest[1..].starts_with("' (end=1"))
        })
        .collect();
    assert_eq!(got, "159#", "baresip's log:\n{log}");
}
