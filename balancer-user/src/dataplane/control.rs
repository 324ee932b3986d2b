//! The data plane's state in userspace and the one writer of its maps: VIPs,
//! backends (address, next hop, health and operator state) and each VIP's
//! pair of Maglev tables.
//!
//! Write order keeps the XDP program from ever reading a table that sends new
//! flows to a backend that is not up: a backend coming up is marked up before
//! the table that lists it is activated; a backend going draining or down
//! leaves the active table first and is marked after.

use std::{net::IpAddr, time::Duration};

use aya::maps::{
    Array, DevMapHash, HashMap, MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};
use balancer_common::{
    ACL_ALLOW, ACL_DENY, AclKeyV4, AclKeyV6, BACKEND_DOWN, BACKEND_FLAG_HEALTHY,
    BACKEND_FLAG_RESOLVED, BACKEND_UP, BackendInfo, FAMILY_IPV4, FAMILY_IPV6, FORWARD_LOCAL,
    VIP_FLAG_UDP_HASH_SOURCE, VipKey, VipMeta, acl_key_v4, acl_key_v6, backend_index,
    maglev_table_base,
};
use ipnet::IpNet;
use serde::Serialize;

use super::{
    VipInfo,
    keys::{acl_flags, vip_key},
    layout::{self, LayoutError, TableMember},
    nexthop::{self, NextHop, NextHopError},
};
use crate::config::{AclConfig, ForwardMode, HealthCheckConfig, UdpHash, VipConfig, XdpConfig};
use crate::operator::Operator;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("BPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("BPF map TX_PORTS: {0}")]
    Devmap(String),
}

