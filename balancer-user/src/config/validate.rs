//! Rules a config must follow beyond its types, and the typed config they produce.

mod l7;

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Component, Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use toml::Spanned;

use super::{
    AclConfig, AdminConfig, AnnounceConfig, BACKEND_SLOTS_LIMIT, BackendConfig, Config,
    ForwardMode, HealthCheckConfig, HealthCheckKind, MAGLEV_SLOTS_LIMIT, Protocol, UdpHash,
    VipConfig, XdpConfig,
    de::{
        AclTable, AdminTable, AnnounceTable, Array, Cidr, ConfigFile, HealthCheck, HealthTable,
        Status, Table, VipTable, XdpTable,
    },
    error::Invalid,
};

/// The directory bpffs is mounted on; `xdp.pin_path` must be below it.
const BPF_FS: &str = "/sys/fs/bpf";

pub(super) fn validate(file: ConfigFile, base_dir: &Path) -> Result<Config, Invalid> {
    let ConfigFile {
        admin,
        xdp,
        vips,
        proxy,
        listeners,
        routes,
        pools,
        announce,
    } = file;
    let admin = admin_config(admin, base_dir)?;
    let (xdp, vips) = match xdp {
        Some(xdp_table) => {
            let (xdp, vips) = l4_config(&xdp_table, &vips)?;
            (Some(xdp), vips)
        }
        None => {
            if let Some(vip) = vips.first() {
                return Err(Invalid::at(
                    "vip[0]",
                    &vip.name,
                    "VIPs need the XDP data plane: add an [xdp] section with the interface",
                ));
            }
            (None, Vec::new())
        }
    };
    let announce = announce
        .map(|table| announce_config(&table, xdp.is_some(), base_dir))
        .transpose()?;
    let l7 = l7::l7_config(&admin, &proxy, &listeners, &routes, &pools, base_dir)?;
    Ok(Config {
        admin,
        xdp,
        vips,
        l7,
        announce,
    })
}

/// `[xdp]` and the `[[vip]]`s it serves.
fn l4_config(
    xdp_table: &XdpTable,
    vips: &[Table<VipTable>],
) -> Result<(XdpConfig, Vec<VipConfig>), Invalid> {
    let xdp = xdp_config(xdp_table, vips)?;

    let mut names = HashMap::new();
    let mut services = HashMap::new();
    let mut vip_configs = Vec::with_capacity(vips.len());
    for (index, vip) in vips.iter().enumerate() {
        let name = vip.name.get_ref();
        if !is_valid_name(name) {
            return Err(Invalid::at(
                format!("vip[{index}].name"),
                &vip.name,
                not_a_name(name),
            ));
        }
        if let Some(first) = names.insert(name.clone(), index) {
            return Err(Invalid::at(
                format!("vip[{index}].name"),
                &vip.name,
                format!("{name:?} is already the name of vip[{first}]"),
            ));
        }
        let address = *vip.address.get_ref();
        if address.is_unspecified() || address.is_multicast() {
            return Err(Invalid::at(
                format!("vip[{index}].address"),
                &vip.address,
                format!("{address} cannot be a VIP (unspecified or multicast)"),
            ));
        }
        // Port 0 is refused while parsing (`de::port`).
        let port = *vip.port.get_ref();
        if let Some(first) = services.insert((address, port, vip.protocol), index) {
            return Err(Invalid::at(
                format!("vip[{index}].address"),
                &vip.address,
                format!(
                    "{address} port {port} {} is already vip[{first}] ({:?})",
                    vip.protocol.as_str(),
                    vips[first].name.get_ref()
                ),
            ));
        }
        vip_configs.push(vip_config(index, vip, &xdp)?);
    }
    acl_capacity(xdp_table, vips)?;
    Ok((xdp, vip_configs))
}

/// A name of a VIP, listener, route or pool: it shows in logs, metrics labels and the admin
/// API's paths.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn not_a_name(name: &str) -> String {
    format!("{name:?} must be non-empty and use only letters, digits, '-', '_' and '.'")
}

