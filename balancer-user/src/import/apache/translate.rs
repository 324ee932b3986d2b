//! Apache directives into a balancer config: each `<VirtualHost>` address becomes a listener,
//! each `ProxyPass` a route, each `<Proxy balancer://NAME>` (or direct `http://` target) a pool.
//! The output is TOML text built line by line, so that it can carry comments: where a value
//! came from, and every directive that has no equivalent, as
//! `# line N: <directive as written> — not translated: <why>`.

use std::{collections::BTreeMap, fmt::Write as _, path::Path, time::Duration};

use super::parse::Directive;
use crate::http::authority;

/// The balancer config equivalent to `directives`, as TOML text.
pub fn translate(directives: &[Directive], source: &str, base_dir: &Path) -> String {
    let mut state = Translation {
        base_dir,
        listeners: Vec::new(),
        routes: Vec::new(),
        pools: BTreeMap::new(),
        notes: Vec::new(),
    };
    // Balancers are global in Apache: a `<Proxy balancer://…>` anywhere is usable from every
    // virtual host, so they are all read before any `ProxyPass` refers to one.
    for directive in flatten(directives) {
        if directive.is("Proxy") {
            state.proxy_section(directive);
        } else if directive.is("VirtualHost") {
            for inner in flatten(directive.children.as_deref().unwrap_or_default()) {
                if inner.is("Proxy") {
                    state.proxy_section(inner);
                }
            }
        }
    }
    for directive in flatten(directives) {
        if directive.is("Proxy") {
            continue;
        }
        if directive.is("VirtualHost") {
            state.virtual_host(directive);
        } else if directive.is("ProxyRequests") {
            state.proxy_requests(directive);
        } else {
            state.skip(
                directive,
                "outside a <VirtualHost>: only virtual hosts are imported",
            );
        }
    }
    state.render(source)
}

/// `<IfModule>` contents are read as if the module were loaded: a config meant for
/// mod_proxy has it.
fn flatten(directives: &[Directive]) -> Vec<&Directive> {
    let mut out = Vec::new();
    for directive in directives {
        if directive.is("IfModule") {
            out.extend(flatten(directive.children.as_deref().unwrap_or_default()));
        } else {
            out.push(directive);
        }
    }
    out
}

struct Translation<'a> {
    base_dir: &'a Path,
    /// Listeners by bind address, in the order first seen.
    listeners: Vec<Listener>,
    routes: Vec<Route>,
    pools: BTreeMap<String, Pool>,
    /// Comments on directives: not translated, or translated to nothing on purpose.
    notes: Vec<(usize, String)>,
}

struct Listener {
    name: String,
    bind: String,
    /// `(line, names)` of each virtual host on this address.
    vhosts: Vec<(usize, Vec<String>)>,
    /// A virtual host without `ServerName` answers any host name.
    any_host: bool,
    certificates: Vec<(String, String)>,
    trusted_proxies: Vec<String>,
    trusted_headers: Vec<String>,
}

struct Route {
    listener: String,
    /// The virtual host's line, to set `host` when several share a listener.
    vhost_line: usize,
    /// The `ProxyPass` it came from: its line and text.
    line: usize,
    text: String,
    path: String,
    strip_prefix: bool,
    pool: String,
    preserve_host: bool,
    rewrite_location: bool,
    rewrite_cookie_path: bool,
    rewrite_cookie_domain: Vec<(String, String)>,
    request_headers: HeaderEdits,
    response_headers: HeaderEdits,
}

#[derive(Default, Clone)]
struct HeaderEdits {
    set: Vec<(String, String)>,
    unset: Vec<String>,
}

impl HeaderEdits {
    fn set(&mut self, name: &str, value: &str) {
        self.unset.retain(|n| !n.eq_ignore_ascii_case(name));
        self.set.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.set.push((name.to_string(), value.to_string()));
    }

    fn unset(&mut self, name: &str) {
        self.set.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        if !self.unset.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            self.unset.push(name.to_string());
        }
    }
}

#[derive(Default)]
struct Pool {
    line: usize,
    origin: String,
    servers: Vec<Server>,
    /// The path every member's URL carries (Apache appends the request's path to it).
    member_path: Option<String>,
    balance: Option<&'static str>,
    sticky: Option<(String, Option<String>)>,
    /// `(value, line)` of pool-wide settings taken from member parameters.
    reuse: Option<(bool, usize)>,
    idle_timeout: Option<(Duration, usize)>,
    after_failure: Option<(Duration, usize)>,
    connect_timeout: Option<(Duration, usize)>,
    response_timeout: Option<(Duration, usize)>,
    /// `SSLProxyCACertificateFile` of a virtual host routing to the pool.
    tls_ca_file: Option<String>,
}

struct Server {
    url: String,
    weight: Option<u32>,
    route: Option<String>,
    state: Option<&'static str>,
    backup: bool,
    max_conns: Option<u32>,
}

/// What a virtual host (or a `<Location>` in it) says about its routes.
#[derive(Clone, Default)]
struct Scope {
    preserve_host: bool,
    request_headers: HeaderEdits,
    response_headers: HeaderEdits,
    cookie_domains: Vec<(String, String)>,
    response_timeout: Option<Duration>,
    /// The virtual host has `SSLEngine on`: what balancer sends as X-Forwarded-Proto.
    tls: bool,
    /// `SSLProxyCACertificateFile`: the CAs of https:// members.
    proxy_ca: Option<String>,
}

