//! The configuration file: TOML in the shape of DESIGN.md, parsed and validated
//! without any I/O beyond reading the file. Every error names the key and the line.

mod de;
mod error;
mod validate;

#[cfg(test)]
mod tests;

use std::{net::IpAddr, net::SocketAddr, path::Path};

use serde::Deserialize;
use toml::Spanned;

pub use error::ConfigError;

/// The whole validated configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub admin: AdminConfig,
    /// Without it the XDP data plane is not loaded.
    pub xdp: Option<XdpConfig>,
    #[serde(default, rename = "vip", deserialize_with = "de::vips")]
    pub vips: Vec<VipConfig>,
}

#[derive(Debug, Clone, Deserialize)]
// `expecting` so that `admin = 1` says "expected a table", not a Rust type name.
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct AdminConfig {
    /// Address of the admin API and metrics (loopback by default: it is not authenticated).
    #[serde(
        default = "AdminConfig::default_listen",
        deserialize_with = "de::socket_addr"
    )]
    pub listen: SocketAddr,
}

impl AdminConfig {
    fn default_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9100))
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: Self::default_listen(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct XdpConfig {
    /// The interface the edge program attaches to.
    pub interface: Spanned<String>,
    #[serde(default, deserialize_with = "de::keyword")]
    pub mode: XdpAttachMode,
    /// Capacity of the VIP map (and rows of the per-VIP counters); 1 to `MAX_VIPS_LIMIT`
    /// (checked while parsing).
    #[serde(
        default = "XdpConfig::default_max_vips",
        deserialize_with = "de::max_vips"
    )]
    pub max_vips: Spanned<u32>,
}

impl XdpConfig {
    fn default_max_vips() -> Spanned<u32> {
        Spanned::new(0..0, balancer_common::DEFAULT_MAX_VIPS)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum XdpAttachMode {
    /// Driver (native) mode, falling back to generic (skb) mode if the driver refuses.
    #[default]
    Auto,
    Driver,
    Skb,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct VipConfig {
    pub name: Spanned<String>,
    #[serde(deserialize_with = "de::ip_addr")]
    pub address: Spanned<IpAddr>,
    /// 1 to 65535 (checked while parsing).
    #[serde(deserialize_with = "de::port")]
    pub port: Spanned<u16>,
    #[serde(deserialize_with = "de::keyword")]
    pub protocol: Protocol,
    #[serde(deserialize_with = "de::spanned_keyword")]
    pub forward: Spanned<ForwardMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub const fn ip_protocol(self) -> u8 {
        match self {
            Protocol::Tcp => balancer_common::IPPROTO_TCP,
            Protocol::Udp => balancer_common::IPPROTO_UDP,
        }
    }
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardMode {
    /// Encapsulate towards a backend (IPIP / IPv6-in-IPv6).
    Ipip,
    /// Rewrite the destination MAC to a backend's on the same L2 segment.
    L2Dsr,
    /// Pass to this host's own stack (the L7 proxy).
    Local,
}

impl ForwardMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ForwardMode::Ipip => "ipip",
            ForwardMode::L2Dsr => "l2-dsr",
            ForwardMode::Local => "local",
        }
    }
}

impl Config {
    /// Parses and validates a config from TOML text. `origin` names the source
    /// (usually the file path) in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(deserializer)
            .map_err(|err| ConfigError::from_toml(err, text, origin))?;
        validate::validate(&config).map_err(|err| err.located(text, origin))?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|err| ConfigError::unreadable(&origin, &err))?;
        Config::parse(&text, &origin)
    }
}
