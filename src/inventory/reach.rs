//! How to reach the inventory's machines: `Target`s for the transport, and pinned host keys.
//!
//! Host keys come from two places: `host_key:` on a machine, and the `known_hosts` file beside
//! the YAML files (written by `picaops inventory pin`). picaops hands ssh a known_hosts file
//! made of exactly these keys, so the admin's own ~/.ssh/known_hosts never decides for it.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;

use sha2::{Digest, Sha256};

use super::check::HostKeyError;
use super::model::{Inventory, Machine};
use crate::diagnostic::Place;
use crate::transport::{known_hosts_name, Target};

/// A machine the inventory gives no address, so it cannot be reached (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} `{machine}` has no `address:`, so picaops cannot reach it; add one ({place})")]
pub struct NoAddress {
    /// `host` or `VM`.
    pub kind: &'static str,
    pub machine: String,
    pub place: Place,
}

/// Why `inventory pin` could not record a machine's host key.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("its key is already pinned by `host_key:` at {0}; if the machine was reinstalled, edit it there")]
    AlreadyPinned(Place),
    #[error("no `address:` ({0})")]
    NoAddress(Place),
    #[error("cannot run ssh-keyscan: {0} (install openssh-client)")]
    Keyscan(#[source] std::io::Error),
    #[error(
        "{address} port {port} gave no ed25519 host key (is sshd running and reachable?): {stderr}"
    )]
    NoKey {
        address: String,
        port: String,
        stderr: String,
    },
    #[error("the key it sent is not valid: {0}")]
    BadKey(#[source] HostKeyError),
    #[error(transparent)]
    Record(#[from] KnownHostsError),
}

/// The pinned `known_hosts` file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", .path.display())]
pub struct KnownHostsError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The transport's view of a machine. A machine without an address cannot be reached yet.
pub fn target(machine: Machine<'_>) -> Result<Target, NoAddress> {
    let ssh = machine.ssh();
    let address = ssh.address.clone().ok_or_else(|| NoAddress {
        kind: machine.kind(),
        machine: machine.name().to_string(),
        place: machine.place().clone(),
    })?;
    Ok(Target {
        name: machine.name().to_string(),
        local: address == "localhost" && ssh.port.is_none() && ssh.user.is_none(),
        address,
        port: ssh.port,
        user: ssh.user.clone(),
        identity_file: ssh.identity_file.clone(),
        become_root: ssh.become_root,
        jump: ssh.jump.clone(),
    })
}

/// The known_hosts lines picaops trusts: inventory `host_key:`s, then the pinned file.
pub fn known_hosts_text(inv: &Inventory) -> String {
    let mut text = String::new();
    for m in inv.machines() {
        let ssh = m.ssh();
        if let (Some(address), Some(key)) = (&ssh.address, &ssh.host_key) {
            text.push_str(&format!(
                "{} {}\n",
                known_hosts_name(address, ssh.port),
                key.as_str()
            ));
        }
    }
    for line in &inv.known_hosts {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// Is a key for `machine` recorded in the pinned `known_hosts` file?
pub fn is_pinned(inv: &Inventory, machine: Machine<'_>) -> bool {
    let ssh = machine.ssh();
    let Some(address) = &ssh.address else {
        return false;
    };
    let name = known_hosts_name(address, ssh.port);
    inv.known_hosts.iter().any(|l| line_names(l, &name))
}

/// Does this known_hosts line pin a key for `name` (`address` or `[address]:port`)?
pub fn line_names(line: &str, name: &str) -> bool {
    line.split_whitespace()
        .next()
        .is_some_and(|n| n.split(',').any(|n| n == name))
}

/// Writes the trusted keys to a private, content-addressed file and returns its path.
/// Same keys, same file: concurrent runs never race on it.
pub fn write_known_hosts(inv: &Inventory) -> std::io::Result<PathBuf> {
    let text = known_hosts_text(inv);
    let digest = hex::encode(&Sha256::digest(text.as_bytes())[..8]);
    let dir = runtime_dir();
    create_private_dir(&dir)?;
    let path = dir.join(format!("known_hosts-{digest}"));
    if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(path);
    }
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(&path).map_err(|e| e.error)?;
    Ok(path)
}

/// A private directory for run files (`$XDG_RUNTIME_DIR/picaops`, else `/tmp/picaops-<uid>`).
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("picaops"),
        _ => std::env::temp_dir().join(format!("picaops-{}", unsafe_uid())),
    }
}

