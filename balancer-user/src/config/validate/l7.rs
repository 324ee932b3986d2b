//! Rules of the proxy's tables: names, binds and the references between listeners, routes and
//! pools; the forms of hosts, paths and server URLs; the ranges of durations. Nothing here
//! touches the file system: relative file paths are only resolved against the config's
//! directory (the proxy opens the files and names them in its own errors).

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv6Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use toml::Spanned;

use crate::http::{authority, hop_by_hop};

use super::{
    check_expect, check_host, check_interval_and_timeout, check_path, is_valid_host_name,
    is_valid_name, not_a_name, show,
};
use crate::config::{
    AccessLogFormat, AdminConfig, Balance, CertificatePaths, HashOn, HeaderEdits, HeaderGroup,
    HealthTls, HostPattern, InitialState, KeepaliveConfig, L7Config, ListenerConfig, OnDown,
    PassiveHealthConfig, PoolConfig, PoolHealthConfig, PoolTimeouts, ProxySettings, RetryConfig,
    RouteConfig, RouteTarget, ServerConfig, ServerTlsConfig, ServerUrl, StickyConfig, StickyKey,
    TlsConfig, TrustedHeader, UnderscorePolicy,
    de::{
        AccessLog, BalanceKind, ErrorPages, HeaderEditsTable, ListenerTable, OnDownKind,
        PoolHealthTable, PoolTable, Pools, ProxyTable, RouteTable, StickyMode, StickyTable, Table,
        TlsTable, Underscore,
    },
    error::Invalid,
};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Longest path of a unix socket: `sun_path` holds 108 bytes with the terminating NUL.
const UNIX_PATH_MAX: usize = 107;

pub(super) fn l7_config(
    admin: &AdminConfig,
    proxy: &ProxyTable,
    listeners: &[Table<ListenerTable>],
    routes: &[Spanned<Table<RouteTable>>],
    pools: &Pools,
    base_dir: &Path,
) -> Result<L7Config, Invalid> {
    let proxy = proxy_settings(proxy, base_dir)?;
    let listeners = listener_configs(admin, listeners, base_dir)?;
    let mut pools = pools
        .0
        .iter()
        .map(|(name, pool)| pool_config(name, pool, base_dir))
        .collect::<Result<Vec<_>, _>>()?;
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    let routes = route_configs(routes, &listeners, &pools, base_dir)?;
    Ok(L7Config {
        proxy,
        listeners,
        routes,
        pools,
    })
}

fn proxy_settings(table: &ProxyTable, base_dir: &Path) -> Result<ProxySettings, Invalid> {
    Ok(ProxySettings {
        access_log_file: table
            .access_log_file
            .as_ref()
            .map(|file| file_path("proxy.access_log_file", file, base_dir))
            .transpose()?,
        state_file: table
            .state_file
            .as_ref()
            .map(|file| file_path("proxy.state_file", file, base_dir))
            .transpose()?,
        upgrade_socket: table
            .upgrade_socket
            .as_ref()
            .map(|file| file_path("proxy.upgrade_socket", file, base_dir))
            .transpose()?,
        access_log: match table.access_log {
            AccessLog::Combined | AccessLog::Text => AccessLogFormat::Combined,
            AccessLog::Json => AccessLogFormat::Json,
            AccessLog::Off => AccessLogFormat::Off,
        },
        workers: table.workers,
        temp_dir: table
            .temp_dir
            .as_ref()
            .map(|dir| file_path("proxy.temp_dir", dir, base_dir))
            .transpose()?,
        body_buffer: table.body_buffer,
        response_buffer: table.response_buffer,
        max_response_buffer: table.max_response_buffer,
        request_id: table.request_id,
        shutdown_timeout: duration(
            "proxy.shutdown_timeout",
            table.shutdown_timeout.as_ref(),
            ProxySettings::DEFAULT_SHUTDOWN_TIMEOUT,
            Limits::UpTo(HOUR),
        )?,
    })
}

// ---- Listeners ---------------------------------------------------------------------------------

fn listener_configs(
    admin: &AdminConfig,
    tables: &[Table<ListenerTable>],
    base_dir: &Path,
) -> Result<Vec<ListenerConfig>, Invalid> {
    let mut names = HashMap::new();
    let mut binds = HashMap::new();
    let mut configs = Vec::with_capacity(tables.len());
    for (index, listener) in tables.iter().enumerate() {
        let key = format!("listener[{index}]");
        let name = listener.name.get_ref();
        if !is_valid_name(name) {
            return Err(Invalid::at(
                format!("{key}.name"),
                &listener.name,
                not_a_name(name),
            ));
        }
        if let Some(first) = names.insert(name.as_str(), index) {
            return Err(Invalid::at(
                format!("{key}.name"),
                &listener.name,
                format!("{name:?} is already the name of listener[{first}]"),
            ));
        }

        let bind = *listener.bind.get_ref();
        let bind_error = |what: String| Invalid::at(format!("{key}.bind"), &listener.bind, what);
        if bind.port() == 0 {
            return Err(bind_error(format!(
                "{bind} has port 0: give the port clients connect to"
            )));
        }
        if bind == admin.listen {
            return Err(bind_error(format!(
                "{bind} is admin.listen, the admin API's address"
            )));
        }
        if let Some(first) = binds.insert(bind, index) {
            return Err(bind_error(format!(
                "{bind} is already the bind of listener[{first}] ({:?})",
                tables[first].name.get_ref()
            )));
        }

        let tls = listener
            .tls
            .as_ref()
            .map(|tls| tls_config(&format!("{key}.tls"), tls.get_ref(), base_dir))
            .transpose()?;
        let redirect_https = match &listener.redirect_https {
            Some(written) if *written.get_ref() && tls.is_some() => {
                return Err(Invalid::at(
                    format!("{key}.redirect_https"),
                    written,
                    "only allowed on a plain listener: this one has tls, so its clients already use HTTPS",
                ));
            }
            Some(written) => *written.get_ref(),
            None => false,
        };
        let https_port = match &listener.https_port {
            Some(written) if !redirect_https => {
                return Err(Invalid::at(
                    format!("{key}.https_port"),
                    written,
                    "only allowed with redirect_https = true (it is the port the redirects name)",
                ));
            }
            Some(written) => *written.get_ref(),
            None => ListenerConfig::DEFAULT_HTTPS_PORT,
        };

        let (trusted_proxies, trusted_headers) = trust(&key, listener)?;
        let (allowed_hosts, disallowed_host_status) = allowed_hosts(&key, listener)?;
        let identity_headers = identity_headers(&key, listener)?;
        configs.push(ListenerConfig {
            name: name.clone(),
            bind,
            tls,
            redirect_https,
            https_port,
            header_read_timeout: duration(
                &format!("{key}.header_read_timeout"),
                listener.header_read_timeout.as_ref(),
                ListenerConfig::DEFAULT_HEADER_READ_TIMEOUT,
                Limits::AboveZeroUpTo(HOUR),
            )?,
            keepalive_timeout: duration(
                &format!("{key}.keepalive_timeout"),
                listener.keepalive_timeout.as_ref(),
                ListenerConfig::DEFAULT_KEEPALIVE_TIMEOUT,
                Limits::AboveZeroUpTo(HOUR),
            )?,
            max_header_bytes: listener.max_header_bytes,
            max_headers: listener.max_headers,
            max_connections: listener.max_connections,
            trusted_proxies,
            trusted_headers,
            underscore_headers: match listener.underscore_headers {
                Underscore::Drop => UnderscorePolicy::Drop,
                Underscore::Reject => UnderscorePolicy::Reject,
                Underscore::Allow => UnderscorePolicy::Allow,
            },
            allowed_hosts,
            disallowed_host_status,
            identity_headers,
            emit_forwarded: listener.emit_forwarded,
            emit_x_real_ip: listener.emit_x_real_ip,
        });
    }
    Ok(configs)
}

