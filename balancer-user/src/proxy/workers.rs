//! The threads that serve client connections (`proxy.workers`): each runs a single-threaded
//! tokio runtime, accepts on every listener, and keeps its own idle upstream connections
//! (`upstream.rs` keeps one idle list per worker), as nginx workers or Pingora's no-steal
//! runtime do.
//!
//! Why not tokio's work-stealing runtime for this: a connection's task never moves, so its
//! wakeups, timers and sockets stay on one thread's queues with no cross-thread atomics, and an
//! upstream connection is reused by the thread whose reactor it is registered with.
//!
//! Each worker accepts on a listening socket of its own per address, all of an address's
//! sockets in one `SO_REUSEPORT` group: the kernel hands each new connection to one socket, so
//! only its worker wakes. With one socket shared by all workers, every worker's reactor woke
//! for each connection and all but one found nothing to accept (measured with `bench_protect`:
//! about 70 µs more per new connection under load with 2 workers than with 1).
//! `balancer upgrade` hands every socket of the group, with the connections queued on it, to
//! the new process: with fewer workers there, a worker accepts on several; with more, the
//! others join the group.

use std::{
    cell::Cell,
    sync::atomic::{AtomicUsize, Ordering},
    thread::JoinHandle,
};

use tokio::runtime::Handle;

thread_local! {
    /// This thread's worker number plus one (0: not a worker).
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// How many per-worker slots state keeps (workers + one for every other thread).
static SLOTS: AtomicUsize = AtomicUsize::new(1);

/// The slot of the calling thread: its worker number plus one, 0 elsewhere.
pub fn current_slot() -> usize {
    SLOT.with(Cell::get)
}

/// How many slots per-worker state needs: the worker count plus one.
pub fn slots() -> usize {
    SLOTS.load(Ordering::Relaxed)
}

/// The running workers. Dropping this stops them; tasks still running on them are cancelled
/// (the proxy's shutdown waits for its connections first).
pub struct Workers {
    handles: Vec<Handle>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` workers. 0 starts none: connections are then served by the process's
    /// main (work-stealing) runtime.
    pub fn start(count: usize) -> std::io::Result<Workers> {
        SLOTS.store(count + 1, Ordering::Relaxed);
        let mut workers = Workers {
            handles: Vec::with_capacity(count),
            stops: Vec::with_capacity(count),
            threads: Vec::with_capacity(count),
        };
        for index in 0..count {
            let (handle_tx, handle_rx) = std::sync::mpsc::channel();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || {
                    SLOT.with(|slot| slot.set(index + 1));
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(err) => {
                            let _ = handle_tx.send(Err(err));
                            return;
                        }
                    };
                    let _ = handle_tx.send(Ok(runtime.handle().clone()));
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            let handle = handle_rx
                .recv()
                .map_err(|_| std::io::Error::other("a worker thread ended at start"))??;
            workers.handles.push(handle);
            workers.stops.push(stop);
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// The runtimes to spawn accept loops on: the workers', or the current one with none.
    pub fn runtimes(&self) -> Vec<Handle> {
        if self.handles.is_empty() {
            vec![Handle::current()]
        } else {
            self.handles.clone()
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
