//! Real traffic for tests and the demo: an echo server, ping-pong TCP clients,
//! UDP senders, and raw (malformed) Ethernet frames. All bounded in count.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use anyhow::Context;

/// `address:port` for either family (IPv6 addresses get brackets).
pub fn socket_addr(address: &str, port: u16) -> SocketAddr {
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address.to_string()
    };
    format!("{host}:{port}")
        .parse()
        .expect("valid address and port")
}

/// Echoes every connection of `listener` on its own thread until the process ends.
pub fn spawn_echo_server(listener: TcpListener) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// One connection, `messages` ping-pongs: each message waits for its echo, so
/// every segment stays below the MSS and no offload merges segments.
pub fn tcp_ping_pong(target: SocketAddr, messages: usize) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))
        .with_context(|| format!("connecting to {target}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    for i in 0..messages {
        let message = format!("message {i:04}");
        stream.write_all(message.as_bytes())?;
        let mut echo = vec![0; message.len()];
        stream
            .read_exact(&mut echo)
            .with_context(|| format!("echo {i} from {target}"))?;
        anyhow::ensure!(echo == message.as_bytes(), "echo from {target} differs");
    }
    Ok(())
}

/// Sends `frames` as-is out of `interface` with an AF_PACKET socket (no checks
/// by the stack), from the calling thread's namespace.
pub fn send_raw_frames(interface: &str, frames: &[Vec<u8>]) -> anyhow::Result<()> {
    let name = std::ffi::CString::new(interface)?;
    // SAFETY: plain libc calls with valid arguments; the fd is closed below.
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        anyhow::ensure!(ifindex != 0, "no interface {interface}");
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        anyhow::ensure!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let mut address: libc::sockaddr_ll = std::mem::zeroed();
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_ifindex = ifindex as i32;
        address.sll_halen = 6;
        let mut result = Ok(());
        for frame in frames {
            let sent = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const address).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            if sent < 0 {
                result = Err(anyhow::anyhow!(
                    "sendto: {}",
                    std::io::Error::last_os_error()
                ));
                break;
            }
        }
        libc::close(fd);
        result
    }
}

/// RFC 1071 Internet checksum (an odd length is padded with a zero byte): what
/// packet fixtures compute expected headers with, independently of the eBPF code.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
