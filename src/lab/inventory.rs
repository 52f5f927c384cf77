//! The lab's own picaops inventory (sites.yml, hosts.yml, groups.yml) and the known_hosts file
//! made from the pinned host keys. Rendering is pure text; writing is atomic (temporary file,
//! then rename) so a reader never sees half a file.

use std::path::Path;

use super::topology::{Role, HOSTS, SITES};
use super::LabError;

/// Header of every file the lab writes into its inventory.
const HEADER: &str =
    "# Written by `picaops lab up` for the lab on this machine; rewritten at every run.\n";

pub fn sites_yml() -> String {
    let mut s = String::from(HEADER);
    s.push_str("sites:\n");
    for site in SITES {
        s.push_str(&format!(
            "  {}:\n    description: {}\n    backs_up_to: {}\n",
            site.name, site.description, site.backs_up_to
        ));
    }
    s
}

/// hosts.yml, with each host's public host key (`ssh-ed25519 AAAA…`) pinned.
/// `host_key(name)` gives that key; the identity file is relative to the inventory directory.
pub fn hosts_yml(host_key: &dyn Fn(&str) -> String) -> String {
    let mut s = String::from(HEADER);
    s.push_str("hosts:\n");
    for h in HOSTS {
        let (hypervisor, group) = match h.role {
            Role::Hypervisor => ("libvirt", "hypervisors, docker_hosts"),
            Role::Directory => ("none", "directory"),
        };
        s.push_str(&format!(
            "  {name}:\n    site: {site}\n    description: {desc}\n    address: {addr}\n    \
             port: 22\n    user: root\n    identity_file: ../id_ed25519\n    host_key: {key}\n    \
             hypervisor: {hypervisor}\n{capacity}    groups: [{group}]\n",
            capacity = match h.role {
                // Small: what the lab's TCG guests take, so a recovery plan is checked for real.
                Role::Hypervisor => "    capacity: { vcpus: 4, memory: 1GiB, disk: 4GiB }\n",
                Role::Directory => "",
            },
            name = h.name,
            site = h.site,
            desc = h.description,
            addr = h.address,
            key = host_key(h.name),
        ));
    }
    s
}

pub fn groups_yml() -> String {
    let mut s = String::from(HEADER);
    s.push_str(
        "groups:\n  hypervisors:\n    description: lab hypervisors (containers with Docker, libvirt/QEMU and restic)\n  \
         docker_hosts:\n    description: machines that run Docker services (the base playbooks' /DATA and Docker plays)\n  \
         directory:\n    description: the lab's LDAP server (slapd)\n\
         vars:\n  domain: lab.picasoft.test\n  \
         # Containers share this machine's clock: chrony is configured and enabled, never started.\n  \
         ntp_start: false\n  \
         # The lab's inner Docker engines run without iptables (no NAT here) on overlay2.\n  \
         docker_daemon_extra: {iptables: false, storage-driver: overlay2}\n",
    );
    s
}

/// access.yml: the lab's slapd (Picasoft's scheme and levels), its CA, the secrets directory and
/// the break-glass key, all relative to the inventory directory; with `recovery`, the job that
/// keeps the directory and where it comes back (the lab inventory has the backup jobs; the VM
/// inventory, which has none, says nothing of it).
pub fn access_yml(recovery: bool) -> String {
    let ldap = HOSTS
        .iter()
        .find(|h| h.role == Role::Directory)
        .map_or("ldap", |h| h.address);
    let mut s = String::from(HEADER);
    s.push_str(&format!(
        "# Lab only: the secrets are public (see ../secrets).\n\
         access:\n  directory:\n    url: ldaps://{ldap}:636\n    base: dc=picasoft,dc=net\n    \
         ca_file: ../ca.crt\n    admin_dn: cn=admin,dc=picasoft,dc=net\n    admin_password: ldap-admin\n    \
         reader_dn: cn=reader,dc=picasoft,dc=net\n{recovery}  \
         renewal:\n    semester_starts: [\"02-15\", \"09-01\"]\n    grace_days: 30\n  \
         cache_lifetime: 6h\n  \
         break_glass:\n    user: root\n    identity_file: ../break-glass\n  \
         # Reminders before access ends: mailed by caribou's timer through the lab's mail server\n  \
         # (exim on the directory host, STARTTLS + AUTH), delivered to its Maildir.\n  \
         remind:\n    machine: caribou\n    schedule: \"*-*-* 09:00\"\n    thresholds: [30, 7, 1]\n    \
         smtp:\n      host: {ldap}\n      port: 587\n      from: \"Picasoft lab tech team <tech@lab.picasoft.test>\"\n      \
         user: picaops\n      password: smtp-picaops\n      ca_file: ../ca.crt\n\
         secrets:\n  store: files\n  dir: ../secrets\n",
        recovery = if recovery {
            "    reader_password: ldap-reader\n    \
             # What `site recover compiegne` brings back at Toulouse (bob has slapd's tools).\n    \
             backup: ldap-directory\n    recover_to: bob\n"
        } else {
            "    reader_password: ldap-reader\n"
        }
    ));
    s
}