/// `[xdp]` on its own, and the number of VIPs it has room for.
fn xdp_config(table: &XdpTable, vips: &[Table<VipTable>]) -> Result<XdpConfig, Invalid> {
    let interface = table.interface.get_ref();
    if !is_valid_interface_name(interface) {
        return Err(Invalid::at(
            "xdp.interface",
            &table.interface,
            format!(
                "{interface:?} is not a valid interface name (1 to 15 characters, not \".\" or \"..\", no '/', ':' or whitespace)"
            ),
        ));
    }
    let pin_path = table.pin_path.as_ref().map(pin_path).transpose()?;

    // The ranges of max_vips and table_size (and that it is prime) are checked while parsing.
    let max_vips = *table.max_vips.get_ref();
    let table_size = *table.table_size.get_ref();
    let slots = u64::from(max_vips) * u64::from(table_size) * 2;
    if slots > MAGLEV_SLOTS_LIMIT {
        // Point at table_size unless it is the default (then max_vips was written).
        let (key, at) = if table.table_size.span().is_empty() {
            ("xdp.max_vips", &table.max_vips)
        } else {
            ("xdp.table_size", &table.table_size)
        };
        return Err(Invalid::at(
            key,
            at,
            format!(
                "max_vips = {max_vips} and table_size = {table_size} need {max_vips} * {table_size} * 2 = {slots} Maglev slots (two tables per VIP), more than the limit of {MAGLEV_SLOTS_LIMIT}; lower one of them"
            ),
        ));
    }

    let backend_slots = u64::from(max_vips) * u64::from(table.max_backends);
    if backend_slots > BACKEND_SLOTS_LIMIT {
        return Err(Invalid::at(
            "xdp.max_vips",
            &table.max_vips,
            format!(
                "max_vips = {max_vips} and max_backends = {} need {backend_slots} backend slots, more than the limit of {BACKEND_SLOTS_LIMIT}; lower one of them",
                table.max_backends
            ),
        ));
    }

    if vips.len() > max_vips as usize {
        let last = &vips[max_vips as usize];
        return Err(Invalid::at(
            format!("vip[{max_vips}]"),
            &last.name,
            format!(
                "{} VIPs are configured but xdp.max_vips is {max_vips}",
                vips.len()
            ),
        ));
    }

    let flow_grace = match &table.flow_grace {
        Some(grace) if *grace.get_ref() > XdpConfig::MAX_FLOW_GRACE => {
            return Err(Invalid::at(
                "xdp.flow_grace",
                grace,
                format!(
                    "{} is longer than the limit of {}",
                    show(*grace.get_ref()),
                    show(XdpConfig::MAX_FLOW_GRACE)
                ),
            ));
        }
        Some(grace) => *grace.get_ref(),
        None => XdpConfig::DEFAULT_FLOW_GRACE,
    };

    Ok(XdpConfig {
        interface: table.interface.clone(),
        mode: table.mode,
        max_vips: table.max_vips.clone(),
        pin_path,
        table_size,
        max_backends: table.max_backends,
        max_connections: table.max_connections,
        max_acl_rules: table.max_acl_rules,
        flow_grace,
        acl: acl_config(&table.acl, "xdp.acl", None)?,
    })
}

/// The maps are pinned in a directory of their own below the bpffs mount: pinning anywhere
/// else fails at start, and the mount's root is shared with every other BPF user.
fn pin_path(value: &Spanned<String>) -> Result<PathBuf, Invalid> {
    let text = value.get_ref();
    let path = Path::new(text);
    if !path.is_absolute() {
        return Err(Invalid::at(
            "xdp.pin_path",
            value,
            format!("{text:?} must be an absolute path, such as \"{BPF_FS}/balancer\""),
        ));
    }
    // `components` drops repeated and trailing '/' and "." (but not "..", which would lead
    // out of the mount).
    let normal: PathBuf = path.components().collect();
    let below = normal.strip_prefix(BPF_FS).is_ok_and(|rest| {
        rest.components().next().is_some()
            && rest
                .components()
                .all(|part| matches!(part, Component::Normal(_)))
    });
    if !below {
        return Err(Invalid::at(
            "xdp.pin_path",
            value,
            format!(
                "{text:?} must be a directory below {BPF_FS}/ (the BPF file system), such as \"{BPF_FS}/balancer\""
            ),
        ));
    }
    Ok(normal)
}