/// Why an operator request (admin API: drain, enable or disable) on a VIP backend was refused.
#[derive(Debug, thiserror::Error)]
pub enum OperatorRequestError {
    #[error("no VIP named {0:?}")]
    NoVip(String),
    #[error("VIP {vip:?} has no backend {address}")]
    NoBackend { vip: String, address: IpAddr },
    #[error(transparent)]
    Control(#[from] ControlError),
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> ControlError {
    move |source| ControlError::Map { name, source }
}

/// One backend of one VIP, as userspace tracks it.
#[derive(Debug, Clone, Serialize)]
pub struct BackendModel {
    pub address: IpAddr,
    pub weight: u32,
    /// Index in `BACKENDS` (and in the backend counters).
    pub slot: u32,
    pub healthy: bool,
    /// The last health-check verdict, or why the backend is assumed healthy.
    pub health_reason: String,
    pub admin: Operator,
    /// The L7 health of the pool servers at this address (an L7 pool and this VIP share the
    /// host): when one is down, the backend takes no flows either. `None`: no such server.
    pub pool_health: Option<LinkedHealth>,
    /// What the data plane sees: "up", "draining" or "down".
    pub state: &'static str,
    #[serde(skip)]
    pub state_code: u8,
    pub next_hop: Option<NextHopView>,
    pub next_hop_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextHopView {
    pub interface: String,
    pub ifindex: u32,
    pub mac: String,
    pub source: IpAddr,
    pub mtu: u16,
    pub gateway: Option<IpAddr>,
    #[serde(skip)]
    pub src_mac: [u8; 6],
    #[serde(skip)]
    pub dst_mac: [u8; 6],
}

impl From<&NextHop> for NextHopView {
    fn from(hop: &NextHop) -> Self {
        let mac = hop
            .dst_mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        NextHopView {
            interface: hop.interface.clone(),
            ifindex: hop.ifindex,
            mac,
            source: hop.src_addr,
            mtu: hop.mtu,
            gateway: hop.via_gateway,
            src_mac: hop.src_mac,
            dst_mac: hop.dst_mac,
        }
    }
}

impl NextHopView {
    /// The next hop a backend slot holds, when it holds a resolved one (a pinned map keeps
    /// what the previous run resolved). The gateway is not kept in the slot: `None`.
    fn from_slot(info: &BackendInfo, interface: impl FnOnce(u32) -> String) -> Option<Self> {
        if info.flags & BACKEND_FLAG_RESOLVED == 0 {
            return None;
        }
        // The route towards a backend has a source address of the backend's family.
        let source = match info.family {
            FAMILY_IPV4 => IpAddr::from([
                info.outer_src[0],
                info.outer_src[1],
                info.outer_src[2],
                info.outer_src[3],
            ]),
            FAMILY_IPV6 => IpAddr::from(info.outer_src),
            _ => return None,
        };
        let hop = NextHop {
            ifindex: info.ifindex,
            interface: interface(info.ifindex),
            src_mac: info.src_mac,
            dst_mac: info.dst_mac,
            src_addr: source,
            mtu: info.mtu,
            via_gateway: None,
        };
        Some(NextHopView::from(&hop))
    }
}

/// Why a next hop could not be resolved, and whether that makes the last resolved one wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopError {
    pub message: String,
    /// See [`NextHopError::invalidates_last_hop`].
    pub invalidates: bool,
}

impl From<&NextHopError> for HopError {
    fn from(err: &NextHopError) -> Self {
        HopError {
            message: err.to_string(),
            invalidates: err.invalidates_last_hop(),
        }
    }
}

/// A backend's next hop after a resolution attempt, and the error to show with it.
///
/// A resolved hop is replaced by a newer resolved one, or dropped when the kernel's answer
/// shows it is wrong now. Any other failure keeps it: the XDP program forwards with what it
/// has rather than dropping the backend's packets as `next_hop_unresolved` (a restart with
/// pinned maps starts from the previous run's hops, and must never lose them to a neighbour
/// entry that is being refreshed).
fn next_hop_after(
    current: Option<NextHopView>,
    attempt: Result<NextHopView, HopError>,
) -> (Option<NextHopView>, Option<String>) {
    match (attempt, current) {
        (Ok(hop), _) => (Some(hop), None),
        (Err(err), Some(hop)) if !err.invalidates => (
            Some(hop),
            Some(format!(
                "{}; forwarding with the last resolved next hop",
                err.message
            )),
        ),
        (Err(err), _) => (None, Some(err.message)),
    }
}

/// A resolution result as a VIP can use it: `l2-dsr` needs the backend on-link.
fn usable_hop(l2: bool, hop: Result<&NextHop, HopError>) -> Result<NextHopView, HopError> {
    match hop {
        Ok(hop) if l2 && hop.via_gateway.is_some() => Err(HopError {
            message: format!(
                "l2-dsr needs the backend on-link, but the route goes via {}",
                hop.via_gateway.expect("checked")
            ),
            invalidates: true,
        }),
        Ok(hop) => Ok(NextHopView::from(hop)),
        Err(err) => Err(err),
    }
}

/// What the proxy's health checks say of the pool servers on a backend's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkedHealth {
    pub up: bool,
    /// E.g. "pool django server a: 3 checks failed in a row, last: connect refused".
    pub reason: String,
}

impl BackendModel {
    /// Healthy by its own checks and by the L7 checks of servers on its address.
    fn healthy_everywhere(&self) -> bool {
        self.healthy && self.pool_health.as_ref().is_none_or(|linked| linked.up)
    }
}

/// One VIP with its backends.
#[derive(Debug, Clone, Serialize)]
pub struct VipModel {
    #[serde(flatten)]
    pub info: VipInfo,
    pub backends: Vec<BackendModel>,
    #[serde(skip)]
    pub health: Option<HealthCheckConfig>,
    #[serde(skip)]
    meta: VipMeta,
    #[serde(skip)]
    key: VipKey,
    /// What each of the two tables in `MAGLEV` holds, when known.
    #[serde(skip)]
    halves: [Option<Vec<u32>>; 2],
    /// The active half holds a table of this VIP's backends (written by this run, or pinned
    /// by the last one), so after the next switch it can serve as the previous table. A
    /// fresh map's zeros name slot 0, another VIP's backend.
    #[serde(skip)]
    active_is_table: bool,
}

impl VipModel {
    pub fn forwards(&self) -> bool {
        self.info.forward != ForwardMode::Local
    }
}

/// The maps userspace writes, and the model behind them.
pub struct Control {
    vips_map: HashMap<MapData, VipKey, VipMeta>,
    backends_map: Array<MapData, BackendInfo>,
    maglev_map: Array<MapData, u32>,
    tx_ports: DevMapHash<MapData>,
    grace_map: Array<MapData, u64>,
    flow_grace: Duration,
    // Held so the program's references to them stay valid until it is loaded
    // (and for rewriting rules later).
    _acl_v4: LpmTrie<MapData, AclKeyV4, u8>,
    _acl_v6: LpmTrie<MapData, AclKeyV6, u8>,
    table_size: u32,
    backends_per_vip: u32,
    xdp_ifindex: u32,
    vips: Vec<VipModel>,
    /// A new process took the maps over (`balancer upgrade`): this one keeps its model but
    /// writes nothing more, so two writers can never take the same unused half of a table.
    retired: bool,
}

/// The maps `Control` owns, taken out of the loaded object.
pub struct ControlMaps {
    pub vips: HashMap<MapData, VipKey, VipMeta>,
    pub backends: Array<MapData, BackendInfo>,
    pub maglev: Array<MapData, u32>,
    pub acl_v4: LpmTrie<MapData, AclKeyV4, u8>,
    pub acl_v6: LpmTrie<MapData, AclKeyV6, u8>,
    pub tx_ports: DevMapHash<MapData>,
    pub grace: Array<MapData, u64>,
}

impl Control {
    /// Takes over the maps (fresh, or pinned by an earlier run), reuses the
    /// ids and slots found in them, and writes the configured VIPs.
    ///
    /// `hops` are the backends' next hops, resolved before anything is written: a backend's
    /// slot never goes from resolved (pinned) to unresolved, which would drop its flows'
    /// packets while the program runs on. A backend missing from `hops`, or whose resolution
    /// failed without proving the pinned hop wrong, keeps the pinned hop.
    pub fn new(
        maps: ControlMaps,
        xdp: &XdpConfig,
        configs: &[VipConfig],
        xdp_ifindex: u32,
        hops: &[nexthop::Resolved],
    ) -> Result<Control, ControlError> {
        let ControlMaps {
            vips: mut vips_map,
            backends: backends_map,
            maglev: maglev_map,
            mut acl_v4,
            mut acl_v6,
            tx_ports,
            grace: grace_map,
        } = maps;
        let max_vips = *xdp.max_vips.get_ref();
        let existing: Vec<(VipKey, VipMeta)> = vips_map
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err("VIPS"))?;
        let keys: Vec<VipKey> = configs.iter().map(vip_key).collect();
        let existing_ids: Vec<(VipKey, u32)> = existing.iter().map(|(k, m)| (*k, m.id)).collect();
        let ids = layout::assign_ids(&keys, &existing_ids, max_vips).map_err(|wanted| {
            LayoutError::TooManyVips {
                wanted,
                max: max_vips,
            }
        })?;
        // VIPs no longer configured stop matching first.
        for (key, _) in &existing {
            if !keys.contains(key) {
                vips_map.remove(key).map_err(map_err("VIPS"))?;
            }
        }
        rewrite_acls(&mut acl_v4, &mut acl_v6, &xdp.acl, configs, &ids)?;

