//! The inventory's `backups:` section: what each job backs up, when, how long it is kept and
//! where it goes; read from YAML with places.
//!
//! `JobDoc` mirrors the YAML (every value keeps its place); `BackupJob::from_doc` checks each
//! value alone. What needs the whole inventory (hosts, sites, shared repositories) is checked by
//! the inventory (`crate::inventory`'s section checks). Nothing here contacts a host or reads a
//! secret's value.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::schedule::{check_schedule, parse_duration, parse_rate};
use super::{err, located};
use crate::diagnostic::{did_you_mean, Diagnostic, Place};
use crate::located::Located;
use crate::yaml::place_of;

/// The account that owns SFTP repositories on the peer site. Not `backup`: Debian already has a
/// system user of that name (uid 34).
pub const DEFAULT_SFTP_USER: &str = "picaops-restic";
/// Spread of a timer's start when the job does not say (`RandomizedDelaySec=`).
pub const DEFAULT_RANDOMIZED_DELAY: u64 = 15 * 60;

// ---------------------------------------------------------------------------------------------
// The YAML, as written.

/// One job under `backups:`, as written in the file.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct JobDoc {
    description: Option<String>,
    host: Option<Spanned<String>>,
    service: Option<Spanned<String>>,
    #[serde(default)]
    paths: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default)]
    dumps: Vec<Spanned<DumpDoc>>,
    schedule: Spanned<String>,
    randomized_delay: Option<Spanned<String>>,
    retention: Spanned<RetentionDoc>,
    repository: Spanned<RepositoryDoc>,
    password: Spanned<String>,
    max_age: Spanned<String>,
    bandwidth: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct DumpDoc {
    kind: Spanned<String>,
    container: Option<Spanned<String>>,
    database: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    /// SQLite: the database file (inside the container when `container` is set).
    path: Option<Spanned<String>>,
    /// The name of an environment variable inside the container holding the database password.
    password_env: Option<Spanned<String>>,
    /// LDAP: slapd's configuration directory (cn=config), when not the default one.
    config_dir: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RetentionDoc {
    keep_last: Option<u32>,
    keep_hourly: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
    keep_yearly: Option<u32>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RepositoryDoc {
    kind: Spanned<String>,
    host: Spanned<String>,
    user: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    /// Read only to say what replaced them: picaops no longer runs rest-server.
    port: Option<Spanned<u16>>,
    append_only: Option<Spanned<bool>>,
    tls: Option<Spanned<bool>>,
}

// ---------------------------------------------------------------------------------------------
// The checked model.

/// Whose data a job backs up: a machine directly, or a service (its placement gives the machine).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Holder {
    Host(Located<String>),
    Service(Located<String>),
}

/// A backup job: files and database dumps of one machine, sent to a repository at the peer site.
#[derive(Clone, Debug, Serialize)]
pub struct BackupJob {
    pub name: String,
    pub description: Option<String>,
    pub holder: Holder,
    /// Absolute paths on the data host.
    pub paths: Vec<Located<String>>,
    /// restic `--exclude` patterns.
    pub exclude: Vec<String>,
    pub dumps: Vec<Dump>,
    /// systemd `OnCalendar=` expression.
    pub schedule: Located<String>,
    /// `RandomizedDelaySec=` of the timer, seconds.
    pub randomized_delay: u64,
    pub retention: Retention,
    pub repository: Repository,
    /// The NAME of the secret holding the repository password (never its value).
    pub password: Located<String>,
    /// Status marks the job as late when its newest backup is older than this (seconds).
    pub max_age: u64,
    /// Upload limit in KiB/s (restic `--limit-upload`), for the link between the sites.
    pub bandwidth: Option<u64>,
    /// A job of a machine (`host:`) that `recovery.yml` moved (the directory's): the machine it
    /// belongs to at home, whose name its snapshots keep.
    pub moved_from: Option<Located<String>>,
    pub place: Place,
}

/// Database engines picaops knows how to dump and load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DumpKind {
    Postgres,
    Mysql,
    Mariadb,
    Mongodb,
    Sqlite,
    /// An OpenLDAP directory (slapd): its cn=config and its data, as LDIF (`slapcat`).
    Ldap,
}

