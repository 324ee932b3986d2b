//! `proxy.state_file`: the operator state of pool servers (drained, disabled) kept across
//! restarts, as the pinned backend map keeps it for VIP backends. Every server is listed, the
//! enabled ones too: an operator's "enable" of a server configured with `state = "draining"`
//! must survive the restart as well. A server not in the file starts as configured.
//!
//! ```json
//! {"pools": {"app": {"http://198.18.0.11:8000": "draining"}}}
//! ```
//!
//! Written whole on each change (a temporary file renamed over the old one, so a crash never
//! leaves half a file) and read at start.

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
};

use serde_json::{Map, Value, json};

use super::proxy_state::ProxyState;
use crate::operator::Operator;

/// Why the text of `proxy.state_file` says nothing usable.
#[derive(Debug, thiserror::Error)]
pub enum OperatorFileError {
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("expected {{\"pools\": {{POOL: {{URL: STATE}}}}}}")]
    NoPools,
    #[error("pools.{pool}: expected an object of URL: STATE")]
    NotAnObject { pool: String },
    /// `state` is the JSON value as the file has it (a string keeps its quotes).
    #[error("pools.{pool}.{url}: {state} is not \"enabled\", \"draining\" or \"disabled\"")]
    UnknownState {
        pool: String,
        url: String,
        state: Value,
    },
}

/// Why [`restore`] applied nothing: the start stops with this text.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("proxy.state_file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "proxy.state_file {}: {source} (fix it, or remove it to start every server enabled)",
        path.display()
    )]
    Decode {
        path: PathBuf,
        source: OperatorFileError,
    },
}

/// Pool name → server url → state.
pub type Snapshot = BTreeMap<String, BTreeMap<String, Operator>>;

/// The operator state of every pool server of `state`.
pub fn snapshot(state: &ProxyState) -> Snapshot {
    let mut pools = Snapshot::new();
    for (name, pool) in &state.pools {
        for server in &pool.servers {
            pools
                .entry(name.clone())
                .or_default()
                .insert(server.label.to_string(), server.health.operator());
        }
    }
    pools
}

pub fn encode(snapshot: &Snapshot) -> String {
    let pools: Map<String, Value> = snapshot
        .iter()
        .map(|(pool, servers)| {
            let servers: Map<String, Value> = servers
                .iter()
                .map(|(url, operator)| (url.clone(), json!(operator.label())))
                .collect();
            (pool.clone(), Value::Object(servers))
        })
        .collect();
    format!("{}\n", json!({ "pools": pools }))
}

pub fn decode(text: &str) -> Result<Snapshot, OperatorFileError> {
    let value: Value = serde_json::from_str(text).map_err(OperatorFileError::NotJson)?;
    let Some(pools) = value.get("pools").and_then(Value::as_object) else {
        return Err(OperatorFileError::NoPools);
    };
    let mut snapshot = Snapshot::new();
    for (pool, servers) in pools {
        let Some(servers) = servers.as_object() else {
            return Err(OperatorFileError::NotAnObject { pool: pool.clone() });
        };
        for (url, state) in servers {
            let Some(operator) = state.as_str().and_then(Operator::from_label) else {
                return Err(OperatorFileError::UnknownState {
                    pool: pool.clone(),
                    url: url.clone(),
                    state: state.clone(),
                });
            };
            snapshot
                .entry(pool.clone())
                .or_default()
                .insert(url.clone(), operator);
        }
    }
    Ok(snapshot)
}

/// Writes `state`'s operator states to `path`, replacing it whole (`replace_file`).
pub fn save(path: &Path, state: &ProxyState) -> io::Result<()> {
    crate::replace_file::replace_file(path, encode(&snapshot(state)).as_bytes())
}

/// [`save`] to `proxy.state_file` when it is set; a failure is logged (the change itself
/// stands: only a restart would lose it).
pub fn save_configured(state: &ProxyState) {
    if let Some(path) = &state.config.proxy.state_file
        && let Err(err) = save(path, state)
    {
        tracing::error!(
            file = %path.display(),
            "proxy.state_file: cannot save the operator state (a restart would forget it): {err}"
        );
    }
}