        let mut control = Control {
            vips_map,
            backends_map,
            maglev_map,
            tx_ports,
            grace_map,
            flow_grace: xdp.flow_grace,
            _acl_v4: acl_v4,
            _acl_v6: acl_v6,
            table_size: xdp.table_size,
            backends_per_vip: xdp.max_backends,
            xdp_ifindex,
            vips: Vec::with_capacity(configs.len()),
            retired: false,
        };
        for ((config, key), (id, existed)) in configs.iter().zip(keys).zip(ids) {
            let old_meta = existing.iter().find(|(k, _)| *k == key).map(|(_, m)| *m);
            let model =
                control.vip_model(config, key, id, existed.then_some(old_meta).flatten(), hops)?;
            control.vips.push(model);
        }
        for vip in 0..control.vips.len() {
            for backend in 0..control.vips[vip].backends.len() {
                control.add_tx_port(vip, backend)?;
                control.log_next_hop(vip, backend);
            }
        }
        for index in 0..control.vips.len() {
            control.apply(index)?;
        }
        Ok(control)
    }

    fn vip_model(
        &mut self,
        config: &VipConfig,
        key: VipKey,
        id: u32,
        old_meta: Option<VipMeta>,
        hops: &[nexthop::Resolved],
    ) -> Result<VipModel, ControlError> {
        let l2 = *config.forward.get_ref() == ForwardMode::L2Dsr;
        let per_vip = self.backends_per_vip;
        // What the pinned map holds for this VIP id: reused when the address matches.
        let mut present: Vec<(IpAddr, u32, BackendInfo)> = Vec::new();
        if old_meta.is_some() {
            for local in 0..per_vip {
                let slot = backend_index(id, local, per_vip);
                let info = self
                    .backends_map
                    .get(&slot, 0)
                    .map_err(map_err("BACKENDS"))?;
                if let Some(address) = info_address(&info) {
                    present.push((address, local, info));
                }
            }
        }
        let wanted: Vec<IpAddr> = config.backends.iter().map(|b| b.address).collect();
        let present_ids: Vec<(IpAddr, u32)> = present.iter().map(|(a, l, _)| (*a, *l)).collect();
        let locals = layout::assign_ids(&wanted, &present_ids, per_vip).map_err(|wanted| {
            LayoutError::TooManyBackends {
                wanted,
                max: per_vip,
            }
        })?;
        let backends = config
            .backends
            .iter()
            .zip(locals)
            .map(|(backend, (local, _))| {
                let previous = present
                    .iter()
                    .find(|(address, _, _)| *address == backend.address)
                    .map(|(_, _, info)| *info);
                // Without health checks a backend is up; with them it starts
                // down until its first check passes, unless a previous run (pinned
                // maps) already knew it healthy: established flows keep going.
                let (healthy, reason) = match (&config.health, previous) {
                    (None, _) => (true, "no health check configured".to_string()),
                    (Some(_), Some(info)) if info.flags & BACKEND_FLAG_HEALTHY != 0 => {
                        (true, "healthy in the previous run; re-checking".to_string())
                    }
                    (Some(_), _) => (false, "waiting for the first health check".to_string()),
                };
                let admin = previous
                    .map(|info| Operator::from_code(info.admin))
                    .unwrap_or_default();
                let service = admin.service(healthy);
                let pinned = previous.and_then(|info| {
                    NextHopView::from_slot(&info, |ifindex| {
                        nexthop::interface_name(ifindex)
                            .unwrap_or_else(|| format!("ifindex {ifindex}"))
                    })
                });
                let resolved = hops
                    .iter()
                    .find(|(address, _)| *address == backend.address)
                    .map(|(_, result)| usable_hop(l2, result.as_ref().map_err(HopError::from)));
                let (next_hop, next_hop_error) = match resolved {
                    Some(attempt) => next_hop_after(pinned, attempt),
                    None if pinned.is_some() => (pinned, None),
                    None => (None, Some("not resolved yet".to_string())),
                };
                BackendModel {
                    address: backend.address,
                    weight: backend.weight,
                    slot: backend_index(id, local, per_vip),
                    healthy,
                    health_reason: reason,
                    admin,
                    pool_health: None,
                    state: service.label(),
                    state_code: service.code(),
                    next_hop,
                    next_hop_error,
                }
            })
            .collect();
        // Stale slots of this VIP (backends removed from the config) are cleared.
        for (address, local, _) in &present {
            if !wanted.contains(address) {
                let slot = backend_index(id, *local, per_vip);
                self.write_slot_raw(slot, &empty_info())?;
            }
        }
        let mut flags = 0;
        if config.udp_hash == UdpHash::Source {
            flags |= VIP_FLAG_UDP_HASH_SOURCE;
        }
        flags |= acl_flags(&config.acl);
        let meta = VipMeta {
            id,
            forward: forward_code(*config.forward.get_ref()),
            flags,
            table_half: old_meta.map_or(0, |m| m.table_half),
            _pad: 0,
        };
        Ok(VipModel {
            info: VipInfo {
                id,
                name: config.name.get_ref().clone(),
                address: *config.address.get_ref(),
                port: *config.port.get_ref(),
                protocol: config.protocol,
                forward: *config.forward.get_ref(),
            },
            backends,
            health: config.health.clone(),
            meta,
            key,
            // Unknown: a fresh map is zeros, a pinned one holds the last run's tables.
            halves: [None, None],
            // Only a forwarding VIP's tables were ever written.
            active_is_table: old_meta.is_some_and(|m| m.forward != FORWARD_LOCAL),
        })
    }

