//! Slow clients on raw sockets, for the tests and the benchmark of what protects app servers
//! (tests/tests/l7_protect.rs, `bench_protect`): a crowd of clients in a namespace, each doing
//! its slow work until told to stop.

use std::{
    io::Write,
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::{Netns, in_netns};

/// Clients in a namespace that each connect to one address and do `work` on the socket until
/// `stop` is set. Dropping the crowd stops and joins them.
pub struct Crowd {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Crowd {
    pub fn start(
        netns: &Netns,
        addr: &str,
        count: usize,
        work: impl Fn(TcpStream, &AtomicBool) + Send + Sync + 'static,
    ) -> Crowd {
        let stop = Arc::new(AtomicBool::new(false));
        let work = Arc::new(work);
        let threads = (0..count)
            .map(|_| {
                let (stop, work, path) = (stop.clone(), work.clone(), netns.path());
                let addr = addr.to_string();
                std::thread::spawn(move || {
                    let _ = in_netns(&path, move || {
                        if let Ok(stream) = TcpStream::connect(addr.as_str()) {
                            work(stream, &stop);
                        }
                    });
                })
            })
            .collect();
        Crowd { stop, threads }
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Uploads 4 KiB to /upload/ at 100 bytes/s (10 bytes every 100 ms) until done or stopped:
/// the slow client of gunicorn's deployment docs.
pub fn slow_upload(mut stream: TcpStream, stop: &AtomicBool, host: &str) {
    let head = format!(
        "POST /upload/ HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\nContent-Length: 4096\r\n\r\n"
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    for _ in 0..(4096 / 10) {
        if stop.load(Ordering::Relaxed) || stream.write_all(&[b'x'; 10]).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
