//! `vaultcall dial`: one test call through a trunk, for operators bringing up a trunk. Plays a
//! WAV file when answered, records both legs (left customer, right robot) into the encrypted
//! vault, and prints the SIP flow, the outcome with its status code, and media statistics.
//!
//! The call goes through the same records as a campaign call: the number is normalised, a
//! suppressed (erased or do-not-call) number is never dialled (status code 11), the callee
//! becomes a data subject, the call gets its row with the outcome, and the recording is sealed
//! chunk by chunk as it is produced. `--record-wav` additionally writes an unencrypted WAV, for
//! bringing up a trunk in a lab with a test line only.
//!
//! The callee's number is personal data: the printed flow shows it as a keyed hash.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::app::{Failure, exit};
use crate::config::{Config, TrunkConfig};
use crate::media::dtmf::DtmfNotice;
use crate::media::session::MediaEvent;
use crate::runtime::recording::VaultSink;
use crate::runtime::rtp_io::{
    MediaEndpoint, MediaHandle, PortPool, random_seeds, record, wav_file_sink,
};
use crate::runtime::sip_endpoint::{Command, EndpointConfig, SipEndpoint, ToCall};
use crate::runtime::trunk::{self, CallSetup};
use crate::runtime::trunk_state;
use crate::sip::dialog::{CallEvent, CallOutput, OutboundCall};
use crate::sip::message::{Message, StartLine};
use crate::sip::outcome::Outcome;
use crate::telemetry::Redacted;
use crate::time::{Clock, SystemClock};

/// What to dial and how (the arguments of `vaultcall dial`; doc comments are its help).
#[derive(Debug, Clone, clap::Args)]
pub struct DialArgs {
    /// The number to call.
    pub number: String,
    /// Trunk name (default: the first [[sip.trunks]]).
    #[arg(long)]
    pub trunk: Option<String>,
    /// WAV file to play when answered (16-bit PCM, any rate; resampled to 8 kHz).
    #[arg(long)]
    pub play: Option<PathBuf>,
    /// Record both legs into the encrypted vault (left customer, right robot).
    #[arg(long)]
    pub record: bool,
    /// Also write an UNENCRYPTED stereo WAV here (lab use with test lines only).
    #[arg(long, value_name = "OUT.wav")]
    pub record_wav: Option<PathBuf>,
    /// Hang up this many seconds after the answer.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// DTMF digits to send (RFC 4733) one second after the answer.
    #[arg(long)]
    pub dtmf: Option<String>,
    /// Transfer the answered call to this SIP URI (REFER, 转人工) one second after the answer.
    #[arg(long)]
    pub transfer: Option<String>,
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    u64::from_le_bytes(b)
}

/// A flow line with the Request-URI's user part hashed.
fn describe(m: &Message) -> String {
    match &m.start {
        StartLine::Request { method, uri } => {
            let shown = match uri.split_once('@') {
                Some((user, host)) => {
                    let (scheme, u) = user.split_once(':').unwrap_or(("sip", user));
                    format!("{scheme}:{}@{host}", Redacted(u))
                }
                None => uri.clone(),
            };
            format!("{method} {shown} (CSeq {})", m.essentials.cseq)
        }
        StartLine::Response { code, reason } => format!(
            "{code} {reason} (CSeq {} {})",
            m.essentials.cseq, m.essentials.cseq_method
        ),
    }
}

/// Runs `vaultcall dial`.
pub fn run(cfg: &Config, args: &DialArgs) -> Result<String, Failure> {
    let digits = args.number.strip_prefix('+').unwrap_or(&args.number);
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Failure {
            code: exit::USAGE,
            message: "the number must be digits with an optional leading +".into(),
        });
    }
    if let Some(d) = &args.dtmf
        && (d.is_empty()
            || !d
                .chars()
                .all(|c| c.is_ascii_digit() || "*#ABCD".contains(c)))
    {
        return Err(Failure {
            code: exit::USAGE,
            message: "--dtmf: digits 0-9, *, #, A-D".into(),
        });
    }
    let play = match &args.play {
        Some(p) => {
            let bytes = std::fs::read(p)
                .map_err(|e| Failure::runtime(format!("--play {}: {e}", p.display())))?;
            Some(
                crate::media::resample::wav_to_8k_mono(&bytes)
                    .map_err(|e| Failure::runtime(format!("--play {}: {e}", p.display())))?,
            )
        }
        None => None,
    };
    let (t, failover) = select_trunk(cfg, args.trunk.as_deref())?;
    // The records of the call: a suppressed number is never dialled.
    let records = crate::records::cli::open_records(cfg)?;
    let result = dial_recorded(cfg, args, t, play, &records);
    records.store().clone().close();
    result.map(|out| failover.unwrap_or_default() + &out)
}

