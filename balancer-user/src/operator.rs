//! What an operator chose for a backend or pool server through the admin API (enabled,
//! draining, disabled): the one state a VIP backend and the pool servers at its address share,
//! a leaf type the data plane, the proxy and the admin API all import.

use balancer_common::{ADMIN_DISABLED, ADMIN_DRAINING, ADMIN_ENABLED};

/// What an operator asked for a backend (`POST …/drain|enable|disable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operator {
    #[default]
    Enabled,
    Draining,
    Disabled,
}

impl Operator {
    /// The value kept in `BackendInfo::admin`.
    pub const fn code(self) -> u8 {
        match self {
            Operator::Enabled => ADMIN_ENABLED,
            Operator::Draining => ADMIN_DRAINING,
            Operator::Disabled => ADMIN_DISABLED,
        }
    }

    pub const fn from_code(code: u8) -> Operator {
        match code {
            ADMIN_DRAINING => Operator::Draining,
            ADMIN_DISABLED => Operator::Disabled,
            _ => Operator::Enabled,
        }
    }

    /// The state's word in the admin API's answers (`enabled`, `draining`, `disabled`).
    pub fn label(self) -> &'static str {
        match self {
            Operator::Enabled => "enabled",
            Operator::Draining => "draining",
            Operator::Disabled => "disabled",
        }
    }

    /// The admin API's action word: `drain`, `enable` or `disable`.
    pub fn parse_action(action: &str) -> Option<Operator> {
        match action {
            "enable" => Some(Operator::Enabled),
            "drain" => Some(Operator::Draining),
            "disable" => Some(Operator::Disabled),
            _ => None,
        }
    }
}
