//! The LDAP directory as picaops sees it: people under `ou=People` in Picasoft's scheme
//! (posixAccount + shadowAccount + inetOrgPerson + ldapPublicKey + hostObject), read and changed
//! through ldap3 over TLS (rustls). Every value put into a search filter is escaped, and logins
//! are checked before any query is built, so a login can never widen a search.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, Mod, Scope, SearchEntry};
use serde::Serialize;

use super::date;
use crate::secrets::Secret;

/// Attributes picaops reads from a person's entry.
const ATTRS: &[&str] = &[
    "uid",
    "cn",
    "givenName",
    "sn",
    "mail",
    "uidNumber",
    "gidNumber",
    "shadowExpire",
    "sshPublicKey",
    "objectClass",
];

/// One person, as the directory holds them.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Person {
    pub dn: String,
    pub login: String,
    pub uid_number: Option<u32>,
    pub gid_number: Option<u32>,
    pub given_name: Option<String>,
    pub sn: Option<String>,
    pub mail: Option<String>,
    /// `shadowExpire`: the first day (since 1970) access no longer works; `None` for -1 (never)
    /// or absent.
    pub shadow_expire: Option<i64>,
    /// `sshPublicKey` values, as stored.
    pub keys: Vec<String>,
    /// Machines this person may use (`*`: all of them).
    pub hosts: Vec<String>,
    #[serde(skip, default)]
    pub object_classes: Vec<String>,
}

impl Person {
    /// Whether `shadowExpire` lets them in on day `today` (pam_unix's rule: refused from that day on).
    pub fn expired(&self, today: i64) -> bool {
        matches!(self.shadow_expire, Some(e) if today >= e)
    }

    pub fn allowed_on(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h == host || h == "*")
    }

    /// Last day access works (`shadowExpire - 1`), as YYYY-MM-DD; "never" without expiry.
    pub fn until(&self) -> String {
        match self.shadow_expire {
            Some(e) => date::format_day(e - 1),
            None => "never".into(),
        }
    }

    pub fn display_name(&self) -> String {
        match (&self.given_name, &self.sn) {
            (Some(g), Some(s)) if s != &self.login => format!("{g} {s}"),
            (Some(g), _) => g.clone(),
            (None, Some(s)) if s != &self.login => s.clone(),
            _ => String::new(),
        }
    }
}

/// Logins picaops accepts: what `useradd` accepts on Debian without `--badname`, lowercase only.
/// Everything else (`*)(uid=*`, newlines, spaces) is refused before any LDAP query.
pub fn valid_login(login: &str) -> bool {
    !login.is_empty()
        && login.len() <= 32
        && login.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && login
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
}

pub fn login_error(login: &str) -> String {
    format!(
        "{:?} is not a valid login: use lowercase letters, digits, '.', '_' and '-' (at most 32, starting with a letter)",
        login
    )
}

/// What went wrong talking to the directory.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot reach the directory at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the directory at {url} did not answer within {secs:.1}s")]
    Timeout { url: String, secs: f64 },
    #[error("the directory refused the login as {dn}: {detail}. Check the password secret in the inventory's `access.directory`")]
    Bind { dn: String, detail: String },
    #[error("{0}")]
    Ldap(String),
    #[error("{0}")]
    Invalid(String),
}

/// How to reach the directory (from the inventory on the workstation, from the job file on a host).
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub url: String,
    pub ca_pem: Option<Vec<u8>>,
    pub people: String,
    pub hosts_attribute: String,
    pub timeout: Duration,
}

/// An open, bound connection.
pub struct Directory {
    ldap: Ldap,
    ep: Endpoint,
}

