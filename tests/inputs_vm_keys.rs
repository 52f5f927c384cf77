//! A VM's admin keys (`vm_admin_keys`) reach its cloud-init seed and Proxmox's keys file: each
//! must be one public key line. A line break inside one would add a second key to the keys file
//! (or, before the seed quoted them, a cloud-config key such as `runcmd:`). Loaded from YAML
//! on disk as `picaops plan` does.

#[test]
fn an_admin_key_with_a_line_break_is_refused_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("inventory.yml"),
        "sites:\n  toulouse: { backs_up_to: compiegne }\n  compiegne: { backs_up_to: toulouse }\n\
         hosts:\n  bob: { site: toulouse, address: 10.0.0.1, hypervisor: libvirt }\n\
         vms:\n  pica01:\n    host: bob\n    image: debian-12\n    vars:\n      \
         vm_admin_keys: [\"ssh-ed25519 AAAAgood admin\", \"ssh-ed25519 AAAA x\\nruncmd: [reboot]\"]\n",
    )
    .unwrap();
    let inv = match picaops::inventory::load(dir.path()).result {
        Ok(inv) => inv,
        Err(d) => panic!("{d:#?}"),
    };
    let err = picaops::vm::VmSpec::from_inventory(&inv, &inv.vms["pica01"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not one public key line"), "{err}");
    assert!(
        err.contains("inventory.yml:11:7"),
        "the place of the variable: {err}"
    );
    assert!(
        err.contains("ssh-ed25519 AAAA x\\nruncmd"),
        "shown on one line: {err}"
    );
}
