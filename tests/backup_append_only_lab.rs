//! What a compromised data host can do to its backups, tried on the lab for both sites' jobs
//! (Toulouse's bob-app to alice, `kind: sftp`; Compiègne's alice-app to bob, `kind: rest`), with
//! exactly the credentials picaops gave it: its key (`/etc/picaops/backup/id_ed25519`), its
//! pinned known_hosts and its repository password.
//!
//! Refused, and the repository unchanged afterwards (every file still there with its content, the
//! same snapshots, `check` passes):
//! deleting or overwriting a pack, a snapshot, an index and a key file, spoken straight to the
//! server as an attacker would (curl over HTTP/2 through socat and the data host's ssh);
//! `restic forget` and `restic prune`; writing outside its repository; opening another job's
//! repository. Then a normal backup, a check and retention on the repository side still work. No
//! listener of the backup machinery takes a request without credentials, and repositories set up
//! by the previous picaops (keys allowed SFTP, a `--no-auth` rest-server) are moved by `apply`
//! with every snapshot kept. `backup rotate-credentials` gives a data host a new key, after which
//! the old one opens nothing, and a rotation that fails half-way leaves the old key working.
//! Needs `picaops lab up` (see tests/common).

mod common;

use common::{json, ok, root, text, Lab};
use serde_json::Value;

const DATA: &str = "/srv/lab-app/files";

/// One job: where its data is, where its repository is (host, address, directory).
struct Job {
    name: &'static str,
    data: &'static str,
    repo: &'static str,
    address: &'static str,
    dir: &'static str,
    password: &'static str,
}

const JOBS: [Job; 2] = [
    Job {
        name: "bob-app",
        data: "bob",
        repo: "alice",
        address: "172.30.2.11",
        dir: "/srv/restic/bob",
        password: "restic-bob",
    },
    Job {
        name: "alice-app",
        data: "alice",
        repo: "bob",
        address: "172.30.1.11",
        dir: "/srv/restic-rest/alice",
        password: "restic-alice",
    },
];

fn sh(lab: &Lab, host: &str, cmd: &str) -> String {
    let out = root(lab, host, cmd);
    ok(&out, &format!("on {host}: {cmd}"));
    text(&out.stdout)
}

fn backup(lab: &Lab, args: &[&str]) -> Value {
    let mut all = vec!["-q", "--output", "json", "backup"];
    all.extend_from_slice(args);
    let out = lab.picaops(&all);
    ok(&out, &format!("picaops backup {}", args.join(" ")));
    json(&out)
}

/// The ssh command line the data host's restic runs (its key, its pinned known_hosts).
fn ssh(job: &Job) -> String {
    format!(
        "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/etc/picaops/backup/known_hosts \
         -o IdentitiesOnly=yes -i /etc/picaops/backup/id_ed25519 -l picaops-restic {}",
        job.address
    )
}

/// restic as the data host could run it by hand, on `asked` (a job name) at `job`'s repository host.
fn restic(job: &Job, asked: &str, args: &str) -> String {
    format!(
        "restic -r rclone:{asked} --password-file /etc/picaops/backup/secrets/{} \
         -o rclone.program=ssh -o 'rclone.args=-o BatchMode=yes -o StrictHostKeyChecking=yes \
         -o UserKnownHostsFile=/etc/picaops/backup/known_hosts -o IdentitiesOnly=yes \
         -i /etc/picaops/backup/id_ed25519 -l picaops-restic {}' {args} 2>&1",
        job.password, job.address
    )
}

/// Every file of the repository but its locks, with its checksum: what must not change.
fn files(lab: &Lab, job: &Job) -> String {
    sh(
        lab,
        job.repo,
        &format!(
            "cd {} && find . -type f ! -path './locks/*' -print0 | sort -z | xargs -0 sha256sum",
            job.dir
        ),
    )
}

