//! The host-side backup engine against real restic (0.17+, from Debian trixie: `.ci/setup`
//! installs it) and real local repositories: `picaops backup host-*` as a systemd unit would run
//! it, from a root-only job file. SQLite dumps use the real `sqlite3`.
//!
//! Without restic on PATH these tests print SKIPPED, or fail under the README's test command
//! (`PICAOPS_REQUIRE_LAB=1`), like the lab tests.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn picaops() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_picaops"));
    cmd.env("NO_COLOR", "1").env_remove("PICAOPS_INVENTORY");
    cmd
}

/// True when a restic that has `--stdin-from-command` (0.17+) is on PATH.
fn have_restic(test: &str) -> bool {
    let version = Command::new("restic")
        .args(["version", "--json"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
        .and_then(|v| v["version"].as_str().map(String::from));
    let ok = version.as_deref().is_some_and(|v| {
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (0, 17)
    });
    if ok {
        return true;
    }
    let why = format!(
        "{test}: restic 0.17 or later is not on PATH (found: {}). Run `bash .ci/setup` (installs Debian trixie's restic 0.18).",
        version.as_deref().unwrap_or("none")
    );
    if std::env::var_os("PICAOPS_REQUIRE_LAB").is_some() {
        panic!("{why}");
    }
    eprintln!("SKIPPED {why}");
    false
}

/// A job on this machine: data, a local repository, state, locks and metrics in a temp dir.
struct Setup {
    dir: tempfile::TempDir,
    password: String,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let password = format!("pw-{}-{}", std::process::id(), rand_word());
        let pw = dir.path().join("password");
        std::fs::write(&pw, format!("{password}\n")).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        Setup { dir, password }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn data(&self) -> PathBuf {
        self.path("data")
    }

    /// Writes a job file (mode 600) for job `name`; `extra` overrides fields.
    fn job(&self, name: &str, extra: Value) -> PathBuf {
        let mut job = json!({
            "version": 1,
            "job": name,
            "host": "pica01",
            "repository": { "kind": "local", "path": self.path("repo") },
            "password_file": self.path("password"),
            "paths": [self.data()],
            "retention": { "keep_last": 3 },
            "max_age_seconds": 93600,
            "state_dir": self.path("state"),
            "lock_dir": self.path("locks"),
            "metrics_dir": self.path("metrics"),
            "retry_lock_seconds": 0,
            "lock_wait_seconds": 5,
            "cache_dir": self.path("cache"),
        });
        for (k, v) in extra.as_object().unwrap() {
            job[k] = v.clone();
        }
        let file = self.path(&format!("{name}.json"));
        std::fs::write(&file, serde_json::to_string_pretty(&job).unwrap()).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        file
    }

    fn status(&self, name: &str) -> Value {
        let text = std::fs::read_to_string(self.path(&format!("state/status/{name}.json")))
            .expect("a status file");
        serde_json::from_str(&text).unwrap()
    }

    fn metrics(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("metrics/picaops_backup_{name}.prom")))
            .expect("a metrics file")
    }

    /// restic on the same repository, for what the test sets up or inspects behind picaops.
    fn restic(&self) -> Command {
        let mut cmd = Command::new("restic");
        cmd.arg("--repo")
            .arg(self.path("repo"))
            .arg("--password-file")
            .arg(self.path("password"))
            .arg("--cache-dir")
            .arg(self.path("cache"));
        cmd
    }
}

