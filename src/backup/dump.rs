//! Database dumps per engine: the command restic streams from (`--stdin-from-command`, so no
//! dump file ever touches the disk), the command that loads a dump back, and how a drill
//! proves a dump loads (a throwaway container of the same image, `docker run --rm`).
//!
//! Only argv here, no I/O. Passwords never go on a command line: when a database needs one,
//! the command reads it inside the container from the environment variable the job names
//! (`password_env`), through `sh -c` with the names passed as positional arguments. The script
//! text is constant: the variable's name is an argument too, checked by the script itself
//! before it is expanded ([`READ_PASSWORD`]), so no inventory value is ever parsed as shell.

use super::config::{Dump, DumpKind};
use crate::inventory::values::valid_env_name;

/// The start of each `sh -c` script that needs a password: `$1` is the name of the variable
/// holding it. The script refuses a `$1` that is not a variable name (so `eval` only ever sees
/// `pw=${NAME-}`), reads the value into `$pw`, and shifts: the dump's own words follow as
/// `$1`, `$2`.
const READ_PASSWORD: &str = "case $1 in ''|[!A-Za-z_]*|*[!A-Za-z0-9_]*) \
     echo \"picaops: the password_env of this dump is not an environment variable name\" >&2; exit 2;; \
     esac; eval \"pw=\\${$1-}\"; shift; ";

/// Why a dump's commands cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DumpError {
    /// The job file's `password_env` (the inventory check refuses it; a job file edited by hand).
    #[error("`{env}` is not an environment variable name")]
    PasswordEnv { dump: String, env: String },
    /// A drill needs the database server's image, recorded with the dump by a backup.
    #[error(
        "no image is known for the {} dump `{dump}` (it is recorded at backup time from the container): \
         run a backup with this picaops first",
        .kind.name()
    )]
    NoImage { kind: DumpKind, dump: String },
    /// An LDAP dump is proven by `backup::ldap::drill` (a scratch slapd), not by these steps.
    #[error("the LDAP dump `{dump}` is drilled by picaops's own scratch slapd, not by a database container")]
    OwnDrill { dump: String },
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn default_user(kind: DumpKind) -> &'static str {
    match kind {
        DumpKind::Postgres => "postgres",
        DumpKind::Mysql | DumpKind::Mariadb => "root",
        DumpKind::Mongodb | DumpKind::Sqlite | DumpKind::Ldap => "",
    }
}

/// `docker exec [-i] CONTAINER` or nothing (SQLite on the host).
fn exec_prefix(dump: &Dump, stdin: bool) -> Vec<String> {
    match &dump.container {
        Some(c) => {
            let mut v = strings(&["docker", "exec"]);
            if stdin {
                v.push("-i".into());
            }
            v.push(c.clone());
            v
        }
        None => Vec::new(),
    }
}

/// The command whose stdout is the dump (what follows `--` in `restic backup
/// --stdin-from-command`). A non-zero exit fails the snapshot (restic ≥ 0.17).
pub fn dump_command(dump: &Dump) -> Result<Vec<String>, DumpError> {
    if let Some(env) = &dump.password_env {
        if !valid_env_name(env) {
            return Err(DumpError::PasswordEnv {
                dump: dump.file_name(),
                env: env.clone(),
            });
        }
    }
    Ok(dump_argv(dump))
}

