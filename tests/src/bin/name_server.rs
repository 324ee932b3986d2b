//! `name_server`: a backend for the L4 end-to-end tests, run inside a backend namespace.
//!
//! ```text
//! name_server --name NAME --listen ADDR:PORT [--listen …] [--udp ADDR:PORT …]
//! ```
//!
//! - TCP: on accept it writes `NAME\n` at once, then echoes back every byte it receives
//!   (so every line comes back), until the client closes. A test can keep a connection open
//!   and check that it is still alive and still on the same backend.
//! - UDP: answers every datagram with `NAME\n`, from the address the datagram was sent to
//!   (`IP_PKTINFO` / `IPV6_PKTINFO`), so replies to a VIP held on `lo` come from the VIP
//!   (direct server return). A datagram `echo PAYLOAD` is answered with `NAME PAYLOAD`
//!   instead, so a client sending numbered datagrams can tell which ones came back.
//! - `[::]` binds are dual stack (IPv4 arrives as v4-mapped addresses).
//! - Prints `ready` on stdout once every socket is bound; exits 0 on SIGTERM or SIGINT.

use std::{
    io::Write,
    mem::{size_of, zeroed},
    net::{IpAddr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use clap::Parser;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::signal::unix::{SignalKind, signal};

/// A backend for the L4 end-to-end tests (see the module doc).
#[derive(Parser)]
#[command(name = "name_server", args_override_self = true)]
struct Args {
    /// The name it greets with.
    #[arg(long)]
    name: String,
    /// A TCP socket, `ADDR:PORT` (IPv6 as `[ADDR]:PORT`); repeatable.
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// A UDP socket, `ADDR:PORT`; repeatable.
    #[arg(long)]
    udp: Vec<SocketAddr>,
}

fn parse_args() -> anyhow::Result<Args> {
    let args = Args::parse();
    if args.listen.is_empty() && args.udp.is_empty() {
        bail!("nothing to serve: give --listen and/or --udp");
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("name_server: {err:#}");
            return ExitCode::from(2);
        }
    };
    raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("name_server: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => {
            // Connection tasks and UDP threads end with the process.
            std::process::exit(0);
        }
        Err(err) => {
            eprintln!("name_server: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let name: Arc<str> = Arc::from(args.name.as_str());
    for &address in &args.listen {
        let listener = tcp_listener(address).with_context(|| format!("TCP {address}"))?;
        tokio::spawn(accept_loop(listener, name.clone()));
    }
    for &address in &args.udp {
        let socket = udp_socket(address).with_context(|| format!("UDP {address}"))?;
        let name = name.as_bytes().to_vec();
        std::thread::spawn(move || udp_loop(socket, name));
    }
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "ready")?;
        stdout.flush()?;
    }
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    Ok(())
}

/// `[::]` is dual stack regardless of `net.ipv6.bindv6only`.
fn new_socket(address: SocketAddr, kind: Type, protocol: Protocol) -> anyhow::Result<Socket> {
    let socket = Socket::new(Domain::for_address(address), kind, Some(protocol))?;
    if address.is_ipv6() && address.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    Ok(socket)
}

fn tcp_listener(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = new_socket(address, Type::STREAM, Protocol::TCP)?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(socket.into())?)
}

