//! The value of the cookie `mode = "insert"` sets: `v1.<server id>.<tag>`, where the tag is the
//! base64url HMAC-SHA256 (all 32 bytes, 43 characters) of `v1.<server id>` under the pool's key.
//! The server id is its `route` when it has one, else `~` and 12 base64url characters of the
//! SHA-256 of its stable id (its URL): it survives reloads and reordering, and shows no address.
//! Routes never contain '~' or '.', so the two kinds never collide, and the last '.' always
//! starts the tag.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{digest, hmac};

use super::ServerIdentity;

const VERSION: &str = "v1";

/// Longer values are refused unread: a real one is "v1." + a route (configs keep them short) or
/// a 13-character hash id + "." + 43 characters.
const MAX_VALUE_LEN: usize = 256;

/// Signs and verifies the insert cookie for one pool's servers.
pub(super) struct Signer {
    key: hmac::Key,
    /// Each server's id, in pool order.
    ids: Vec<String>,
    /// Each server's signed cookie value, in pool order (deterministic, so computed once).
    values: Vec<String>,
}

impl std::fmt::Debug for Signer {
    // The key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("ids", &self.ids)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(key: &[u8], servers: &[ServerIdentity]) -> Signer {
        let key = hmac::Key::new(hmac::HMAC_SHA256, key);
        let ids: Vec<String> = servers.iter().map(server_id).collect();
        let values = ids
            .iter()
            .map(|id| {
                let payload = format!("{VERSION}.{id}");
                let tag = hmac::sign(&key, payload.as_bytes());
                format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
            })
            .collect();
        Signer { key, ids, values }
    }

    /// The cookie value that sticks a client to server `index`.
    pub fn value(&self, index: usize) -> Option<&str> {
        self.values.get(index).map(String::as_str)
    }

    /// The server a cookie value names, if its tag is right (checked in constant time) and the
    /// server is still in the pool. Two servers with the same id (the same URL, no route): the
    /// first.
    pub fn verify(&self, value: &[u8]) -> Option<usize> {
        if value.len() > MAX_VALUE_LEN {
            return None;
        }
        let dot = value.iter().rposition(|&b| b == b'.')?;
        let (payload, encoded_tag) = (&value[..dot], &value[dot + 1..]);
        let id = payload
            .strip_prefix(VERSION.as_bytes())?
            .strip_prefix(b".")?;
        let tag = URL_SAFE_NO_PAD.decode(encoded_tag).ok()?;
        hmac::verify(&self.key, payload, &tag).ok()?;
        self.ids.iter().position(|known| known.as_bytes() == id)
    }
}

/// A server's id in the cookie: its route, else a hash of its stable id.
fn server_id(server: &ServerIdentity) -> String {
    match &server.route {
        Some(route) => route.clone(),
        None => {
            let hash = digest::digest(&digest::SHA256, server.stable_id.as_bytes());
            format!("~{}", URL_SAFE_NO_PAD.encode(&hash.as_ref()[..9]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(route: Option<&str>, url: &str) -> ServerIdentity {
        ServerIdentity {
            route: route.map(str::to_string),
            stable_id: url.to_string(),
        }
    }

    #[test]
    fn ids_are_routes_or_address_free_hashes() {
        let signer = Signer::new(
            b"0123456789abcdef",
            &[
                identity(Some("app-1"), "http://198.18.1.2:8000"),
                identity(None, "http://198.18.1.3:8000"),
            ],
        );
        assert_eq!(signer.ids[0], "app-1");
        let hashed = &signer.ids[1];
        assert!(
            hashed.len() == 13 && hashed.starts_with('~') && !hashed.contains("198"),
            "a server without route gets '~' and 12 hash characters, not its address: {hashed:?}"
        );
        for (index, value) in signer.values.iter().enumerate() {
            assert!(
                value.starts_with(&format!("v1.{}.", signer.ids[index])) && value.len() < 80,
                "value {value:?} is versioned, names the id and is compact"
            );
            assert_eq!(signer.verify(value.as_bytes()), Some(index), "{value:?}");
        }
    }

    #[test]
    fn hash_ids_do_not_depend_on_order_or_neighbours() {
        let a = Signer::new(
            b"0123456789abcdef",
            &[
                identity(None, "unix:/run/a.sock"),
                identity(None, "unix:/run/b.sock"),
            ],
        );
        let b = Signer::new(b"0123456789abcdef", &[identity(None, "unix:/run/b.sock")]);
        assert_eq!(
            a.value(1),
            b.value(0),
            "the same server signs the same value"
        );
        assert_eq!(b.verify(a.value(1).unwrap_or_default().as_bytes()), Some(0));
        assert_eq!(b.verify(a.value(0).unwrap_or_default().as_bytes()), None);
    }
}
