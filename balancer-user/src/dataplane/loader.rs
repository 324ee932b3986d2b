//! Loads the edge program with map sizes from the config, attaches it, and
//! keeps aya-log's records flowing into `tracing`.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapError},
    programs::{
        ProgramError, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use aya_log::EbpfLogger;
use balancer_common::{
    Action, AddrKey, DecapReason, FAMILY_IPV4, FAMILY_IPV6, FlowEvent, FlowHashKey, FlowSet,
    GLOBAL_ACL_FLAGS, GLOBAL_FLOW_SETS, GLOBAL_TABLE_SIZE, MAP_ACL_V4, MAP_ACL_V6,
    MAP_BACKEND_STATS, MAP_BACKENDS, MAP_DECAP_ADDRS, MAP_DECAP_STATS, MAP_FLOW_HASH_KEY,
    MAP_FLOW_STATS, MAP_FLOWS, MAP_GRACE, MAP_MAGLEV, MAP_REASON_STATS, MAP_TX_PORTS,
    MAP_VIP_STATS, MAP_VIPS, MAX_TX_PORTS, PROGRAM_DECAP, PROGRAM_LB, PROGRAM_PASS, PacketReason,
    flow_sets,
};
use tokio::io::unix::AsyncFd;

use super::{
    EBPF_OBJECT, StatsReader,
    control::{Control, ControlMaps},
    keys::acl_flags,
    nexthop::Resolved,
};
use crate::config::{VipConfig, XdpAttachMode, XdpConfig};

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the eBPF object failed (needs root or CAP_BPF + CAP_NET_ADMIN): {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the eBPF object has no {0}: it does not match this binary")]
    Missing(&'static str),
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        source: ProgramError,
    },
    #[error("attaching XDP to interface {interface} in {mode} mode failed: {source}")]
    Attach {
        interface: String,
        mode: &'static str,
        source: ProgramError,
    },
    #[error("BPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("routing eBPF log records failed: {0}")]
    Log(String),
    #[error("xdp.pin_path: {path}: {message}")]
    Pin { path: PathBuf, message: String },
    #[error("interface {0:?} does not exist")]
    NoInterface(String),
    #[error(transparent)]
    Control(#[from] super::control::ControlError),
}

/// The mode the kernel accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachedMode {
    Driver,
    Skb,
}

impl AttachedMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            AttachedMode::Driver => "driver",
            AttachedMode::Skb => "skb",
        }
    }
}

/// How the edge program is attached.
enum Attachment {
    /// Owned by this process: detached when it exits.
    Owned(XdpLinkId),
    /// A bpf_link pinned under `xdp.pin_path`: stays attached (and keeps
    /// forwarding with the pinned maps) while the process restarts.
    Pinned {
        // Held for the process's lifetime; the pin, not this handle, keeps the link.
        _link: PinnedLink,
    },
    Detached,
}

/// A loaded and attached edge program.
pub struct Dataplane {
    ebpf: Ebpf,
    attachment: Attachment,
    interface: String,
    mode: AttachedMode,
    log_task: tokio::task::JoinHandle<()>,
}

/// The maps of the edge program, the names they are pinned under, and the
/// size each gets from the config.
fn map_sizes(xdp: &XdpConfig) -> Vec<(&'static str, u32)> {
    let max_vips = *xdp.max_vips.get_ref();
    vec![
        (MAP_VIPS, max_vips),
        (MAP_VIP_STATS, max_vips * Action::COUNT),
        (MAP_REASON_STATS, PacketReason::COUNT),
        (MAP_BACKENDS, max_vips * xdp.max_backends),
        (MAP_BACKEND_STATS, max_vips * xdp.max_backends),
        (MAP_MAGLEV, max_vips * 2 * xdp.table_size),
        (MAP_FLOWS, flow_sets(xdp.max_connections)),
        (MAP_FLOW_HASH_KEY, 1),
        (MAP_FLOW_STATS, FlowEvent::COUNT),
        (MAP_ACL_V4, xdp.max_acl_rules),
        (MAP_ACL_V6, xdp.max_acl_rules),
        (MAP_TX_PORTS, MAX_TX_PORTS),
        (MAP_GRACE, max_vips),
    ]
}

/// File name of the pinned bpf_link of the edge program.
const PINNED_LINK: &str = "link";

