//! Map names, sizes, and the key/value layouts of the VIP map.

/// Name of the XDP program on the edge host.
pub const PROGRAM_LB: &str = "balancer_lb";
/// Name of the trivial `XDP_PASS` program for the far end of veths that receive `XDP_TX`.
pub const PROGRAM_PASS: &str = "balancer_pass";

/// Map names, as declared in the eBPF object.
pub const MAP_VIPS: &str = "VIPS";
pub const MAP_VIP_STATS: &str = "VIP_STATS";
pub const MAP_REASON_STATS: &str = "REASON_STATS";

/// Default capacity of the VIP map; `xdp.max_vips` overrides it at load time.
pub const DEFAULT_MAX_VIPS: u32 = 512;
/// Hard upper bound for `xdp.max_vips` (the per-VIP stats array is `max_vips × Action::COUNT`).
pub const MAX_VIPS_LIMIT: u32 = 65_536;

pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

/// IANA protocol numbers, as found in the IPv4 protocol / IPv6 next-header field.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Forwarding modes (`VipMeta::forward`).
pub const FORWARD_LOCAL: u32 = 0;
pub const FORWARD_IPIP: u32 = 1;
pub const FORWARD_L2_DSR: u32 = 2;

/// Key of the VIP map: what a packet's destination must match to be a VIP's.
///
/// `addr` holds the address in network byte order; an IPv4 address fills the
/// first four bytes and the rest stay zero, so v4 and v6 never collide
/// (`family` differs too).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VipKey {
    pub addr: [u8; 16],
    /// Destination port, network byte order.
    pub port_be: u16,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub protocol: u8,
    /// `FAMILY_IPV4` or `FAMILY_IPV6`.
    pub family: u8,
}

/// Value of the VIP map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipMeta {
    /// Dense index of the VIP: its row in the per-VIP stats array.
    pub id: u32,
    /// One of the `FORWARD_*` modes.
    pub forward: u32,
}

impl VipKey {
    pub const fn v4(addr: [u8; 4], port: u16, protocol: u8) -> Self {
        let mut full = [0u8; 16];
        full[0] = addr[0];
        full[1] = addr[1];
        full[2] = addr[2];
        full[3] = addr[3];
        Self {
            addr: full,
            port_be: port.to_be(),
            protocol,
            family: FAMILY_IPV4,
        }
    }

    pub const fn v6(addr: [u8; 16], port: u16, protocol: u8) -> Self {
        Self {
            addr,
            port_be: port.to_be(),
            protocol,
            family: FAMILY_IPV6,
        }
    }
}

const _: () = assert!(core::mem::size_of::<VipKey>() == 20);
const _: () = assert!(core::mem::size_of::<VipMeta>() == 8);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both types are repr(C), Copy, have no padding (size-asserted above)
    // and every bit pattern is a valid value.
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::VipMeta {}
}