/// A request to the repository's server as the data host's key: (HTTP status, body).
fn request(lab: &Lab, job: &Job, method: &str, path: &str, body: bool) -> String {
    let data = if body { "--data-binary garbage" } else { "" };
    let script = format!(
        "set -e; rm -f /tmp/picaops-attack.sock; \
         socat UNIX-LISTEN:/tmp/picaops-attack.sock,fork EXEC:'{} {}' & S=$!; \
         for i in $(seq 50); do [ -S /tmp/picaops-attack.sock ] && break; sleep 0.1; done; \
         curl -s --path-as-is --http2-prior-knowledge --unix-socket /tmp/picaops-attack.sock \
           -o /dev/null -w '%{{http_code}}' -X {method} {data} 'http://repository{path}' || true; \
         kill $S; rm -f /tmp/picaops-attack.sock",
        ssh(job),
        job.name
    );
    sh(lab, job.data, &script).trim().to_string()
}

/// The lab's data (a few files and lab-db), the jobs applied and initialised, one backup each.
fn prepare(lab: &Lab) {
    for host in ["bob", "alice"] {
        sh(
            lab,
            host,
            &format!(
                "set -e; mkdir -p {DATA}; cd {DATA}; [ -f f1 ] || for i in $(seq 1 10); do head -c 4096 /dev/urandom > f$i; done; \
                 if [ \"$(docker inspect -f '{{{{.State.Running}}}}' lab-db 2>/dev/null)\" != true ]; then \
                   docker rm -f lab-db >/dev/null 2>&1 || true; \
                   docker run -d --name lab-db -e POSTGRES_DB=app picaops-lab/postgres:17 >/dev/null; fi; \
                 for i in $(seq 1 60); do docker exec lab-db pg_isready -q -U postgres -h 127.0.0.1 && break; sleep 0.5; done"
            ),
        );
    }
    ok(
        &lab.picaops(&["apply", "--tags", "backup", "playbooks/site.yml"]),
        "apply --tags backup",
    );
    backup(lab, &["init", "--job", "bob-app", "--job", "alice-app"]);
    backup(lab, &["run", "--job", "bob-app", "--job", "alice-app"]);
}

