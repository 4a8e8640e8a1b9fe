//! Wrappers that keep sensitive values out of logs.
//!
//! Participant names, meeting URLs, transcript text and secrets travel inside
//! [`Pii`] or [`Secret`]. Their `Debug` and `Display` print a placeholder, so a
//! stray `info!("{:?}", x)` cannot leak them. Reach the value deliberately with
//! [`Pii::expose`] / [`Secret::expose`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Personal data: names, meeting URLs, transcript text. Redacted in logs,
/// serialized as-is (serialization is a deliberate output such as the transcript).
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pii<T>(T);

impl<T> Pii<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Pii(value)
    }
    /// The wrapped value, for the places that must use it.
    pub fn expose(&self) -> &T {
        &self.0
    }
    /// Unwraps.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> fmt::Display for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T: Serialize> Serialize for Pii<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Pii<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Pii)
    }
}

/// A credential. Redacted in logs and never serialized back out.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T: zeroize::Zeroize>(zeroize::Zeroizing<T>);

impl<T: zeroize::Zeroize> Secret<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Secret(zeroize::Zeroizing::new(value))
    }
    /// The wrapped value, for the places that must use it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: zeroize::Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl<'de, T: zeroize::Zeroize + Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let name = Pii::new("Alice Example".to_string());
        assert_eq!(format!("{name:?} {name}"), "<redacted> <redacted>");
        let key = Secret::new("sk-live-123".to_string());
        assert_eq!(format!("{key:?}"), "<secret>");
        assert_eq!(key.expose(), "sk-live-123");
    }

    #[test]
    fn pii_serializes_transparently() {
        let name = Pii::new("Bob".to_string());
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"Bob\"");
        let back: Pii<String> = serde_json::from_str("\"Bob\"").unwrap();
        assert_eq!(back.expose(), "Bob");
    }
}