    pub fn vips(&self) -> &[VipModel] {
        &self.vips
    }

    /// Records a health verdict; rewrites the VIP when the state changes.
    pub fn set_health(
        &mut self,
        vip: usize,
        backend: usize,
        healthy: bool,
        reason: String,
    ) -> Result<(), ControlError> {
        let model = &mut self.vips[vip].backends[backend];
        model.health_reason = reason;
        if model.healthy == healthy {
            return Ok(());
        }
        model.healthy = healthy;
        self.apply(vip)
    }

    /// Operator request: drain, enable or disable a VIP backend.
    pub fn set_admin(
        &mut self,
        vip_name: &str,
        address: IpAddr,
        admin: Operator,
    ) -> Result<(), OperatorRequestError> {
        let vip = self
            .vips
            .iter()
            .position(|v| v.info.name == vip_name)
            .ok_or_else(|| OperatorRequestError::NoVip(vip_name.to_string()))?;
        let backend = self.vips[vip]
            .backends
            .iter()
            .position(|b| b.address == address)
            .ok_or_else(|| OperatorRequestError::NoBackend {
                vip: vip_name.to_string(),
                address,
            })?;
        self.vips[vip].backends[backend].admin = admin;
        self.apply(vip)?;
        Ok(())
    }

    /// The L7 verdict on the pool servers at `address`, for every VIP backend there. Returns
    /// the names of the VIPs whose forwarding it changed (the verdict's reason alone changes
    /// nothing in the maps).
    pub fn set_pool_health(
        &mut self,
        address: IpAddr,
        linked: LinkedHealth,
    ) -> Result<Vec<String>, ControlError> {
        self.update_at(address, |backend| {
            let flips = backend.pool_health.as_ref().map(|h| h.up) != Some(linked.up);
            backend.pool_health = Some(linked.clone());
            flips
        })
    }

