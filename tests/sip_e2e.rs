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
    std::fs::write(
        path,
        vaultcall::media::resample::wav_bytes(rate, 1, samples),
    )
    .unwrap();
}

fn vaultcall_config(dir: &Path, trunk_port: u16, extra_trunk: &str) -> PathBuf {
    let (lo, hi) = media_range();
    // Test defaults, unless the test sets them itself.
    let defaults: String = ["keepalive_secs = 0", "session_expires_secs = 0"]
        .iter()
        .filter(|d| !extra_trunk.contains(d.split(' ').next().unwrap()))
        .map(|d| format!("{d}\n"))
        .collect();
    let cfg = format!(
        "[paths]\ndata_dir = \"{d}/var\"\n[log]\nlevel = \"debug\"\ntarget = \"stderr\"\n[sip]\nlisten = \"127.0.0.1:0\"\n\
         [media]\nport_min = {lo}\nport_max = {hi}\n\
         [[sip.trunks]]\nname = \"peer\"\nhost = \"127.0.0.1\"\nport = {trunk_port}\ncaller_id = \"4008001234\"\n\
                  {defaults}{extra_trunk}\n",
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

impl Peer {
    /// Waits up to 10 s for the peer to end its scenario and asserts it succeeded (exit 0),
    /// showing its log otherwise.
    fn assert_finished_ok(&mut self, context: &str) {
        assert_eq!(
            wait_exit(&mut self.child, Duration::from_secs(10)),
            Some(0),
            "{context}{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
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
            "--record-wav",
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
    sipp_args(dir, port, scenario, &[])
}

fn sipp_args(dir: &Path, port: u16, scenario: &str, extra: &[&str]) -> Peer {
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
            "-trace_msg",
            "-message_file",
            dir.join("sipp.msg").to_str().unwrap(),
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("sipp is installed (Debian sip-tester; make setup)");
    // SIPp binds immediately; give it a moment to read the scenario.
    let deadline = Instant::now() + Duration::from_secs(5);
    // Ready once SIPp holds its port (UDP, or TCP for -t t1 / l1).
    let free = || {
        std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
    };
    while Instant::now() < deadline && free() {
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
        peer.assert_finished_ok(&format!("sipp failed for {code}: "));
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
    peer.assert_finished_ok("");
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
    kamailio_with(dir, port, None)
}

/// Like [`kamailio`]; with `tls = Some((tls_port, cert, key))` it also listens for SIP over TLS.
fn kamailio_with(dir: &Path, port: u16, tls: Option<(u16, &Path, &Path)>) -> Peer {
    let (tls_listen, tls_module) = match tls {
        Some((tls_port, cert, key)) => {
            let tls_cfg = dir.join("tls.cfg");
            std::fs::write(&tls_cfg, format!("[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\ncertificate = {}\nprivate_key = {}\n", cert.display(), key.display())).unwrap();
            (
                format!("listen=tls:127.0.0.1:{tls_port}\nenable_tls=yes\n"),
                format!(
                    "loadmodule \"tls.so\"\nmodparam(\"tls\", \"config\", \"{}\")\n",
                    tls_cfg.display()
                ),
            )
        }
        None => (String::new(), String::new()),
    };
    let cfg = format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
children=1
listen=udp:127.0.0.1:{port}
{tls_listen}mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
{tls_module}loadmodule "tm.so"
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
    registering_daemon_with(dir, port, password, "")
}

fn registering_daemon_with(
    dir: &Path,
    port: u16,
    password: &str,
    trunk_extra: &str,
) -> common::Daemon {
    use std::os::unix::fs::PermissionsExt;
    let pw = dir.join("trunk.password");
    std::fs::write(&pw, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (lo, hi) = media_range();
    let extra = format!(
        "[media]\nport_min = {lo}\nport_max = {hi}\n\n[[sip.trunks]]\nname = \"kamailio\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         caller_id = \"4008001234\"\nusername = \"vc\"\npassword_file = \"{}\"\nregister = true\nregister_expires_secs = 120\nkeepalive_secs = 1\n{trunk_extra}\n",
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
    // `vaultcall trunk status` shows the same, from the state the daemon publishes every 5 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    let table = loop {
        let out = d.cli(&["trunk", "status"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success()
            && text.contains("up (OPTIONS every 1 s)")
            && text.contains("registered, ")
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "trunk status never showed the trunk up: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let line = table.lines().find(|l| l.starts_with("kamailio")).unwrap();
    assert!(line.contains(&format!("127.0.0.1:{port}/udp")), "{table}");

    d.stop();
    // A stopped daemon withdraws its state: the command says so (EX_UNAVAILABLE).
    let out = d.cli(&["trunk", "status"]);
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the daemon is not running"),
        "{out:?}"
    );
    assert!(
        d.log_text().contains("trunk unregistered"),
        "unregister on shutdown:\n{}",
        d.log_text()
    );
}

#[test]
fn dial_fails_over_to_the_next_trunk_when_one_stops_answering() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_udp_port();
    let _k = kamailio(dir, port);
    // The primary trunk is a port nobody listens on; T1 = 50 ms makes an OPTIONS time out
    // (64·T1) in 3.2 s, so two missed keepalives mark it down within seconds.
    let dead = free_udp_port();
    let (lo, hi) = media_range();
    let trunk = |name: &str, port: u16| {
        format!(
            "[[sip.trunks]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\ncaller_id = \"4008001234\"\n\
             keepalive_secs = 1\nsession_expires_secs = 0\nring_timeout_secs = 5\n\n"
        )
    };
    let extra = format!(
        "t1_ms = 50\n\n[media]\nport_min = {lo}\nport_max = {hi}\n\n{}{}",
        trunk("primary", dead),
        trunk("kamailio", port)
    );
    let mut d = common::Daemon::start_in(dir, &common::test_config(dir, "", &extra));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = d.cli(&["trunk", "status"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = |n: &str| {
            text.lines()
                .find(|l| l.starts_with(n))
                .unwrap_or_default()
                .to_owned()
        };
        if line("primary").contains("DOWN") && line("kamailio").contains("up (") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "primary never marked down: {text}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let dialed = dial(&d.config, &["--seconds", "1"]);
    assert!(
        dialed.stdout.starts_with(
            "Failover: primary down (no answer to OPTIONS keepalives); using trunk kamailio."
        ),
        "{}\n{}",
        dialed.stdout,
        dialed.stderr
    );
    assert!(
        dialed.stdout.contains("SIP flow (trunk kamailio"),
        "{}",
        dialed.stdout
    );
    // Kamailio answered the INVITE: the call reached the second trunk.
    assert!(
        dialed
            .stdout
            .lines()
            .any(|l| l.contains(" ← ") && l.contains("INVITE")),
        "{}",
        dialed.stdout
    );
    d.stop();
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

const SDP_BODY: &str = "v=0\no=sipp 1 1 IN IP4 [local_ip]\ns=-\nc=IN IP4 [media_ip]\nt=0 0\nm=audio [media_port] RTP/AVP 8 101\na=rtpmap:8 PCMA/8000\na=rtpmap:101 telephone-event/8000\n";

/// Receives vaultcall's INVITE, remembering its From tag for requests SIPp sends later
/// (SIPp's `[peer_tag_param]` stays empty in the UAS role).
const RECV_INVITE: &str = "<recv request=\"INVITE\" rrs=\"true\"><action><ereg regexp=\"tag=[^;]*\" search_in=\"hdr\" header=\"From:\" assign_to=\"fromtag\"/></action></recv>\n";

/// A response to the last received request, SIPp style; `tag` adds SIPp's To tag (for the
/// first response to the INVITE; in-dialog requests already carry it).
fn sipp_reply_to(code: &str, extra: &str, body: &str, tag: bool) -> String {
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\n".to_owned()
    };
    let to_tag = if tag {
        ";tag=[pid]SIPpTag01[call_number]"
    } else {
        ""
    };
    format!(
        "<send><![CDATA[\nSIP/2.0 {code}\n[last_Via:]\n[last_From:]\n[last_To:]{to_tag}\n[last_Call-ID:]\n[last_CSeq:]\nContact: <sip:[local_ip]:[local_port]>\n{extra}{ct}Content-Length: [len]\n\n{body}]]></send>\n"
    )
}

/// The first response to the INVITE.
fn sipp_reply(code: &str, extra: &str, body: &str) -> String {
    sipp_reply_to(code, extra, body, true)
}

/// A request from SIPp (the callee) inside the dialog vaultcall created.
fn sipp_request(method: &str, cseq: u32, extra: &str, body_type: &str, body: &str) -> String {
    let ct = if body.is_empty() {
        String::new()
    } else {
        format!("Content-Type: {body_type}\n")
    };
    format!(
        "<send><![CDATA[\n{method} [next_url] SIP/2.0\nVia: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n\
         From: <sip:13800000000@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]\nTo: <sip:4008001234@127.0.0.1>;[$fromtag]\n\
         Call-ID: [call_id]\nCSeq: {cseq} {method}\nMax-Forwards: 70\nContact: <sip:[local_ip]:[local_port]>\n{extra}{ct}Content-Length: [len]\n\n{body}]]></send>\n"
    )
}

fn scenario(name: &str, steps: &[String]) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"{name}\">\n{}</scenario>\n",
        steps.concat()
    )
}

fn sipp_media(dir: &Path, port: u16, scenario: &str) -> Peer {
    let media = free_udp_port() & !1;
    sipp_args(
        dir,
        port,
        scenario,
        &["-mi", "127.0.0.1", "-mp", &media.to_string()],
    )
}

#[test]
fn early_media_183_is_played_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let s = scenario(
        "early media then busy",
        &[
            "<recv request=\"INVITE\" />\n".into(),
            sipp_reply("183 Session Progress", "", SDP_BODY),
            "<nop><action><exec play_pcap_audio=\"/usr/share/sip-tester/g711a.pcap\"/></action></nop>\n<pause milliseconds=\"3000\"/>\n".into(),
            sipp_reply("486 Busy Here", "", ""),
            "<recv request=\"ACK\" />\n".into(),
        ],
    );
    let mut peer = sipp_media(tmp.path(), port, &s);
    let cfg = vaultcall_config(tmp.path(), port, "");
    let rec = tmp.path().join("early.wav");
    let d = dial(&cfg, &["--record-wav", rec.to_str().unwrap()]);
    assert_eq!(d.status_code(), 8, "{}", d.stdout);
    assert!(d.stdout.contains("← 183 Session Progress"), "{}", d.stdout);
    // SIPp plays a speech recording (with pauses) for the 3 s before its 486.
    let (left, _) = read_stereo(&rec);
    let spoken = left.chunks(160).filter(|f| rms(f) > 300.0).count() as u64 * 20;
    eprintln!(
        "early media: {} ms recorded, {spoken} ms above the floor",
        left.len() / 8
    );
    assert!(
        left.len() >= 2 * 8000,
        "recording only {} ms long",
        left.len() / 8
    );
    assert!(spoken >= 1000, "early media audible for only {spoken} ms");
    peer.assert_finished_ok("");
}

#[test]
fn peer_reinvite_update_refresh_and_bye_mid_call() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let hold = SDP_BODY.to_owned() + "a=sendonly\n";
    let s = scenario(
        "reinvite, session refresh, bye",
        &[
            RECV_INVITE.into(),
            sipp_reply(
                "200 OK",
                "Session-Expires: 1800;refresher=uas\nRequire: timer\n",
                SDP_BODY,
            ),
            "<recv request=\"ACK\" />\n<pause milliseconds=\"800\"/>\n".into(),
            sipp_request("INVITE", 1, "", "application/sdp", &hold),
            "<recv response=\"100\" optional=\"true\" />\n<recv response=\"200\" />\n".into(),
            sipp_request("ACK", 1, "", "", ""),
            "<pause milliseconds=\"500\"/>\n".into(),
            sipp_request(
                "UPDATE",
                2,
                "Session-Expires: 1800;refresher=uas\nSupported: timer\n",
                "",
                "",
            ),
            "<recv response=\"200\" />\n<pause milliseconds=\"500\"/>\n".into(),
            sipp_request("BYE", 3, "", "", ""),
            "<recv response=\"200\" />\n".into(),
        ],
    );
    let mut peer = sipp_media(tmp.path(), port, &s);
    let cfg = vaultcall_config(tmp.path(), port, "session_expires_secs = 1800");
    let d = dial(&cfg, &["--seconds", "20"]);
    assert_eq!(d.status_code(), 1, "{}", d.stdout);
    for step in ["← INVITE", "← ACK", "← UPDATE", "← BYE"] {
        assert!(d.stdout.contains(step), "missing {step}:\n{}", d.stdout);
    }
    assert!(
        d.line("Outcome:").contains("hangup by Customer, cause bye"),
        "{}",
        d.stdout
    );
    peer.assert_finished_ok("");
}

#[test]
fn refer_transfer_is_accepted_and_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let notify = |cseq: u32, frag: &str, state: &str| {
        sipp_request(
            "NOTIFY",
            cseq,
            &format!("Event: refer\nSubscription-State: {state}\n"),
            "message/sipfrag;version=2.0",
            frag,
        )
    };
    let s = scenario(
        "transfer",
        &[
            RECV_INVITE.into(),
            sipp_reply("200 OK", "", SDP_BODY),
            "<recv request=\"ACK\" />\n<recv request=\"REFER\" />\n".into(),
            sipp_reply_to("202 Accepted", "", "", false),
            notify(1, "SIP/2.0 100 Trying\n", "active;expires=60"),
            "<recv response=\"200\" />\n<pause milliseconds=\"300\"/>\n".into(),
            notify(2, "SIP/2.0 200 OK\n", "terminated;reason=noresource"),
            "<recv response=\"200\" />\n<recv request=\"BYE\" />\n".into(),
            sipp_reply_to("200 OK", "", "", false),
        ],
    );
    let mut peer = sipp_media(tmp.path(), port, &s);
    let cfg = vaultcall_config(tmp.path(), port, "");
    let d = dial(
        &cfg,
        &["--transfer", "sip:agent@127.0.0.1:5999", "--seconds", "8"],
    );
    assert_eq!(d.status_code(), 1, "{}", d.stdout);
    assert!(
        d.stdout.contains("→ REFER") && d.stdout.contains("← 202 Accepted"),
        "{}",
        d.stdout
    );
    assert!(
        d.stdout.contains("transfer progress 100") && d.stdout.contains("transfer progress 200"),
        "{}",
        d.stdout
    );
    assert!(
        d.line("Outcome:").contains("cause transferred"),
        "{}",
        d.stdout
    );
    peer.assert_finished_ok("");
}

fn answer_then_our_bye() -> String {
    scenario(
        "answer, then our BYE",
        &[
            // No request of SIPp's own here, so no tag to capture (SIPp rejects unused variables).
            "<recv request=\"INVITE\" />\n".into(),
            sipp_reply("200 OK", "", SDP_BODY),
            "<recv request=\"ACK\" />\n<recv request=\"BYE\" />\n".into(),
            sipp_reply_to("200 OK", "", "", false),
        ],
    )
}

#[test]
fn call_over_tcp() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let mut peer = sipp_args(
        tmp.path(),
        port,
        &answer_then_our_bye(),
        &[
            "-t",
            "t1",
            "-mi",
            "127.0.0.1",
            "-mp",
            &(free_udp_port() & !1).to_string(),
        ],
    );
    let cfg = vaultcall_config(tmp.path(), port, "transport = \"tcp\"");
    let d = dial(&cfg, &["--seconds", "1"]);
    assert_eq!(
        d.status_code(),
        1,
        "{}\n{}\nsipp: {}",
        d.stdout,
        d.stderr,
        std::fs::read_to_string(&peer.log).unwrap_or_default()
    );
    assert!(d.stdout.contains("← 200 OK (CSeq 2 BYE)"), "{}", d.stdout);
    peer.assert_finished_ok("");
    let msgs = std::fs::read_to_string(tmp.path().join("sipp.msg")).unwrap_or_default();
    assert!(
        msgs.contains("Via: SIP/2.0/TCP "),
        "INVITE over TCP:\n{msgs}"
    );
}

fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let o = Command::new(common::BIN)
        .args(["admin", "self-signed", "--out-dir"])
        .arg(dir)
        .args(["--name", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (dir.join("admin-cert.pem"), dir.join("admin-key.pem"))
}

#[test]
fn registration_and_a_call_over_tls_with_certificate_verification() {
    // Debian's SIPp is built without TLS; Kamailio's tls module is the TLS peer.
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(&tmp.path().join("certs"));
    let (udp, tls_port) = (free_udp_port(), free_tcp_port());
    let _k = kamailio_with(tmp.path(), udp, Some((tls_port, &cert, &key)));
    let trunk = format!("transport = \"tls\"\nca_file = \"{}\"", cert.display());
    let mut d = registering_daemon_with(tmp.path(), tls_port, "s3cret", &trunk);
    let admin = d.bootstrap();
    trunk_state(&d, &admin, "registered", Duration::from_secs(15));
    d.stop();
    // A call over TLS: this Kamailio answers INVITEs with 404, which is status code 5.
    let cfg = vaultcall_config(tmp.path(), tls_port, &trunk);
    let dialed = dial(&cfg, &[]);
    assert_eq!(
        dialed.status_code(),
        5,
        "{}\n{}",
        dialed.stdout,
        dialed.stderr
    );
    assert!(
        dialed.stdout.contains(";transport=tls") && dialed.stdout.contains("← 404"),
        "{}",
        dialed.stdout
    );
}

#[test]
fn tls_peer_with_an_untrusted_certificate_fails_fast() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(&tmp.path().join("certs"));
    let (other_ca, _) = self_signed(&tmp.path().join("other"));
    let (udp, tls_port) = (free_udp_port(), free_tcp_port());
    let _k = kamailio_with(tmp.path(), udp, Some((tls_port, &cert, &key)));
    let trunk = format!("transport = \"tls\"\nca_file = \"{}\"", other_ca.display());
    let cfg = vaultcall_config(tmp.path(), tls_port, &trunk);
    let started = Instant::now();
    let d = dial(&cfg, &[]);
    assert_eq!(d.status_code(), 2, "{}", d.stdout);
    assert!(
        d.line("Outcome:").contains("cause transport_error"),
        "{}",
        d.stdout
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a refused certificate must not wait for Timer B"
    );
    assert!(d.stderr.contains("TLS handshake failed"), "{}", d.stderr);
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn dial_records_into_the_vault_and_playback_decrypts_it() {
    use std::io::Read;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_udp_port();
    write_wav(&dir.join("far-1k.wav"), 8000, &sine(1000.0, 30_000, 12_000));
    write_wav(
        &dir.join("robot-440.wav"),
        8000,
        &sine(440.0, 2_000, 12_000),
    );
    let _peer = baresip(dir, port, &dir.join("far-1k.wav"));
    let cfg_path = vaultcall_config(dir, port, "");
    let d = dial(
        &cfg_path,
        &[
            "--play",
            dir.join("robot-440.wav").to_str().unwrap(),
            "--record",
            "--seconds",
            "3",
        ],
    );
    assert_eq!(d.status_code(), 1, "{}\n{}", d.stdout, d.stderr);
    let line = d.line("Recording: vault recording ");
    let id: i64 = line["Recording: vault recording ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // No plaintext audio anywhere in the data directory: every file there is vault-encrypted.
    for e in walk(&dir.join("var")) {
        let bytes = std::fs::read(&e).unwrap();
        assert!(
            !bytes.windows(4).any(|w| w == b"RIFF"),
            "plaintext WAV in {}",
            e.display()
        );
    }
    // The records service decrypts it: left 1 kHz (customer), right 440 Hz (robot).
    let cfg = vaultcall::config::Config::load(&cfg_path).unwrap();
    let records = vaultcall::records::cli::open_records(&cfg).unwrap();
    let mut pb = records
        .open_playback(vaultcall::ids::RecordingId(id))
        .unwrap();
    let mut wav = Vec::new();
    pb.stream.read_to_end(&mut wav).unwrap();
    records.store().clone().close();
    let w = vaultcall::media::resample::read_wav(&wav).unwrap();
    let (left, right): (Vec<i16>, Vec<i16>) =
        w.samples.chunks_exact(2).map(|f| (f[0], f[1])).unzip();
    assert!(left.len() >= 2 * 8000, "{} samples", left.len());
    let fl = dominant_frequency(&left[2000..14_000], 200.0, 3800.0, 5.0);
    let fr = dominant_frequency(&right[2000..14_000], 200.0, 3800.0, 5.0);
    assert!(
        (fl - 1000.0).abs() <= 10.0 && (fr - 440.0).abs() <= 10.0,
        "{fl} Hz / {fr} Hz"
    );
    // The call's row holds the outcome.
    let conn = rusqlite::Connection::open(dir.join("var/vaultcall.db")).unwrap();
    let (status, by): (i64, String) = conn
        .query_row("SELECT status_code, hangup_by FROM calls WHERE id = (SELECT call_id FROM recordings WHERE id = ?1)", [id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((status, by.as_str()), (1, "robot"));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p))
            } else {
                out.push(p)
            }
        }
    }
    out
}

#[test]
fn an_erased_number_is_never_dialled() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    // Nothing listens on this trunk: a dial attempt would show as a failure, not as "Not dialled".
    let cfg = vaultcall_config(tmp.path(), free_udp_port(), "");
    let mut erase = Command::new(common::BIN)
        .args([
            "erase",
            "--phone",
            "-",
            "--ticket",
            "T-1",
            "--reason",
            "customer request",
            "--config",
        ])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    erase
        .stdin
        .take()
        .unwrap()
        .write_all(b"13800000000\n")
        .unwrap();
    let out = erase.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = dial(&cfg, &[]);
    assert!(
        d.stdout.starts_with("Not dialled"),
        "{}\n{}",
        d.stdout,
        d.stderr
    );
    assert_eq!(d.status_code(), 11);
    assert!(!d.stdout.contains("INVITE"), "{}", d.stdout);
}