/// One `[[vip]]` beyond its name, address and service (checked by the caller).
fn vip_config(index: usize, vip: &VipTable, xdp: &XdpConfig) -> Result<VipConfig, Invalid> {
    let backends = backends(index, vip, xdp.max_backends)?;

    let udp_hash = match &vip.udp_hash {
        Some(udp_hash) if vip.protocol != Protocol::Udp => {
            return Err(Invalid::at(
                format!("vip[{index}].udp_hash"),
                udp_hash,
                format!(
                    "only allowed when protocol = \"udp\" (a {} VIP hashes the 5-tuple)",
                    vip.protocol.as_str()
                ),
            ));
        }
        Some(udp_hash) => *udp_hash.get_ref(),
        None => UdpHash::default(),
    };

    let health = match &vip.health {
        None => None,
        Some(health) if *vip.forward.get_ref() == ForwardMode::Local => {
            return Err(Invalid::at(
                format!("vip[{index}].health"),
                health,
                "a local VIP has no backends to check (the local proxy checks its pools' servers); remove health",
            ));
        }
        Some(health) => Some(health_check(
            health.get_ref(),
            &format!("vip[{index}].health"),
        )?),
    };

    let acl = acl_config(
        &vip.acl,
        &format!("vip[{index}].acl"),
        Some(*vip.address.get_ref()),
    )?;

    Ok(VipConfig {
        name: vip.name.clone(),
        address: vip.address.clone(),
        port: vip.port.clone(),
        protocol: vip.protocol,
        forward: vip.forward.clone(),
        backends,
        udp_hash,
        health,
        acl,
    })
}

fn backends(
    index: usize,
    vip: &VipTable,
    max_backends: u32,
) -> Result<Vec<BackendConfig>, Invalid> {
    let forward = *vip.forward.get_ref();
    let key = format!("vip[{index}].backends");
    let Some(written) = &vip.backends else {
        if forward == ForwardMode::Local {
            return Ok(Vec::new());
        }
        // Points at `forward`: the mode is what needs backends.
        return Err(Invalid::at(
            format!("vip[{index}]"),
            &vip.forward,
            format!(
                "\"{}\" forwarding needs at least one backend in backends",
                forward.as_str()
            ),
        ));
    };
    let list = &written.get_ref().0;
    if forward == ForwardMode::Local {
        return Err(Invalid::at(
            key,
            written,
            "a local VIP has no backends: the local proxy serves it (remove backends, or forward with \"ipip\" or \"l2-dsr\")",
        ));
    }
    if list.is_empty() {
        return Err(Invalid::at(
            key,
            written,
            format!(
                "\"{}\" forwarding needs at least one backend",
                forward.as_str()
            ),
        ));
    }
    let max = max_backends as usize;
    if list.len() > max {
        return Err(Invalid::at(
            format!("{key}[{max}]"),
            &list[max].address,
            format!(
                "{} backends are configured but xdp.max_backends is {max}",
                list.len()
            ),
        ));
    }

    let vip_address = *vip.address.get_ref();
    let mut seen = HashMap::new();
    for (position, address) in list.iter().map(|backend| &backend.address).enumerate() {
        let entry = format!("vip[{index}].backends[{position}].address");
        let backend = *address.get_ref();
        let broadcast = matches!(backend, IpAddr::V4(v4) if v4.is_broadcast());
        if backend.is_unspecified() || backend.is_loopback() || backend.is_multicast() || broadcast
        {
            return Err(Invalid::at(
                entry,
                address,
                format!(
                    "{backend} cannot be a backend (unspecified, loopback, multicast or broadcast)"
                ),
            ));
        }
        if backend.is_ipv4() != vip_address.is_ipv4() {
            return Err(Invalid::at(
                entry,
                address,
                format!(
                    "{backend} is {} but the VIP's address {vip_address} is {}",
                    family(backend),
                    family(vip_address)
                ),
            ));
        }
        if backend == vip_address {
            return Err(Invalid::at(
                entry,
                address,
                format!("{backend} is the VIP's own address"),
            ));
        }
        if let Some(earlier) = seen.insert(backend, position) {
            return Err(Invalid::at(
                entry,
                address,
                format!("{backend} is already backends[{earlier}]"),
            ));
        }
    }
    if list.iter().all(|backend| backend.weight == 0) {
        return Err(Invalid::at(
            key,
            written,
            "every backend has weight 0, so new flows have nowhere to go; give at least one a weight above 0",
        ));
    }

    Ok(list
        .iter()
        .map(|backend| BackendConfig {
            address: *backend.address.get_ref(),
            weight: backend.weight,
        })
        .collect())
}