/// The files of the lab's VM inventory besides vms.yml (`key`: each host's pinned key).
pub fn vm_inventory_files(key: &dyn Fn(&str) -> String) -> [(&'static str, String); 4] {
    [
        ("sites.yml", sites_yml()),
        ("hosts.yml", hosts_yml(key)),
        ("groups.yml", groups_yml()),
        ("access.yml", access_yml(false)),
    ]
}

/// backups.yml: one job per site, each to the other site, over SSH, append-only: Toulouse's to
/// a directory on alice, Compiègne's under bob's /srv/restic-rest (where an earlier picaops's
/// rest-server kept them: `kind: rest`). Each backs up a directory and a
/// PostgreSQL database from the container `lab-db` (the tests start it). And the data of two
/// services, each to the other site: hello's files (bob) and notes' database (alice). And the
/// directory (ldap, Compiègne) to Toulouse, what brings logins back when Compiègne is lost.
pub fn backups_yml() -> String {
    let mut s = String::from(HEADER);
    s.push_str(
        "# Lab only: the repository passwords are public (see ../secrets).\n\
         backups:\n  \
         bob-app:\n    host: bob\n    \
         description: Toulouse's lab data (files and a PostgreSQL database) to Compiègne, append-only\n    \
         paths: [/srv/lab-app/files]\n    exclude: [\"*.tmp\"]\n    \
         dumps:\n      - { kind: postgres, container: lab-db, database: app }\n    \
         schedule: \"*-*-* 02:30\"\n    \
         retention: { keep_daily: 7, keep_weekly: 4, keep_monthly: 6 }\n    \
         repository: { kind: sftp, host: alice, path: /srv/restic/bob }\n    \
         password: restic-bob\n    max_age: 26h\n  \
         alice-app:\n    host: alice\n    \
         description: Compiègne's lab data to Toulouse, append-only\n    \
         paths: [/srv/lab-app/files]\n    \
         dumps:\n      - { kind: postgres, container: lab-db, database: app }\n    \
         schedule: \"*-*-* 03:00\"\n    \
         retention: { keep_daily: 7, keep_weekly: 4, keep_monthly: 6 }\n    \
         repository: { kind: rest, host: bob, path: alice, append_only: true }\n    \
         password: restic-alice\n    max_age: 26h\n  \
         hello:\n    service: hello\n    \
         description: the hello service's files (Toulouse) to Compiègne, what `site recover toulouse` brings back\n    \
         paths: [/DATA/hello]\n    \
         schedule: \"*-*-* 02:45\"\n    \
         retention: { keep_daily: 7, keep_weekly: 4 }\n    \
         repository: { kind: sftp, host: alice, path: /srv/restic/hello }\n    \
         password: restic-hello\n    max_age: 26h\n  \
         notes:\n    service: notes\n    \
         description: the notes service's PostgreSQL (Compiègne) to Toulouse, what `site recover compiegne` brings back\n    \
         dumps:\n      - { kind: postgres, container: notes-db-1, database: notes }\n    \
         schedule: \"*-*-* 03:15\"\n    \
         retention: { keep_daily: 7, keep_weekly: 4 }\n    \
         repository: { kind: rest, host: bob, path: notes, append_only: true }\n    \
         password: restic-notes\n    max_age: 26h\n  \
         ldap-directory:\n    host: ldap\n    \
         description: the lab's directory (Compiègne) to Toulouse, with its certificate and slapd's settings\n    \
         paths: [/etc/ldap/tls, /etc/default/slapd]\n    \
         dumps:\n      - { kind: ldap, database: \"dc=picasoft,dc=net\" }\n    \
         schedule: \"*-*-* 03:30\"\n    \
         retention: { keep_daily: 7, keep_weekly: 4 }\n    \
         repository: { kind: rest, host: bob, path: ldap, append_only: true }\n    \
         password: restic-ldap\n    max_age: 26h\n",
    );
    s
}

/// vms.yml of the lab's VM inventory: one VM per site, on bob (Toulouse) and alice (Compiègne),
/// running the lab guest (busybox + dropbear, see images/guest-build.sh) on the host-only bridge
/// vmbr0 of its hypervisor, reached through it as jump host. `vm_accel: tcg`: nested KVM hangs
/// on the machines the lab runs on.
pub fn vms_yml() -> String {
    let mut s = String::from(HEADER);
    s.push_str(
        "# The lab VMs. Only in this VM inventory (inventory-vms/), so that applying playbooks to\n\
         # the lab's hosts (`hosts: all`) never creates VMs or tries to converge them.\nvms:\n",
    );
    for (name, host, site, ip) in LAB_VMS {
        s.push_str(&format!(
            r#"  {name}:
    host: {host}
    description: lab VM in {site} (busybox guest, direct kernel boot)
    user: root
    identity_file: ../id_ed25519
    vcpus: 1
    memory: 192MiB
    disks: [{{ size: 256MiB, pool: default }}]
    network: {{ bridge: vmbr0, address: {ip}/24, gateway: 10.61.0.1 }}
    image: picaops-lab-guest
    start_at_boot: true
    groups: [lab_vms]
"#
        ));
    }
    s.push_str(
        r#"groups:
  lab_vms:
    description: lab VMs (a busybox guest, files and commands only; no apt, no systemd)
    vars: {vm_accel: tcg}
"#,
    );
    s
}

/// The lab VMs: (name, hypervisor, site, address on the hypervisor's vmbr0).
pub const LAB_VMS: [(&str, &str, &str, &str); 2] = [
    ("vm-tls", "bob", "toulouse", "10.61.0.10"),
    ("vm-cpn", "alice", "compiegne", "10.61.0.20"),
];

/// The playbook the lab VMs are converged with (`<lab>/playbooks/lab-vms.yml`).
pub const VM_PLAYBOOK: &str = r#"# Written by `picaops lab up`: what the lab VMs are converged with. Their guest is busybox:
# files and commands only (no apt, no systemd).
- name: lab VMs
  hosts: lab_vms
  tasks:
    - name: a file on the VM's own disk, proving it was converged
      copy:
        dest: /data/picaops-converged
        content: "converged by picaops: {{ inventory_hostname }} in {{ site }}\n"
        mode: "0644"
"#;

/// The lab's VM inventory (`<lab>/inventory-vms/`: the lab inventory's files plus vms.yml) and
/// its playbook. Pinned VM host keys land in its own known_hosts, written by picaops.
pub fn write_vm_inventory(lab_dir: &Path, files: &[(&str, String)]) -> Result<(), LabError> {
    let dir = lab_dir.join("inventory-vms");
    for (name, text) in files {
        write_atomically(&dir.join(name), text)?;
    }
    write_atomically(&dir.join("vms.yml"), &vms_yml())?;
    write_atomically(&lab_dir.join("playbooks").join("lab-vms.yml"), VM_PLAYBOOK)
}

/// The lab's secrets directory (0700, files 0600): the public lab passwords of its slapd and
/// of its backup repositories.
/// The lab mail server's one account (`picaops`), also given to exim by `lab up`.
pub const SMTP_PASSWORD: &str = "picaops-lab-smtp-4f1c9d";

pub fn write_secrets(dir: &Path) -> Result<(), LabError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| LabError::io(dir, e))?;
    for (name, value) in [
        ("ldap-admin", "picaops-lab"),
        ("ldap-reader", "picaops-lab-reader"),
        ("restic-bob", "picaops-lab-restic-bob"),
        ("restic-alice", "picaops-lab-restic-alice"),
        ("restic-hello", "picaops-lab-restic-hello"),
        ("restic-notes", "picaops-lab-restic-notes"),
        ("restic-ldap", "picaops-lab-restic-ldap"),
        ("smtp-picaops", SMTP_PASSWORD),
    ] {
        let path = dir.join(name);
        write_atomically(&path, &format!("{value}\n"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| LabError::io(&path, e))?;
    }
    Ok(())
}

