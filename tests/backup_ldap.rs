//! The `ldap` dump kind against a real slapd (Debian's `slapd` and `ldap-utils`, which `.ci/setup`
//! installs) and a real restic with a local repository: `picaops backup host-run` dumps a
//! directory that the test's own slapd serves (its own cn=config in a temp dir, its own ldapi
//! socket, as root), the entries are changed, `host-drill` proves the dump in a scratch slapd and
//! `host-restore --load` puts the directory back exactly.
//!
//! The directory uses a schema that is not in slapd's defaults (openssh-lpk, as Picasoft's does):
//! the dump must carry cn=config for the drill and the load to accept its entries.
//!
//! picaops stops and starts slapd with `systemctl stop|start slapd`; this machine has no systemd,
//! so a `systemctl` on PATH stops and starts the test's real slapd the way the unit would (the
//! stand-in is the service manager, not the thing under test). Without the tools or root, the
//! tests print SKIPPED, or fail under `PICAOPS_REQUIRE_LAB=1` like the lab tests.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

const SUFFIX: &str = "dc=picasoft,dc=net";
const DUMP: &str = "ldap-dc_picasoft_dc_net.ldif";

fn picaops() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_picaops"));
    cmd.env("NO_COLOR", "1").env_remove("PICAOPS_INVENTORY");
    cmd
}

fn skip(test: &str, why: &str) -> bool {
    let why = format!("{test}: {why}");
    if std::env::var_os("PICAOPS_REQUIRE_LAB").is_some() {
        panic!("{why}");
    }
    eprintln!("SKIPPED {why}");
    false
}

