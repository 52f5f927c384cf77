//! The shell scripts of a failback, one per machine and step. Each prints `@@…` lines for the
//! workstation and `@@error WHY` before a non-zero exit; what the tools print goes to stderr.
//! None of them deletes anything: containers are stopped or taken down without `-v`, project
//! directories, data paths and job files are moved aside, VMs are shut down and renamed.

use std::path::Path;

use crate::backup::units;
use crate::inventory::HypervisorKind;
use crate::service::render::PROJECTS_DIR;
use crate::transport::quote::quote as q;

const PRELUDE: &str = "set -u\n\
fail() { echo \"@@error $*\"; exit 3; }\n\
compose() {\n  \
  if docker compose version >/dev/null 2>&1; then docker compose \"$@\";\n  \
  elif command -v docker-compose >/dev/null 2>&1; then docker-compose \"$@\";\n  \
  else fail 'neither docker compose nor docker-compose is installed here'; fi\n}\n";

pub(super) fn project_dir(service: &str) -> String {
    format!("{PROJECTS_DIR}/{service}")
}

/// Stops the recovery place's copies of `services` (containers stopped, nothing removed) and
/// the timers of `jobs` there, so that nothing is written after the backup that follows.
///
/// The containers named in `keep` (the databases the backup dumps) go on running: a dump reads
/// a live database, and with everything else of the service stopped nothing writes to it.
pub fn stop_script(services: &[String], jobs: &[String], keep: &[String]) -> String {
    let mut s = String::from(PRELUDE);
    for job in jobs {
        s.push_str(&format!(
            "systemctl stop {} >/dev/null 2>&1 || true\n",
            q(&units::timer_name(job))
        ));
    }
    let kept = q(&format!(" {} ", keep.join(" ")));
    for name in services {
        let (d, n) = (q(&project_dir(name)), q(name));
        let stop = if keep.is_empty() {
            format!("compose -p {n} stop >&2")
        } else {
            format!(
                "for c in $(docker ps -q --filter label=com.docker.compose.project={n}); do \
                 c_name=$(docker inspect -f '{{{{.Name}}}}' \"$c\"); case {kept} in *\" ${{c_name#/}} \"*) ;; \
                 *) docker stop \"$c\" >&2 || exit 1 ;; esac; done"
            )
        };
        s.push_str(&format!(
            "if [ -d {d} ]; then cd {d} && ( {stop} ) || fail \"docker compose -p \"{n}\" stop failed in \"{d}; cd /; \
             echo \"@@stopped service \"{n}; else echo \"@@absent service \"{n}; fi\n"
        ));
    }
    s
}

/// Starts the recovery place's copies again (a failback that did not succeed) and the timers.
pub fn start_script(services: &[String], jobs: &[String]) -> String {
    let mut s = String::from(PRELUDE);
    for name in services {
        let (d, n) = (q(&project_dir(name)), q(name));
        s.push_str(&format!(
            "if [ -d {d} ]; then cd {d} && compose -p {n} start >&2 || fail \"docker compose -p \"{n}\" start failed in \"{d}; cd /; \
             echo \"@@started service \"{n}; fi\n"
        ));
    }
    for job in jobs {
        s.push_str(&format!(
            "systemctl start {} >/dev/null 2>&1 || true\n",
            q(&units::timer_name(job))
        ));
    }
    s
}

/// At home, before the restore: the job's timer and any running backup stopped, the stale home
/// copy stopped, and each data path moved aside (kept) so the snapshot is restored exactly.
pub fn home_prepare_script(
    service: &str,
    job: Option<&str>,
    data: &[String],
    stamp: &str,
) -> String {
    let mut s = String::from(PRELUDE);
    if let Some(job) = job {
        s.push_str(&format!(
            "systemctl stop {} {} >/dev/null 2>&1 || true\n",
            q(&units::timer_name(job)),
            q(&units::service_name(job))
        ));
    }
    let (d, n) = (q(&project_dir(service)), q(service));
    s.push_str(&format!(
        "if [ -d {d} ]; then cd {d} && compose -p {n} stop >&2 || fail \"docker compose -p \"{n}\" stop failed in \"{d}; cd /; fi\n"
    ));
    for path in data {
        let (p, aside) = (q(path), q(&format!("{path}.before-failback-{stamp}")));
        s.push_str(&format!(
            "if [ -e {p} ]; then mv {p} {aside} || fail \"cannot move \"{p}\" aside (a mount point?): move what it holds aside by hand, then run the failback again\"; \
             echo \"@@aside \"{p}\" \"{aside}; fi\n"
        ));
    }
    s
}