/// The lab's Compose templates, written under `services/` beside the inventory directory.
pub const SERVICE_TEMPLATES: [(&str, &str); 3] = [
    ("hello", include_str!("images/app-hello.compose.yml.j2")),
    ("pad", include_str!("images/app-pad.compose.yml.j2")),
    ("notes", include_str!("images/app-notes.compose.yml.j2")),
];

/// The lab's public service secrets (in the `files` store with the LDAP passwords).
pub const SERVICE_SECRETS: [(&str, &str); 3] = [
    ("hello-api-token", "lab-hello-token-5f2c9e"),
    ("pad-admin-password", "lab-pad-admin-8d41b7"),
    ("notes-token", "lab-notes-token-c3a670"),
];

/// services.yml: three services across two hosts at two sites (hello on bob in Toulouse; pad
/// and notes on alice in Compiègne), each with its template, version, port, environment and
/// secrets, on the lab's web app image (`picaops-lab/web`, see `super::apps`).
pub fn services_yml() -> String {
    let mut s = String::from(HEADER);
    s.push_str(
        "# Lab only: the secrets are public (see ../secrets). Templates in ../services/.\n\
         services:\n  \
         hello:\n    host: bob\n    description: lab web service in Toulouse\n    \
         compose: ../services/hello/compose.yml.j2\n    vars: {version: \"1.0\", port: 18080}\n    \
         env: {GREETING: bonjour}\n    secrets: {API_TOKEN: hello-api-token}\n    \
         data: [/DATA/hello]\n    backup: hello\n    \
         health: {timeout: 60s}\n  \
         pad:\n    host: alice\n    description: lab web service in Compiègne (a secret file, an HTTP probe)\n    \
         compose: ../services/pad/compose.yml.j2\n    vars: {version: \"1.0\", port: 18081}\n    \
         env: {GREETING: salut}\n    secret_files: {admin_password: pad-admin-password}\n    \
         health: {http: \"http://127.0.0.1:18081/health\", timeout: 60s}\n  \
         notes:\n    host: alice\n    description: lab web service and its PostgreSQL\n    \
         compose: ../services/notes/compose.yml.j2\n    vars: {version: \"1.0\", port: 18082}\n    \
         env: {GREETING: coucou}\n    secrets: {NOTES_TOKEN: notes-token}\n    \
         data: [/DATA/notes/db]\n    backup: notes\n    health: {timeout: 90s}\n",
    );
    s
}