impl DumpKind {
    pub const ALL: [(&'static str, DumpKind); 6] = [
        ("postgres", DumpKind::Postgres),
        ("mysql", DumpKind::Mysql),
        ("mariadb", DumpKind::Mariadb),
        ("mongodb", DumpKind::Mongodb),
        ("sqlite", DumpKind::Sqlite),
        ("ldap", DumpKind::Ldap),
    ];

    pub fn name(self) -> &'static str {
        DumpKind::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

/// One database dump, streamed into restic from `docker exec` (or from the host for SQLite
/// and LDAP).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Dump {
    pub kind: DumpKind,
    /// The container to `docker exec` into; `None` only for SQLite and LDAP on the host.
    #[serde(default)]
    pub container: Option<String>,
    /// Database name (the file path for SQLite; for LDAP the suffix of the data database, or
    /// empty for slapd's first one, `slapcat -n 1`).
    pub database: String,
    #[serde(default)]
    pub user: Option<String>,
    /// Environment variable inside the container that holds the database password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// LDAP: slapd's cn=config directory (`slapcat -F`); `None`: slapd's own default
    /// (`/etc/ldap/slapd.d` on Debian).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_dir: Option<String>,
}

impl Dump {
    /// The file name of this dump inside its snapshot (`/postgres-mattermost-db-mattermost.sql`
    /// without the slash): unique per job, stable across runs so restic deduplicates. An LDAP
    /// dump is `ldap[-CONTAINER][-SUFFIX].ldif` (`ldap-dc_picasoft_dc_net.ldif`).
    pub fn file_name(&self) -> String {
        let db = if self.kind == DumpKind::Sqlite {
            Path::new(&self.database)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "db".into())
        } else {
            self.database.clone()
        };
        let ext = match self.kind {
            DumpKind::Mongodb => "archive",
            DumpKind::Ldap => "ldif",
            _ => "sql",
        };
        let mut parts = vec![self.kind.name()];
        parts.extend(self.container.as_deref());
        if !(self.kind == DumpKind::Ldap && db.is_empty()) {
            parts.push(&db);
        }
        let name = parts.join("-");
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{name}.{ext}")
    }
}

/// How many snapshots `forget` keeps (restic's `--keep-*`); at least one is set.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Retention {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub keep_last: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub keep_hourly: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub keep_daily: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub keep_weekly: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub keep_monthly: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub keep_yearly: Option<u32>,
}

impl Retention {
    /// restic flags, e.g. `["--keep-daily", "7", "--keep-weekly", "4"]`.
    pub fn flags(&self) -> Vec<String> {
        [
            ("--keep-last", self.keep_last),
            ("--keep-hourly", self.keep_hourly),
            ("--keep-daily", self.keep_daily),
            ("--keep-weekly", self.keep_weekly),
            ("--keep-monthly", self.keep_monthly),
            ("--keep-yearly", self.keep_yearly),
        ]
        .into_iter()
        .filter_map(|(flag, n)| {
            n.filter(|n| *n > 0)
                .map(|n| [flag.to_string(), n.to_string()])
        })
        .flatten()
        .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.flags().is_empty()
    }
}

/// Where a repository lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepositoryKind {
    /// A directory reached over SSH (a dedicated account on a host at the peer site).
    Sftp,
    /// restic's rest-server, ideally `--append-only`.
    Rest,
}

/// A repository at the peer site.
#[derive(Clone, Debug, Serialize)]
pub struct Repository {
    pub kind: RepositoryKind,
    /// A host or VM of the inventory.
    pub host: Located<String>,
    /// SFTP: the account on `host` (default `picaops-restic`).
    pub user: String,
    /// SFTP: the directory; REST: the repository's path under /srv/restic-rest (may be empty).
    pub path: String,
    pub place: Place,
}