    /// Operator request for every VIP backend at `address` (a pool server on the same host was
    /// drained, enabled or disabled). Returns the names of the VIPs that have one; only those
    /// whose state changed are rewritten.
    pub fn set_admin_at(
        &mut self,
        address: IpAddr,
        admin: Operator,
    ) -> Result<Vec<String>, ControlError> {
        self.update_at(address, |backend| {
            std::mem::replace(&mut backend.admin, admin) != admin
        })?;
        Ok(self
            .vips
            .iter()
            .filter(|vip| vip.backends.iter().any(|b| b.address == address))
            .map(|vip| vip.info.name.clone())
            .collect())
    }

    /// Runs `update` on every VIP backend at `address` and rewrites the VIPs where it says
    /// the forwarding changed; their names.
    fn update_at(
        &mut self,
        address: IpAddr,
        mut update: impl FnMut(&mut BackendModel) -> bool,
    ) -> Result<Vec<String>, ControlError> {
        let mut changed = Vec::new();
        for vip in 0..self.vips.len() {
            let mut touched = false;
            for backend in &mut self.vips[vip].backends {
                if backend.address == address {
                    touched |= update(backend);
                }
            }
            if touched {
                self.apply(vip)?;
                changed.push(self.vips[vip].info.name.clone());
            }
        }
        Ok(changed)
    }

    /// Records where packets for a backend go (or why that is unknown); see
    /// [`next_hop_after`] for when a failed resolution keeps the last resolved hop.
    pub fn set_next_hop(
        &mut self,
        vip: usize,
        backend: usize,
        hop: Result<&NextHop, HopError>,
    ) -> Result<(), ControlError> {
        let l2 = self.vips[vip].info.forward == ForwardMode::L2Dsr;
        let model = &mut self.vips[vip].backends[backend];
        let (view, error) = next_hop_after(model.next_hop.clone(), usable_hop(l2, hop));
        if model.next_hop == view && model.next_hop_error == error {
            return Ok(());
        }
        let hop_changed = model.next_hop != view;
        model.next_hop = view;
        model.next_hop_error = error;
        self.add_tx_port(vip, backend)?;
        self.log_next_hop(vip, backend);
        if !hop_changed {
            // Only the error to show changed: the slot already holds this hop.
            return Ok(());
        }
        let info = self.backend_info(vip, backend);
        let slot = self.vips[vip].backends[backend].slot;
        self.write_slot_raw(slot, &info)
    }

    /// From now on the maps belong to another process (a handover completed): nothing is
    /// written to them any more.
    pub fn retire(&mut self) {
        self.retired = true;
    }

    /// A next hop on another interface is reached with XDP_REDIRECT through the devmap.
    fn add_tx_port(&mut self, vip: usize, backend: usize) -> Result<(), ControlError> {
        if self.retired {
            return Ok(());
        }
        if let Some(hop) = &self.vips[vip].backends[backend].next_hop
            && hop.ifindex != self.xdp_ifindex
        {
            self.tx_ports
                .insert(hop.ifindex, hop.ifindex, None, 0)
                .map_err(|err| ControlError::Devmap(err.to_string()))?;
        }
        Ok(())
    }

    fn log_next_hop(&self, vip: usize, backend: usize) {
        let name = &self.vips[vip].info.name;
        let model = &self.vips[vip].backends[backend];
        match (&model.next_hop, &model.next_hop_error) {
            (Some(hop), None) => tracing::info!(
                vip = %name, backend = %model.address, interface = %hop.interface,
                mac = %hop.mac, mtu = hop.mtu, "next hop resolved"
            ),
            (Some(hop), Some(error)) => tracing::warn!(
                vip = %name, backend = %model.address, interface = %hop.interface,
                mac = %hop.mac, "next hop not re-resolved: {error}"
            ),
            (None, Some(error)) => {
                tracing::warn!(vip = %name, backend = %model.address, "next hop unknown: {error}")
            }
            (None, None) => {}
        }
    }

    /// Recomputes a VIP's backend states and table and writes what changed.
    fn apply(&mut self, vip: usize) -> Result<(), ControlError> {
        for backend in &mut self.vips[vip].backends {
            let service = backend.admin.service(backend.healthy_everywhere());
            backend.state_code = service.code();
            backend.state = service.label();
        }
        if !self.vips[vip].forwards() {
            return self.write_meta(vip);
        }
        // Up first: nothing may pick a backend the table lists before it is up.
        for backend in 0..self.vips[vip].backends.len() {
            if self.vips[vip].backends[backend].state_code == BACKEND_UP {
                self.write_backend(vip, backend)?;
            }
        }
        self.write_table(vip)?;
        for backend in 0..self.vips[vip].backends.len() {
            if self.vips[vip].backends[backend].state_code != BACKEND_UP {
                self.write_backend(vip, backend)?;
            }
        }
        Ok(())
    }