#[test]
fn a_data_host_can_add_to_its_backups_and_never_take_anything_away() {
    let Some(lab) = common::lab("backup_append_only_lab") else {
        return;
    };
    prepare(&lab);
    for job in &JOBS {
        let before = files(&lab, job);
        let first = |sub: &str| {
            sh(
                &lab,
                job.repo,
                &format!("cd {}/{sub} && find . -type f | head -1", job.dir),
            )
            .trim()
            .trim_start_matches("./")
            .to_string()
        };
        let (pack, snapshot, index, key) = (
            first("data"),
            first("snapshots"),
            first("index"),
            first("keys"),
        );
        for (what, path) in [
            ("a pack file", format!("/data/{pack}")),
            ("a snapshot file", format!("/snapshots/{snapshot}")),
            ("an index file", format!("/index/{index}")),
            ("a key file", format!("/keys/{key}")),
        ] {
            let name = path.rsplit('/').next().unwrap_or_default().to_string();
            assert!(!name.is_empty(), "{}: no {what} to attack", job.name);
            let delete = request(&lab, job, "DELETE", &path, false);
            assert_eq!(
                delete, "403",
                "{}: deleting {what} answered {delete}",
                job.name
            );
            let overwrite = request(&lab, job, "POST", &path, true);
            assert!(
                overwrite.starts_with('4'),
                "{}: overwriting {what} answered {overwrite}",
                job.name
            );
        }
        let config = request(&lab, job, "POST", "/config", true);
        assert!(
            config.starts_with('4'),
            "{}: overwriting config: {config}",
            job.name
        );
        // Outside the repository: nothing may appear beside it or elsewhere.
        sh(&lab, job.repo, "touch /tmp/picaops-attack-marker");
        for path in [
            "/../outside",
            "/..%2f..%2ftmp%2fpicaops-evil",
            "/../../../../tmp/picaops-evil",
        ] {
            let _ = request(&lab, job, "POST", path, true);
        }
        let escaped = sh(
            &lab,
            job.repo,
            &format!(
                "find / -xdev -newer /tmp/picaops-attack-marker -type f \\( -name outside -o -name 'picaops-evil*' \\) 2>/dev/null | grep -v '^{}/' || true",
                job.dir
            ),
        );
        assert_eq!(
            escaped.trim(),
            "",
            "{}: a write landed outside its repository",
            job.name
        );

        // restic's own forget (of the snapshot attacked above) and prune, with the data
        // host's password and key.
        let forget = sh(
            &lab,
            job.data,
            &format!(
                "{} || true",
                restic(job, job.name, &format!("forget {snapshot}"))
            ),
        );
        assert!(forget.contains("403"), "{}: forget: {forget}", job.name);
        let _ = sh(
            &lab,
            job.data,
            &format!("{} || true", restic(job, job.name, "prune")),
        );
        // Nothing taken away or changed (prune may add packs it could not swap in), the same
        // snapshots.
        let after = files(&lab, job);
        for line in before.lines() {
            assert!(
                after.lines().any(|l| l == line),
                "{}: {line} was deleted or changed",
                job.name
            );
        }
        let snapshots = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| l.contains("./snapshots/"))
                .map(str::to_string)
                .collect()
        };
        assert!(
            snapshots(&after) == snapshots(&before),
            "{}: the snapshots changed",
            job.name
        );
        // rclone kept the `..` requests inside the repository, as directories named with
        // full-width dots: take them away (restic ignores them).
        sh(&lab, job.repo, &format!("rm -rf '{}/．．'", job.dir));
    }

    // Another job's repository: alice's key at bob asks for the directory's job (sent by ldap),
    // bob's key at alice for a job alice does not keep.
    for (job, other, says) in [
        (
            &JOBS[1],
            "ldap-directory",
            "may not open job `ldap-directory`",
        ),
        (&JOBS[0], "alice-app", "keeps no job `alice-app`"),
    ] {
        let out = sh(
            &lab,
            job.data,
            &format!("{} || true", restic(job, other, "snapshots")),
        );
        assert!(
            out.contains(says),
            "{}'s key reading {other}: {out}",
            job.data
        );
        assert!(
            !out.contains("snapshots\n") || out.contains("Fatal"),
            "{out}"
        );
    }

    // A shell, SFTP or any other command is not to be had with the key either.
    for job in &JOBS {
        let out = sh(
            &lab,
            job.data,
            &format!(
                "{} -s sftp </dev/null 2>&1 || true; {} 'cat /etc/passwd' 2>&1 || true",
                ssh(job),
                ssh(job)
            ),
        );
        assert!(
            !out.contains("root:x:0:0"),
            "{}: the key ran a command: {out}",
            job.data
        );
    }

    // Everything still works: a backup, a check, retention on the repository's side, a drill.
    let doc = backup(&lab, &["run", "--job", "bob-app", "--job", "alice-app"]);
    for j in doc["jobs"].as_array().unwrap() {
        assert_eq!(j["ok"], true, "{j}");
    }
    backup(&lab, &["check", "--job", "bob-app", "--job", "alice-app"]);
    backup(&lab, &["forget", "--job", "bob-app", "--job", "alice-app"]);
    backup(&lab, &["drill", "--job", "bob-app", "--job", "alice-app"]);
}

#[test]
fn no_listener_of_the_backup_machinery_answers_without_credentials() {
    let Some(lab) = common::lab("backup_append_only_lab listeners") else {
        return;
    };
    prepare(&lab);
    for host in ["bob", "alice"] {
        let listening = sh(&lab, host, "ss -Hltnp");
        for line in listening.lines() {
            for program in ["rest-server", "rclone", "restic"] {
                assert!(
                    !line.contains(program),
                    "{host} listens for {program}: {line}"
                );
            }
        }
        // sshd, the one way in: no login without a key it knows.
        for line in listening.lines().filter(|l| l.contains("sshd")) {
            let port = line
                .split_whitespace()
                .nth(3)
                .and_then(|a| a.rsplit(':').next())
                .unwrap_or("22")
                .to_string();
            let out = sh(
                &lab,
                host,
                &format!(
                    "ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                     -o PubkeyAuthentication=no -o PasswordAuthentication=no -p {port} picaops-restic@127.0.0.1 true 2>&1 || true"
                ),
            );
            assert!(out.contains("Permission denied"), "{host}:{port}: {out}");
        }
    }
}