impl Repository {
    /// What identifies one repository: two jobs with the same key share it.
    pub fn key(&self) -> String {
        match self.kind {
            RepositoryKind::Sftp => format!("sftp:{}@{}:{}", self.user, self.host.value, self.path),
            RepositoryKind::Rest => {
                format!("rest:{}/{}", self.host.value, self.path.trim_matches('/'))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// From the YAML to the model: checks of each value alone.

impl BackupJob {
    /// Reads one job, reporting every value that is wrong on its own (whole-inventory checks are
    /// in [`check`]). Always returns a job, so later checks still run; `diags` decides validity.
    pub fn from_doc(
        file: &Path,
        name: &Spanned<String>,
        doc: JobDoc,
        diags: &mut Vec<Diagnostic>,
    ) -> BackupJob {
        let place = place_of(file, name);
        let job_name = name.value.clone();
        if !crate::values::valid_name(&job_name) {
            diags.push(
                Diagnostic::new(place.clone(), format!("backup job name `{job_name}` is not a valid name"))
                    .help("it names a systemd unit and files: use lowercase letters, digits, `-` and `_` (at most 63)"),
            );
        }
        let holder = match (doc.host, doc.service) {
            (Some(h), None) => Holder::Host(located(file, h)),
            (None, Some(s)) => Holder::Service(located(file, s)),
            (Some(h), Some(s)) => {
                diags.push(
                    err(file, &s, format!("job `{job_name}` names both a host and a service"),
                        "keep one: `service:` when the data belongs to a service (its host follows it), `host:` otherwise")
                        .note(place_of(file, &h), "the host is named here"),
                );
                Holder::Host(located(file, h))
            }
            (None, None) => {
                diags.push(
                    Diagnostic::new(
                        place.clone(),
                        format!("job `{job_name}` does not say whose data it backs up"),
                    )
                    .help("add `host: pica01` (a host or VM) or `service: mattermost`"),
                );
                Holder::Host(Located {
                    value: String::new(),
                    place: place.clone(),
                })
            }
        };
        for p in &doc.paths {
            if !p.value.starts_with('/') {
                diags.push(err(
                    file,
                    p,
                    format!("backup path `{}` is not absolute", p.value),
                    "write the full path on the data host, e.g. /DATA/mattermost",
                ));
            }
        }
        if doc.paths.is_empty() && doc.dumps.is_empty() {
            diags.push(
                Diagnostic::new(place.clone(), format!("job `{job_name}` backs up nothing"))
                    .help("add `paths:` (directories on the host) and/or `dumps:` (databases)"),
            );
        }
        let mut dumps: Vec<Dump> = Vec::new();
        for d in doc.dumps {
            if let Some(dump) = dump_from_doc(file, &job_name, d, &dumps, diags) {
                dumps.push(dump);
            }
        }
        let schedule = located(file, doc.schedule);
        if let Err(why) = check_schedule(&schedule) {
            diags.push(
                Diagnostic::new(schedule.place.clone(), format!("schedule `{}` is not valid: {why}", schedule.value.trim()))
                    .help("systemd OnCalendar syntax, e.g. `daily`, `*-*-* 03:15`, `Mon..Fri 02:00`; check with `systemd-analyze calendar '…'`"),
            );
        }
        let randomized_delay = match &doc.randomized_delay {
            None => DEFAULT_RANDOMIZED_DELAY,
            Some(d) => parse_duration(&d.value).unwrap_or_else(|why| {
                diags.push(err(
                    file,
                    d,
                    format!("randomized_delay `{}` is not a duration: {why}", d.value),
                    "write e.g. `15min` or `1h`",
                ));
                DEFAULT_RANDOMIZED_DELAY
            }),
        };
        let r = &doc.retention.value;
        let retention = Retention {
            keep_last: r.keep_last,
            keep_hourly: r.keep_hourly,
            keep_daily: r.keep_daily,
            keep_weekly: r.keep_weekly,
            keep_monthly: r.keep_monthly,
            keep_yearly: r.keep_yearly,
        };
        if retention.is_empty() {
            diags.push(err(
                file,
                &doc.retention,
                format!("the retention of job `{job_name}` keeps nothing"),
                "set at least one of keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly above 0 \
                 (Picasoft: keep_daily: 7, keep_weekly: 4, keep_monthly: 6, keep_yearly: 2)",
            ));
        }
        let repository = repository_from_doc(file, doc.repository, diags);
        let password = located(file, doc.password);
        if !crate::secrets::valid_name(&password) {
            diags.push(
                Diagnostic::new(password.place.clone(), "`password` must be the NAME of a secret, not a password")
                    .help("write the name the secret is stored under (letters, digits, `-`, `_`, `.`, `/`), e.g. `restic/pica01`; \
                           the value stays in the team's password store"),
            );
        }
        let max_age = parse_duration(&doc.max_age.value).unwrap_or_else(|why| {
            diags.push(err(
                file,
                &doc.max_age,
                format!("max_age `{}` is not a duration: {why}", doc.max_age.value),
                "a bit more than the time between two runs, e.g. `26h` for a daily job",
            ));
            0
        });
        let bandwidth = doc
            .bandwidth
            .as_ref()
            .and_then(|b| match parse_rate(&b.value) {
                Ok(kib) => Some(kib),
                Err(why) => {
                    diags.push(err(
                        file,
                        b,
                        format!("bandwidth `{}` is not valid: {why}", b.value),
                        "write an upload rate such as `10MiB/s` or `512KiB/s`",
                    ));
                    None
                }
            });
        BackupJob {
            name: job_name,
            description: doc.description,
            holder,
            paths: doc.paths.into_iter().map(|p| located(file, p)).collect(),
            exclude: doc.exclude.into_iter().map(|e| e.value).collect(),
            dumps,
            schedule,
            randomized_delay,
            retention,
            repository,
            password,
            max_age,
            bandwidth,
            moved_from: None,
            place,
        }
    }
}

fn dump_from_doc(
    file: &Path,
    job: &str,
    d: Spanned<DumpDoc>,
    earlier: &[Dump],
    diags: &mut Vec<Diagnostic>,
) -> Option<Dump> {
    let place = place_of(file, &d);
    let d = d.value;
    let names: Vec<&str> = DumpKind::ALL.iter().map(|(n, _)| *n).collect();
    let Some(kind) = DumpKind::ALL
        .iter()
        .find(|(n, _)| *n == d.kind.value)
        .map(|(_, k)| *k)
    else {
        let mut help = format!("known kinds: {}", names.join(", "));
        if let Some(s) = did_you_mean(&d.kind.value, names.iter().copied()) {
            help = format!("did you mean `{s}`? {help}");
        }
        diags.push(err(
            file,
            &d.kind,
            format!("unknown dump kind `{}`", d.kind.value),
            &help,
        ));
        return None;
    };
    if let (Some(c), false) = (&d.config_dir, kind == DumpKind::Ldap) {
        diags.push(err(
            file,
            c,
            format!(
                "`config_dir:` is for LDAP dumps, not a {} dump",
                kind.name()
            ),
            "remove `config_dir:`",
        ));
    }
    let database = if kind == DumpKind::Ldap {
        ldap_suffix(file, job, &d, diags)?
    } else if kind == DumpKind::Sqlite {
        if let Some(db) = &d.database {
            diags.push(err(
                file,
                db,
                "an SQLite dump names its file with `path:`, not `database:`".into(),
                "write `path: /data/app.db` (inside the container when `container:` is set)",
            ));
        }
        match d.path {
            Some(p) if p.value.starts_with('/') => p.value,
            Some(p) => {
                diags.push(err(
                    file,
                    &p,
                    format!("SQLite path `{}` is not absolute", p.value),
                    "write the full path of the database file",
                ));
                return None;
            }
            None => {
                diags.push(Diagnostic::new(place, format!("this SQLite dump of job `{job}` has no `path:`"))
                    .help("add `path: /data/app.db`: the database file (inside the container when `container:` is set)"));
                return None;
            }
        }
    } else {
        if let Some(p) = &d.path {
            diags.push(err(
                file,
                p,
                format!(
                    "`path:` is for SQLite dumps; a {} dump names a `database:`",
                    kind.name()
                ),
                "replace `path:` by `database: NAME`",
            ));
        }
        if d.container.is_none() {
            diags.push(Diagnostic::new(place.clone(), format!("this {} dump of job `{job}` has no `container:`", kind.name()))
                .help("name the container running the database (`docker ps` on the host shows it): the dump runs `docker exec` in it"));
        }
        match d.database {
            Some(db) => db.value,
            None => {
                diags.push(
                    Diagnostic::new(
                        place,
                        format!(
                            "this {} dump of job `{job}` has no `database:`",
                            kind.name()
                        ),
                    )
                    .help("add `database: NAME` (the database to dump)"),
                );
                return None;
            }
        }
    };
    if let Some(c) = d.container.as_ref() {
        // Docker's own rule for names; a leading `-` would be read by `docker exec` as an option.
        let ok = c.value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && c.value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            diags.push(err(
                file,
                c,
                format!(
                    "container `{}` is not a container name",
                    crate::values::shown(&c.value)
                ),
                "name the container running the database as `docker ps` shows it (letters, digits, _ . -, starting with a letter or digit)",
            ));
            return None;
        }
    }
    if let Some(env) = d.password_env.as_ref() {
        if !crate::values::valid_env_name(&env.value) {
            diags.push(err(
                file,
                env,
                format!(
                    "password_env `{}` is not an environment variable name",
                    crate::values::shown(&env.value)
                ),
                "name the variable of the container that holds the password (letters, digits and _, not starting with a digit): POSTGRES_PASSWORD",
            ));
            return None;
        }
    }
    let dump = Dump {
        kind,
        container: d.container.map(|c| c.value),
        database,
        user: d.user.map(|u| u.value),
        password_env: d.password_env.map(|p| p.value),
        config_dir: d.config_dir.map(|c| c.value),
    };
    if earlier.iter().any(|e| e.file_name() == dump.file_name()) {
        diags.push(
            Diagnostic::new(place, format!("job `{job}` dumps this database twice"))
                .help("remove one of the two entries"),
        );
        return None;
    }
    Some(dump)
}

/// The checks of an LDAP dump's own keys; its suffix (`database:`, empty for slapd's first
/// database). `slapcat` reads slapd's files as root: no user, no password; a host directory
/// needs no container.
fn ldap_suffix(file: &Path, job: &str, d: &DumpDoc, diags: &mut Vec<Diagnostic>) -> Option<String> {
    let before = diags.len();
    for (key, value) in [
        ("path", &d.path),
        ("user", &d.user),
        ("password_env", &d.password_env),
    ] {
        if let Some(v) = value {
            diags.push(err(
                file,
                v,
                format!("an LDAP dump takes no `{key}:`"),
                "slapcat reads slapd's own files as root, with no account or password: keep `container:` (when slapd runs in one), \
                 `database:` (the suffix, e.g. `dc=picasoft,dc=net`) and `config_dir:` (when cn=config is not in /etc/ldap/slapd.d)",
            ));
        }
    }
    if let Some(c) = &d.config_dir {
        if !c.value.starts_with('/') || c.value.chars().any(char::is_control) {
            diags.push(err(
                file,
                c,
                format!(
                    "config_dir `{}` is not an absolute directory",
                    crate::values::shown(&c.value)
                ),
                "write the full path of slapd's cn=config directory, e.g. /etc/ldap/slapd.d",
            ));
        }
    }
    let suffix = match &d.database {
        None => String::new(),
        Some(db) => {
            let v = db.value.trim();
            // A DN: `attribute=value` parts; slapcat -b takes it as one argument, never parsed
            // by a shell, but a leading `-` or a line break has no business in a suffix.
            let ok = !v.is_empty()
                && !v.starts_with('-')
                && !v.chars().any(char::is_control)
                && v.split(',').all(|rdn| {
                    rdn.split_once('=')
                        .is_some_and(|(a, b)| !a.trim().is_empty() && !b.trim().is_empty())
                });
            if !ok {
                diags.push(Diagnostic::new(
                    place_of(file, db),
                    format!(
                        "`{}` is not an LDAP suffix (this ldap dump of job `{job}`)",
                        crate::values::shown(&db.value)
                    ),
                ).help("write the base DN of the directory, e.g. `database: dc=picasoft,dc=net`, or leave `database:` out to dump slapd's first database (`slapcat -n 1`)"));
            }
            v.to_string()
        }
    };
    (diags.len() == before).then_some(suffix)
}

fn repository_from_doc(
    file: &Path,
    doc: Spanned<RepositoryDoc>,
    diags: &mut Vec<Diagnostic>,
) -> Repository {
    let place = place_of(file, &doc);
    let r = doc.value;
    let kind = match r.kind.value.as_str() {
        "sftp" => RepositoryKind::Sftp,
        "rest" => RepositoryKind::Rest,
        other => {
            diags.push(err(
                file,
                &r.kind,
                format!("unknown repository kind `{other}`"),
                "use `sftp` (a directory on a host at the other site, reached over SSH) or `rest` (restic's rest-server)",
            ));
            RepositoryKind::Sftp
        }
    };
    let user = r
        .user
        .as_ref()
        .map(|u| u.value.clone())
        .unwrap_or_else(|| DEFAULT_SFTP_USER.to_string());
    if let Some(u) = &r.user {
        if u.value == "backup" {
            diags.push(err(
                file,
                u,
                "`backup` is a Debian system user (uid 34), not a repository account".into(),
                "use the default `picaops-restic` (or another dedicated name)",
            ));
        } else if kind == RepositoryKind::Rest {
            diags.push(err(
                file,
                u,
                "`user:` is for SFTP repositories".into(),
                "a rest repository has no SSH account: remove `user:`",
            ));
        }
    }
    let path = match (&r.path, kind) {
        (Some(p), RepositoryKind::Sftp) if !p.value.starts_with('/') => {
            diags.push(err(
                file,
                p,
                format!("repository path `{}` is not absolute", p.value),
                "write the full directory on the repository host, e.g. /srv/restic/pica01",
            ));
            p.value.clone()
        }
        (Some(p), _) => p.value.clone(),
        (None, RepositoryKind::Sftp) => {
            diags.push(
                Diagnostic::new(place.clone(), "an SFTP repository needs a `path:`")
                    .help("add `path: /srv/restic/JOB`: the directory on the repository host"),
            );
            String::new()
        }
        (None, RepositoryKind::Rest) => String::new(),
    };
    // Every repository is served over SSH now, append-only (README, "Backups"): rest-server's
    // settings have no meaning left, and saying so beats ignoring them.
    if let Some(p) = &r.port {
        diags.push(err(
            file,
            p,
            "`port:` was rest-server's, and picaops no longer runs rest-server (it answered anyone on the sites' network)".into(),
            "remove `port:`: the repository is reached over SSH (the host's SSH port), append-only; `apply` moves an existing one",
        ));
    }
    if let Some(t) = &r.tls {
        diags.push(err(
            file,
            t,
            "`tls:` was rest-server's, and picaops no longer runs rest-server".into(),
            "remove `tls:`: the repository is reached over SSH, which encrypts and authenticates",
        ));
    }
    if let Some(a) = r.append_only.as_ref().filter(|a| !a.value) {
        diags.push(err(
            file,
            a,
            "every repository is append-only for its data host: `append_only: false` cannot be had"
                .into(),
            "remove `append_only:`; retention runs on the repository's side",
        ));
    }
    Repository {
        kind,
        host: located(file, r.host),
        user,
        path,
        place,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(kind: DumpKind, container: Option<&str>, db: &str) -> Dump {
        Dump {
            kind,
            container: container.map(String::from),
            database: db.into(),
            user: None,
            password_env: None,
            config_dir: None,
        }
    }

    #[test]
    fn dump_file_names_are_stable_and_safe() {
        assert_eq!(
            dump(DumpKind::Postgres, Some("mattermost-db"), "mattermost").file_name(),
            "postgres-mattermost-db-mattermost.sql"
        );
        assert_eq!(
            dump(DumpKind::Sqlite, None, "/srv/app/data.db").file_name(),
            "sqlite-data.sql"
        );
        assert_eq!(
            dump(DumpKind::Mongodb, Some("wekan-db"), "wekan").file_name(),
            "mongodb-wekan-db-wekan.archive"
        );
        assert_eq!(
            dump(DumpKind::Mysql, Some("a b"), "x/y").file_name(),
            "mysql-a_b-x_y.sql"
        );
    }

    #[test]
    fn ldap_dump_file_names_name_the_container_and_the_suffix() {
        assert_eq!(dump(DumpKind::Ldap, None, "").file_name(), "ldap.ldif");
        assert_eq!(
            dump(DumpKind::Ldap, None, "dc=picasoft,dc=net").file_name(),
            "ldap-dc_picasoft_dc_net.ldif"
        );
        assert_eq!(
            dump(DumpKind::Ldap, Some("ldap"), "").file_name(),
            "ldap-ldap.ldif"
        );
    }

    #[test]
    fn retention_flags() {
        let r = Retention {
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_yearly: Some(0),
            ..Default::default()
        };
        assert_eq!(r.flags(), ["--keep-daily", "7", "--keep-weekly", "4"]);
        assert!(Retention::default().is_empty());
    }
}
