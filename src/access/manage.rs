//! What `picaops access …` does to the directory: grant, extend, revoke, remove a key, and the
//! semester routine; plus the views `list` and `audit` compute. Each change reads the person
//! first and writes only what differs, so running a command twice changes nothing the second time.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::config::{Access, Level};
use super::date;
use super::directory::{
    login_error, mail_error, name_error, valid_login, Change, Directory, DirectoryError, Expiry,
    Person,
};
use super::host::{decide, HostConfig};
use super::keys::{self, PublicKey};

/// Object classes a person needs in Picasoft's scheme.
pub const PERSON_CLASSES: &[&str] = &[
    "inetOrgPerson",
    "posixAccount",
    "shadowAccount",
    "ldapPublicKey",
    "hostObject",
];

/// `access grant`'s request, checked by the caller (keys parsed, hosts known, date valid).
#[derive(Clone, Debug)]
pub struct Grant {
    pub login: String,
    pub level: Level,
    /// The value to store in `shadowExpire` (first day refused).
    pub shadow_expire: i64,
    pub keys: Vec<PublicKey>,
    /// `None`: leave the person's machines as they are (a new person then gets none).
    pub hosts: Option<Vec<String>>,
    pub name: Option<String>,
    pub mail: Option<String>,
}

/// What a command did to one person.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Outcome {
    pub login: String,
    /// `created`, `updated` or `unchanged`.
    pub action: String,
    pub changes: Vec<String>,
    /// Machines the person may use, before and after (for pushing the change to them).
    pub hosts_before: Vec<String>,
    pub hosts_after: Vec<String>,
}

fn split_name(name: &str, login: &str) -> (String, String) {
    let mut words = name.split_whitespace();
    match (words.next(), words.collect::<Vec<_>>().join(" ")) {
        (Some(g), rest) if !rest.is_empty() => (g.to_string(), rest),
        (Some(g), _) => (g.to_string(), login.to_string()),
        (None, _) => (login.to_string(), login.to_string()),
    }
}

fn person_or_missing(login: &str, p: Option<Person>) -> Result<Person, DirectoryError> {
    p.ok_or_else(|| {
        DirectoryError::Invalid(format!(
            "nobody has the login `{login}` in the directory (see `picaops access list`)"
        ))
    })
}