fn unsafe_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::metadata(dir)?;
    if meta.uid() != unsafe_uid() {
        return Err(std::io::Error::other(format!(
            "{} belongs to another user; refusing to keep host keys there",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Asks the machine for its ed25519 host key (`ssh-keyscan`) and records it in
/// `<inventory>/known_hosts`, replacing an older entry for the same address. Returns the
/// fingerprint to verify out of band.
pub fn pin(inv: &Inventory, machine: Machine<'_>) -> Result<String, PinError> {
    let ssh = machine.ssh();
    if let Some(key) = &ssh.host_key {
        return Err(PinError::AlreadyPinned(key.place.clone()));
    }
    let address = ssh
        .address
        .as_deref()
        .ok_or_else(|| PinError::NoAddress(machine.place().clone()))?;
    let port = ssh.port.unwrap_or(22).to_string();
    let scan = Command::new("ssh-keyscan")
        .args(["-T", "5", "-t", "ed25519", "-p", &port, address])
        .output()
        .map_err(PinError::Keyscan)?;
    let name = known_hosts_name(address, ssh.port);
    let key = String::from_utf8_lossy(&scan.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let mut parts = l.split_whitespace();
            let (_host, kind, blob) = (parts.next()?, parts.next()?, parts.next()?);
            Some(format!("{kind} {blob}"))
        })
        .ok_or_else(|| PinError::NoKey {
            address: address.to_string(),
            port: port.clone(),
            stderr: String::from_utf8_lossy(&scan.stderr).trim().to_string(),
        })?;
    super::check_host_key(&key).map_err(PinError::BadKey)?;
    record_host_key(&inv.dir, &name, &key)?;
    Ok(fingerprint(&key))
}

/// Records `key` for the known_hosts name `name` in `<inventory>/known_hosts`, replacing an
/// older entry for the same name (atomically: temporary file, then rename).
pub fn record_host_key(
    dir: &std::path::Path,
    name: &str,
    key: &str,
) -> Result<(), KnownHostsError> {
    let path = dir.join("known_hosts");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut text: String = old
        .lines()
        .filter(|l| l.split_whitespace().next() != Some(name))
        .map(|l| format!("{l}\n"))
        .collect();
    if text.is_empty() {
        text.push_str("# Host keys pinned by `picaops inventory pin` (trust on first use).\n");
    }
    text.push_str(&format!("{name} {key}\n"));
    let failed = |source| KnownHostsError {
        path: path.clone(),
        source,
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
    tmp.write_all(text.as_bytes()).map_err(failed)?;
    tmp.as_file().sync_all().map_err(failed)?;
    tmp.persist(&path).map_err(|e| failed(e.error))?;
    Ok(())
}

/// `SHA256:…` fingerprint of a public key line, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &str) -> String {
    let blob = key.split_whitespace().nth(1).unwrap_or("");
    match super::check::decode_base64(blob) {
        Some(bytes) => {
            let digest = Sha256::digest(&bytes);
            let b64 = encode_base64(&digest);
            format!(
                "{} SHA256:{}",
                key.split_whitespace().next().unwrap_or("?"),
                b64.trim_end_matches('=')
            )
        }
        None => "(unreadable key)".into(),
    }
}

fn encode_base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_matches_ssh_keygen() {
        // What `ssh-keygen -lf` prints for this key.
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        assert_eq!(
            fingerprint(key),
            "ssh-ed25519 SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"
        );
    }
}