impl Translation<'_> {
    fn skip(&mut self, directive: &Directive, why: &str) {
        self.notes.push((
            directive.line,
            format!(
                "# line {}: {} — not translated: {why}",
                directive.line, directive.text
            ),
        ));
    }

    fn note(&mut self, directive: &Directive, what: &str) {
        self.notes.push((
            directive.line,
            format!("# line {}: {} — {what}", directive.line, directive.text),
        ));
    }

    fn proxy_requests(&mut self, directive: &Directive) {
        if directive
            .args
            .first()
            .is_some_and(|a| a.eq_ignore_ascii_case("off"))
        {
            self.note(
                directive,
                "nothing to translate: balancer is a reverse proxy only",
            );
        } else {
            self.skip(
                directive,
                "balancer is never a forward proxy (ProxyRequests On)",
            );
        }
    }

    // ---- <Proxy balancer://NAME> ---------------------------------------------------------

    fn proxy_section(&mut self, section: &Directive) {
        let Some(name) = section
            .args
            .first()
            .and_then(|url| strip_ignoring_case(url, "balancer://"))
            .map(|name| name.trim_end_matches('/').to_string())
        else {
            self.skip(
                section,
                "only <Proxy balancer://NAME> sections (a pool) are imported",
            );
            return;
        };
        if !is_pool_name(&name) {
            self.skip(
                section,
                "the balancer's name is not a pool name (letters, digits, '-', '_', '.')",
            );
            return;
        }
        let mut pool = Pool {
            line: section.line,
            origin: section.text.clone(),
            ..Pool::default()
        };
        for directive in flatten(section.children.as_deref().unwrap_or_default()) {
            if directive.is("BalancerMember") {
                self.balancer_member(&mut pool, directive);
            } else if directive.is("ProxySet") {
                for param in &directive.args {
                    self.balancer_param(&mut pool, directive, param);
                }
            } else {
                self.skip(directive, "not a BalancerMember or ProxySet");
            }
        }
        self.pools.insert(name, pool);
    }

    fn balancer_member(&mut self, pool: &mut Pool, directive: &Directive) {
        let Some(url) = directive.args.first() else {
            self.skip(directive, "a BalancerMember needs a URL");
            return;
        };
        let Some((server_url, path)) = split_member_url(url) else {
            self.skip(
                directive,
                "the member's URL is not http://, https:// or unix:/path|http://",
            );
            return;
        };
        match &pool.member_path {
            Some(earlier) if *earlier != path => {
                self.skip(
                    directive,
                    &format!(
                        "its path {path:?} differs from an earlier member's {earlier:?}: a pool forwards the same path to every server"
                    ),
                );
                return;
            }
            _ => pool.member_path = Some(path),
        }
        let mut server = Server {
            url: server_url,
            weight: None,
            route: None,
            state: None,
            backup: false,
            max_conns: None,
        };
        for param in &directive.args[1..] {
            let Some((key, value)) = param.split_once('=') else {
                self.skip(directive, &format!("{param:?} is not key=value"));
                continue;
            };
            self.member_param(
                pool,
                &mut server,
                directive,
                &key.to_ascii_lowercase(),
                value,
            );
        }
        pool.servers.push(server);
    }

    /// One `key=value` of a `BalancerMember` (or of a direct `ProxyPass` target).
    fn member_param(
        &mut self,
        pool: &mut Pool,
        server: &mut Server,
        directive: &Directive,
        key: &str,
        value: &str,
    ) {
        let seconds = |value: &str| apache_duration(value);
        match key {
            "route" => server.route = Some(value.to_string()),
            "loadfactor" => match value.parse::<u32>() {
                // Apache's loadfactor is 1 to 100 and weighs like balancer's weight.
                Ok(weight) if (1..=100).contains(&weight) => server.weight = Some(weight),
                _ => self.skip(directive, "loadfactor must be 1 to 100"),
            },
            "status" => self.member_status(server, directive, value),
            "max" => match value.parse::<u32>() {
                Ok(max) if max <= 100_000 => server.max_conns = Some(max),
                _ => self.skip(directive, "max must be 0 to 100000"),
            },
            "retry" => match seconds(value) {
                Some(time) if time <= Duration::from_secs(3600) => {
                    set_pool_value(self, &mut pool.after_failure, time, directive, "retry");
                }
                _ => self.skip(directive, "retry must be a duration up to 1h"),
            },
            "ttl" => match seconds(value) {
                Some(time) if !time.is_zero() && time <= Duration::from_secs(3600) => {
                    set_pool_value(self, &mut pool.idle_timeout, time, directive, "ttl");
                }
                _ => self.skip(directive, "ttl must be above 0 and at most 1h"),
            },
            "disablereuse" | "enablereuse" => {
                let on = value.eq_ignore_ascii_case("on");
                if !on && !value.eq_ignore_ascii_case("off") {
                    self.skip(directive, &format!("{key} must be On or Off"));
                    return;
                }
                let reuse = if key == "disablereuse" { !on } else { on };
                set_pool_value(self, &mut pool.reuse, reuse, directive, key);
            }
            "connectiontimeout" => match seconds(value) {
                Some(time) if !time.is_zero() => {
                    set_pool_value(self, &mut pool.connect_timeout, time, directive, key);
                }
                _ => self.skip(directive, "connectiontimeout must be a duration above 0"),
            },
            "timeout" => match seconds(value) {
                Some(time) if !time.is_zero() => {
                    set_pool_value(self, &mut pool.response_timeout, time, directive, key);
                }
                _ => self.skip(directive, "timeout must be a duration above 0"),
            },
            "ping" => self.skip(
                directive,
                "ping (a probe before each request) has no equivalent: give the pool health = { path = … } checks instead",
            ),
            "lbmethod" | "stickysession" | "nofailover" => {
                self.balancer_param(pool, directive, &format!("{key}={value}"));
            }
            _ => self.skip(directive, &format!("the member parameter {key} has no equivalent")),
        }
    }

    /// `status=+H`, `status=N`, `status=-D+N`…: flags set with `+` (or no sign), cleared with `-`.
    fn member_status(&mut self, server: &mut Server, directive: &Directive, value: &str) {
        let mut set = true;
        for flag in value.chars() {
            match (flag.to_ascii_uppercase(), set) {
                ('+', _) => set = true,
                ('-', _) => set = false,
                (_, false) => set = true,
                ('N', true) => server.state = Some("draining"),
                // Stopped: Apache never sends it anything, as disabled.
                ('D' | 'S', true) => server.state = Some("disabled"),
                ('H', true) => server.backup = true,
                (other, true) => {
                    self.skip(
                        directive,
                        &format!("status flag {other} has no equivalent (balancer has N, D, H)"),
                    );
                    set = true;
                }
            }
        }
    }

    /// A balancer's own parameter, from `ProxySet` or a `ProxyPass` line.
    fn balancer_param(&mut self, pool: &mut Pool, directive: &Directive, param: &str) {
        let Some((key, value)) = param.split_once('=') else {
            if strip_ignoring_case(param, "balancer://").is_none() {
                self.skip(directive, &format!("{param:?} is not key=value"));
            }
            return;
        };
        match key.to_ascii_lowercase().as_str() {
            "lbmethod" => match value.to_ascii_lowercase().as_str() {
                "byrequests" => pool.balance = Some("round-robin"),
                "bybusyness" => pool.balance = Some("least-conn"),
                "bytraffic" => self.skip(
                    directive,
                    "lbmethod=bytraffic (by bytes transferred) has no equivalent: round-robin or least-conn",
                ),
                _ => self.skip(directive, &format!("lbmethod={value} has no equivalent")),
            },
            "stickysession" => {
                // `NAME` or `COOKIE|path_param`, as Tomcat's `JSESSIONID|jsessionid`.
                let (cookie, param) = match value.split_once('|') {
                    Some((cookie, param)) => (cookie.to_string(), Some(param.to_string())),
                    None => (value.to_string(), None),
                };
                pool.sticky = Some((cookie, param));
            }
            "nofailover" => {
                if value.eq_ignore_ascii_case("on") {
                    self.skip(
                        directive,
                        "nofailover=On: balancer sends a session whose server is down to another server",
                    );
                }
            }
            other => self.skip(directive, &format!("the balancer parameter {other} has no equivalent")),
        }
    }

    // ---- <VirtualHost> -------------------------------------------------------------------

    fn virtual_host(&mut self, section: &Directive) {
        let Some(bind) = vhost_bind(section.args.first().map(String::as_str)) else {
            self.skip(
                section,
                "the address is not *:PORT, ADDRESS:PORT or _default_:PORT",
            );
            return;
        };
        let children: Vec<&Directive> = flatten(section.children.as_deref().unwrap_or_default());
        let mut names = Vec::new();
        let mut ssl = false;
        let mut cert = None;
        let mut key = None;
        let mut scope = Scope {
            tls: children.iter().any(|d| {
                d.is("SSLEngine") && d.args.first().is_some_and(|a| a.eq_ignore_ascii_case("on"))
            }),
            ..Scope::default()
        };
        let mut trusted_proxies = Vec::new();
        let mut trusted_header = None;
        // First the directives that hold for the whole host, wherever they are written in it.
        for directive in &children {
            let first = directive.args.first().map(String::as_str);
            if directive.is("ServerName") {
                names.extend(first.map(host_name));
            } else if directive.is("ServerAlias") {
                for alias in &directive.args {
                    let name = host_name(alias);
                    let wildcard = name.strip_prefix("*.").unwrap_or(&name);
                    if wildcard.contains(['*', '?']) {
                        self.skip(
                            directive,
                            &format!("{alias}: a wildcard other than a leading *. has no equivalent in allowed_hosts"),
                        );
                    } else {
                        names.push(name);
                    }
                }
            } else if directive.is("SSLEngine") {
                ssl = first.is_some_and(|a| a.eq_ignore_ascii_case("on"));
            } else if directive.is("SSLCertificateFile") {
                cert = first.map(|p| self.relative_path(p));
            } else if directive.is("SSLCertificateKeyFile") {
                key = first.map(|p| self.relative_path(p));
            } else if directive.is("ProxyPreserveHost") {
                scope.preserve_host = first.is_some_and(|a| a.eq_ignore_ascii_case("on"));
            } else if directive.is("ProxyTimeout") {
                match first.and_then(apache_duration) {
                    Some(time) if !time.is_zero() => scope.response_timeout = Some(time),
                    _ => self.skip(directive, "ProxyTimeout needs a number of seconds above 0"),
                }
            } else if directive.is("RemoteIPHeader") {
                match first {
                    Some(header) if is_client_address_header(header) => {
                        trusted_header = Some(header.to_string());
                    }
                    _ => self.skip(
                        directive,
                        "balancer takes the client address from X-Forwarded-For, X-Real-IP, X-Client-IP or Forwarded only",
                    ),
                }
            } else if directive.is("RemoteIPTrustedProxy") || directive.is("RemoteIPInternalProxy")
            {
                for proxy in &directive.args {
                    if proxy.parse::<ipnet::IpNet>().is_ok()
                        || proxy.parse::<std::net::IpAddr>().is_ok()
                    {
                        trusted_proxies.push(proxy.clone());
                    } else {
                        self.skip(
                            directive,
                            &format!("{proxy}: trusted_proxies takes addresses and CIDR blocks, not host names or partial addresses"),
                        );
                    }
                }
            } else if directive.is("RequestHeader") || directive.is("Header") {
                self.header(&mut scope, directive);
            } else if directive.is("ProxyPassReverseCookieDomain") {
                match directive.args.as_slice() {
                    [internal, public] => scope
                        .cookie_domains
                        .push((internal.clone(), public.clone())),
                    _ => self.skip(directive, "needs an internal and a public domain"),
                }
            } else if directive.is("ProxyRequests") {
                self.proxy_requests(directive);
            } else if directive.is("SSLProxyEngine") {
                self.note(
                    directive,
                    "nothing to translate: balancer speaks TLS to every https:// server",
                );
            } else if directive.is("SSLProxyCACertificateFile") {
                scope.proxy_ca = first.map(|p| self.relative_path(p));
            } else if directive.is("SSLProxyVerify")
                || directive.is("SSLProxyCheckPeerName")
                || directive.is("SSLProxyCheckPeerCN")
            {
                self.skip(
                    directive,
                    "balancer always verifies https:// servers' certificates and names (tls_ca_file, tls_server_name)",
                );
            } else if directive.is("Proxy")
                || directive.is("ProxyPass")
                || directive.is("Location")
                || directive.is("ProxyPassReverse")
                || directive.is("ProxyPassReverseCookiePath")
            {
                // Read below, once the host's own settings are known.
            } else {
                self.skip(directive, "no equivalent in balancer's config");
            }
        }
        let listener = self.listener_for(&bind, section.line, &names);
        if ssl {
            match (cert, key) {
                (Some(cert), Some(key)) => {
                    let listener = &mut self.listeners[listener];
                    if !listener.certificates.contains(&(cert.clone(), key.clone())) {
                        listener.certificates.push((cert, key));
                    }
                }
                _ => self.skip(
                    section,
                    "SSLEngine on needs both SSLCertificateFile and SSLCertificateKeyFile",
                ),
            }
        }
        if let Some(header) = trusted_header {
            let listener = &mut self.listeners[listener];
            if !listener.trusted_headers.contains(&header) {
                listener.trusted_headers.push(header);
            }
            if trusted_proxies.is_empty() {
                // mod_remoteip without RemoteIPTrustedProxy believes the header from anyone.
                trusted_proxies.extend(["0.0.0.0/0".to_string(), "::/0".to_string()]);
            }
        } else if !trusted_proxies.is_empty() {
            // Without RemoteIPHeader, mod_remoteip reads no header, so its proxies change nothing.
            trusted_proxies.clear();
            for directive in children
                .iter()
                .filter(|d| d.is("RemoteIPTrustedProxy") || d.is("RemoteIPInternalProxy"))
            {
                self.skip(
                    directive,
                    "without a RemoteIPHeader (that balancer reads) no header is trusted",
                );
            }
        }
        for proxy in trusted_proxies {
            let listener = &mut self.listeners[listener];
            if !listener.trusted_proxies.contains(&proxy) {
                listener.trusted_proxies.push(proxy);
            }
        }
        let listener_name = self.listeners[listener].name.clone();
        let first_route = self.routes.len();
        for directive in &children {
            if directive.is("ProxyPass") {
                if directive.args.get(1).is_some_and(|t| t == "!") {
                    self.skip(
                        directive,
                        "a path excluded from proxying is served by Apache itself; give it a route with static_dir, or it goes to the pool of the route around it",
                    );
                } else {
                    let route = directive.args.first().cloned();
                    let target = directive.args.get(1).cloned();
                    match (route, target) {
                        (Some(path), Some(target)) => self.proxy_pass(
                            directive,
                            &listener_name,
                            section.line,
                            &path,
                            &target,
                            &directive.args[2..],
                            &scope,
                        ),
                        _ => self.skip(directive, "needs a path and a URL"),
                    }
                }
            } else if directive.is("Location") {
                self.location(directive, &listener_name, section.line, &scope);
            }
        }
        for directive in &children {
            if directive.is("ProxyPassReverse") {
                self.reverse(directive, first_route, None, |route| {
                    route.rewrite_location = true;
                });
            } else if directive.is("ProxyPassReverseCookiePath") {
                self.cookie_path(directive, first_route, None);
            }
        }
    }

    fn location(&mut self, section: &Directive, listener: &str, vhost_line: usize, outer: &Scope) {
        let Some(path) = section.args.first().cloned() else {
            self.skip(section, "a <Location> needs a path");
            return;
        };
        if section.args.len() > 1 || path == "~" {
            self.skip(section, "regular-expression locations have no equivalent");
            return;
        }
        let children = flatten(section.children.as_deref().unwrap_or_default());
        let mut scope = outer.clone();
        for directive in &children {
            let first = directive.args.first().map(String::as_str);
            if directive.is("RequestHeader") || directive.is("Header") {
                self.header(&mut scope, directive);
            } else if directive.is("ProxyPreserveHost") {
                scope.preserve_host = first.is_some_and(|a| a.eq_ignore_ascii_case("on"));
            } else if directive.is("ProxyPassReverseCookieDomain") {
                match directive.args.as_slice() {
                    [internal, public] => scope
                        .cookie_domains
                        .push((internal.clone(), public.clone())),
                    _ => self.skip(directive, "needs an internal and a public domain"),
                }
            } else if !(directive.is("ProxyPass")
                || directive.is("ProxyPassReverse")
                || directive.is("ProxyPassReverseCookiePath"))
            {
                self.skip(directive, "no equivalent inside a <Location>");
            }
        }
        let first_route = self.routes.len();
        for directive in &children {
            if directive.is("ProxyPass") {
                match directive.args.first() {
                    Some(target) if target == "!" => self.skip(
                        directive,
                        "a path excluded from proxying is served by Apache itself",
                    ),
                    Some(target) => self.proxy_pass(
                        directive,
                        listener,
                        vhost_line,
                        &path,
                        &target.clone(),
                        &directive.args[1..],
                        &scope,
                    ),
                    None => self.skip(directive, "needs a URL"),
                }
            }
        }
        for directive in &children {
            if directive.is("ProxyPassReverse") {
                self.reverse(directive, first_route, Some(&path), |route| {
                    route.rewrite_location = true;
                });
            } else if directive.is("ProxyPassReverseCookiePath") {
                self.cookie_path(directive, first_route, Some(&path));
            }
        }
    }

    /// `ProxyPass PATH URL [key=value…]`: a route to a pool, with the path mapping Apache does.
    #[expect(clippy::too_many_arguments, reason = "the parts of one ProxyPass line")]
    fn proxy_pass(
        &mut self,
        directive: &Directive,
        listener: &str,
        vhost_line: usize,
        path: &str,
        target: &str,
        params: &[String],
        scope: &Scope,
    ) {
        let (pool_name, target_path) = if let Some(rest) =
            strip_ignoring_case(target, "balancer://")
        {
            let (name, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            if !self.pools.contains_key(name) {
                self.skip(
                    directive,
                    &format!("no <Proxy balancer://{name}> defines its members"),
                );
                return;
            }
            if self.pools.get(name).is_some_and(|p| p.servers.is_empty()) {
                self.skip(
                    directive,
                    &format!("balancer://{name} has no member that could be translated"),
                );
                return;
            }
            for param in params {
                let mut pool = self.pools.remove(name).unwrap_or_default();
                self.balancer_param(&mut pool, directive, param);
                self.pools.insert(name.to_string(), pool);
            }
            (name.to_string(), path.to_string())
        } else if let Some((server_url, target_path)) = split_member_url(target) {
            // A direct target: a pool of one server, named after it.
            let name = direct_pool_name(&server_url);
            let mut pool = self.pools.remove(&name).unwrap_or_else(|| Pool {
                line: directive.line,
                origin: directive.text.clone(),
                ..Pool::default()
            });
            if pool.servers.is_empty() {
                let mut server = Server {
                    url: server_url,
                    weight: None,
                    route: None,
                    state: None,
                    backup: false,
                    max_conns: None,
                };
                for param in params {
                    match param.split_once('=') {
                        Some((key, value)) => self.member_param(
                            &mut pool,
                            &mut server,
                            directive,
                            &key.to_ascii_lowercase(),
                            value,
                        ),
                        None => self.skip(directive, &format!("{param:?} is not key=value")),
                    }
                }
                pool.servers.push(server);
                pool.member_path = Some(String::new());
            } else if !params.is_empty() {
                self.skip(
                        directive,
                        "the parameters of the first ProxyPass to this URL apply: its routes share one pool",
                    );
            }
            self.pools.insert(name.clone(), pool);
            (name, target_path)
        } else {
            self.skip(
                directive,
                "the target is not balancer://NAME, http://, https:// or unix:",
            );
            return;
        };
        let pool = self.pools.get_mut(&pool_name).expect("inserted above");
        if pool.tls_ca_file.is_none() && pool.servers.iter().any(|s| s.url.starts_with("https://"))
        {
            pool.tls_ca_file.clone_from(&scope.proxy_ca);
        }
        if pool.response_timeout.is_none()
            && let Some(time) = scope.response_timeout
        {
            pool.response_timeout = Some((time, directive.line));
        }
        // Apache sends PATH/rest to TARGET_PATH + MEMBER_PATH + rest. balancer forwards the
        // path as it came, or with the route's prefix removed (strip_prefix).
        let backend = format!(
            "{}{}",
            pool.member_path.as_deref().unwrap_or(""),
            target_path
        );
        let public = path.trim_end_matches('/');
        let backend = backend.trim_end_matches('/');
        let strip_prefix = if backend == public {
            false
        } else if backend.is_empty() {
            true
        } else {
            self.skip(
                directive,
                &format!(
                    "{path} is forwarded as {backend}/…: balancer forwards a path as it came or without the route's prefix, not under another prefix"
                ),
            );
            return;
        };
        let route_path = if path.is_empty() { "/" } else { path };
        self.routes.push(Route {
            listener: listener.to_string(),
            vhost_line,
            line: directive.line,
            text: directive.text.clone(),
            path: route_path.to_string(),
            strip_prefix,
            pool: pool_name,
            preserve_host: scope.preserve_host,
            rewrite_location: false,
            rewrite_cookie_path: false,
            rewrite_cookie_domain: scope.cookie_domains.clone(),
            request_headers: scope.request_headers.clone(),
            response_headers: scope.response_headers.clone(),
        });
    }

    /// Applies `change` to the routes of this scope (from `first_route` on) whose path is the
    /// one `directive` names; says so when there is none.
    fn reverse(
        &mut self,
        directive: &Directive,
        first_route: usize,
        location: Option<&str>,
        change: impl Fn(&mut Route),
    ) {
        let path = match location {
            Some(path) => path.to_string(),
            None => match directive.args.first() {
                Some(path) if directive.args.len() >= 2 => path.clone(),
                _ => {
                    self.skip(directive, "needs a path and a URL");
                    return;
                }
            },
        };
        let mut found = false;
        for route in &mut self.routes[first_route..] {
            if route.path.trim_end_matches('/') == path.trim_end_matches('/') {
                change(route);
                found = true;
            }
        }
        if !found {
            self.skip(directive, "no ProxyPass of this path was translated");
        }
    }

    /// `ProxyPassReverseCookiePath INTERNAL PUBLIC`: balancer's `rewrite_cookie_path` puts back
    /// the prefix the route strips, which is this directive when INTERNAL is what the server
    /// sees and PUBLIC the route's path.
    fn cookie_path(&mut self, directive: &Directive, first_route: usize, location: Option<&str>) {
        let [internal, public] = directive.args.as_slice() else {
            self.skip(directive, "needs an internal and a public path");
            return;
        };
        let (internal, public) = (
            internal.trim_end_matches('/').to_string(),
            public.trim_end_matches('/').to_string(),
        );
        let mut found = false;
        for route in &mut self.routes[first_route..] {
            let path = route.path.trim_end_matches('/');
            if location.is_some_and(|l| l.trim_end_matches('/') != path) || path != public {
                continue;
            }
            let matches = if route.strip_prefix {
                internal.is_empty()
            } else {
                internal == public
            };
            if matches {
                route.rewrite_cookie_path = true;
                found = true;
            }
        }
        if !found {
            self.skip(
                directive,
                "balancer rewrites a cookie's path only by the prefix its route strips",
            );
        }
    }

    /// `RequestHeader set|unset NAME [VALUE]`, `Header [always] set|unset NAME [VALUE]`.
    fn header(&mut self, scope: &mut Scope, directive: &Directive) {
        let mut args: &[String] = &directive.args;
        let request = directive.is("RequestHeader");
        if !request
            && args.first().is_some_and(|a| {
                a.eq_ignore_ascii_case("always") || a.eq_ignore_ascii_case("onsuccess")
            })
        {
            args = &args[1..];
        }
        let edits = if request {
            &mut scope.request_headers
        } else {
            &mut scope.response_headers
        };
        let own_scheme = if scope.tls { "https" } else { "http" };
        match args {
            [action, name, value] if action.eq_ignore_ascii_case("set") => {
                if value.contains('%') {
                    self.skip(directive, "values with %{…} format specifiers have no equivalent");
                } else if request
                    && name.eq_ignore_ascii_case("x-forwarded-proto")
                    && value.eq_ignore_ascii_case(own_scheme)
                {
                    self.note(
                        directive,
                        "nothing to translate: balancer sends the listener's own scheme as X-Forwarded-Proto",
                    );
                } else {
                    edits.set(name, value);
                }
            }
            [action, name] if action.eq_ignore_ascii_case("unset") => {
                if request && is_forwarded_header(name) {
                    self.note(
                        directive,
                        "nothing to translate: balancer replaces a client's X-Forwarded-* headers with its own",
                    );
                } else {
                    edits.unset(name);
                }
            }
            _ => self.skip(
                directive,
                "only `set NAME VALUE` and `unset NAME` have an equivalent (no conditions, no other actions)",
            ),
        }
    }

    /// The listener for `bind`, made on first use; records the virtual host's names.
    fn listener_for(&mut self, bind: &str, line: usize, names: &[String]) -> usize {
        let index = match self.listeners.iter().position(|l| l.bind == bind) {
            Some(index) => index,
            None => {
                let port = bind.rsplit(':').next().unwrap_or("80");
                let base = match port {
                    "80" => "http".to_string(),
                    "443" => "https".to_string(),
                    _ => format!("port-{port}"),
                };
                let mut name = base.clone();
                let mut n = 2;
                while self.listeners.iter().any(|l| l.name == name) {
                    name = format!("{base}-{n}");
                    n += 1;
                }
                self.listeners.push(Listener {
                    name,
                    bind: bind.to_string(),
                    vhosts: Vec::new(),
                    any_host: false,
                    certificates: Vec::new(),
                    trusted_proxies: Vec::new(),
                    trusted_headers: Vec::new(),
                });
                self.listeners.len() - 1
            }
        };
        let listener = &mut self.listeners[index];
        listener.any_host |= names.is_empty();
        listener.vhosts.push((line, names.to_vec()));
        index
    }

    fn relative_path(&self, path: &str) -> String {
        self.base_dir.join(path).display().to_string()
    }

    // ---- Output ------------------------------------------------------------------------------

    /// The `[[route]]` tables to write: each route once per host name of its virtual host
    /// when several virtual hosts share its listener, else once without `host`. A route that
    /// repeats an earlier one (listener, host and path) is reported instead: Apache would have
    /// served that path from the earlier virtual host.
    fn route_entries(&mut self) -> Vec<(usize, Option<String>)> {
        let mut entries = Vec::new();
        let mut seen: Vec<(String, Option<String>, String)> = Vec::new();
        let mut repeated = Vec::new();
        for (index, route) in self.routes.iter().enumerate() {
            let listener = self
                .listeners
                .iter()
                .find(|l| l.name == route.listener)
                .expect("every route's listener is made first");
            let hosts: Vec<Option<String>> = if listener.vhosts.len() > 1 {
                listener
                    .vhosts
                    .iter()
                    .filter(|(line, _)| *line == route.vhost_line)
                    .flat_map(|(_, names)| names.iter().cloned().map(Some))
                    .collect()
            } else {
                Vec::new()
            };
            let hosts = if hosts.is_empty() { vec![None] } else { hosts };
            for host in hosts {
                let key = (
                    route.listener.clone(),
                    host.clone(),
                    route.path.trim_end_matches('/').to_string(),
                );
                if seen.contains(&key) {
                    repeated.push((route.line, route.text.clone(), host));
                } else {
                    seen.push(key);
                    entries.push((index, host));
                }
            }
        }
        for (line, text, host) in repeated {
            let host = host.map_or_else(String::new, |h| format!(" for {h}"));
            self.notes.push((
                line,
                format!(
                    "# line {line}: {text} — not translated: an earlier <VirtualHost> on this address already routes this path{host}, and Apache would have served it from that one"
                ),
            ));
        }
        entries
    }

    fn render(mut self, source: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Imported from {source} by `balancer import apache`.");
        let _ = writeln!(
            out,
            "# Check every \"not translated\" line before serving with this config."
        );
        let entries = self.route_entries();
        self.notes.sort_by_key(|(line, _)| *line);
        if !self.notes.is_empty() {
            out.push('\n');
            for (_, note) in &self.notes {
                let _ = writeln!(out, "{note}");
            }
        }
        for listener in &self.listeners {
            out.push('\n');
            let _ = writeln!(out, "[[listener]]");
            for (line, names) in &listener.vhosts {
                let _ = writeln!(
                    out,
                    "# <VirtualHost> at line {line}: {}",
                    if names.is_empty() {
                        "no ServerName".to_string()
                    } else {
                        names.join(", ")
                    }
                );
            }
            let _ = writeln!(out, "name = {}", quote(&listener.name));
            let _ = writeln!(out, "bind = {}", quote(&listener.bind));
            if !listener.certificates.is_empty() {
                let certificates: Vec<String> = listener
                    .certificates
                    .iter()
                    .map(|(cert, key)| {
                        format!("{{ cert = {}, key = {} }}", quote(cert), quote(key))
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "tls = {{ certificates = [ {} ] }}",
                    certificates.join(", ")
                );
            }
            let mut hosts: Vec<&String> = Vec::new();
            for name in listener.vhosts.iter().flat_map(|(_, names)| names) {
                if !hosts.contains(&name) {
                    hosts.push(name);
                }
            }
            if listener.any_host {
                let _ = writeln!(
                    out,
                    "# A <VirtualHost> here has no ServerName: it answers any host name, so no allowed_hosts."
                );
            } else {
                let _ = writeln!(
                    out,
                    "# Apache would have served any other host name from the first <VirtualHost> of this"
                );
                let _ = writeln!(
                    out,
                    "# address; balancer refuses it with disallowed_host_status (421) instead."
                );
                let _ = writeln!(out, "allowed_hosts = {}", quote_list(&hosts));
            }
            if !listener.trusted_proxies.is_empty() {
                let _ = writeln!(out, "# RemoteIPTrustedProxy / RemoteIPHeader");
                let _ = writeln!(
                    out,
                    "trusted_proxies = {}",
                    quote_list(&listener.trusted_proxies)
                );
                if !listener.trusted_headers.is_empty() {
                    let _ = writeln!(
                        out,
                        "trusted_headers = {}",
                        quote_list(&listener.trusted_headers)
                    );
                }
            }
        }
        for (index, host) in entries {
            let route = &self.routes[index];
            {
                out.push('\n');
                let _ = writeln!(out, "[[route]]");
                let _ = writeln!(out, "# line {}: {}", route.line, route.text);
                let _ = writeln!(out, "listener = {}", quote(&route.listener));
                if let Some(host) = &host {
                    let _ = writeln!(out, "host = {}", quote(host));
                }
                let _ = writeln!(out, "path = {}", quote(&route.path));
                let _ = writeln!(out, "strip_prefix = {}", route.strip_prefix);
                let _ = writeln!(out, "pool = {}", quote(&route.pool));
                let _ = writeln!(
                    out,
                    "preserve_host = {}{}",
                    route.preserve_host,
                    if route.preserve_host {
                        "   # ProxyPreserveHost On"
                    } else {
                        "   # ProxyPreserveHost is Off unless set (Apache's default)"
                    }
                );
                let _ = writeln!(
                    out,
                    "rewrite_location = {}{}",
                    route.rewrite_location,
                    if route.rewrite_location {
                        "   # ProxyPassReverse"
                    } else {
                        "   # no ProxyPassReverse"
                    }
                );
                let _ = writeln!(
                    out,
                    "rewrite_cookie_path = {}{}",
                    route.rewrite_cookie_path,
                    if route.rewrite_cookie_path {
                        "   # ProxyPassReverseCookiePath"
                    } else {
                        "   # no ProxyPassReverseCookiePath"
                    }
                );
                if !route.rewrite_cookie_domain.is_empty() {
                    let pairs: Vec<String> = route
                        .rewrite_cookie_domain
                        .iter()
                        .map(|(from, to)| format!("{} = {}", quote(from), quote(to)))
                        .collect();
                    let _ = writeln!(out, "rewrite_cookie_domain = {{ {} }}", pairs.join(", "));
                }
                write_header_edits(&mut out, "request_headers", &route.request_headers);
                write_header_edits(&mut out, "response_headers", &route.response_headers);
            }
        }
        // A pool whose members were all left out (each said why) cannot be served, and no
        // route refers to it.
        for (name, pool) in self.pools.iter().filter(|(_, p)| !p.servers.is_empty()) {
            out.push('\n');
            let _ = writeln!(out, "[pool.{}]", key(name));
            let _ = writeln!(out, "# line {}: {}", pool.line, pool.origin);
            let _ = writeln!(
                out,
                "balance = {}{}",
                quote(pool.balance.unwrap_or("round-robin")),
                match pool.balance {
                    Some("least-conn") => "   # lbmethod=bybusyness",
                    Some(_) => "   # lbmethod=byrequests",
                    None => "   # lbmethod=byrequests (Apache's default)",
                }
            );
            let _ = writeln!(out, "servers = [");
            for server in &pool.servers {
                let mut fields = vec![format!("url = {}", quote(&server.url))];
                if let Some(weight) = server.weight {
                    fields.push(format!("weight = {weight}"));
                }
                if let Some(route) = &server.route {
                    fields.push(format!("route = {}", quote(route)));
                }
                if let Some(state) = server.state {
                    fields.push(format!("state = {}", quote(state)));
                }
                if server.backup {
                    fields.push("backup = true".to_string());
                }
                if let Some(max) = server.max_conns {
                    fields.push(format!("max_conns = {max}"));
                }
                let _ = writeln!(out, "  {{ {} }},", fields.join(", "));
            }
            let _ = writeln!(out, "]");
            if let Some(ca) = &pool.tls_ca_file {
                let _ = writeln!(
                    out,
                    "tls_ca_file = {}   # SSLProxyCACertificateFile",
                    quote(ca)
                );
            } else if pool.servers.iter().any(|s| s.url.starts_with("https://")) {
                let _ = writeln!(
                    out,
                    "# Apache does not verify https:// members' certificates unless SSLProxyVerify says so;"
                );
                let _ = writeln!(
                    out,
                    "# balancer does, against the system's CAs: set tls_ca_file to the members' CA."
                );
            }
            if let Some((cookie, param)) = &pool.sticky {
                if pool.servers.iter().all(|s| s.route.is_some()) {
                    let _ = writeln!(
                        out,
                        "# stickysession: the app writes the route into its own session id, and Apache"
                    );
                    let _ = writeln!(
                        out,
                        "# never rewrites the cookie, hence strip_route = false."
                    );
                    let mut fields = vec![
                        "mode = \"route-suffix\"".to_string(),
                        format!("cookie = {}", quote(cookie)),
                    ];
                    if let Some(param) = param {
                        fields.push(format!("path_param = {}", quote(param)));
                    }
                    fields.push("strip_route = false".to_string());
                    let _ = writeln!(out, "sticky = {{ {} }}", fields.join(", "));
                } else {
                    let _ = writeln!(
                        out,
                        "# stickysession={cookie} — not translated: a member has no route=, which Apache's stickiness needs"
                    );
                }
            }
            let mut keepalive = Vec::new();
            if let Some((reuse, _)) = pool.reuse {
                keepalive.push(format!("reuse = {reuse}"));
            }
            if let Some((time, _)) = pool.idle_timeout {
                keepalive.push(format!("idle_timeout = {}", quote(&duration(time))));
            }
            if !keepalive.is_empty() {
                let _ = writeln!(
                    out,
                    "keepalive = {{ {} }}   # disablereuse, ttl",
                    keepalive.join(", ")
                );
            }
            if let Some((time, _)) = pool.after_failure {
                let _ = writeln!(
                    out,
                    "retry = {{ after_failure = {} }}   # retry",
                    quote(&duration(time))
                );
            }
            let mut timeouts = Vec::new();
            if let Some((time, _)) = pool.connect_timeout {
                timeouts.push(format!("connect = {}", quote(&duration(time))));
            }
            if let Some((time, _)) = pool.response_timeout {
                timeouts.push(format!("response = {}", quote(&duration(time))));
            }
            if !timeouts.is_empty() {
                let _ = writeln!(
                    out,
                    "timeouts = {{ {} }}   # connectiontimeout, timeout / ProxyTimeout",
                    timeouts.join(", ")
                );
            }
        }
        out
    }
}

/// Sets a pool-wide value from one member's parameter; a member that disagrees with an
/// earlier one is reported, since balancer has one value per pool.
fn set_pool_value<T: PartialEq + Copy + std::fmt::Debug>(
    translation: &mut Translation,
    slot: &mut Option<(T, usize)>,
    value: T,
    directive: &Directive,
    key: &str,
) {
    match slot {
        Some((earlier, line)) if *earlier != value => {
            let line = *line;
            translation.skip(
                directive,
                &format!("{key} differs from line {line}'s: balancer has one value per pool"),
            );
        }
        Some(_) => {}
        None => *slot = Some((value, directive.line)),
    }
}

fn write_header_edits(out: &mut String, key: &str, edits: &HeaderEdits) {
    let mut parts = Vec::new();
    if !edits.set.is_empty() {
        let values: Vec<String> = edits
            .set
            .iter()
            .map(|(name, value)| format!("{} = {}", quote(name), quote(value)))
            .collect();
        parts.push(format!("set = {{ {} }}", values.join(", ")));
    }
    if !edits.unset.is_empty() {
        parts.push(format!("unset = {}", quote_list(&edits.unset)));
    }
    if !parts.is_empty() {
        let _ = writeln!(out, "{key} = {{ {} }}", parts.join(", "));
    }
}

/// The client-address headers balancer's `trusted_headers` reads (what `RemoteIPHeader` names).
fn is_client_address_header(name: &str) -> bool {
    ["x-forwarded-for", "x-real-ip", "x-client-ip", "forwarded"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// Headers balancer sets itself from what it knows of the connection.
fn is_forwarded_header(name: &str) -> bool {
    [
        "x-forwarded-proto",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-port",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// `*:80`, `_default_:443`, `198.18.0.1:8080`, `[2001:db8::1]:80`, `*` → a bind address.
fn vhost_bind(address: Option<&str>) -> Option<String> {
    // Split as a Host is (`http::authority`); `*` and `_default_` pass as names.
    let written = authority::parse(address.unwrap_or("*")).ok()?;
    let port = written.port.unwrap_or(80);
    let host = match written.host {
        "*" | "_default_" => "0.0.0.0".to_string(),
        host if host.starts_with('[') => host.to_string(),
        host => host.parse::<std::net::Ipv4Addr>().ok()?.to_string(),
    };
    Some(format!("{host}:{port}"))
}

/// `ServerName host[:port]` → the host name.
fn host_name(name: &str) -> String {
    let name = name.split_once("://").map_or(name, |(_, rest)| rest);
    authority::host_without_port(name).to_ascii_lowercase()
}

/// A member URL as a server URL without its path, and that path (without a trailing `/`).
/// `unix:/path|http://host/path` is a unix socket.
fn split_member_url(url: &str) -> Option<(String, String)> {
    if let Some(rest) = strip_ignoring_case(url, "unix:") {
        let (socket, http) = rest.split_once('|')?;
        let (_, path) = split_member_url(http)?;
        return Some((format!("unix:{socket}"), path));
    }
    let scheme = if strip_ignoring_case(url, "http://").is_some() {
        "http://"
    } else if strip_ignoring_case(url, "https://").is_some() {
        "https://"
    } else {
        return None;
    };
    let rest = &url[scheme.len()..];
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() {
        return None;
    }
    Some((
        format!("{scheme}{authority}"),
        path.trim_end_matches('/').to_string(),
    ))
}

/// A pool name for a direct `ProxyPass` target: its host and port.
fn direct_pool_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect::<String>()
        .trim_matches('-')
        .to_string()
}

fn is_pool_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Apache's durations: seconds, or milliseconds with `ms`.
fn apache_duration(value: &str) -> Option<Duration> {
    if let Some(ms) = value.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    value.parse().ok().map(Duration::from_secs)
}

fn duration(time: Duration) -> String {
    if time.subsec_millis() == 0 {
        format!("{}s", time.as_secs())
    } else {
        format!("{}ms", time.as_millis())
    }
}

fn strip_ignoring_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.get(..prefix.len())
        .filter(|head| head.eq_ignore_ascii_case(prefix))
        .map(|_| &text[prefix.len()..])
}

/// A TOML basic string.
fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn quote_list<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

/// A table key: bare when TOML allows it.
fn key(name: &str) -> String {
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        name.to_string()
    } else {
        quote(name)
    }
}