    /// Writes the new table into the inactive half (only the slots that
    /// differ from what it holds), then flips the VIP to it.
    ///
    /// The half left behind becomes the VIP's previous table for `xdp.flow_grace`
    /// (its `GRACE` deadline). The inactive half is always the previous table, so a
    /// second change within the grace overwrites it: the table before the first
    /// change stops counting, and the one just replaced counts, with a new grace
    /// from now. Keeping the older one would leave no room to write the new table,
    /// and holding a change back would keep flows on a set of backends that is no
    /// longer right. Every host sees the same changes, so every host keeps the
    /// same previous table.
    fn write_table(&mut self, vip: usize) -> Result<(), ControlError> {
        let members: Vec<TableMember> = self.vips[vip]
            .backends
            .iter()
            .map(|b| TableMember {
                address: b.address,
                weight: b.weight,
                slot: b.slot,
                state: b.state_code,
            })
            .collect();
        let table = layout::build_vip_table(&members, self.table_size)?;
        if self.retired {
            return Ok(());
        }
        let model = &self.vips[vip];
        let active = model.meta.table_half as usize;
        if model.halves[active].as_deref() == Some(table.as_slice()) {
            return self.write_meta(vip);
        }
        let target = 1 - active;
        let id = model.meta.id;
        // The half about to be written stops being a previous table first: the
        // program never reads a half-written table as one.
        self.grace_map.set(id, 0, 0).map_err(map_err("GRACE"))?;
        let base = maglev_table_base(id, target as u8, self.table_size);
        let mut written = 0usize;
        for (index, value) in layout::changed_slots(model.halves[target].as_deref(), &table) {
            self.maglev_map
                .set(base + index, value, 0)
                .map_err(map_err("MAGLEV"))?;
            written += 1;
        }
        let model = &mut self.vips[vip];
        model.halves[target] = Some(table);
        model.meta.table_half = target as u8;
        let previous_is_table = std::mem::replace(&mut model.active_is_table, true);
        tracing::debug!(vip = %model.info.name, half = target, written, "Maglev table written");
        self.write_meta(vip)?;
        if previous_is_table {
            self.set_grace(id, grace_deadline(monotonic_ns(), self.flow_grace))?;
        }
        Ok(())
    }

    /// Writes a VIP's `GRACE` entry: until when (monotonic ns) its inactive half is
    /// its previous table; 0: not at all.
    fn set_grace(&mut self, id: u32, deadline: u64) -> Result<(), ControlError> {
        self.grace_map
            .set(id, deadline, 0)
            .map_err(map_err("GRACE"))
    }

    fn write_meta(&mut self, vip: usize) -> Result<(), ControlError> {
        if self.retired {
            return Ok(());
        }
        let model = &self.vips[vip];
        self.vips_map
            .insert(model.key, model.meta, 0)
            .map_err(map_err("VIPS"))
    }

    fn write_backend(&mut self, vip: usize, backend: usize) -> Result<(), ControlError> {
        let info = self.backend_info(vip, backend);
        let slot = self.vips[vip].backends[backend].slot;
        self.write_slot_raw(slot, &info)
    }

    fn write_slot_raw(&mut self, slot: u32, info: &BackendInfo) -> Result<(), ControlError> {
        if self.retired {
            return Ok(());
        }
        self.backends_map
            .set(slot, *info, 0)
            .map_err(map_err("BACKENDS"))
    }

    fn backend_info(&self, vip: usize, backend: usize) -> BackendInfo {
        let model = &self.vips[vip].backends[backend];
        let mut info = empty_info();
        match model.address {
            IpAddr::V4(v4) => {
                info.addr[..4].copy_from_slice(&v4.octets());
                info.family = FAMILY_IPV4;
            }
            IpAddr::V6(v6) => {
                info.addr = v6.octets();
                info.family = FAMILY_IPV6;
            }
        }
        info.state = model.state_code;
        info.admin = model.admin.code();
        if model.healthy {
            info.flags |= BACKEND_FLAG_HEALTHY;
        }
        if let Some(hop) = &model.next_hop {
            info.flags |= BACKEND_FLAG_RESOLVED;
            info.dst_mac = hop.dst_mac;
            info.src_mac = hop.src_mac;
            info.ifindex = hop.ifindex;
            info.mtu = hop.mtu;
            match hop.source {
                IpAddr::V4(v4) => info.outer_src[..4].copy_from_slice(&v4.octets()),
                IpAddr::V6(v6) => info.outer_src = v6.octets(),
            }
        }
        info
    }
}