impl Dataplane {
    /// Loads the program (reusing pinned maps when `xdp.pin_path` has them),
    /// writes the VIPs, backends (with `hops`, the next hops resolved just before) and
    /// tables, and only then attaches to `xdp.interface` (replacing a pinned program
    /// atomically). Must run inside a tokio runtime (eBPF log records are read by a task).
    pub fn start(
        xdp: &XdpConfig,
        vips: &[VipConfig],
        hops: &[Resolved],
    ) -> Result<(Dataplane, Control, StatsReader), DataplaneError> {
        let interface = xdp.interface.get_ref().clone();
        let ifindex = if_index(&interface)?;
        let sizes = map_sizes(xdp);
        let pin_paths: Vec<(&'static str, PathBuf)> = match &xdp.pin_path {
            Some(dir) => {
                prepare_pin_dir(dir, &sizes)?;
                sizes
                    .iter()
                    .map(|(name, _)| (*name, dir.join(name)))
                    .collect()
            }
            None => Vec::new(),
        };
        let log_level = ebpf_log_level();
        let acl_global = acl_flags(&xdp.acl);
        let mut loader = EbpfLoader::new();
        for (name, size) in &sizes {
            loader.map_max_entries(name, *size);
        }
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .override_global(aya_log::LEVEL, &log_level, true)
            .override_global(GLOBAL_TABLE_SIZE, &xdp.table_size, true)
            .override_global(GLOBAL_FLOW_SETS, &flow_sets(xdp.max_connections), true)
            .override_global(GLOBAL_ACL_FLAGS, &acl_global, true)
            .load(EBPF_OBJECT)?;
        let log_task = spawn_log_reader(&mut ebpf)?;
        ensure_flow_hash_key(&mut ebpf)?;

        let maps = ControlMaps {
            vips: typed(&mut ebpf, MAP_VIPS)?,
            backends: typed(&mut ebpf, MAP_BACKENDS)?,
            maglev: typed(&mut ebpf, MAP_MAGLEV)?,
            acl_v4: typed(&mut ebpf, MAP_ACL_V4)?,
            acl_v6: typed(&mut ebpf, MAP_ACL_V6)?,
            tx_ports: typed(&mut ebpf, MAP_TX_PORTS)?,
            grace: typed(&mut ebpf, MAP_GRACE)?,
        };
        let control = Control::new(maps, xdp, vips, ifindex, hops)?;
        let stats = StatsReader::new(
            typed(&mut ebpf, MAP_VIP_STATS)?,
            typed(&mut ebpf, MAP_REASON_STATS)?,
            typed(&mut ebpf, MAP_BACKEND_STATS)?,
            typed(&mut ebpf, MAP_FLOW_STATS)?,
        );

        let program = xdp_program(&mut ebpf, PROGRAM_LB)?;
        program.load().map_err(lb_error)?;
        let (attachment, mode) = match &xdp.pin_path {
            Some(dir) => attach_pinned(program, &interface, xdp.mode, &dir.join(PINNED_LINK))?,
            None => {
                let (link, mode) = attach(program, &interface, xdp.mode)?;
                (Attachment::Owned(link), mode)
            }
        };
        tracing::info!(%interface, mode = mode.as_str(), vips = vips.len(), "XDP program {PROGRAM_LB} attached");
        let dataplane = Dataplane {
            ebpf,
            attachment,
            interface,
            mode,
            log_task,
        };
        Ok((dataplane, control, stats))
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    pub fn mode(&self) -> AttachedMode {
        self.mode
    }

    pub fn is_pinned(&self) -> bool {
        matches!(self.attachment, Attachment::Pinned { .. })
    }

    /// Stops this process's part: an owned program is detached; a pinned one
    /// stays attached with its maps so forwarding goes on until the next
    /// `balancer run` takes over (or `balancer unload` removes it).
    pub fn shut_down(&mut self) -> Result<(), DataplaneError> {
        match std::mem::replace(&mut self.attachment, Attachment::Detached) {
            Attachment::Owned(link) => {
                let program = xdp_program(&mut self.ebpf, PROGRAM_LB)?;
                program
                    .detach(link)
                    .map_err(|source| DataplaneError::Program {
                        name: PROGRAM_LB,
                        source,
                    })?;
                tracing::info!(interface = %self.interface, "XDP program {PROGRAM_LB} detached");
            }
            Attachment::Pinned { .. } => tracing::info!(
                interface = %self.interface,
                "XDP program {PROGRAM_LB} stays attached (pinned): flows keep forwarding until the next start or `balancer unload`"
            ),
            Attachment::Detached => {}
        }
        Ok(())
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.log_task.abort();
    }
}

fn lb_error(source: ProgramError) -> DataplaneError {
    DataplaneError::Program {
        name: PROGRAM_LB,
        source,
    }
}

/// Refuses pinned maps whose sizes differ from what the config asks, or whose
/// entries differ from this build's layout: aya would reuse them as they are,
/// and slot arithmetic (or the verifier) would go wrong.
fn prepare_pin_dir(dir: &Path, sizes: &[(&'static str, u32)]) -> Result<(), DataplaneError> {
    std::fs::create_dir_all(dir).map_err(|err| DataplaneError::Pin {
        path: dir.to_path_buf(),
        message: err.to_string(),
    })?;
    for (name, size) in sizes {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = aya::maps::MapInfo::from_pin(&path).map_err(|err| DataplaneError::Pin {
            path: path.clone(),
            message: err.to_string(),
        })?;
        if let Some(value_size) = value_size(name)
            && info.value_size() != value_size
        {
            return Err(DataplaneError::Pin {
                path,
                message: format!(
                    "the pinned map's entries are {} bytes but this balancer's are {value_size} \
                     (pinned by a balancer with another layout); run `balancer unload` first \
                     (that drops established flows)",
                    info.value_size()
                ),
            });
        }
        if info.max_entries() != *size && counts_by_build(name) {
            // Its size follows this build's list of reasons or events, not the config: a
            // balancer that counts more starts these counters afresh rather than refusing.
            std::fs::remove_file(&path).map_err(|err| DataplaneError::Pin {
                path: path.clone(),
                message: err.to_string(),
            })?;
            tracing::info!(path = %path.display(), "pinned counters of another build removed");
            continue;
        }
        if info.max_entries() != *size {
            return Err(DataplaneError::Pin {
                path,
                message: format!(
                    "the pinned map has {} entries but the config asks for {size}; restore the \
                     sizes in [xdp] or run `balancer unload` first (that drops established flows)",
                    info.max_entries()
                ),
            });
        }
    }
    // A table without its hash key was filled by an older balancer, whose unkeyed
    // hash put every flow in another set.
    if dir.join(MAP_FLOWS).exists() && !dir.join(MAP_FLOW_HASH_KEY).exists() {
        return Err(DataplaneError::Pin {
            path: dir.join(MAP_FLOWS),
            message: format!(
                "the pinned connection table has no {MAP_FLOW_HASH_KEY} beside it (pinned by a \
                 balancer with another layout); run `balancer unload` first (that drops \
                 established flows)"
            ),
        });
    }
    Ok(())
}

/// Counter maps with one entry per `PacketReason` or `FlowEvent` of this build.
fn counts_by_build(map: &str) -> bool {
    map == MAP_REASON_STATS || map == MAP_FLOW_STATS
}

/// Entry size of the pinned maps whose layout has changed between releases.
fn value_size(map: &str) -> Option<u32> {
    match map {
        MAP_FLOWS => Some(std::mem::size_of::<FlowSet>() as u32),
        MAP_FLOW_HASH_KEY => Some(std::mem::size_of::<FlowHashKey>() as u32),
        _ => None,
    }
}

/// Gives a new connection table its random hash key; a pinned table keeps the
/// key its flows were placed with. Runs before the program is attached.
fn ensure_flow_hash_key(ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
    let name = MAP_FLOW_HASH_KEY;
    let map = ebpf.map_mut(name).ok_or(DataplaneError::Missing(name))?;
    let mut keys = Array::<_, FlowHashKey>::try_from(map)
        .map_err(|source| DataplaneError::Map { name, source })?;
    let current = keys
        .get(&0, 0)
        .map_err(|source| DataplaneError::Map { name, source })?;
    if current.is_unset() {
        let secret = FlowHashKey::random();
        keys.set(0, secret, 0)
            .map_err(|source| DataplaneError::Map { name, source })?;
    }
    Ok(())
}

/// Takes over the pinned bpf_link if there is one (atomic program replacement:
/// no packet sees no program), else attaches and pins a new link.
fn attach_pinned(
    program: &mut Xdp,
    interface: &str,
    mode: XdpAttachMode,
    link_path: &Path,
) -> Result<(Attachment, AttachedMode), DataplaneError> {
    let pin_err = |message: String| DataplaneError::Pin {
        path: link_path.to_path_buf(),
        message,
    };
    if link_path.exists() {
        let pinned = PinnedLink::from_pin(link_path).map_err(|err| pin_err(err.to_string()))?;
        let link =
            XdpLink::try_from(FdLink::from(pinned)).map_err(|err| pin_err(err.to_string()))?;
        let id = program.attach_to_link(link).map_err(lb_error)?;
        let link = program.take_link(id).map_err(lb_error)?;
        let fd_link = FdLink::try_from(link).map_err(|err| pin_err(err.to_string()))?;
        // Still pinned at the same path; keep a handle without re-pinning.
        drop(fd_link);
        let pinned = PinnedLink::from_pin(link_path).map_err(|err| pin_err(err.to_string()))?;
        tracing::info!(path = %link_path.display(), "took over the pinned XDP link (program replaced atomically)");
        // The mode of an existing link cannot change; report what was asked.
        let mode = match mode {
            XdpAttachMode::Skb => AttachedMode::Skb,
            _ => AttachedMode::Driver,
        };
        return Ok((Attachment::Pinned { _link: pinned }, mode));
    }
    let (id, mode) = attach(program, interface, mode)?;
    let link = program.take_link(id).map_err(lb_error)?;
    let fd_link = FdLink::try_from(link).map_err(|err| {
        pin_err(format!(
            "the kernel attached without a bpf_link, which cannot be pinned: {err}"
        ))
    })?;
    let pinned = fd_link
        .pin(link_path)
        .map_err(|err| pin_err(err.to_string()))?;
    Ok((Attachment::Pinned { _link: pinned }, mode))
}

/// Removes what `xdp.pin_path` holds (the link, which detaches the program,
/// and the maps, which drops the connection table). Returns what was removed.
pub fn unload(dir: &Path, xdp: &XdpConfig) -> Result<Vec<PathBuf>, DataplaneError> {
    let mut removed = Vec::new();
    let names =
        std::iter::once(PINNED_LINK).chain(map_sizes(xdp).into_iter().map(|(name, _)| name));
    for name in names {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(DataplaneError::Pin {
                    path,
                    message: err.to_string(),
                });
            }
        }
    }
    // Only our own files were there: an empty directory goes too.
    let _ = std::fs::remove_dir(dir);
    Ok(removed)
}

fn typed<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    T::try_from(take_map(ebpf, name)?).map_err(|source| DataplaneError::Map { name, source })
}

