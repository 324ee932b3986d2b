//! `balancer run`: start every configured part, reload on SIGHUP or `POST /api/reload`, serve
//! until SIGINT/SIGTERM, then shut down in order (withdraw the announced routes and wait
//! `announce.withdraw_delay`, drain the proxy, stop admin, detach XDP).

use std::{
    path::Path,
    sync::{Arc, PoisonError},
};

use anyhow::Context;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
};

use crate::{
    admin::{self, AdminContext, ReloadRefused, ReloadRequest, XdpView},
    announce::Announcer,
    config::{Config, XdpAttachMode},
    dataplane::{Dataplane, DecapProgram, supervise},
    proxy::{Proxy, metrics::HttpMetrics},
};

/// What `check-config` verifies beyond parsing: every file the L7 config names (certificates,
/// keys, error pages, static directories) opens, without binding anything.
pub fn check_l7(config: &crate::config::L7Config) -> anyhow::Result<()> {
    Ok(crate::proxy::Proxy::check(config)?)
}

pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    serve(config_path, Config::load(config_path)?, None).await
}

/// `balancer upgrade`: takes the listeners and the XDP link over from the balancer running
/// with this config (through `proxy.upgrade_socket`), then serves in its place.
pub async fn upgrade(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    if let Some(xdp) = &config.xdp
        && xdp.pin_path.is_none()
    {
        anyhow::bail!(
            "{}: an upgrade hands the XDP program over through its pinned link: set xdp.pin_path",
            config_path.display()
        );
    }
    let path = config.l7.proxy.upgrade_socket_path().to_path_buf();
    let (inherited, stream) = tokio::task::spawn_blocking(move || crate::upgrade::take_over(&path))
        .await?
        .map_err(anyhow::Error::msg)?;
    tracing::info!(
        from = inherited.from_pid,
        listeners = inherited.listeners.len(),
        "upgrade: took the listening sockets over"
    );
    serve(config_path, config, Some(Takeover { inherited, stream })).await
}

/// What `balancer upgrade` got from the process it replaces.
struct Takeover {
    inherited: crate::upgrade::Inherited,
    /// Where to say `ready` once serving.
    stream: std::os::unix::net::UnixStream,
}

