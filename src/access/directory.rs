//! The LDAP directory as picaops sees it: people under `ou=People` in Picasoft's scheme
//! (posixAccount + shadowAccount + inetOrgPerson + ldapPublicKey + hostObject), read and changed
//! through ldap3 over TLS (rustls). Every value put into a search filter is escaped, and logins
//! are checked before any query is built, so a login can never widen a search.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{
    ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, Mod, Scope, SearchEntry, SearchOptions,
};
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

/// Most entries `people()` accepts in one answer; more is a broken or hostile directory.
pub const MAX_PEOPLE: usize = 20_000;
/// Most `sshPublicKey` values a person may have; an entry with more gets no key at all.
pub const MAX_KEYS: usize = 32;
/// Largest `shadowExpire` picaops reads as a date (9999-12-31); beyond it the value is invalid.
pub const MAX_DAY: i64 = 2_932_896;

/// A person's end date, as `shadowExpire` says it. Only an absent value or exactly `-1` means
/// "never"; anything that is not a day count (a negative number, text, a date, a fraction,
/// several values) is `Invalid` and lets nobody in.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub enum Expiry {
    Never,
    /// The first day (since 1970) access no longer works.
    Until(i64),
    /// What the directory holds, as it holds it.
    Invalid(String),
}

impl Expiry {
    /// Reads the values of `shadowExpire` (none, one, or — wrongly — several).
    pub fn parse(values: &[String]) -> Expiry {
        match values {
            [] => Expiry::Never,
            [one] if one == "-1" => Expiry::Never,
            [one] => match one.parse::<i64>() {
                Ok(d) if one.bytes().all(|b| b.is_ascii_digit()) && d <= MAX_DAY => {
                    Expiry::Until(d)
                }
                _ => Expiry::Invalid(one.chars().take(64).collect()),
            },
            several => Expiry::Invalid(several.join(" ").chars().take(64).collect()),
        }
    }

    /// The `shadowExpire` day, when there is a valid one.
    pub fn day(&self) -> Option<i64> {
        match self {
            Expiry::Until(d) => Some(*d),
            _ => None,
        }
    }
}

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
    /// `shadowExpire`: the first day (since 1970) access no longer works.
    pub shadow_expire: Expiry,
    /// `sshPublicKey` values, as stored.
    pub keys: Vec<String>,
    /// Machines this person may use (`*`: all of them).
    pub hosts: Vec<String>,
    #[serde(skip, default)]
    pub object_classes: Vec<String>,
    /// Why the entry cannot be trusted to say who it is (several `uid`s, a `uidNumber` that is
    /// not one number…); such a person gets no key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken: Option<String>,
}

impl Person {
    /// Whether `shadowExpire` keeps them out on day `today` (pam_unix's rule: refused from that
    /// day on). An invalid value keeps them out.
    pub fn expired(&self, today: i64) -> bool {
        match self.shadow_expire {
            Expiry::Never => false,
            Expiry::Until(e) => today >= e,
            Expiry::Invalid(_) => true,
        }
    }

    pub fn allowed_on(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h == host || h == "*")
    }

    /// Last day access works (`shadowExpire - 1`), as YYYY-MM-DD; "never" without expiry.
    pub fn until(&self) -> String {
        match &self.shadow_expire {
            Expiry::Until(e) => date::format_day(e - 1),
            Expiry::Never => "never".into(),
            Expiry::Invalid(raw) => format!("invalid shadowExpire {raw:?}"),
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

/// A full name picaops stores (`--name`): printable, one line, at most 100 characters, none of
/// LDAP's filter and DN specials.
pub fn name_error(name: &str) -> Option<String> {
    let bad = name.chars().find(|c| {
        c.is_control() || matches!(c, '*' | '(' | ')' | '\\' | '<' | '>' | ';' | '=' | '"')
    });
    if let Some(c) = bad {
        return Some(format!(
            "the name {name:?} holds {c:?}: write it on one line with letters, spaces, ' and - (for example \"Jeanne Dupont\")"
        ));
    }
    let n = name.trim().chars().count();
    if n == 0 || n > 100 || !name.chars().any(char::is_alphabetic) {
        return Some(format!(
            "the name {name:?} is empty, longer than 100 characters or has no letter: write the person's given and family names"
        ));
    }
    None
}

/// A mail address picaops stores (`--mail`): `local@domain.tld`, plain ASCII, at most 254.
pub fn mail_error(mail: &str) -> Option<String> {
    let ok = mail.len() <= 254
        && match mail.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && local.len() <= 64
                    && local
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._%+-".contains(&b))
                    && !local.starts_with('.')
                    && !local.ends_with('.')
                    && !local.contains("..")
                    && domain.contains('.')
                    && domain.split('.').all(|label| {
                        !label.is_empty()
                            && label.len() <= 63
                            && !label.starts_with('-')
                            && !label.ends_with('-')
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    })
            }
            None => false,
        };
    (!ok).then(|| {
        format!("{mail:?} is not a mail address: write it as name@domain, for example jeanne.dupont@etu.utc.fr")
    })
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
    /// The directory answered, but with something picaops refuses to act on (several entries
    /// for one login, too many entries, a result size limit hit): nobody gets in on it, and the
    /// cache does not stand in for it.
    #[error("{0}")]
    Untrusted(String),
}

