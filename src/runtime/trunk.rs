//! Turning trunk configuration into what the SIP cores and the media driver need: resolved
//! addresses, credentials read from their file, per-call SIP parameters, media parameters.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::config::{Config, TrunkConfig, TrunkTransport};
use crate::media::g711::Law;
use crate::media::session;
use crate::sip::auth::Credentials;
use crate::sip::dialog::CallConfig;
use crate::sip::outcome::{OutcomeMap, StatusCode};
use crate::sip::registration::RegConfig;
use crate::sip::sdp::{self, Codec};
use crate::sip::transaction::{Target, TimerConfig, Transport};

/// Why a trunk cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrunkError {
    /// No trunk of that name, or none configured.
    #[error("{0}")]
    NotFound(String),
    /// The host did not resolve.
    #[error("trunk {trunk}: cannot resolve {host}: {message}")]
    Resolve {
        /// Trunk.
        trunk: String,
        /// Host.
        host: String,
        /// Resolver error.
        message: String,
    },
    /// The password file is unreadable or too open.
    #[error("trunk {trunk}: password_file {path}: {message}")]
    Password {
        /// Trunk.
        trunk: String,
        /// File.
        path: String,
        /// Problem.
        message: String,
    },
    /// TLS settings are unusable (CA file, server name).
    #[error("trunk {0}: {1}")]
    Tls(String, crate::runtime::sip_stream::StreamTlsError),
}

/// Picks a trunk by name, or the first one.
pub fn pick<'c>(cfg: &'c Config, name: Option<&str>) -> Result<&'c TrunkConfig, TrunkError> {
    match name {
        Some(n) => {
            cfg.sip.trunks.iter().find(|t| t.name == n).ok_or_else(|| {
                TrunkError::NotFound(format!("no trunk named {n:?} in [[sip.trunks]]"))
            })
        }
        None => cfg
            .sip
            .trunks
            .first()
            .ok_or_else(|| TrunkError::NotFound("no [[sip.trunks]] configured".into())),
    }
}

/// Failover: the first trunk in config order that is not known to be down (its OPTIONS
/// keepalive went unanswered twice in a row). `alive(name)` is the daemon's view of a trunk:
/// `Some(false)` down, `Some(true)` up, `None` not probed (keepalive off, or no daemon state),
/// which counts as usable. When every trunk is down, the first one is still returned: the
/// call then fails on its own (timeout, 503) and gets its outcome, rather than never being
/// attempted.
pub fn choose<'c>(
    cfg: &'c Config,
    alive: &dyn Fn(&str) -> Option<bool>,
) -> Result<&'c TrunkConfig, TrunkError> {
    let first = pick(cfg, None)?;
    Ok(cfg
        .sip
        .trunks
        .iter()
        .find(|t| alive(&t.name) != Some(false))
        .unwrap_or(first))
}

/// Where a trunk's requests go: its outbound proxy, else its host and port.
pub async fn resolve(t: &TrunkConfig) -> Result<Target, TrunkError> {
    let transport = match t.transport {
        TrunkTransport::Udp => Transport::Udp,
        TrunkTransport::Tcp => Transport::Tcp,
        TrunkTransport::Tls => Transport::Tls,
    };
    let hostport = t
        .outbound_proxy
        .clone()
        .unwrap_or_else(|| format!("{}:{}", t.host, t.port));
    let hostport = if hostport.contains(':') {
        hostport
    } else {
        format!("{hostport}:5060")
    };
    let addr = tokio::net::lookup_host(&hostport)
        .await
        .map_err(|e| TrunkError::Resolve {
            trunk: t.name.clone(),
            host: hostport.clone(),
            message: e.to_string(),
        })?
        .next()
        .ok_or_else(|| TrunkError::Resolve {
            trunk: t.name.clone(),
            host: hostport.clone(),
            message: "no address".into(),
        })?;
    Ok(Target { addr, transport })
}

/// TLS settings of a TLS trunk: its CA file (or the system bundle) and its host as the name
/// the certificate must carry.
pub fn tls_peer(
    t: &TrunkConfig,
    data_dir: &Path,
) -> Result<Option<crate::runtime::sip_stream::TlsPeer>, TrunkError> {
    if t.transport != TrunkTransport::Tls {
        return Ok(None);
    }
    let ca = t
        .ca_file
        .as_ref()
        .map(|f| crate::config::under(data_dir, f));
    let config = crate::runtime::sip_stream::client_config(ca.as_deref())
        .map_err(|e| TrunkError::Tls(t.name.clone(), e))?;
    let name = crate::runtime::sip_stream::server_name(&t.host)
        .map_err(|e| TrunkError::Tls(t.name.clone(), e))?;
    Ok(Some(crate::runtime::sip_stream::TlsPeer { name, config }))
}

