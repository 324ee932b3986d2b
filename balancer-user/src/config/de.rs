//! Field deserializers whose errors speak the config's terms: the allowed range of a number, the
//! form of an address, the allowed keywords, and the value that was written, instead of a Rust
//! type ("expected u16"), a bare "invalid IP address syntax" or toml's "wanted string or table".

use std::{fmt, marker::PhantomData, net::IpAddr, net::SocketAddr, str::FromStr};

use serde::{
    Deserialize, Deserializer,
    de::{DeserializeOwned, Error, IntoDeserializer, SeqAccess, Unexpected, Visitor},
};
use toml::Spanned;

use super::{ForwardMode, Protocol, VipConfig, XdpAttachMode};

/// A VIP port: 0 is refused because no client can connect to it.
pub(super) fn port<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Spanned<u16>, D::Error> {
    in_range::<D, u16, 1, { u16::MAX as u64 }>(deserializer)
}

/// `xdp.max_vips`: the VIP map cannot be empty, and the per-VIP stats map is sized
/// `max_vips × actions`, so the upper bound is the common crate's limit.
pub(super) fn max_vips<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Spanned<u32>, D::Error> {
    in_range::<D, u32, 1, { balancer_common::MAX_VIPS_LIMIT as u64 }>(deserializer)
}

pub(super) fn ip_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Spanned<IpAddr>, D::Error> {
    let text = Spanned::<Parsed<IpAddr>>::deserialize(deserializer)?;
    Ok(Spanned::new(text.span(), text.into_inner().0))
}

pub(super) fn socket_addr<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    Parsed::<SocketAddr>::deserialize(deserializer).map(|parsed| parsed.0)
}

/// The `[[vip]]` array. Only its `expecting` differs from `Vec`'s: a single `[vip]` table (a
/// likely slip) then reads "expected an array of tables ..." rather than "expected a sequence".
pub(super) fn vips<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<VipConfig>, D::Error> {
    deserializer.deserialize_seq(VipsVisitor)
}

struct VipsVisitor;

impl<'de> Visitor<'de> for VipsVisitor {
    type Value = Vec<VipConfig>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of tables, each VIP starting with [[vip]]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut vips = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(vip) = seq.next_element()? {
            vips.push(vip);
        }
        Ok(vips)
    }
}

/// A keyword (`protocol`, `forward`, `xdp.mode`). toml refuses a non-string for an enum with
/// "wanted string or table" before serde can say which words are allowed; reading a string
/// first makes `protocol = 6` say "expected `tcp` or `udp`".
pub(super) fn keyword<'de, D: Deserializer<'de>, T: Keyword>(
    deserializer: D,
) -> Result<T, D::Error> {
    deserializer.deserialize_str(KeywordVisitor(PhantomData))
}

pub(super) fn spanned_keyword<'de, D: Deserializer<'de>, T: Keyword>(
    deserializer: D,
) -> Result<Spanned<T>, D::Error> {
    let value = Spanned::<AsKeyword<T>>::deserialize(deserializer)?;
    Ok(Spanned::new(value.span(), value.into_inner().0))
}

/// An enum of unit variants written as a string.
pub(super) trait Keyword: DeserializeOwned {
    /// The allowed words, as serde's "unknown variant" message lists them.
    const ONE_OF: &'static str;
}

impl Keyword for Protocol {
    const ONE_OF: &'static str = "`tcp` or `udp`";
}

impl Keyword for ForwardMode {
    const ONE_OF: &'static str = "one of `ipip`, `l2-dsr`, `local`";
}

impl Keyword for XdpAttachMode {
    const ONE_OF: &'static str = "one of `auto`, `driver`, `skb`";
}

struct AsKeyword<T>(T);

impl<'de, T: Keyword> Deserialize<'de> for AsKeyword<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        keyword(deserializer).map(AsKeyword)
    }
}

struct KeywordVisitor<T>(PhantomData<T>);

impl<T: Keyword> Visitor<'_> for KeywordVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::ONE_OF)
    }

    // The enum's own Deserialize keeps serde's "unknown variant `x`, expected ..." for a
    // string that is not one of the words.
    fn visit_str<E: Error>(self, text: &str) -> Result<T, E> {
        T::deserialize(text.into_deserializer())
    }
}

/// An integer in `MIN..=MAX` of type `T` (`MAX` must fit in `T`).
fn in_range<'de, D, T, const MIN: u64, const MAX: u64>(
    deserializer: D,
) -> Result<Spanned<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let value = Spanned::<InRange<MIN, MAX>>::deserialize(deserializer)?;
    let span = value.span();
    let number = value.into_inner().0;
    // Cannot fail when MAX fits in T; an error rather than a panic if a caller gets that wrong.
    T::try_from(number)
        .map(|number| Spanned::new(span, number))
        .map_err(|_| D::Error::custom(format!("{number} does not fit the field's type")))
}

struct InRange<const MIN: u64, const MAX: u64>(u64);

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for InRange<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_u64(InRangeVisitor::<MIN, MAX>)
    }
}

struct InRangeVisitor<const MIN: u64, const MAX: u64>;

impl<const MIN: u64, const MAX: u64> Visitor<'_> for InRangeVisitor<MIN, MAX> {
    type Value = InRange<MIN, MAX>;

    // Completes serde's "invalid type: string \"80\", expected ..." for a non-integer.
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an integer between {MIN} and {MAX}")
    }

    // TOML integers are i64: negative values arrive here, never in `visit_u64`'s range check.
    fn visit_i64<E: Error>(self, value: i64) -> Result<Self::Value, E> {
        match u64::try_from(value) {
            Ok(value) => self.visit_u64(value),
            Err(_) => Err(out_of_range::<E>(MIN, MAX, value)),
        }
    }

    fn visit_u64<E: Error>(self, value: u64) -> Result<Self::Value, E> {
        if (MIN..=MAX).contains(&value) {
            Ok(InRange(value))
        } else {
            Err(out_of_range::<E>(MIN, MAX, value))
        }
    }
}

fn out_of_range<E: Error>(min: u64, max: u64, value: impl fmt::Display) -> E {
    E::custom(format!("must be between {min} and {max}, not {value}"))
}

/// A string parsed with `FromStr`; the error quotes the string and says what form it should have.
struct Parsed<T>(T);

/// What a `Parsed<T>` string must look like, for the error message.
trait Form: FromStr {
    const FORM: &'static str;
}

impl Form for IpAddr {
    const FORM: &'static str = "an IPv4 or IPv6 address";
}

impl Form for SocketAddr {
    const FORM: &'static str =
        "an IP address and port, such as \"127.0.0.1:9100\" or \"[::1]:9100\"";
}

impl<'de, T: Form> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(ParsedVisitor(PhantomData))
    }
}

struct ParsedVisitor<T>(PhantomData<T>);

impl<T: Form> Visitor<'_> for ParsedVisitor<T> {
    type Value = Parsed<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a string with {}", T::FORM)
    }

    fn visit_str<E: Error>(self, text: &str) -> Result<Self::Value, E> {
        text.parse().map(Parsed).map_err(|_| {
            // `invalid_value` renders as: invalid value: string "…", expected <FORM>
            E::invalid_value(Unexpected::Str(text), &T::FORM)
        })
    }
}
