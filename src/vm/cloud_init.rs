//! The cloud-init user-data both drivers give a new VM, and the script lines that make its SSH
//! host key on the hypervisor, so picaops knows the public key before the VM's first boot.
//!
//! The private key is made by `ssh-keygen` in the create script's private scratch directory
//! (`$w`, mode 0700 under `umask 077`) and goes from there into the user-data file only: it never
//! travels to or from picaops, never appears on a command line, and the script prints only the
//! public half (`@@hostkey TYPE KEY`). Used by [`super::libvirt`] (NoCloud seed ISO) and
//! [`super::proxmox`] (a `cicustom` snippet); neither driver imports the other.

use std::fmt::Write as _;

use super::model::VmSpec;

/// The first part of the user-data: root may log in with the admin keys only, and the host keys
/// the image shipped with are replaced by the one that follows (`ssh_keys:`, appended by
/// [`append_host_key`]). `hostname`: also set the hostname (Proxmox: a custom user-data replaces
/// the one Proxmox writes, which is where it sets it; libvirt's seed says it in `meta-data`).
pub fn user_data_head(spec: &VmSpec, hostname: bool) -> String {
    let mut s = String::from("#cloud-config\n");
    if hostname {
        let _ = writeln!(s, "hostname: {}\nmanage_etc_hosts: true", spec.name);
    }
    s.push_str(
        "disable_root: false\nssh_pwauth: false\nssh_deletekeys: true\nssh_authorized_keys:\n",
    );
    for k in &spec.admin_keys {
        // A JSON string is a YAML double-quoted scalar: the key stays one value, whatever it
        // holds (a line break must not become a cloud-config key such as `runcmd:`).
        let _ = writeln!(
            s,
            "  - {}",
            serde_json::to_string(k).unwrap_or_else(|_| "\"\"".into())
        );
    }
    s
}

/// Script lines that make the VM's ed25519 host key as `$w/host_key` (+ `.pub`). The VM's name
/// was checked by `check_name` (a plain word).
pub fn generate_host_key(script: &mut String, vm: &str) {
    let _ = writeln!(
        script,
        "ssh-keygen -q -t ed25519 -N '' -C {} -f \"$w/host_key\" </dev/null || fail 'ssh-keygen failed'",
        crate::transport::quote::quote(&format!("root@{vm}"))
    );
}

/// Script lines that append the `ssh_keys:` section (the key made by [`generate_host_key`]) to
/// the user-data file `path` (a shell word). The private key is indented as a YAML literal block.
pub fn append_host_key(script: &mut String, path: &str) {
    let _ = writeln!(
        script,
        "{{ echo 'ssh_keys:'; echo '  ed25519_private: |'; sed 's/^/    /' \"$w/host_key\"; \
         printf '  ed25519_public: %s\\n' \"$(cat \"$w/host_key.pub\")\"; }} >> {path} || fail 'could not write the host key into the user-data'"
    );
}

/// The script line that tells picaops the public key to pin (`@@hostkey TYPE KEY`).
pub fn announce_host_key(script: &mut String) {
    script.push_str("printf '@@hostkey %s\\n' \"$(cut -d' ' -f1,2 \"$w/host_key.pub\")\"\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::model::Accel;

    fn spec(keys: Vec<String>) -> VmSpec {
        VmSpec {
            name: "pica01".into(),
            host: "bob".into(),
            vcpus: None,
            memory_mib: None,
            disks: vec![],
            network: None,
            image: None,
            start_at_boot: true,
            admin_keys: keys,
            accel: Accel::Kvm,
            snippets_storage: None,
            declared_at: "vms.yml:1:1".into(),
        }
    }

    #[test]
    fn an_admin_key_stays_one_key_in_the_cloud_config() {
        let key = "ssh-ed25519 AAAA x\"\nruncmd: [touch /pwned]\n#\\";
        let doc: serde_json::Value =
            serde_saphyr::from_str(&user_data_head(&spec(vec![key.into()]), true)).unwrap();
        assert_eq!(
            doc["ssh_authorized_keys"],
            serde_json::json!([key]),
            "{doc}"
        );
        assert!(doc.get("runcmd").is_none(), "{doc}");
        assert_eq!(doc["hostname"], "pica01");
    }

    #[test]
    fn the_host_key_lines_make_a_user_data_that_cloud_init_reads() {
        // Run the three parts for real (ssh-keygen included) and read the result as YAML.
        let dir = tempfile::tempdir().unwrap();
        let mut s = String::from("set -u\nfail() { echo \"@@error $*\"; exit 3; }\nw=\"$PWD\"\n");
        generate_host_key(&mut s, "pica01");
        crate::vm::driver::write_file(
            &mut s,
            "\"$w/user-data\"",
            &user_data_head(&spec(vec!["ssh-ed25519 AAAAadmin".into()]), false),
        );
        append_host_key(&mut s, "\"$w/user-data\"");
        announce_host_key(&mut s);
        let out = std::process::Command::new("sh")
            .args(["-c", &s])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        let public = std::fs::read_to_string(dir.path().join("host_key.pub")).unwrap();
        let announced = stdout
            .lines()
            .find_map(|l| l.strip_prefix("@@hostkey "))
            .unwrap();
        assert!(public.starts_with(announced), "{announced} vs {public}");
        assert!(
            !stdout.contains("PRIVATE"),
            "the private key is never printed"
        );
        let text = std::fs::read_to_string(dir.path().join("user-data")).unwrap();
        let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let private = std::fs::read_to_string(dir.path().join("host_key")).unwrap();
        assert_eq!(doc["ssh_keys"]["ed25519_private"], private.as_str());
        assert_eq!(doc["ssh_keys"]["ed25519_public"], public.trim());
    }
}
