//! A real browser for the tests: Debian's headless Chromium started inside a test's network
//! namespace and driven over the Chrome DevTools Protocol (a WebSocket to its debugging port):
//! navigate, evaluate JavaScript in the page (read the DOM, click), take screenshots.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use base64::Engine;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

use crate::{Netns, child::ChildGuard, l7::TempDir};

/// Debian's Chromium (`cargo xtask setup` installs it).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Killed on drop (Chromium keeps no state worth a clean exit).
pub struct Browser {
    child: ChildGuard,
    socket: WebSocket<TcpStream>,
    next_id: u64,
    _profile: TempDir,
}

impl Browser {
    /// Starts headless Chromium in `netns` with a new empty profile and attaches to its
    /// first page.
    pub fn launch(netns: &Netns) -> anyhow::Result<Browser> {
        ensure!(
            Path::new(CHROMIUM).is_file(),
            "{CHROMIUM} does not exist: run `cargo xtask setup` (it installs Debian's chromium)"
        );
        let profile = TempDir::new("chromium")?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.path()))
            .arg(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromium")?;
        let mut browser_child = Some(ChildGuard::new(child, "chromium", Duration::ZERO));
        let result = (|| {
            let port = debugging_port(profile.path())?;
            // The port file can come before the first page target: ask until it is there.
            let deadline = Instant::now() + Duration::from_secs(15);
            let url = loop {
                let targets = netns.run(move || http_get(port, "/json/list"))?;
                let last = format!("{targets:?}");
                let page = targets
                    .ok()
                    .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                    .and_then(|list| {
                        list.as_array()?
                            .iter()
                            .find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                            .as_str()
                            .map(ToString::to_string)
                    });
                if let Some(url) = page {
                    break url;
                }
                if Instant::now() > deadline {
                    bail!("chromium listed no page target on port {port} within 15 s: {last}");
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            let socket = netns.run(move || -> anyhow::Result<WebSocket<TcpStream>> {
                let stream = TcpStream::connect(("127.0.0.1", port))?;
                stream.set_read_timeout(Some(Duration::from_secs(30)))?;
                let (socket, _) = tungstenite::client(url.as_str(), stream)
                    .map_err(|err| anyhow::anyhow!("DevTools WebSocket: {err}"))?;
                Ok(socket)
            })??;
            Ok::<_, anyhow::Error>(socket)
        })();
        match result {
            Ok(socket) => Ok(Browser {
                child: browser_child.take().expect("started"),
                socket,
                next_id: 0,
                _profile: profile,
            }),
            Err(err) => {
                if let Some(mut child) = browser_child {
                    child.kill();
                }
                Err(err)
            }
        }
    }

    /// Sends a DevTools command and returns its `result`.
    pub fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        self.socket
            .send(Message::text(
                json!({ "id": id, "method": method, "params": params }).to_string(),
            ))
            .with_context(|| format!("sending {method}"))?;
        loop {
            let message = self
                .socket
                .read()
                .with_context(|| format!("waiting for the answer to {method}"))?;
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(text.as_str())?;
            if value["id"] != id {
                continue; // an event
            }
            if let Some(error) = value.get("error") {
                bail!("{method}: {error}");
            }
            return Ok(value["result"].clone());
        }
    }

    pub fn navigate(&mut self, url: &str) -> anyhow::Result<()> {
        self.call("Page.enable", json!({}))?;
        let result = self.call("Page.navigate", json!({ "url": url }))?;
        if let Some(error) = result.get("errorText") {
            bail!("navigating to {url}: {error}");
        }
        Ok(())
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, expression: &str) -> anyhow::Result<Value> {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        )?;
        if let Some(exception) = result.get("exceptionDetails") {
            bail!("{expression}: {exception}");
        }
        Ok(result["result"]["value"].clone())
    }

    /// Evaluates `expression` every 100 ms until it is `true`, for up to `limit`.
    pub fn wait_for(&mut self, expression: &str, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if self.eval(expression)? == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("not true within {limit:?}: {expression}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the page as it is drawn now, written to `path`.
    pub fn screenshot(&mut self, path: &Path) -> anyhow::Result<PathBuf> {
        let result = self.call("Page.captureScreenshot", json!({ "format": "png" }))?;
        let data = result["data"].as_str().context("no screenshot data")?;
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(path.to_path_buf())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.child.kill();
    }
}

/// The port Chromium chose, from `DevToolsActivePort` in its profile (first line).
fn debugging_port(profile: &Path) -> anyhow::Result<u16> {
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok())
        {
            return Ok(port);
        }
        if Instant::now() > deadline {
            bail!("chromium wrote no {} within 30 s", file.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP GET to the debugging port (run inside the namespace).
fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    // Read up to the end of the body by its Content-Length: Chromium keeps the connection
    // open whatever the request says.
    let mut response = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("the debugging port closed before a whole answer");
        }
        response.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&response);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .context("no Content-Length from the debugging port")?;
        if body.len() >= length {
            return Ok(body[..length].to_string());
        }
    }
}