/// Creates the person or brings an existing one to what the grant says.
pub async fn grant(
    d: &mut Directory,
    access: &Access,
    g: &Grant,
) -> Result<Outcome, DirectoryError> {
    if !valid_login(&g.login) {
        return Err(DirectoryError::Invalid(login_error(&g.login)));
    }
    if let Some(e) = g.name.as_deref().and_then(name_error) {
        return Err(DirectoryError::Invalid(e));
    }
    if let Some(e) = g.mail.as_deref().and_then(mail_error) {
        return Err(DirectoryError::Invalid(e));
    }
    let attr = access.directory.hosts_attribute.clone();
    match d.person(&g.login).await? {
        None => {
            let uid = d.next_uid(access.first_uid).await?;
            let (given, sn) = split_name(g.name.as_deref().unwrap_or(""), &g.login);
            let hosts = g.hosts.clone().unwrap_or_default();
            let mut attrs: Vec<(String, Vec<String>)> = vec![
                (
                    "objectClass".into(),
                    PERSON_CLASSES.iter().map(|s| s.to_string()).collect(),
                ),
                ("uid".into(), vec![g.login.clone()]),
                ("cn".into(), vec![g.login.clone()]),
                ("givenName".into(), vec![given]),
                ("sn".into(), vec![sn]),
                ("uidNumber".into(), vec![uid.to_string()]),
                ("gidNumber".into(), vec![g.level.gid.to_string()]),
                ("homeDirectory".into(), vec![format!("/home/{}", g.login)]),
                ("loginShell".into(), vec!["/bin/bash".into()]),
                ("shadowExpire".into(), vec![g.shadow_expire.to_string()]),
            ];
            if let Some(m) = &g.mail {
                attrs.push(("mail".into(), vec![m.clone()]));
            }
            if !g.keys.is_empty() {
                attrs.push((
                    "sshPublicKey".into(),
                    g.keys.iter().map(PublicKey::line).collect(),
                ));
            }
            if !hosts.is_empty() {
                attrs.push((attr, hosts.clone()));
            }
            let dn = format!(
                "uid={},{}",
                ldap3::dn_escape(&g.login),
                access.directory.people
            );
            d.add(&dn, attrs).await?;
            Ok(Outcome {
                login: g.login.clone(),
                action: "created".into(),
                changes: vec![format!(
                    "uidNumber {uid}, level {}, until {}, {} key(s), machines: {}",
                    g.level.name,
                    date::format_day(g.shadow_expire - 1),
                    g.keys.len(),
                    if hosts.is_empty() {
                        "none".into()
                    } else {
                        hosts.join(", ")
                    }
                )],
                hosts_before: vec![],
                hosts_after: hosts,
            })
        }
        Some(p) => {
            let mut mods = Vec::new();
            let mut changes = Vec::new();
            let missing: Vec<String> = PERSON_CLASSES
                .iter()
                .filter(|c| !p.object_classes.iter().any(|o| o.eq_ignore_ascii_case(c)))
                .map(|c| c.to_string())
                .collect();
            if !missing.is_empty() {
                changes.push(format!("object classes + {}", missing.join(", ")));
                mods.push(Change::Add("objectClass".into(), missing));
            }
            if p.gid_number != Some(g.level.gid) {
                changes.push(format!("level → {}", g.level.name));
                mods.push(Change::Replace(
                    "gidNumber".into(),
                    vec![g.level.gid.to_string()],
                ));
            }
            if p.shadow_expire != Expiry::Until(g.shadow_expire) {
                changes.push(format!(
                    "until {} → {}",
                    p.until(),
                    date::format_day(g.shadow_expire - 1)
                ));
                mods.push(Change::Replace(
                    "shadowExpire".into(),
                    vec![g.shadow_expire.to_string()],
                ));
            }
            let have: BTreeSet<String> = p
                .keys
                .iter()
                .filter_map(|k| keys::parse(k).ok())
                .map(|k| k.identity())
                .collect();
            let new: Vec<String> = g
                .keys
                .iter()
                .filter(|k| !have.contains(&k.identity()))
                .map(PublicKey::line)
                .collect();
            if !new.is_empty() {
                changes.push(format!("{} key(s) added", new.len()));
                mods.push(Change::Add("sshPublicKey".into(), new));
            }
            let mut hosts_after = p.hosts.clone();
            if let Some(h) = &g.hosts {
                let before: BTreeSet<&String> = p.hosts.iter().collect();
                let after: BTreeSet<&String> = h.iter().collect();
                if before != after {
                    changes.push(format!(
                        "machines → {}",
                        if h.is_empty() {
                            "none".into()
                        } else {
                            h.join(", ")
                        }
                    ));
                    mods.push(Change::Replace(attr, h.clone()));
                    hosts_after = h.clone();
                }
            }
            if let Some(m) = &g.mail {
                if p.mail.as_ref() != Some(m) {
                    changes.push(format!("mail → {m}"));
                    mods.push(Change::Replace("mail".into(), vec![m.clone()]));
                }
            }
            if let Some(n) = &g.name {
                let (given, sn) = split_name(n, &g.login);
                if p.given_name.as_ref() != Some(&given) || p.sn.as_ref() != Some(&sn) {
                    changes.push(format!("name → {n}"));
                    mods.push(Change::Replace("givenName".into(), vec![given]));
                    mods.push(Change::Replace("sn".into(), vec![sn]));
                }
            }
            d.modify(&p.dn, mods).await?;
            Ok(Outcome {
                login: g.login.clone(),
                action: if changes.is_empty() {
                    "unchanged"
                } else {
                    "updated"
                }
                .into(),
                changes,
                hosts_before: p.hosts.clone(),
                hosts_after,
            })
        }
    }
}