#[test]
fn apply_moves_repositories_the_previous_picaops_set_up_and_keeps_every_snapshot() {
    let Some(lab) = common::lab("backup_append_only_lab migration") else {
        return;
    };
    prepare(&lab);
    let snapshots = |job: &Job| -> Vec<String> {
        let doc = backup(&lab, &["snapshots", "--job", job.name]);
        let mut ids: Vec<String> = doc["jobs"][0]["snapshots"]
            .as_array()
            .expect("snapshots")
            .iter()
            .map(|s| s["id"].as_str().unwrap_or_default().to_string())
            .collect();
        ids.sort();
        ids
    };
    let before: Vec<Vec<String>> = JOBS.iter().map(snapshots).collect();
    // The previous picaops: keys allowed SFTP, and bob's rest-server --no-auth on port 8000.
    let keys = "/var/lib/picaops-restic/.ssh/authorized_keys";
    for job in &JOBS {
        sh(
            &lab,
            job.repo,
            &format!(
                "sed -E -i 's#^restrict,command=\"[^\"]*\" #restrict,command=\"/usr/lib/openssh/sftp-server\" #' {keys}"
            ),
        );
    }
    sh(
        &lab,
        "bob",
        "printf '[Unit]\\nDescription=restic REST server for picaops backups (append-only)\\n[Service]\\nUser=picaops-restic\\n\
         ExecStart=/usr/bin/restic-rest-server --path /srv/restic-rest --listen :8000 --append-only --no-auth\\n\
         [Install]\\nWantedBy=multi-user.target\\n' > /etc/systemd/system/picaops-rest-server.service && \
         systemctl daemon-reload && systemctl enable --now picaops-rest-server.service && \
         for i in $(seq 50); do ss -Hltn | grep -q ':8000 ' && break; sleep 0.1; done; ss -Hltn | grep -q ':8000 '",
    );
    let out = lab.picaops(&[
        "-o",
        "json",
        "plan",
        "--tags",
        "backup",
        "playbooks/site.yml",
    ]);
    ok(&out, "plan");
    assert!(
        json(&out)["changes"].as_u64().unwrap_or(0) >= 3,
        "the plan shows the moves"
    );
    ok(
        &lab.picaops(&["apply", "--tags", "backup", "playbooks/site.yml"]),
        "apply --tags backup",
    );
    for job in &JOBS {
        let k = sh(&lab, job.repo, &format!("cat {keys}"));
        assert!(!k.contains("sftp-server"), "{}: {k}", job.repo);
        assert!(k.contains("backup host-serve --host"), "{}: {k}", job.repo);
    }
    let rest = sh(
        &lab,
        "bob",
        "systemctl is-active picaops-rest-server.service || true; ss -Hltn | grep ':8000 ' || true",
    );
    assert!(
        !rest.contains(":8000") && !rest.trim().starts_with("active"),
        "{rest}"
    );
    let doc = backup(&lab, &["run", "--job", "bob-app", "--job", "alice-app"]);
    for j in doc["jobs"].as_array().unwrap() {
        assert_eq!(j["ok"], true, "{j}");
    }
    for (job, before) in JOBS.iter().zip(before) {
        let after = snapshots(job);
        for id in &before {
            assert!(
                after.contains(id),
                "{}: snapshot {id} lost in the move",
                job.name
            );
        }
        assert!(
            after.len() > before.len(),
            "{}: the backup after the move added one",
            job.name
        );
    }
    backup(&lab, &["check", "--job", "bob-app", "--job", "alice-app"]);
}

