//! The keys and flag bits the data plane's maps are written under, derived from the config:
//! a VIP's `VipKey` and an ACL scope's `VIP_FLAG_ACL_*` bits. Shared by the loader and the
//! control side, so neither imports the other for them.

use std::net::IpAddr;

use balancer_common::{VIP_FLAG_ACL_ALLOW_LIST, VIP_FLAG_ACL_RULES, VipKey};

use crate::config::{AclConfig, VipConfig};

/// The `MAP_VIPS` key of a configured VIP.
pub fn vip_key(vip: &VipConfig) -> VipKey {
    let port = *vip.port.get_ref();
    let protocol = vip.protocol.ip_protocol();
    match *vip.address.get_ref() {
        IpAddr::V4(v4) => VipKey::v4(v4.octets(), port, protocol),
        IpAddr::V6(v6) => VipKey::v6(v6.octets(), port, protocol),
    }
}

/// `VIP_FLAG_ACL_*` bits for a scope's rules (the global scope's go into a global).
pub fn acl_flags(acl: &AclConfig) -> u8 {
    let mut flags = 0;
    if !acl.allow.is_empty() || !acl.deny.is_empty() {
        flags |= VIP_FLAG_ACL_RULES;
    }
    if !acl.allow.is_empty() {
        flags |= VIP_FLAG_ACL_ALLOW_LIST;
    }
    flags
}