async fn set_expiry(
    d: &mut Directory,
    login: &str,
    shadow_expire: i64,
    drop_keys: bool,
) -> Result<Outcome, DirectoryError> {
    let p = person_or_missing(login, d.person(login).await?)?;
    let mut mods = Vec::new();
    let mut changes = Vec::new();
    if p.shadow_expire != Expiry::Until(shadow_expire) {
        changes.push(format!(
            "until {} → {}",
            p.until(),
            date::format_day(shadow_expire - 1)
        ));
        mods.push(Change::Replace(
            "shadowExpire".into(),
            vec![shadow_expire.to_string()],
        ));
    }
    if drop_keys && !p.keys.is_empty() {
        changes.push(format!("{} key(s) removed", p.keys.len()));
        mods.push(Change::Delete("sshPublicKey".into(), vec![]));
    }
    d.modify(&p.dn, mods).await?;
    Ok(Outcome {
        login: login.into(),
        action: if changes.is_empty() {
            "unchanged"
        } else {
            "updated"
        }
        .into(),
        changes,
        hosts_before: p.hosts.clone(),
        hosts_after: p.hosts,
    })
}

/// `access extend LOGIN --until …`.
pub async fn extend(
    d: &mut Directory,
    login: &str,
    shadow_expire: i64,
) -> Result<Outcome, DirectoryError> {
    set_expiry(d, login, shadow_expire, false).await
}

/// `access revoke LOGIN`: access ends today (refused from today on) and every key goes; the
/// entry stays (uidNumber, files on the hosts keep their owner).
pub async fn revoke(d: &mut Directory, login: &str, today: i64) -> Result<Outcome, DirectoryError> {
    set_expiry(d, login, today, true).await
}

/// `access remove-key LOGIN FINGERPRINT`.
pub async fn remove_key(
    d: &mut Directory,
    login: &str,
    fingerprint: &str,
) -> Result<Outcome, DirectoryError> {
    let p = person_or_missing(login, d.person(login).await?)?;
    let matching: Vec<String> = p
        .keys
        .iter()
        .filter(|k| {
            keys::parse(k).is_ok_and(|pk| {
                pk.fingerprint == fingerprint || pk.fingerprint == format!("SHA256:{fingerprint}")
            })
        })
        .cloned()
        .collect();
    if matching.is_empty() {
        let have: Vec<String> = p
            .keys
            .iter()
            .filter_map(|k| keys::parse(k).ok())
            .map(|k| k.fingerprint)
            .collect();
        return Err(DirectoryError::Invalid(format!(
            "{login} has no key with fingerprint {fingerprint}; their keys: {}",
            if have.is_empty() {
                "none".into()
            } else {
                have.join(", ")
            }
        )));
    }
    d.modify(
        &p.dn,
        vec![Change::Delete("sshPublicKey".into(), matching.clone())],
    )
    .await?;
    Ok(Outcome {
        login: login.into(),
        action: "updated".into(),
        changes: vec![format!("key {fingerprint} removed")],
        hosts_before: p.hosts.clone(),
        hosts_after: p.hosts,
    })
}

/// One row of `access list`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub login: String,
    pub name: String,
    pub mail: Option<String>,
    pub level: Option<String>,
    pub uid_number: Option<u32>,
    /// Last day access works, or "never".
    pub until: String,
    /// Days left (negative: ended that many days ago); `None`: never ends.
    pub days_left: Option<i64>,
    pub hosts: Vec<String>,
    pub keys: Vec<String>,
    pub expired: bool,
}

pub fn row(access: &Access, p: &Person, today: i64) -> Row {
    Row {
        login: p.login.clone(),
        name: p.display_name(),
        mail: p.mail.clone(),
        level: p
            .gid_number
            .and_then(|g| access.level_by_gid(g))
            .map(|l| l.name.clone()),
        uid_number: p.uid_number,
        until: p.until(),
        days_left: p.shadow_expire.day().map(|e| e - today),
        hosts: p.hosts.clone(),
        keys: p
            .keys
            .iter()
            .map(|k| {
                keys::parse(k)
                    .map(|k| k.describe())
                    .unwrap_or_else(|e| format!("REFUSED: {e}"))
            })
            .collect(),
        expired: p.expired(today),
    }
}

/// The helper's job for `host`, as apply writes it (also how the workstation decides for audit).
pub fn host_config(access: &Access, host: &str) -> HostConfig {
    let d = &access.directory;
    HostConfig {
        host: host.into(),
        url: d.url.clone(),
        people: d.people.clone(),
        hosts_attribute: d.hosts_attribute.clone(),
        ca_file: d
            .ca_file
            .as_ref()
            .map(|_| "/etc/picaops/access-ca.pem".into()),
        bind_dn: d.reader_dn.clone(),
        password_file: d
            .reader_dn
            .as_ref()
            .map(|_| "/etc/picaops/access.secret".into()),
        levels: access.levels.clone(),
        first_uid: access.first_uid,
        cache_dir: "/var/cache/picaops-access".into(),
        state_dir: "/var/lib/picaops/access".into(),
        cache_lifetime_secs: access.cache_lifetime_secs,
        timeout_ms: 1000,
        tls_name: d.tls_name.clone(),
    }
}