/// The trunk named, or else failover (`trunk::choose`) over the keepalive state a running
/// daemon publishes: the first trunk not known to be down. Also says when it skipped one.
fn select_trunk<'c>(
    cfg: &'c Config,
    name: Option<&str>,
) -> Result<(&'c TrunkConfig, Option<String>), Failure> {
    if name.is_some() {
        return Ok((trunk::pick(cfg, name).map_err(Failure::config)?, None));
    }
    let now = crate::time::unix_ms(SystemClock.wall());
    let runtime_dir = cfg.resolve_paths(&|k| std::env::var(k).ok()).runtime_dir;
    let state = trunk_state::read(&runtime_dir)
        .ok()
        .filter(|s| now - s.written_at_ms <= trunk_state::STALE_AFTER_MS);
    let alive = |n: &str| {
        state
            .as_ref()
            .and_then(|s| s.trunks.iter().find(|x| x.name == n))
            .and_then(|x| x.alive)
    };
    let t = trunk::choose(cfg, &alive).map_err(Failure::config)?;
    let skipped: Vec<&str> = cfg
        .sip
        .trunks
        .iter()
        .take_while(|x| x.name != t.name)
        .map(|x| x.name.as_str())
        .collect();
    let note = match (skipped.is_empty(), alive(&t.name)) {
        (true, Some(false)) => Some(format!(
            "Every trunk is down (no answer to OPTIONS keepalives); trying {} anyway.\n",
            t.name
        )),
        (true, _) => None,
        (false, _) => Some(format!(
            "Failover: {} down (no answer to OPTIONS keepalives); using trunk {}.\n",
            skipped.join(", "),
            t.name
        )),
    };
    Ok((t, note))
}

/// The records around the call: checks and rows before, the outcome after. Store operations
/// block, so they run outside the async part.
fn dial_recorded(
    cfg: &Config,
    args: &DialArgs,
    t: &TrunkConfig,
    play: Option<Vec<i16>>,
    records: &crate::records::Records,
) -> Result<String, Failure> {
    let number = records.normalize(&args.number).map_err(|e| Failure {
        code: exit::USAGE,
        message: format!("the number cannot be used: {e}"),
    })?;
    if !records.may_dial(&number).map_err(Failure::runtime)? {
        let o = trunk::outcome_map(t).outcome(crate::sip::outcome::Ending::Blocked);
        return Ok(format!(
            "Not dialled: the number is on the suppression list (erased or do-not-call).\nOutcome: status code {} ({:?}), hangup by {:?}, cause {}\n",
            u8::from(o.status),
            o.status,
            o.hangup_by,
            o.cause
        ));
    }
    let subject = records.ensure_subject(&number).map_err(Failure::runtime)?;
    let call_row = records
        .start_call(&subject, Some(&t.name))
        .map_err(Failure::runtime)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Failure::runtime)?;
    let ctx = RecordCtx {
        records,
        subject: &subject,
        call_row,
    };
    let (out, end) = rt.block_on(dial(cfg, args, t, play, &ctx))?;
    records
        .store()
        .write(move |c| crate::store::calls::finish_call(c, call_row, &end))
        .map_err(Failure::runtime)?;
    Ok(out)
}

/// What the async part needs of the records.
struct RecordCtx<'a> {
    records: &'a crate::records::Records,
    subject: &'a crate::records::Subject,
    call_row: crate::ids::CallId,
}

struct Flow {
    t0: Instant,
    lines: Vec<String>,
}

impl Flow {
    fn note(&mut self, now: Instant, dir: &str, text: String) {
        let t = now.saturating_duration_since(self.t0).as_secs_f64();
        self.lines.push(format!("  {t:>8.3}s {dir} {text}"));
    }
}

