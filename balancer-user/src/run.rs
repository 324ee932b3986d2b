//! `balancer run`: start every configured part, reload on SIGHUP or `POST /api/reload`, serve
//! until SIGINT/SIGTERM, then shut down in order (drain the proxy, stop admin, detach XDP).

use std::{path::Path, sync::Arc};

use anyhow::Context;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot, watch},
};

use crate::{
    admin::{self, AdminContext, XdpView},
    config::{Config, XdpAttachMode},
    dataplane::{Dataplane, DecapProgram, supervise},
    proxy::{Proxy, metrics::HttpMetrics},
};

pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let token = admin_token(&config).map_err(anyhow::Error::msg)?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("admin.listen: cannot listen on {}", config.admin.listen))?;
    let http_metrics = HttpMetrics::default();
    let mut proxy = Proxy::start(&config.l7, http_metrics.clone())?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut dataplane = None;
    let mut xdp_view = None;
    let mut supervisors = None;
    if let Some(xdp) = &config.xdp {
        let (plane, control, stats) = Dataplane::start(xdp, &config.vips)?;
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

    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let context = Arc::new(AdminContext {
        xdp: xdp_view,
        started: std::time::SystemTime::now(),
        proxy: Some(proxy.shared()),
        reload: Some(reload_tx),
        token: std::sync::RwLock::new(token),
    });
    tracing::info!(listen = %config.admin.listen, "admin API listening");
    if let Some(xdp) = &context.xdp {
        tokio::spawn(crate::linked::sync_health(
            proxy.shared(),
            xdp.control.clone(),
            shutdown_rx.clone(),
        ));
    }
    let admin_task = tokio::spawn(admin::serve(admin_listener, context.clone(), shutdown_rx));
    // Listeners are bound, XDP is attached and the admin API accepts: systemd may go on.
    crate::notify::ready("serving");

    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut user1 =
        signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    let mut current = config;
    let signal_name = loop {
        tokio::select! {
            _ = interrupt.recv() => break "SIGINT",
            _ = terminate.recv() => break "SIGTERM",
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
    tracing::info!(
        "{signal_name} received: shutting down (waiting up to {:?} for requests in flight)",
        current.l7.proxy.shutdown_timeout
    );
    crate::notify::stopping();
    proxy.shutdown(current.l7.proxy.shutdown_timeout).await;
    let _ = shutdown_tx.send(true);
    let _ = admin_task.await;
    if let Some(mut tasks) = supervisors {
        tasks.abort_all();
    }
    if let Some(mut plane) = dataplane {
        plane.shut_down()?;
    }
    Ok(())
}

/// A request to reload the config file, answered with a summary or the reason for refusing.
pub struct ReloadRequest {
    pub reply: oneshot::Sender<Result<String, String>>,
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
) -> Result<String, String> {
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
) -> Result<String, String> {
    let new = Config::load(config_path).map_err(|err| err.to_string())?;
    if new.admin.listen != current.admin.listen {
        return Err("admin.listen changed: restart balancer to apply it".into());
    }
    let token = admin_token(&new)?;
    if new.xdp != current.xdp || new.vips != current.vips {
        return Err(
            "[xdp] or [[vip]] changed: restart balancer to apply (with xdp.pin_path set, \
             established flows keep their backends across the restart)"
                .into(),
        );
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
fn admin_token(config: &Config) -> Result<Option<String>, String> {
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
