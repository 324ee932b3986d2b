//! Header hygiene: which fields never cross the proxy. One pass builds a new map in the
//! original order (`HeaderMap::remove` swap-removes, which would reorder what we promise to keep
//! in order), so the server gets every end-to-end field (Authorization, Cookie, ...) exactly as
//! the client sent it, minus what this module removes and reports. `X-Request-ID` is not this
//! module's: it passes here like any end-to-end field, and request_id.rs decides whether the
//! server gets it or a new one (the header phase sets it after this pass).

use hyper::{HeaderMap, header::HeaderName, header::HeaderValue};

use crate::config::{TrustedHeader, UnderscorePolicy};
use crate::http::hop_by_hop::{self, ConnectionOptions, length_mask, may_be_in};

/// What to remove from a request on its way to the server.
#[derive(Debug, Clone, Copy)]
pub struct RequestHygiene<'a> {
    pub underscore: UnderscorePolicy,
    /// Lowercase names of identity headers a proxy might set (Remote-User, ...): a client never
    /// gets to send them.
    pub identity_headers: &'a [HeaderName],
    /// The request switches protocols: `Upgrade` stays and Connection becomes exactly `upgrade`.
    pub keep_upgrade: bool,
}

/// Why a field was removed; one reason per removed name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemovalReason {
    /// A connection-specific field, or a name the Connection field lists.
    HopByHop,
    /// `Proxy` (httpoxy: CGI turns it into `HTTP_PROXY`) or `Proxy-*` (credentials for a proxy,
    /// not for the server).
    ProxyHeader,
    /// An identity header (or its underscore spelling).
    Identity,
    /// A member of a forwarded-header group (or its underscore spelling): the trust engine read
    /// what it trusts before, and we emit our own.
    ForwardedGroup,
    /// A name containing '_' under `underscore_headers = "drop"`.
    Underscore,
    /// Under `underscore_headers = "allow"`: a '_' name whose CGI/WSGI key another forwarded
    /// field already has.
    KeyCollision,
}

impl RemovalReason {
    /// The metric / log label.
    pub fn label(self) -> &'static str {
        match self {
            RemovalReason::HopByHop => "hop_by_hop",
            RemovalReason::ProxyHeader => "proxy_header",
            RemovalReason::Identity => "identity",
            RemovalReason::ForwardedGroup => "forwarded_group",
            RemovalReason::Underscore => "underscore",
            RemovalReason::KeyCollision => "key_collision",
        }
    }
}

/// What was removed, one entry per field name (all its values go together), in input order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HygieneReport {
    pub removed: Vec<(HeaderName, RemovalReason)>,
}

