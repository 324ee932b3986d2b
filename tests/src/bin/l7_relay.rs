//! `l7_relay`: the L7 benchmark's floor. A TCP byte relay with no HTTP in it.
//!
//! ```text
//! l7_relay --listen ADDR:PORT --upstream ADDR:PORT
//! ```
//!
//! Each accepted connection gets its own upstream connection, and bytes are copied both ways
//! until either side closes. On an HTTP/1.1 keep-alive load that is the same four socket calls
//! per request that any reverse proxy makes (read the request, write it upstream, read the
//! response, write it back), with no parsing, header work or pooling: its CPU per request is
//! what the kernel charges for those calls, the floor under every proxy measured beside it.
//! One runtime thread, as the proxies run. Prints `listening ADDR`, then serves until killed.

use std::{net::SocketAddr, process::ExitCode};

use anyhow::Context;
use clap::Parser;
use tokio::net::{TcpListener, TcpStream};

/// A TCP byte relay (see the module doc).
#[derive(Parser)]
#[command(name = "l7_relay", args_override_self = true)]
struct Args {
    /// Where to accept, `ADDR:PORT`.
    #[arg(long)]
    listen: SocketAddr,
    /// Where to connect for each accepted connection, `ADDR:PORT`.
    #[arg(long)]
    upstream: SocketAddr,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("l7_relay: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("l7_relay: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!("listening {}", listener.local_addr()?);
    loop {
        let (mut client, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors and the like: this connection is lost, the relay goes on.
            Err(err) => {
                eprintln!("l7_relay: accept: {err}");
                continue;
            }
        };
        let upstream = args.upstream;
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let mut server = match TcpStream::connect(upstream).await {
                Ok(server) => server,
                Err(err) => {
                    eprintln!("l7_relay: connect {upstream}: {err}");
                    return;
                }
            };
            let _ = server.set_nodelay(true);
            // Either side closing or failing ends the pair; nothing to report per connection.
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}