/// The services part of the lab: services.yml, the templates under `services/`, their secrets.
pub fn write_services(lab_dir: &Path) -> Result<(), LabError> {
    use std::os::unix::fs::PermissionsExt;
    write_atomically(&lab_dir.join("inventory/services.yml"), &services_yml())?;
    for (name, text) in SERVICE_TEMPLATES {
        write_atomically(
            &lab_dir.join(format!("services/{name}/compose.yml.j2")),
            text,
        )?;
    }
    let dir = lab_dir.join("secrets");
    for (name, value) in SERVICE_SECRETS {
        let path = dir.join(name);
        write_atomically(&path, &format!("{value}\n"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| LabError::io(&path, e))?;
    }
    Ok(())
}

/// An OpenSSH known_hosts file: one line per host, its address and pinned key.
pub fn known_hosts(host_key: &dyn Fn(&str) -> String) -> String {
    HOSTS
        .iter()
        .map(|h| format!("{} {}\n", h.address, host_key(h.name)))
        .collect()
}

/// `ssh-ed25519 AAAA… comment` → `ssh-ed25519 AAAA…` (the part that identifies the key).
pub fn key_without_comment(public_key_line: &str) -> String {
    public_key_line
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Removes the lab-written YAML files of `dir` not in `current` (left by another picaops
/// version's `lab up`), so the lab inventory is exactly what this version writes. Files
/// without the lab's header are someone's own and stay.
pub fn remove_stale(dir: &Path, current: &[&str]) -> Result<(), LabError> {
    let entries = std::fs::read_dir(dir).map_err(|e| LabError::io(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".yml") || current.contains(&name.as_str()) {
            continue;
        }
        let path = entry.path();
        if std::fs::read_to_string(&path).is_ok_and(|t| t.starts_with(HEADER)) {
            std::fs::remove_file(&path).map_err(|e| LabError::io(&path, e))?;
        }
    }
    Ok(())
}

/// Writes `text` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), LabError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&tmp, text).map_err(|e| LabError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| LabError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_key(host: &str) -> String {
        format!("ssh-ed25519 AAAAkeyof{host}")
    }

    #[test]
    fn sites_back_up_to_each_other() {
        let text = sites_yml();
        assert!(text.contains(
            "sites:\n  toulouse:\n    description: lab copy of Tetaneutral's room in Toulouse\n    backs_up_to: compiegne\n"
        ));
        assert!(text.contains(
            "  compiegne:\n    description: lab copy of the UTC server room in Compiègne\n    backs_up_to: toulouse\n"
        ));
    }

    #[test]
    fn hosts_carry_address_key_and_relative_identity() {
        let text = hosts_yml(&fake_key);
        assert!(text.contains(
            "  bob:\n    site: toulouse\n    description: lab hypervisor (container)\n    address: 172.30.1.11\n    \
             port: 22\n    user: root\n    identity_file: ../id_ed25519\n    host_key: ssh-ed25519 AAAAkeyofbob\n    \
             hypervisor: libvirt\n    capacity: { vcpus: 4, memory: 1GiB, disk: 4GiB }\n    \
             groups: [hypervisors, docker_hosts]\n"
        ));
        assert!(text.contains("  ldap:\n    site: compiegne\n"));
        assert!(text.contains("    hypervisor: none\n    groups: [directory]\n"));
        for name in ["bob", "alice", "caribou", "ldap"] {
            assert!(text.contains(&format!("\n  {name}:\n")), "{name} missing");
        }
    }

    #[test]
    fn groups_and_domain() {
        let text = groups_yml();
        assert!(text.contains("groups:\n  hypervisors:\n    description: "));
        assert!(text.contains("\n  directory:\n    description: "));
        assert!(text.contains("\n  docker_hosts:\n    description: "));
        assert!(text.contains("vars:\n  domain: lab.picasoft.test\n"));
        assert!(text.contains("\n  ntp_start: false\n"));
    }

    #[test]
    fn known_hosts_pins_every_address() {
        let text = known_hosts(&fake_key);
        assert!(text.contains("172.30.1.11 ssh-ed25519 AAAAkeyofbob\n"));
        assert!(text.contains("172.30.2.20 ssh-ed25519 AAAAkeyofldap\n"));
        assert_eq!(text.lines().count(), 4);
    }

    #[test]
    fn the_vm_inventory_loads_with_one_vm_per_site_reached_through_its_hypervisor() {
        let lab = tempfile::tempdir().unwrap();
        std::fs::write(
            lab.path().join("id_ed25519.pub"),
            "ssh-ed25519 AAAAlab admin\n",
        )
        .unwrap();
        let key = |_: &str| {
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
                .to_string()
        };
        // access.yml names the lab's CA beside the inventory.
        std::fs::write(lab.path().join("ca.crt"), "").unwrap();
        write_vm_inventory(lab.path(), &vm_inventory_files(&key)).unwrap();
        let inv = crate::inventory::load(&lab.path().join("inventory-vms"))
            .result
            .unwrap_or_else(|d| panic!("{d:?}"));
        let tls = &inv.vms["vm-tls"];
        assert_eq!(tls.ssh.address.as_deref(), Some("10.61.0.10"));
        assert_eq!(tls.ssh.jump.as_deref(), Some("root@172.30.1.11:22"));
        assert_eq!(
            inv.site_of(crate::inventory::Machine::Vm(&inv.vms["vm-cpn"]))
                .map(|s| s.name.as_str()),
            Some("compiegne")
        );
        let spec = crate::vm::VmSpec::from_inventory(&inv, tls).unwrap();
        assert_eq!(spec.accel, crate::vm::model::Accel::Tcg);
        assert_eq!(spec.admin_keys, vec!["ssh-ed25519 AAAAlab admin"]);
        spec.check_creatable().unwrap();
        assert!(lab.path().join("playbooks/lab-vms.yml").is_file());
    }

    #[test]
    fn comments_are_dropped_from_public_keys() {
        assert_eq!(
            key_without_comment("ssh-ed25519 AAAAC3 root@bob\n"),
            "ssh-ed25519 AAAAC3"
        );
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("inventory/hosts.yml");
        write_atomically(&p, "one").unwrap();
        write_atomically(&p, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