/// At home, once the services are healthy: the jobs' timers started again.
pub fn home_timers_script(jobs: &[String]) -> String {
    let mut s = String::from("set -u\n");
    for job in jobs {
        s.push_str(&format!(
            "systemctl start {} >/dev/null 2>&1 || true\n",
            q(&units::timer_name(job))
        ));
    }
    s
}

/// At the recovery place, once home is healthy: each project taken down (`down` without `-v`:
/// volumes and data stay) and its directory moved under `.removed/`, as `--prune-services`
/// does; each moved job's timer disabled and its job file set aside, so the stale copy is never
/// backed up under the home's name again.
pub fn take_down_script(services: &[String], jobs: &[String], stamp: &str) -> String {
    let mut s = String::from(PRELUDE);
    for name in services {
        let (d, n) = (q(&project_dir(name)), q(name));
        let to = q(&format!("{PROJECTS_DIR}/.removed/{name}-{stamp}"));
        s.push_str(&format!(
            "if [ -d {d} ]; then cd {d} && compose -p {n} -f compose.yaml down --remove-orphans >&2 || fail \"docker compose -p \"{n}\" down failed in \"{d}; cd /; \
             mkdir -p {removed} && mv {d} {to} || fail \"cannot move \"{d}\" aside\"; echo \"@@removed service \"{n}\" \"{to}; fi\n",
            removed = q(&format!("{PROJECTS_DIR}/.removed")),
        ));
    }
    for job in jobs {
        let file = crate::backup::deploy::data_job_file(job);
        let dir = file.parent().unwrap_or(Path::new("/")).join(".failed-back");
        let to = dir.join(format!("{job}.json-{stamp}"));
        s.push_str(&format!(
            "systemctl disable --now {t} >/dev/null 2>&1 || true\n\
             if [ -f {f} ]; then mkdir -p {dir} && mv {f} {to} || fail \"cannot set \"{f}\" aside\"; echo \"@@set aside job \"{j}; fi\n",
            t = q(&units::timer_name(job)),
            f = q(&file.display().to_string()),
            dir = q(&dir.display().to_string()),
            to = q(&to.display().to_string()),
            j = q(job),
        ));
    }
    s
}

/// Waits for `vm` to be shut off (libvirt): a graceful shutdown, then, after two minutes,
/// libvirt's graceful destroy (its services were stopped and backed up before).
fn libvirt_shutdown(n: &str) -> String {
    format!(
        "if [ \"$(virsh -q domstate {n})\" != \"shut off\" ]; then\n  \
         virsh -q shutdown {n} >&2 || fail 'virsh shutdown failed'\n  \
         i=0; while [ \"$(virsh -q domstate {n})\" != \"shut off\" ] && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done\n  \
         [ \"$(virsh -q domstate {n})\" = \"shut off\" ] || virsh -q destroy --graceful {n} >&2 || fail 'the VM does not shut down'\nfi\n"
    )
}

fn proxmox_id(var: &str, name: &str) -> String {
    format!(
        "{var}=$(qm list | awk -v n={} '$2==n{{print $1}}')\n",
        q(name)
    )
}

