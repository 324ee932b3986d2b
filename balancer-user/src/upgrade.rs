//! Upgrades that drop nothing: the running process hands its listening sockets (the admin
//! listener and every proxy listener) to a new process over a unix socket with SCM_RIGHTS, as
//! HAProxy and Pingora do. The sockets never close, so no connection is refused; the XDP
//! program goes over through its pinned link (the new process replaces it atomically).
//!
//! The exchange on `proxy.upgrade_socket`:
//! 1. the new process connects and waits. A connection that its peer closes at once (another
//!    balancer checking whether the path is in use) gets nothing: the old process first waits
//!    `PROBE_WAIT` for such a close. Nothing new goes over the wire, so processes of earlier
//!    releases upgrade to this one and back;
//! 2. the old one sends one line of JSON, `{"pid":…,"admin":"ADDR","listeners":["ADDR",…]}`,
//!    with the descriptors attached in that order (admin first);
//! 3. the new process starts with them (binding only addresses it did not get), attaches XDP,
//!    and writes `ready\n`;
//! 4. the old process stops accepting and drains. If the connection ends without `ready`
//!    (the new binary failed), the old process never stopped serving and says why.

use std::{
    io::{self, Read, Write},
    net::SocketAddr,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{fs::MetadataExt, net::UnixStream},
    },
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::{Value, json};

/// The longest the old process waits for the new one to say it is ready: loading and
/// attaching XDP and building every TLS config take a few seconds at most.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The most descriptors one handover carries (the kernel's SCM_MAX_FD is 253).
const MAX_FDS: usize = 253;

/// The sockets a new process takes over, by address.
#[derive(Debug)]
pub struct Inherited {
    /// The old process's pid, for the log.
    pub from_pid: u32,
    pub admin: Option<(SocketAddr, std::net::TcpListener)>,
    pub listeners: Vec<(SocketAddr, std::net::TcpListener)>,
}

impl Inherited {
    /// The listening sockets bound to `address` (one per worker of the old process), taken
    /// out; none if the old process did not listen there.
    pub fn take(&mut self, address: SocketAddr) -> Vec<std::net::TcpListener> {
        let (taken, kept) = std::mem::take(&mut self.listeners)
            .into_iter()
            .partition(|(bound, _)| *bound == address);
        self.listeners = kept;
        taken.into_iter().map(|(_, socket)| socket).collect()
    }
}

/// The listening end on `proxy.upgrade_socket`, owned by the serving process. The file is
/// removed when this is dropped, unless a newer process has replaced it since.
pub struct UpgradeSocket {
    listener: tokio::net::UnixListener,
    path: PathBuf,
    inode: u64,
}

impl UpgradeSocket {
    /// Binds `path` (creating its directory, mode 0700). A socket file left by a process that
    /// is gone is replaced; one another process still answers on is an error, since that
    /// process is the one to upgrade (`balancer upgrade`). `replace`: the new process of an
    /// upgrade takes the path over from the old one.
    pub fn bind(path: &Path, replace: bool) -> io::Result<UpgradeSocket> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if path.exists() {
            if !replace && UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another balancer serves on this upgrade socket: upgrade it with \
                     `balancer upgrade`, or set another proxy.upgrade_socket",
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = tokio::net::UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let inode = std::fs::metadata(path)?.ino();
        Ok(UpgradeSocket {
            listener,
            path: path.to_path_buf(),
            inode,
        })
    }

    pub async fn accept(&self) -> io::Result<tokio::net::UnixStream> {
        self.listener.accept().await.map(|(stream, _)| stream)
    }
}