pub fn if_index(interface: &str) -> Result<u32, DataplaneError> {
    let name = std::ffi::CString::new(interface)
        .map_err(|_| DataplaneError::NoInterface(interface.to_string()))?;
    // SAFETY: a NUL-terminated string that lives across the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(DataplaneError::NoInterface(interface.to_string()));
    }
    Ok(index)
}

fn attach(
    program: &mut Xdp,
    interface: &str,
    mode: XdpAttachMode,
) -> Result<(XdpLinkId, AttachedMode), DataplaneError> {
    let attach_in = |program: &mut Xdp, mode: AttachedMode| {
        let flags = match mode {
            AttachedMode::Driver => XdpMode::Driver,
            AttachedMode::Skb => XdpMode::Skb,
        };
        program
            .attach(interface, flags)
            .map(|link| (link, mode))
            .map_err(|source| DataplaneError::Attach {
                interface: interface.to_string(),
                mode: mode.as_str(),
                source,
            })
    };
    match mode {
        XdpAttachMode::Driver => attach_in(program, AttachedMode::Driver),
        XdpAttachMode::Skb => attach_in(program, AttachedMode::Skb),
        XdpAttachMode::Auto => attach_in(program, AttachedMode::Driver).or_else(|err| {
            tracing::warn!(%interface, "driver-mode XDP refused ({err}); falling back to skb (generic) mode");
            attach_in(program, AttachedMode::Skb)
        }),
    }
}

