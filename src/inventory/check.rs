//! Checks that need the whole merged inventory: names, references between sections, host keys.
//!
//! Runs before any host is contacted; every problem becomes a diagnostic pointing at the line
//! that holds the bad name or reference.

use std::collections::HashMap;

use super::model::Inventory;
use crate::diagnostic::{did_you_mean, Diagnostic, Place};
use crate::values::valid_name;

/// Names that picaops gives a meaning of its own in `--limit` patterns.
const RESERVED: &[&str] = &["all", "localhost"];

pub(super) fn check(inv: &Inventory, diags: &mut Vec<Diagnostic>) {
    check_names(inv, diags);
    check_sites(inv, diags);
    check_machines(inv, diags);
    check_services(inv, diags);
    super::sections::check(inv, diags);
    super::recovery::check(inv, diags);
}

fn valid_var_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Every site, group, host and VM name is well-formed and names one thing only, so a `--limit`
/// pattern can never be ambiguous.
fn check_names(inv: &Inventory, diags: &mut Vec<Diagnostic>) {
    let named = inv
        .sites
        .values()
        .map(|s| ("site", s.name.as_str(), &s.place))
        .chain(
            inv.groups
                .values()
                .map(|g| ("group", g.name.as_str(), &g.place)),
        )
        .chain(
            inv.hosts
                .values()
                .map(|h| ("host", h.name.as_str(), &h.place)),
        )
        .chain(inv.vms.values().map(|v| ("VM", v.name.as_str(), &v.place)))
        .chain(
            inv.services
                .values()
                .map(|s| ("service", s.name.as_str(), &s.place)),
        );
    let mut seen: HashMap<&str, (&str, &Place)> = HashMap::new();
    for (kind, name, place) in named {
        if !valid_name(name) {
            diags.push(
                Diagnostic::new(place.clone(), format!("{kind} name `{name}` is not a valid name"))
                    .help("use lowercase letters, digits, `-` and `_`, starting with a letter or digit (at most 63)"),
            );
        }
        if RESERVED.contains(&name) {
            diags.push(
                Diagnostic::new(
                    place.clone(),
                    format!("`{name}` is reserved and cannot name a {kind}"),
                )
                .help("`all` means every machine in --limit patterns: pick another name"),
            );
        }
        if kind == "service" {
            continue;
        }
        if let Some((first_kind, first_place)) = seen.get(name) {
            if *first_kind != kind {
                diags.push(
                    Diagnostic::new(
                        place.clone(),
                        format!("{kind} `{name}` has the same name as a {first_kind}"),
                    )
                    .note((*first_place).clone(), format!("the {first_kind} is declared here"))
                    .help("sites, groups, hosts and VMs share one namespace (used by --limit): rename one"),
                );
            }
        } else {
            seen.insert(name, (kind, place));
        }
    }
    let all_vars = inv
        .vars
        .iter()
        .chain(inv.sites.values().flat_map(|s| s.vars.iter()))
        .chain(inv.groups.values().flat_map(|g| g.vars.iter()))
        .chain(inv.hosts.values().flat_map(|h| h.vars.iter()))
        .chain(inv.vms.values().flat_map(|v| v.vars.iter()));
    for (name, var) in all_vars {
        if !valid_var_name(name) {
            diags.push(
                Diagnostic::new(var.place.clone(), format!("variable name `{name}` is not valid"))
                    .help("variable names are letters, digits and `_`, not starting with a digit (templates use them as identifiers)"),
            );
        }
    }
}

fn unknown(
    kind: &str,
    plural: &str,
    name: &str,
    place: Place,
    known: Vec<&str>,
    what_to_do: &str,
) -> Diagnostic {
    let mut help = match did_you_mean(name, known.iter().copied()) {
        Some(s) => format!("did you mean `{s}`? "),
        None => String::new(),
    };
    if known.is_empty() {
        help.push_str(&format!("no {kind} is declared yet; {what_to_do}"));
    } else {
        help.push_str(&format!("declared {plural}: {}", known.join(", ")));
    }
    Diagnostic::new(place, format!("unknown {kind} `{name}`")).help(help)
}

fn check_sites(inv: &Inventory, diags: &mut Vec<Diagnostic>) {
    let names: Vec<&str> = inv.sites.keys().map(String::as_str).collect();
    for site in inv.sites.values() {
        let Some(target) = &site.backs_up_to else {
            continue;
        };
        let place = target.place.clone();
        if target.as_str() == site.name {
            diags.push(
                Diagnostic::new(place, format!("site `{}` backs up to itself", site.name))
                    .help("a backup must leave the site: losing the site would lose the copy too; name the other site"),
            );
        } else if !inv.sites.contains_key(target.as_str()) {
            diags.push(unknown(
                "site",
                "sites",
                target,
                place,
                names.clone(),
                "add it under `sites:`",
            ));
        }
    }
}