#[test]
fn rotate_credentials_refuses_the_old_key_and_backups_go_on() {
    let Some(lab) = common::lab("backup_append_only_lab rotation") else {
        return;
    };
    prepare(&lab);
    let job = &JOBS[0];
    let key = "/etc/picaops/backup/id_ed25519";
    let old = sh(
        &lab,
        "bob",
        &format!("cp -p {key} /root/picaops-old-key; cat {key}.pub"),
    );
    let keys = "/var/lib/picaops-restic/.ssh/authorized_keys";

    // Half-way failure first: alice cannot write her authorized_keys; bob keeps his old key.
    sh(&lab, "alice", &format!("mv {keys} {keys}.aside"));
    let out = lab.picaops(&["-o", "json", "backup", "rotate-credentials", "bob"]);
    sh(&lab, "alice", &format!("mv {keys}.aside {keys}"));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let said = text(&out.stdout);
    assert!(said.contains("could not authorize the new key"), "{said}");
    assert!(said.contains("put back as it was"), "{said}");
    assert_eq!(
        sh(&lab, "bob", &format!("cat {key}.pub")),
        old,
        "bob's key changed"
    );
    assert_eq!(
        sh(
            &lab,
            "bob",
            &format!("ls {key}.new {key}.old 2>/dev/null || true")
        ),
        ""
    );
    backup(&lab, &["run", "--job", job.name]);

    // The rotation: a new key, the old one refused, backups and checks go on.
    let doc = backup(&lab, &["rotate-credentials", "bob"]);
    assert_eq!(doc["ok"], true, "{doc}");
    let new = sh(&lab, "bob", &format!("cat {key}.pub"));
    assert_ne!(new, old, "the key is new");
    let lines = sh(
        &lab,
        "alice",
        &format!("grep -c 'host-serve --host bob' {keys}"),
    );
    assert_eq!(lines.trim(), "1", "alice authorizes one key of bob's");
    let with_old = sh(
        &lab,
        "bob",
        &format!(
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/etc/picaops/backup/known_hosts \
             -o IdentitiesOnly=yes -i /root/picaops-old-key -l picaops-restic {} {} </dev/null 2>&1 || true; rm -f /root/picaops-old-key",
            job.address, job.name
        ),
    );
    assert!(
        with_old.contains("Permission denied"),
        "the old key: {with_old}"
    );
    let doc = backup(&lab, &["run", "--job", job.name]);
    assert_eq!(doc["jobs"][0]["ok"], true, "{doc}");
    backup(&lab, &["check", "--job", job.name]);
}

