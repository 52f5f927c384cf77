//! The two scripts of a segment: the probe (read everything in one round trip) and the apply
//! script (change what differs in one more), and reading what they print.
//!
//! Both are sent on stdin to `sh -s` (never on the command line: file contents may be secret),
//! and wrapped in a function called on the last line, so a script cut short by a lost connection
//! runs nothing at all. The apply script takes the host's run lock, re-reads the state and
//! refuses to go on if it moved since the probe, runs each operation through `step` (stopping at
//! the first failure), and ignores SIGHUP/SIGPIPE so that a dropped connection lets it finish
//! instead of leaving work half done. A command with `until` is the last operation of its apply
//! script; each further attempt is a script of its own ([`attempt_script`]).

use std::collections::BTreeMap;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::modules::{q, Op, PRELUDE};

/// The probe body (state records only) for steps; `packages`/`candidates` are batched.
pub fn probe_body(lines: &str, packages: &[String], candidates: &[String]) -> String {
    let mut body = String::from("probe_body() {\n");
    body.push_str(lines);
    if !packages.is_empty() {
        body.push_str(&format!(
            "ppkg {}\n",
            crate::transport::quote::join(packages)
        ));
    }
    if !candidates.is_empty() {
        body.push_str(&format!(
            "pcand {}\n",
            crate::transport::quote::join(candidates)
        ));
    }
    body.push_str(":\n}\n");
    body
}

/// The read script. In apply mode it first waits (up to `lock_wait` seconds) for another run's
/// lock to go away, so that what it reads is not in the middle of someone else's change.
pub fn probe_script(body: &str, lock_wait: Option<u64>, lock_dir: &str) -> String {
    let wait = match lock_wait {
        Some(s) => format!("p_lock_wait {s} || exit 75\n"),
        None => "if p_lock_live; then echo \"@@held $(p_lock_info)\"; fi\n".to_string(),
    };
    format!(
        "{PRELUDE}\n{body}\nmain() {{\np_lock_init {}\n{wait}probe_body\n}}\nmain\n",
        q(lock_dir)
    )
}