async fn accept_loop(listener: tokio::net::TcpListener, name: Arc<str>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, name.clone()));
            }
            // EMFILE and friends: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, name: Arc<str>) {
    use tokio::io::AsyncWriteExt;
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    if writer
        .write_all(format!("{name}\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::io::copy(&mut reader, &mut writer).await;
}

fn udp_socket(address: SocketAddr) -> anyhow::Result<Socket> {
    let socket = new_socket(address, Type::DGRAM, Protocol::UDP)?;
    let fd = socket.as_raw_fd();
    let (level, option) = if address.is_ipv6() {
        // On a dual-stack socket this also reports IPv4 destinations, as v4-mapped addresses.
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a valid fd and a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("enabling packet info");
    }
    Ok(socket)
}

/// Room for one `in6_pktinfo` or `in_pktinfo` control message (and some spare).
#[repr(C, align(8))]
struct ControlBuffer([u8; 128]);

/// What a datagram is answered with: `NAME\n`, or `NAME PAYLOAD` for `echo PAYLOAD`.
fn udp_reply(name: &[u8], datagram: &[u8]) -> Vec<u8> {
    let mut reply = name.to_vec();
    match datagram.strip_prefix(b"echo ") {
        Some(payload) => {
            reply.push(b' ');
            reply.extend_from_slice(payload);
        }
        None => reply.push(b'\n'),
    }
    reply
}

/// Answers each datagram ([`udp_reply`]), from the datagram's destination address.
fn udp_loop(socket: Socket, name: Vec<u8>) {
    let fd = socket.as_raw_fd();
    let v6 = matches!(socket.local_addr().ok().and_then(|a| a.as_socket()), Some(a) if a.is_ipv6());
    let mut data = [0u8; 2048];
    loop {
        // SAFETY: plain recvmsg/sendmsg on our own socket with buffers that outlive the
        // calls; control messages are walked with the CMSG_* helpers within `control`.
        unsafe {
            let mut peer: libc::sockaddr_storage = zeroed();
            let mut control = ControlBuffer([0; 128]);
            let mut iov = libc::iovec {
                iov_base: data.as_mut_ptr().cast(),
                iov_len: data.len(),
            };
            let mut header: libc::msghdr = zeroed();
            header.msg_name = (&raw mut peer).cast();
            header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &raw mut iov;
            header.msg_iovlen = 1;
            header.msg_control = control.0.as_mut_ptr().cast();
            header.msg_controllen = control.0.len();
            let received = libc::recvmsg(fd, &raw mut header, 0);
            if received < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }

            // The destination address of the datagram.
            let mut destination: Option<IpAddr> = None;
            let mut message = libc::CMSG_FIRSTHDR(&raw const header);
            while !message.is_null() {
                let level = (*message).cmsg_level;
                let kind = (*message).cmsg_type;
                if level == libc::IPPROTO_IPV6 && kind == libc::IPV6_PKTINFO {
                    let info: libc::in6_pktinfo =
                        std::ptr::read_unaligned(libc::CMSG_DATA(message).cast());
                    destination = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                } else if level == libc::IPPROTO_IP && kind == libc::IP_PKTINFO {
                    let info: libc::in_pktinfo =
                        std::ptr::read_unaligned(libc::CMSG_DATA(message).cast());
                    let v4 = std::net::Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                    destination = Some(IpAddr::V4(v4));
                }
                message = libc::CMSG_NXTHDR(&raw const header, message);
            }

            let reply = udp_reply(&name, &data[..received as usize]);
            let mut reply_iov = libc::iovec {
                iov_base: reply.as_ptr() as *mut libc::c_void,
                iov_len: reply.len(),
            };
            let mut out_control = ControlBuffer([0; 128]);
            let mut out: libc::msghdr = zeroed();
            out.msg_name = (&raw mut peer).cast();
            out.msg_namelen = header.msg_namelen;
            out.msg_iov = &raw mut reply_iov;
            out.msg_iovlen = 1;
            if let Some(destination) = destination {
                out.msg_control = out_control.0.as_mut_ptr().cast();
                if v6 {
                    let address = match destination {
                        IpAddr::V6(a) => a,
                        IpAddr::V4(a) => a.to_ipv6_mapped(),
                    };
                    let length = size_of::<libc::in6_pktinfo>() as u32;
                    out.msg_controllen = libc::CMSG_SPACE(length) as usize;
                    let message = libc::CMSG_FIRSTHDR(&raw const out);
                    (*message).cmsg_level = libc::IPPROTO_IPV6;
                    (*message).cmsg_type = libc::IPV6_PKTINFO;
                    (*message).cmsg_len = libc::CMSG_LEN(length) as usize;
                    let mut info: libc::in6_pktinfo = zeroed();
                    info.ipi6_addr.s6_addr = address.octets();
                    std::ptr::write_unaligned(libc::CMSG_DATA(message).cast(), info);
                } else if let IpAddr::V4(address) = destination {
                    let length = size_of::<libc::in_pktinfo>() as u32;
                    out.msg_controllen = libc::CMSG_SPACE(length) as usize;
                    let message = libc::CMSG_FIRSTHDR(&raw const out);
                    (*message).cmsg_level = libc::IPPROTO_IP;
                    (*message).cmsg_type = libc::IP_PKTINFO;
                    (*message).cmsg_len = libc::CMSG_LEN(length) as usize;
                    let mut info: libc::in_pktinfo = zeroed();
                    info.ipi_spec_dst.s_addr = u32::from(address).to_be();
                    std::ptr::write_unaligned(libc::CMSG_DATA(message).cast(), info);
                }
            }
            // A lost reply is the client's problem (it retries or reports); keep serving.
            let _ = libc::sendmsg(fd, &raw const out, 0);
        }
    }
}

/// Many concurrent connections need many descriptors: soft limit up to the hard limit.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut limit: libc::rlimit = zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0
            && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit);
        }
    }
}