fn tls_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, DirectoryError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert =
            cert.map_err(|e| DirectoryError::Invalid(format!("the CA file is not PEM: {e}")))?;
        roots.add(cert).map_err(|e| {
            DirectoryError::Invalid(format!("the CA file holds a bad certificate: {e}"))
        })?;
    }
    if roots.is_empty() {
        return Err(DirectoryError::Invalid(
            "the CA file holds no certificate".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DirectoryError::Invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn ldap_err(e: ldap3::LdapError) -> DirectoryError {
    DirectoryError::Ldap(e.to_string())
}

impl Directory {
    /// Connects and binds (`bind`: DN and password; `None`: anonymous), all within the endpoint's timeout.
    pub async fn open(
        ep: &Endpoint,
        bind: Option<(&str, &Secret)>,
    ) -> Result<Self, DirectoryError> {
        let secs = ep.timeout.as_secs_f64();
        match tokio::time::timeout(ep.timeout, Self::open_inner(ep, bind)).await {
            Ok(r) => r,
            Err(_) => Err(DirectoryError::Timeout {
                url: ep.url.clone(),
                secs,
            }),
        }
    }

    async fn open_inner(
        ep: &Endpoint,
        bind: Option<(&str, &Secret)>,
    ) -> Result<Self, DirectoryError> {
        let mut settings = LdapConnSettings::new().set_conn_timeout(ep.timeout);
        if let Some(pem) = &ep.ca_pem {
            settings = settings.set_config(tls_config(pem)?);
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &ep.url)
            .await
            .map_err(|e| DirectoryError::Unreachable {
                url: ep.url.clone(),
                detail: e.to_string(),
            })?;
        ldap3::drive!(conn);
        ldap.with_timeout(ep.timeout);
        if let Some((dn, pw)) = bind {
            let r = ldap.simple_bind(dn, pw.expose()).await.map_err(|e| {
                DirectoryError::Unreachable {
                    url: ep.url.clone(),
                    detail: e.to_string(),
                }
            })?;
            if r.rc != 0 {
                return Err(DirectoryError::Bind {
                    dn: dn.into(),
                    detail: format!("{} (code {})", r.text, r.rc),
                });
            }
        }
        Ok(Directory {
            ldap,
            ep: ep.clone(),
        })
    }

    pub async fn close(mut self) {
        let _ = self.ldap.unbind().await;
    }

    async fn search(&mut self, filter: &str) -> Result<Vec<Person>, DirectoryError> {
        let mut attrs: Vec<&str> = ATTRS.to_vec();
        attrs.push(&self.ep.hosts_attribute);
        self.ldap.with_timeout(self.ep.timeout);
        let (entries, _) = self
            .ldap
            .search(&self.ep.people, Scope::OneLevel, filter, attrs)
            .await
            .map_err(ldap_err)?
            .success()
            .map_err(ldap_err)?;
        Ok(entries
            .into_iter()
            .map(|e| person_from(SearchEntry::construct(e), &self.ep.hosts_attribute))
            .collect())
    }

    /// The person with this login, if any. The login is checked, then escaped.
    pub async fn person(&mut self, login: &str) -> Result<Option<Person>, DirectoryError> {
        if !valid_login(login) {
            return Err(DirectoryError::Invalid(login_error(login)));
        }
        let filter = format!("(&(objectClass=posixAccount)(uid={}))", ldap_escape(login));
        let mut found = self.search(&filter).await?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            n => Err(DirectoryError::Ldap(format!(
                "{n} entries have uid={login} under {}; fix the directory so each login is one person",
                self.ep.people
            ))),
        }
    }

    /// Everyone under the people branch with a POSIX account.
    pub async fn people(&mut self) -> Result<Vec<Person>, DirectoryError> {
        let mut all = self.search("(objectClass=posixAccount)").await?;
        all.sort_by(|a, b| a.login.cmp(&b.login));
        Ok(all)
    }

    /// The next free uidNumber (one more than the highest in use, at least `first`).
    pub async fn next_uid(&mut self, first: u32) -> Result<u32, DirectoryError> {
        let max = self
            .people()
            .await?
            .iter()
            .filter_map(|p| p.uid_number)
            .max();
        Ok(max.map_or(first, |m| (m + 1).max(first)))
    }

    pub async fn add(
        &mut self,
        dn: &str,
        attrs: Vec<(String, Vec<String>)>,
    ) -> Result<(), DirectoryError> {
        let attrs: Vec<(String, HashSet<String>)> = attrs
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().collect()))
            .collect();
        self.ldap
            .add(dn, attrs)
            .await
            .map_err(ldap_err)?
            .success()
            .map_err(ldap_err)?;
        Ok(())
    }

    pub async fn modify(&mut self, dn: &str, mods: Vec<Change>) -> Result<(), DirectoryError> {
        if mods.is_empty() {
            return Ok(());
        }
        let mods: Vec<Mod<String>> = mods
            .into_iter()
            .map(|c| match c {
                Change::Replace(a, v) => Mod::Replace(a, v.into_iter().collect()),
                Change::Add(a, v) => Mod::Add(a, v.into_iter().collect()),
                Change::Delete(a, v) => Mod::Delete(a, v.into_iter().collect()),
            })
            .collect();
        self.ldap
            .modify(dn, mods)
            .await
            .map_err(ldap_err)?
            .success()
            .map_err(ldap_err)?;
        Ok(())
    }
}