/// At the recovery place: the VM's copy shut down, kept from starting with its host, and
/// renamed `aside` (disks kept), so the home copy is the only one under its name. Prints
/// `@@autostart enable|disable` (to undo) and `@@aside NAME`.
pub fn vm_aside_script(kind: HypervisorKind, vm: &str, aside: &str) -> String {
    let (n, a) = (q(vm), q(aside));
    let mut s = String::from(PRELUDE);
    match kind {
        HypervisorKind::Proxmox => {
            s.push_str(&proxmox_id("id", vm));
            s.push_str(&proxmox_id("done", aside));
            s.push_str(&format!(
                "if [ -z \"$id\" ] && [ -n \"$done\" ]; then echo \"@@aside \"{a}; exit 0; fi\n\
                 [ -n \"$id\" ] || fail \"no VM named \"{n}\" here\"\n\
                 on=$(qm config \"$id\" | sed -n 's/^onboot: *//p'); [ \"${{on:-0}}\" = 1 ] && echo '@@autostart enable' || echo '@@autostart disable'\n\
                 if [ \"$(qm status \"$id\" | awk '{{print $2}}')\" = running ]; then qm shutdown \"$id\" --timeout 120 >&2 || qm stop \"$id\" >&2 || fail 'the VM does not shut down'; fi\n\
                 qm set \"$id\" --onboot 0 --name {a} >&2 || fail 'qm set --name failed'\n\
                 echo \"@@aside \"{a}\n"
            ));
        }
        _ => {
            s.push_str(&format!(
                "if ! virsh -q dominfo {n} >/dev/null 2>&1; then\n  \
                 virsh -q dominfo {a} >/dev/null 2>&1 && {{ echo \"@@aside \"{a}; exit 0; }}\n  \
                 fail \"no VM named \"{n}\" here\"\nfi\n\
                 [ \"$(virsh -q dominfo {n} | sed -n 's/^Autostart: *//p')\" = enable ] && echo '@@autostart enable' || echo '@@autostart disable'\n"
            ));
            s.push_str(&libvirt_shutdown(&n));
            s.push_str(&format!(
                "virsh -q autostart --disable {n} >/dev/null || fail 'virsh autostart --disable failed'\n\
                 virsh -q domrename {n} {a} >/dev/null || fail 'virsh domrename failed'\n\
                 echo \"@@aside \"{a}\n"
            ));
        }
    }
    s
}

/// Undoes [`vm_aside_script`]: the recovery copy renamed back, started with its host again if
/// it was, and started.
pub fn vm_back_script(kind: HypervisorKind, vm: &str, aside: &str, autostart: bool) -> String {
    let (n, a) = (q(vm), q(aside));
    let mut s = String::from(PRELUDE);
    match kind {
        HypervisorKind::Proxmox => {
            s.push_str(&proxmox_id("id", aside));
            s.push_str(&format!(
                "if [ -n \"$id\" ]; then qm set \"$id\" --name {n} --onboot {on} >&2 || fail 'qm set --name failed'; fi\n",
                on = u8::from(autostart)
            ));
            s.push_str(&proxmox_id("id", vm));
            s.push_str(&format!(
                "[ -n \"$id\" ] || fail \"no VM named \"{n}\" here\"\n\
                 [ \"$(qm status \"$id\" | awk '{{print $2}}')\" = running ] || qm start \"$id\" >&2 || fail 'qm start failed'\n\
                 echo \"@@started vm \"{n}\n"
            ));
        }
        _ => {
            s.push_str(&format!(
                "if virsh -q dominfo {a} >/dev/null 2>&1; then virsh -q domrename {a} {n} >/dev/null || fail 'virsh domrename failed'; fi\n"
            ));
            if autostart {
                s.push_str(&format!("virsh -q autostart {n} >/dev/null || true\n"));
            }
            s.push_str(&format!(
                "[ \"$(virsh -q domstate {n})\" = running ] || virsh -q start {n} >/dev/null || fail 'virsh start failed'\n\
                 echo \"@@started vm \"{n}\n"
            ));
        }
    }
    s
}

