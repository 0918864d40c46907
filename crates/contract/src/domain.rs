//! Values parsed once at the edge into types that cannot be wrong.
//!
//! A handler or a consumer never sees a raw `user_id` string or a raw amount: serde turns the
//! wire value into a [`UserId`] or an [`Amount`] through their `parse` functions, and rejects
//! the request or the message with a message that names the rule it broke.

use serde::{Deserialize, Serialize};
use std::fmt;

#[cfg(feature = "sqlx")]
#[doc(hidden)]
pub use sqlx as __sqlx;

/// Spells a domain enum — each variant's one text — for the wire-free places: `as_str` and
/// `FromStr`.
///
/// `spelled!(OrderStatus, "order status", { New => "NEW", Finished => "FINISHED" });`
#[macro_export]
macro_rules! spelled {
    ($type:ty, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $type {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl ::std::str::FromStr for $type {
            type Err = $crate::domain::UnknownValue;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                match value {
                    $($text => Ok(Self::$variant),)+
                    _ => Err($crate::domain::UnknownValue {
                        what: $what,
                        value: value.to_owned(),
                    }),
                }
            }
        }
    };
}

/// Stores a [`spelled!`] type in a `text` column through sqlx, as its spelling.
#[cfg(feature = "sqlx")]
#[macro_export]
macro_rules! text_column {
    ($type:ty) => {
        impl $crate::domain::__sqlx::Type<$crate::domain::__sqlx::Postgres> for $type {
            fn type_info() -> $crate::domain::__sqlx::postgres::PgTypeInfo {
                <&str as $crate::domain::__sqlx::Type<$crate::domain::__sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &$crate::domain::__sqlx::postgres::PgTypeInfo) -> bool {
                <&str as $crate::domain::__sqlx::Type<$crate::domain::__sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'q> $crate::domain::__sqlx::Encode<'q, $crate::domain::__sqlx::Postgres> for $type {
            fn encode_by_ref(
                &self,
                buf: &mut $crate::domain::__sqlx::postgres::PgArgumentBuffer,
            ) -> Result<$crate::domain::__sqlx::encode::IsNull, $crate::domain::__sqlx::error::BoxDynError> {
                <&str as $crate::domain::__sqlx::Encode<$crate::domain::__sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> $crate::domain::__sqlx::Decode<'r, $crate::domain::__sqlx::Postgres> for $type {
            fn decode(
                value: $crate::domain::__sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, $crate::domain::__sqlx::error::BoxDynError> {
                let text = <&str as $crate::domain::__sqlx::Decode<$crate::domain::__sqlx::Postgres>>::decode(value)?;
                text.parse::<$type>().map_err(Into::into)
            }
        }
    };
}

/// Spells a domain enum once — `as_str`, `FromStr` — and stores it in a `text` column as that
/// spelling: statuses, reasons and kinds travel into SQL and back as the type itself.
///
/// `stored_as_text!(OrderStatus, "order status", { New => "NEW", Finished => "FINISHED" });`
#[cfg(feature = "sqlx")]
#[macro_export]
macro_rules! stored_as_text {
    ($type:ty, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        $crate::spelled!($type, $what, { $($variant => $text),+ });
        $crate::text_column!($type);
    };
}

/// Stores a type parsed from `$inner` (`String` or `i64`) in a column of that type through sqlx:
/// what is read back is parsed again, so a row that breaks the type's rule is an error, never
/// a value that cannot be.
#[cfg(feature = "sqlx")]
#[macro_export]
macro_rules! parsed_column {
    ($type:ty, $inner:ty, $into:expr) => {
        impl $crate::domain::__sqlx::Type<$crate::domain::__sqlx::Postgres> for $type {
            fn type_info() -> $crate::domain::__sqlx::postgres::PgTypeInfo {
                <$inner as $crate::domain::__sqlx::Type<$crate::domain::__sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &$crate::domain::__sqlx::postgres::PgTypeInfo) -> bool {
                <$inner as $crate::domain::__sqlx::Type<$crate::domain::__sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'q> $crate::domain::__sqlx::Encode<'q, $crate::domain::__sqlx::Postgres> for $type {
            fn encode_by_ref(
                &self,
                buf: &mut $crate::domain::__sqlx::postgres::PgArgumentBuffer,
            ) -> Result<$crate::domain::__sqlx::encode::IsNull, $crate::domain::__sqlx::error::BoxDynError> {
                let inner: $inner = ($into)(self);
                <$inner as $crate::domain::__sqlx::Encode<$crate::domain::__sqlx::Postgres>>::encode(inner, buf)
            }
        }

        impl<'r> $crate::domain::__sqlx::Decode<'r, $crate::domain::__sqlx::Postgres> for $type {
            fn decode(
                value: $crate::domain::__sqlx::postgres::PgValueRef<'r>,
            ) -> Result<Self, $crate::domain::__sqlx::error::BoxDynError> {
                let inner = <$inner as $crate::domain::__sqlx::Decode<$crate::domain::__sqlx::Postgres>>::decode(value)?;
                <$type>::parse(inner).map_err(Into::into)
            }
        }

        impl $crate::domain::__sqlx::postgres::PgHasArrayType for $type {
            fn array_type_info() -> $crate::domain::__sqlx::postgres::PgTypeInfo {
                <$inner as $crate::domain::__sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }
    };
}

/// A stored value that is none of a type's spellings.
#[derive(Debug, thiserror::Error)]
#[error("{value:?} is not a {what}")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
}

/// An order's identifier: a UUID (version 7 when orders makes it, so ids sort by creation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
#[serde(transparent)]
pub struct OrderId(uuid::Uuid);

impl OrderId {
    /// A new id, ordered after every id made before it.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    pub fn as_uuid(self) -> uuid::Uuid {
        self.0
    }
}

impl Default for OrderId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<uuid::Uuid> for OrderId {
    fn from(id: uuid::Uuid) -> Self {
        Self(id)
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A user's identifier: 1–64 characters of `A–Z a–z 0–9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: impl Into<String>) -> Result<Self, String> {
        let raw = raw.into();
        if raw.is_empty() {
            return Err("user_id must not be empty".into());
        }
        if raw.len() > Self::MAX_LEN {
            return Err(format!(
                "user_id must be at most {} characters",
                Self::MAX_LEN
            ));
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "user_id may contain only A-Z a-z 0-9 . _ - (found {bad:?})"
            ));
        }
        Ok(Self(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(raw)
    }
}

impl From<UserId> for String {
    fn from(id: UserId) -> Self {
        id.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A positive amount of money in minor currency units (kopecks).
///
/// JSON numbers that are fractional or beyond `i64` never reach [`Amount::parse`]: serde
/// rejects them as the wrong type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Amount(i64);

impl Amount {
    pub fn parse(raw: i64) -> Result<Self, String> {
        if raw <= 0 {
            return Err(format!(
                "amount must be a positive integer of kopecks, got {raw}"
            ));
        }
        Ok(Self(raw))
    }

    pub fn kopecks(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Amount {
    type Error = String;
    fn try_from(raw: i64) -> Result<Self, Self::Error> {
        Self::parse(raw)
    }
}

impl From<Amount> for i64 {
    fn from(amount: Amount) -> Self {
        amount.0
    }
}

#[cfg(feature = "sqlx")]
crate::parsed_column!(UserId, String, |id: &UserId| id.0.clone());
#[cfg(feature = "sqlx")]
crate::parsed_column!(Amount, i64, |amount: &Amount| amount.0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_id_of_allowed_characters_is_accepted() {
        for ok in ["u", "user-1", "A.b_c-9", &"x".repeat(64)] {
            assert!(UserId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn an_empty_user_id_is_rejected() {
        assert!(UserId::parse("").unwrap_err().contains("empty"));
    }

    #[test]
    fn a_user_id_longer_than_64_characters_is_rejected() {
        assert!(UserId::parse("x".repeat(65)).unwrap_err().contains("64"));
    }

    #[test]
    fn a_user_id_with_other_characters_is_rejected() {
        for bad in ["a b", "a/b", "é", "a\u{0}", "user@x", "кот"] {
            assert!(UserId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn zero_and_negative_amounts_are_rejected() {
        assert!(Amount::parse(0).is_err());
        assert!(Amount::parse(-1).is_err());
        assert!(Amount::parse(i64::MIN).is_err());
        assert_eq!(Amount::parse(i64::MAX).map(Amount::kopecks), Ok(i64::MAX));
    }

    #[test]
    fn fractional_and_oversized_json_amounts_do_not_deserialize() {
        for bad in ["1.5", "1e3", "9223372036854775808", "\"10\"", "null"] {
            assert!(serde_json::from_str::<Amount>(bad).is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::from_str::<Amount>("10")
                .map(Amount::kopecks)
                .ok(),
            Some(10)
        );
    }
}
