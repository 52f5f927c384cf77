//! The lab's small certificate authority, made once on the workstation with `openssl`: a CA and
//! a server certificate for the directory host, so picaops and the hosts' access helper talk to
//! the lab's slapd over ldaps:// and verify it exactly as they would Picasoft's.

use std::path::Path;
use std::process::{Command, Stdio};

use super::LabError;

/// Creates `dir/ca.crt` (+ key) unless present, then `host_dir/ldap.crt` and `ldap.key` for
/// `address` (an IP subject alternative name) and `dns` names, unless present.
pub fn ensure(ca_dir: &Path, host_dir: &Path, address: &str, dns: &[&str]) -> Result<(), LabError> {
    let ca_crt = ca_dir.join("ca.crt");
    let ca_key = ca_dir.join("ca.key");
    std::fs::create_dir_all(ca_dir).map_err(|e| LabError::io(ca_dir, e))?;
    std::fs::create_dir_all(host_dir).map_err(|e| LabError::io(host_dir, e))?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "3650",
    ];
    if !(ca_crt.is_file() && ca_key.is_file()) {
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-x509"])
            .args(ec)
            .args(["-subj", "/CN=picaops lab CA", "-keyout"])
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca_crt);
        openssl(cmd, &ca_crt)?;
        // A new CA invalidates the certificates it did not sign.
        let _ = std::fs::remove_file(host_dir.join("ldap.crt"));
    }
    let crt = host_dir.join("ldap.crt");
    let key = host_dir.join("ldap.key");
    if crt.is_file() && key.is_file() {
        return Ok(());
    }
    let mut san = format!("IP:{address}");
    for d in dns {
        san.push_str(&format!(",DNS:{d}"));
    }
    let cnf = ca_dir.join("leaf.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[req]\ndistinguished_name = dn\n[dn]\n[leaf]\nbasicConstraints = critical,CA:FALSE\n\
             extendedKeyUsage = serverAuth\nsubjectAltName = {san}\n"
        ),
    )
    .map_err(|e| LabError::io(&cnf, e))?;
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-x509", "-config"])
        .arg(&cnf)
        .args(["-extensions", "leaf"])
        .args(ec)
        .args(["-subj", "/CN=ldap", "-CA"])
        .arg(&ca_crt)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt);
    openssl(cmd, &crt)
}

fn openssl(mut cmd: Command, what: &Path) -> Result<(), LabError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Tool {
            tool: "openssl".into(),
            detail: format!("{e} (install it: apt-get install openssl)"),
        })?;
    if !out.status.success() {
        return Err(LabError::Tool {
            tool: "openssl".into(),
            detail: format!(
                "could not create {}: {}",
                what.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}