/// Writes `text` into `path` on a lab host through stdin (never on a command line).
fn put(host: &str, path: &str, text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("docker")
        .args(["exec", "-i", &format!("picaops-lab-{host}"), "sh", "-c"])
        .arg(format!("umask 077; cat > {path}"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "writing {path} on {host}");
}

#[test]
fn rotate_password_leaves_the_old_password_opening_nothing() {
    let Some(lab) = common::lab("backup_append_only_lab password rotation") else {
        return;
    };
    prepare(&lab);
    let job = &JOBS[0];
    // The team's part: a new secret in the store, and the job's `password:` naming it.
    let value = format!(
        "rotated-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let secret = lab.dir.join("secrets/restic-bob-rotated");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&secret, format!("{value}\n")).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let inv = common::inventory_copy(&lab, "rotate-password", false);
    let backups = std::fs::read_to_string(inv.join("backups.yml")).unwrap();
    assert_eq!(backups.matches("password: restic-bob\n").count(), 1);
    std::fs::write(
        inv.join("backups.yml"),
        backups.replace("password: restic-bob\n", "password: restic-bob-rotated\n"),
    )
    .unwrap();
    let old = std::fs::read_to_string(lab.dir.join("secrets/restic-bob")).unwrap();
    let _back = RotateBack {
        lab: &lab,
        secret: secret.clone(),
        inventory: inv.clone(),
    };

    // While it runs, every process's argv and environment on both hosts is searched for the new
    // password (the pattern comes from a file: it is on no command line either).
    for host in [job.data, job.repo] {
        put(host, "/root/picaops-watch-pattern", &value);
        sh(
            &lab,
            host,
            "rm -f /root/picaops-watch-hits /root/picaops-watch-stop /root/picaops-watch-ticks; \
             nohup sh -c 'while [ ! -f /root/picaops-watch-stop ]; do \
               for f in /proc/[0-9]*/cmdline /proc/[0-9]*/environ; do \
                 grep -qaF -f /root/picaops-watch-pattern \"$f\" 2>/dev/null && echo \"$f\" >> /root/picaops-watch-hits; \
               done; echo . >> /root/picaops-watch-ticks; done' </dev/null >/dev/null 2>&1 &",
        );
    }
    let out = common::picaops_on(
        &inv,
        &[
            "-o",
            "json",
            "backup",
            "rotate-password",
            job.name,
            "--from",
            "restic-bob",
        ],
    );
    for host in [job.data, job.repo] {
        let seen = sh(
            &lab,
            host,
            "touch /root/picaops-watch-stop; sleep 0.5; cat /root/picaops-watch-hits 2>/dev/null; \
             echo ticks $(wc -l < /root/picaops-watch-ticks); rm -f /root/picaops-watch-*",
        );
        let ticks: usize = seen
            .lines()
            .find_map(|l| l.strip_prefix("ticks "))
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        assert!(
            ticks >= 2,
            "{host}: the watch did not run during the rotation"
        );
        assert!(
            !seen.contains("/proc/"),
            "{host}: the new password is in a process's argv or environment: {seen}"
        );
    }
    ok(&out, "rotate-password");
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!said.contains(&value), "the new password is in the output");
    for host in [job.data, job.repo] {
        put(host, "/root/picaops-watch-pattern", &value);
        let logged = sh(
            &lab,
            host,
            "journalctl --no-pager --since '-10min' 2>/dev/null | grep -caF -f /root/picaops-watch-pattern; \
             rm -f /root/picaops-watch-pattern; true",
        );
        assert_eq!(
            logged.trim(),
            "0",
            "{host}: the new password is in the journal"
        );
    }
    assert_eq!(json(&out)["ok"], true, "{said}");

    // The old password opens nothing; a backup, a check and a drill work with the new one.
    put(job.repo, "/root/picaops-old-password", &old);
    let refused = sh(
        &lab,
        job.repo,
        &format!(
            "restic -r {} --password-file /root/picaops-old-password --no-lock snapshots 2>&1 || true; rm -f /root/picaops-old-password",
            job.dir
        ),
    );
    assert!(refused.contains("wrong password"), "{refused}");
    for op in ["run", "check", "drill"] {
        let out = common::picaops_on(&inv, &["-q", "-o", "json", "backup", op, "--job", job.name]);
        ok(&out, &format!("backup {op} with the new password"));
    }

    // Back to the lab's own secret, for the other tests: the rotation the other way round.
    let back = lab.picaops(&[
        "-o",
        "json",
        "backup",
        "rotate-password",
        job.name,
        "--from",
        "restic-bob-rotated",
    ]);
    ok(&back, "rotate-password back");
}

/// Whatever the password test did: the watches stopped, bob-app back on the lab's own secret
/// (a no-op when it already is: the first step refuses), the test's secret and inventory gone.
struct RotateBack<'a> {
    lab: &'a Lab,
    secret: std::path::PathBuf,
    inventory: std::path::PathBuf,
}

impl Drop for RotateBack<'_> {
    fn drop(&mut self) {
        for host in ["bob", "alice"] {
            let _ = root(self.lab, host, "touch /root/picaops-watch-stop; sleep 0.5; rm -f /root/picaops-watch-* /root/picaops-old-password");
        }
        if std::thread::panicking() {
            let _ = self.lab.picaops(&[
                "backup",
                "rotate-password",
                "bob-app",
                "--from",
                "restic-bob-rotated",
            ]);
        }
        let _ = std::fs::remove_file(&self.secret);
        let _ = std::fs::remove_dir_all(&self.inventory);
    }
}
