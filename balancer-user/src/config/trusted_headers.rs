//! The forwarded-header vocabulary of the config (`trusted_headers`, `underscore_headers`):
//! which headers a listener may trust, the group each belongs to, and what to do with
//! underscored header names. Owned by the config; `headers` applies them to requests.

/// The equivalence groups of forwarded headers: members of one group say the same thing, so a
/// listener trusts at most one member per group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HeaderGroup {
    /// The client's address.
    Client,
    /// The scheme the client used (http or https).
    Scheme,
    /// The host the client asked for.
    Host,
    /// The port the client connected to.
    Port,
    /// The path prefix a proxy in front stripped.
    Prefix,
}

/// A forwarded header a listener may trust (`trusted_headers`). RFC 7239 `Forwarded` carries
/// three groups; `"Forwarded"` trusts all three of its parameters, `"Forwarded:for"`,
/// `"Forwarded:proto"` and `"Forwarded:host"` one each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrustedHeader {
    XForwardedFor,
    XRealIp,
    XClientIp,
    ForwardedFor,
    XForwardedProto,
    XForwardedScheme,
    XForwardedSsl,
    XForwardedHttps,
    XHttps,
    XScheme,
    ForwardedProto,
    XForwardedHost,
    ForwardedHost,
    XForwardedPort,
    XForwardedPrefix,
}

impl TrustedHeader {
    pub const ALL: [TrustedHeader; 15] = [
        TrustedHeader::XForwardedFor,
        TrustedHeader::XRealIp,
        TrustedHeader::XClientIp,
        TrustedHeader::ForwardedFor,
        TrustedHeader::XForwardedProto,
        TrustedHeader::XForwardedScheme,
        TrustedHeader::XForwardedSsl,
        TrustedHeader::XForwardedHttps,
        TrustedHeader::XHttps,
        TrustedHeader::XScheme,
        TrustedHeader::ForwardedProto,
        TrustedHeader::XForwardedHost,
        TrustedHeader::ForwardedHost,
        TrustedHeader::XForwardedPort,
        TrustedHeader::XForwardedPrefix,
    ];

    pub fn group(self) -> HeaderGroup {
        use TrustedHeader::*;
        match self {
            XForwardedFor | XRealIp | XClientIp | ForwardedFor => HeaderGroup::Client,
            XForwardedProto | XForwardedScheme | XForwardedSsl | XForwardedHttps | XHttps
            | XScheme | ForwardedProto => HeaderGroup::Scheme,
            XForwardedHost | ForwardedHost => HeaderGroup::Host,
            XForwardedPort => HeaderGroup::Port,
            XForwardedPrefix => HeaderGroup::Prefix,
        }
    }

    /// The lowercase header field name this member is read from.
    pub fn header_name(self) -> &'static str {
        use TrustedHeader::*;
        match self {
            XForwardedFor => "x-forwarded-for",
            XRealIp => "x-real-ip",
            XClientIp => "x-client-ip",
            ForwardedFor | ForwardedProto | ForwardedHost => "forwarded",
            XForwardedProto => "x-forwarded-proto",
            XForwardedScheme => "x-forwarded-scheme",
            XForwardedSsl => "x-forwarded-ssl",
            XForwardedHttps => "x-forwarded-https",
            XHttps => "x-https",
            XScheme => "x-scheme",
            XForwardedHost => "x-forwarded-host",
            XForwardedPort => "x-forwarded-port",
            XForwardedPrefix => "x-forwarded-prefix",
        }
    }

    /// The name as written in `trusted_headers`.
    pub fn config_name(self) -> &'static str {
        use TrustedHeader::*;
        match self {
            XForwardedFor => "X-Forwarded-For",
            XRealIp => "X-Real-IP",
            XClientIp => "X-Client-IP",
            ForwardedFor => "Forwarded:for",
            XForwardedProto => "X-Forwarded-Proto",
            XForwardedScheme => "X-Forwarded-Scheme",
            XForwardedSsl => "X-Forwarded-SSL",
            XForwardedHttps => "X-Forwarded-HTTPS",
            XHttps => "X-HTTPS",
            XScheme => "X-Scheme",
            ForwardedProto => "Forwarded:proto",
            XForwardedHost => "X-Forwarded-Host",
            ForwardedHost => "Forwarded:host",
            XForwardedPort => "X-Forwarded-Port",
            XForwardedPrefix => "X-Forwarded-Prefix",
        }
    }

    /// Parses one `trusted_headers` entry (case-insensitive); `"Forwarded"` stands for its three
    /// parameters.
    pub fn parse_config(name: &str) -> Option<Vec<TrustedHeader>> {
        if name.eq_ignore_ascii_case("forwarded") {
            return Some(vec![
                TrustedHeader::ForwardedFor,
                TrustedHeader::ForwardedProto,
                TrustedHeader::ForwardedHost,
            ]);
        }
        Self::ALL
            .into_iter()
            .find(|member| member.config_name().eq_ignore_ascii_case(name))
            .map(|member| vec![member])
    }

    /// Every header field name of every group, sorted and deduplicated once (hygiene asks for
    /// every request): all of them are removed from requests of untrusted peers.
    pub fn header_names() -> &'static [&'static str] {
        static NAMES: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
            let mut names: Vec<&'static str> =
                TrustedHeader::ALL.iter().map(|m| m.header_name()).collect();
            names.sort_unstable();
            names.dedup();
            names
        });
        &NAMES
    }
}

/// `underscore_headers`: what to do with request header names containing '_', which CGI/WSGI
/// turn into the same `HTTP_*` key as their '-' twin (`X_Forwarded_For` = `X-Forwarded-For`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnderscorePolicy {
    /// Remove them (counted, logged at debug).
    #[default]
    Drop,
    /// Answer 400.
    Reject,
    /// Forward them, except one whose `HTTP_*` key another header already has.
    Allow,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_member_parses_back_from_its_config_name() {
        for member in TrustedHeader::ALL {
            assert_eq!(
                TrustedHeader::parse_config(&member.config_name().to_lowercase()),
                Some(vec![member])
            );
        }
        assert_eq!(
            TrustedHeader::parse_config("Forwarded").map(|m| m.len()),
            Some(3)
        );
        assert_eq!(TrustedHeader::parse_config("X-Forwarded-Fro"), None);
    }
}