#[allow(clippy::disallowed_methods)] // a shell command: it spawns the endpoint task
async fn dial(
    cfg: &Config,
    args: &DialArgs,
    t: &TrunkConfig,
    play: Option<Vec<i16>>,
    rc: &RecordCtx<'_>,
) -> Result<(String, crate::store::calls::CallEnd), Failure> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let call_row = rc.call_row;

    let target = trunk::resolve(t).await.map_err(Failure::runtime)?;
    let data_dir = cfg.resolve_paths(&|k| std::env::var(k).ok()).data_dir;
    let credentials = trunk::credentials(t, &data_dir).map_err(Failure::config)?;
    // An ephemeral port on the SIP address, so a running daemon keeps its port.
    let mut listen = cfg.sip.listen;
    listen.set_port(0);
    let ep_cfg = EndpointConfig {
        listen,
        public: cfg.sip.public_addr,
        timers: trunk::timers(cfg),
        max_transactions: cfg.sip.max_transactions,
        seed: random_u64(),
        user_agent: cfg.sip.user_agent.clone(),
    };
    let (mut endpoint, handle) = SipEndpoint::bind(ep_cfg, Vec::new(), clock.clone())
        .await
        .map_err(|e| Failure::runtime(format!("cannot bind a SIP socket on {listen}: {e}")))?;
    if let Some(peer) = trunk::tls_peer(t, &data_dir).map_err(Failure::config)? {
        endpoint.add_tls_peer(target.addr, peer);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let ep_task = tokio::spawn(endpoint.run(stop_rx));

    let pool = PortPool::new(&cfg.media);
    let sockets = pool.allocate().map_err(Failure::runtime)?;
    let setup = CallSetup {
        cfg,
        trunk: t,
        credentials,
        sip_local: handle.local(),
        rtp_local: sockets.local_rtp(),
        session_id: random_u64() >> 1,
    };
    let mut call = OutboundCall::new(
        trunk::call_config(&setup, &args.number),
        random_u64(),
        &handle.local().ip().to_string(),
    );
    let call_id = call.call_id().to_owned();
    let (events_tx, mut events) = mpsc::channel(256);
    handle
        .send(Command::Attach {
            call_id: call_id.clone(),
            events: events_tx,
        })
        .await;

    let mut flow = Flow {
        t0: clock.mono(),
        lines: Vec::new(),
    };
    let mut sockets = Some(sockets);
    let mut media: Option<MediaHandle> = None;
    let mut media_ended = false;
    let mut remote_rtp = None;
    let mut recordings = Vec::new();
    let mut vault_id = None;
    let mut hangup_at: Option<Instant> = None;
    let mut dtmf_at: Option<Instant> = None;
    let mut transfer_at: Option<Instant> = None;
    let mut dtmf_left: Vec<char> = args.dtmf.as_deref().unwrap_or_default().chars().collect();
    let mut answered_at = None;
    let mut dtmf = String::new();
    let mut outcome: Option<Outcome> = None;
    let far = clock.mono() + Duration::from_secs(86_400);
    call.start(clock.mono());
    while outcome.is_none() {
        let now = clock.mono();
        while let Some(out) = call.poll_output() {
            match out {
                CallOutput::Send(m) => {
                    flow.note(now, "→", describe(&m));
                    handle
                        .send(Command::Send {
                            call_id: call_id.clone(),
                            target,
                            message: m,
                        })
                        .await;
                }
                CallOutput::SendAck(m) | CallOutput::Resend(m) => {
                    flow.note(now, "→", describe(&m));
                    handle.send(Command::SendRaw { target, message: m }).await;
                }
                CallOutput::Respond { tx, response } => {
                    flow.note(now, "→", describe(&response));
                    handle
                        .send(Command::Respond {
                            tx,
                            message: response,
                        })
                        .await;
                }
                CallOutput::Event(e) => match e {
                    CallEvent::EarlyMedia(n)
                    | CallEvent::Answered(n)
                    | CallEvent::MediaUpdated(n) => {
                        let answered = matches!(e, CallEvent::Answered(_));
                        if let Some(params) = trunk::media_params(&n, remote_rtp) {
                            remote_rtp = Some(params.remote_rtp);
                            match (&media, sockets.take()) {
                                (None, Some(s)) => {
                                    let ep = MediaEndpoint::new(
                                        s,
                                        params,
                                        &cfg.media,
                                        random_seeds(),
                                        clock.mono(),
                                        clock.wall(),
                                    )
                                    .map_err(Failure::runtime)?;
                                    if args.record {
                                        // The store blocks: leave the async worker for it.
                                        let live = tokio::task::block_in_place(|| {
                                            rc.records.start_recording(rc.subject, call_row)
                                        })
                                        .map_err(Failure::runtime)?;
                                        vault_id = Some(live.id());
                                        recordings.push(record(
                                            ep.subscribe_taps(),
                                            Box::new(VaultSink::new(live)),
                                        ));
                                    }
                                    if let Some(path) = &args.record_wav {
                                        eprintln!(
                                            "vaultcall: writing an UNENCRYPTED recording to {} (lab use with test lines only)",
                                            path.display()
                                        );
                                        let sink = wav_file_sink(path).map_err(|e| {
                                            Failure::runtime(format!(
                                                "--record-wav {}: {e}",
                                                path.display()
                                            ))
                                        })?;
                                        recordings
                                            .push(record(ep.subscribe_taps(), Box::new(sink)));
                                    }
                                    media = Some(ep.start());
                                }
                                (Some(m), _) => {
                                    let _ = m.renegotiate(params).await;
                                }
                                (None, None) => {}
                            }
                        }
                        if answered {
                            answered_at = Some(now);
                            let talk = match (args.seconds, &play) {
                                (Some(s), _) => Duration::from_secs_f64(s.max(0.1)),
                                (None, Some(p)) => Duration::from_millis(p.len() as u64 / 8 + 1000),
                                (None, None) => Duration::from_secs(10),
                            };
                            hangup_at = Some(now + talk);
                            if !dtmf_left.is_empty() {
                                dtmf_at = Some(now + Duration::from_secs(1));
                            }
                            if args.transfer.is_some() {
                                transfer_at = Some(now + Duration::from_secs(1));
                            }
                            if let (Some(m), Some(p)) = (&media, &play) {
                                let _ = m.play(1, p.clone()).await;
                            }
                        }
                    }
                    CallEvent::TransferProgress { code } => {
                        flow.note(now, "·", format!("transfer progress {code}"))
                    }
                    CallEvent::Progress { .. } => {}
                    CallEvent::InfoDtmf(d) => dtmf.push(d),
                    CallEvent::Ended(o) => outcome = Some(o),
                },
            }
        }
        if outcome.is_some() {
            break;
        }
        let wake = [call.poll_timeout(), hangup_at, dtmf_at, transfer_at]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(far);
        let media_event = async {
            match media.as_mut() {
                Some(m) if !media_ended => m.next_event().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = events.recv() => {
                let now = clock.mono();
                match msg {
                    Some(ToCall::Response(r)) => { flow.note(now, "←", describe(&r)); call.handle_response(now, *r); }
                    Some(ToCall::Request(tx, r)) => { flow.note(now, "←", describe(&r)); call.handle_request(now, tx, *r); }
                    Some(ToCall::Ack(a)) => { flow.note(now, "←", describe(&a)); call.handle_ack(now, &a); }
                    Some(ToCall::Timeout(m, c)) => { flow.note(now, "×", format!("{m} CSeq {c} timed out")); call.handle_request_timeout(now, &m, c); }
                    Some(ToCall::TransportError(m, c)) => {
                        flow.note(now, "×", format!("{m} CSeq {c}: connection failed"));
                        call.handle_transport_error(now, &m, c);
                    }
                    None => break,
                }
            }
                        ev = media_event => match ev {
                Some(MediaEvent::Dtmf(DtmfNotice::End { digit, .. })) => dtmf.push(digit),
                Some(_) => {}
                // The media task ended (socket error): stop polling it; the call goes on
                // until its own end, and `close` reports what happened.
                None => {
                    media_ended = true;
                    flow.note(clock.mono(), "×", "media ended".into());
                }
            },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                let now = clock.mono();
                                if dtmf_at.is_some_and(|t| now >= t) && !dtmf_left.is_empty() {
                    let digit = dtmf_left.remove(0);
                    if let Some(m) = &media {
                        let _ = m.send_dtmf(digit, 160).await;
                    }
                    flow.note(now, "→", format!("DTMF {digit} (RFC 4733)"));
                    // 160 ms tone, 240 ms pause between digits.
                    dtmf_at = (!dtmf_left.is_empty()).then(|| now + Duration::from_millis(400));
                }
                                if let (Some(at), Some(uri)) = (transfer_at, &args.transfer)
                    && now >= at
                {
                    transfer_at = None;
                    if let Err(e) = call.transfer(now, uri) {
                        flow.note(now, "×", format!("transfer not started: {e}"));
                    }
                }
                if hangup_at.is_some_and(|h| now >= h) {
                    hangup_at = None;
                    call.hangup(now, "dial_duration");
                }
                if call.poll_timeout().is_some_and(|t| t <= now) {
                    call.handle_timeout(now);
                }
            }
            _ = tokio::signal::ctrl_c() => call.hangup(clock.mono(), "interrupted"),
        }
    }
    let ended = clock.mono();
    let stats = match media.take() {
        Some(m) => m.close().await.ok(),
        None => None,
    };
    let mut rec = None;
    for r in recordings {
        let summary = r.await.ok().and_then(Result::ok);
        rec = rec.or(summary);
    }
    handle.send(Command::Detach { call_id }).await;
    let _ = stop_tx.send(true);
    let _ = ep_task.await;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "SIP flow (trunk {}, callee {}):",
        t.name,
        Redacted(&args.number)
    );
    for l in &flow.lines {
        let _ = writeln!(out, "{l}");
    }
    let Some(o) = outcome else {
        return Err(Failure::runtime("the call ended without an outcome"));
    };
    // The call's row gets its outcome (docs/status-codes.md).
    let wall_ms = |t: Instant| {
        let back = clock.mono().saturating_duration_since(t);
        crate::time::unix_ms(clock.wall()) - back.as_millis() as i64
    };
    let end = crate::store::calls::CallEnd {
        answered_at_ms: answered_at.map(wall_ms),
        ended_at_ms: wall_ms(ended),
        status_code: u8::from(o.status),
        sip_status: match o.ending {
            crate::sip::outcome::Ending::Final { code, .. } => Some(code),
            _ => answered_at.map(|_| 200),
        },
        hangup_by: match o.hangup_by {
            crate::sip::outcome::HangupBy::Robot => "robot",
            crate::sip::outcome::HangupBy::Customer => "customer",
            crate::sip::outcome::HangupBy::System => "system",
        },
        hangup_cause: o.cause.clone(),
        media_stats_json: stats.as_ref().map(|s| {
            serde_json::json!({
                "packets_sent": s.packets_sent, "packets_received": s.packets_received,
                "packets_lost": s.packets_lost, "loss_percent": s.loss_percent,
                "jitter_ms": s.jitter_ms, "late_packets": s.late_packets,
            })
            .to_string()
        }),
    };

    let _ = writeln!(
        out,
        "Outcome: status code {} ({:?}), hangup by {:?}, cause {}",
        u8::from(o.status),
        o.status,
        o.hangup_by,
        o.cause
    );
    if let Some(a) = answered_at {
        let _ = writeln!(
            out,
            "Talk time: {:.2} s",
            ended.saturating_duration_since(a).as_secs_f64()
        );
    }
    if let Some(s) = stats {
        let _ = writeln!(
            out,
            "Media: sent {} packets, received {}, lost {} ({:.2} %), jitter {:.2} ms, late {}, concealed {}",
            s.packets_sent,
            s.packets_received,
            s.packets_lost,
            s.loss_percent,
            s.jitter_ms,
            s.late_packets,
            s.concealed_frames
        );
    }
    if !dtmf.is_empty() {
        let _ = writeln!(out, "DTMF received: {dtmf}");
    }
    let _ = writeln!(out, "Call record: {call_row}");
    if let Some(r) = rec {
        let secs = r.duration_ms() as f64 / 1000.0;
        if let Some(id) = vault_id {
            let _ = writeln!(
                out,
                "Recording: vault recording {id} ({secs:.2} s, stereo 8 kHz: left customer, right robot; encrypted — play it with GET /api/v1/recordings/{id}/content)"
            );
        }
        if let Some(p) = &args.record_wav {
            let _ = writeln!(out, "Unencrypted copy: {} ({secs:.2} s)", p.display());
        }
    }
    Ok((out, end))
}