/// How to reach the directory (from the inventory on the workstation, from the job file on a host).
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub url: String,
    pub ca_pem: Option<Vec<u8>>,
    pub people: String,
    pub hosts_attribute: String,
    pub timeout: Duration,
    /// The name the server's certificate must be for, when the URL names another address
    /// (a recovered directory at its new place). None: the URL's host, as usual.
    pub tls_name: Option<String>,
}

/// Where Debian keeps the system's CAs, read when a certificate name is pinned without a CA file.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// An open, bound connection.
pub struct Directory {
    ldap: Ldap,
    ep: Endpoint,
}

fn tls_config(
    ca_pem: &[u8],
    tls_name: Option<&str>,
) -> Result<Arc<rustls::ClientConfig>, DirectoryError> {
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
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| DirectoryError::Invalid(e.to_string()))?;
    let config = match tls_name {
        None => builder.with_root_certificates(roots),
        Some(name) => {
            let name = rustls_pki_types::ServerName::try_from(name.to_string()).map_err(|e| {
                DirectoryError::Invalid(format!("`{name}` is not a host name or address: {e}"))
            })?;
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| DirectoryError::Invalid(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(CertificateFor { inner, name }))
        }
    };
    Ok(Arc::new(config.with_no_client_auth()))
}

/// The usual verification (chain to the CA, validity, signatures), of the certificate of
/// `name` whatever address the connection went to: a directory recovered elsewhere keeps its
/// certificate, and is still refused if it cannot show it.
#[derive(Debug)]
struct CertificateFor {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: rustls_pki_types::ServerName<'static>,
}