/// The named XDP program of the loaded object.
fn xdp_program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, DataplaneError> {
    ebpf.program_mut(name)
        .ok_or(DataplaneError::Missing(name))?
        .try_into()
        .map_err(|source| DataplaneError::Program { name, source })
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, DataplaneError> {
    ebpf.take_map(name).ok_or(DataplaneError::Missing(name))
}

/// The eBPF side logs only what the `balancer_ebpf` tracing target would show.
fn ebpf_log_level() -> u8 {
    let level = if tracing::enabled!(target: "balancer_ebpf", tracing::Level::DEBUG) {
        aya_log::Level::Debug
    } else if tracing::enabled!(target: "balancer_ebpf", tracing::Level::INFO) {
        aya_log::Level::Info
    } else {
        aya_log::Level::Warn
    };
    level as u8
}

/// aya-log records go through the `log` facade, which `tracing-log` bridges into tracing.
fn spawn_log_reader(ebpf: &mut Ebpf) -> Result<tokio::task::JoinHandle<()>, DataplaneError> {
    let logger = EbpfLogger::init(ebpf).map_err(|err| DataplaneError::Log(err.to_string()))?;
    // SAFETY: the logger owns its ring buffer's fd and keeps it open, unchanged,
    // for as long as the AsyncFd that owns the logger lives.
    let mut logger =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
            .map_err(|err| DataplaneError::Log(err.to_string()))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok(mut guard) = logger.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}

/// The trivial `XDP_PASS` program attached to an interface, for as long as this value lives.
/// Veth peers need one so that frames sent back with `XDP_TX` are delivered.
pub struct PassProgram {
    _ebpf: Ebpf,
}

impl PassProgram {
    pub fn attach(interface: &str) -> Result<PassProgram, DataplaneError> {
        let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT)?;
        let program = xdp_program(&mut ebpf, PROGRAM_PASS)?;
        program.load().map_err(|source| DataplaneError::Program {
            name: PROGRAM_PASS,
            source,
        })?;
        attach(program, interface, XdpAttachMode::Auto)?;
        Ok(PassProgram { _ebpf: ebpf })
    }
}

