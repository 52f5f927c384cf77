//! Database dumps per engine: the command restic streams from (`--stdin-from-command`, so no
//! dump file ever touches the disk), the command that loads a dump back, and how a drill
//! proves a dump loads (a throwaway container of the same image, `docker run --rm`).
//!
//! Only argv here, no I/O. Passwords never go on a command line: when a database needs one,
//! the command reads it inside the container from the environment variable the job names
//! (`password_env`), through `sh -c` with the names passed as positional arguments.

use super::config::{Dump, DumpKind};

/// Checks the name of an environment variable (it is expanded inside `sh -c`).
pub fn valid_env_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn default_user(kind: DumpKind) -> &'static str {
    match kind {
        DumpKind::Postgres => "postgres",
        DumpKind::Mysql | DumpKind::Mariadb => "root",
        DumpKind::Mongodb | DumpKind::Sqlite => "",
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
pub fn dump_command(dump: &Dump) -> Result<Vec<String>, String> {
    if let Some(env) = &dump.password_env {
        if !valid_env_name(env) {
            return Err(format!("`{env}` is not an environment variable name"));
        }
    }
    let user = dump
        .user
        .clone()
        .unwrap_or_else(|| default_user(dump.kind).to_string());
    let db = dump.database.clone();
    let mut cmd = exec_prefix(dump, false);
    match (dump.kind, &dump.password_env) {
        // Plain SQL without owners or grants: it loads into a fresh server (drills, moves).
        (DumpKind::Postgres, None) => cmd.extend([
            "pg_dump".into(),
            "--no-owner".into(),
            "--no-privileges".into(),
            format!("--username={user}"),
            format!("--dbname={db}"),
        ]),
        (DumpKind::Postgres, Some(env)) => cmd.extend(shell(
            &format!("PGPASSWORD=\"${{{env}}}\" exec pg_dump --no-owner --no-privileges --username=\"$1\" --dbname=\"$2\""),
            &[&user, &db],
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
                    &format!("MYSQL_PWD=\"${{{env}}}\" exec {tool} {flags} --user=\"$1\" --databases \"$2\""),
                    &[&user, &db],
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
            &format!(
                "umask 077; f=$(mktemp) || exit 1; printf 'password: \"%s\"\\n' \"${{{env}}}\" > \"$f\"; \
                 mongodump --config=\"$f\" --username=\"$1\" --authenticationDatabase=admin --archive --db=\"$2\"; \
                 rc=$?; rm -f \"$f\"; exit $rc"
            ),
            &[&user, &db],
        )),
        // `.dump` reads inside one transaction: a consistent copy of a live database.
        (DumpKind::Sqlite, _) => cmd.extend(["sqlite3".into(), "-bail".into(), db, ".dump".into()]),
    }
    Ok(cmd)
}

/// `sh -c SCRIPT picaops ARGS…`: the arguments arrive as $1, $2 without any quoting to get wrong.
fn shell(script: &str, args: &[&str]) -> Vec<String> {
    let mut v = strings(&["sh", "-c", script, "picaops"]);
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
) -> Result<DrillSteps, String> {
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
        image.ok_or_else(|| {
            format!(
                "no image is known for the {} dump `{}` (it is recorded at backup time from the container): \
                 run a backup with this picaops first",
                dump.kind.name(),
                dump.file_name()
            )
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
        assert!(mysql[5].starts_with("MYSQL_PWD=\"${MARIADB_ROOT_PASSWORD}\" exec mariadb-dump"));
        assert_eq!(&mysql[6..], ["picaops", "root", "wiki"]);
    }

    #[test]
    fn passwords_are_read_inside_the_container_never_passed() {
        for kind in [DumpKind::Postgres, DumpKind::Mysql, DumpKind::Mongodb] {
            let cmd = dump_command(&dump(kind, Some("c"), "d", Some("DB_PASS"))).unwrap();
            let script = &cmd[5];
            assert!(script.contains("${DB_PASS}"), "{script}");
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
}