/// At home: the VM's host key as picaops gave it when it was created (read from its own
/// cloud-init seed, `@@hostkey TYPE KEY`; libvirt), then the VM started.
pub fn vm_home_start_script(kind: HypervisorKind, vm: &str) -> String {
    let n = q(vm);
    let mut s = String::from(PRELUDE);
    match kind {
        HypervisorKind::Proxmox => {
            s.push_str(&proxmox_id("id", vm));
            s.push_str(&format!(
                "[ -n \"$id\" ] || fail \"no VM named \"{n}\" here\"\n\
                 [ \"$(qm status \"$id\" | awk '{{print $2}}')\" = running ] || qm start \"$id\" >&2 || fail 'qm start failed'\n\
                 echo \"@@started vm \"{n}\n"
            ));
        }
        _ => {
            s.push_str(&format!(
                "xml=$(virsh -q dumpxml --inactive {n} 2>/dev/null) || fail \"no VM named \"{n}\" here\"\n\
                 seed=$(printf '%s\\n' \"$xml\" | sed -n \"s:.*<source file='\\([^']*-seed\\.iso\\)'.*:\\1:p\" | head -n1)\n\
                 if [ -n \"$seed\" ] && [ -r \"$seed\" ] && command -v isoinfo >/dev/null 2>&1; then\n  \
                 key=$( (isoinfo -i \"$seed\" -R -x /user-data || isoinfo -i \"$seed\" -J -x /user-data) 2>/dev/null | sed -n 's/^ *ed25519_public: *\\([^ ]* [^ ]*\\).*/\\1/p' | head -n1)\n  \
                 [ -n \"$key\" ] && echo \"@@hostkey $key\"\nfi\n\
                 [ \"$(virsh -q domstate {n})\" = running ] || virsh -q start {n} >/dev/null || fail 'virsh start failed'\n\
                 echo \"@@started vm \"{n}\n"
            ));
        }
    }
    s
}

/// At home, when the VM's failback is undone: the home copy shut down again.
pub fn vm_home_stop_script(kind: HypervisorKind, vm: &str) -> String {
    let n = q(vm);
    let mut s = String::from(PRELUDE);
    match kind {
        HypervisorKind::Proxmox => {
            s.push_str(&proxmox_id("id", vm));
            s.push_str(
                "if [ -n \"$id\" ] && [ \"$(qm status \"$id\" | awk '{print $2}')\" = running ]; then qm shutdown \"$id\" --timeout 120 >&2 || qm stop \"$id\" >&2 || fail 'the VM does not shut down'; fi\n",
            );
        }
        _ => {
            s.push_str(&format!("virsh -q dominfo {n} >/dev/null 2>&1 || exit 0\n"));
            s.push_str(&libvirt_shutdown(&n));
        }
    }
    s.push_str(&format!("echo \"@@stopped vm \"{n}\n"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::driver::sandbox::{hostile, Sandbox};
    use std::path::Path;

    /// A `virsh` keeping each domain as a directory (`state`, `autostart`, `xml`) under
    /// `$SANDBOX/doms`, for the VM scripts.
    const VIRSH: &str = r#"[ "$1" = -q ] && shift
d="$SANDBOX/doms"; cmd=$1; shift
echo "virsh $cmd $*" >> "$SANDBOX/virsh.log"
case "$cmd" in
  dominfo) [ -d "$d/$1" ] || exit 1; echo "Name: $1"; echo "Autostart: $(cat "$d/$1/autostart")" ;;
  domstate) [ -d "$d/$1" ] || exit 1; cat "$d/$1/state" ;;
  shutdown) echo "shut off" > "$d/$1/state" ;;
  destroy) [ "$1" = --graceful ] && shift; echo "shut off" > "$d/$1/state" ;;
  autostart) if [ "$1" = --disable ]; then echo disable > "$d/$2/autostart"; else echo enable > "$d/$1/autostart"; fi ;;
  domrename) [ "$(cat "$d/$1/state")" = "shut off" ] || exit 1; [ ! -e "$d/$2" ] || exit 1; mv "$d/$1" "$d/$2" ;;
  start) echo running > "$d/$1/state" ;;
  dumpxml) [ "$1" = --inactive ] && shift; [ -d "$d/$1" ] || exit 1; cat "$d/$1/xml" ;;
  *) exit 2 ;;
