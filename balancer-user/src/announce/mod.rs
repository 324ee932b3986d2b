//! `[announce]`: a kernel route per VIP address this host should receive traffic for, in a
//! table of its own, for the site's BGP daemon (BIRD, `packaging/bird.conf`) to export. The
//! routers then spread each VIP over the hosts announcing it (ECMP) and stop sending to a host
//! as soon as it withdraws.
//!
//! `decide` says what to announce (no I/O), `routes` keeps the kernel table, `link` asks
//! whether the XDP program is still attached, `withdrawn` keeps an operator's withdraw across
//! restarts; this module ties them to the data plane's model.
//!
//! Health changes reach the model from several writers (VIP health checks, the admin API, the
//! proxy's linked L7 health), so the announcer polls the model every `POLL` instead of asking
//! each writer to notify it: a poll costs one uncontended lock and a walk over the VIPs, and
//! 100 ms is small next to the health checks' own `fall × interval` before a backend is down.

mod decide;
mod link;
mod routes;
mod withdrawn;

use std::{
    collections::BTreeSet,
    net::IpAddr,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde::Serialize;
use tokio::sync::watch;

pub use decide::{Host, Verdict};
pub use routes::{PROTOCOL, RouteTable};

use crate::{config::AnnounceConfig, dataplane::SharedControl};

/// How often the announcer compares the model with the routes it installed.
pub const POLL: Duration = Duration::from_millis(100);

/// The announce state, as `/api/state` and the announce endpoints answer it.
#[derive(Debug, Clone, Serialize)]
pub struct AnnounceView {
    /// "announcing", "withdrawn" (by the operator) or "stopping".
    pub state: &'static str,
    /// An operator's withdraw is in force (also while stopping).
    pub operator_withdrawn: bool,
    pub table: u32,
    pub protocol: u8,
    /// The addresses whose routes are in the table now.
    pub announced: Vec<IpAddr>,
    pub vips: Vec<Verdict>,
    /// The last failure to change the table, until a pass succeeds.
    pub error: Option<String>,
}

pub struct Announcer {
    config: AnnounceConfig,
    control: SharedControl,
    withdrawn: AtomicBool,
    stopping: AtomicBool,
    link: link::XdpLink,
    /// The last answer of `link` (a failed question keeps it).
    xdp_attached: AtomicBool,
    /// The last question failed (logged once until one succeeds).
    xdp_unknown: AtomicBool,
    /// The table and what this process installed in it; one pass at a time.
    routes: tokio::sync::Mutex<Installed>,
    view: Mutex<AnnounceView>,
}

struct Installed {
    table: RouteTable,
    addresses: BTreeSet<IpAddr>,
}

/// Why the announcer cannot start (the start reports it after "[announce]: ").
#[derive(Debug, thiserror::Error)]
pub enum AnnounceStartError {
    /// The routing table or the XDP interface cannot be reached, or the flush failed.
    #[error(transparent)]
    Routes(#[from] routes::RouteError),
    #[error("announce.state_file {0}")]
    StateFile(#[source] withdrawn::WithdrawnLoadError),
}

impl Announcer {
    /// Flushes the routes a previous run left (a crash leaves them, and they would attract
    /// traffic this process may not want), reads the operator's withdraw, and announces what
    /// the model says. The XDP program is attached by the time this runs.
    pub async fn start(
        config: &AnnounceConfig,
        control: SharedControl,
        interface: &str,
    ) -> Result<std::sync::Arc<Self>, AnnounceStartError> {
        let table = RouteTable::open(config.table)?;
        let link = link::XdpLink::open(interface)?;
        let removed = table.flush().await?;
        if !removed.is_empty() {
            tracing::info!(
                table = config.table,
                routes = %removed.join(", "),
                "announce: removed routes left by a previous run"
            );
        }
        let withdrawn =
            withdrawn::load(&config.state_file).map_err(AnnounceStartError::StateFile)?;
        if withdrawn {
            tracing::warn!(
                state_file = %config.state_file.display(),
                "announce: this host was withdrawn by an operator: nothing is announced until POST /api/announce/restore"
            );
        }
        let announcer = std::sync::Arc::new(Self {
            config: config.clone(),
            control,
            withdrawn: AtomicBool::new(withdrawn),
            stopping: AtomicBool::new(false),
            link,
            xdp_attached: AtomicBool::new(true),
            xdp_unknown: AtomicBool::new(false),
            routes: tokio::sync::Mutex::new(Installed {
                table,
                addresses: BTreeSet::new(),
            }),
            view: Mutex::new(AnnounceView {
                state: "announcing",
                operator_withdrawn: withdrawn,
                table: config.table,
                protocol: PROTOCOL,
                announced: Vec::new(),
                vips: Vec::new(),
                error: None,
            }),
        });
        announcer.reconcile().await;
        Ok(announcer)
    }

    /// Keeps the table in step with the model until `shutdown`.
    pub async fn run(self: std::sync::Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.reconcile().await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One pass: what should be announced now, and the table changes to get there. A failed
    /// change is logged and retried on the next pass.
    pub async fn reconcile(&self) -> AnnounceView {
        // The model first, before the table's lock: its own lock may be held for a while (a
        // Maglev table rewritten after a health change), and a withdraw must not wait for it.
        let vips = decide::vip_health(
            self.control
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .vips(),
        );
        self.check_xdp().await;
        let mut installed = self.routes.lock().await;
        // Read under the table's lock: a withdraw or stop that ran while this pass waited
        // for it counts.
        let host = self.host();
        let verdicts = decide::verdicts(host, &vips);
        let wanted = decide::addresses(&verdicts);
        let error = apply(&mut installed, &wanted).await;
        let mut view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(err) = &error
            && view.error.as_ref() != Some(err)
        {
            tracing::error!("announce: {err}; retrying every {POLL:?}");
        }
        *view = AnnounceView {
            state: if !host.serving {
                "stopping"
            } else if host.withdrawn {
                "withdrawn"
            } else {
                "announcing"
            },
            operator_withdrawn: host.withdrawn,
            table: self.config.table,
            protocol: PROTOCOL,
            announced: installed.addresses.iter().copied().collect(),
            vips: verdicts,
            error,
        };
        view.clone()
    }

    /// Asks the kernel whether the program is still attached; says so in the log when that
    /// changes. A failed question keeps the last answer: one lost netlink reply must not
    /// withdraw every VIP.
    async fn check_xdp(&self) {
        match self.link.attached().await {
            Ok(attached) => {
                if self.xdp_attached.swap(attached, Ordering::SeqCst) != attached {
                    if attached {
                        tracing::info!(
                            interface = self.link.interface(),
                            "announce: an XDP program is attached again"
                        );
                    } else {
                        tracing::error!(
                            interface = self.link.interface(),
                            "announce: no XDP program is attached: withdrawing every VIP"
                        );
                    }
                }
            }
            Err(err) => {
                if !self.xdp_unknown.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        interface = self.link.interface(),
                        "announce: cannot tell whether XDP is attached (keeping the last answer): {err}"
                    );
                }
                return;
            }
        }
        self.xdp_unknown.store(false, Ordering::SeqCst);
    }

    fn host(&self) -> Host {
        Host {
            serving: !self.stopping.load(Ordering::SeqCst),
            xdp_attached: self.xdp_attached.load(Ordering::SeqCst),
            withdrawn: self.withdrawn.load(Ordering::SeqCst),
        }
    }

    /// A host-wide withdraw (operator or SIGTERM): every route goes at once, without reading
    /// the model; then a pass for the view.
    async fn withdraw_everything(&self) -> AnnounceView {
        let error = apply(&mut *self.routes.lock().await, &BTreeSet::new()).await;
        if let Some(err) = error {
            tracing::error!("announce: {err}; retrying every {POLL:?}");
        }
        self.reconcile().await
    }

    /// The state as of the last pass.
    pub fn view(&self) -> AnnounceView {
        self.view
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `POST /api/announce/withdraw` (`true`) or `…/restore` (`false`): recorded in
    /// `announce.state_file` first, so that what the operator was told survives a restart,
    /// then applied. When the file cannot be written the change still applies (an operator
    /// draining a host must not be refused) and the error says it will not survive a restart.
    pub async fn set_withdrawn(&self, withdrawn: bool) -> (AnnounceView, Option<String>) {
        let saved = withdrawn::save(&self.config.state_file, withdrawn).err().map(|err| {
            format!(
                "announce.state_file {}: {err}: the change applies, but a restart will not keep it",
                self.config.state_file.display()
            )
        });
        self.withdrawn.store(withdrawn, Ordering::SeqCst);
        let view = if withdrawn {
            self.withdraw_everything().await
        } else {
            self.reconcile().await
        };
        (view, saved)
    }

    /// SIGTERM: withdraws every route (the XDP program keeps forwarding what still arrives).
    pub async fn stop(&self) -> AnnounceView {
        self.stopping.store(true, Ordering::SeqCst);
        self.withdraw_everything().await
    }

    pub fn withdraw_delay(&self) -> Duration {
        self.config.withdraw_delay
    }
}

/// Removes from the table what is not `wanted` and adds what is missing (removals first: a
/// withdraw should not wait behind additions). Returns the last failure, if any.
async fn apply(installed: &mut Installed, wanted: &BTreeSet<IpAddr>) -> Option<String> {
    let changes = decide::changes(&installed.addresses, wanted);
    let mut error = None;
    for address in changes.remove {
        match installed.table.remove(address).await {
            Ok(()) => {
                installed.addresses.remove(&address);
                tracing::info!(%address, table = installed.table.table(), "announce: withdrawn");
            }
            Err(err) => error = Some(err.to_string()),
        }
    }
    for address in changes.add {
        match installed.table.add(address).await {
            Ok(()) => {
                installed.addresses.insert(address);
                tracing::info!(%address, table = installed.table.table(), "announce: announced");
            }
            Err(err) => error = Some(err.to_string()),
        }
    }
    error
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Each text against the `format!` / `to_string` that made it when these errors were
    /// strings.
    #[test]
    fn start_error_texts_are_those_of_the_string_errors() {
        let io = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(
            AnnounceStartError::from(routes::RouteError::Socket(io())).to_string(),
            routes::RouteError::Socket(io()).to_string()
        );
        let path = Path::new("/var/lib/balancer/announce.json");
        let load = || withdrawn::WithdrawnLoadError::Read {
            path: path.to_path_buf(),
            source: io(),
        };
        assert_eq!(
            AnnounceStartError::StateFile(load()).to_string(),
            format!("announce.state_file {}", load())
        );
        assert_eq!(
            AnnounceStartError::StateFile(load()).to_string(),
            format!("announce.state_file {}: {}", path.display(), io())
        );
    }
}
