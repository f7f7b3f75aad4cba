//! Requests from the admin API to the app's main loop (which owns the config).

use tokio::sync::{mpsc, oneshot};

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    /// Keys whose new values are in effect.
    pub applied: Vec<String>,
    /// Keys that changed but need a restart to take effect (old values stay in use).
    pub restart_required: Vec<String>,
    /// Why the reload was refused (the old config stays in force), if it was.
    pub error: Option<String>,
}

/// A request to the main loop.
#[derive(Debug)]
pub enum Control {
    /// Re-read the config file, as on SIGHUP.
    Reload(oneshot::Sender<ReloadReport>),
}

/// The admin API's end of the control channel.
#[derive(Debug, Clone)]
pub struct ControlHandle(pub mpsc::Sender<Control>);

impl ControlHandle {
    /// Asks for a reload and waits for the report (from a non-async thread).
    pub fn reload_blocking(&self) -> Option<ReloadReport> {
        let (tx, rx) = oneshot::channel();
        self.0.blocking_send(Control::Reload(tx)).ok()?;
        rx.blocking_recv().ok()
    }
}