/// slapd, its tools, ldap-utils, restic 0.17+, and root (slapd's files, chown).
fn have_tools(test: &str) -> bool {
    for tool in ["slapd", "slapadd", "slapcat", "ldapadd", "ldapsearch"] {
        let found = std::env::var_os("PATH").is_some_and(|p| {
            std::env::split_paths(&p)
                .chain([PathBuf::from("/usr/sbin")])
                .any(|d| d.join(tool).is_file())
        });
        if !found {
            return skip(
                test,
                &format!("`{tool}` is not installed: run `bash .ci/setup` (installs slapd and ldap-utils)"),
            );
        }
    }
    let version = Command::new("restic")
        .args(["version", "--json"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
        .and_then(|v| v["version"].as_str().map(String::from))
        .unwrap_or_default();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    if (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) < (0, 17) {
        return skip(
            test,
            "restic 0.17 or later is not on PATH: run `bash .ci/setup`",
        );
    }
    if unsafe { libc::geteuid() } != 0 {
        return skip(test, "needs root (slapd's files, their owner)");
    }
    true
}

/// The account Debian's slapd package creates, when it is there: the directories are given to it,
/// as on a real host, so the test sees picaops keep their owner.
fn openldap() -> Option<(u32, u32)> {
    let line = std::fs::read_to_string("/etc/passwd")
        .ok()?
        .lines()
        .find(|l| l.starts_with("openldap:"))?
        .to_string();
    let f: Vec<&str> = line.split(':').collect();
    Some((f[2].parse().ok()?, f[3].parse().ok()?))
}

fn sh(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A slapd of the test's own: cn=config in DIR/slapd.d, data in DIR/db, socket DIR/ldapi.
struct Slapd {
    dir: tempfile::TempDir,
}

impl Slapd {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn url(&self) -> String {
        let sock = self.path("ldapi").display().to_string();
        format!("ldapi://{}", sock.replace('/', "%2F"))
    }

    fn new() -> Slapd {
        let dir = tempfile::tempdir().unwrap();
        let s = Slapd { dir };
        std::fs::create_dir_all(s.path("slapd.d")).unwrap();
        std::fs::create_dir_all(s.path("db")).unwrap();
        let root = "gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth";
        let config = format!(
            "dn: cn=config\nobjectClass: olcGlobal\ncn: config\nolcPidFile: {pid}\nolcArgsFile: {args}\n\n\
             dn: cn=module{{0}},cn=config\nobjectClass: olcModuleList\ncn: module{{0}}\n\
             olcModulePath: /usr/lib/ldap\nolcModuleLoad: back_mdb\n\n\
             dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n\n\
             include: file:///etc/ldap/schema/core.ldif\n\n\
             include: file:///etc/ldap/schema/cosine.ldif\n\n\
             include: file:///etc/ldap/schema/nis.ldif\n\n\
             include: file:///etc/ldap/schema/inetorgperson.ldif\n\n\
             dn: cn=openssh-lpk,cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: openssh-lpk\n\
             olcAttributeTypes: ( 1.3.6.1.4.1.24552.500.1.1.1.13 NAME 'sshPublicKey' DESC 'OpenSSH public key' \
             EQUALITY octetStringMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 )\n\
             olcObjectClasses: ( 1.3.6.1.4.1.24552.500.1.1.2.0 NAME 'ldapPublicKey' SUP top AUXILIARY \
             DESC 'OpenSSH LPK objectclass' MAY ( sshPublicKey $ uid ) )\n\n\
             dn: olcDatabase={{-1}}frontend,cn=config\nobjectClass: olcDatabaseConfig\nobjectClass: olcFrontendConfig\n\
             olcDatabase: {{-1}}frontend\n\n\
             dn: olcDatabase={{0}}config,cn=config\nobjectClass: olcDatabaseConfig\nolcDatabase: {{0}}config\n\
             olcAccess: {{0}}to * by dn.exact={root} manage by * break\n\n\
             dn: olcDatabase={{1}}mdb,cn=config\nobjectClass: olcDatabaseConfig\nobjectClass: olcMdbConfig\n\
             olcDatabase: {{1}}mdb\nolcSuffix: {SUFFIX}\nolcRootDN: cn=admin,{SUFFIX}\nolcDbDirectory: {db}\n\
             olcDbMaxSize: 104857600\nolcDbIndex: uid eq\n\
             olcAccess: {{0}}to * by dn.exact={root} manage by * read\n",
            pid = s.path("slapd.pid").display(),
            args = s.path("slapd.args").display(),
            db = s.path("db").display(),
        );
        std::fs::write(s.path("config.ldif"), config).unwrap();
        sh(Command::new("slapadd")
            .args(["-n", "0", "-F"])
            .arg(s.path("slapd.d"))
            .arg("-l")
            .arg(s.path("config.ldif")));
        if let Some((uid, gid)) = openldap() {
            sh(Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(s.path("slapd.d"))
                .arg(s.path("db")));
        }
        s.write_systemctl();
        s.start();
        s
    }

    /// `bin/systemctl`: `stop slapd` and `start slapd` for this slapd, each waiting until done.
    fn write_systemctl(&self) {
        std::fs::create_dir_all(self.path("bin")).unwrap();
        let script = format!(
            "#!/bin/sh\n# The test's stand-in for systemd's slapd.service.\nset -eu\n\
             pidfile={pid}\n\
             case \"$1 $2\" in\n\
             'stop slapd')\n  [ -s \"$pidfile\" ] || exit 0\n  pid=$(cat \"$pidfile\")\n  kill \"$pid\" 2>/dev/null || exit 0\n\
               i=0; while kill -0 \"$pid\" 2>/dev/null; do i=$((i+1)); [ $i -lt 300 ] || exit 1; sleep 0.1; done ;;\n\
             'start slapd')\n  if [ -e {fail} ]; then rm -f {fail}; echo 'slapd: TLS init def ctx failed: -1' >&2; exit 1; fi\n  rm -f {sock}\n  slapd -F {cfg} -h '{url}'\n\
               i=0; until ldapsearch -Q -Y EXTERNAL -H '{url}' -b '' -s base >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 300 ] || exit 1; sleep 0.1; done ;;\n\
             *) echo \"systemctl stand-in: $*\" >&2; exit 2 ;;\n\
             esac\n",
            pid = self.path("slapd.pid").display(),
            sock = self.path("ldapi").display(),
            fail = self.path("fail-next-start").display(),
            cfg = self.path("slapd.d").display(),
            url = self.url(),
        );
        let f = self.path("bin/systemctl");
        std::fs::write(&f, script).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn systemctl(&self, what: &str) {
        // The stand-in was just written: a thread of another test forking at that moment holds
        // it open for writing until its child execs, and exec then fails with ETXTBSY. Wait for
        // that to pass (it is a matter of milliseconds), never longer than 5 s.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let out = loop {
            match Command::new(self.path("bin/systemctl"))
                .args([what, "slapd"])
                .output()
            {
                Err(e)
                    if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                result => break result.unwrap(),
            }
        };
        assert!(
            out.status.success(),
            "systemctl {what} slapd: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start(&self) {
        self.systemctl("start");
    }

    fn ldap(&self, tool: &str, ldif: &str) {
        let mut child = Command::new(tool)
            .args(["-Q", "-Y", "EXTERNAL", "-H", &self.url()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The uids the running slapd serves (through its socket, as a client sees them).
    fn uids(&self) -> Vec<String> {
        let out = sh(Command::new("ldapsearch")
            .args([
                "-Q",
                "-LLL",
                "-Y",
                "EXTERNAL",
                "-H",
                &self.url(),
                "-b",
                SUFFIX,
            ])
            .args(["(objectClass=posixAccount)", "uid"]));
        let mut uids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("uid: ").map(String::from))
            .collect();
        uids.sort();
        uids
    }

    /// The whole database as slapcat writes it, operational attributes included.
    fn slapcat(&self) -> String {
        let out = sh(Command::new("slapcat")
            .arg("-F")
            .arg(self.path("slapd.d"))
            .args(["-b", SUFFIX, "-o", "ldif-wrap=no"]));
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = Command::new(self.path("bin/systemctl"))
            .args(["stop", "slapd"])
            .status();
    }
}

fn person(uid: &str, n: u32, key: &str) -> String {
    format!(
        "dn: uid={uid},ou=People,{SUFFIX}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n\
         objectClass: shadowAccount\nobjectClass: ldapPublicKey\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\
         uidNumber: {n}\ngidNumber: 502\nhomeDirectory: /home/{uid}\nloginShell: /bin/bash\n\
         shadowExpire: -1\nuserPassword: {{SSHA}}c2VjcmV0LWhhc2gtb2Yte{uid}\n\
         sshPublicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{key} {uid}@picasoft\n\n"
    )
}

/// A job file (mode 600) backing up the directory, with a local repository.
fn job(s: &Slapd) -> PathBuf {
    let pw = s.path("password");
    std::fs::write(&pw, "ldap-test-password\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let job = json!({
        "version": 1,
        "job": "directory",
        "host": "ldap",
        "repository": { "kind": "local", "path": s.path("repo") },
        "password_file": pw,
        "paths": [],
        "dumps": [{ "kind": "ldap", "container": null, "database": SUFFIX, "config_dir": s.path("slapd.d") }],
        "retention": { "keep_last": 3 },
        "max_age_seconds": 93600,
        "state_dir": s.path("state"),
        "lock_dir": s.path("locks"),
        "metrics_dir": s.path("metrics"),
        "retry_lock_seconds": 0,
        "lock_wait_seconds": 5,
        "cache_dir": s.path("cache"),
    });
    let file = s.path("directory.json");
    std::fs::write(&file, serde_json::to_string_pretty(&job).unwrap()).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    file
}

/// `picaops --output json backup ARGS --job-file JOB [EXTRA…]`, with the stand-in systemctl first
/// on PATH.
fn host(s: &Slapd, args: &[&str], job: &Path, extra: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        s.path("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    picaops()
        .env("PATH", path)
        .args(["--output", "json", "backup"])
        .args(args)
        .arg("--job-file")
        .arg(job)
        .args(extra)
        .output()
        .unwrap()
}

fn doc(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn ok(out: &Output) -> Value {
    let d = doc(out);
    assert!(
        out.status.success() && d["ok"] == true,
        "exit {:?}: {d:#}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

#[test]
fn an_ldap_directory_is_dumped_drilled_and_loaded_back_exactly() {
    if !have_tools("an_ldap_directory_is_dumped_drilled_and_loaded_back_exactly") {
        return;
    }
    let s = Slapd::new();
    let mut base = format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: picasoft\no: Picasoft\n\n\
         dn: ou=People,{SUFFIX}\nobjectClass: organizationalUnit\nou: People\n\n"
    );
    for (i, uid) in ["alice", "bob", "carol"].iter().enumerate() {
        base.push_str(&person(uid, 2000 + i as u32, &format!("key{i}")));
    }
    s.ldap("ldapadd", &base);
    assert_eq!(s.uids(), ["alice", "bob", "carol"]);
    let before = s.slapcat();

    // The backup: one snapshot, tagged like every dump, holding cn=config and the data.
    let job = job(&s);
    ok(&host(&s, &["host-init"], &job, &[]));
    let run = ok(&host(&s, &["host-run"], &job, &[]));
    assert!(
        run["result"]["bytes_processed"].as_u64().unwrap() > 1000,
        "{run:#}"
    );
    let snaps = Command::new("restic")
        .arg("--repo")
        .arg(s.path("repo"))
        .arg("--password-file")
        .arg(s.path("password"))
        .args(["--no-cache", "snapshots", "--json"])
        .output()
        .unwrap();
    let snaps: Value = serde_json::from_slice(&snaps.stdout).unwrap();
    assert_eq!(
        snaps[0]["tags"],
        json!([
            "picaops",
            "job=directory",
            "part=dump",
            format!("dump={DUMP}")
        ])
    );

    // Changes after the backup: a modified entry, a deleted one, a new one.
    s.ldap(
        "ldapmodify",
        &format!(
            "dn: uid=alice,ou=People,{SUFFIX}\nchangetype: modify\nreplace: sn\nsn: Changed\n\n\
             dn: uid=bob,ou=People,{SUFFIX}\nchangetype: delete\n\n"
        ),
    );
    s.ldap("ldapadd", &person("mallory", 2099, "evil"));
    assert_eq!(s.uids(), ["alice", "carol", "mallory"]);
    let changed = s.slapcat();

    // The drill loads the dump into a scratch slapd; the live directory is not touched.
    let drill = ok(&host(&s, &["host-drill"], &job, &[]));
    let d = &drill["result"]["dumps"][0];
    assert_eq!(
        (d["name"].as_str(), d["ok"].as_bool()),
        (Some(DUMP), Some(true)),
        "{drill:#}"
    );
    assert_eq!(s.slapcat(), changed, "the drill changed the live directory");
    let status: Value = serde_json::from_str(
        &std::fs::read_to_string(s.path("state/status/directory.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(status["last_drill"]["ok"], true, "{status:#}");

    // An LDAP dump never goes into a side container.
    let side = host(
        &s,
        &["host-restore"],
        &job,
        &["--dump", DUMP, "--into-container", "ldap2"],
    );
    assert_eq!(side.status.code(), Some(1));
    assert!(
        doc(&side)["error"].as_str().unwrap().contains("--load"),
        "{:#}",
        doc(&side)
    );

    // The restore into production: back exactly as backed up, served by a running slapd, the
    // previous database kept aside with its owner.
    let loaded = ok(&host(
        &s,
        &["host-restore"],
        &job,
        &["--dump", DUMP, "--load"],
    ));
    let r = &loaded["result"];
    assert_eq!(r["entries"], 5, "{loaded:#}");
    assert_eq!(s.uids(), ["alice", "bob", "carol"]);
    let after = s.slapcat();
    assert_eq!(after, before, "the directory is not back exactly");
    let old = PathBuf::from(r["old_database"].as_str().unwrap());
    assert!(old.join("data.mdb").is_file(), "{loaded:#}");
    assert!(
        PathBuf::from(r["old_config"].as_str().unwrap())
            .join("cn=config.ldif")
            .is_file(),
        "{loaded:#}"
    );
    // The kept cn=config still names the live path; the kept database holds the replaced entries.
    let kept = std::fs::read(old.join("data.mdb")).unwrap();
    assert!(
        kept.windows(b"uid=mallory".len())
            .any(|w| w == b"uid=mallory"),
        "the kept database is the one replaced"
    );
    if let Some((uid, gid)) = openldap() {
        for p in ["db", "db/data.mdb", "slapd.d", "slapd.d/cn=config.ldif"] {
            let m = std::fs::metadata(s.path(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (uid, gid), "{p} lost its owner");
        }
    }
    assert_eq!(status_restore_ok(&s), Some(true));
}

fn status_restore_ok(s: &Slapd) -> Option<bool> {
    let status: Value =
        serde_json::from_str(&std::fs::read_to_string(s.path("state/status/directory.json")).ok()?)
            .ok()?;
    status["last_restore"]["ok"].as_bool()
}

#[test]
fn a_slapd_that_does_not_start_on_the_loaded_directory_gets_the_old_one_back() {
    if !have_tools("a_slapd_that_does_not_start_on_the_loaded_directory_gets_the_old_one_back") {
        return;
    }
    let s = Slapd::new();
    s.ldap(
        "ldapadd",
        &format!(
            "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: picasoft\no: Picasoft\n\n"
        ),
    );
    let job = job(&s);
    ok(&host(&s, &["host-init"], &job, &[]));
    ok(&host(&s, &["host-run"], &job, &[]));
    s.ldap(
        "ldapadd",
        &format!("dn: ou=People,{SUFFIX}\nobjectClass: organizationalUnit\nou: People\n\n"),
    );
    s.ldap("ldapadd", &person("dave", 2010, "k"));
    let live = s.slapcat();
    // The next start fails (as a slapd missing its TLS certificate would), the one after works.
    std::fs::write(s.path("fail-next-start"), "").unwrap();
    let out = host(&s, &["host-restore"], &job, &["--dump", DUMP, "--load"]);
    let d = doc(&out);
    assert_eq!(out.status.code(), Some(1), "{d:#}");
    let error = d["error"].as_str().unwrap();
    assert!(
        error.starts_with("slapd did not start on the loaded directory")
            && error.contains(
                "the previous database and cn=config are back in place and slapd was started again"
            ),
        "{error}"
    );
    assert_eq!(s.uids(), ["dave"], "the previous directory is served again");
    assert_eq!(s.slapcat(), live);
    let failed: Vec<String> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".picaops-failed-"))
        .collect();
    assert_eq!(
        failed.len(),
        2,
        "the loaded directories are kept: {failed:?}"
    );
    assert_eq!(status_restore_ok(&s), Some(false));
}