/// `balancer_decap` on a backend's interface, with the addresses it accepts as
/// outer destinations. Detached when dropped.
pub struct DecapProgram {
    ebpf: Ebpf,
    link: Option<XdpLinkId>,
    pub mode: AttachedMode,
}

impl DecapProgram {
    pub fn attach(
        interface: &str,
        mode: XdpAttachMode,
        addresses: &[IpAddr],
    ) -> Result<DecapProgram, DataplaneError> {
        let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT)?;
        {
            let map_err = |source| DataplaneError::Map {
                name: MAP_DECAP_ADDRS,
                source,
            };
            let mut map: aya::maps::HashMap<&mut aya::maps::MapData, AddrKey, u8> =
                aya::maps::HashMap::try_from(
                    ebpf.map_mut(MAP_DECAP_ADDRS)
                        .ok_or(DataplaneError::Missing(MAP_DECAP_ADDRS))?,
                )
                .map_err(map_err)?;
            for address in addresses {
                map.insert(addr_key(*address), 1, 0).map_err(map_err)?;
            }
        }
        let program = xdp_program(&mut ebpf, PROGRAM_DECAP)?;
        program.load().map_err(|source| DataplaneError::Program {
            name: PROGRAM_DECAP,
            source,
        })?;
        let (link, mode) = attach(program, interface, mode)?;
        Ok(DecapProgram {
            ebpf,
            link: Some(link),
            mode,
        })
    }

    /// Packets and bytes per `DecapReason`, summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(DecapReason, balancer_common::Counter)>, DataplaneError> {
        let map: aya::maps::PerCpuArray<&aya::maps::MapData, balancer_common::Counter> =
            aya::maps::PerCpuArray::try_from(
                self.ebpf
                    .map(MAP_DECAP_STATS)
                    .ok_or(DataplaneError::Missing(MAP_DECAP_STATS))?,
            )
            .map_err(|source| DataplaneError::Map {
                name: MAP_DECAP_STATS,
                source,
            })?;
        DecapReason::ALL
            .iter()
            .map(|reason| {
                let mut total = balancer_common::Counter::default();
                map.get(&(*reason as u32), 0)
                    .map_err(|source| DataplaneError::Map {
                        name: MAP_DECAP_STATS,
                        source,
                    })?
                    .iter()
                    .for_each(|c| total.add(c));
                Ok((*reason, total))
            })
            .collect()
    }

    pub fn detach(&mut self) -> Result<(), DataplaneError> {
        if let Some(link) = self.link.take() {
            xdp_program(&mut self.ebpf, PROGRAM_DECAP)?
                .detach(link)
                .map_err(|source| DataplaneError::Program {
                    name: PROGRAM_DECAP,
                    source,
                })?;
        }
        Ok(())
    }
}

fn addr_key(address: IpAddr) -> AddrKey {
    let mut key = AddrKey {
        addr: [0; 16],
        family: FAMILY_IPV4,
        _pad: [0; 3],
    };
    match address {
        IpAddr::V4(v4) => key.addr[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => {
            key.addr = v6.octets();
            key.family = FAMILY_IPV6;
        }
    }
    key
}