impl Drop for UpgradeSocket {
    fn drop(&mut self) {
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Why no handover happened.
#[derive(Debug)]
pub enum HandOverError {
    /// The peer closed the connection at once (a process checking whether the socket is
    /// live): nothing was sent.
    NotAsked,
    /// The upgrade failed; the reason.
    Failed(HandOverFailure),
}

/// Old side: why a new process that asked for the sockets did not take over (this process
/// keeps serving and logs the text).
#[derive(Debug, thiserror::Error)]
pub enum HandOverFailure {
    #[error("upgrade socket: {0}")]
    Socket(#[source] io::Error),
    #[error("{count} sockets to hand over, more than one message carries ({max})", max = MAX_FDS)]
    TooManySockets { count: usize },
    #[error("sending the sockets: {0}")]
    Send(#[source] io::Error),
    #[error("the new process did not say it was ready within {timeout:?}", timeout = READY_TIMEOUT)]
    NotReady,
    #[error("the new process went away: {0}")]
    Gone(#[source] io::Error),
    #[error("the new process exited before it was ready (its log says why)")]
    Exited,
    #[error("the new process answered {answer:?} instead of ready")]
    Answered { answer: String },
    /// The blocking task that ran the handover ended without an answer.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

/// New side: why `balancer upgrade` got no sockets from the running process.
#[derive(Debug, thiserror::Error)]
pub enum TakeOverError {
    #[error("no running balancer answers on the upgrade socket {}: {source}", path.display())]
    Connect { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Timeout(io::Error),
    #[error("receiving the sockets: {0}")]
    Receive(#[source] io::Error),
    #[error("receiving the socket list: {0}")]
    ReceiveList(#[source] io::Error),
    #[error("the running process closed the upgrade socket")]
    Closed,
    #[error(transparent)]
    Handover(#[from] HandoverMessageError),
}

/// Why the handover message and its descriptors are not the sockets it names.
#[derive(Debug, thiserror::Error)]
pub enum HandoverMessageError {
    #[error("the handover message is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("the handover message names no address: {0}")]
    NoAddress(Value),
    #[error("the handover message has no listener list")]
    NoListenerList,
    #[error("{fds} descriptors for {sockets} sockets")]
    DescriptorCount { fds: usize, sockets: usize },
    #[error(transparent)]
    Socket(io::Error),
    #[error("the socket for {expected} is bound to {actual}")]
    WrongAddress {
        expected: SocketAddr,
        actual: SocketAddr,
    },
    #[error("the socket for {expected}: {source}")]
    NoAddressOf {
        expected: SocketAddr,
        source: io::Error,
    },
}

/// Old side: sends the sockets over `stream` to a peer that stays connected, and waits for its
/// `ready`. `Err` says why the upgrade did not happen; the caller keeps serving then.
pub fn hand_over(
    stream: tokio::net::UnixStream,
    admin: (SocketAddr, RawFd),
    listeners: &[(SocketAddr, RawFd)],
) -> Result<(), HandOverError> {
    let failed = |err| HandOverError::Failed(HandOverFailure::Socket(err));
    let stream = stream.into_std().map_err(failed)?;
    stream.set_nonblocking(false).map_err(failed)?;
    stream.set_read_timeout(Some(PROBE_WAIT)).map_err(failed)?;
    // A new process sends nothing before it has the sockets: a read that ends the stream is
    // a probe that closed; one that times out is an upgrader waiting.
    let mut byte = [0u8; 1];
    if matches!((&stream).read(&mut byte), Ok(0)) {
        return Err(HandOverError::NotAsked);
    }
    tracing::info!("upgrade: a new process asks for the listeners; handing them over");
    hand_over_sockets(&stream, admin, listeners).map_err(HandOverError::Failed)
}

/// How long the old process waits for a probe to close before it hands the sockets over: a
/// probe closes within microseconds.
const PROBE_WAIT: Duration = Duration::from_millis(300);

fn hand_over_sockets(
    stream: &UnixStream,
    admin: (SocketAddr, RawFd),
    listeners: &[(SocketAddr, RawFd)],
) -> Result<(), HandOverFailure> {
    let message = json!({
        "pid": std::process::id(),
        "admin": admin.0.to_string(),
        "listeners": listeners.iter().map(|(a, _)| a.to_string()).collect::<Vec<_>>(),
    });
    let mut fds = vec![admin.1];
    fds.extend(listeners.iter().map(|(_, fd)| *fd));
    if fds.len() > MAX_FDS {
        return Err(HandOverFailure::TooManySockets { count: fds.len() });
    }
    send_with_fds(stream, format!("{message}\n").as_bytes(), &fds)
        .map_err(HandOverFailure::Send)?;
    stream
        .set_read_timeout(Some(READY_TIMEOUT))
        .map_err(HandOverFailure::Socket)?;
    let mut answer = Vec::new();
    let read = stream.take(64).read_to_end(&mut answer);
    match (read, answer.as_slice()) {
        (_, b"ready\n") => Ok(()),
        (Err(err), _) if err.kind() == io::ErrorKind::WouldBlock => Err(HandOverFailure::NotReady),
        (Err(err), _) => Err(HandOverFailure::Gone(err)),
        (Ok(_), []) => Err(HandOverFailure::Exited),
        (Ok(_), other) => Err(HandOverFailure::Answered {
            answer: String::from_utf8_lossy(other).into_owned(),
        }),
    }
}

/// New side: connects to the running process's upgrade socket and takes its sockets. Keep the
/// returned stream and call [`confirm`] once serving.
pub fn take_over(path: &Path) -> Result<(Inherited, UnixStream), TakeOverError> {
    let stream = UnixStream::connect(path).map_err(|source| TakeOverError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(TakeOverError::Timeout)?;
    let (mut data, fds) = recv_with_fds(&stream).map_err(TakeOverError::Receive)?;
    while !data.ends_with(b"\n") {
        let mut more = [0u8; 4096];
        let n = (&stream)
            .read(&mut more)
            .map_err(TakeOverError::ReceiveList)?;
        if n == 0 {
            return Err(TakeOverError::Closed);
        }
        data.extend_from_slice(&more[..n]);
    }
    let inherited = parse_handover(&data, fds)?;
    Ok((inherited, stream))
}

/// New side: tells the old process to stop accepting and drain.
pub fn confirm(mut stream: UnixStream) -> io::Result<()> {
    stream.write_all(b"ready\n")
}

/// The message and descriptors as [`Inherited`]; every descriptor must be a listening TCP
/// socket at the address the message gives for it.
fn parse_handover(data: &[u8], fds: Vec<OwnedFd>) -> Result<Inherited, HandoverMessageError> {
    let message: Value =
        serde_json::from_slice(data.trim_ascii_end()).map_err(HandoverMessageError::NotJson)?;
    let address = |value: &Value| -> Result<SocketAddr, HandoverMessageError> {
        value
            .as_str()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| HandoverMessageError::NoAddress(value.clone()))
    };
    let admin_address = address(&message["admin"])?;
    let listener_addresses = message["listeners"]
        .as_array()
        .ok_or(HandoverMessageError::NoListenerList)?
        .iter()
        .map(address)
        .collect::<Result<Vec<_>, _>>()?;
    if fds.len() != listener_addresses.len() + 1 {
        return Err(HandoverMessageError::DescriptorCount {
            fds: fds.len(),
            sockets: listener_addresses.len() + 1,
        });
    }
    let mut sockets = fds.into_iter().map(|fd| {
        let listener = std::net::TcpListener::from(fd);
        listener.set_nonblocking(true).map(|()| listener)
    });
    let mut checked =
        |expected: SocketAddr| -> Result<std::net::TcpListener, HandoverMessageError> {
            let listener = sockets
                .next()
                .expect("counted above")
                .map_err(HandoverMessageError::Socket)?;
            match listener.local_addr() {
                Ok(actual) if actual == expected => Ok(listener),
                Ok(actual) => Err(HandoverMessageError::WrongAddress { expected, actual }),
                Err(source) => Err(HandoverMessageError::NoAddressOf { expected, source }),
            }
        };
    let admin = checked(admin_address)?;
    let mut listeners = Vec::with_capacity(listener_addresses.len());
    for address in listener_addresses {
        listeners.push((address, checked(address)?));
    }
    Ok(Inherited {
        from_pid: message["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0),
        admin: Some((admin_address, admin)),
        listeners,
    })
}

/// A message of one buffer (`iov`) and `space` bytes of control data in `control`. The
/// pointers it holds are valid while both borrows are.
fn message_header(iov: &mut libc::iovec, control: &mut [u64], space: usize) -> libc::msghdr {
    // SAFETY: a zeroed msghdr is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    msg
}

fn send_with_fds(stream: &UnixStream, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(u32::try_from(fd_bytes).expect("few fds")) } as usize;
    // u64s: the control buffer must be aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let msg = message_header(&mut iov, &mut control, space);
    // SAFETY: msg_control holds `space` bytes, room for one header and `fds`.
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&msg);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(u32::try_from(fd_bytes).expect("few fds")) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(header).cast(), fds.len());
    }
    // SAFETY: msg points at live buffers; the socket is ours.
    let sent = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    // The descriptors went with the first byte; the rest is plain data.
    let sent = usize::try_from(sent).unwrap_or(0);
    (&*stream).write_all(&data[sent..])
}

fn recv_with_fds(stream: &UnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut data = vec![0u8; 64 * 1024];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe {
        libc::CMSG_SPACE(u32::try_from(MAX_FDS * std::mem::size_of::<RawFd>()).expect("small"))
    } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut msg = message_header(&mut iov, &mut control, space);
    // SAFETY: msg points at live buffers; the socket is ours.
    let received = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if received < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control; CMSG_* walk what it wrote. Each descriptor it
    // passed is ours to own from here.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*header).cmsg_len - libc::CMSG_LEN(0) as usize;
                let count = bytes / std::mem::size_of::<RawFd>();
                let first: *const RawFd = libc::CMSG_DATA(header).cast();
                for k in 0..count {
                    fds.push(OwnedFd::from_raw_fd(first.add(k).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("descriptors were cut off (MSG_CTRUNC)"));
    }
    data.truncate(usize::try_from(received).unwrap_or(0));
    Ok((data, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_cross_a_unix_socket_and_keep_their_address() {
        let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let web = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (old, new) = UnixStream::pair().expect("pair");
        let addresses = (
            admin.local_addr().expect("addr"),
            web.local_addr().expect("addr"),
        );
        let message = format!(
            "{}\n",
            json!({"pid": 7, "admin": addresses.0.to_string(), "listeners": [addresses.1.to_string()]})
        );
        send_with_fds(
            &old,
            message.as_bytes(),
            &[admin.as_raw_fd(), web.as_raw_fd()],
        )
        .expect("send");
        let (data, fds) = recv_with_fds(&new).expect("recv");
        let mut inherited = parse_handover(&data, fds).expect("parse");
        assert_eq!(inherited.from_pid, 7);
        let mut web_sockets = inherited.take(addresses.1);
        assert_eq!(web_sockets.len(), 1);
        assert!(inherited.take(addresses.1).is_empty(), "taken out");
        let taken = web_sockets.pop().expect("web");
        // The passed socket is the same socket: a connection to it is accepted there.
        drop(web);
        let client = std::net::TcpStream::connect(addresses.1).expect("connect");
        taken.set_nonblocking(false).expect("blocking");
        let (accepted, peer) = taken.accept().expect("accept");
        assert_eq!(peer, client.local_addr().expect("addr"));
        drop(accepted);
        let (admin_address, _admin) = inherited.admin.expect("admin");
        assert_eq!(admin_address, addresses.0);
    }

    #[test]
    fn a_connection_closed_at_once_gets_nothing_and_one_that_waits_gets_the_sockets() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _context = runtime.enter();
        let (old, probe) = UnixStream::pair().expect("pair");
        old.set_nonblocking(true).expect("nonblocking");
        let old = tokio::net::UnixStream::from_std(old).expect("tokio stream");
        // Another balancer checking whether the path is live: it connects and closes.
        drop(probe);
        let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let result = hand_over(
            old,
            (admin.local_addr().expect("address"), admin.as_raw_fd()),
            &[],
        );
        assert!(matches!(result, Err(HandOverError::NotAsked)), "{result:?}");

        // A new process (of this release or an earlier one) connects and waits, silent.
        let (old, new) = UnixStream::pair().expect("pair");
        old.set_nonblocking(true).expect("nonblocking");
        let old = tokio::net::UnixStream::from_std(old).expect("tokio stream");
        let upgrader = std::thread::spawn(move || {
            let (data, fds) = recv_with_fds(&new).expect("the sockets");
            (&new).write_all(b"ready\n").expect("ready");
            (data, fds.len())
        });
        let result = hand_over(
            old,
            (admin.local_addr().expect("address"), admin.as_raw_fd()),
            &[],
        );
        assert!(result.is_ok(), "{result:?}");
        let (data, fds) = upgrader.join().expect("upgrader");
        assert_eq!(fds, 1, "the admin listener");
        assert!(String::from_utf8_lossy(&data).contains("\"admin\""));
    }

    #[test]
    fn a_socket_at_another_address_is_refused() {
        let web = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (old, new) = UnixStream::pair().expect("pair");
        let message = format!(
            "{}\n",
            json!({"pid": 1, "admin": "127.0.0.1:1", "listeners": [web.local_addr().expect("a").to_string()]})
        );
        send_with_fds(
            &old,
            message.as_bytes(),
            &[admin.as_raw_fd(), web.as_raw_fd()],
        )
        .expect("send");
        let (data, fds) = recv_with_fds(&new).expect("recv");
        let err = parse_handover(&data, fds).expect_err("refused").to_string();
        assert!(
            err.starts_with("the socket for 127.0.0.1:1 is bound to"),
            "{err}"
        );
    }

    /// Each text against the `format!` that made it when these errors were strings.
    #[test]
    fn texts_are_those_of_the_string_errors() {
        let io = || io::Error::from(io::ErrorKind::ConnectionReset);
        let path = Path::new("/run/balancer/upgrade.sock");
        let cases: Vec<(String, String)> = vec![
            (
                HandOverFailure::Socket(io()).to_string(),
                format!("upgrade socket: {}", io()),
            ),
            (
                HandOverFailure::TooManySockets { count: 300 }.to_string(),
                format!(
                    "{} sockets to hand over, more than one message carries ({MAX_FDS})",
                    300
                ),
            ),
            (
                HandOverFailure::Send(io()).to_string(),
                format!("sending the sockets: {}", io()),
            ),
            (
                HandOverFailure::NotReady.to_string(),
                format!("the new process did not say it was ready within {READY_TIMEOUT:?}"),
            ),
            (
                HandOverFailure::Gone(io()).to_string(),
                format!("the new process went away: {}", io()),
            ),
            (
                HandOverFailure::Exited.to_string(),
                "the new process exited before it was ready (its log says why)".to_string(),
            ),
            (
                HandOverFailure::Answered {
                    answer: "no\n".to_string(),
                }
                .to_string(),
                format!(
                    "the new process answered {:?} instead of ready",
                    String::from_utf8_lossy(b"no\n")
                ),
            ),
            (
                TakeOverError::Connect {
                    path: path.to_path_buf(),
                    source: io(),
                }
                .to_string(),
                format!(
                    "no running balancer answers on the upgrade socket {}: {}",
                    path.display(),
                    io()
                ),
            ),
            (TakeOverError::Timeout(io()).to_string(), io().to_string()),
            (
                TakeOverError::Receive(io()).to_string(),
                format!("receiving the sockets: {}", io()),
            ),
            (
                TakeOverError::ReceiveList(io()).to_string(),
                format!("receiving the socket list: {}", io()),
            ),
            (
                TakeOverError::Closed.to_string(),
                "the running process closed the upgrade socket".to_string(),
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
        let json = || serde_json::from_slice::<Value>(b"{").expect_err("not JSON");
        let value = json!(7);
        let (expected, actual): (SocketAddr, SocketAddr) = (
            "127.0.0.1:1".parse().expect("address"),
            "[::1]:2".parse().expect("address"),
        );
        let cases: Vec<(HandoverMessageError, String)> = vec![
            (
                HandoverMessageError::NotJson(json()),
                format!("the handover message is not JSON: {}", json()),
            ),
            (
                HandoverMessageError::NoAddress(value.clone()),
                format!("the handover message names no address: {value}"),
            ),
            (
                HandoverMessageError::NoListenerList,
                "the handover message has no listener list".to_string(),
            ),
            (
                HandoverMessageError::DescriptorCount { fds: 1, sockets: 3 },
                format!("{} descriptors for {} sockets", 1, 3),
            ),
            (HandoverMessageError::Socket(io()), io().to_string()),
            (
                HandoverMessageError::WrongAddress { expected, actual },
                format!("the socket for {expected} is bound to {actual}"),
            ),
            (
                HandoverMessageError::NoAddressOf {
                    expected,
                    source: io(),
                },
                format!("the socket for {expected}: {}", io()),
            ),
        ];
        for (error, want) in cases {
            // Reached through `take_over` too: the text goes through unchanged.
            assert_eq!(TakeOverError::from(error).to_string(), want);
        }
    }

    #[test]
    fn a_live_upgrade_socket_is_not_taken_but_a_stale_one_is() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let dir = std::env::temp_dir().join(format!("balancer-upgrade-{}", std::process::id()));
            let path = dir.join("upgrade.sock");
            let first = UpgradeSocket::bind(&path, false).expect("bind");
            let err = UpgradeSocket::bind(&path, false)
                .err()
                .expect("a live socket is refused");
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
            // The new process of an upgrade replaces it; the old one's drop leaves it alone.
            let second = UpgradeSocket::bind(&path, true).expect("replace");
            drop(first);
            assert!(path.exists(), "the newer socket stays");
            drop(second);
            assert!(!path.exists(), "removed by its owner");
            // A file nobody listens on is stale.
            std::os::unix::net::UnixListener::bind(&path).expect("stale");
            let third = UpgradeSocket::bind(&path, false).expect("stale replaced");
            drop(third);
            let _ = std::fs::remove_dir_all(dir);
        });
    }
}