esac"#;

    fn domain(sb: &Sandbox, name: &str, state: &str, autostart: &str, xml: &str) {
        let d = sb.path().join("doms").join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("state"), format!("{state}\n")).unwrap();
        std::fs::write(d.join("autostart"), format!("{autostart}\n")).unwrap();
        std::fs::write(d.join("xml"), xml).unwrap();
    }

    fn read(sb: &Sandbox, name: &str, what: &str) -> String {
        std::fs::read_to_string(sb.path().join("doms").join(name).join(what))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    fn tool(name: &str) -> bool {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    }

    #[test]
    fn a_vm_copy_is_set_aside_renamed_and_shut_off_and_comes_back_as_it_was() {
        let sb = Sandbox::new(&[("virsh", VIRSH)]);
        domain(&sb, "vm-tls", "running", "enable", "");
        let aside = "vm-tls-failed-back-20261206-091500";
        let script = vm_aside_script(HypervisorKind::Libvirt, "vm-tls", aside);
        let (code, out) = sb.run(&script);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("@@autostart enable\n"), "{out}");
        assert!(out.contains(&format!("@@aside {aside}\n")), "{out}");
        assert!(!sb.path().join("doms/vm-tls").exists(), "{out}");
        assert_eq!(read(&sb, aside, "state"), "shut off");
        assert_eq!(read(&sb, aside, "autostart"), "disable");
        // Again (a failback run twice): already aside, nothing more done.
        let (code, out) = sb.run(&script);
        assert_eq!((code, out.trim()), (0, format!("@@aside {aside}").as_str()));

        // Undone: its name back, started with its host again, running.
        let (code, out) = sb.run(&vm_back_script(
            HypervisorKind::Libvirt,
            "vm-tls",
            aside,
            true,
        ));
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("@@started vm vm-tls"), "{out}");
        assert!(!sb.path().join("doms").join(aside).exists());
        assert_eq!(read(&sb, "vm-tls", "state"), "running");
        assert_eq!(read(&sb, "vm-tls", "autostart"), "enable");
        let log = std::fs::read_to_string(sb.path().join("virsh.log")).unwrap();
        assert!(
            !log.contains("undefine") && !log.contains("destroy"),
            "{log}"
        );

        // No VM of that name: an error naming it.
        let (code, out) = sb.run(&vm_aside_script(HypervisorKind::Libvirt, "vm-x", "vm-x-a"));
        assert_eq!(code, 3, "{out}");
        assert!(out.contains("@@error no VM named vm-x here"), "{out}");
    }

    #[test]
    fn the_home_vm_is_started_and_its_own_host_key_read_from_the_seed_picaops_made() {
        if !tool("genisoimage") || !tool("isoinfo") {
            let why = "needs genisoimage and isoinfo (Debian's genisoimage): run `bash .ci/setup`";
            assert!(std::env::var_os("PICAOPS_REQUIRE_LAB").is_none(), "{why}");
            eprintln!("SKIPPED {why}");
            return;
        }
        let sb = Sandbox::new(&[("virsh", VIRSH)]);
        // A seed as the libvirt driver writes it (user-data with the VM's host key).
        let seed = sb.path().join("seed");
        std::fs::create_dir(&seed).unwrap();
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHomeCopyOfTheVm0123456789abcdefghijk";
        std::fs::write(
            seed.join("user-data"),
            format!("#cloud-config\nssh_keys:\n  ed25519_private: |\n    x\n  ed25519_public: {key} root@vm-tls\n"),
        )
        .unwrap();
        std::fs::write(seed.join("meta-data"), "instance-id: vm-tls\n").unwrap();
        let iso = sb.path().join("images/vm-tls-seed.iso");
        std::fs::create_dir_all(iso.parent().unwrap()).unwrap();
        let made = std::process::Command::new("genisoimage")
            .args(["-quiet", "-output"])
            .arg(&iso)
            .args(["-volid", "cidata", "-joliet", "-rock"])
            .arg(seed.join("user-data"))
            .arg(seed.join("meta-data"))
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        let xml = format!(
            "<domain><devices><disk type='file' device='cdrom'><source file='{}'/></disk></devices></domain>\n",
            iso.display()
        );
        domain(&sb, "vm-tls", "shut off", "enable", &xml);
        let (code, out) = sb.run(&vm_home_start_script(HypervisorKind::Libvirt, "vm-tls"));
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&format!("@@hostkey {key}\n")), "{out}");
        assert!(out.contains("@@started vm vm-tls"), "{out}");
        assert_eq!(read(&sb, "vm-tls", "state"), "running");
        // Without a seed: started, no key said (the pin stays as it is).
        domain(&sb, "vm-cpn", "shut off", "enable", "<domain/>");
        let (code, out) = sb.run(&vm_home_start_script(HypervisorKind::Libvirt, "vm-cpn"));
        assert_eq!(code, 0, "{out}");
        assert!(!out.contains("@@hostkey"), "{out}");
    }

    #[test]
    fn home_data_is_moved_aside_whole_and_kept_whatever_its_name() {
        let sb = Sandbox::new(&[(
            "systemctl",
            "echo \"systemctl $*\" >> \"$SANDBOX/systemctl.log\"",
        )]);
        let data = sb.path().join(hostile("data"));
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("sub/f1"), "stale").unwrap();
        let path = data.display().to_string();
        let script = home_prepare_script(
            "picaops-test-absent",
            Some("hello"),
            std::slice::from_ref(&path),
            "20261206-091500",
        );
        let (code, out) = sb.run(&script);
        assert_eq!(code, 0, "{out}");
        assert_eq!(sb.pwned(), Vec::<String>::new(), "{out}");
        let aside = format!("{path}.before-failback-20261206-091500");
        assert!(!data.exists(), "{out}");
        assert_eq!(
            std::fs::read_to_string(Path::new(&aside).join("sub/f1")).unwrap(),
            "stale"
        );
        assert!(out.contains(&format!("@@aside {path} {aside}\n")), "{out}");
        let log = std::fs::read_to_string(sb.path().join("systemctl.log")).unwrap();
        assert_eq!(
            log,
            "systemctl stop picaops-backup-hello.timer picaops-backup-hello.service\n"
        );
        // Nothing there (a first failback of new data): nothing moved, no error.
        let (code, out) = sb.run(&script);
        assert_eq!((code, out.contains("@@aside")), (0, false), "{out}");
        // A path that cannot be moved (a mount point): refused, saying what to do.
        std::fs::create_dir_all(&data).unwrap();
        let sb2 = Sandbox::new(&[("mv", "exit 1"), ("systemctl", "true")]);
        let (code, out) = sb2.run(&script);
        assert_eq!(code, 3, "{out}");
        assert!(
            out.contains("(a mount point?): move what it holds aside by hand"),
            "{out}"
        );
    }

    #[test]
    fn nothing_is_deleted_at_the_recovery_place() {
        let services = vec!["hello".to_string()];
        let jobs = vec!["hello".to_string()];
        for script in [
            stop_script(&services, &jobs, &[]),
            start_script(&services, &jobs),
            take_down_script(&services, &jobs, "20261204-183000"),
            vm_aside_script(HypervisorKind::Libvirt, "vm-tls", "vm-tls-x"),
            vm_aside_script(HypervisorKind::Proxmox, "vm-tls", "vm-tls-x"),
            home_prepare_script("hello", Some("hello"), &["/DATA/hello".into()], "s"),
        ] {
            for deletes in [
                "rm ",
                "down -v",
                "--volumes",
                "undefine",
                "remove-all-storage",
                "qm destroy",
            ] {
                assert!(!script.contains(deletes), "{deletes}: {script}");
            }
        }
        let down = take_down_script(&services, &jobs, "20261204-183000");
        assert!(down.contains("down --remove-orphans"), "{down}");
        assert!(
            down.contains("/var/lib/picaops/services/.removed/hello-20261204-183000"),
            "{down}"
        );
        assert!(
            down.contains("systemctl disable --now picaops-backup-hello.timer"),
            "{down}"
        );
    }
}