/// [`dump_command`] without the check of the variable name: the generated command must be
/// safe even without it.
fn dump_argv(dump: &Dump) -> Vec<String> {
    let user = dump
        .user
        .clone()
        .unwrap_or_else(|| default_user(dump.kind).to_string());
    let db = dump.database.clone();
    let mut cmd = exec_prefix(dump, false);
    match (dump.kind, &dump.password_env) {
        // Plain SQL without owners or grants: it loads into a fresh server (drills, moves). Each
        // object dropped first if it exists: it loads again into the database it came from (a
        // recovery run twice, a failback home over the stale copy), not only into an empty one.
        (DumpKind::Postgres, None) => cmd.extend([
            "pg_dump".into(),
            "--no-owner".into(),
            "--no-privileges".into(),
            "--clean".into(),
            "--if-exists".into(),
            format!("--username={user}"),
            format!("--dbname={db}"),
        ]),
        (DumpKind::Postgres, Some(env)) => cmd.extend(shell(
            "PGPASSWORD=\"$pw\" exec pg_dump --no-owner --no-privileges --clean --if-exists --username=\"$1\" --dbname=\"$2\"",
            &[env, &user, &db],
        )),
        (DumpKind::Mysql | DumpKind::Mariadb, env) => {
            let tool = if dump.kind == DumpKind::Mysql {
                "mysqldump"
            } else {
                "mariadb-dump"
            };
            let flags = "--single-transaction --routines --triggers --events";
            match env {
                None => {
                    cmd.push(tool.into());
                    cmd.extend(flags.split(' ').map(String::from));
                    cmd.extend([format!("--user={user}"), "--databases".into(), db]);
                }
                Some(env) => cmd.extend(shell(
                    &format!("MYSQL_PWD=\"$pw\" exec {tool} {flags} --user=\"$1\" --databases \"$2\""),
                    &[env, &user, &db],
                )),
            }
        }
        (DumpKind::Mongodb, None) => cmd.extend([
            "mongodump".into(),
            "--archive".into(),
            format!("--db={db}"),
        ]),
        // mongodump takes a password only on its command line or from a config file: write the
        // file inside the container (mode 600), never the argv.
        (DumpKind::Mongodb, Some(env)) => cmd.extend(shell(
            "umask 077; f=$(mktemp) || exit 1; printf 'password: \"%s\"\\n' \"$pw\" > \"$f\"; \
             mongodump --config=\"$f\" --username=\"$1\" --authenticationDatabase=admin --archive --db=\"$2\"; \
             rc=$?; rm -f \"$f\"; exit $rc",
            &[env, &user, &db],
        )),
        // `.dump` reads inside one transaction: a consistent copy of a live database.
        (DumpKind::Sqlite, _) => cmd.extend(["sqlite3".into(), "-bail".into(), db, ".dump".into()]),
        // cn=config then the data, both by slapcat (reads MDB while slapd serves it).
        (DumpKind::Ldap, _) => cmd.extend(super::ldap::dump_argv(dump)),
    }
    cmd
}

/// `sh -c READ_PASSWORD+SCRIPT picaops ENV ARGS…`: the arguments arrive as $1, $2 without any
/// quoting to get wrong.
fn shell(script: &str, args: &[&str]) -> Vec<String> {
    let mut v = strings(&["sh", "-c", &format!("{READ_PASSWORD}{script}"), "picaops"]);
    v.extend(args.iter().map(|a| a.to_string()));
    v
}

/// The command that loads a dump read from stdin into a running `container` (a restore into
/// production, or into a drill container): for SQLite, `target` is the database file to create.
pub fn load_command(
    kind: DumpKind,
    container: Option<&str>,
    database: &str,
    user: Option<&str>,
) -> Vec<String> {
    let mut cmd = match container {
        Some(c) => strings(&["docker", "exec", "-i", c]),
        None => Vec::new(),
    };
    let user = user.unwrap_or(default_user(kind)).to_string();
    match kind {
        DumpKind::Postgres => cmd.extend([
            "psql".into(),
            "--quiet".into(),
            "--set=ON_ERROR_STOP=1".into(),
            format!("--username={user}"),
            format!("--dbname={database}"),
        ]),
        DumpKind::Mysql => cmd.extend(["mysql".into(), format!("--user={user}")]),
        DumpKind::Mariadb => cmd.extend(["mariadb".into(), format!("--user={user}")]),
        DumpKind::Mongodb => cmd.extend(strings(&["mongorestore", "--archive", "--drop"])),
        DumpKind::Sqlite => cmd.extend(["sqlite3".into(), "-bail".into(), database.into()]),
        // By hand, into a slapd that is stopped and already has the dump's cn=config: the data
        // part only (after the marker line). picaops's own loads build a fresh slapd instead
        // (`backup::ldap`).
        DumpKind::Ldap => cmd.extend(strings(&[
            "sh",
            "-c",
            "sed '1,/^# picaops-ldap-dump: data$/d' | if [ -n \"$1\" ]; then exec slapadd -b \"$1\"; else exec slapadd -n 1; fi",
            "picaops",
            database,
        ])),
    }
    cmd
}

/// How a drill starts a throwaway database server of the dump's image, waits for it, loads
/// the dump and checks it. Every step is argv; `{name}` is the container's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillSteps {
    /// `docker run -d --rm --name NAME …IMAGE` (None: no server needed, e.g. SQLite on the host).
    pub start: Option<Vec<String>>,
    /// Polled until it exits 0 (the server accepts connections).
    pub ready: Option<Vec<String>>,
    /// Before loading (e.g. create the database).
    pub prepare: Option<Vec<String>>,
    /// Reads the dump on stdin.
    pub load: Vec<String>,
    /// Must exit 0; its output is shown in the drill report.
    pub verify: Vec<String>,
}

