//! The inventory's `access:` section: where the LDAP directory is, which `gidNumber` means which
//! level and which local groups it brings, the renewal policy, the hosts' cache lifetime, the
//! break-glass login and the reminders before access ends (`remind:`, in [`super::remind`]).
//! Read strictly (every mistake with its file:line:column); defaults follow Picasoft's scheme
//! (../shared/PICASOFT.md).

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::date;
use crate::diagnostic::{Diagnostic, Place};
use crate::located::Located;
use crate::yaml::{place_of, Name};

/// The checked `access:` section.
#[derive(Clone, Debug, Serialize)]
pub struct Access {
    pub directory: Directory,
    pub levels: Vec<Level>,
    /// The first `uidNumber` picaops hands out; local accounts below it are never LDAP's.
    pub first_uid: u32,
    pub renewal: Renewal,
    /// How long a host may answer logins from its cache while the directory is unreachable.
    pub cache_lifetime_secs: u64,
    pub break_glass: Option<BreakGlass>,
    /// Mails before access ends (`access remind`).
    pub remind: Option<super::remind::Remind>,
    pub place: Place,
}

#[derive(Clone, Debug, Serialize)]
pub struct Directory {
    /// `ldaps://host:port`.
    pub url: String,
    pub base: String,
    /// Full DN of the people branch (`ou=People,<base>`).
    pub people: String,
    /// A PEM file of the CA that signed the server's certificate (else the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Bind DN for changes (`access grant` …) and its password's secret name.
    pub admin_dn: String,
    pub admin_password: String,
    /// Bind DN the hosts read with (anonymous when absent) and its password's secret name.
    pub reader_dn: Option<String>,
    pub reader_password: Option<String>,
    /// The attribute listing the machines a person may use.
    pub hosts_attribute: String,
    /// The name the server's certificate is checked against when the URL names another address
    /// (a recovered directory keeps its certificate at a new address). None: the URL's host.
    pub tls_name: Option<String>,
    /// The backup job that keeps the directory (a job of its machine with a `kind: ldap` dump):
    /// what `site recover` brings back when that machine's site is lost.
    pub backup: Option<Located<String>>,
    /// Where the directory comes back when its site is lost (a machine of another site).
    pub recover_to: Option<Located<String>>,
    /// While `recovery.yml` moves the directory: its URL and `tls_name` at home (`url` is the
    /// new place's).
    pub moved_from: Option<(String, Option<String>)>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Level {
    pub name: String,
    pub gid: u32,
    /// Local groups a person of this level joins on every host (`docker`, `sudo`).
    pub groups: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Renewal {
    /// (month, day) each semester starts.
    pub semester_starts: Vec<(u32, u32)>,
    /// Days after the next semester's start that access ends.
    pub grace_days: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct BreakGlass {
    pub user: String,
    /// Private key on the workstation (never in LDAP).
    pub identity_file: PathBuf,
}

impl Access {
    pub fn level_by_name(&self, name: &str) -> Option<&Level> {
        self.levels.iter().find(|l| l.name == name)
    }

    pub fn level_by_gid(&self, gid: u32) -> Option<&Level> {
        self.levels.iter().find(|l| l.gid == gid)
    }

    /// "Next semester" by the renewal policy, from `today`.
    pub fn next_semester(&self, today: i64) -> Option<i64> {
        date::next_semester_deadline(
            today,
            &self.renewal.semester_starts,
            self.renewal.grace_days,
        )
    }
}

/// The section as written.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct AccessDoc {
    directory: DirectoryDoc,
    levels: Option<IndexMap<Name, LevelDoc>>,
    first_uid: Option<Spanned<u32>>,
    renewal: Option<RenewalDoc>,
    cache_lifetime: Option<Spanned<String>>,
    break_glass: Option<BreakGlassDoc>,
    remind: Option<Spanned<super::remind::RemindDoc>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct DirectoryDoc {
    url: Spanned<String>,
    base: Spanned<String>,
    people: Option<String>,
    ca_file: Option<Spanned<String>>,
    admin_dn: Option<String>,
    admin_password: Spanned<String>,
    reader_dn: Option<String>,
    reader_password: Option<Spanned<String>>,
    hosts_attribute: Option<String>,
    tls_name: Option<String>,
    backup: Option<Spanned<String>>,
    recover_to: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct LevelDoc {
    gid: Spanned<u32>,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RenewalDoc {
    semester_starts: Vec<Spanned<String>>,
    #[serde(default = "default_grace")]
    grace_days: u32,
}

fn default_grace() -> u32 {
    30
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct BreakGlassDoc {
    user: Option<String>,
    identity_file: String,
}

/// The lowest `first_uid` accepted: below it are Debian's system accounts (root is 0), which
/// the directory must never be able to log in as.
pub const MIN_FIRST_UID: u32 = 1000;
/// The longest cache lifetime accepted (it bounds how long a revoked person could still log in
/// while the directory is down).
pub const MAX_CACHE_LIFETIME_SECS: u64 = 7 * 86400;

/// Picasoft's levels: 502 member, 500 tech (+docker), 501 admin (+docker, sudo).
pub fn picasoft_levels() -> Vec<Level> {
    let l = |name: &str, gid, groups: &[&str]| Level {
        name: name.into(),
        gid,
        groups: groups.iter().map(|g| g.to_string()).collect(),
    };
    vec![
        l("member", 502, &[]),
        l("tech", 500, &["docker"]),
        l("admin", 501, &["docker", "sudo"]),
    ]
}

fn valid_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

impl AccessDoc {
    /// Checks the section written in `file` at `place`; problems go to `diags`.
    pub fn resolve(self, file: &Path, place: Place, diags: &mut Vec<Diagnostic>) -> Option<Access> {
        let before = diags.len();
        let dir = file.parent().unwrap_or(Path::new("."));
        let d = self.directory;
        let url = d.url.value.trim().to_string();
        if !url.starts_with("ldaps://") {
            diags.push(
                Diagnostic::new(place_of(file, &d.url), format!("`{url}` is not an ldaps:// URL"))
                    .help("picaops only talks to the directory over TLS (passwords cross the network): write ldaps://HOST[:636]"),
            );
        }
        let base = d.base.value.trim().to_string();
        if !base.contains('=') {
            diags.push(
                Diagnostic::new(place_of(file, &d.base), format!("`{base}` is not a DN"))
                    .help("write the directory's base DN, for example dc=picasoft,dc=net"),
            );
        }
        let people = format!("{},{base}", d.people.unwrap_or_else(|| "ou=People".into()));
        let ca_file = d.ca_file.map(|c| {
            let p = dir.join(&c.value);
            if !p.is_file() {
                diags.push(
                    Diagnostic::new(place_of(file, &c), format!("CA file {} does not exist", p.display()))
                        .help("give the PEM file of the CA that signed the directory's certificate (relative to this file), or remove `ca_file` to use the system's CAs"),
                );
            }
            p
        });
        for s in std::iter::once(&d.admin_password).chain(d.reader_password.as_ref()) {
            if !crate::secrets::valid_name(&s.value) {
                diags.push(
                    Diagnostic::new(place_of(file, s), format!("`{}` is not a secret name", s.value))
                        .help("write the NAME of the secret (as in your `pass` store or secrets directory), never the password itself"),
                );
            }
        }
        if d.reader_dn.is_some() != d.reader_password.is_some() {
            diags.push(
                Diagnostic::new(
                    place.clone(),
                    "`reader_dn` and `reader_password` go together",
                )
                .help(
                    "give both (the hosts bind with them) or neither (the hosts read anonymously)",
                ),
            );
        }
        let levels = match self.levels {
            None => picasoft_levels(),
            Some(map) => {
                let mut levels: Vec<Level> = Vec::new();
                for (name, l) in map {
                    let lp = place_of(file, &name.0);
                    if !valid_word(&name.0.value) {
                        diags.push(Diagnostic::new(lp.clone(), format!("`{}` is not a valid level name", name.0.value)).help("use lowercase letters, digits, - and _ (it becomes a local group name)"));
                    }
                    if let Some(other) = levels.iter().find(|o| o.gid == l.gid.value) {
                        diags.push(
                            Diagnostic::new(
                                place_of(file, &l.gid),
                                format!("gid {} is already level `{}`", l.gid.value, other.name),
                            )
                            .help("each level needs its own gidNumber"),
                        );
                    }
                    for g in &l.groups {
                        if !valid_word(g) {
                            diags.push(Diagnostic::new(
                                lp.clone(),
                                format!("`{g}` is not a valid group name"),
                            ));
                        }
                    }
                    levels.push(Level {
                        name: name.0.value,
                        gid: l.gid.value,
                        groups: l.groups,
                    });
                }
                if levels.is_empty() {
                    diags.push(Diagnostic::new(place.clone(), "`levels:` is empty").help("remove it to use Picasoft's levels (member 502, tech 500, admin 501), or list yours"));
                }
                levels
            }
        };
        let renewal = match self.renewal {
            None => Renewal {
                semester_starts: vec![(2, 1), (9, 1)],
                grace_days: 30,
            },
            Some(r) => {
                let mut starts = Vec::new();
                for s in &r.semester_starts {
                    match date::parse_month_day(&s.value) {
                        Ok(md) => starts.push(md),
                        Err(e) => diags.push(Diagnostic::new(place_of(file, s), e.to_string())),
                    }
                }
                if r.semester_starts.is_empty() {
                    diags.push(Diagnostic::new(place.clone(), "`renewal.semester_starts` is empty").help("list the days semesters start, as MM-DD, for example [\"02-01\", \"09-01\"]"));
                }
                Renewal {
                    semester_starts: starts,
                    grace_days: r.grace_days,
                }
            }
        };
        let cache_lifetime_secs = match self.cache_lifetime {
            None => 6 * 3600,
            Some(c) => match date::parse_duration(&c.value) {
                Ok(s) if s > 0 && s <= MAX_CACHE_LIFETIME_SECS => s,
                Ok(_) => {
                    diags.push(Diagnostic::new(place_of(file, &c), "the cache lifetime must be between 1s and 7d").help("it bounds how long a revoked person could still log in while the directory is down"));
                    0
                }
                Err(e) => {
                    diags.push(Diagnostic::new(place_of(file, &c), e.to_string()));
                    0
                }
            },
        };
        let first_uid = match &self.first_uid {
            None => 2000,
            Some(f) if f.value < MIN_FIRST_UID => {
                diags.push(
                    Diagnostic::new(
                        place_of(file, f),
                        format!("first_uid {} would put system accounts (root is 0) under the directory", f.value),
                    )
                    .help(format!("write at least {MIN_FIRST_UID} (Debian's first user); Picasoft uses 2000, the default")),
                );
                0
            }
            Some(f) => f.value,
        };
        let break_glass = self.break_glass.map(|b| BreakGlass {
            user: b.user.unwrap_or_else(|| "root".into()),
            identity_file: dir.join(b.identity_file),
        });
        let remind = self.remind.and_then(|r| {
            let at = place_of(file, &r);
            r.value.resolve(file, at, diags)
        });
        if diags.len() > before {
            return None;
        }
        Some(Access {
            directory: Directory {
                url,
                base: base.clone(),
                people,
                ca_file,
                admin_dn: d.admin_dn.unwrap_or_else(|| format!("cn=admin,{base}")),
                admin_password: d.admin_password.value,
                reader_dn: d.reader_dn,
                reader_password: d.reader_password.map(|p| p.value),
                hosts_attribute: d.hosts_attribute.unwrap_or_else(|| "host".into()),
                tls_name: d.tls_name,
                backup: d.backup.map(|b| super::located(file, b)),
                recover_to: d.recover_to.map(|b| super::located(file, b)),
                moved_from: None,
            },
            levels,
            first_uid,
            renewal,
            cache_lifetime_secs,
            break_glass,
            remind,
            place,
        })
    }
}