/// Via transport token and URI `transport` parameter of a trunk.
fn transport_tokens(t: &TrunkConfig) -> (&'static str, &'static str) {
    match t.transport {
        TrunkTransport::Udp => ("UDP", ""),
        TrunkTransport::Tcp => ("TCP", ";transport=tcp"),
        TrunkTransport::Tls => ("TLS", ";transport=tls"),
    }
}

/// The digest credentials of a trunk, the password read from its 0600 file.
pub fn credentials(t: &TrunkConfig, data_dir: &Path) -> Result<Option<Credentials>, TrunkError> {
    let (Some(user), Some(file)) = (&t.username, &t.password_file) else {
        return Ok(None);
    };
    let path = crate::config::under(data_dir, file);
    let err = |message: String| TrunkError::Password {
        trunk: t.name.clone(),
        path: path.display().to_string(),
        message,
    };
    let meta = std::fs::metadata(&path).map_err(|e| err(e.to_string()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(err(
            "must not be accessible to group or others (chmod 600)".into()
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
    let password = text.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(err("empty".into()));
    }
    Ok(Some(Credentials {
        username: user.clone(),
        password,
    }))
}

/// Transaction timers from config.
pub fn timers(cfg: &Config) -> TimerConfig {
    TimerConfig {
        t1: Duration::from_millis(cfg.sip.t1_ms),
        t2: Duration::from_millis(cfg.sip.t2_ms),
        t4: Duration::from_millis(cfg.sip.t4_ms),
    }
}

/// The default status-code table with the trunk's overrides applied.
pub fn outcome_map(t: &TrunkConfig) -> OutcomeMap {
    let mut m = OutcomeMap::default();
    for (k, v) in &t.status_map {
        if let (Ok(code), Ok(s)) = (k.parse::<u16>(), StatusCode::try_from(*v)) {
            m.sip.insert(code, s);
        }
    }
    for (k, v) in &t.q850_map {
        if let (Ok(cause), Ok(s)) = (k.parse::<u16>(), StatusCode::try_from(*v)) {
            m.q850.insert(cause, s);
        }
    }
    m
}

/// Everything one outbound call on trunk `t` needs from configuration.
pub struct CallSetup<'a> {
    /// Whole config (timers, user agent).
    pub cfg: &'a Config,
    /// The trunk.
    pub trunk: &'a TrunkConfig,
    /// Its credentials.
    pub credentials: Option<Credentials>,
    /// The SIP endpoint's address (Via, Contact).
    pub sip_local: SocketAddr,
    /// This call's RTP address (SDP).
    pub rtp_local: SocketAddr,
    /// Random session id for SDP `o=`.
    pub session_id: u64,
}

/// The SIP parameters of a call to `number`.
pub fn call_config(s: &CallSetup<'_>, number: &str) -> CallConfig {
    let t = s.trunk;
    let (via_transport, uri_param) = transport_tokens(t);
    let uri = format!("sip:{number}@{}:{}{uri_param}", t.host, t.port);
    let codecs = t.codecs.iter().filter_map(|c| Codec::parse(c)).collect();
    let rtp_ip = if s.rtp_local.ip().is_unspecified() {
        s.sip_local.ip()
    } else {
        s.rtp_local.ip()
    };
    CallConfig {
        request_uri: uri.clone(),
        to_uri: uri,
        from_uri: format!("sip:{}@{}", t.caller_id, t.host),
        from_display: t.caller_name.clone(),
        contact: format!("sip:vaultcall@{}{uri_param}", s.sip_local),
        via_sent_by: s.sip_local.to_string(),
        via_transport,
        route: t
            .outbound_proxy
            .iter()
            .map(|p| format!("<sip:{p};lr>"))
            .collect(),
        credentials: s.credentials.clone(),
        ring_timeout: Duration::from_secs(t.ring_timeout_secs),
        max_redirects: t.max_redirects,
        session_expires: (t.session_expires_secs > 0).then_some(t.session_expires_secs),
        sdp: sdp::Local {
            addr: rtp_ip,
            port: s.rtp_local.port(),
            codecs,
            dtmf_pt: 101,
            session_id: s.session_id,
            version: 1,
        },
        user_agent: s.cfg.sip.user_agent.clone(),
        timers: timers(s.cfg),
        outcomes: outcome_map(t),
    }
}

/// The registration parameters of trunk `t`.
pub fn reg_config(
    cfg: &Config,
    t: &TrunkConfig,
    credentials: Option<Credentials>,
    sip_local: SocketAddr,
) -> RegConfig {
    let (via_transport, uri_param) = transport_tokens(t);
    RegConfig {
        registrar: format!("sip:{}:{}{uri_param}", t.host, t.port),
        aor: format!(
            "sip:{}@{}",
            t.username.clone().unwrap_or_else(|| t.caller_id.clone()),
            t.host
        ),
        contact: format!(
            "sip:{}@{sip_local}{uri_param}",
            t.username.clone().unwrap_or_else(|| "vaultcall".into())
        ),
        via_sent_by: sip_local.to_string(),
        via_transport,
        expires: t.register_expires_secs,
        credentials,
        min_backoff: Duration::from_secs(30),
        max_backoff: Duration::from_secs(600),
        user_agent: cfg.sip.user_agent.clone(),
    }
}

/// Media parameters for the media driver from what SDP negotiated. A held stream (no remote
/// address) keeps its previous address and only receives.
pub fn media_params(
    n: &sdp::Negotiated,
    previous: Option<SocketAddr>,
) -> Option<session::Negotiated> {
    let remote = n.remote.or(previous)?;
    let law = match n.codec {
        Codec::Pcma => Law::Alaw,
        Codec::Pcmu => Law::Ulaw,
    };
    let mut m = session::Negotiated::g711(remote, law, n.dtmf_pt);
    m.ptime_ms = n.ptime_ms;
    // The peer's direction, seen from our side (RFC 3264 §6.1).
    m.direction = match (n.remote.is_some(), n.direction) {
        (false, _) | (_, sdp::Direction::Inactive) => session::Direction::Inactive,
        (true, sdp::Direction::SendRecv) => session::Direction::SendRecv,
        (true, sdp::Direction::SendOnly) => session::Direction::RecvOnly,
        (true, sdp::Direction::RecvOnly) => session::Direction::SendOnly,
    };
    Some(m)
}

/// Every configured trunk, ready for the endpoint: target resolved, credentials read,
/// registration core built for trunks that register.
pub async fn runtimes(
    cfg: &Config,
    data_dir: &Path,
    sip_local: SocketAddr,
    seed: u64,
) -> Result<Vec<crate::runtime::sip_endpoint::TrunkRuntime>, TrunkError> {
    let mut out = Vec::new();
    for (i, t) in cfg.sip.trunks.iter().enumerate() {
        let target = resolve(t).await?;
        let creds = credentials(t, data_dir)?;
        let registration = t.register.then(|| {
            crate::sip::registration::Registration::new(
                reg_config(cfg, t, creds.clone(), sip_local),
                seed.wrapping_add(i as u64),
                &sip_local.ip().to_string(),
            )
        });
        out.push(crate::runtime::sip_endpoint::TrunkRuntime {
            name: t.name.clone(),
            tls: tls_peer(t, data_dir)?,
            target,
            domain: format!("{}:{}", t.host, t.port),
            registration,
            keepalive: (t.keepalive_secs > 0).then(|| Duration::from_secs(t.keepalive_secs)),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(names: &[&str]) -> Config {
        let mut c = Config::default();
        for (i, n) in names.iter().enumerate() {
            c.sip.trunks.push(TrunkConfig::new(
                n,
                "127.0.0.1",
                5060 + i as u16,
                "4008001234",
            ));
        }
        c
    }

    #[test]
    fn failover_skips_trunks_that_stopped_answering() {
        let c = cfg(&["primary", "backup", "third"]);
        let down = |down: &'static [&'static str]| move |n: &str| Some(!down.contains(&n));
        assert_eq!(choose(&c, &down(&[])).unwrap().name, "primary");
        assert_eq!(choose(&c, &down(&["primary"])).unwrap().name, "backup");
        assert_eq!(
            choose(&c, &down(&["primary", "backup"])).unwrap().name,
            "third"
        );
        // Not probed (keepalive off, no daemon state) counts as usable.
        assert_eq!(choose(&c, &|_| None).unwrap().name, "primary");
        assert_eq!(
            choose(&c, &|n| (n == "primary").then_some(false))
                .unwrap()
                .name,
            "backup"
        );
        // All down: the first, so the call is attempted and gets an outcome.
        assert_eq!(
            choose(&c, &down(&["primary", "backup", "third"]))
                .unwrap()
                .name,
            "primary"
        );
        assert!(choose(&cfg(&[]), &|_| None).is_err());
    }
}