/// Drill steps for a dump of `kind` made from `image` (None: no container, SQLite on the host,
/// loaded into `scratch_db`).
pub fn drill_steps(
    dump: &Dump,
    image: Option<&str>,
    name: &str,
    scratch_db: &str,
) -> Result<DrillSteps, DumpError> {
    let run = |env: &[&str], image: &str| {
        let mut v = strings(&["docker", "run", "--detach", "--rm", "--name", name]);
        for e in env {
            v.extend(["--env".to_string(), e.to_string()]);
        }
        v.push(image.into());
        v
    };
    let exec = |args: &[&str]| {
        let mut v = strings(&["docker", "exec", name]);
        v.extend(strings(args));
        v
    };
    let db = dump.database.as_str();
    let need_image = || {
        image.ok_or_else(|| DumpError::NoImage {
            kind: dump.kind,
            dump: dump.file_name(),
        })
    };

    Ok(match dump.kind {
        DumpKind::Postgres => DrillSteps {
            start: Some(run(&["POSTGRES_HOST_AUTH_METHOD=trust"], need_image()?)),
            ready: Some(exec(&["pg_isready", "--username=postgres", "--host=127.0.0.1"])),
            prepare: Some(exec(&["createdb", "--username=postgres", db])),
            load: load_command(DumpKind::Postgres, Some(name), db, Some("postgres")),
            verify: exec(&[
                "psql",
                "--username=postgres",
                &format!("--dbname={db}"),
                "--tuples-only",
                "--no-align",
                "--command=SELECT count(*) FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog','information_schema')",
            ]),
        },
        DumpKind::Mysql | DumpKind::Mariadb => {
            let (client, admin) = if dump.kind == DumpKind::Mysql {
                ("mysql", "mysqladmin")
            } else {
                ("mariadb", "mariadb-admin")
            };
            DrillSteps {
                start: Some(run(
                    &["MYSQL_ALLOW_EMPTY_PASSWORD=yes", "MARIADB_ALLOW_EMPTY_ROOT_PASSWORD=yes"],
                    need_image()?,
                )),
                ready: Some(exec(&[admin, "--user=root", "--protocol=tcp", "--host=127.0.0.1", "ping"])),
                prepare: None,
                load: load_command(dump.kind, Some(name), db, Some("root")),
                verify: exec(&[
                    client,
                    "--user=root",
                    "--batch",
                    "--skip-column-names",
                    &format!("--execute=SELECT count(*) FROM information_schema.tables WHERE table_schema='{}'", db.replace('\'', "")),
                ]),
            }
        }
        DumpKind::Mongodb => DrillSteps {
            start: Some(run(&[], need_image()?)),
            ready: Some(exec(&["mongosh", "--quiet", "--eval", "db.runCommand({ping: 1}).ok"])),
            prepare: None,
            load: load_command(DumpKind::Mongodb, Some(name), db, None),
            verify: exec(&[
                "mongosh",
                "--quiet",
                db,
                "--eval",
                "db.getCollectionNames().length",
            ]),
        },
        DumpKind::Ldap => {
            return Err(DumpError::OwnDrill {
                dump: dump.file_name(),
            })
        }
        DumpKind::Sqlite => match (image, &dump.container) {
            (Some(image), Some(_)) => {
                let script = "sqlite3 -bail /tmp/drill.db && sqlite3 /tmp/drill.db 'PRAGMA integrity_check;' | tee /dev/stderr | grep -qx ok";
                let mut load = strings(&["docker", "run", "--rm", "--interactive", "--name", name, image, "sh", "-c"]);
                load.push(script.into());
                DrillSteps {
                    start: None,
                    ready: None,
                    prepare: None,
                    load,
                    verify: strings(&["true"]),
                }
            }
            _ => DrillSteps {
                start: None,
                ready: None,
                prepare: None,
                load: load_command(DumpKind::Sqlite, None, scratch_db, None),
                verify: strings(&["sqlite3", scratch_db, "PRAGMA integrity_check;"]),
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(kind: DumpKind, container: Option<&str>, db: &str, env: Option<&str>) -> Dump {
        Dump {
            kind,
            container: container.map(String::from),
            database: db.into(),
            user: None,
            password_env: env.map(String::from),
            config_dir: None,
        }
    }

    #[test]
    fn dumps_stream_from_docker_exec() {
        assert_eq!(
            dump_command(&dump(DumpKind::Postgres, Some("mm-db"), "mattermost", None)).unwrap(),
            [
                "docker",
                "exec",
                "mm-db",
                "pg_dump",
                "--no-owner",
                "--no-privileges",
                "--clean",
                "--if-exists",
                "--username=postgres",
                "--dbname=mattermost"
            ]
        );
        assert_eq!(
            dump_command(&dump(DumpKind::Sqlite, None, "/srv/app.db", None)).unwrap(),
            ["sqlite3", "-bail", "/srv/app.db", ".dump"]
        );
        let mysql = dump_command(&dump(
            DumpKind::Mariadb,
            Some("db"),
            "wiki",
            Some("MARIADB_ROOT_PASSWORD"),
        ))
        .unwrap();
        assert_eq!(&mysql[..5], ["docker", "exec", "db", "sh", "-c"]);
        assert!(mysql[5].contains("MYSQL_PWD=\"$pw\" exec mariadb-dump"));
        assert_eq!(
            &mysql[6..],
            ["picaops", "MARIADB_ROOT_PASSWORD", "root", "wiki"]
        );
    }

    #[test]
    fn an_ldap_dump_runs_slapcat_on_the_host_or_in_its_container() {
        let host = dump_command(&dump(DumpKind::Ldap, None, "dc=picasoft,dc=net", None)).unwrap();
        assert_eq!(&host[..2], ["sh", "-c"]);
        assert_eq!(&host[3..], ["picaops", "", "dc=picasoft,dc=net"]);
        let inside = dump_command(&dump(DumpKind::Ldap, Some("ldap"), "", None)).unwrap();
        assert_eq!(&inside[..5], ["docker", "exec", "ldap", "sh", "-c"]);
        let d = dump(DumpKind::Ldap, None, "", None);
        assert!(matches!(
            drill_steps(&d, None, "drill", "/tmp/x"),
            Err(DumpError::OwnDrill { .. })
        ));
    }

    #[test]
    fn passwords_are_read_inside_the_container_never_passed() {
        for kind in [DumpKind::Postgres, DumpKind::Mysql, DumpKind::Mongodb] {
            let cmd = dump_command(&dump(kind, Some("c"), "d", Some("DB_PASS"))).unwrap();
            let script = &cmd[5];
            assert_eq!(cmd[7], "DB_PASS", "the name is an argument");
            assert!(!script.contains("DB_PASS"), "never in the script: {script}");
            assert!(!cmd.iter().any(|a| a.starts_with("--password")), "{cmd:?}");
        }
        assert!(dump_command(&dump(
            DumpKind::Postgres,
            Some("c"),
            "d",
            Some("X; rm -rf /")
        ))
        .is_err());
    }

    #[test]
    fn drills_need_the_image_for_servers() {
        let d = dump(DumpKind::Postgres, Some("mm-db"), "mattermost", None);
        assert!(drill_steps(&d, None, "drill", "/tmp/x.db").is_err());
        let s = drill_steps(&d, Some("postgres:15"), "drill", "/tmp/x.db").unwrap();
        assert_eq!(s.start.unwrap().last().unwrap(), "postgres:15");
        let sqlite = drill_steps(
            &dump(DumpKind::Sqlite, None, "/srv/app.db", None),
            None,
            "drill",
            "/tmp/x.db",
        )
        .unwrap();
        assert_eq!(sqlite.load, ["sqlite3", "-bail", "/tmp/x.db"]);
    }

    /// Runs the `sh -c` part of a dump command (what `docker exec` would run in the container)
    /// with a real `sh`, in a scratch directory whose stand-in dump tools print the password
    /// they were given. Returns (exit code, output, `pwned-*` files created).
    fn run_in_container(cmd: &[String], password: &str) -> (i32, String, Vec<String>) {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for tool in ["pg_dump", "mysqldump", "mongodump"] {
            let p = bin.join(tool);
            std::fs::write(
                &p,
                "#!/bin/sh\necho \"pw=${PGPASSWORD:-${MYSQL_PWD:-}}\"; for a; do case $a in --config=*) cat \"${a#--config=}\";; esac; done\n",
            )
            .unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let start = cmd.iter().position(|a| a == "sh").unwrap();
        let out = std::process::Command::new(&cmd[start])
            .args(&cmd[start + 1..])
            .current_dir(dir.path())
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env("DB_PASS", password)
            .output()
            .unwrap();
        let pwned = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("pwned-"))
            .collect();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            pwned,
        )
    }

    #[test]
    fn a_hostile_password_env_never_runs_in_the_container() {
        let hostile = "X}\"; touch pwned-env; echo \"${X\n$(touch pwned-env2)`touch pwned-env3`";
        for kind in [DumpKind::Postgres, DumpKind::Mysql, DumpKind::Mongodb] {
            // Positive control: a variable name gives its value to the dump tool.
            let cmd = dump_argv(&dump(kind, Some("c"), "d", Some("DB_PASS")));
            let (code, out, _) = run_in_container(&cmd, "s3cr'et $(x)");
            assert_eq!(code, 0, "{kind:?}: {out}");
            assert!(out.contains("s3cr'et $(x)"), "{kind:?}: {out}");
            // Even without picaops's own check of the name, the script stays data.
            let cmd = dump_argv(&dump(kind, Some("c"), "d", Some(hostile)));
            let (code, out, pwned) = run_in_container(&cmd, "secret");
            assert_eq!(
                pwned,
                Vec::<String>::new(),
                "{kind:?}: injected commands ran: {out}"
            );
            assert_ne!(code, 0, "{kind:?}: {out}");
            assert!(!out.contains("pw="), "{kind:?}: the dump tool ran: {out}");
        }
    }
}