/// `trusted_proxies` and `trusted_headers`: both or neither, and at most one header per group.
fn trust(key: &str, listener: &ListenerTable) -> Result<(Vec<IpNet>, Vec<TrustedHeader>), Invalid> {
    let proxies: Vec<IpNet> = listener
        .trusted_proxies
        .iter()
        .map(|cidr| cidr.get_ref().0)
        .collect();
    let Some(written) = &listener.trusted_headers else {
        if let Some(first) = listener.trusted_proxies.first() {
            return Err(Invalid::at(
                format!("{key}.trusted_proxies"),
                first,
                "trusted_proxies without trusted_headers trusts nothing: list the headers these proxies set, e.g. trusted_headers = [\"X-Forwarded-For\", \"X-Forwarded-Proto\"]",
            ));
        }
        return Ok((proxies, Vec::new()));
    };
    if proxies.is_empty() {
        return Err(Invalid::at(
            format!("{key}.trusted_headers"),
            written,
            "trusted_headers needs trusted_proxies: the addresses of the proxies allowed to send them",
        ));
    }
    let mut trusted: Vec<(TrustedHeader, &str)> = Vec::new();
    for name in written.get_ref() {
        let text = name.get_ref();
        let Some(members) = TrustedHeader::parse_config(text) else {
            let known: Vec<&str> = TrustedHeader::ALL.iter().map(|m| m.config_name()).collect();
            return Err(Invalid::at(
                format!("{key}.trusted_headers"),
                name,
                format!(
                    "{text:?} is not a forwarded header this balancer reads; one of \"Forwarded\", {}",
                    known
                        .iter()
                        .map(|k| format!("{k:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        for member in members {
            if let Some((_, earlier)) = trusted.iter().find(|(m, _)| m.group() == member.group()) {
                return Err(Invalid::at(
                    format!("{key}.trusted_headers"),
                    name,
                    format!(
                        "{text:?} and {earlier:?} both carry the {}: trust one header per group, so that a proxy and a client cannot disagree through the other",
                        group_text(member.group())
                    ),
                ));
            }
            trusted.push((member, text.as_str()));
        }
    }
    Ok((
        proxies,
        trusted.into_iter().map(|(member, _)| member).collect(),
    ))
}

fn group_text(group: HeaderGroup) -> &'static str {
    match group {
        HeaderGroup::Client => "client address",
        HeaderGroup::Scheme => "scheme",
        HeaderGroup::Host => "host",
        HeaderGroup::Port => "port",
        HeaderGroup::Prefix => "path prefix",
    }
}

/// `allowed_hosts` and `disallowed_host_status`.
fn allowed_hosts(key: &str, listener: &ListenerTable) -> Result<(Vec<HostPattern>, u16), Invalid> {
    let hosts = match &listener.allowed_hosts {
        Some(written) if written.get_ref().is_empty() => {
            return Err(Invalid::at(
                format!("{key}.allowed_hosts"),
                written,
                "is empty, which would refuse every request; leave it out to allow every host",
            ));
        }
        Some(written) => written
            .get_ref()
            .iter()
            .map(|host| host_pattern(&format!("{key}.allowed_hosts"), host))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let status = match &listener.disallowed_host_status {
        Some(written) if hosts.is_empty() => {
            return Err(Invalid::at(
                format!("{key}.disallowed_host_status"),
                written,
                "only allowed with allowed_hosts",
            ));
        }
        Some(written) if ![400, 421].contains(written.get_ref()) => {
            return Err(Invalid::at(
                format!("{key}.disallowed_host_status"),
                written,
                format!(
                    "{} must be 421 (Misdirected Request) or 400 (Bad Request)",
                    written.get_ref()
                ),
            ));
        }
        Some(written) => *written.get_ref(),
        None => ListenerConfig::DEFAULT_DISALLOWED_HOST_STATUS,
    };
    Ok((hosts, status))
}

fn identity_headers(key: &str, listener: &ListenerTable) -> Result<Vec<String>, Invalid> {
    let Some(written) = &listener.identity_headers else {
        return Ok(ListenerConfig::DEFAULT_IDENTITY_HEADERS
            .iter()
            .map(ToString::to_string)
            .collect());
    };
    written
        .iter()
        .map(|name| header_name(&format!("{key}.identity_headers"), name))
        .collect()
}

/// A header field name (an HTTP token), lowercase.
fn header_name(key: &str, written: &Spanned<String>) -> Result<String, Invalid> {
    header_name_at(key, written.get_ref(), written)
}

/// Like `header_name`, for a name written as a table key (errors point at its value).
fn header_name_at<T>(key: &str, name: &str, written: &Spanned<T>) -> Result<String, Invalid> {
    if !is_token(name) {
        return Err(Invalid::at(
            key,
            written,
            format!("{name:?} is not a header name (letters, digits and !#$%&'*+-.^_`|~)"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// Headers that describe the connection or the framing: the proxy sets them itself, so
/// `request_headers` / `response_headers` may not. Besides these, the hop-by-hop ones
/// ([`hop_by_hop::HOP_BY_HOP`]).
const NOT_EDITABLE: &[&str] = &["content-length", "host"];

fn header_edits(key: &str, table: &HeaderEditsTable) -> Result<HeaderEdits, Invalid> {
    let editable = |key: &str, written: &Spanned<String>, name: String| {
        if NOT_EDITABLE.contains(&name.as_str()) || hop_by_hop::HOP_BY_HOP.contains(&name.as_str())
        {
            let hint = if name == "host" {
                " (use preserve_host)"
            } else {
                ""
            };
            return Err(Invalid::at(
                key,
                written,
                format!("{name:?} is set by the proxy itself and cannot be edited{hint}"),
            ));
        }
        Ok(name)
    };
    let mut set = Vec::with_capacity(table.set.0.len());
    for (name, value) in &table.set.0 {
        let entry = format!("{key}.set");
        let name = editable(&entry, value, header_name_at(&entry, name, value)?)?;
        let text = value.get_ref();
        if !crate::http::field_value::is_field_value(text.as_bytes()) {
            return Err(Invalid::at(
                format!("{entry}.{name}"),
                value,
                "a header value cannot hold control characters (line breaks, NUL, ...)",
            ));
        }
        if set
            .iter()
            .any(|(earlier, _): &(String, String)| earlier == &name)
        {
            return Err(Invalid::at(
                format!("{entry}.{name}"),
                value,
                "is set twice (header names are case-insensitive)",
            ));
        }
        set.push((name, text.trim().to_string()));
    }
    let unset = table
        .unset
        .iter()
        .map(|name| {
            let entry = format!("{key}.unset");
            editable(&entry, name, header_name(&entry, name)?)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HeaderEdits { set, unset })
}

fn tls_config(key: &str, tls: &TlsTable, base_dir: &Path) -> Result<TlsConfig, Invalid> {
    let written = &tls.certificates;
    let list = &written.get_ref().0;
    if list.is_empty() {
        return Err(Invalid::at(
            format!("{key}.certificates"),
            written,
            "needs at least one certificate (the first is the default, for clients without SNI)",
        ));
    }
    let certificates = list
        .iter()
        .enumerate()
        .map(|(position, certificate)| {
            let entry = format!("{key}.certificates[{position}]");
            Ok(CertificatePaths {
                cert: file_path(&format!("{entry}.cert"), &certificate.cert, base_dir)?,
                key: file_path(&format!("{entry}.key"), &certificate.key, base_dir)?,
            })
        })
        .collect::<Result<_, Invalid>>()?;
    Ok(TlsConfig { certificates })
}

// ---- Routes ------------------------------------------------------------------------------------

fn route_configs(
    routes: &[Spanned<Table<RouteTable>>],
    listeners: &[ListenerConfig],
    pools: &[PoolConfig],
    base_dir: &Path,
) -> Result<Vec<RouteConfig>, Invalid> {
    let names = route_names(routes)?;
    // (listener, host as written in messages, path) → index and name of the route.
    let mut matches = HashMap::new();
    let mut configs = Vec::with_capacity(routes.len());
    for ((index, written), name) in routes.iter().enumerate().zip(names) {
        let route: &RouteTable = written.get_ref();
        let key = format!("route[{index}]");

        let listener = match &route.listener {
            Some(written) => Some(route_listener(&key, written, listeners)?),
            None => {
                if !listeners.iter().any(|l| !l.redirect_https) {
                    return Err(Invalid::at(
                        key,
                        written,
                        "applies to every listener (it names none), but there is no listener it could serve: add a [[listener]] without redirect_https",
                    ));
                }
                None
            }
        };

        let host = route
            .host
            .as_ref()
            .map(|host| host_pattern(&format!("{key}.host"), host))
            .transpose()?;
        let path = match &route.path {
            Some(path) => route_path(&format!("{key}.path"), path)?,
            None => "/".to_string(),
        };

        let target = match (&route.pool, &route.static_dir) {
            (Some(_), Some(dir)) => {
                return Err(Invalid::at(
                    format!("{key}.static_dir"),
                    dir,
                    "a route has either pool or static_dir, not both",
                ));
            }
            (None, None) => {
                return Err(Invalid::at(
                    key,
                    written,
                    "needs a target: pool = \"NAME\" or static_dir = \"DIR\"",
                ));
            }
            (Some(pool), None) => {
                let pool_name = pool.get_ref();
                if !pools.iter().any(|p| &p.name == pool_name) {
                    let known = pools.iter().map(|p| p.name.as_str());
                    return Err(Invalid::at(
                        format!("{key}.pool"),
                        pool,
                        format!(
                            "{pool_name:?} is not the name of a pool ({})",
                            known_names("pools", known, "[pool.NAME]")
                        ),
                    ));
                }
                RouteTarget::Pool(pool_name.clone())
            }
            (None, Some(dir)) => {
                RouteTarget::Static(file_path(&format!("{key}.static_dir"), dir, base_dir)?)
            }
        };

        let host_text = match &host {
            Some(host) => format!("host {:?}", host_text(host)),
            None => "no host".to_string(),
        };
        if let Some((earlier, earlier_name)) = matches.insert(
            (listener.clone(), host_text.clone(), path.clone()),
            (index, name.clone()),
        ) {
            let listener_text = match &listener {
                Some(listener) => format!("listener {listener:?}"),
                None => "listeners (every one)".to_string(),
            };
            return Err(Invalid::at(
                key,
                written,
                format!(
                    "{name:?} has the same {listener_text}, {host_text} and path {path:?} as route[{earlier}] ({earlier_name:?}); only one of them could be used"
                ),
            ));
        }

        configs.push(RouteConfig {
            name,
            listener: listener.clone(),
            host,
            path,
            strip_prefix: route.strip_prefix,
            target,
            preserve_host: route.preserve_host,
            max_body_size: route.max_body_size,
            request_buffering: route.request_buffering,
            response_buffering: route.response_buffering,
            client_body_timeout: duration(
                &format!("{key}.client_body_timeout"),
                route.client_body_timeout.as_ref(),
                RouteConfig::DEFAULT_CLIENT_BODY_TIMEOUT,
                Limits::AboveZeroUpTo(HOUR),
            )?,
            error_pages: error_pages(&key, &route.error_pages, base_dir)?,
            request_headers: header_edits(
                &format!("{key}.request_headers"),
                &route.request_headers,
            )?,
            response_headers: header_edits(
                &format!("{key}.response_headers"),
                &route.response_headers,
            )?,
            rewrite_location: route.rewrite_location,
            rewrite_cookie_path: route.rewrite_cookie_path,
            rewrite_html: route.rewrite_html,
            debug_headers: route.debug_headers,
            allow_encoded_slashes: route.allow_encoded_slashes,
            rewrite_cookie_domain: cookie_domains(&key, &route.rewrite_cookie_domain)?,
            compress: route.compress,
        });
    }
    Ok(configs)
}

/// `rewrite_cookie_domain`: host names (without a leading dot) on both sides.
fn cookie_domains(
    key: &str,
    written: &BTreeMap<String, Spanned<String>>,
) -> Result<Vec<(String, String)>, Invalid> {
    let mut domains = Vec::with_capacity(written.len());
    for (from, to) in written {
        for (what, name) in [
            ("a cookie domain", from.as_str()),
            ("its replacement", to.get_ref().as_str()),
        ] {
            if !is_valid_host_name(name) {
                return Err(Invalid::at(
                    format!("{key}.rewrite_cookie_domain.{from}"),
                    to,
                    format!("{name:?} is not a host name ({what})"),
                ));
            }
        }
        domains.push((from.to_ascii_lowercase(), to.get_ref().to_ascii_lowercase()));
    }
    Ok(domains)
}

/// A route's `listener`: the name of a listener that does not redirect every request.
fn route_listener(
    key: &str,
    written: &Spanned<String>,
    listeners: &[ListenerConfig],
) -> Result<String, Invalid> {
    let listener = written.get_ref();
    let Some(listener_config) = listeners.iter().find(|l| &l.name == listener) else {
        let known = listeners.iter().map(|l| l.name.as_str());
        return Err(Invalid::at(
            format!("{key}.listener"),
            written,
            format!(
                "{listener:?} is not the name of a listener ({})",
                known_names("listeners", known, "[[listener]]")
            ),
        ));
    };
    if listener_config.redirect_https {
        return Err(Invalid::at(
            format!("{key}.listener"),
            written,
            format!(
                "listener {listener:?} has redirect_https = true: it redirects every request to HTTPS, so no route applies to it"
            ),
        ));
    }
    Ok(listener.clone())
}

/// Every route's name: its `name`, or "route-<index>". Checked first, so that a later route's
/// default name colliding with an earlier route's `name` is found either way round.
fn route_names(routes: &[Spanned<Table<RouteTable>>]) -> Result<Vec<String>, Invalid> {
    let mut named = HashMap::new();
    for (index, route) in routes.iter().enumerate() {
        let Some(written) = &route.get_ref().name else {
            continue;
        };
        let name = written.get_ref();
        let key = format!("route[{index}].name");
        if !is_valid_name(name) {
            return Err(Invalid::at(key, written, not_a_name(name)));
        }
        if let Some((first, _)) = named.insert(name.as_str(), (index, written)) {
            return Err(Invalid::at(
                key,
                written,
                format!("{name:?} is already the name of route[{first}]"),
            ));
        }
    }
    routes
        .iter()
        .enumerate()
        .map(|(index, route)| match &route.get_ref().name {
            Some(written) => Ok(written.get_ref().clone()),
            None => {
                let name = format!("route-{index}");
                match named.get(name.as_str()) {
                    Some(&(other, written)) => Err(Invalid::at(
                        format!("route[{other}].name"),
                        written,
                        format!(
                            "{name:?} is also the default name of route[{index}], which has no name; choose another"
                        ),
                    )),
                    None => Ok(name),
                }
            }
        })
        .collect()
}

fn known_names<'a>(what: &str, names: impl Iterator<Item = &'a str>, table: &str) -> String {
    let names: Vec<_> = names.map(|name| format!("{name:?}")).collect();
    if names.is_empty() {
        format!("there is no {table}")
    } else {
        format!("the {what} are {}", names.join(", "))
    }
}

fn host_text(host: &HostPattern) -> String {
    match host {
        HostPattern::Exact(host) => host.clone(),
        HostPattern::Suffix(suffix) => format!("*.{suffix}"),
    }
}

/// A route's `host`: a name, an IPv4 address, an IPv6 address in brackets, or "*.suffix".
/// Matched against the Host header without its port, so it is compared lowercase and without a
/// trailing dot.
fn host_pattern(key: &str, written: &Spanned<String>) -> Result<HostPattern, Invalid> {
    let text = written.get_ref();
    let error = |what: String| Invalid::at(key, written, what);
    let lower = text.to_ascii_lowercase();
    let host = lower.strip_suffix('.').unwrap_or(&lower);
    if host.is_empty() {
        return Err(error(format!(
            "{text:?} is not a host: leave host out to match every host"
        )));
    }
    if host == "*" {
        return Err(error(format!(
            "{text:?} is not a pattern (\"*.suffix\" is): leave host out to match every host"
        )));
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(error(format!(
            "{text:?} must not contain whitespace or control characters"
        )));
    }
    if host.contains("://") {
        return Err(error(format!("{text:?} must be a host, not a URL")));
    }
    if host.starts_with('[') {
        // Split as a request's Host is (`http::authority`), so a pattern matches what routing
        // compares.
        return match authority::parse(host) {
            Ok(written) if written.port.is_none() => {
                let address = written
                    .ipv6()
                    .expect("a bracketed authority is an IPv6 literal");
                Ok(HostPattern::Exact(format!("[{address}]")))
            }
            Ok(_)
            | Err(authority::AuthorityError::AfterBracket | authority::AuthorityError::BadPort) => {
                Err(error(format!(
                    "{text:?} must not have a port: a route matches the host whatever the port"
                )))
            }
            Err(_) => Err(error(format!(
                "{text:?} is not a valid IPv6 address in brackets"
            ))),
        };
    }
    if host.parse::<Ipv6Addr>().is_ok() {
        return Err(error(format!(
            "{text:?}: an IPv6 address is written in brackets, as in \"[2001:db8::1]\""
        )));
    }
    if host.contains(':') {
        return Err(error(format!(
            "{text:?} must not have a port: a route matches the host whatever the port"
        )));
    }
    let (pattern, name) = match host.strip_prefix("*.") {
        Some(suffix) => (HostPattern::Suffix(suffix.to_string()), suffix),
        None => (HostPattern::Exact(host.to_string()), host),
    };
    if name.contains('*') {
        return Err(error(format!(
            "{text:?}: '*' is only allowed as the whole first label, as in \"*.example.test\""
        )));
    }
    if !is_valid_host_name(name) {
        return Err(error(format!(
            "{text:?} is not a valid host (a name such as \"www.example.test\", \"*.example.test\" for its subdomains, or an IP address)"
        )));
    }
    Ok(pattern)
}

/// A route's `path` prefix, compared with the request's path as is: a form the request's path
/// cannot take would never match.
fn route_path(key: &str, written: &Spanned<String>) -> Result<String, Invalid> {
    let path = written.get_ref();
    let what = if !path.starts_with('/') {
        "must start with '/'"
    } else if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "must not contain whitespace or control characters"
    } else if path.contains(['?', '#']) {
        "must not contain '?' or '#': a route matches the path, not the query"
    } else if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        "must not have \".\" or \"..\" segments"
    } else {
        return Ok(path.clone());
    };
    Err(Invalid::at(key, written, format!("{path:?} {what}")))
}

// ---- Pools -------------------------------------------------------------------------------------

fn pool_config(
    name: &str,
    written: &Spanned<Table<PoolTable>>,
    base_dir: &Path,
) -> Result<PoolConfig, Invalid> {
    let key = format!("pool.{name}");
    // The name is in the table's header: point at it.
    if !is_valid_name(name) {
        return Err(Invalid::at(key, written, not_a_name(name)));
    }
    let pool: &PoolTable = written.get_ref();
    let servers = servers(&key, pool)?;
    let (tls, h2) = server_tls(&key, pool, &servers, base_dir)?;
    Ok(PoolConfig {
        name: name.to_string(),
        balance: balance(&key, pool)?,
        keepalive: keepalive(&key, pool)?,
        retry: retry(&key, pool)?,
        queue_timeout: duration(
            &format!("{key}.queue_timeout"),
            pool.queue_timeout.as_ref(),
            PoolConfig::DEFAULT_QUEUE_TIMEOUT,
            Limits::UpTo(HOUR),
        )?,
        on_down: match pool.on_down {
            OnDownKind::Abort => OnDown::Abort,
            OnDownKind::Keep => OnDown::Keep,
        },
        timeouts: pool_timeouts(&key, pool)?,
        h2c: pool.h2c.as_ref().is_some_and(|h2c| *h2c.get_ref()),
        tls,
        h2,
        error_pages: error_pages(&key, &pool.error_pages, base_dir)?,
        sticky: pool
            .sticky
            .as_ref()
            .map(|written| sticky(&format!("{key}.sticky"), written, pool, base_dir))
            .transpose()?,
        health: pool
            .health
            .as_ref()
            .map(|written| pool_health(&key, written.get_ref(), pool, &servers, base_dir))
            .transpose()?,
        passive: PassiveHealthConfig {
            failures: pool.passive.failures,
            window: duration(
                &format!("{key}.passive.window"),
                pool.passive.window.as_ref(),
                PassiveHealthConfig::default().window,
                Limits::AboveZeroUpTo(HOUR),
            )?,
        },
        slow_start: duration(
            &format!("{key}.slow_start"),
            pool.slow_start.as_ref(),
            Duration::ZERO,
            Limits::UpTo(HOUR),
        )?,
        servers,
    })
}

/// A pool's `tls_*` keys and `h2`, which only https:// servers use (`h2c` is for http://
/// ones): a key written for a pool without one is an error, not silently unused.
fn server_tls(
    key: &str,
    pool: &PoolTable,
    servers: &[ServerConfig],
    base_dir: &Path,
) -> Result<(ServerTlsConfig, bool), Invalid> {
    let https = servers.iter().position(|server| server.url.is_https());
    if let (Some(position), Some(h2c)) = (https, &pool.h2c)
        && *h2c.get_ref()
    {
        return Err(Invalid::at(
            format!("{key}.h2c"),
            h2c,
            format!(
                "speaks HTTP/2 without TLS, but servers[{position}] is {}: use h2 = true to offer HTTP/2 to https:// servers",
                servers[position].url
            ),
        ));
    }
    let written = [
        ("tls_ca_file", pool.tls_ca_file.as_ref().map(|w| w.span())),
        (
            "tls_server_name",
            pool.tls_server_name.as_ref().map(|w| w.span()),
        ),
        (
            "tls_cert_file",
            pool.tls_cert_file.as_ref().map(|w| w.span()),
        ),
        ("tls_key_file", pool.tls_key_file.as_ref().map(|w| w.span())),
        // `h2 = false` says what an http:// pool does anyway.
        (
            "h2",
            pool.h2.as_ref().filter(|w| *w.get_ref()).map(|w| w.span()),
        ),
    ];
    if https.is_none()
        && let Some((name, Some(span))) = written.iter().find(|(_, span)| span.is_some())
    {
        return Err(Invalid {
            key: format!("{key}.{name}"),
            span: span.clone(),
            what: "applies to https:// servers, and the pool has none".to_string(),
        });
    }
    let file = |name: &str, written: &Option<Spanned<String>>| {
        written
            .as_ref()
            .map(|written| file_path(&format!("{key}.{name}"), written, base_dir))
            .transpose()
    };
    let client_cert = match (&pool.tls_cert_file, &pool.tls_key_file) {
        (Some(_), Some(_)) => Some(CertificatePaths {
            cert: file("tls_cert_file", &pool.tls_cert_file)?.expect("written"),
            key: file("tls_key_file", &pool.tls_key_file)?.expect("written"),
        }),
        (Some(cert), None) => {
            return Err(Invalid::at(
                format!("{key}.tls_cert_file"),
                cert,
                "needs tls_key_file: a client certificate is presented with its private key",
            ));
        }
        (None, Some(written)) => {
            return Err(Invalid::at(
                format!("{key}.tls_key_file"),
                written,
                "needs tls_cert_file: a private key alone is no client certificate",
            ));
        }
        (None, None) => None,
    };
    let server_name = match &pool.tls_server_name {
        Some(written) => {
            let name = written.get_ref().trim_end_matches('.').to_ascii_lowercase();
            if !is_tls_server_name(&name) {
                return Err(Invalid::at(
                    format!("{key}.tls_server_name"),
                    written,
                    format!(
                        "{:?} is not a DNS name or an IP address (it is sent as SNI and verified against the certificate)",
                        written.get_ref()
                    ),
                ));
            }
            Some(name)
        }
        None => {
            // Without it each https:// server's own host is the name to verify.
            if let Some((position, server)) = servers.iter().enumerate().find(|(_, server)| {
                server.url.is_https()
                    && !server
                        .url
                        .host_port()
                        .is_some_and(|(host, _)| is_tls_server_name(host))
            }) {
                return Err(Invalid::at(
                    format!("{key}.servers[{position}].url"),
                    &pool.servers.get_ref().0[position].url,
                    format!(
                        "{}: its host is not a name a certificate can carry; set tls_server_name to the name its certificate has",
                        server.url
                    ),
                ));
            }
            None
        }
    };
    let tls = ServerTlsConfig {
        ca_file: file("tls_ca_file", &pool.tls_ca_file)?,
        server_name,
        client_cert,
    };
    Ok((tls, pool.h2.as_ref().is_some_and(|h2| *h2.get_ref())))
}

/// A DNS name (as rustls takes it for SNI) or an IP address.
fn is_tls_server_name(name: &str) -> bool {
    rustls_pki_types::ServerName::try_from(name).is_ok()
}

/// A pool's `health` (`pool_key` is "pool.NAME"); `port` needs http:// or https:// servers,
/// `tls` http:// ones (https:// servers are checked with the pool's `tls_*` settings).
fn pool_health(
    pool_key: &str,
    table: &PoolHealthTable,
    pool: &PoolTable,
    servers: &[ServerConfig],
    base_dir: &Path,
) -> Result<PoolHealthConfig, Invalid> {
    let key = &format!("{pool_key}.health");
    let (interval, timeout) =
        check_interval_and_timeout(key, table.interval.as_ref(), table.timeout.as_ref())?;
    let tls = table.tls.as_ref().is_some_and(|tls| *tls.get_ref());
    let needs_http = match (&table.port, tls) {
        (Some(port), _) => Some(format!(
            "port = {} need http:// or https://",
            port.get_ref()
        )),
        (None, true) => Some("tls = true need http://".to_string()),
        (None, false) => None,
    };
    if let Some(setting) = needs_http
        && let Some(position) = servers
            .iter()
            .position(|server| matches!(server.url, ServerUrl::Unix(_)))
    {
        return Err(Invalid::at(
            format!("{pool_key}.servers[{position}]"),
            &pool.servers.get_ref().0[position].url,
            format!(
                "{} is a unix socket: health checks with {setting} servers",
                servers[position].url
            ),
        ));
    }
    if let Some(written) = table.tls.as_ref().filter(|_| tls)
        && let Some(server) = servers.iter().find(|server| server.url.is_https())
    {
        return Err(Invalid::at(
            format!("{key}.tls"),
            written,
            format!(
                "{} is checked over TLS with the pool's tls_* settings already: health tls = true is for http:// servers",
                server.url
            ),
        ));
    }
    let ca_file = match &table.tls_ca_file {
        Some(written) if !tls => {
            return Err(Invalid::at(
                format!("{key}.tls_ca_file"),
                written,
                "needs tls = true: it verifies the certificate of a TLS check",
            ));
        }
        Some(written) => Some(file_path(&format!("{key}.tls_ca_file"), written, base_dir)?),
        None => None,
    };
    Ok(PoolHealthConfig {
        path: check_path(key, &table.path)?,
        host: table
            .host
            .as_ref()
            .map(|written| check_host(key, written))
            .transpose()?,
        expect: check_expect(key, table.expect.as_ref())?,
        interval,
        timeout,
        rise: table.rise,
        fall: table.fall,
        port: table.port.as_ref().map(|port| *port.get_ref()),
        tls: tls.then_some(HealthTls { ca_file }),
    })
}

/// `sticky`: the keys of its `mode`, and what the mode needs of the pool's servers.
fn sticky(
    key: &str,
    written: &Spanned<Table<StickyTable>>,
    pool: &PoolTable,
    base_dir: &Path,
) -> Result<StickyConfig, Invalid> {
    let table: &StickyTable = written.get_ref();
    let mode = *table.mode.get_ref();
    let not_with = |name: &str, span: Option<std::ops::Range<usize>>, mode: &str| {
        span.map(|span| Invalid {
            key: format!("{key}.{name}"),
            span,
            what: format!("not used with mode = \"{mode}\""),
        })
    };
    let cookie_name = |written: &Spanned<String>, what: &str| {
        let name = written.get_ref();
        if is_token(name) {
            Ok(name.clone())
        } else {
            Err(Invalid::at(
                format!("{key}.{what}"),
                written,
                format!(
                    "{name:?} is not a cookie or parameter name (letters, digits and !#$%&'*+-.^_`|~)"
                ),
            ))
        }
    };
    match mode {
        StickyMode::RouteSuffix => {
            for (name, span) in [
                ("key", table.key.as_ref().map(Spanned::span)),
                ("key_file", table.key_file.as_ref().map(Spanned::span)),
            ] {
                if let Some(err) = not_with(name, span, "route-suffix") {
                    return Err(err);
                }
            }
            let cookie = table
                .cookie
                .as_ref()
                .map(|c| cookie_name(c, "cookie"))
                .transpose()?;
            let path_param = table
                .path_param
                .as_ref()
                .map(|p| cookie_name(p, "path_param"))
                .transpose()?;
            if cookie.is_none() && path_param.is_none() {
                return Err(Invalid::at(
                    key,
                    written,
                    "route-suffix needs the session's cookie (cookie = \"sessionid\") or URL path parameter (path_param = \"jsessionid\"), or both",
                ));
            }
            let servers = &pool.servers.get_ref().0;
            if let Some((position, server)) =
                servers.iter().enumerate().find(|(_, s)| s.route.is_none())
            {
                let pool_key = key.strip_suffix(".sticky").unwrap_or(key);
                return Err(Invalid::at(
                    format!("{pool_key}.servers[{position}]"),
                    &server.url,
                    "needs a route = \"...\": sticky mode route-suffix routes sessions by the suffix .ROUTE of their id",
                ));
            }
            Ok(StickyConfig::RouteSuffix {
                cookie,
                path_param,
                strip_route: table.strip_route.as_ref().is_none_or(|s| *s.get_ref()),
            })
        }
        StickyMode::Insert => {
            for (name, span) in [
                ("path_param", table.path_param.as_ref().map(Spanned::span)),
                ("strip_route", table.strip_route.as_ref().map(Spanned::span)),
            ] {
                if let Some(err) = not_with(name, span, "insert") {
                    return Err(err);
                }
            }
            let cookie = match &table.cookie {
                Some(written) => cookie_name(written, "cookie")?,
                None => StickyConfig::DEFAULT_INSERT_COOKIE.to_string(),
            };
            let key = match (&table.key, &table.key_file) {
                (Some(_), Some(file)) => {
                    return Err(Invalid::at(
                        format!("{key}.key_file"),
                        file,
                        "give key or key_file, not both",
                    ));
                }
                (None, None) => {
                    return Err(Invalid::at(
                        key,
                        written,
                        "mode = \"insert\" needs the HMAC key that signs its cookies: key = \"...\" or key_file = \"PATH\"",
                    ));
                }
                (Some(inline), None) => {
                    if inline.get_ref().len() < StickyConfig::MIN_KEY_BYTES {
                        return Err(Invalid::at(
                            format!("{key}.key"),
                            inline,
                            format!(
                                "is {} bytes; a signing key needs at least {}",
                                inline.get_ref().len(),
                                StickyConfig::MIN_KEY_BYTES
                            ),
                        ));
                    }
                    StickyKey::Inline(inline.get_ref().clone())
                }
                (None, Some(file)) => {
                    StickyKey::File(file_path(&format!("{key}.key_file"), file, base_dir)?)
                }
            };
            Ok(StickyConfig::Insert { cookie, key })
        }
    }
}

fn keepalive(key: &str, pool: &PoolTable) -> Result<KeepaliveConfig, Invalid> {
    Ok(KeepaliveConfig {
        reuse: pool.keepalive.reuse,
        idle_timeout: duration(
            &format!("{key}.keepalive.idle_timeout"),
            pool.keepalive.idle_timeout.as_ref(),
            KeepaliveConfig::default().idle_timeout,
            Limits::AboveZeroUpTo(HOUR),
        )?,
        max_idle: pool.keepalive.max_idle,
    })
}

fn pool_timeouts(key: &str, pool: &PoolTable) -> Result<PoolTimeouts, Invalid> {
    let defaults = PoolTimeouts::default();
    let written = &pool.timeouts;
    let timeout = |field: &str, value: &Option<Spanned<Duration>>, default, max| {
        duration(
            &format!("{key}.timeouts.{field}"),
            value.as_ref(),
            default,
            Limits::AboveZeroUpTo(max),
        )
    };
    Ok(PoolTimeouts {
        connect: timeout("connect", &written.connect, defaults.connect, HOUR)?,
        response: timeout("response", &written.response, defaults.response, HOUR)?,
        // A websocket may stay quiet much longer than a request waits for its answer.
        websocket_idle: timeout(
            "websocket_idle",
            &written.websocket_idle,
            defaults.websocket_idle,
            DAY,
        )?,
    })
}

fn balance(key: &str, pool: &PoolTable) -> Result<Balance, Invalid> {
    if let Some(written) = &pool.hash_on
        && pool.balance != BalanceKind::Hash
    {
        return Err(Invalid::at(
            format!("{key}.hash_on"),
            written,
            format!(
                "only allowed with balance = \"hash\", not \"{}\"",
                pool.balance.as_str()
            ),
        ));
    }
    Ok(match pool.balance {
        BalanceKind::RoundRobin => Balance::RoundRobin,
        BalanceKind::LeastConn => Balance::LeastConn,
        BalanceKind::P2c => Balance::P2c,
        BalanceKind::Hash => Balance::Hash(match &pool.hash_on {
            Some(written) => hash_on(&format!("{key}.hash_on"), written)?,
            None => HashOn::ClientAddress,
        }),
    })
}

fn hash_on(key: &str, written: &Spanned<String>) -> Result<HashOn, Invalid> {
    let text = written.get_ref();
    let (what, name, hash_on) = if text == "client" {
        return Ok(HashOn::ClientAddress);
    } else if let Some(name) = text.strip_prefix("header:") {
        // Header names are case-insensitive (RFC 9110 §5.1); cookie names are not.
        ("header", name, HashOn::Header(name.to_ascii_lowercase()))
    } else if let Some(name) = text.strip_prefix("cookie:") {
        ("cookie", name, HashOn::Cookie(name.to_string()))
    } else {
        return Err(Invalid::at(
            key,
            written,
            format!("{text:?} must be \"client\", \"header:NAME\" or \"cookie:NAME\""),
        ));
    };
    if !is_token(name) {
        return Err(Invalid::at(
            key,
            written,
            format!(
                "{name:?} is not a valid {what} name (one or more letters, digits or !#$%&'*+-.^_`|~)"
            ),
        ));
    }
    Ok(hash_on)
}

/// An HTTP token (RFC 9110 §5.6.2): the form of header names, and of cookie names (RFC 6265
/// §4.1.1).
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn servers(key: &str, pool: &PoolTable) -> Result<Vec<ServerConfig>, Invalid> {
    let written = &pool.servers;
    let list = &written.get_ref().0;
    if list.is_empty() {
        return Err(Invalid::at(
            format!("{key}.servers"),
            written,
            "needs at least one server",
        ));
    }
    let mut urls = HashMap::new();
    let mut routes = HashMap::new();
    let mut servers = Vec::with_capacity(list.len());
    for (position, server) in list.iter().enumerate() {
        let entry = format!("{key}.servers[{position}]");
        let url = server_url(&format!("{entry}.url"), &server.url)?;
        if let Some(earlier) = urls.insert(url.clone(), position) {
            return Err(Invalid::at(
                format!("{entry}.url"),
                &server.url,
                format!("{url} is already servers[{earlier}]"),
            ));
        }
        let route = match &server.route {
            Some(written) => {
                let id = written.get_ref();
                if id.is_empty()
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(Invalid::at(
                        format!("{entry}.route"),
                        written,
                        format!(
                            "{id:?} must be non-empty and use only letters, digits, '-' and '_'"
                        ),
                    ));
                }
                if let Some(earlier) = routes.insert(id.as_str(), position) {
                    return Err(Invalid::at(
                        format!("{entry}.route"),
                        written,
                        format!("{id:?} is already the route of servers[{earlier}]"),
                    ));
                }
                Some(id.clone())
            }
            None => None,
        };
        let state = match &server.state {
            None => InitialState::Enabled,
            Some(written) => match written.get_ref().as_str() {
                "enabled" => InitialState::Enabled,
                "draining" => InitialState::Draining,
                "disabled" => InitialState::Disabled,
                other => {
                    return Err(Invalid::at(
                        format!("{entry}.state"),
                        written,
                        format!("{other:?} is not \"enabled\", \"draining\" or \"disabled\""),
                    ));
                }
            },
        };
        servers.push(ServerConfig {
            url,
            weight: server.weight,
            route,
            state,
            backup: server.backup,
            max_conns: server.max_conns,
        });
    }
    if servers.iter().all(|server| server.weight == 0) {
        return Err(Invalid::at(
            format!("{key}.servers"),
            written,
            "every server has weight 0, so requests have nowhere to go; give at least one a weight above 0",
        ));
    }
    Ok(servers)
}

/// `retry = { after_failure, methods, budget }`.
fn retry(key: &str, pool: &PoolTable) -> Result<RetryConfig, Invalid> {
    let defaults = RetryConfig::default();
    let table = &pool.retry;
    let methods = match &table.methods {
        None => defaults.methods,
        Some(written) => {
            let mut methods: Vec<String> = Vec::new();
            for method in written.get_ref() {
                let name = method.get_ref();
                let is_token = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
                if !is_token {
                    return Err(Invalid::at(
                        format!("{key}.retry.methods"),
                        method,
                        format!("{name:?} is not a method name in uppercase, such as \"GET\""),
                    ));
                }
                if matches!(name.as_str(), "POST" | "PATCH" | "CONNECT") {
                    return Err(Invalid::at(
                        format!("{key}.retry.methods"),
                        method,
                        format!(
                            "{name} is not idempotent (RFC 9110 §9.2.2): a retry could do it twice"
                        ),
                    ));
                }
                if !methods.contains(name) {
                    methods.push(name.clone());
                }
            }
            methods
        }
    };
    let budget_permille = match &table.budget {
        None => defaults.budget_permille,
        Some(written) => {
            let budget = *written.get_ref();
            if !(0.0..=1.0).contains(&budget) {
                return Err(Invalid::at(
                    format!("{key}.retry.budget"),
                    written,
                    format!("must be between 0 and 1 (a share of recent requests), not {budget}"),
                ));
            }
            // In range: the product fits.
            (budget * 1000.0).round() as u32
        }
    };
    Ok(RetryConfig {
        after_failure: duration(
            &format!("{key}.retry.after_failure"),
            table.after_failure.as_ref(),
            defaults.after_failure,
            Limits::UpTo(HOUR),
        )?,
        methods,
        budget_permille,
    })
}

/// `http://host[:port]` or `https://host[:port]` (no user, path, query or fragment) or
/// `unix:/absolute/path`.
fn server_url(key: &str, written: &Spanned<String>) -> Result<ServerUrl, Invalid> {
    let text = written.get_ref();
    let error = |what: &str| Invalid::at(key, written, format!("{text:?} {what}"));
    if let Some(path) = strip_prefix_ignoring_case(text, "unix:") {
        return unix_url(path).map_err(|what| error(&what));
    }
    let (rest, https) = if let Some(rest) = strip_prefix_ignoring_case(text, "http://") {
        (rest, false)
    } else if let Some(rest) = strip_prefix_ignoring_case(text, "https://") {
        (rest, true)
    } else {
        return Err(error(
            "must be \"http://host[:port]\", \"https://host[:port]\" or \"unix:/absolute/path\"",
        ));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host_port, tail) = rest.split_at(end);
    if tail.contains('?') {
        return Err(error("must not have a query"));
    }
    if tail.contains('#') {
        return Err(error("must not have a fragment"));
    }
    if !tail.is_empty() && tail != "/" {
        return Err(error(
            "must not have a path: requests are forwarded with their own path (see a route's strip_prefix)",
        ));
    }
    // `http::authority` (with an empty port refused: a config says which port it means).
    let written = match authority::parse(host_port) {
        Ok(written) => written,
        Err(authority::AuthorityError::UserInfo) => {
            return Err(error("must not have user information (user@)"));
        }
        Err(authority::AuthorityError::UnbracketedIpv6) => {
            return Err(error(
                "has an IPv6 address without brackets: write it as in \"http://[2001:db8::1]:8080\"",
            ));
        }
        Err(why) => return Err(error(&why.to_string())),
    };
    let host = match written.ipv6() {
        Some(address) => address.to_string(),
        None => {
            let host = written.host.to_ascii_lowercase();
            if !is_valid_host_name(&host) {
                return Err(error("has no valid host name or IP address"));
            }
            host
        }
    };
    let port = match written.port {
        None if https => 443,
        None => 80,
        Some(port) => port,
    };
    Ok(if https {
        ServerUrl::Https { host, port }
    } else {
        ServerUrl::Http { host, port }
    })
}

fn unix_url(path: &str) -> Result<ServerUrl, String> {
    if !path.starts_with('/') {
        return Err("must have an absolute socket path, as in \"unix:/run/app.sock\"".to_string());
    }
    if path.contains('\0') {
        return Err("has a NUL character in its socket path".to_string());
    }
    // `components` drops repeated and trailing '/' and "." components.
    let normal: PathBuf = Path::new(path).components().collect();
    if normal == Path::new("/") {
        return Err("names no socket, only \"/\"".to_string());
    }
    let length = normal.as_os_str().len();
    if length > UNIX_PATH_MAX {
        return Err(format!(
            "has a socket path of {length} bytes, more than the {UNIX_PATH_MAX} a unix socket address holds"
        ));
    }
    Ok(ServerUrl::Unix(normal))
}

fn strip_prefix_ignoring_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

// ---- Shared ------------------------------------------------------------------------------------

fn error_pages(
    key: &str,
    pages: &ErrorPages,
    base_dir: &Path,
) -> Result<BTreeMap<u16, PathBuf>, Invalid> {
    pages
        .0
        .iter()
        .map(|(status, file)| {
            let path = file_path(&format!("{key}.error_pages.{status}"), file, base_dir)?;
            Ok((*status, path))
        })
        .collect()
}

/// A file or directory named in the config: relative to `base_dir` (the config's directory)
/// unless absolute. It is not opened here.
fn file_path(key: &str, written: &Spanned<String>, base_dir: &Path) -> Result<PathBuf, Invalid> {
    let text = written.get_ref();
    if text.is_empty() {
        return Err(Invalid::at(key, written, "must not be empty"));
    }
    if text.contains('\0') {
        return Err(Invalid::at(
            key,
            written,
            format!("{text:?} has a NUL character, which no path can hold"),
        ));
    }
    // `components` drops "." and repeated '/' (but keeps "..", which may cross a symlink).
    Ok(base_dir.join(text).components().collect())
}

#[derive(Clone, Copy)]
enum Limits {
    /// 0 to the duration.
    UpTo(Duration),
    /// Above 0, up to the duration.
    AboveZeroUpTo(Duration),
}

/// A duration under `key`: `default` when absent, else within `limits`.
fn duration(
    key: &str,
    written: Option<&Spanned<Duration>>,
    default: Duration,
    limits: Limits,
) -> Result<Duration, Invalid> {
    let Some(written) = written else {
        return Ok(default);
    };
    let value = *written.get_ref();
    let what = match limits {
        Limits::UpTo(max) if value > max => {
            format!("must be between 0s and {}, not {}", show(max), show(value))
        }
        Limits::AboveZeroUpTo(max) if value.is_zero() || value > max => {
            format!(
                "must be above 0 and at most {}, not {}",
                show(max),
                show(value)
            )
        }
        _ => return Ok(value),
    };
    Err(Invalid::at(key, written, what))
}
