//! A value read from a file together with the place it was written: what every section of the
//! inventory holds, so that later errors can still point at the line.

use serde::Serialize;

use crate::diagnostic::Place;

/// A value read from a file, with the place it was written (for later diagnostics).
/// Derefs to the value and serializes as the value alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub place: Place,
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: std::fmt::Display> std::fmt::Display for Located<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: Serialize> Serialize for Located<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

/// A variable's value and where it was set.
#[derive(Clone, Debug, Serialize)]
pub struct Var {
    pub value: serde_json::Value,
    pub place: Place,
}
