//! `balancer run`: start every configured part, serve until SIGINT/SIGTERM, then
//! shut down in order (stop admin, detach XDP).

use std::{path::Path, sync::Arc};

use anyhow::Context;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use crate::{
    admin::{self, AdminContext, XdpView},
    config::Config,
    dataplane::Dataplane,
};

pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("admin.listen: cannot listen on {}", config.admin.listen))?;

    let mut dataplane = None;
    let mut xdp_view = None;
    if let Some(xdp) = &config.xdp {
        let (plane, stats) = Dataplane::start(xdp, &config.vips)?;
        xdp_view = Some(XdpView {
            interface: plane.interface().to_string(),
            mode: plane.mode(),
            stats,
        });
        dataplane = Some(plane);
    } else {
        tracing::info!("no [xdp] section: the XDP data plane is not loaded");
    }

    let context = Arc::new(AdminContext {
        xdp: xdp_view,
        started: std::time::SystemTime::now(),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tracing::info!(listen = %config.admin.listen, "admin API listening");
    let admin_task = tokio::spawn(admin::serve(admin_listener, context, shutdown_rx));

    let signal_name = wait_for_shutdown_signal().await?;
    tracing::info!("{signal_name} received: shutting down");
    let _ = shutdown_tx.send(true);
    let _ = admin_task.await;
    if let Some(mut plane) = dataplane {
        plane.detach()?;
    }
    Ok(())
}

async fn wait_for_shutdown_signal() -> anyhow::Result<&'static str> {
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    // SIGHUP's default action would kill the process; an operator sending it
    // expects a reload, which this version cannot do yet: say so and keep serving.
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = interrupt.recv() => return Ok("SIGINT"),
            _ = terminate.recv() => return Ok("SIGTERM"),
            _ = hangup.recv() => tracing::warn!(
                "SIGHUP received: config reload is not supported by this version; \
                 still serving the config loaded at start (restart to apply a new one)"
            ),
        }
    }
}
