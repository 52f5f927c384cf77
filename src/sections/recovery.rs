//! The state of an emergency: `recovery:` (written by `picaops site recover SITE --apply` into
//! `inventory/recovery.yml`, a small file a person can read, review and commit): which site is
//! lost, since when, and where each of its VMs and services (and the directory) now runs. While it is there, every
//! `plan` and `apply` places those VMs and services at their recovery place; removing it (what
//! `site failback` does) puts them home again.

use std::path::Path;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::{err, located};
use crate::diagnostic::{Diagnostic, Place};
use crate::located::Located;
use crate::yaml::Name;

/// The name of the file `site recover --apply` writes in the inventory directory.
pub const FILE_NAME: &str = "recovery.yml";

/// `recovery:` as written.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RecoveryDoc {
    lost: Spanned<String>,
    since: Spanned<String>,
    #[serde(default)]
    vms: IndexMap<Name, Spanned<String>>,
    #[serde(default)]
    services: IndexMap<Name, Spanned<String>>,
    directory: Option<Spanned<String>>,
}

/// A site declared lost, and what moved where.
#[derive(Clone, Debug, Serialize)]
pub struct Recovery {
    /// The lost site.
    pub lost: Located<String>,
    /// When the recovery was applied (`YYYY-MM-DDTHH:MM:SSZ`).
    pub since: Located<String>,
    /// VM → the hypervisor it now runs on.
    pub vms: IndexMap<String, Located<String>>,
    /// Service → the machine it now runs on.
    pub services: IndexMap<String, Located<String>>,
    /// The machine the LDAP directory (`access.directory`) now runs on.
    pub directory: Option<Located<String>>,
    pub place: Place,
}

impl RecoveryDoc {
    /// Checks the values that can be checked alone (the time's shape); names are checked
    /// against the inventory by the inventory.
    pub fn read(self, file: &Path, place: Place, diags: &mut Vec<Diagnostic>) -> Recovery {
        if !valid_time(&self.since.value) {
            diags.push(err(
                file,
                &self.since,
                format!("`{}` is not a UTC time", self.since.value),
                "write it as `site recover` does: 2026-12-04T18:30:00Z",
            ));
        }
        let moved = |m: IndexMap<Name, Spanned<String>>| {
            m.into_iter()
                .map(|(k, v)| (k.0.value, located(file, v)))
                .collect()
        };
        Recovery {
            lost: located(file, self.lost),
            since: located(file, self.since),
            vms: moved(self.vms),
            services: moved(self.services),
            directory: self.directory.map(|d| located(file, d)),
            place,
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
fn valid_time(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// The text of `recovery.yml` for `recovery`, as `site recover --apply` writes it.
pub fn render(
    lost: &str,
    since: &str,
    vms: &[(String, String)],
    services: &[(String, String)],
    directory: Option<&str>,
) -> String {
    let mut s = format!(
        "# Written by `picaops site recover {lost} --apply`: site `{lost}` is lost, and what it ran\n\
         # comes back elsewhere. While this file is here, every plan and apply places the VMs and\n\
         # services below at their recovery place. Review it, commit it; `picaops site failback\n\
         # {lost}` moves everything home and removes it.\n\
         recovery:\n  lost: {lost}\n  since: \"{since}\"\n"
    );
    for (title, moved) in [("vms", vms), ("services", services)] {
        if moved.is_empty() {
            continue;
        }
        s.push_str(&format!("  {title}:\n"));
        for (name, to) in moved {
            s.push_str(&format!("    {name}: {to}\n"));
        }
    }
    if let Some(to) = directory {
        s.push_str(&format!("  directory: {to}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert!(valid_time("2026-12-04T18:30:00Z"));
        assert!(!valid_time("2026-12-04 18:30:00"));
        assert!(!valid_time("2026-12-04T18:30:00+01:00"));
        assert!(!valid_time(""));
    }

    #[test]
    fn rendered_file_reads_back() {
        let text = render(
            "toulouse",
            "2026-12-04T18:30:00Z",
            &[("vm-tls".into(), "alice".into())],
            &[("hello".into(), "alice".into())],
            Some("alice"),
        );
        assert!(text.contains("  lost: toulouse\n"));
        assert!(text.contains("  vms:\n    vm-tls: alice\n"));
        assert!(text.contains("  services:\n    hello: alice\n"));
        assert!(text.ends_with("  directory: alice\n"));
    }
}