/// The fingerprint of a host's state: SHA-256 of the probe's records (lock notes excluded).
pub fn fingerprint(probe_output: &str) -> String {
    let mut h = Sha256::new();
    for line in probe_output.lines().filter(|l| !l.starts_with("@@")) {
        h.update(line.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// One operation of the apply script, attributed to step ids (several for batched packages).
pub struct Planned<'a> {
    pub ids: Vec<usize>,
    pub op: &'a Op,
}

/// The apply script: lock, state check, operations in order, daemon-reload and apt batched.
/// `lock` is (directory on the host, or "" for the default; who is applying; seconds to wait).
pub fn apply_script(
    body: &str,
    fingerprint: &str,
    lock: (&str, &str, u64),
    ops: &[Planned<'_>],
) -> String {
    let mut s = String::with_capacity(PRELUDE.len() + 4096);
    s.push_str(PRELUDE);
    s.push('\n');
    s.push_str(body);
    locked_main(&mut s, lock);
    s.push_str(&format!(
        "p_fp=$(probe_body | grep -v '^@@' | sha256sum | cut -c1-64)\n[ \"$p_fp\" = {fingerprint} ] || {{ echo \"@@moved $p_fp\"; exit 76; }}\n"
    ));

    // Packages: one install and one remove for the whole segment, where the first one was.
    let mut install: Vec<String> = Vec::new();
    let mut remove: Vec<String> = Vec::new();
    let mut update_cache = false;
    let mut package_ids: Vec<usize> = Vec::new();
    for p in ops {
        if let Op::Packages {
            install: i,
            remove: r,
            update_cache: u,
        } = p.op
        {
            install.extend(i.iter().cloned());
            remove.extend(r.iter().cloned());
            update_cache |= u;
            package_ids.extend(&p.ids);
        }
    }
    let mut packages_done = false;
    let mut reload_pending: Option<usize> = None;
    for p in ops {
        let id = ids(&p.ids);
        match p.op {
            Op::Call(call) => s.push_str(&format!("step {id} - {call} </dev/null || exit 10\n")),
            Op::Command(call) => s.push_str(&format!("step {id} r {call} </dev/null || exit 10\n")),
            Op::Attempt(call) => s.push_str(&format!("step {id} t {call} </dev/null\n")),
            Op::Put {
                path,
                content,
                mode,
                owner,
                group,
            } => {
                let sha = hex::encode(Sha256::digest(content));
                s.push_str(&format!(
                    "step {id} - put {} {mode:o} {} {} {sha} <<'PICAOPS_EOF' || exit 10\n",
                    q(path),
                    q(owner.as_deref().unwrap_or("")),
                    q(group.as_deref().unwrap_or(""))
                ));
                let b64 = base64::engine::general_purpose::STANDARD.encode(content);
                for chunk in b64.as_bytes().chunks(76) {
                    s.push_str(std::str::from_utf8(chunk).unwrap_or_default());
                    s.push('\n');
                }
                s.push_str("PICAOPS_EOF\n");
            }
            Op::UnitFileChanged => reload_pending = p.ids.first().copied(),
            Op::Systemctl(call) => {
                if let Some(rid) = reload_pending.take() {
                    s.push_str(&format!(
                        "step {rid} - systemctl daemon-reload </dev/null || exit 10\n"
                    ));
                }
                s.push_str(&format!("step {id} - {call} </dev/null || exit 10\n"));
            }
            Op::Packages { .. } => {
                if packages_done {
                    continue;
                }
                packages_done = true;
                let pid = ids(&package_ids);
                let apt = "env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold";
                if update_cache && !install.is_empty() {
                    s.push_str(&format!(
                        "step {pid} - {apt} update </dev/null || exit 10\n"
                    ));
                }
                if !install.is_empty() {
                    s.push_str(&format!(
                        "step {pid} - {apt} install -- {} </dev/null || exit 10\n",
                        crate::transport::quote::join(&install)
                    ));
                }
                if !remove.is_empty() {
                    s.push_str(&format!(
                        "step {pid} - {apt} remove -- {} </dev/null || exit 10\n",
                        crate::transport::quote::join(&remove)
                    ));
                }
            }
        }
    }
    if let Some(rid) = reload_pending {
        s.push_str(&format!(
            "step {rid} - systemctl daemon-reload </dev/null || exit 10\n"
        ));
    }
    s.push_str("echo @@done\n}\nmain\n");
    s
}

/// The start of `main` in the scripts that change a host: signals, work directory, run lock.
fn locked_main(s: &mut String, (lock_dir, lock_info, lock_wait): (&str, &str, u64)) {
    s.push_str("main() {\ntrap '' HUP PIPE\ntrap p_cleanup EXIT\ntrap 'exit 130' INT TERM\n");
    s.push_str("P_WORK=$(mktemp -d /tmp/picaops-apply.XXXXXX) || exit 1\n");
    s.push_str(&format!(
        "p_lock_init {}\np_lock_take {} {lock_wait} || exit 75\n",
        q(lock_dir),
        q(lock_info)
    ));
}

/// One more attempt of a command with `until` (step `id`, `call` as the apply script ran it),
/// under the run lock. The state is not checked again: the earlier attempts changed it.
pub fn attempt_script(lock: (&str, &str, u64), id: usize, call: &str) -> String {
    let mut s = String::with_capacity(PRELUDE.len() + 512);
    s.push_str(PRELUDE);
    s.push('\n');
    locked_main(&mut s, lock);
    s.push_str(&format!(
        "step {id} t {call} </dev/null\necho @@done\n}}\nmain\n"
    ));
    s
}

fn ids(ids: &[usize]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// What the apply script reported.
#[derive(Debug, Default)]
pub struct ApplyOutput {
    /// Steps whose operations all succeeded.
    pub ok: Vec<usize>,
    /// The step that failed, with its exit status, stdout and stderr.
    pub failed: Option<(Vec<usize>, i32)>,
    /// Output of registered commands (and of the failed step): (stdout, stderr) by step.
    pub output: BTreeMap<usize, (String, String)>,
    /// Attempts of commands with `until`: their exit status by step.
    pub tried: BTreeMap<usize, i32>,
    /// Who holds the lock (decoded info), when it could not be taken.
    pub locked: Option<String>,
    /// A stale lock taken over: its info.
    pub stale: Option<String>,
    /// The state moved between probe and apply.
    pub moved: bool,
    /// The lock directory could not be created.
    pub lock_dir_failed: bool,
    pub done: bool,
}

pub fn decode(s: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Lock holder info (`key=value` lines) as one readable line.
pub fn describe_lock(info: &str) -> String {
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("?")
            .to_string()
    };
    format!(
        "{} on {} (picaops pid {}, since {}; its process on the host is pid {})",
        field("user"),
        field("from"),
        field("pid"),
        field("since"),
        field("remote_pid")
    )
}

pub fn parse_apply(out: &str) -> ApplyOutput {
    let mut r = ApplyOutput::default();
    let parse_ids =
        |s: &str| -> Vec<usize> { s.split(',').filter_map(|x| x.parse().ok()).collect() };
    for line in out.lines() {
        let mut f = line.splitn(3, ' ');
        let (tag, a, b) = (
            f.next().unwrap_or(""),
            f.next().unwrap_or(""),
            f.next().unwrap_or(""),
        );
        match tag {
            "@@ok" => r.ok.extend(parse_ids(a)),
            "@@fail" => r.failed = Some((parse_ids(a), b.trim().parse().unwrap_or(1))),
            "@@tried" => {
                let rc = b.trim().parse().unwrap_or(1);
                r.tried.extend(parse_ids(a).into_iter().map(|id| (id, rc)));
            }
            "@@out" | "@@err" => {
                for id in parse_ids(a) {
                    let e = r.output.entry(id).or_default();
                    if tag == "@@out" {
                        e.0 = decode(b);
                    } else {
                        e.1 = decode(b);
                    }
                }
            }
            "@@locked" | "@@held" => r.locked = Some(decode(a)),
            "@@stale" => r.stale = Some(decode(a)),
            "@@moved" => r.moved = true,
            "@@lockdir" => r.lock_dir_failed = true,
            "@@done" => r.done = true,
            _ => {}
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_valid_sh() {
        let body = probe_body(
            "pst 0 /etc/motd c abc\npunit 1 ssh.service\n",
            &["htop".into()],
            &[],
        );
        let content = b"hello 'world'\n$HOME\n".to_vec();
        let ops = [
            Op::Put {
                path: "/etc/motd".into(),
                content,
                mode: 0o644,
                owner: None,
                group: Some("adm".into()),
            },
            Op::UnitFileChanged,
            Op::Systemctl("systemctl restart -- ssh.service".into()),
            Op::Packages {
                install: vec!["htop".into()],
                remove: vec![],
                update_cache: true,
            },
            Op::Command("run_shell '' 'echo hi | wc -c'".into()),
            Op::Attempt("run_shell '' 'test -e /tmp/ready'".into()),
        ];
        let planned: Vec<Planned> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| Planned { ids: vec![i], op })
            .collect();
        for script in [
            probe_script(&body, Some(5), ""),
            probe_script(&body, None, "/tmp/x"),
            apply_script(&body, "f", ("", "user=x", 0), &planned),
            attempt_script(("", "user=x", 0), 5, "run_shell '' 'test -e /tmp/ready'"),
        ] {
            let mut child = std::process::Command::new("sh")
                .arg("-n")
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            assert!(child.wait().unwrap().success(), "sh -n refused:\n{script}");
        }
    }

    #[test]
    fn reads_apply_markers() {
        let out = "@@stale dXNlcj1hCg==\n@@ok 0\n@@out 1 aGkK\n@@err 1 \n@@ok 1\n@@ok 2,3\n@@tried 5 3\n@@fail 4 2\n";
        let r = parse_apply(out);
        assert_eq!(r.tried.get(&5), Some(&3));
        assert_eq!(r.ok, vec![0, 1, 2, 3]);
        assert_eq!(r.failed, Some((vec![4], 2)));
        assert_eq!(r.output[&1].0, "hi\n");
        assert_eq!(r.stale.as_deref(), Some("user=a\n"));
        assert!(!r.done);
    }

    #[test]
    fn fingerprint_ignores_lock_notes() {
        assert_eq!(
            fingerprint("0\tabsent\n@@held x\n"),
            fingerprint("0\tabsent\n")
        );
        assert_ne!(fingerprint("0\tabsent\n"), fingerprint("1\tabsent\n"));
    }
}
