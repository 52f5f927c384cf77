//! SSH keys of the lab, generated once on the workstation with `ssh-keygen`: the admin key
//! (`id_ed25519`) and one ed25519 host key per lab host, so every host key is known (and pinned
//! in the inventory) before the host even starts.

use std::path::Path;
use std::process::{Command, Stdio};

use super::LabError;

/// Creates an ed25519 key pair at `path` (and `path.pub`) unless it already exists.
pub fn ensure(path: &Path, comment: &str) -> Result<(), LabError> {
    let public = path.with_extension("pub");
    if path.is_file() && public.is_file() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    }
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(&public);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Tool {
            tool: "ssh-keygen".into(),
            detail: format!("{e} (install openssh-client: apt-get install openssh-client)"),
        })?;
    if !out.status.success() {
        return Err(LabError::Tool {
            tool: "ssh-keygen".into(),
            detail: format!(
                "could not create {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

/// The public half of the key at `path`, as one line.
pub fn public(path: &Path) -> Result<String, LabError> {
    let p = path.with_extension("pub");
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .map_err(|e| LabError::io(&p, e))
}