/// Something `audit` thinks a human should look at.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Anomaly {
    pub kind: String,
    pub logins: Vec<String>,
    pub detail: String,
}

/// Problems visible in the directory alone.
pub fn anomalies(
    access: &Access,
    people: &[Person],
    machines: &BTreeSet<String>,
    today: i64,
) -> Vec<Anomaly> {
    let mut out = Vec::new();
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut by_uid: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for p in people {
        if let Expiry::Invalid(raw) = &p.shadow_expire {
            out.push(Anomaly {
                kind: "invalid-expiry".into(),
                logins: vec![p.login.clone()],
                detail: format!(
                    "shadowExpire {raw:?} is not a day count: nobody lets them in until `picaops access extend {} --until YYYY-MM-DD` writes a real date",
                    p.login
                ),
            });
        }
        if let Some(why) = &p.broken {
            out.push(Anomaly {
                kind: "broken-entry".into(),
                // An entry with several uids stands for no login: name it by its DN.
                logins: vec![if p.login.is_empty() {
                    p.dn.clone()
                } else {
                    p.login.clone()
                }],
                detail: format!(
                    "{}: {why}; nobody gets in on this entry until it is fixed",
                    p.dn
                ),
            });
        }
        if p.keys.len() > super::directory::MAX_KEYS {
            out.push(Anomaly {
                kind: "too-many-keys".into(),
                logins: vec![p.login.clone()],
                detail: format!(
                    "{} keys, more than {}: no key of theirs is served; remove the old ones with `picaops access remove-key`",
                    p.keys.len(),
                    super::directory::MAX_KEYS
                ),
            });
        }
        if matches!(p.shadow_expire, Expiry::Until(_)) && p.expired(today) && !p.keys.is_empty() {
            out.push(Anomaly {
                kind: "expired-with-keys".into(),
                logins: vec![p.login.clone()],
                detail: format!(
                    "access ended {} but {} key(s) remain: `picaops access revoke {}` removes them",
                    p.until(),
                    p.keys.len(),
                    p.login
                ),
            });
        }
        for k in &p.keys {
            match keys::parse(k) {
                Ok(pk) => by_key
                    .entry(pk.fingerprint)
                    .or_default()
                    .push(p.login.clone()),
                Err(e) => out.push(Anomaly {
                    kind: "weak-key".into(),
                    logins: vec![p.login.clone()],
                    detail: format!(
                        "{}: {e}",
                        k.split_whitespace()
                            .take(2)
                            .collect::<Vec<_>>()
                            .join(" ")
                            .chars()
                            .take(40)
                            .collect::<String>()
                    ),
                }),
            }
        }
        if let Some(u) = p.uid_number {
            by_uid.entry(u).or_default().push(p.login.clone());
        }
        if p.gid_number.and_then(|g| access.level_by_gid(g)).is_none() {
            out.push(Anomaly {
                kind: "unknown-level".into(),
                logins: vec![p.login.clone()],
                detail: format!(
                    "gidNumber {:?} is none of the inventory's levels: nobody lets them in",
                    p.gid_number
                ),
            });
        }
        for h in &p.hosts {
            if h != "*" && !machines.contains(h) {
                out.push(Anomaly {
                    kind: "unknown-host".into(),
                    logins: vec![p.login.clone()],
                    detail: format!("allowed on `{h}`, which is not in the inventory"),
                });
            }
        }
    }
    for (fp, logins) in by_key {
        let distinct: BTreeSet<&String> = logins.iter().collect();
        if distinct.len() > 1 {
            out.push(Anomaly {
                kind: "shared-key".into(),
                logins: distinct.into_iter().cloned().collect(),
                detail: format!(
                    "key {fp} belongs to several people: each person needs their own key"
                ),
            });
        }
    }
    for (uid, logins) in by_uid {
        if logins.len() > 1 {
            out.push(Anomaly {
                kind: "uid-collision".into(),
                logins,
                detail: format!("uidNumber {uid} is used more than once: files on the hosts would belong to both"),
            });
        }
    }
    out
}

