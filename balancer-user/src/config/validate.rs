//! Rules a config must follow beyond its types.

use std::collections::HashMap;

use super::{Config, ForwardMode, error::Invalid};

pub(super) fn validate(config: &Config) -> Result<(), Invalid> {
    if let Some(xdp) = &config.xdp {
        let interface = xdp.interface.get_ref();
        if !is_valid_interface_name(interface) {
            return Err(Invalid::at(
                "xdp.interface",
                &xdp.interface,
                format!(
                    "{interface:?} is not a valid interface name (1 to 15 characters, not \".\" or \"..\", no '/', ':' or whitespace)"
                ),
            ));
        }
        // The range of max_vips is checked while parsing (`de::max_vips`).
        let max_vips = *xdp.max_vips.get_ref();
        if config.vips.len() > max_vips as usize {
            let last = &config.vips[max_vips as usize];
            return Err(Invalid::at(
                format!("vip[{max_vips}]"),
                &last.name,
                format!(
                    "{} VIPs are configured but xdp.max_vips is {max_vips}",
                    config.vips.len()
                ),
            ));
        }
    } else if let Some(vip) = config.vips.first() {
        return Err(Invalid::at(
            "vip[0]",
            &vip.name,
            "VIPs need the XDP data plane: add an [xdp] section with the interface",
        ));
    }

    let mut names = HashMap::new();
    let mut services = HashMap::new();
    for (index, vip) in config.vips.iter().enumerate() {
        let name = vip.name.get_ref();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(Invalid::at(
                format!("vip[{index}].name"),
                &vip.name,
                format!(
                    "{name:?} must be non-empty and use only letters, digits, '-', '_' and '.'"
                ),
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
                    config.vips[first].name.get_ref()
                ),
            ));
        }
        let forward = *vip.forward.get_ref();
        if forward != ForwardMode::Local {
            return Err(Invalid::at(
                format!("vip[{index}].forward"),
                &vip.forward,
                format!(
                    "\"{}\" forwarding is not available in this version; use \"local\"",
                    forward.as_str()
                ),
            ));
        }
    }
    Ok(())
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