fn rand_word() -> String {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn host(args: &[&str], job: &Path) -> Output {
    let mut cmd = picaops();
    cmd.args(["--output", "json", "backup"]).args(args);
    cmd.arg("--job-file").arg(job);
    cmd.output().unwrap()
}

fn ok(out: &Output) -> Value {
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && doc["ok"] == true,
        "exit {:?}: {doc:#}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    doc
}

fn failed(out: &Output) -> Value {
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{doc:#}");
    assert_eq!(doc["ok"], false, "{doc:#}");
    doc
}

/// Random content (incompressible, so byte counts mean something).
fn random_file(path: &Path, size: usize) {
    let mut buf = vec![0u8; size];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .unwrap();
    std::fs::write(path, buf).unwrap();
}

fn fill(dir: &Path, files: usize, size: usize) {
    for i in 0..files {
        let sub = dir.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&sub).unwrap();
        random_file(&sub.join(format!("f{i}")), size);
    }
}

#[test]
fn second_run_after_changing_one_percent_adds_about_one_percent() {
    if !have_restic("second_run_after_changing_one_percent_adds_about_one_percent") {
        return;
    }
    let s = Setup::new();
    fill(&s.data(), 1000, 20 * 1024); // 1000 files, 19.5 MiB
    std::fs::write(s.data().join("app.log"), "excluded").unwrap();
    let job = s.job("pica01-files", json!({ "exclude": ["*.log"] }));
    ok(&host(&["host-init"], &job));

    let first = ok(&host(&["host-run"], &job));
    let r = &first["result"];
    let shards = 64; // 1000 paths fill every manifest shard
    assert_eq!(
        r["files_new"],
        1000 + shards,
        "the data and the manifest: {r:#}"
    );
    let total = 1000.0 * 20.0 * 1024.0;
    let added = r["bytes_added"].as_f64().unwrap();
    assert!(
        added >= total && added < total * 1.1,
        "first run added {added}"
    );

    let mut touched_shards = std::collections::BTreeSet::new();
    for i in (0..1000).step_by(100) {
        let path = s.data().join(format!("d{}/f{i}", i % 10));
        random_file(&path, 20 * 1024);
        let digest = <sha2::Sha256 as sha2::Digest>::digest(path.to_str().unwrap().as_bytes());
        touched_shards.insert(digest[0] % 64);
    }
    let second = ok(&host(&["host-run"], &job));
    let r = &second["result"];
    // 10 files changed, and the manifest shards listing them (the others are untouched).
    assert_eq!(r["files_changed"], 10 + touched_shards.len(), "{r:#}");
    assert_eq!(r["files_new"], 0, "{r:#}");
    let added = r["bytes_added"].as_f64().unwrap();
    let share = added / total;
    eprintln!(
        "second run added {added} bytes = {:.2}% of {total}",
        share * 100.0
    );
    assert!(
        (0.009..0.02).contains(&share),
        "the second run added {:.2}%",
        share * 100.0
    );

    let status = s.status("pica01-files");
    assert_eq!(status["consecutive_failures"], 0);
    assert_eq!(status["last_run"]["ok"], true);
    assert_eq!(status["last_success"]["bytes_added"], r["bytes_added"]);
    assert_eq!(status["last_success"]["manifest_files"], 1000);
    assert_eq!(
        status["last_success"]["manifest_hashed"], 10,
        "unchanged files keep their hash"
    );
    let metrics = s.metrics("pica01-files");
    let labels = format!(
        "{{backup_job=\"pica01-files\",host=\"pica01\",repository=\"{}\"}}",
        s.path("repo").display()
    );
    assert!(
        metrics.contains(&format!("picaops_backup_last_run_success{labels} 1\n")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "picaops_backup_added_bytes{labels} {}\n",
            r["bytes_added"]
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("picaops_backup_max_age_seconds{labels} 93600\n")),
        "{metrics}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(s.path("metrics"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        leftovers,
        ["picaops_backup_pica01-files.prom"],
        "no temporary file left"
    );

    // The excluded file is in neither the snapshot nor the manifest.
    let ls = s.restic().args(["ls", "latest"]).output().unwrap();
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(!listing.contains("app.log"), "{listing}");
    assert!(
        listing.contains("manifest/pica01-files/00.jsonl"),
        "the manifest is in the snapshot: {listing}{}",
        String::from_utf8_lossy(&ls.stderr)
    );
}

#[test]
fn drill_verifies_every_file_and_fails_loudly_on_a_corrupted_repository() {
    if !have_restic("drill_verifies_every_file_and_fails_loudly_on_a_corrupted_repository") {
        return;
    }
    let s = Setup::new();
    fill(&s.data(), 50, 64 * 1024);
    let job = s.job("pica02-files", json!({}));
    ok(&host(&["host-init"], &job));
    ok(&host(&["host-run"], &job));

    let drill = ok(&host(&["host-drill"], &job));
    let files = &drill["result"]["files"];
    assert_eq!(files["listed"], 50, "{drill:#}");
    assert_eq!(files["verified"], 50, "{drill:#}");
    assert!(drill["result"]["restore_seconds"].as_f64().unwrap() > 0.0);
    let check = ok(&host(&["host-check", "--read-data-subset", "100%"], &job));
    assert_eq!(check["result"], 0);
    let status = s.status("pica02-files");
    assert_eq!(status["last_drill"]["ok"], true);
    assert_eq!(status["last_check"]["ok"], true);
    assert!(s
        .metrics("pica02-files")
        .contains("picaops_backup_last_drill_success{"));

    // Damage every data pack in the middle (as a failing disk would).
    let mut damaged = 0;
    for dir in std::fs::read_dir(s.path("repo/data")).unwrap() {
        for pack in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let pack = pack.unwrap().path();
            let mut bytes = std::fs::read(&pack).unwrap();
            let mid = bytes.len() / 2;
            for b in &mut bytes[mid..mid + 64] {
                *b ^= 0xff;
            }
            std::fs::set_permissions(&pack, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::fs::write(&pack, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged > 0);
    let check = failed(&host(&["host-check", "--read-data-subset", "100%"], &job));
    let error = check["error"].as_str().unwrap();
    assert!(error.contains("error"), "{error}");
    let drill = failed(&host(&["host-drill"], &job));
    eprintln!("drill on a damaged repository: {}", drill["error"]);
    let status = s.status("pica02-files");
    assert_eq!(status["last_check"]["ok"], false);
    assert_eq!(status["last_drill"]["ok"], false);
    let metrics = s.metrics("pica02-files");
    assert!(metrics.contains("picaops_backup_last_check_success{") && metrics.contains("} 0\n"));
    // The last successful drill and check keep their times for the alert rules.
    assert!(status["last_drill_success"].as_f64().unwrap() > 0.0);
}

/// A job file's SQLite dump of `db`, run on the host or in `container`.
fn sqlite_dump(container: Option<&str>, db: &Path) -> Value {
    json!({ "kind": "sqlite", "container": container, "database": db, "user": null, "password_env": null })
}

fn sqlite(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn sqlite_dump_streams_into_restic_then_loads_back_in_a_drill_and_a_restore() {
    if !have_restic("sqlite_dump_streams_into_restic_then_loads_back_in_a_drill_and_a_restore") {
        return;
    }
    let s = Setup::new();
    let db = s.path("app.db");
    sqlite(&db, "CREATE TABLE pads(id INTEGER PRIMARY KEY, text TEXT); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 5000) INSERT INTO pads(text) SELECT hex(randomblob(32)) FROM n;");
    let job = s.job(
        "etherpad",
        json!({ "paths": [], "dumps": [sqlite_dump(None, &db)] }),
    );
    ok(&host(&["host-init"], &job));
    let run = ok(&host(&["host-run"], &job));
    assert!(
        run["result"]["bytes_processed"].as_u64().unwrap() > 300_000,
        "{run:#}"
    );

    let snaps = s.restic().args(["snapshots", "--json"]).output().unwrap();
    let snaps: Value = serde_json::from_slice(&snaps.stdout).unwrap();
    let tags = &snaps[0]["tags"];
    assert_eq!(
        tags,
        &json!([
            "picaops",
            "job=etherpad",
            "part=dump",
            "dump=sqlite-app.sql"
        ])
    );
    assert_eq!(snaps[0]["paths"], json!(["/sqlite-app.sql"]));
    assert!(
        !s.path("state").join("sqlite-app.sql").exists(),
        "no dump file on disk"
    );

    let drill = ok(&host(&["host-drill"], &job));
    assert_eq!(drill["result"]["dumps"][0]["ok"], true, "{drill:#}");

    let copy = s.path("restored.db");
    let restore = picaops()
        .args(["--output", "json", "backup", "host-restore", "--job-file"])
        .arg(&job)
        .args(["--dump", "sqlite-app.sql", "--", "sqlite3"])
        .arg(&copy)
        .output()
        .unwrap();
    ok(&restore);
    assert_eq!(sqlite(&copy, "SELECT count(*) FROM pads"), "5000");
    assert_eq!(s.status("etherpad")["last_restore"]["ok"], true);
    let listed = ok(&host(&["host-snapshots"], &job));
    assert_eq!(listed["result"].as_array().unwrap().len(), 1, "{listed:#}");
    assert_eq!(listed["result"][0]["tags"], snaps[0]["tags"]);
    assert_eq!(
        sqlite(&copy, "SELECT group_concat(text) FROM pads"),
        sqlite(&db, "SELECT group_concat(text) FROM pads")
    );
}

#[test]
fn a_docker_exec_that_could_not_start_is_tried_once_more() {
    if !have_restic("a_docker_exec_that_could_not_start_is_tried_once_more") {
        return;
    }
    let s = Setup::new();
    let db = s.path("app.db");
    sqlite(&db, "CREATE TABLE pads(id INTEGER PRIMARY KEY, text TEXT); INSERT INTO pads(text) VALUES ('hello');");
    // A stand-in for `docker` in front of PATH: runc's transient "exec failed" (seen on the lab
    // under load) cannot be caused on demand. `inspect` names an image; `exec` fails as runc
    // does (exit 126) while the file FAILS holds a number above 0, then runs the command here.
    let bin = s.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fails = s.path("fails");
    std::fs::write(
        bin.join("docker"),
        format!(
            "#!/bin/sh\ncase \"$1\" in\n\
             inspect) echo picaops-test/app:1 ;;\n\
             exec) shift 2; n=$(cat {f}); if [ \"$n\" -gt 0 ]; then echo $((n - 1)) > {f}; \
             echo 'OCI runtime exec failed: exec failed: unable to start container process: read init-p: connection reset by peer: unknown' >&2; exit 126; fi; exec \"$@\" ;;\n\
             *) exit 1 ;;\nesac\n",
            f = fails.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(bin.join("docker"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let job = s.job(
        "pad",
        json!({ "paths": [], "dumps": [sqlite_dump(Some("pad-db"), &db)] }),
    );
    ok(&host(&["host-init"], &job));
    // Human output: its notes on stderr are what the journal keeps on a host.
    let run = |n: u32, format: &str| {
        std::fs::write(&fails, format!("{n}\n")).unwrap();
        picaops()
            .env("PATH", &path)
            .args(["--output", format, "backup", "host-run", "--job-file"])
            .arg(&job)
            .output()
            .unwrap()
    };
    // Once: the second try succeeds, and says so.
    let out = run(1, "human");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("could not start the command (exit 126); trying once more"),
        "{stderr}"
    );
    let snaps: Value = serde_json::from_slice(
        &s.restic()
            .args(["snapshots", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        snaps.as_array().unwrap().len(),
        1,
        "one snapshot, from the second try: {snaps:#}"
    );
    // Twice: the run fails, and the message carries docker's own words.
    let doc = failed(&run(2, "json"));
    let error = doc["error"].as_str().unwrap();
    assert!(error.contains("exit status 126"), "{error}");
    assert!(error.contains("the command said: "), "{error}");
    assert!(error.contains("OCI runtime exec failed"), "{error}");
}

#[test]
fn a_failing_dump_fails_the_run_with_a_reason_and_makes_no_snapshot() {
    if !have_restic("a_failing_dump_fails_the_run_with_a_reason_and_makes_no_snapshot") {
        return;
    }
    let s = Setup::new();
    fill(&s.data(), 3, 1000);
    let job = s.job(
        "broken",
        json!({ "dumps": [sqlite_dump(None, Path::new("/nonexistent/dir/app.db"))] }),
    );
    ok(&host(&["host-init"], &job));
    let out = failed(&host(&["host-run"], &job));
    let error = out["error"].as_str().unwrap();
    assert!(error.starts_with("dump sqlite-app.sql: "), "{error}");
    assert!(error.contains("command failed"), "{error}");
    // sqlite3's own words say why, so nobody has to dig in the journal.
    assert!(error.contains("the command said: "), "{error}");
    assert!(error.contains("unable to open database"), "{error}");
    failed(&host(&["host-run"], &job));
    let status = s.status("broken");
    assert_eq!(status["consecutive_failures"], 2);
    assert_eq!(status["last_failure"]["error"], out["error"]);
    let metrics = s.metrics("broken");
    assert!(metrics.contains("picaops_backup_consecutive_failures{backup_job=\"broken\""));
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("picaops_backup_consecutive_failures{") && l.ends_with(" 2")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("picaops_backup_last_run_success{") && l.ends_with(" 0")),
        "{metrics}"
    );
    // The files were still backed up; the dump left no snapshot behind.
    let snaps = s.restic().args(["snapshots", "--json"]).output().unwrap();
    let snaps: Vec<Value> = serde_json::from_slice(&snaps.stdout).unwrap();
    assert_eq!(snaps.len(), 2, "one file snapshot per run");
    assert!(snaps
        .iter()
        .all(|s| s["tags"].as_array().unwrap().contains(&json!("part=files"))));
}

/// Starts restic holding a lock on the repository (a stdin backup whose command sleeps);
/// returns restic's pid and the sleeping command's pid once the lock exists.
// The caller kills and waits for the child it gets back.
#[allow(clippy::zombie_processes)]
fn hold_restic_lock(s: &Setup) -> (std::process::Child, u32) {
    let child = s
        .restic()
        .args([
            "backup",
            "--stdin-from-command",
            "--stdin-filename",
            "slow",
            "--",
            "sleep",
            "60",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let locks = s
            .restic()
            .args(["--no-lock", "list", "locks"])
            .output()
            .unwrap();
        let sleeper =
            std::fs::read_to_string(format!("/proc/{}/task/{}/children", child.id(), child.id()))
                .ok()
                .and_then(|c| {
                    c.split_whitespace()
                        .next()
                        .and_then(|p| p.parse::<u32>().ok())
                });
        if !locks.stdout.is_empty() {
            if let Some(sleeper) = sleeper {
                return (child, sleeper);
            }
            // restic may run the command from another thread: look at every task.
            for task in std::fs::read_dir(format!("/proc/{}/task", child.id())).unwrap() {
                let children = std::fs::read_to_string(task.unwrap().path().join("children"))
                    .unwrap_or_default();
                if let Some(pid) = children
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse().ok())
                {
                    return (child, pid);
                }
            }
        }
        if Instant::now() > deadline {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            panic!("restic did not take a lock");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kill(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

#[test]
fn a_stale_lock_of_a_dead_local_process_is_removed_and_a_live_one_is_reported() {
    if !have_restic("a_stale_lock_of_a_dead_local_process_is_removed_and_a_live_one_is_reported") {
        return;
    }
    let s = Setup::new();
    fill(&s.data(), 5, 1000);
    let job = s.job("locky", json!({ "retention": { "keep_last": 1 } }));
    ok(&host(&["host-init"], &job));
    ok(&host(&["host-run"], &job));

    // A live restic on this host holds a lock: forget (exclusive) must not remove it.
    let (mut holder, sleeper) = hold_restic_lock(&s);
    let out = failed(&host(&["host-forget"], &job));
    let error = out["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("pid {}", holder.id())),
        "says who holds it: {error}"
    );
    assert!(error.contains("locked"), "{error}");

    // kill -9 leaves the lock behind; its process is provably gone: the next run clears it.
    kill(holder.id());
    let _ = holder.wait();
    kill(sleeper);
    let locks = s
        .restic()
        .args(["--no-lock", "list", "locks"])
        .output()
        .unwrap();
    assert!(!locks.stdout.is_empty(), "kill -9 left a stale lock");
    let out = picaops()
        .args(["backup", "host-forget", "--job-file"])
        .arg(&job)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("removed a stale restic lock"), "{stderr}");
    let locks = s
        .restic()
        .args(["--no-lock", "list", "locks"])
        .output()
        .unwrap();
    assert!(
        locks.stdout.is_empty(),
        "no lock left: {}",
        String::from_utf8_lossy(&locks.stdout)
    );
    let status = s.status("locky");
    assert_eq!(status["last_forget"]["ok"], true);
    // The repository is consistent after all this.
    ok(&host(&["host-check"], &job));
}

#[test]
fn jobs_sharing_a_repository_wait_for_each_other() {
    if !have_restic("jobs_sharing_a_repository_wait_for_each_other") {
        return;
    }
    let s = Setup::new();
    fill(&s.data(), 5, 1000);
    let job = s.job("shared", json!({ "lock_wait_seconds": 1 }));
    ok(&host(&["host-init"], &job));
    let lock_file = std::fs::read_dir(s.path("locks"))
        .unwrap()
        .next()
        .expect("init took the repository lock")
        .unwrap()
        .path();
    // Another operation on the same repository holds picaops's lock for 3 s.
    let mut other = Command::new("flock")
        .arg(&lock_file)
        .args(["sleep", "3"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = failed(&host(&["host-run"], &job));
    assert!(
        out["error"]
            .as_str()
            .unwrap()
            .contains("another picaops operation holds the repository lock"),
        "{out:#}"
    );
    // With a longer wait, the run starts when the other ends.
    let job = s.job("shared", json!({ "lock_wait_seconds": 30 }));
    let start = Instant::now();
    let waited = Command::new("flock")
        .arg(&lock_file)
        .args(["sleep", "2"])
        .spawn()
        .unwrap();
    let _ = other.wait();
    std::thread::sleep(Duration::from_millis(300));
    ok(&host(&["host-run"], &job));
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "the run waited for the lock"
    );
    let mut waited = waited;
    let _ = waited.wait();
}

/// Snapshots at chosen dates; forget must keep exactly what the policy says (worked out by hand
/// below with restic's rules: newest first, one snapshot per new day/week/month/year bucket
/// while that rule has count left).
#[test]
fn retention_keeps_exactly_the_expected_snapshots() {
    if !have_restic("retention_keeps_exactly_the_expected_snapshots") {
        return;
    }
    let s = Setup::new();
    fill(&s.data(), 2, 100);
    let job = s.job(
        "dated",
        json!({ "retention": { "keep_daily": 3, "keep_weekly": 2, "keep_monthly": 3, "keep_yearly": 1 } }),
    );
    ok(&host(&["host-init"], &job));
    let dates = [
        ("2025-06-01 12:00:00", false),
        ("2025-12-31 12:00:00", false), // monthly count used up by 2026, yearly by 2026-03-10
        ("2026-01-15 12:00:00", true),  // monthly (3rd month)
        ("2026-02-10 12:00:00", false), // same month as 02-20
        ("2026-02-20 12:00:00", true),  // monthly (2nd month)
        ("2026-03-01 12:00:00", false), // week 9: weekly count used up
        ("2026-03-08 06:00:00", false), // same day as the 12:00 one
        ("2026-03-08 12:00:00", true),  // daily (3rd) and weekly (week 10)
        ("2026-03-09 12:00:00", true),  // daily (2nd)
        ("2026-03-10 12:00:00", true),  // daily, weekly (week 11), monthly, yearly
    ];
    // One snapshot of someone else's job in the same repository: forget must not touch it.
    for (date, _) in dates.iter().chain([("2024-01-01 00:00:00", false)].iter()) {
        let tag = if date.starts_with("2024") {
            "picaops,job=other,part=files"
        } else {
            "picaops,job=dated,part=files"
        };
        let out = s
            .restic()
            .args(["backup", "--host", "pica01", "--tag", tag, "--time", date])
            .arg(s.data())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = ok(&host(&["host-forget"], &job));
    let kept: Vec<String> = out["result"][0]["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["time"].as_str().unwrap()[..10].to_string())
        .collect();
    let mut want: Vec<String> = dates
        .iter()
        .filter(|(_, keep)| *keep)
        .map(|(d, _)| d[..10].to_string())
        .collect();
    want.reverse();
    assert_eq!(kept, want);
    let left = s.restic().args(["snapshots", "--json"]).output().unwrap();
    let left: Vec<Value> = serde_json::from_slice(&left.stdout).unwrap();
    assert_eq!(left.len(), want.len() + 1, "the other job's snapshot stays");
}

#[test]
fn the_password_never_reaches_argv_environment_or_output() {
    if !have_restic("the_password_never_reaches_argv_environment_or_output") {
        return;
    }
    let s = Setup::new();
    fill(&s.data(), 200, 64 * 1024);
    let job = s.job("secretive", json!({}));
    ok(&host(&["host-init"], &job));
    // A password in picaops's own environment must not reach restic either.
    let decoy = format!("decoy-{}", rand_word());
    let mut child = picaops()
        .args(["--output", "json", "backup", "host-run", "--job-file"])
        .arg(&job)
        .env("RESTIC_PASSWORD", &decoy)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let me = child.id();
    let mut samples = 0;
    let mut seen_restic = false;
    while child.try_wait().unwrap().is_none() {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            let has = |hay: &[u8], needle: &str| {
                hay.windows(needle.len()).any(|w| w == needle.as_bytes())
            };
            assert!(
                !has(&cmdline, &s.password),
                "the password is in the argv of pid {pid}"
            );
            assert!(
                !has(&environ, &s.password),
                "the password is in the environment of pid {pid}"
            );
            if pid != me && has(&cmdline, "restic") && has(&cmdline, "--password-file") {
                seen_restic = true;
                assert!(
                    !has(&environ, &decoy),
                    "RESTIC_PASSWORD leaked into restic's environment"
                );
            }
        }
        samples += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    ok(&out);
    assert!(
        samples > 3 && seen_restic,
        "sampled {samples} times, saw restic: {seen_restic}"
    );
    for text in [
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        std::fs::read_to_string(s.path("state/status/secretive.json")).unwrap(),
        s.metrics("secretive"),
    ] {
        assert!(!text.contains(&s.password));
    }
    // A wrong password gives restic's exit 12 in words, without the password.
    std::fs::write(s.path("password"), "not-the-password\n").unwrap();
    let out = failed(&host(&["host-run"], &job));
    let error = out["error"].as_str().unwrap();
    assert!(
        error.contains("exit 12") && !error.contains("not-the-password"),
        "{error}"
    );
}

#[test]
fn job_files_others_could_change_are_refused() {
    let s = Setup::new();
    let job = s.job("loose", json!({}));
    std::fs::set_permissions(&job, std::fs::Permissions::from_mode(0o664)).unwrap();
    let out = picaops()
        .args(["backup", "host-run", "--job-file"])
        .arg(&job)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
}

#[test]
fn a_missing_repository_says_to_init() {
    if !have_restic("a_missing_repository_says_to_init") {
        return;
    }
    let s = Setup::new();
    fill(&s.data(), 1, 10);
    let job = s.job("norepo", json!({}));
    let out = failed(&host(&["host-run"], &job));
    let error = out["error"].as_str().unwrap();
    assert!(
        error.contains("no restic repository") && error.contains("picaops backup init"),
        "{error}"
    );
    assert_eq!(s.status("norepo")["consecutive_failures"], 1);
}

#[test]
fn workstation_status_shows_failing_late_and_fresh_jobs_from_host_status_files() {
    if !have_restic("workstation_status_shows_failing_late_and_fresh_jobs_from_host_status_files") {
        return;
    }
    let s = Setup::new();
    fill(&s.data(), 3, 1000);
    let fresh = s.job("fresh", json!({}));
    ok(&host(&["host-init"], &fresh));
    ok(&host(&["host-run"], &fresh));
    let broken = s.job(
        "broken",
        json!({ "repository": { "kind": "local", "path": s.path("nowhere") } }),
    );
    failed(&host(&["host-run"], &broken));
    // The host-side listing the workstation will fetch over SSH (phase 2).
    let listed = picaops()
        .args(["backup", "host-status", "--job-file"])
        .arg(&fresh)
        .arg("--job-file")
        .arg(&broken)
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);

    let inv = s.path("inventory");
    std::fs::create_dir_all(&inv).unwrap();
    let job = |name: &str| {
        format!(
            "  {name}:\n    host: pica01\n    paths: [/DATA]\n    schedule: daily\n    retention: {{ keep_last: 3 }}\n    \
             repository: {{ kind: sftp, host: caribou, path: /srv/restic/{name} }}\n    password: restic/{name}\n    max_age: 26h\n"
        )
    };
    std::fs::write(
        inv.join("inventory.yml"),
        format!(
            "sites:\n  toulouse: {{ backs_up_to: compiegne }}\n  compiegne: {{ backs_up_to: toulouse }}\n\
             hosts:\n  bob: {{ site: toulouse, address: 10.0.0.1 }}\n  caribou: {{ site: compiegne, address: 10.0.0.2 }}\n\
             vms:\n  pica01: {{ host: bob, address: 10.0.1.1 }}\nbackups:\n{}{}{}",
            job("fresh"),
            job("broken"),
            job("never")
        ),
    )
    .unwrap();
    let out = picaops()
        .arg("-i")
        .arg(&inv)
        .args(["--output", "json", "backup", "status", "--status-dir"])
        .arg(s.path("state/status"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a late or failing job makes status exit 1"
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<&str> = doc["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["ok", "failing", "late"]);
    assert!(
        doc["jobs"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("no restic repository"),
        "{doc:#}"
    );
    assert_eq!(
        doc["jobs"][0]["repository"],
        "ssh:picaops-restic@10.0.0.2:/srv/restic/fresh (append-only)"
    );
    let human = picaops()
        .arg("-i")
        .arg(&inv)
        .args(["backup", "status", "--status-dir"])
        .arg(s.path("state/status"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("broken") && l.contains("FAILING")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("never") && l.contains("LATE")),
        "{text}"
    );
}

/// The children of a process (all its threads'), from /proc.
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            found.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    found
}

#[test]
fn after_a_kill_9_mid_backup_the_next_run_clears_the_lock_and_succeeds() {
    if !have_restic("after_a_kill_9_mid_backup_the_next_run_clears_the_lock_and_succeeds") {
        return;
    }
    let s = Setup::new();
    fill(&s.data(), 40, 8 << 20); // 320 MiB: a few seconds of restic
    let job = s.job("killed", json!({}));
    ok(&host(&["host-init"], &job));
    let mut run = picaops()
        .args(["backup", "host-run", "--job-file"])
        .arg(&job)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until restic runs and holds its lock, then kill the whole job as systemd would.
    let deadline = Instant::now() + Duration::from_secs(30);
    let restic = loop {
        let locked = !s
            .restic()
            .args(["--no-lock", "list", "locks"])
            .output()
            .unwrap()
            .stdout
            .is_empty();
        let kids = children(run.id());
        if locked && !kids.is_empty() {
            break kids;
        }
        if Instant::now() > deadline || run.try_wait().unwrap().is_some() {
            let _ = run.kill();
            let _ = run.wait();
            panic!("the backup ended before it could be killed: give it more data");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    kill(run.id());
    for pid in restic {
        kill(pid);
    }
    let _ = run.wait();
    assert!(
        !s.restic()
            .args(["--no-lock", "list", "locks"])
            .output()
            .unwrap()
            .stdout
            .is_empty(),
        "a stale lock is left"
    );
    assert!(
        s.status("killed")["running_since"].is_number(),
        "the killed run is visible"
    );

    let out = picaops()
        .args(["backup", "host-run", "--job-file"])
        .arg(&job)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("removed a stale restic lock"), "{stderr}");
    assert!(s
        .restic()
        .args(["--no-lock", "list", "locks"])
        .output()
        .unwrap()
        .stdout
        .is_empty());
    assert!(s.status("killed").get("running_since").is_none());
    ok(&host(&["host-check"], &job));
    // Forgetting (an exclusive lock) is not blocked by anything left behind.
    ok(&host(&["host-forget"], &job));
}
