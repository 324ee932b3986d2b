//! What an operator chose for a backend or pool server through the admin API (enabled,
//! draining, disabled): the one state a VIP backend and the pool servers at its address share,
//! a leaf type the data plane, the proxy and the admin API all import. Also what that choice
//! and the health add up to ([`Service`]): the one rule both the VIP maps and the L7 pools
//! apply.

use balancer_common::{
    ADMIN_DISABLED, ADMIN_DRAINING, ADMIN_ENABLED, BACKEND_DOWN, BACKEND_DRAINING, BACKEND_UP,
};

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

    /// The state named by its [`label`](Operator::label) (the operator state file's words).
    pub fn from_label(label: &str) -> Option<Operator> {
        [Operator::Enabled, Operator::Draining, Operator::Disabled]
            .into_iter()
            .find(|operator| operator.label() == label)
    }

    /// What `healthy` (the checks' verdict, whatever the operator chose) and this choice add
    /// up to: down when unhealthy or disabled, draining when drained, else up.
    pub const fn service(self, healthy: bool) -> Service {
        match (healthy, self) {
            (false, _) | (_, Operator::Disabled) => Service::Down,
            (true, Operator::Draining) => Service::Draining,
            (true, Operator::Enabled) => Service::Up,
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

/// Whether a VIP backend or a pool server is served, from [`Operator::service`]. The data
/// plane keeps it as `BackendInfo::state`; the pools as what a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Takes new flows and sessions.
    Up,
    /// Keeps the flows and sticky sessions it has, takes no new ones.
    Draining,
    /// Takes nothing: existing flows pick another backend.
    Down,
}

impl Service {
    /// Whether a new flow or session may go to it.
    pub const fn takes_new(self) -> bool {
        matches!(self, Service::Up)
    }

    /// Whether a flow or sticky session it already has may stay.
    pub const fn takes_existing(self) -> bool {
        !matches!(self, Service::Down)
    }

    /// The value kept in `BackendInfo::state`.
    pub const fn code(self) -> u8 {
        match self {
            Service::Up => BACKEND_UP,
            Service::Draining => BACKEND_DRAINING,
            Service::Down => BACKEND_DOWN,
        }
    }

    /// Its word in `/api/state` and the metrics' labels (`up`, `draining`, `down`).
    pub const fn label(self) -> &'static str {
        match self {
            Service::Up => "up",
            Service::Draining => "draining",
            Service::Down => "down",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_and_operator_add_up_to_one_service() {
        use Operator::*;
        let cases = [
            // (healthy, operator, service, (takes_new, takes_existing), BackendInfo::state)
            (true, Enabled, Service::Up, (true, true), BACKEND_UP),
            (
                true,
                Draining,
                Service::Draining,
                (false, true),
                BACKEND_DRAINING,
            ),
            (true, Disabled, Service::Down, (false, false), BACKEND_DOWN),
            (false, Enabled, Service::Down, (false, false), BACKEND_DOWN),
            (false, Draining, Service::Down, (false, false), BACKEND_DOWN),
            (false, Disabled, Service::Down, (false, false), BACKEND_DOWN),
        ];
        for (healthy, operator, service, takes, code) in cases {
            let got = operator.service(healthy);
            assert_eq!(got, service, "{operator:?} healthy={healthy}");
            assert_eq!((got.takes_new(), got.takes_existing()), takes, "{got:?}");
            assert_eq!(got.code(), code, "{got:?}");
        }
        assert_eq!(Service::Up.label(), "up");
        assert_eq!(Service::Draining.label(), "draining");
        assert_eq!(Service::Down.label(), "down");
    }

    #[test]
    fn codes_labels_and_actions_name_each_state() {
        for operator in [Operator::Enabled, Operator::Draining, Operator::Disabled] {
            assert_eq!(Operator::from_code(operator.code()), operator);
            assert_eq!(Operator::from_label(operator.label()), Some(operator));
        }
        assert_eq!(Operator::from_label("asleep"), None);
        assert_eq!(
            Operator::from_label("drain"),
            None,
            "an action is not a state"
        );
        assert_eq!(Operator::parse_action("drain"), Some(Operator::Draining));
        assert_eq!(Operator::parse_action("restart"), None);
    }
}