impl rustls::client::danger::ServerCertVerifier for CertificateFor {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
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
        let system;
        let pem = match (&ep.ca_pem, &ep.tls_name) {
            (Some(pem), _) => Some(pem.as_slice()),
            (None, Some(_)) => {
                system = std::fs::read(SYSTEM_CAS).map_err(|e| {
                    DirectoryError::Invalid(format!(
                        "cannot read the system's CAs {SYSTEM_CAS}: {e}"
                    ))
                })?;
                Some(system.as_slice())
            }
            (None, None) => None,
        };
        if let Some(pem) = pem {
            settings = settings.set_config(tls_config(pem, ep.tls_name.as_deref())?);
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

    /// Searches the people branch for `filter`, reading at most `max` entries: the server is
    /// asked for no more (sizelimit), and a server that sends more anyway is cut off rather than
    /// read to the end, so an endless answer never grows in memory.
    async fn search(&mut self, filter: &str, max: usize) -> Result<Vec<Person>, DirectoryError> {
        let mut attrs: Vec<String> = ATTRS.iter().map(|a| a.to_string()).collect();
        attrs.push(self.ep.hosts_attribute.clone());
        self.ldap.with_timeout(self.ep.timeout);
        // One more than wanted, so "more than max" is seen as such.
        let limit = i32::try_from(max + 1).unwrap_or(i32::MAX);
        self.ldap
            .with_search_options(SearchOptions::new().sizelimit(limit));
        let mut stream = self
            .ldap
            .streaming_search(&self.ep.people, Scope::OneLevel, filter, attrs)
            .await
            .map_err(ldap_err)?;
        let mut found = Vec::new();
        while let Some(entry) = stream.next().await.map_err(ldap_err)? {
            if found.len() == max {
                return Err(DirectoryError::Untrusted(format!(
                    "the directory sent more than {max} entries for {filter} under {}: refused",
                    self.ep.people
                )));
            }
            found.push(person_from(
                SearchEntry::construct(entry),
                &self.ep.hosts_attribute,
            ));
        }
        let res = stream.finish().await;
        if res.rc == 4 {
            return Err(DirectoryError::Untrusted(format!(
                "the directory holds more than {max} entries for {filter} under {} (size limit exceeded): refused",
                self.ep.people
            )));
        }
        res.success().map_err(ldap_err)?;
        Ok(found)
    }

    /// The person with this login, if any. The login is checked, then escaped.
    pub async fn person(&mut self, login: &str) -> Result<Option<Person>, DirectoryError> {
        if !valid_login(login) {
            return Err(DirectoryError::Invalid(login_error(login)));
        }
        let filter = format!("(&(objectClass=posixAccount)(uid={}))", ldap_escape(login));
        let mut found = match self.search(&filter, 1).await {
            Err(DirectoryError::Untrusted(_)) => {
                return Err(DirectoryError::Untrusted(format!(
                    "several entries have uid={login} under {}; fix the directory so each login is one person",
                    self.ep.people
                )))
            }
            r => r?,
        };
        Ok(found.pop())
    }

    /// Everyone under the people branch with a POSIX account.
    pub async fn people(&mut self) -> Result<Vec<Person>, DirectoryError> {
        let mut all = self
            .search("(objectClass=posixAccount)", MAX_PEOPLE)
            .await?;
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

/// A person from a directory answer. Never fails: what cannot be trusted is recorded
/// (`shadow_expire: Invalid`, `broken`) so that the rule denies it and `audit` shows it.
pub fn person_from(e: SearchEntry, hosts_attribute: &str) -> Person {
    let get = |name: &str| -> Vec<String> {
        e.attrs
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.iter().cloned())
            .collect()
    };
    let one = |name: &str| get(name).into_iter().next();
    let mut broken = Vec::new();
    let mut number = |name: &str| -> Option<u32> {
        match get(name).as_slice() {
            [] => None,
            [v] if v.bytes().all(|b| b.is_ascii_digit()) => match v.parse() {
                Ok(n) => Some(n),
                Err(_) => {
                    broken.push(format!("{name} {v:?} is not a number"));
                    None
                }
            },
            vals => {
                broken.push(format!(
                    "{name} has {} value(s) {:?}, not one number",
                    vals.len(),
                    vals.iter().take(3).collect::<Vec<_>>()
                ));
                None
            }
        }
    };
    let uid_number = number("uidNumber");
    let gid_number = number("gidNumber");
    let mut keys = get("sshPublicKey");
    // Binary-looking values (not UTF-8) land in bin_attrs; keep what decodes.
    for (k, vals) in &e.bin_attrs {
        if k.eq_ignore_ascii_case("sshPublicKey") {
            keys.extend(vals.iter().map(|v| String::from_utf8_lossy(v).into_owned()));
        }
    }
    let uids = get("uid");
    let login = match uids.as_slice() {
        [one] => one.clone(),
        [] => {
            broken.push("the entry has no uid".into());
            String::new()
        }
        several => {
            broken.push(format!(
                "the entry has {} uids ({}): one entry, one login",
                several.len(),
                several
                    .iter()
                    .take(4)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            // Matches no login, so no lookup can ever take this entry for someone.
            String::new()
        }
    };
    if e.bin_attrs.keys().any(|k| {
        ["uid", "uidNumber", "gidNumber", "shadowExpire"]
            .iter()
            .any(|a| k.eq_ignore_ascii_case(a))
    }) {
        broken.push("uid, uidNumber, gidNumber or shadowExpire is not text".into());
    }
    let mut shadow_expire = Expiry::parse(&get("shadowExpire"));
    if let Some((k, _)) = e
        .bin_attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("shadowExpire"))
    {
        shadow_expire = Expiry::Invalid(format!("binary {k}"));
    }
    Person {
        dn: e.dn.clone(),
        login,
        uid_number,
        gid_number,
        given_name: one("givenName"),
        sn: one("sn"),
        mail: one("mail"),
        shadow_expire,
        keys,
        hosts: get(hosts_attribute),
        object_classes: get("objectClass"),
        broken: (!broken.is_empty()).then(|| broken.join("; ")),
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

    pub(crate) fn entry(attrs: &[(&str, &[&str])]) -> SearchEntry {
        SearchEntry {
            dn: "uid=x,ou=People,dc=x".into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            bin_attrs: Default::default(),
        }
    }

    #[test]
    fn only_absent_or_minus_one_means_never() {
        assert_eq!(Expiry::parse(&[]), Expiry::Never);
        assert_eq!(Expiry::parse(&["-1".into()]), Expiry::Never);
        assert_eq!(Expiry::parse(&["20892".into()]), Expiry::Until(20892));
        assert_eq!(Expiry::parse(&["0".into()]), Expiry::Until(0));
        for bad in [
            "-2",
            "abc",
            "2027-03-15",
            "",
            "19000.5",
            " 20892",
            "+20892",
            "-0",
            "-1 ",
            "99999999",
            "18446744073709551616",
        ] {
            assert_eq!(
                Expiry::parse(&[bad.into()]),
                Expiry::Invalid(bad.into()),
                "{bad:?}"
            );
        }
        assert!(matches!(
            Expiry::parse(&["20892".into(), "-1".into()]),
            Expiry::Invalid(_)
        ));
        let p = person_from(
            entry(&[("uid", &["ann"]), ("shadowExpire", &["-2"])]),
            "host",
        );
        assert_eq!(p.shadow_expire, Expiry::Invalid("-2".into()));
        assert!(p.expired(0), "an invalid end date keeps them out");
        assert!(p.until().contains("invalid"), "{}", p.until());
    }

    #[test]
    fn an_entry_that_does_not_say_who_it_is_is_marked_broken() {
        let p = person_from(
            entry(&[("uid", &["ann", "mallory"]), ("uidNumber", &["2000"])]),
            "host",
        );
        assert_eq!(p.login, "", "several uids: the entry stands for no login");
        assert!(p.broken.as_deref().unwrap().contains("2 uids"), "{p:?}");
        for (attr, vals) in [
            ("uidNumber", &["2000", "2001"][..]),
            ("uidNumber", &["0x7d0"][..]),
            ("gidNumber", &["-502"][..]),
        ] {
            let p = person_from(entry(&[("uid", &["ann"]), (attr, vals)]), "host");
            assert!(p.broken.is_some(), "{attr} {vals:?}");
        }
        let good = person_from(
            entry(&[
                ("uid", &["ann"]),
                ("uidNumber", &["2000"]),
                ("gidNumber", &["502"]),
            ]),
            "host",
        );
        assert_eq!(good.broken, None);
        assert_eq!((good.uid_number, good.gid_number), (Some(2000), Some(502)));
    }

    #[test]
    fn names_and_mails_are_checked() {
        for good in ["Jeanne Dupont", "Jean-Pierre O'Neil", "Zoé Ébène"] {
            assert_eq!(name_error(good), None, "{good:?}");
        }
        for bad in [
            "",
            " ",
            "a\nb",
            "x\u{7}",
            "*)(uid=*",
            "a\\b",
            "Jeanne;Dupont",
            "12345",
            &"a".repeat(101),
        ] {
            assert!(name_error(bad).is_some(), "{bad:?}");
        }
        for good in ["jeanne.dupont@etu.utc.fr", "a+b@x.org"] {
            assert_eq!(mail_error(good), None, "{good:?}");
        }
        for bad in [
            "", "jeanne", "a@b", "a@@b.c", "a b@c.d", "a@b.c\n", "*@x.org", "a@-b.c", ".a@b.c",
            "a@b..c", "(a)@b.c",
        ] {
            assert!(mail_error(bad).is_some(), "{bad:?}");
        }
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
            shadow_expire: Expiry::Until(20892),
            keys: vec![],
            hosts: vec!["pica01".into()],
            object_classes: vec![],
            broken: None,
        };
        assert!(!p.expired(20891));
        assert!(p.expired(20892));
        assert_eq!(p.until(), "2027-03-14");
        assert!(p.allowed_on("pica01"));
        assert!(!p.allowed_on("pica02"));
    }
}
