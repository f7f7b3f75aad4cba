//! The SIP UDP socket driver.
//!
//! The socket is bound during start-up, before READY=1, so a port conflict is a start failure
//! and not a surprise at the first call. Until the SIP transaction core is wired in, datagrams
//! are read, counted and discarded (`vaultcall_sip_datagrams_discarded_total`): the daemon does
//! not answer SIP yet.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::telemetry::metrics::{self, Counter};

/// Largest datagram read; SIP over UDP must stay well below this (RFC 3261 §18.1.1).
const MAX_DATAGRAM: usize = 65_535;

/// A bound SIP socket.
pub struct SipIo {
    socket: UdpSocket,
    discarded: Arc<Counter>,
}

impl SipIo {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(addr).await?;
        let discarded = metrics::global()
            .counter(
                "vaultcall_sip_datagrams_discarded_total",
                "SIP datagrams received and discarded (no SIP core wired in yet).",
                &[],
            )
            .with(&[]);
        Ok(Self { socket, discarded })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Reads until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, _from)) => {
                        self.discarded.inc();
                        log::trace!(bytes = n; "SIP datagram discarded");
                    }
                    Err(e) => log::debug!(error:% = e; "SIP socket receive error"),
                },
                _ = stop.changed() => break,
            }
        }
    }
}
