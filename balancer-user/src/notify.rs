//! systemd's readiness protocol (`sd_notify(3)`) for `Type=notify` units: one datagram per
//! state change to the unix socket named by `$NOTIFY_SOCKET`. That is all the protocol is, so
//! it is written here rather than pulled in as a crate. Without `$NOTIFY_SOCKET` (not started
//! by systemd) every call does nothing.

use std::os::unix::net::UnixDatagram;

/// `READY=1`: listeners bound, XDP attached, the admin API up. Sent once at start and after
/// each reload.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={status}"));
}

/// `READY=1` with `MAINPID`: after `balancer upgrade` the new process is the service's main
/// process (systemd accepts this from any process of the unit with `NotifyAccess=all`).
pub fn ready_as_main(status: &str) {
    send(&format!(
        "READY=1\nMAINPID={}\nSTATUS={status}",
        std::process::id()
    ));
}

/// `RELOADING=1` before a reload is applied (systemd shows the unit as reloading until the
/// next `READY=1`). `MONOTONIC_USEC` is what systemd ≥ 253 also wants with it; older ones
/// ignore it.
pub fn reloading() {
    send(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading",
        monotonic_usec()
    ));
}

/// `STOPPING=1`: draining before exit.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=draining connections before exit");
}

fn send(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(err) = send_to(&path, message) {
        // systemd would kill a Type=notify service that never gets READY=1; say why.
        tracing::warn!(socket = ?path, "sd_notify {message:?} failed: {err}");
    }
}

fn send_to(path: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    // A leading '@' names a socket in the abstract namespace.
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(message.as_bytes(), &address)?;
    } else {
        socket.send_to(message.as_bytes(), path)?;
    }
    Ok(())
}

fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000
        + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_a_path_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("balancer-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).expect("bind");
        send_to(path.as_os_str(), "READY=1\nSTATUS=x").expect("send");
        let mut buf = [0u8; 128];
        let n = receiver.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=x");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("balancer-notify-test-{}", std::process::id());
        let address =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
        let receiver = UnixDatagram::bind_addr(&address).expect("bind abstract");
        send_to(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").expect("send");
        let n = receiver.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"STOPPING=1");
        let _ = std::fs::remove_dir_all(dir);
    }
}