impl HygieneReport {
    #[cfg(test)]
    pub fn count(&self, reason: RemovalReason) -> usize {
        self.removed.iter().filter(|(_, r)| *r == reason).count()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HygieneError {
    /// `underscore_headers = "reject"`: the request is answered 400.
    #[error("header name {0} contains '_' (underscore_headers = \"reject\")")]
    Underscore(HeaderName),
}

/// The CGI/WSGI environment key of a header name (RFC 3875 §4.1.18): `HTTP_` + uppercase with
/// '-' turned into '_'. Two names with one key reach a CGI/WSGI application as one variable.
/// (CGI maps Content-Type and Content-Length without the prefix; the prefix changes no
/// collision between header names, so it is kept uniform.)
pub fn wsgi_key(name: &str) -> String {
    let mut key = String::with_capacity(name.len() + 5);
    key.push_str("HTTP_");
    key.extend(name.chars().map(|c| match c {
        '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    key
}

/// The request as the server may see it: hop-by-hop, `Proxy`/`Proxy-*`, identity and
/// forwarded-group fields removed, underscore names handled by the policy; every other field
/// kept, in order. Under `Allow`, a '_' name is removed when its '-' spelling would be removed
/// (so `X_Forwarded_For` goes whatever the policy), or when another field already has its key:
/// a '-' name always wins, else the first '_' spelling.
pub fn clean_request(
    headers: HeaderMap,
    rules: &RequestHygiene<'_>,
) -> Result<(HeaderMap, HygieneReport), HygieneError> {
    if rules.underscore == UnderscorePolicy::Reject
        && let Some(name) = headers.keys().find(|name| name.as_str().contains('_'))
    {
        return Err(HygieneError::Underscore(name.clone()));
    }
    let listed = ConnectionOptions::of(&headers);
    let group_names = TrustedHeader::header_names();
    static GROUP_LENGTHS: std::sync::LazyLock<u64> =
        std::sync::LazyLock::new(|| length_mask(TrustedHeader::header_names()));
    let group_lengths = *GROUP_LENGTHS;
    let base = |name: &str| -> Option<RemovalReason> {
        base_removal(name, &listed, rules.keep_upgrade).or_else(|| {
            if rules.identity_headers.iter().any(|id| id.as_str() == name) {
                Some(RemovalReason::Identity)
            } else if may_be_in(group_lengths, name) && group_names.binary_search(&name).is_ok() {
                Some(RemovalReason::ForwardedGroup)
            } else {
                None
            }
        })
    };
    // Most requests carry nothing to remove: they go on as they are, without a rebuild (a
    // per-request cost).
    if !rules.keep_upgrade
        && headers.keys().all(|name| {
            let name = name.as_str();
            !name.contains('_') && base(name).is_none()
        })
    {
        return Ok((headers, HygieneReport::default()));
    }
    // Keys of the '-' names that reach the server: they win over any '_' spelling (only
    // `Allow` lets a '_' name through to collide).
    let mut taken_keys: Vec<String> = if rules.underscore == UnderscorePolicy::Allow {
        headers
            .keys()
            .map(HeaderName::as_str)
            .filter(|name| !name.contains('_') && base(name).is_none())
            .map(wsgi_key)
            .collect()
    } else {
        Vec::new()
    };
    let decide = |name: &HeaderName| -> Option<RemovalReason> {
        let name = name.as_str();
        if !name.contains('_') {
            return base(name);
        }
        match rules.underscore {
            UnderscorePolicy::Drop | UnderscorePolicy::Reject => Some(RemovalReason::Underscore),
            UnderscorePolicy::Allow => {
                if let Some(reason) = base(&name.replace('_', "-")) {
                    return Some(reason);
                }
                let key = wsgi_key(name);
                if taken_keys.contains(&key) {
                    return Some(RemovalReason::KeyCollision);
                }
                taken_keys.push(key);
                None
            }
        }
    };
    Ok(rebuild(headers, rules.keep_upgrade, decide))
}

/// Removes the hop-by-hop fields (the fixed list, the names Connection lists, `Proxy` and
/// `Proxy-*`) in place, keeping the order of the rest; for responses, where no other request
/// rule applies. An upgrade keeps `Upgrade` and `Connection: upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let listed = ConnectionOptions::of(headers);
    if !keep_upgrade
        && headers
            .keys()
            .all(|name| base_removal(name.as_str(), &listed, false).is_none())
    {
        return;
    }
    let taken = std::mem::take(headers);
    let (cleaned, _) = rebuild(taken, keep_upgrade, |name| {
        base_removal(name.as_str(), &listed, keep_upgrade)
    });
    *headers = cleaned;
}

/// The rules requests and responses share ([`hop_by_hop::removal`]), as a report's reason.
fn base_removal(
    name: &str,
    listed: &ConnectionOptions,
    keep_upgrade: bool,
) -> Option<RemovalReason> {
    hop_by_hop::removal(name, listed, keep_upgrade).map(|removal| match removal {
        hop_by_hop::Removal::HopByHop => RemovalReason::HopByHop,
        hop_by_hop::Removal::ProxyHeader => RemovalReason::ProxyHeader,
    })
}

/// Fields the proxy adds to a cleaned map (see `rebuild`): as head.rs's room for a parsed
/// head.
const ROOM_FOR_ADDED_FIELDS: usize = 4;

/// Copies the fields `decide` keeps into a new map, in order, and reports the others. With
/// `keep_upgrade`, `Connection: upgrade` takes the place of the first Connection field (or
/// comes last when there was none).
fn rebuild(
    headers: HeaderMap,
    keep_upgrade: bool,
    mut decide: impl FnMut(&HeaderName) -> Option<RemovalReason>,
) -> (HeaderMap, HygieneReport) {
    // With the room the proxy's own fields take afterwards (the request ID, `Host`), as the
    // parsed head's map has: an exact fit grew and rehashed
    // the new map on the first of them, for every request with `Connection: close` (callgrind).
    let mut cleaned = HeaderMap::with_capacity(headers.len() + ROOM_FOR_ADDED_FIELDS);
    let mut report = HygieneReport::default();
    let upgrade_connection = || HeaderValue::from_static("upgrade");
    let mut current: Option<(HeaderName, Option<RemovalReason>)> = None;
    for (name, value) in headers {
        // `None` continues the previous name (HeaderMap yields a name once, then its values).
        if let Some(name) = name {
            if keep_upgrade && name == hyper::header::CONNECTION {
                if !cleaned.contains_key(&name) {
                    cleaned.append(name.clone(), upgrade_connection());
                }
                current = Some((name, Some(RemovalReason::HopByHop)));
                continue;
            }
            let reason = decide(&name);
            if let Some(reason) = reason {
                report.removed.push((name.clone(), reason));
            }
            current = Some((name, reason));
        }
        if let Some((name, None)) = &current {
            cleaned.append(name.clone(), value);
        }
    }
    if keep_upgrade && !cleaned.contains_key(hyper::header::CONNECTION) {
        cleaned.append(hyper::header::CONNECTION, upgrade_connection());
    }
    (cleaned, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trusted_header_groups_length_mask_passes_their_names() {
        let groups = length_mask(TrustedHeader::header_names());
        for name in TrustedHeader::header_names() {
            assert!(may_be_in(groups, name), "{name}");
        }
    }

    fn map(fields: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("test name"),
                HeaderValue::from_str(value).expect("test value"),
            );
        }
        headers
    }

    fn fields(headers: &HeaderMap) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    value.to_str().expect("ascii").to_owned(),
                )
            })
            .collect()
    }

    fn owned(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn identity() -> Vec<HeaderName> {
        vec![
            HeaderName::from_static("remote-user"),
            HeaderName::from_static("x-remote-user"),
        ]
    }

    struct Case {
        name: &'static str,
        underscore: UnderscorePolicy,
        keep_upgrade: bool,
        input: &'static [(&'static str, &'static str)],
        kept: &'static [(&'static str, &'static str)],
        removed: &'static [(&'static str, RemovalReason)],
    }

    const BASE: Case = Case {
        name: "",
        underscore: UnderscorePolicy::Drop,
        keep_upgrade: false,
        input: &[],
        kept: &[],
        removed: &[],
    };

    use RemovalReason::*;

    const CASES: &[Case] = &[
        Case {
            name: "end-to-end fields pass untouched and in order, repeated values too",
            input: &[
                ("accept", "text/html"),
                ("authorization", "Bearer abc"),
                ("cookie", "a=1"),
                ("x-custom", "one"),
                ("cookie", "b=2"),
                ("x-custom", "two"),
                ("user-agent", "t"),
            ],
            // HeaderMap groups the values of one name at its first position.
            kept: &[
                ("accept", "text/html"),
                ("authorization", "Bearer abc"),
                ("cookie", "a=1"),
                ("cookie", "b=2"),
                ("x-custom", "one"),
                ("x-custom", "two"),
                ("user-agent", "t"),
            ],
            ..BASE
        },
        Case {
            name: "hop-by-hop and Connection-listed names go, Host and Content-Length stay",
            input: &[
                ("host", "a.test"),
                ("connection", "keep-alive, X-Secret, host, content-length"),
                ("keep-alive", "timeout=5"),
                ("x-secret", "1"),
                ("te", "trailers"),
                ("trailer", "x"),
                ("transfer-encoding", "chunked"),
                ("content-length", "3"),
                ("upgrade", "websocket"),
                ("cookie", "a=1"),
            ],
            kept: &[
                ("host", "a.test"),
                ("content-length", "3"),
                ("cookie", "a=1"),
            ],
            removed: &[
                ("connection", HopByHop),
                ("keep-alive", HopByHop),
                ("x-secret", HopByHop),
                ("te", HopByHop),
                ("trailer", HopByHop),
                ("transfer-encoding", HopByHop),
                ("upgrade", HopByHop),
            ],
            ..BASE
        },
        Case {
            name: "every Connection field line lists names to remove (RFC 9110 §7.6.1)",
            input: &[
                ("host", "a.test"),
                ("connection", "keep-alive, a, b, c, X-Six"),
                ("x-one", "1"),
                ("x-six", "6"),
                ("connection", "X-One"),
                ("x-twin", "kept: not listed"),
                ("connection", " , x-two ,"),
                ("x-two", "2"),
                ("connection", "a, b, c, X-Five"),
                ("x-five", "5"),
                ("accept", "*/*"),
            ],
            kept: &[
                ("host", "a.test"),
                ("x-twin", "kept: not listed"),
                ("accept", "*/*"),
            ],
            removed: &[
                ("connection", HopByHop),
                ("x-one", HopByHop),
                ("x-six", HopByHop),
                ("x-two", HopByHop),
                ("x-five", HopByHop),
            ],
            ..BASE
        },
        Case {
            name: "an upgrade keeps Upgrade and Connection becomes exactly upgrade, in place",
            keep_upgrade: true,
            input: &[
                ("host", "a.test"),
                ("connection", "Upgrade, x-secret"),
                ("upgrade", "websocket"),
                ("x-secret", "1"),
                ("sec-websocket-key", "k"),
            ],
            kept: &[
                ("host", "a.test"),
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-key", "k"),
            ],
            removed: &[("x-secret", HopByHop)],
            ..BASE
        },
        Case {
            name: "Proxy (httpoxy) and every Proxy-* go",
            input: &[
                ("proxy", "http://evil.test"),
                ("proxy-authorization", "Basic eA=="),
                ("proxy-connection", "keep-alive"),
                ("proxyish", "kept"),
            ],
            kept: &[("proxyish", "kept")],
            removed: &[
                ("proxy", ProxyHeader),
                ("proxy-authorization", ProxyHeader),
                ("proxy-connection", HopByHop),
            ],
            ..BASE
        },
        Case {
            name: "identity headers and forwarded-group fields go",
            input: &[
                ("remote-user", "admin"),
                ("x-remote-user", "admin"),
                ("x-forwarded-for", "198.18.0.1"),
                ("forwarded", "for=198.18.0.1"),
                ("x-real-ip", "198.18.0.1"),
                ("x-forwarded-prefix", "/x"),
                ("x-forwarded-user", "kept: not configured"),
            ],
            kept: &[("x-forwarded-user", "kept: not configured")],
            removed: &[
                ("remote-user", Identity),
                ("x-remote-user", Identity),
                ("x-forwarded-for", ForwardedGroup),
                ("forwarded", ForwardedGroup),
                ("x-real-ip", ForwardedGroup),
                ("x-forwarded-prefix", ForwardedGroup),
            ],
            ..BASE
        },
        Case {
            name: "drop: every underscore name goes",
            input: &[
                ("x_custom", "1"),
                ("accept", "*/*"),
                ("x_forwarded_for", "1.2.3.4"),
            ],
            kept: &[("accept", "*/*")],
            removed: &[("x_custom", Underscore), ("x_forwarded_for", Underscore)],
            ..BASE
        },
        Case {
            name: "allow: a lone underscore name is kept",
            underscore: UnderscorePolicy::Allow,
            input: &[("x_custom", "1"), ("accept", "*/*")],
            kept: &[("x_custom", "1"), ("accept", "*/*")],
            ..BASE
        },
        Case {
            name: "allow: the '-' spelling wins when it comes second",
            underscore: UnderscorePolicy::Allow,
            input: &[("x_custom", "under"), ("x-custom", "dash")],
            kept: &[("x-custom", "dash")],
            removed: &[("x_custom", KeyCollision)],
            ..BASE
        },
        Case {
            name: "allow: the '-' spelling wins when it comes first",
            underscore: UnderscorePolicy::Allow,
            input: &[("x-custom", "dash"), ("x_custom", "under")],
            kept: &[("x-custom", "dash")],
            removed: &[("x_custom", KeyCollision)],
            ..BASE
        },
        Case {
            name: "allow: of two underscore spellings the first wins",
            underscore: UnderscorePolicy::Allow,
            input: &[("x_a-b", "first"), ("x-a_b", "second")],
            kept: &[("x_a-b", "first")],
            removed: &[("x-a_b", KeyCollision)],
            ..BASE
        },
        Case {
            name: "allow: twins of group, identity, proxy and hop-by-hop names always go",
            underscore: UnderscorePolicy::Allow,
            input: &[
                ("x_forwarded_for", "1.2.3.4"),
                ("x-forwarded_proto", "https"),
                ("remote_user", "admin"),
                ("proxy_authorization", "x"),
                ("transfer_encoding", "chunked"),
            ],
            removed: &[
                ("x_forwarded_for", ForwardedGroup),
                ("x-forwarded_proto", ForwardedGroup),
                ("remote_user", Identity),
                ("proxy_authorization", ProxyHeader),
                ("transfer_encoding", HopByHop),
            ],
            ..BASE
        },
    ];

    #[test]
    fn request_hygiene_table() {
        let identity = identity();
        for case in CASES {
            let rules = RequestHygiene {
                underscore: case.underscore,
                identity_headers: &identity,
                keep_upgrade: case.keep_upgrade,
            };
            let (cleaned, report) = clean_request(map(case.input), &rules)
                .unwrap_or_else(|error| panic!("case {:?}: refused: {error}", case.name));
            assert_eq!(
                fields(&cleaned),
                owned(case.kept),
                "case {:?}: kept fields",
                case.name
            );
            let removed: Vec<(&str, RemovalReason)> = report
                .removed
                .iter()
                .map(|(name, reason)| (name.as_str(), *reason))
                .collect();
            assert_eq!(removed, case.removed, "case {:?}: removed", case.name);
        }
    }

    #[test]
    fn reject_refuses_any_underscore_name() {
        let identity = identity();
        let rules = RequestHygiene {
            underscore: UnderscorePolicy::Reject,
            identity_headers: &identity,
            keep_upgrade: false,
        };
        let refused = clean_request(map(&[("accept", "*/*"), ("x_custom", "1")]), &rules);
        assert_eq!(
            refused.map(|_| ()),
            Err(HygieneError::Underscore(HeaderName::from_static(
                "x_custom"
            )))
        );
        let (cleaned, report) =
            clean_request(map(&[("accept", "*/*")]), &rules).expect("no underscore: accepted");
        assert_eq!(fields(&cleaned), owned(&[("accept", "*/*")]));
        assert!(report.removed.is_empty(), "nothing removed: {report:?}");
    }

    #[test]
    fn report_counts_by_reason() {
        let identity = identity();
        let rules = RequestHygiene {
            underscore: UnderscorePolicy::Drop,
            identity_headers: &identity,
            keep_upgrade: false,
        };
        let (_, report) = clean_request(
            map(&[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-for", "5.6.7.8"),
                ("x-real-ip", "1.2.3.4"),
                ("a_b", "1"),
            ]),
            &rules,
        )
        .expect("drop never refuses");
        assert_eq!(report.count(RemovalReason::ForwardedGroup), 2, "{report:?}");
        assert_eq!(report.count(RemovalReason::Underscore), 1, "{report:?}");
        assert_eq!(report.count(RemovalReason::HopByHop), 0, "{report:?}");
    }

    #[test]
    fn responses_lose_only_hop_by_hop_fields_in_order() {
        let input = map(&[
            ("content-type", "text/html"),
            ("connection", "close, x-internal"),
            ("x-internal", "1"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("proxy-authenticate", "Basic"),
            ("x-forwarded-for", "kept in responses"),
            ("x_under", "kept in responses"),
            ("remote-user", "kept in responses"),
            ("transfer-encoding", "chunked"),
        ]);
        let mut plain = input.clone();
        strip_hop_by_hop(&mut plain, false);
        assert_eq!(
            fields(&plain),
            owned(&[
                ("content-type", "text/html"),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("x-forwarded-for", "kept in responses"),
                ("x_under", "kept in responses"),
                ("remote-user", "kept in responses"),
            ])
        );

        let mut switching = map(&[
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-accept", "x"),
        ]);
        strip_hop_by_hop(&mut switching, true);
        assert_eq!(
            fields(&switching),
            owned(&[
                ("upgrade", "websocket"),
                ("connection", "upgrade"),
                ("sec-websocket-accept", "x"),
            ])
        );
    }

    #[test]
    fn wsgi_keys() {
        let cases = [
            ("x-forwarded-for", "HTTP_X_FORWARDED_FOR"),
            ("x_forwarded_for", "HTTP_X_FORWARDED_FOR"),
            ("x-a_b", "HTTP_X_A_B"),
            ("accept", "HTTP_ACCEPT"),
        ];
        for (name, key) in cases {
            assert_eq!(wsgi_key(name), key, "key of {name:?}");
        }
    }
}
