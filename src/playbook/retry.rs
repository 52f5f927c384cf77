//! A task's `until`, `retries` and `delay` checked into a [`Retry`]: command tasks only,
//! `until` with `register`, `retries`/`delay` with `until`, bounded waits. The loader calls
//! this with each keyword's place; nothing here reads YAML or renders templates.

use serde_json::Value;

use super::model::Retry;
use crate::diagnostic::{Diagnostic, Place};
use crate::inventory::Located;

/// Bounds of `retries` and `delay` (seconds), and of the longest wait they may add up to.
const MAX_RETRIES: u64 = 100;
const MAX_DELAY: u64 = 600;
const MAX_WAIT: u64 = 3600;

/// Ansible's defaults when `until` is given.
const DEFAULT_RETRIES: u32 = 3;
const DEFAULT_DELAY: u32 = 5;

/// The value of `retries` or `delay` (`what`): a whole number within its bound.
pub fn whole(what: &str, value: &Value) -> Result<u32, String> {
    let (max, unit) = if what == "delay" {
        (MAX_DELAY, " seconds")
    } else {
        (MAX_RETRIES, "")
    };
    match value.as_u64().filter(|n| *n <= max) {
        // At most MAX_DELAY: always a u32.
        Some(n) => Ok(n as u32),
        None => Err(format!(
            "`{what}` must be a whole number from 0 to {max}{unit}, not {value}"
        )),
    }
}

/// The keywords of one task together (each with its place): `Ok(None)` when it has none.
pub fn check(
    module: &str,
    register: Option<&str>,
    until: Option<Located<String>>,
    retries: Option<(u32, Place)>,
    delay: Option<(u32, Place)>,
) -> Result<Option<Retry>, Diagnostic> {
    let Some(first) = until
        .as_ref()
        .map(|u| u.place.clone())
        .or(retries.as_ref().map(|r| r.1.clone()))
        .or(delay.as_ref().map(|d| d.1.clone()))
    else {
        return Ok(None);
    };
    if !matches!(module, "command" | "shell") {
        return Err(Diagnostic::new(
            first,
            format!(
                "picaops retries command tasks only (`command`, `shell`); this task runs `{module}`"
            ),
        )
        .help("remove `until`/`retries`/`delay`, or move the check into a `command` task"));
    }
    let Some(until) = until else {
        return Err(Diagnostic::new(
            first,
            "`retries` and `delay` need `until`: the condition that ends the retries",
        )
        .help("add `register: result` and `until: result.rc == 0`"));
    };
    let Some(register) = register else {
        return Err(Diagnostic::new(
            until.place,
            "`until` reads the task's registered result, and this task has no `register`",
        )
        .help("add `register: result` and write `until: result.rc == 0`"));
    };
    let retries = retries.map_or(DEFAULT_RETRIES, |r| r.0);
    let delay = delay.map_or(DEFAULT_DELAY, |d| d.0);
    let wait = u64::from(retries) * u64::from(delay);
    if wait > MAX_WAIT {
        return Err(Diagnostic::new(
            until.place,
            format!(
                "`retries: {retries}` with `delay: {delay}` may wait {wait} s: picaops waits at \
                 most {MAX_WAIT} s for one task"
            ),
        )
        .help("lower `retries` or `delay`"));
    }
    Ok(Some(Retry {
        until,
        register: register.to_string(),
        retries,
        delay,
    }))
}
