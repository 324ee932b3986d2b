//! Loads the edge program with map sizes from the config, attaches it, and
//! keeps aya-log's records flowing into `tracing`.

use std::net::IpAddr;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray},
    programs::{ProgramError, Xdp, XdpMode, xdp::XdpLinkId},
};
use aya_log::EbpfLogger;
use balancer_common::{
    Action, FORWARD_IPIP, FORWARD_L2_DSR, FORWARD_LOCAL, MAP_REASON_STATS, MAP_VIP_STATS, MAP_VIPS,
    PROGRAM_LB, PROGRAM_PASS, VipKey, VipMeta,
};
use tokio::io::unix::AsyncFd;

use super::{EBPF_OBJECT, StatsReader, VipInfo};
use crate::config::{ForwardMode, VipConfig, XdpAttachMode, XdpConfig};

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

/// A loaded and attached edge program. Dropping it detaches the program.
pub struct Dataplane {
    ebpf: Ebpf,
    link: Option<XdpLinkId>,
    interface: String,
    mode: AttachedMode,
    log_task: tokio::task::JoinHandle<()>,
}

impl Dataplane {
    /// Loads the program, writes the VIPs and attaches to `xdp.interface`.
    /// Must run inside a tokio runtime (eBPF log records are read by a task).
    pub fn start(
        xdp: &XdpConfig,
        vips: &[VipConfig],
    ) -> Result<(Dataplane, StatsReader), DataplaneError> {
        let max_vips = *xdp.max_vips.get_ref();
        let log_level = ebpf_log_level();
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(MAP_VIPS, max_vips)
            .map_max_entries(MAP_VIP_STATS, max_vips * Action::COUNT)
            .override_global(aya_log::LEVEL, &log_level, true)
            .load(EBPF_OBJECT)?;
        let log_task = spawn_log_reader(&mut ebpf)?;

        let vip_infos = write_vips(&mut ebpf, vips)?;
        let stats = StatsReader::new(
            PerCpuArray::try_from(take_map(&mut ebpf, MAP_VIP_STATS)?).map_err(|source| {
                DataplaneError::Map {
                    name: MAP_VIP_STATS,
                    source,
                }
            })?,
            PerCpuArray::try_from(take_map(&mut ebpf, MAP_REASON_STATS)?).map_err(|source| {
                DataplaneError::Map {
                    name: MAP_REASON_STATS,
                    source,
                }
            })?,
            vip_infos,
        );

        let interface = xdp.interface.get_ref().clone();
        let program = xdp_program(&mut ebpf, PROGRAM_LB)?;
        program.load().map_err(|source| DataplaneError::Program {
            name: PROGRAM_LB,
            source,
        })?;
        let (link, mode) = attach(program, &interface, xdp.mode)?;
        tracing::info!(%interface, mode = mode.as_str(), vips = vips.len(), "XDP program {PROGRAM_LB} attached");
        let dataplane = Dataplane {
            ebpf,
            link: Some(link),
            interface,
            mode,
            log_task,
        };
        Ok((dataplane, stats))
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    pub fn mode(&self) -> AttachedMode {
        self.mode
    }

    /// Detaches the program from the interface now (dropping does the same, silently).
    pub fn detach(&mut self) -> Result<(), DataplaneError> {
        let Some(link) = self.link.take() else {
            return Ok(());
        };
        let program = xdp_program(&mut self.ebpf, PROGRAM_LB)?;
        program
            .detach(link)
            .map_err(|source| DataplaneError::Program {
                name: PROGRAM_LB,
                source,
            })?;
        tracing::info!(interface = %self.interface, "XDP program {PROGRAM_LB} detached");
        Ok(())
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.log_task.abort();
    }
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

/// Fills the VIP map; VIP ids are their positions in the config.
fn write_vips(ebpf: &mut Ebpf, vips: &[VipConfig]) -> Result<Vec<VipInfo>, DataplaneError> {
    let map_err = |source| DataplaneError::Map {
        name: MAP_VIPS,
        source,
    };
    let mut map: HashMap<&mut MapData, VipKey, VipMeta> = HashMap::try_from(
        ebpf.map_mut(MAP_VIPS)
            .ok_or(DataplaneError::Missing(MAP_VIPS))?,
    )
    .map_err(map_err)?;
    let mut infos = Vec::with_capacity(vips.len());
    for (id, vip) in vips.iter().enumerate() {
        let id = u32::try_from(id).expect("VIP count is bounded by max_vips");
        map.insert(
            vip_key(vip),
            VipMeta {
                id,
                forward: forward_code(*vip.forward.get_ref()),
            },
            0,
        )
        .map_err(map_err)?;
        infos.push(VipInfo {
            id,
            name: vip.name.get_ref().clone(),
            address: *vip.address.get_ref(),
            port: *vip.port.get_ref(),
            protocol: vip.protocol,
            forward: *vip.forward.get_ref(),
        });
    }
    Ok(infos)
}

pub fn vip_key(vip: &VipConfig) -> VipKey {
    let port = *vip.port.get_ref();
    let protocol = vip.protocol.ip_protocol();
    match *vip.address.get_ref() {
        IpAddr::V4(v4) => VipKey::v4(v4.octets(), port, protocol),
        IpAddr::V6(v6) => VipKey::v6(v6.octets(), port, protocol),
    }
}

const fn forward_code(mode: ForwardMode) -> u32 {
    match mode {
        ForwardMode::Local => FORWARD_LOCAL,
        ForwardMode::Ipip => FORWARD_IPIP,
        ForwardMode::L2Dsr => FORWARD_L2_DSR,
    }
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