/// A health check table under `key` (such as `vip[0].health`). Ranges of the integers are
/// checked while parsing.
fn health_check(table: &HealthTable, key: &str) -> Result<HealthCheckConfig, Invalid> {
    let (interval, timeout) =
        check_interval_and_timeout(key, table.interval.as_ref(), table.timeout.as_ref())?;
    let kind = match table.check {
        HealthCheck::Tcp => {
            let http_only = [
                ("path", table.path.as_ref().map(Spanned::span)),
                ("host", table.host.as_ref().map(Spanned::span)),
                ("expect", table.expect.as_ref().map(Spanned::span)),
            ];
            if let Some((name, Some(span))) = http_only.into_iter().find(|(_, span)| span.is_some())
            {
                return Err(Invalid {
                    key: format!("{key}.{name}"),
                    span,
                    what: "only allowed with check = \"http\", not \"tcp\"".to_string(),
                });
            }
            HealthCheckKind::Tcp
        }
        HealthCheck::Http => HealthCheckKind::Http {
            path: match &table.path {
                Some(written) => check_path(key, written)?,
                None => HealthCheckConfig::DEFAULT_PATH.to_string(),
            },
            host: table
                .host
                .as_ref()
                .map(|written| check_host(key, written))
                .transpose()?,
            expect: check_expect(key, table.expect.as_ref())?,
        },
    };

    Ok(HealthCheckConfig {
        kind,
        port: table.port,
        interval,
        timeout,
        rise: table.rise,
        fall: table.fall,
    })
}

/// A health check's `path`: it goes into the request line as written.
pub(super) fn check_path(key: &str, written: &Spanned<String>) -> Result<String, Invalid> {
    let path = written.get_ref();
    // It goes into the request line as written.
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Invalid::at(
            format!("{key}.path"),
            written,
            format!("{path:?} must start with '/' and contain no whitespace or control characters"),
        ));
    }
    Ok(path.clone())
}

/// A health check's `host`: the Host header it sends.
pub(super) fn check_host(key: &str, written: &Spanned<String>) -> Result<String, Invalid> {
    let host = written.get_ref();
    if !is_valid_host_header(host) {
        return Err(Invalid::at(
            format!("{key}.host"),
            written,
            format!(
                "{host:?} is not a valid Host header value (a host name or IP address, optionally with :port)"
            ),
        ));
    }
    Ok(host.clone())
}

/// A health check's `expect`: statuses, each once; empty when absent (any 2xx or 3xx).
pub(super) fn check_expect(
    key: &str,
    expect: Option<&Spanned<Array<Status>>>,
) -> Result<Vec<u16>, Invalid> {
    let Some(written) = expect else {
        return Ok(Vec::new());
    };
    let mut seen = HashMap::new();
    let mut expect = Vec::with_capacity(written.get_ref().0.len());
    for (position, status) in written.get_ref().0.iter().enumerate() {
        let code = *status.0.get_ref();
        if let Some(earlier) = seen.insert(code, position) {
            return Err(Invalid::at(
                format!("{key}.expect[{position}]"),
                &status.0,
                format!("{code} is already expect[{earlier}]"),
            ));
        }
        expect.push(code);
    }
    Ok(expect)
}

/// `[admin]`: a relative `token_file` is resolved against the config's directory; an admin API
/// reachable from other hosts needs the token.
fn admin_config(
    written: Option<Table<AdminTable>>,
    base_dir: &Path,
) -> Result<AdminConfig, Invalid> {
    let Some(Table(written)) = written else {
        return Ok(AdminConfig::default());
    };
    let token_file = match &written.token_file {
        Some(file) if file.get_ref().is_empty() => {
            return Err(Invalid::at(
                "admin.token_file",
                file,
                "is empty: give the path of the file holding the token",
            ));
        }
        Some(file) => Some(base_dir.join(file.get_ref())),
        None => None,
    };
    let listen = written
        .listen
        .as_ref()
        .map_or_else(AdminConfig::default_listen, |listen| *listen.get_ref());
    if let Some(written_listen) = &written.listen
        && token_file.is_none()
        && !listen.ip().is_loopback()
    {
        return Err(Invalid::at(
            "admin.listen",
            written_listen,
            format!(
                "{listen} is reachable from other hosts: set token_file (a bearer token every request must carry), or listen on a loopback address"
            ),
        ));
    }
    Ok(AdminConfig { listen, token_file })
}

