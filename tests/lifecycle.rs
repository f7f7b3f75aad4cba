//! systemd integration seen from outside: READY carries the bound addresses, WATCHDOG=1 is sent
//! while healthy, STOPPING=1 on SIGTERM, and the phases show on /readyz.
#![allow(clippy::disallowed_methods)] // tests drive a real daemon in real time

mod common;

use std::time::Duration;

use common::{Daemon, test_config};

#[test]
fn watchdog_pings_while_healthy_and_ready_names_the_sockets() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = test_config(tmp.path(), "", "");
    let pid_env = [("WATCHDOG_USEC", "1000000".to_owned())];
    let mut d = Daemon::start_in_env(tmp.path(), &cfg, &pid_env);
    let ready = d
        .notes
        .iter()
        .find(|n| n.contains("READY=1"))
        .unwrap()
        .clone();
    assert!(
        ready.contains(&format!("admin=http://{}", d.admin)),
        "{ready}"
    );
    assert!(ready.contains(&format!("sip=udp:{}", d.sip)), "{ready}");
    assert!(ready.contains(&format!("MAINPID={}", d.pid())), "{ready}");
    // WatchdogSec=1s: pings every 0.5 s. Count a few to see they keep coming.
    for _ in 0..3 {
        let before = d.notes.iter().filter(|n| n.contains("WATCHDOG=1")).count();
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            let mut buf = [0u8; 512];
            if let Ok(n) = d.notify.recv(&mut buf) {
                d.notes
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            if d.notes.iter().filter(|n| n.contains("WATCHDOG=1")).count() > before {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no WATCHDOG=1; notes {:?}",
                d.notes
            );
        }
    }
    d.stop();
}

#[test]
fn a_watchdog_meant_for_another_process_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = test_config(tmp.path(), "", "");
    let env = [
        ("WATCHDOG_USEC", "200000".to_owned()),
        ("WATCHDOG_PID", "1".to_owned()),
    ];
    let mut d = Daemon::start_in_env(tmp.path(), &cfg, &env);
    std::thread::sleep(Duration::from_millis(600));
    let mut buf = [0u8; 512];
    while let Ok(n) = d.notify.recv(&mut buf) {
        d.notes
            .push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        !d.notes.iter().any(|n| n.contains("WATCHDOG=1")),
        "{:?}",
        d.notes
    );
    d.stop();
}

#[test]
fn sigterm_right_after_ready_is_a_clean_stop() {
    // systemd may stop the unit the moment it sees READY=1: the signal handlers must be in
    // place by then (they once were installed just after READY, and such a SIGTERM killed the
    // process without a drain).
    let tmp = tempfile::tempdir().unwrap();
    let cfg = test_config(tmp.path(), "", "");
    for _ in 0..3 {
        let mut d = Daemon::start_in(tmp.path(), &cfg);
        d.stop();
    }
}