/// Who the directory lets in on `host` today, by login, with the last day.
pub fn allowed_on(
    access: &Access,
    people: &[Person],
    host: &str,
    today: i64,
) -> BTreeMap<String, String> {
    let cfg = host_config(access, host);
    people
        .iter()
        .filter(|p| valid_login(&p.login))
        .filter_map(|p| {
            let d = decide(&cfg, p, today);
            d.allowed.then(|| (p.login.clone(), d.until))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::config::picasoft_levels;

    fn person(
        login: &str,
        uid: u32,
        gid: u32,
        expire: Expiry,
        keys: &[&str],
        hosts: &[&str],
    ) -> Person {
        Person {
            dn: format!("uid={login},ou=People,dc=x"),
            login: login.into(),
            uid_number: Some(uid),
            gid_number: Some(gid),
            given_name: None,
            sn: None,
            mail: None,
            shadow_expire: expire,
            keys: keys.iter().map(|s| s.to_string()).collect(),
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            object_classes: vec![],
            broken: None,
        }
    }

    fn access() -> Access {
        let doc: super::super::AccessDoc = serde_saphyr::from_str(
            "directory: {url: 'ldaps://ldap:636', base: 'dc=x', admin_password: a}\n",
        )
        .unwrap();
        let mut diags = vec![];
        doc.resolve(
            std::path::Path::new("/x/access.yml"),
            crate::diagnostic::Place::file("/x"),
            &mut diags,
        )
        .expect("valid")
    }

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@b";

    #[test]
    fn audit_flags_every_kind_of_anomaly() {
        let a = access();
        assert_eq!(a.levels, picasoft_levels());
        let today = 20000;
        let people = vec![
            person("ann", 2000, 502, Expiry::Until(19990), &[KEY], &["pica01"]),
            person("bob", 2001, 500, Expiry::Never, &[KEY], &["gone01"]),
            person(
                "cid",
                2001,
                999,
                Expiry::Never,
                &["ssh-dss AAAAB3NzaC1kc3M"],
                &["*"],
            ),
        ];
        let machines: BTreeSet<String> = ["pica01".to_string()].into();
        let found = anomalies(&a, &people, &machines, today);
        let kinds: BTreeSet<&str> = found.iter().map(|x| x.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "expired-with-keys",
                "shared-key",
                "uid-collision",
                "unknown-host",
                "unknown-level",
                "weak-key"
            ]
            .into()
        );
        let allowed = allowed_on(&a, &people, "pica01", today);
        // ann expired, bob not allowed on pica01, cid has no level.
        assert!(allowed.is_empty(), "{allowed:?}");
        let allowed = allowed_on(&a, &people, "gone01", today);
        assert_eq!(allowed.keys().collect::<Vec<_>>(), ["bob"]);
    }

    #[test]
    fn audit_flags_end_dates_that_are_no_day_count_and_broken_entries() {
        let a = access();
        let today = 20000;
        let mut dan = person(
            "dan",
            2003,
            502,
            Expiry::Invalid("-2".into()),
            &[KEY],
            &["*"],
        );
        let eve = person("eve", 2004, 502, Expiry::Never, &[], &["*"]);
        let found = anomalies(&a, &[dan.clone(), eve.clone()], &BTreeSet::new(), today);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, "invalid-expiry");
        assert_eq!(found[0].logins, ["dan"]);
        assert!(found[0].detail.contains("access extend dan"), "{found:?}");
        assert!(allowed_on(&a, &[dan.clone()], "pica01", today).is_empty());
        let r = row(&a, &dan, today);
        assert!(r.expired && r.days_left.is_none() && r.until.contains("invalid"));
        dan.shadow_expire = Expiry::Never;
        dan.broken = Some("the entry has 2 uids".into());
        let found = anomalies(&a, &[dan.clone()], &BTreeSet::new(), today);
        assert_eq!(found[0].kind, "broken-entry", "{found:?}");
        assert!(allowed_on(&a, &[dan], "pica01", today).is_empty());
    }
}