/// Why the serving loop ended.
enum Ending {
    Signal(&'static str),
    /// A new process took the listeners over.
    HandedOver,
}

async fn serve(
    config_path: &Path,
    config: Config,
    mut takeover: Option<Takeover>,
) -> anyhow::Result<()> {
    let token = admin_token(&config).map_err(anyhow::Error::msg)?;
    let inherited_admin = takeover
        .as_mut()
        .and_then(|t| t.inherited.admin.take())
        .filter(|(address, _)| *address == config.admin.listen);
    let admin_listener = match inherited_admin {
        Some((_, socket)) => tokio::net::TcpListener::from_std(socket)?,
        None => tokio::net::TcpListener::bind(config.admin.listen)
            .await
            .with_context(|| format!("admin.listen: cannot listen on {}", config.admin.listen))?,
    };
    let admin_socket = crate::proxy::duplicate(&admin_listener)?;
    let http_metrics = HttpMetrics::default();
    let mut proxy = Proxy::start(
        &config.l7,
        http_metrics.clone(),
        takeover.as_mut().map(|t| &mut t.inherited),
    )?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut dataplane = None;
    let mut xdp_view = None;
    let mut supervisors = None;
    if let Some(xdp) = &config.xdp {
        // Next hops first: a restart with pinned maps must not take over (or write a
        // backend slot) before it knows where the backends' packets go.
        let hops = supervise::resolve_before_start(&config.vips).await;
        let (plane, control, stats) = Dataplane::start(xdp, &config.vips, &hops)?;
        let control = Arc::new(std::sync::Mutex::new(control));
        supervisors = Some(supervise::spawn(control.clone(), shutdown_rx.clone()));
        xdp_view = Some(XdpView {
            interface: plane.interface().to_string(),
            mode: plane.mode(),
            stats,
            control,
        });
        dataplane = Some(plane);
    } else {
        tracing::info!("no [xdp] section: the XDP data plane is not loaded");
    }
    // Validation allows [announce] only with [xdp]: routes go out once the program is attached.
    let announcer = match (&config.announce, &xdp_view) {
        (Some(announce), Some(xdp)) => {
            let announcer = Announcer::start(announce, xdp.control.clone(), &xdp.interface)
                .await
                .map_err(anyhow::Error::msg)
                .context("[announce]")?;
            tokio::spawn(announcer.clone().run(shutdown_rx.clone()));
            Some(announcer)
        }
        _ => None,
    };

    // The handover freezes the map writers through it.
    let handover_control = xdp_view.as_ref().map(|xdp| xdp.control.clone());
    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let context = Arc::new(AdminContext {
        xdp: xdp_view,
        started: std::time::SystemTime::now(),
        proxy: Some(proxy.view()),
        reload: Some(reload_tx),
        token: std::sync::RwLock::new(token),
        announce: announcer.clone(),
    });
    tracing::info!(listen = %config.admin.listen, "admin API listening");
    if let Some(xdp) = &context.xdp {
        tokio::spawn(crate::linked::sync_health(
            proxy.view(),
            xdp.control.clone(),
            shutdown_rx.clone(),
        ));
    }
    let admin_task = tokio::spawn(admin::serve(admin_listener, context.clone(), shutdown_rx));
    let upgrade_path = config.l7.proxy.upgrade_socket_path().to_path_buf();
    let upgrade_socket = match takeover {
        Some(Takeover { stream, .. }) => {
            // Serving: the old process may stop accepting now.
            crate::upgrade::confirm(stream).context("telling the old process we are ready")?;
            tracing::info!("upgrade: serving; the old process drains and exits");
            // Ours from now on; the old process's drop leaves a newer socket alone.
            Some(
                crate::upgrade::UpgradeSocket::bind(&upgrade_path, true)
                    .with_context(|| format!("proxy.upgrade_socket {}", upgrade_path.display()))?,
            )
        }
        None => upgrade_socket(&config, &upgrade_path)?,
    };
    // Listeners are bound, XDP is attached and the admin API accepts: systemd may go on. After
    // an upgrade this process is the service's main process (the unit has NotifyAccess=all).
    crate::notify::ready_as_main("serving");

    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut user1 =
        signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    let mut user2 =
        signal(SignalKind::user_defined2()).context("installing the SIGUSR2 handler")?;
    let mut current = config;
    let ending = loop {
        tokio::select! {
            _ = interrupt.recv() => break Ending::Signal("SIGINT"),
            _ = terminate.recv() => break Ending::Signal("SIGTERM"),
            _ = user2.recv() => start_new_binary(config_path),
            Some(stream) = accept_upgrade(upgrade_socket.as_ref()) => {
                use std::os::fd::AsRawFd;
                let admin = (current.admin.listen, admin_socket.as_raw_fd());
                let listeners = proxy.listener_sockets();
                let control = handover_control.clone();
                let result = tokio::task::spawn_blocking(move || {
                    // The new process writes the maps as it starts, before its `ready`: this
                    // one must not meanwhile (both could take the same unused half of a VIP's
                    // table). Its writers wait on the lock; a failed handover lets them go
                    // on, a completed one retires them before the lock is let go.
                    let mut frozen = control
                        .as_ref()
                        .map(|control| control.lock().unwrap_or_else(PoisonError::into_inner));
                    let result = crate::upgrade::hand_over(stream, admin, &listeners);
                    if result.is_ok()
                        && let Some(control) = frozen.as_mut()
                    {
                        control.retire();
                    }
                    result
                })
                .await
                .map_err(|err| crate::upgrade::HandOverError::Failed(err.into()))
                .and_then(|result| result);
                match result {
                    Ok(()) => break Ending::HandedOver,
                    Err(crate::upgrade::HandOverError::NotAsked) => {
                        tracing::debug!("upgrade socket: a connection that asked for nothing (a liveness check)");
                    }
                    Err(crate::upgrade::HandOverError::Failed(err)) => {
                        tracing::error!("upgrade failed, this process keeps serving: {err}");
                    }
                }
            }
            _ = hangup.recv() => {
                match reload(config_path, &mut current, &mut proxy, &context) {
                    Ok(summary) => tracing::info!("SIGHUP: {summary}"),
                    Err(err) => tracing::error!("SIGHUP: reload refused, the previous config keeps serving: {err}"),
                }
            }
            _ = user1.recv() => {
                match proxy.reopen_access_log() {
                    Ok(()) => tracing::info!("SIGUSR1: access log reopened"),
                    Err(err) => tracing::error!("SIGUSR1: {err}; logging on to the file open before"),
                }
            }
            Some(request) = reload_rx.recv() => {
                let result = reload(config_path, &mut current, &mut proxy, &context);
                match &result {
                    Ok(summary) => tracing::info!("API: {summary}"),
                    Err(err) => tracing::error!("API: reload refused, the previous config keeps serving: {err}"),
                }
                let _ = request.reply.send(result);
            }
        }
    };
    let timeout = current.l7.proxy.shutdown_timeout;
    match ending {
        Ending::Signal(signal_name) => {
            tracing::info!(
                "{signal_name} received: shutting down (waiting up to {timeout:?} for requests in flight)"
            );
            crate::notify::stopping();
            if let Some(announcer) = &announcer {
                withdraw_before_stopping(announcer).await;
            }
            proxy.shutdown(timeout).await;
            let _ = shutdown_tx.send(true);
        }
        Ending::HandedOver => {
            tracing::info!(
                "upgrade: the new process serves; draining (up to {timeout:?}), then exiting"
            );
            // The new process checks health and writes the maps from now on.
            let _ = shutdown_tx.send(true);
            if let Some(tasks) = &mut supervisors {
                tasks.abort_all();
            }
            drop(upgrade_socket);
            proxy.drain_after_handover(timeout).await;
        }
    }
    let _ = admin_task.await;
    if let Some(mut tasks) = supervisors {
        tasks.abort_all();
    }
    if let Some(mut plane) = dataplane {
        plane.shut_down()?;
    }
    Ok(())
}

/// SIGTERM's first steps: withdraw every route, then give the routers `withdraw_delay` to
/// stop sending here before the proxy stops accepting. The XDP program forwards throughout.
async fn withdraw_before_stopping(announcer: &Announcer) {
    let view = announcer.stop().await;
    let delay = announcer.withdraw_delay();
    match &view.error {
        None => tracing::info!(
            table = view.table,
            "announce: every route withdrawn; waiting {delay:?} (announce.withdraw_delay) for the routers"
        ),
        Some(err) => tracing::error!(
            "announce: withdrawing failed ({err}); still announced: {:?}; waiting {delay:?}",
            view.announced
        ),
    }
    tokio::time::sleep(delay).await;
}

/// The upgrade socket of a fresh start: the configured path must be ours; the default one is
/// given up with a warning when another balancer holds it (tests run many side by side).
fn upgrade_socket(
    config: &Config,
    path: &Path,
) -> anyhow::Result<Option<crate::upgrade::UpgradeSocket>> {
    match crate::upgrade::UpgradeSocket::bind(path, false) {
        Ok(socket) => Ok(Some(socket)),
        Err(err) if config.l7.proxy.upgrade_socket.is_some() => {
            Err(err).with_context(|| format!("proxy.upgrade_socket {}", path.display()))
        }
        Err(err) => {
            tracing::warn!(
                socket = %path.display(),
                "no upgrade socket, so `balancer upgrade` cannot replace this process: {err}"
            );
            Ok(None)
        }
    }
}

/// The next connection on the upgrade socket; never, without one.
async fn accept_upgrade(
    socket: Option<&crate::upgrade::UpgradeSocket>,
) -> Option<tokio::net::UnixStream> {
    match socket {
        Some(socket) => match socket.accept().await {
            Ok(stream) => Some(stream),
            Err(err) => {
                tracing::warn!("upgrade socket: accept failed: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                None
            }
        },
        None => std::future::pending().await,
    }
}

/// SIGUSR2: starts this binary again as `balancer upgrade --config FILE`, as nginx does; it
/// takes the listeners over through the upgrade socket. A failure is logged and this process
/// serves on.
fn start_new_binary(config_path: &Path) {
    let binary = match std::env::current_exe() {
        Ok(binary) => binary,
        Err(err) => {
            tracing::error!("SIGUSR2: cannot find this binary to start it again: {err}");
            return;
        }
    };
    let config = std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    match std::process::Command::new(&binary)
        .arg("upgrade")
        .arg("--config")
        .arg(&config)
        .spawn()
    {
        Ok(mut child) => {
            tracing::info!(pid = child.id(), binary = %binary.display(), "SIGUSR2: started the new process");
            // Reaped when it ends (it outlives this process when the upgrade succeeds).
            std::thread::spawn(move || {
                if let Ok(status) = child.wait()
                    && !status.success()
                {
                    tracing::error!(
                        "SIGUSR2: the new process failed ({status}); this process keeps serving"
                    );
                }
            });
        }
        Err(err) => tracing::error!(
            binary = %binary.display(),
            "SIGUSR2: cannot start the new process: {err}"
        ),
    }
}

/// Reads the config file again and applies it, all or nothing. Parts that cannot change while
/// running are refused with the reason rather than half applied.
/// A reload between systemd's `RELOADING=1` and `READY=1` (sent whether it was applied or
/// refused: either way the process serves on).
fn reload(
    config_path: &Path,
    current: &mut Config,
    proxy: &mut Proxy,
    admin: &AdminContext,
) -> Result<String, ReloadRefused> {
    crate::notify::reloading();
    let result = apply_reload(config_path, current, proxy, admin);
    crate::notify::ready(match &result {
        Ok(_) => "serving (config reloaded)",
        Err(_) => "serving (reload refused: the previous config keeps serving)",
    });
    result
}

fn apply_reload(
    config_path: &Path,
    current: &mut Config,
    proxy: &mut Proxy,
    admin: &AdminContext,
) -> Result<String, ReloadRefused> {
    let new = Config::load(config_path)?;
    if new.admin.listen != current.admin.listen {
        return Err(ReloadRefused::AdminListen);
    }
    let token = admin_token(&new)?;
    if new.announce != current.announce {
        return Err(ReloadRefused::Announce);
    }
    if new.xdp != current.xdp || new.vips != current.vips {
        return Err(ReloadRefused::Dataplane);
    }
    proxy.reload(&new.l7)?;
    *admin
        .token
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = token;
    let summary = format!(
        "config reloaded from {}: {} listeners, {} routes, {} pools",
        config_path.display(),
        new.l7.listeners.len(),
        new.l7.routes.len(),
        new.l7.pools.len()
    );
    *current = new;
    Ok(summary)
}

/// The admin API's bearer token, read from `admin.token_file` (each start and reload).
fn admin_token(config: &Config) -> Result<Option<String>, admin::TokenError> {
    config
        .admin
        .token_file
        .as_deref()
        .map(admin::read_token)
        .transpose()
}

/// `balancer decap`: attach the decapsulation program until told to stop.
pub async fn decap(
    interface: String,
    addresses: Vec<std::net::IpAddr>,
    mode: String,
) -> anyhow::Result<()> {
    let mode = match mode.as_str() {
        "auto" => XdpAttachMode::Auto,
        "driver" => XdpAttachMode::Driver,
        "skb" => XdpAttachMode::Skb,
        other => anyhow::bail!("--mode {other:?}: use auto, driver or skb"),
    };
    let addresses = if addresses.is_empty() {
        crate::dataplane::nexthop::interface_addresses(&interface)
            .await
            .with_context(|| format!("reading the addresses of {interface}"))?
    } else {
        addresses
    };
    anyhow::ensure!(
        !addresses.is_empty(),
        "{interface} has no address to accept encapsulated packets for; give --address"
    );
    let mut program = DecapProgram::attach(&interface, mode, &addresses)?;
    let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    tracing::info!(%interface, mode = program.mode.as_str(), addresses = %list.join(", "), "balancer_decap attached");
    let signal_name = wait_for_shutdown_signal().await?;
    tracing::info!("{signal_name} received: detaching");
    for (reason, counter) in program.counters()? {
        tracing::info!(
            reason = reason.label(),
            packets = counter.packets,
            bytes = counter.bytes,
            "decap counters"
        );
    }
    program.detach()?;
    Ok(())
}

/// `balancer unload`: remove the pinned link and maps of `xdp.pin_path`.
pub fn unload(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let Some(xdp) = &config.xdp else {
        anyhow::bail!(
            "{}: no [xdp] section, nothing to unload",
            config_path.display()
        );
    };
    let Some(dir) = &xdp.pin_path else {
        anyhow::bail!(
            "{}: xdp.pin_path is not set: without it `balancer run` detaches on exit and pins nothing",
            config_path.display()
        );
    };
    let removed = crate::dataplane::unload(dir, xdp)?;
    if removed.is_empty() {
        tracing::info!(path = %dir.display(), "nothing pinned");
    }
    for path in removed {
        tracing::info!(path = %path.display(), "removed");
    }
    Ok(())
}

async fn wait_for_shutdown_signal() -> anyhow::Result<&'static str> {
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    // SIGHUP's default action would kill the process: there is nothing to reload here.
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = interrupt.recv() => return Ok("SIGINT"),
            _ = terminate.recv() => return Ok("SIGTERM"),
            _ = hangup.recv() => tracing::info!("SIGHUP received: nothing to reload"),
        }
    }
}