fn check_machines(inv: &Inventory, diags: &mut Vec<Diagnostic>) {
    let sites: Vec<&str> = inv.sites.keys().map(String::as_str).collect();
    let hosts: Vec<&str> = inv.hosts.keys().map(String::as_str).collect();
    let groups: Vec<&str> = inv.groups.keys().map(String::as_str).collect();
    for host in inv.hosts.values() {
        if !inv.sites.contains_key(host.site.as_str()) {
            let place = host.site.place.clone();
            diags.push(unknown(
                "site",
                "sites",
                &host.site,
                place,
                sites.clone(),
                "add it under `sites:`",
            ));
        }
    }
    for vm in inv.vms.values() {
        if !inv.hosts.contains_key(vm.host.as_str()) {
            let place = vm.host.place.clone();
            let mut d = unknown(
                "host",
                "hosts",
                &vm.host,
                place,
                hosts.clone(),
                "add it under `hosts:`",
            );
            if inv.vms.contains_key(vm.host.as_str()) {
                d = d.help(format!(
                    "`{}` is a VM; a VM runs on a physical host",
                    vm.host
                ));
            }
            diags.push(d);
        }
    }
    for machine in inv.machines() {
        for group in machine.groups() {
            if !inv.groups.contains_key(group.as_str()) {
                let place = group.place.clone();
                diags.push(unknown(
                    "group",
                    "groups",
                    group,
                    place,
                    groups.clone(),
                    "add it under `groups:`",
                ));
            }
        }
        if let Some(key) = &machine.ssh().host_key {
            if let Err(why) = check_host_key(key) {
                let place = key.place.clone();
                diags.push(
                    Diagnostic::new(place, format!("host_key of `{}` is not an SSH public key: {why}", machine.name()))
                        .help("copy the line from the machine's /etc/ssh/ssh_host_ed25519_key.pub (`ssh-ed25519 AAAA…`), or run `picaops inventory pin`"),
                );
            }
        }
    }
}

fn check_services(inv: &Inventory, diags: &mut Vec<Diagnostic>) {
    let machines: Vec<&str> = inv.machines().map(|m| m.name()).collect();
    for service in inv.services.values() {
        if inv.machine(&service.host).is_none() {
            let place = service.host.place.clone();
            diags.push(unknown(
                "host or VM",
                "hosts and VMs",
                &service.host,
                place,
                machines.clone(),
                "add it under `hosts:` or `vms:`",
            ));
        }
    }
}

/// Why a host key line is not a valid OpenSSH public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostKeyError {
    #[error("it is empty")]
    Empty,
    #[error("the base64 part is missing")]
    NoBlob,
    #[error("unknown key type `{0}`")]
    UnknownKind(String),
    #[error("the base64 part is not valid base64")]
    NotBase64,
    #[error("the key is truncated")]
    Truncated,
    #[error("the key says `{inside}` inside but `{front}` in front")]
    KindMismatch { inside: String, front: String },
}

/// Checks the shape of an OpenSSH public key line: known type, base64 blob naming that type.
pub fn check_host_key(key: &str) -> Result<(), HostKeyError> {
    let mut parts = key.split_whitespace();
    let kind = parts.next().ok_or(HostKeyError::Empty)?;
    let blob = parts.next().ok_or(HostKeyError::NoBlob)?;
    const KINDS: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    if !KINDS.contains(&kind) {
        return Err(HostKeyError::UnknownKind(kind.to_string()));
    }
    let bytes = decode_base64(blob).ok_or(HostKeyError::NotBase64)?;
    // The blob starts with the key type as an SSH string: 4-byte length, then the name.
    let len = bytes
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or(HostKeyError::Truncated)?;
    let name = bytes.get(4..4 + len).ok_or(HostKeyError::Truncated)?;
    if name != kind.as_bytes() {
        return Err(HostKeyError::KindMismatch {
            inside: String::from_utf8_lossy(name).into_owned(),
            front: kind.to_string(),
        });
    }
    Ok(())
}

pub(super) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let text = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys() {
        let good =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        assert_eq!(check_host_key(good), Ok(()));
        assert!(check_host_key("ssh-ed25519").is_err());
        assert!(check_host_key("ssh-dss AAAA").is_err());
        assert!(check_host_key(
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
        )
        .is_err());
        assert!(check_host_key("ssh-ed25519 !!!").is_err());
    }

    #[test]
    fn names() {
        assert!(valid_name("pica01-test"));
        assert!(!valid_name("Pica01"));
        assert!(!valid_name("-x"));
        assert!(valid_var_name("data_dir"));
        assert!(!valid_var_name("data-dir"));
    }
}