/// `[announce]`: a table of our own (the kernel's own ids hold its local, main and default
/// routes, which the startup flush of protocol-250 routes must never touch), and VIPs to
/// announce, which need the data plane.
fn announce_config(
    written: &Spanned<Table<AnnounceTable>>,
    has_xdp: bool,
    base_dir: &Path,
) -> Result<AnnounceConfig, Invalid> {
    if !has_xdp {
        return Err(Invalid::at(
            "announce",
            written,
            "announces VIPs, which need the XDP data plane: add an [xdp] section",
        ));
    }
    let Table(table) = written.get_ref();
    let id = *table.table.get_ref();
    let reserved = match id {
        253 => Some("default"),
        254 => Some("main"),
        255 => Some("local"),
        _ => None,
    };
    if let Some(name) = reserved {
        return Err(Invalid::at(
            "announce.table",
            &table.table,
            format!(
                "{id} is the kernel's {name:?} table: give a table of the balancer's own, such as {}",
                AnnounceConfig::DEFAULT_TABLE
            ),
        ));
    }
    let withdraw_delay = match &table.withdraw_delay {
        Some(delay) if *delay.get_ref() > AnnounceConfig::MAX_WITHDRAW_DELAY => {
            return Err(Invalid::at(
                "announce.withdraw_delay",
                delay,
                format!(
                    "{} is longer than the limit of {}",
                    show(*delay.get_ref()),
                    show(AnnounceConfig::MAX_WITHDRAW_DELAY)
                ),
            ));
        }
        Some(delay) => *delay.get_ref(),
        None => AnnounceConfig::DEFAULT_WITHDRAW_DELAY,
    };
    let state_file = match &table.state_file {
        Some(file) if file.get_ref().is_empty() => {
            return Err(Invalid::at(
                "announce.state_file",
                file,
                "is empty: give the path of the file that keeps an operator's withdraw",
            ));
        }
        Some(file) => base_dir.join(file.get_ref()),
        None => PathBuf::from(AnnounceConfig::DEFAULT_STATE_FILE),
    };
    Ok(AnnounceConfig {
        table: id,
        withdraw_delay,
        state_file,
    })
}

/// `interval` and `timeout` of a health check (VIP or pool): the interval in its range, the
/// timeout above 0 and at most the interval.
pub(super) fn check_interval_and_timeout(
    key: &str,
    interval: Option<&Spanned<Duration>>,
    timeout: Option<&Spanned<Duration>>,
) -> Result<(Duration, Duration), Invalid> {
    let interval_written = interval.is_some();
    let interval = match interval {
        Some(written) => {
            let interval = *written.get_ref();
            let range = HealthCheckConfig::MIN_INTERVAL..=HealthCheckConfig::MAX_INTERVAL;
            if !range.contains(&interval) {
                return Err(Invalid::at(
                    format!("{key}.interval"),
                    written,
                    format!(
                        "must be between {} and {}, not {}",
                        show(*range.start()),
                        show(*range.end()),
                        show(interval)
                    ),
                ));
            }
            interval
        }
        None => HealthCheckConfig::DEFAULT_INTERVAL,
    };
    let timeout = match timeout {
        Some(written) => {
            let timeout = *written.get_ref();
            if timeout.is_zero() || timeout > interval {
                let default = if interval_written {
                    ""
                } else {
                    ", the default"
                };
                return Err(Invalid::at(
                    format!("{key}.timeout"),
                    written,
                    format!(
                        "must be above 0 and at most the interval ({}{default}), not {}",
                        show(interval),
                        show(timeout)
                    ),
                ));
            }
            timeout
        }
        // A short interval shortens the default timeout rather than making it an error.
        None => HealthCheckConfig::DEFAULT_TIMEOUT.min(interval),
    };
    Ok((interval, timeout))
}