/// Applies the states in `path` to the servers of `state` that are still configured; returns
/// how many were applied. No file yet is no error.
pub fn restore(path: &Path, state: &ProxyState) -> Result<usize, RestoreError> {
    let read = crate::replace_file::read_if_present(path).map_err(|source| RestoreError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let Some(text) = read else {
        return Ok(0);
    };
    let snapshot = decode(&text).map_err(|source| RestoreError::Decode {
        path: path.to_path_buf(),
        source,
    })?;
    let mut applied = 0;
    for (pool_name, servers) in &snapshot {
        let Some(pool) = state.pools.get(pool_name) else {
            continue;
        };
        for (url, operator) in servers {
            if let Some(index) = pool.servers.iter().position(|s| *s.label == **url) {
                pool.set_operator(index, *operator, "kept from before the restart");
                applied += 1;
            }
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The snapshot, or the error's text (what the start reports).
    fn decode(text: &str) -> Result<Snapshot, String> {
        super::decode(text).map_err(|err| err.to_string())
    }

    /// Each text against the `format!` that made it when these errors were strings.
    #[test]
    fn texts_are_those_of_the_string_errors() {
        let json = || serde_json::from_str::<Value>("{").expect_err("not JSON");
        assert_eq!(
            OperatorFileError::NotJson(json()).to_string(),
            format!("not JSON: {}", json())
        );
        assert_eq!(
            OperatorFileError::NoPools.to_string(),
            "expected {\"pools\": {POOL: {URL: STATE}}}"
        );
        let (pool, url) = ("app", "http://198.18.0.11:8000");
        assert_eq!(
            OperatorFileError::NotAnObject {
                pool: pool.to_string()
            }
            .to_string(),
            format!("pools.{pool}: expected an object of URL: STATE")
        );
        for state in [json!("asleep"), json!(3), json!(null), json!({"a": 1})] {
            assert_eq!(
                OperatorFileError::UnknownState {
                    pool: pool.to_string(),
                    url: url.to_string(),
                    state: state.clone(),
                }
                .to_string(),
                format!(
                    "pools.{pool}.{url}: {state} is not \"enabled\", \"draining\" or \"disabled\""
                )
            );
        }
        let path = Path::new("/var/lib/balancer/operator.json");
        let io = || io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(
            RestoreError::Read {
                path: path.to_path_buf(),
                source: io(),
            }
            .to_string(),
            format!("proxy.state_file {}: {}", path.display(), io())
        );
        assert_eq!(
            RestoreError::Decode {
                path: path.to_path_buf(),
                source: OperatorFileError::NoPools,
            }
            .to_string(),
            format!(
                "proxy.state_file {}: {} (fix it, or remove it to start every server enabled)",
                path.display(),
                "expected {\"pools\": {POOL: {URL: STATE}}}"
            )
        );
    }

    #[test]
    fn a_snapshot_survives_encode_and_decode() {
        let mut snapshot = Snapshot::new();
        snapshot.entry("app".into()).or_default().extend([
            ("http://198.18.0.11:8000".to_string(), Operator::Draining),
            ("unix:/run/app.sock".to_string(), Operator::Disabled),
        ]);
        let text = encode(&snapshot);
        assert_eq!(
            text,
            "{\"pools\":{\"app\":{\"http://198.18.0.11:8000\":\"draining\",\"unix:/run/app.sock\":\"disabled\"}}}\n"
        );
        assert_eq!(decode(&text), Ok(snapshot));
    }

    #[test]
    fn a_bad_file_says_what_is_wrong() {
        assert!(decode("{").unwrap_err().starts_with("not JSON"));
        assert_eq!(
            decode("{}").unwrap_err(),
            "expected {\"pools\": {POOL: {URL: STATE}}}"
        );
        assert_eq!(
            decode("{\"pools\": {\"app\": {\"http://a:1\": \"asleep\"}}}").unwrap_err(),
            "pools.app.http://a:1: \"asleep\" is not \"enabled\", \"draining\" or \"disabled\""
        );
        assert_eq!(
            decode("{\"pools\": {\"app\": []}}").unwrap_err(),
            "pools.app: expected an object of URL: STATE"
        );
    }
}