/// When a previous table switched out at `now_ns` stops counting: `flow_grace` later, or 0
/// (never counts) when the grace is off.
fn grace_deadline(now_ns: u64, flow_grace: Duration) -> u64 {
    if flow_grace.is_zero() {
        return 0;
    }
    now_ns.saturating_add(u64::try_from(flow_grace.as_nanos()).unwrap_or(u64::MAX))
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock `bpf_ktime_get_ns` reads.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

fn empty_info() -> BackendInfo {
    BackendInfo {
        addr: [0; 16],
        outer_src: [0; 16],
        dst_mac: [0; 6],
        src_mac: [0; 6],
        ifindex: 0,
        mtu: 0,
        family: 0,
        state: BACKEND_DOWN,
        flags: 0,
        admin: 0,
        _pad: [0; 2],
    }
}

/// The backend address a slot holds, if it is in use.
fn info_address(info: &BackendInfo) -> Option<IpAddr> {
    match info.family {
        FAMILY_IPV4 => Some(IpAddr::from([
            info.addr[0],
            info.addr[1],
            info.addr[2],
            info.addr[3],
        ])),
        FAMILY_IPV6 => Some(IpAddr::from(info.addr)),
        _ => None,
    }
}

pub const fn forward_code(mode: ForwardMode) -> u8 {
    match mode {
        ForwardMode::Local => balancer_common::FORWARD_LOCAL,
        ForwardMode::Ipip => balancer_common::FORWARD_IPIP,
        ForwardMode::L2Dsr => balancer_common::FORWARD_L2_DSR,
    }
}

/// Makes the ACL tries hold exactly the configured rules: new rules are
/// written first and stale ones (e.g. of VIPs no longer configured, in a
/// pinned trie) removed after, so a running program never sees a gap.
fn rewrite_acls(
    v4: &mut LpmTrie<MapData, AclKeyV4, u8>,
    v6: &mut LpmTrie<MapData, AclKeyV6, u8>,
    global: &AclConfig,
    configs: &[VipConfig],
    ids: &[(u32, bool)],
) -> Result<(), ControlError> {
    let scopes = std::iter::once((balancer_common::ACL_SCOPE_GLOBAL, global))
        .chain(ids.iter().zip(configs).map(|((id, _), c)| (*id, &c.acl)));
    let mut wanted_v4: Vec<(u32, AclKeyV4, u8)> = Vec::new();
    let mut wanted_v6: Vec<(u32, AclKeyV6, u8)> = Vec::new();
    for (scope, acl) in scopes {
        let rules = acl
            .deny
            .iter()
            .map(|net| (net, ACL_DENY))
            .chain(acl.allow.iter().map(|net| (net, ACL_ALLOW)));
        for (net, verdict) in rules {
            let prefix = 32 + u32::from(net.prefix_len());
            match net {
                IpNet::V4(net) => {
                    wanted_v4.push((prefix, acl_key_v4(scope, net.network().octets()), verdict))
                }
                IpNet::V6(net) => {
                    wanted_v6.push((prefix, acl_key_v6(scope, net.network().octets()), verdict))
                }
            }
        }
    }
    sync_trie(v4, &wanted_v4, "ACL_V4")?;
    sync_trie(v6, &wanted_v6, "ACL_V6")
}

fn sync_trie<K: aya::Pod + PartialEq>(
    trie: &mut LpmTrie<MapData, K, u8>,
    wanted: &[(u32, K, u8)],
    name: &'static str,
) -> Result<(), ControlError> {
    for (prefix, data, verdict) in wanted {
        trie.insert(&Key::new(*prefix, *data), *verdict, 0)
            .map_err(map_err(name))?;
    }
    let present: Vec<Key<K>> = trie
        .keys()
        .collect::<Result<_, _>>()
        .map_err(map_err(name))?;
    for key in present {
        let (prefix, data) = (key.prefix_len(), key.data());
        if !wanted.iter().any(|(p, d, _)| *p == prefix && *d == data) {
            trie.remove(&key).map_err(map_err(name))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(mac_byte: u8, gateway: Option<&str>) -> NextHop {
        NextHop {
            ifindex: 3,
            interface: "eth1".into(),
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, mac_byte],
            src_addr: "198.18.0.2".parse().unwrap(),
            mtu: 1500,
            via_gateway: gateway.map(|g| g.parse().unwrap()),
        }
    }

    fn failure(invalidates: bool) -> HopError {
        HopError {
            message: "it failed".into(),
            invalidates,
        }
    }

    #[test]
    fn a_grace_ends_flow_grace_after_the_switch_and_zero_means_none() {
        assert_eq!(grace_deadline(5_000, Duration::from_secs(1)), 1_000_005_000);
        assert_eq!(grace_deadline(5_000, Duration::ZERO), 0);
        assert_eq!(
            grace_deadline(u64::MAX - 1, Duration::from_secs(60)),
            u64::MAX
        );
        let deadline = grace_deadline(5_000, Duration::from_millis(1));
        assert!(balancer_common::grace_active(deadline, 5_000));
        assert!(balancer_common::grace_active(deadline, deadline - 1));
        assert!(!balancer_common::grace_active(deadline, deadline));
        assert!(
            !balancer_common::grace_active(0, 0),
            "0 is no previous table, even at boot"
        );
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let first = monotonic_ns();
        assert!(first > 0);
        assert!(monotonic_ns() >= first);
    }

    #[test]
    fn a_previous_pick_is_kept_only_when_it_differs_and_is_usable() {
        use balancer_common::{BACKEND_DRAINING, NO_BACKEND, grace_keeps};
        assert!(grace_keeps(3, 5, BACKEND_UP));
        assert!(
            grace_keeps(3, 5, BACKEND_DRAINING),
            "draining keeps established flows"
        );
        assert!(
            !grace_keeps(3, 5, BACKEND_DOWN),
            "a down backend is not used"
        );
        assert!(
            !grace_keeps(5, 5, BACKEND_UP),
            "the same pick needs no grace"
        );
        assert!(!grace_keeps(NO_BACKEND, 5, BACKEND_UP));
    }

    #[test]
    fn a_resolved_hop_replaces_whatever_was_there() {
        let old = NextHopView::from(&hop(0x0b, None));
        let new = NextHopView::from(&hop(0x0c, None));
        assert_eq!(
            next_hop_after(Some(old), Ok(new.clone())),
            (Some(new.clone()), None)
        );
        assert_eq!(next_hop_after(None, Ok(new.clone())), (Some(new), None));
    }

    #[test]
    fn a_failure_that_proves_nothing_keeps_the_last_resolved_hop() {
        let old = NextHopView::from(&hop(0x0b, None));
        let (kept, error) = next_hop_after(Some(old.clone()), Err(failure(false)));
        assert_eq!(kept, Some(old));
        assert_eq!(
            error.as_deref(),
            Some("it failed; forwarding with the last resolved next hop")
        );
        // Nothing to keep: unresolved, with the reason.
        assert_eq!(
            next_hop_after(None, Err(failure(false))),
            (None, Some("it failed".into()))
        );
    }

    #[test]
    fn a_failure_that_proves_the_hop_wrong_drops_it() {
        let old = NextHopView::from(&hop(0x0b, None));
        assert_eq!(
            next_hop_after(Some(old), Err(failure(true))),
            (None, Some("it failed".into()))
        );
    }

    #[test]
    fn l2_dsr_refuses_a_hop_via_a_gateway_as_wrong() {
        let routed = hop(0x0b, Some("198.18.0.1"));
        let err = usable_hop(true, Ok(&routed)).unwrap_err();
        assert!(err.invalidates);
        assert!(err.message.contains("via 198.18.0.1"), "{}", err.message);
        assert_eq!(
            usable_hop(false, Ok(&routed)),
            Ok(NextHopView::from(&routed))
        );
    }

    #[test]
    fn a_pinned_slot_gives_back_the_hop_it_was_written_with() {
        let written = hop(0x0b, None);
        let mut info = empty_info();
        info.family = FAMILY_IPV4;
        info.addr[..4].copy_from_slice(&[198, 18, 0, 11]);
        info.flags = BACKEND_FLAG_RESOLVED | BACKEND_FLAG_HEALTHY;
        info.ifindex = written.ifindex;
        info.src_mac = written.src_mac;
        info.dst_mac = written.dst_mac;
        info.mtu = written.mtu;
        info.outer_src[..4].copy_from_slice(&[198, 18, 0, 2]);
        let view = NextHopView::from_slot(&info, |ifindex| {
            assert_eq!(ifindex, 3);
            "eth1".into()
        });
        assert_eq!(view, Some(NextHopView::from(&written)));
        // Not resolved when written: nothing to keep.
        info.flags = BACKEND_FLAG_HEALTHY;
        assert_eq!(NextHopView::from_slot(&info, |_| "eth1".into()), None);
        // An unused slot.
        assert_eq!(
            NextHopView::from_slot(&empty_info(), |_| "eth1".into()),
            None
        );
    }
}
