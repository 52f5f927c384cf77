//! What an inventory value that ends up in a script must look like: a VM's image, bridge,
//! addresses; an environment variable's name (services' env files, backup dumps). Each check says why a value is refused, for a located diagnostic.
//!
//! These checks are the first of two walls: the scripts built from these values pass them as
//! data (base64, quoted words) whatever they hold. The checks catch the typo or the pasted
//! garbage at `inventory check`, where the file:line:column can still be shown.

use std::net::IpAddr;

/// Why a value was refused; the text completes "`image` is refused: …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("it is empty")]
    Empty,
    #[error("it starts with `-`, which a command would read as an option")]
    LeadingDash,
    #[error("{} is not allowed (letters, digits and{} only)", describe(*.found), .allowed.chars().map(|c| format!(" {c}")).collect::<String>())]
    Character { found: char, allowed: &'static str },
    #[error("it is longer than {0} characters")]
    TooLong(usize),
    #[error("`{}` is not an IP address", shown(.0))]
    NotAnIp(String),
    #[error("`/{}` is not a prefix length (0 to {max} for this address)", shown(.prefix))]
    Prefix { prefix: String, max: u8 },
}

/// A base image (libvirt) or template (Proxmox) name: one word of `A-Z a-z 0-9 . _ : / -`,
/// not starting with `-` (it would read as an option).
pub fn check_image(text: &str) -> Result<(), ValueError> {
    check_word(text, "._:/-", 255)
}

/// A bridge (network interface) name: `A-Z a-z 0-9 . _ -`, at most 15 characters (Linux's
/// limit), not starting with `-`. No `,` or `=`: Proxmox reads `--net0` as `key=value,…`.
pub fn check_bridge(text: &str) -> Result<(), ValueError> {
    check_word(text, "._-", 15)
}

/// A storage pool (libvirt) or storage id (Proxmox): `A-Z a-z 0-9 . _ -`, not starting with
/// `-`. No `,` `:` or `=`: Proxmox reads `--scsiN POOL:SIZE,key=value`.
pub fn check_pool(text: &str) -> Result<(), ValueError> {
    check_word(text, "._-", 64)
}

/// Site, group, host, VM, service and backup job names: lowercase words that fit in a DNS label,
/// a unit name and a file name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

/// An environment variable's name, as a shell and a Compose env file accept it:
/// `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_env_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_word(text: &str, extra: &'static str, max: usize) -> Result<(), ValueError> {
    if text.is_empty() {
        return Err(ValueError::Empty);
    }
    if text.starts_with('-') {
        return Err(ValueError::LeadingDash);
    }
    if let Some(c) = text
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !extra.contains(*c))
    {
        return Err(ValueError::Character {
            found: c,
            allowed: extra,
        });
    }
    if text.len() > max {
        return Err(ValueError::TooLong(max));
    }
    Ok(())
}

/// An IP address (`192.0.2.10`, `2001:db8::1`).
pub fn check_ip(text: &str) -> Result<IpAddr, ValueError> {
    text.parse::<IpAddr>()
        .map_err(|_| ValueError::NotAnIp(text.to_string()))
}

/// An IP address with an optional prefix length (`192.0.2.10/24`, `2001:db8::10/64`).
pub fn check_ip_or_cidr(text: &str) -> Result<(), ValueError> {
    let (ip, prefix) = match text.split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix)),
        None => (text, None),
    };
    let ip = check_ip(ip)?;
    if let Some(prefix) = prefix {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match prefix.parse::<u8>() {
            Ok(n) if n <= max && prefix.bytes().all(|b| b.is_ascii_digit()) => {}
            _ => {
                return Err(ValueError::Prefix {
                    prefix: prefix.to_string(),
                    max,
                })
            }
        }
    }
    Ok(())
}

/// `text` with control characters (line breaks…) written as escapes, for a one-line message.
pub fn shown(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn describe(c: char) -> String {
    match c {
        '\n' => "a line break".into(),
        '\t' => "a tab".into(),
        ' ' => "a space".into(),
        c if c.is_control() => format!("the control character {:?}", c),
        c => format!("`{c}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        for ok in [
            "debian-12",
            "picaops-lab-guest",
            "local:iso/debian.img",
            "a.b_c",
        ] {
            assert!(check_image(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-rf", "a b", "x'y", "$(id)", "a\nb", "é"] {
            assert!(check_image(bad).is_err(), "{bad}");
        }
        assert!(check_bridge("vmbr0").is_ok());
        assert!(check_bridge("vmbr0,firewall=0").is_err());
        assert!(check_bridge("a-very-long-bridge").is_err());
        assert!(check_pool("local-lvm").is_ok());
        assert!(check_pool("data:1,backup=0").is_err());
    }

    #[test]
    fn addresses() {
        for ok in [
            "10.0.0.5",
            "10.0.0.5/24",
            "10.0.0.5/0",
            "2001:db8::10/64",
            "::1",
        ] {
            assert!(check_ip_or_cidr(ok).is_ok(), "{ok}");
        }
        for bad in [
            "10.0.0.5/33",
            "10.0.0.256",
            "10.0.0.5/",
            "10.0.0.5/+8",
            "2001:db8::1/129",
            "10.0.0.5/24\nx",
            "host.example",
        ] {
            assert!(check_ip_or_cidr(bad).is_err(), "{bad}");
        }
        assert!(check_ip("10.0.0.1/24").is_err());
    }
}