/// An ACL under `key` (`xdp.acl` or `vip[N].acl`); a VIP's rules are of its `family`.
fn acl_config(table: &AclTable, key: &str, vip: Option<IpAddr>) -> Result<AclConfig, Invalid> {
    let mut allowed = HashMap::new();
    for (position, cidr) in table.allow.iter().enumerate() {
        let net = cidr.get_ref().0;
        let entry = format!("{key}.allow[{position}]");
        check_family(&entry, cidr, vip)?;
        if let Some(earlier) = allowed.insert(net, position) {
            return Err(Invalid::at(
                entry,
                cidr,
                format!("{net} is already allow[{earlier}]"),
            ));
        }
    }
    let mut denied = HashMap::new();
    for (position, cidr) in table.deny.iter().enumerate() {
        let net = cidr.get_ref().0;
        let entry = format!("{key}.deny[{position}]");
        check_family(&entry, cidr, vip)?;
        if let Some(earlier) = denied.insert(net, position) {
            return Err(Invalid::at(
                entry,
                cidr,
                format!("{net} is already deny[{earlier}]"),
            ));
        }
        if let Some(allowed) = allowed.get(&net) {
            return Err(Invalid::at(
                entry,
                cidr,
                format!(
                    "{net} is also allow[{allowed}]: a source cannot be both allowed and denied"
                ),
            ));
        }
    }
    Ok(AclConfig {
        allow: table.allow.iter().map(|cidr| cidr.get_ref().0).collect(),
        deny: table.deny.iter().map(|cidr| cidr.get_ref().0).collect(),
    })
}

fn check_family(key: &str, cidr: &Spanned<Cidr>, vip: Option<IpAddr>) -> Result<(), Invalid> {
    let net = cidr.get_ref().0;
    match vip {
        Some(vip) if net_family(net) != family(vip) => Err(Invalid::at(
            key,
            cidr,
            format!(
                "{net} is {} but the VIP's address {vip} is {}; put it in xdp.acl or in a VIP of its family",
                net_family(net),
                family(vip)
            ),
        )),
        _ => Ok(()),
    }
}

/// The global rules and every VIP's rules of one family share that family's trie.
fn acl_capacity(xdp: &XdpTable, vips: &[Table<VipTable>]) -> Result<(), Invalid> {
    let max = xdp.max_acl_rules as usize;
    let scopes = std::iter::once((None, &xdp.acl)).chain(
        vips.iter()
            .enumerate()
            .map(|(index, vip)| (Some(index), &vip.acl)),
    );
    // Every rule in the order of the file: (VIP index or None for xdp.acl, list, position, CIDR).
    let mut rules = Vec::new();
    for (vip, acl) in scopes {
        for (list, cidrs) in [("allow", &acl.allow), ("deny", &acl.deny)] {
            for (position, cidr) in cidrs.iter().enumerate() {
                rules.push((vip, list, position, cidr));
            }
        }
    }
    for name in ["IPv4", "IPv6"] {
        let of_family = || {
            rules
                .iter()
                .filter(|(_, _, _, cidr)| net_family(cidr.get_ref().0) == name)
        };
        let total = of_family().count();
        // Points at the first rule that does not fit.
        if let Some(&(vip, list, position, cidr)) = of_family().nth(max) {
            let scope = match vip {
                None => "xdp.acl".to_string(),
                Some(index) => format!("vip[{index}].acl"),
            };
            return Err(Invalid::at(
                format!("{scope}.{list}[{position}]"),
                cidr,
                format!(
                    "{total} {name} ACL rules are configured (xdp.acl and every VIP's acl together) but xdp.max_acl_rules is {max}"
                ),
            ));
        }
    }
    Ok(())
}

fn family(address: IpAddr) -> &'static str {
    if address.is_ipv4() { "IPv4" } else { "IPv6" }
}

fn net_family(net: IpNet) -> &'static str {
    family(net.addr())
}

/// A duration as the config writes it: "500ms", "2s", "1h", "1m 30s".
fn show(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// The kernel's rule (`dev_valid_name` in net/core/dev.c): shorter than IFNAMSIZ (16, with the
/// NUL), not "." or "..", and no '/', ':' or whitespace. Checked here so that a typo is reported
/// with its line rather than as a netlink error when the program is attached.
fn is_valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// A `Host` header value (RFC 9110 §7.2, split by `http::authority`): a DNS name, an IPv4
/// address or a bracketed IPv6 address, optionally followed by ":port" (1 to 65535).
pub(super) fn is_valid_host_header(value: &str) -> bool {
    crate::http::authority::parse(value)
        .is_ok_and(|authority| authority.ipv6().is_some() || is_valid_host_name(authority.host))
}

/// A DNS name (letters, digits, '-' and '_' in labels of 1 to 63 characters that neither start
/// nor end with '-', 253 characters at most) or an IPv4 address.
fn is_valid_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}