/// One change to an entry's attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Replace(String, Vec<String>),
    Add(String, Vec<String>),
    Delete(String, Vec<String>),
}

fn person_from(e: SearchEntry, hosts_attribute: &str) -> Person {
    let get = |name: &str| -> Vec<String> {
        e.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let one = |name: &str| get(name).into_iter().next();
    let mut keys = get("sshPublicKey");
    // Binary-looking values (not UTF-8) land in bin_attrs; keep what decodes.
    for (k, vals) in &e.bin_attrs {
        if k.eq_ignore_ascii_case("sshPublicKey") {
            keys.extend(vals.iter().map(|v| String::from_utf8_lossy(v).into_owned()));
        }
    }
    let shadow_expire = one("shadowExpire")
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|&d| d >= 0);
    Person {
        dn: e.dn.clone(),
        login: one("uid").unwrap_or_default(),
        uid_number: one("uidNumber").and_then(|s| s.parse().ok()),
        gid_number: one("gidNumber").and_then(|s| s.parse().ok()),
        given_name: one("givenName"),
        sn: one("sn"),
        mail: one("mail"),
        shadow_expire,
        keys,
        hosts: get(hosts_attribute),
        object_classes: get("objectClass"),
    }
}

/// Reads the CA file named in the inventory.
pub fn read_ca(path: Option<&Path>) -> Result<Option<Vec<u8>>, DirectoryError> {
    path.map(|p| {
        std::fs::read(p).map_err(|e| {
            DirectoryError::Invalid(format!("cannot read the CA file {}: {e}", p.display()))
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_that_could_widen_a_search_are_refused() {
        for bad in [
            "*)(uid=*",
            "alice\n",
            "alice)(|(uid=*",
            "Alice",
            "",
            "a b",
            "-x",
            "../root",
            "a*",
        ] {
            assert!(!valid_login(bad), "{bad:?} must be refused");
        }
        for good in ["alice", "jdupont", "j.dupont", "_svc", "user-2"] {
            assert!(valid_login(good), "{good:?}");
        }
        // And the escaping stays as the second defence for hosts and other values.
        assert_eq!(ldap_escape("*)(uid=*"), "\\2a\\29\\28uid=\\2a");
    }

    #[test]
    fn expiry_follows_pam_unix() {
        let p = Person {
            dn: String::new(),
            login: "a".into(),
            uid_number: Some(2000),
            gid_number: Some(502),
            given_name: None,
            sn: None,
            mail: None,
            shadow_expire: Some(20892),
            keys: vec![],
            hosts: vec!["pica01".into()],
            object_classes: vec![],
        };
        assert!(!p.expired(20891));
        assert!(p.expired(20892));
        assert_eq!(p.until(), "2027-03-14");
        assert!(p.allowed_on("pica01"));
        assert!(!p.allowed_on("pica02"));
    }
}
