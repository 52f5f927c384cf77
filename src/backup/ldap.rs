//! OpenLDAP directories (`kind: ldap`): the dump (slapd's cn=config, then its data, as LDIF), the
//! drill (a scratch configuration and database built with `slapadd`, read back with `slapcat`) and
//! the load into production (a new cn=config and database built beside the live ones, swapped in
//! while slapd is stopped, the old ones kept).
//!
//! **Why the dump carries cn=config.** The drill runs at the other site and a site recovery loads
//! the directory on a machine that never had it: neither has the data host's cn=config, and
//! without its schemas (Picasoft's `openssh-lpk`, `ldapns`), indexes and ACLs `slapadd` refuses
//! the entries (`sshPublicKey`: attribute type undefined). So the dump is `slapcat -n 0` (the
//! configuration), the line [`MARKER`], then `slapcat -n 1` (or `-b SUFFIX`, the data), all with
//! `-o ldif-wrap=no`. `slapcat` reads an MDB database while slapd serves it: a consistent copy,
//! no need to stop slapd for a backup (MDB only: the old bdb/hdb back ends needed slapd stopped).
//!
//! **Why a drill stops at `slapcat`.** It loads both parts into a scratch slapd directory (every
//! `olcDbDirectory` rewritten into the scratch directory, so no real database is ever opened),
//! then reads the database back with `slapcat -F scratch` and compares it with the dump: the same
//! number of entries, the same DNs. Starting a scratch slapd would prove no more about the data
//! (slapd serves the same MDB files slapcat reads) and would need what the other site does not
//! have: the TLS certificate files cn=config names, a free port.
//!
//! **Why a load into production builds before it stops.** The new cn=config and database are made
//! with `slapadd` in sibling directories (`/var/lib/ldap.picaops-new-STAMP`) and checked while the
//! old slapd still serves; only then is slapd stopped, the old directories renamed aside
//! (`.picaops-old-STAMP`, never deleted), the new ones renamed in (same file system: no copy),
//! given the owner and mode of the directories they replace (`openldap` on Debian), and slapd
//! started. The TLS files cn=config names must be there already (restored from the job's
//! files) and get slapd's group. A failure before the stop leaves production untouched; a slapd that does not start on
//! the new directories gets the old ones back and is started again.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use base64::Engine as _;
use serde::Serialize;

use super::config::Dump;

/// The line between the configuration and the data in a picaops LDAP dump. An LDIF line that
/// starts with `#` is a comment, so each part stays valid LDIF.
pub const MARKER: &str = "# picaops-ldap-dump: data";

/// Where slapd keeps cn=config when the dump does not say (Debian's slapd).
pub const DEFAULT_CONFIG_DIR: &str = "/etc/ldap/slapd.d";

/// The systemd unit stopped and started around a load into production.
pub const UNIT: &str = "slapd";

/// Where a drill's scratch directory is mounted in a throwaway container of slapd's image.
const MOUNT: &str = "/picaops-ldap";

/// The dump: `$1` slapd's config directory (empty: slapd's default), `$2` the suffix (empty: the
/// first database). Values arrive as positional arguments, never parsed as shell.
const DUMP_SCRIPT: &str = "cfg=$1; suffix=$2; \
     if [ -n \"$cfg\" ]; then set -- -F \"$cfg\"; else set --; fi; \
     slapcat \"$@\" -n 0 -o ldif-wrap=no || exit $?; \
     echo '# picaops-ldap-dump: data'; \
     if [ -n \"$suffix\" ]; then exec slapcat \"$@\" -b \"$suffix\" -o ldif-wrap=no; fi; \
     exec slapcat \"$@\" -n 1 -o ldif-wrap=no";

/// What went wrong with an LDAP dump, its drill or its load.
#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    #[error(
        "the dump has no `{MARKER}` line: it was not made by picaops's ldap dump \
         (write it out with --to FILE and load it by hand)"
    )]
    NotPicaopsDump,
    #[error("the dump's cn=config has no {which}: was the dump's `database:` changed since?")]
    NoDatabase { which: String },
    #[error("the dump's cn=config gives database {database} no absolute `olcDbDirectory`")]
    NoDirectory { database: String },
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the dump's cn=config names {} for TLS, which is not on this host: restore it first \
         (the directory's backup job keeps it when its directory is in the job's `paths:`), \
         nothing was changed",
        .path.display()
    )]
    TlsFile { path: PathBuf },
    #[error(
        "`{program}` is not installed on this host: loading an LDAP dump needs OpenLDAP's tools \
         (`apt install slapd ldap-utils`; on a host that serves no directory, then \
         `systemctl disable --now slapd`)"
    )]
    NoTools { program: String },
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// `stderr`: the tool's last lines.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    /// The database read back is not the dump. `missing`: up to 5 DNs of the dump not found.
    #[error(
        "the loaded directory holds {loaded} entries, the dump {dumped}{}",
        if .missing.is_empty() { String::new() } else { format!(" (missing: {})", .missing.join("; ")) }
    )]
    Mismatch {
        loaded: usize,
        dumped: usize,
        missing: Vec<String>,
    },
    #[error(
        "loading into slapd running in container `{container}` is not automated: write the dump out \
         with --to FILE, stop the container, and slapadd the configuration then the data (the two parts \
         around the `{MARKER}` line) into its volumes with the image's slapadd"
    )]
    InContainer { container: String },
    /// Stopping slapd failed: nothing was changed (the new directories are removed).
    #[error("could not stop slapd (`systemctl stop {UNIT}`), nothing was changed: {source}")]
    Stop { source: Box<LdapError> },
    #[error("could not swap {} for the new one, put back as it was: {source}", .path.display())]
    Swap {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// slapd did not start on the loaded directory: the old one is back (`rolled_back`) or not.
    #[error(
        "slapd did not start on the loaded directory ({source}); {}",
        if *.rolled_back {
            format!("the previous database and cn=config are back in place and slapd was started again; the loaded ones are kept in {}", .kept.display())
        } else {
            format!("putting the previous database back failed too: it is in {} (rename it back by hand and `systemctl start {UNIT}`)", .kept.display())
        }
    )]
    Start {
        source: Box<LdapError>,
        rolled_back: bool,
        kept: PathBuf,
    },
}

/// The `sh -c` part of an LDAP dump's command (after `docker exec CONTAINER` when in one).
pub fn dump_argv(dump: &Dump) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        DUMP_SCRIPT.into(),
        "picaops".into(),
        dump.config_dir.clone().unwrap_or_default(),
        dump.database.clone(),
    ]
}

/// A picaops LDAP dump, split at [`MARKER`].
#[derive(Debug, Clone)]
pub struct LdapDump {
    /// cn=config's entries, lines unfolded.
    pub config: Vec<Entry>,
    /// The data part as written by slapcat (loaded as is).
    pub data: String,
    /// The DNs of the data part, normalised ([`norm_dn`]).
    pub dns: Vec<String>,
}

/// One LDIF entry: its lines, unfolded, the `dn:` first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry(pub Vec<String>);

impl Entry {
    /// The values of `attr` (case-insensitive), base64 ones decoded.
    pub fn values(&self, attr: &str) -> Vec<String> {
        self.0.iter().filter_map(|l| value_of(l, attr)).collect()
    }
}

/// The value of an LDIF line `attr: value` or `attr:: BASE64`.
fn value_of(line: &str, attr: &str) -> Option<String> {
    let (name, rest) = line.split_once(':')?;
    if !name.eq_ignore_ascii_case(attr) {
        return None;
    }
    match rest.strip_prefix(':') {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()
            .map(|v| String::from_utf8_lossy(&v).into_owned()),
        None => Some(rest.trim_start().to_string()),
    }
}

/// A DN compared as slapd does for these purposes: lower case, no spaces around `,` and `=`.
pub fn norm_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| rdn.split('=').map(str::trim).collect::<Vec<_>>().join("="))
        .collect::<Vec<_>>()
        .join(",")
        .to_lowercase()
}

/// The entries of an LDIF text: comment lines dropped, folded lines joined, anything before the
/// first `dn:` (`version: 1`) skipped.
pub fn entries(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            if !current.is_empty() {
                out.push(Entry(std::mem::take(&mut current)));
            }
        } else if line.starts_with('#') {
            continue;
        } else if let Some(rest) = line.strip_prefix(' ') {
            if let Some(last) = current.last_mut() {
                last.push_str(rest);
            }
        } else {
            current.push(line.to_string());
        }
    }
    if !current.is_empty() {
        out.push(Entry(current));
    }
    out.retain(|e| e.0.first().is_some_and(|l| value_of(l, "dn").is_some()));
    out
}

fn render(entries: &[Entry]) -> String {
    let mut text = String::new();
    for e in entries {
        for line in &e.0 {
            text.push_str(line);
            text.push('\n');
        }
        text.push('\n');
    }
    text
}

/// The normalised DNs of `text`'s entries.
pub fn dns(text: &str) -> Vec<String> {
    entries(text)
        .iter()
        .filter_map(|e| e.values("dn").into_iter().next())
        .map(|d| norm_dn(&d))
        .collect()
}

impl LdapDump {
    pub fn parse(text: &str) -> Result<LdapDump, LdapError> {
        let at = text
            .match_indices(MARKER)
            .find(|(i, _)| {
                (*i == 0 || text[..*i].ends_with('\n'))
                    && text[i + MARKER.len()..].starts_with(['\n', '\r'])
            })
            .map(|(i, _)| i)
            .ok_or(LdapError::NotPicaopsDump)?;
        let config = entries(&text[..at]);
        let data = text[at + MARKER.len()..]
            .trim_start_matches(['\r', '\n'])
            .to_string();
        let dns = dns(&data);
        Ok(LdapDump { config, data, dns })
    }

    /// The databases of cn=config that hold data (those with an `olcDbDirectory`), in order.
    /// The files cn=config names for TLS (certificate, key, CA), as written.
    pub fn tls_files(&self) -> Vec<PathBuf> {
        let attrs = [
            "olcTLSCertificateFile",
            "olcTLSCertificateKeyFile",
            "olcTLSCACertificateFile",
        ];
        self.config
            .iter()
            .flat_map(|e| attrs.iter().flat_map(|a| e.values(a)))
            .map(PathBuf::from)
            .collect()
    }

    /// Every database's `olcDbDirectory` (absolute ones).
    fn directories(&self) -> Vec<PathBuf> {
        self.config
            .iter()
            .flat_map(|e| e.values("olcDbDirectory"))
            .filter(|d| d.starts_with('/'))
            .map(PathBuf::from)
            .collect()
    }

    fn databases(&self) -> Vec<usize> {
        (0..self.config.len())
            .filter(|&i| !self.config[i].values("olcDbDirectory").is_empty())
            .collect()
    }

    /// The entry (index) of the database the dump's data is from: the one whose `olcSuffix` is
    /// `suffix`, or `{1}…` (what `slapcat -n 1` dumps) when `suffix` is empty.
    fn target(&self, suffix: &str) -> Result<usize, LdapError> {
        let want = norm_dn(suffix);
        (0..self.config.len())
            .find(|&i| {
                let e = &self.config[i];
                if suffix.is_empty() {
                    e.values("olcDatabase").iter().any(|d| d.starts_with("{1}"))
                } else {
                    e.values("olcSuffix").iter().any(|s| norm_dn(s) == want)
                }
            })
            .ok_or_else(|| LdapError::NoDatabase {
                which: if suffix.is_empty() {
                    "database {1} (slapcat -n 1)".into()
                } else {
                    format!("database with suffix `{suffix}`")
                },
            })
    }

    /// The target database's `olcDatabase` and `olcDbDirectory`.
    fn target_directory(&self, suffix: &str) -> Result<(String, PathBuf), LdapError> {
        let i = self.target(suffix)?;
        let name = self.config[i]
            .values("olcDatabase")
            .into_iter()
            .next()
            .unwrap_or_default();
        match self.config[i].values("olcDbDirectory").into_iter().next() {
            Some(d) if d.starts_with('/') => Ok((name, PathBuf::from(d))),
            _ => Err(LdapError::NoDirectory { database: name }),
        }
    }

    /// cn=config with each data database's `olcDbDirectory` replaced by `dir(i, n)` (`n`: its
    /// rank among the data databases; `i == target`).
    fn config_with(
        &self,
        mut dir: impl FnMut(bool, usize) -> Option<String>,
        target: usize,
    ) -> String {
        let mut config = self.config.clone();
        for (n, i) in self.databases().into_iter().enumerate() {
            if let Some(d) = dir(i == target, n) {
                for line in config[i].0.iter_mut() {
                    if value_of(line, "olcDbDirectory").is_some() {
                        *line = format!("olcDbDirectory: {d}");
                    }
                }
            }
        }
        render(&config)
    }
}

/// `slapadd`/`slapcat` on this host, or in a throwaway container of slapd's image with the
/// scratch directory mounted at [`MOUNT`].
struct Tools<'a> {
    image: Option<&'a str>,
    scratch: &'a Path,
}

impl Tools<'_> {
    /// `rel` (under the scratch directory) as the tool sees it.
    fn path(&self, rel: &str) -> String {
        match self.image {
            Some(_) => format!("{MOUNT}/{rel}"),
            None => self.scratch.join(rel).display().to_string(),
        }
    }

    fn argv(&self, tool: &str, args: &[String]) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(image) = self.image {
            v.extend(
                [
                    "docker",
                    "run",
                    "--rm",
                    "--user",
                    "0:0",
                    "--network",
                    "none",
                    "--volume",
                ]
                .map(String::from),
            );
            v.push(format!("{}:{MOUNT}", self.scratch.display()));
            v.extend([
                "--entrypoint".to_string(),
                tool.to_string(),
                image.to_string(),
            ]);
        } else {
            v.push(tool.to_string());
        }
        v.extend(args.iter().cloned());
        v
    }
}

/// `-b SUFFIX` or `-n 1`: which database the data goes to / comes from.
fn which(suffix: &str) -> Vec<String> {
    if suffix.is_empty() {
        vec!["-n".into(), "1".into()]
    } else {
        vec!["-b".into(), suffix.into()]
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn write(path: &Path, text: &str) -> Result<(), LdapError> {
    use std::io::Write as _;
    let io = |source| LdapError::Io {
        what: "cannot write",
        path: path.to_path_buf(),
        source,
    };
    // Password hashes (userPassword, olcRootPW): readable by root only.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}

fn mkdir(path: &Path) -> Result<(), LdapError> {
    std::fs::create_dir_all(path).map_err(|source| LdapError::Io {
        what: "cannot create",
        path: path.to_path_buf(),
        source,
    })
}

/// Runs `argv`; its stdout.
fn run(argv: &[String]) -> Result<String, LdapError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(LdapError::NoTools {
            program: String::new(),
        });
    };
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                LdapError::NoTools {
                    program: program.clone(),
                }
            } else {
                LdapError::Spawn {
                    program: program.clone(),
                    source,
                }
            }
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    // The whole command (paths and a suffix, never a secret); through docker, the tool and its
    // arguments without the `docker run` words.
    let shown: Vec<&String> = match argv.iter().position(|a| a == "--entrypoint") {
        Some(i) => argv[i + 1..]
            .iter()
            .take(1)
            .chain(argv.iter().skip(i + 3))
            .collect(),
        None => argv.iter().collect(),
    };
    Err(LdapError::Failed {
        command: shown.into_iter().cloned().collect::<Vec<_>>().join(" "),
        status: out.status,
        stderr: lines[lines.len().saturating_sub(3)..].join("; "),
    })
}

/// The DNs of `dumped` not in `loaded`; an error unless both hold the same entries.
fn compare(dumped: &[String], loaded: &[String]) -> Result<(), LdapError> {
    let have: BTreeSet<&String> = loaded.iter().collect();
    let missing: Vec<String> = dumped
        .iter()
        .filter(|d| !have.contains(d))
        .take(5)
        .cloned()
        .collect();
    if loaded.len() == dumped.len() && missing.is_empty() {
        Ok(())
    } else {
        Err(LdapError::Mismatch {
            loaded: loaded.len(),
            dumped: dumped.len(),
            missing,
        })
    }
}

/// Loads `dump` into a scratch cn=config and database under `scratch` (slapd's tools on this
/// host, or in a throwaway container of `image`), reads the database back and compares it with
/// the dump. Returns what the drill report shows (`12 entries`).
pub fn drill(
    text: &str,
    dump: &Dump,
    image: Option<&str>,
    scratch: &Path,
) -> Result<String, LdapError> {
    let parsed = LdapDump::parse(text)?;
    let suffix = dump.database.as_str();
    let target = parsed.target(suffix)?;
    let tools = Tools { image, scratch };
    mkdir(&scratch.join("slapd.d"))?;
    for n in 0..parsed.databases().len() {
        mkdir(&scratch.join(format!("db{n}")))?;
    }
    let config = parsed.config_with(|_, n| Some(tools.path(&format!("db{n}"))), target);
    write(&scratch.join("config.ldif"), &config)?;
    write(&scratch.join("data.ldif"), &parsed.data)?;
    let cfg = tools.path("slapd.d");
    run(&tools.argv(
        "slapadd",
        &[
            strings(&["-n", "0", "-F", &cfg, "-l"]),
            vec![tools.path("config.ldif")],
        ]
        .concat(),
    ))?;
    let mut args = strings(&["-F", &cfg]);
    args.extend(which(suffix));
    args.extend(["-l".into(), tools.path("data.ldif")]);
    run(&tools.argv("slapadd", &args))?;
    let mut args = strings(&["-F", &cfg]);
    args.extend(which(suffix));
    args.extend(strings(&["-o", "ldif-wrap=no"]));
    let loaded = dns(&run(&tools.argv("slapcat", &args))?);
    compare(&parsed.dns, &loaded)?;
    Ok(format!("{} entries", loaded.len()))
}

/// What a load into production did.
#[derive(Debug, Clone, Serialize)]
pub struct LiveLoad {
    pub entries: usize,
    /// The database directory slapd now serves.
    pub database: PathBuf,
    /// Where the previous database and cn=config were moved (absent: there was none).
    pub old_database: Option<PathBuf>,
    pub old_config: Option<PathBuf>,
}

/// The owner, group and mode a new directory takes: those of the directory it replaces, else
/// the `openldap` account's (Debian's slapd), else root's.
fn owner_for(path: &Path) -> (u32, u32, u32) {
    if let Ok(m) = std::fs::metadata(path) {
        return (m.uid(), m.gid(), m.mode() & 0o7777);
    }
    let id = |file: &str| -> Option<u32> {
        std::fs::read_to_string(file).ok()?.lines().find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some("openldap")).then(|| f.nth(1)?.parse().ok())?
        })
    };
    (
        id("/etc/passwd").unwrap_or(0),
        id("/etc/group").unwrap_or(0),
        0o750,
    )
}

/// `chown -R` (and the top directory's mode) without following symbolic links.
fn chown_tree(path: &Path, (uid, gid, mode): (u32, u32, u32)) -> Result<(), LdapError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| LdapError::Io {
            what: "cannot give the owner of the directory it replaces to",
            path: p,
            source,
        }
    };
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io(path))?;
    if std::fs::symlink_metadata(path).map_err(io(path))?.is_dir() {
        for e in std::fs::read_dir(path).map_err(io(path))? {
            let e = e.map_err(io(path))?;
            chown_tree(&e.path(), (uid, gid, 0))?;
        }
    }
    if mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))?;
    }
    Ok(())
}

/// `PATH.picaops-WHAT-STAMP`, a sibling (same file system: renames, no copies).
fn sibling(path: &Path, what: &str, stamp: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".picaops-{what}-{stamp}"));
    path.with_file_name(name)
}

/// Where the new, old or failed copy of `path` goes: beside it, or inside it when it is a mount
/// point (a volume: a rename out of it would cross file systems).
fn slot(path: &Path, what: &str, stamp: &str) -> PathBuf {
    if is_mount(path) {
        path.join(format!(".picaops-{what}-{stamp}"))
    } else {
        sibling(path, what, stamp)
    }
}

/// Is `path` a directory on another file system than its parent?
fn is_mount(path: &Path) -> bool {
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    match (dev(path), path.parent().and_then(dev)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

/// Moves directory `from` to `to`: one rename when the file system allows it, else entry by
/// entry ([`move_tree`]): when either is a mount point, or on an overlay file system (a
/// container's), where a directory of the image's layer cannot be renamed (EXDEV).
fn rename(from: &Path, to: &Path) -> std::io::Result<()> {
    let mounts = is_mount(from) || (to.exists() && is_mount(to));
    if !mounts {
        match std::fs::rename(from, to) {
            Err(e) if e.raw_os_error() == Some(18) => {}
            other => return other,
        }
    }
    move_tree(from, to)
}

/// Moves what `from` holds into `to` (made with `from`'s owner and mode when missing): files
/// renamed, directories made and filled the same way; `from` removed unless it is a mount
/// point. The `.picaops-*` copies kept inside a mount point stay where they are.
fn move_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(from)?;
    if !to.exists() {
        std::fs::create_dir(to)?;
        std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))?;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    let mount = is_mount(from);
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let name = e.file_name();
        if mount && name.to_string_lossy().starts_with(".picaops-") {
            continue;
        }
        let (a, b) = (from.join(&name), to.join(&name));
        if e.file_type()?.is_dir() {
            match std::fs::rename(&a, &b) {
                Err(err) if err.raw_os_error() == Some(18) => move_tree(&a, &b)?,
                other => other?,
            }
        } else {
            std::fs::rename(&a, &b)?;
        }
    }
    if !mount {
        std::fs::remove_dir(from)?;
    }
    Ok(())
}

/// Loads `text` (a picaops LDAP dump) into this host's slapd, replacing its cn=config and the
/// dump's database. `work`: a private scratch directory; `stamp`: names the kept directories;
/// `say`: progress for the person watching. See the module's documentation for the order.
pub fn load_live(
    text: &str,
    dump: &Dump,
    work: &Path,
    stamp: &str,
    say: &mut dyn FnMut(&str),
) -> Result<LiveLoad, LdapError> {
    if let Some(container) = &dump.container {
        return Err(LdapError::InContainer {
            container: container.clone(),
        });
    }
    let parsed = LdapDump::parse(text)?;
    let suffix = dump.database.as_str();
    let target = parsed.target(suffix)?;
    let (_, database) = parsed.target_directory(suffix)?;
    let config_dir = PathBuf::from(dump.config_dir.as_deref().unwrap_or(DEFAULT_CONFIG_DIR));
    let new_db = slot(&database, "new", stamp);
    let new_cfg = slot(&config_dir, "new", stamp);
    let mut made: Vec<PathBuf> = Vec::new();
    let staged = (|| {
        // 1. The data, through a loading configuration pointing at the new database (the other
        //    databases at scratch directories: slapadd never opens a live one).
        mkdir(&work.join("load.d"))?;
        mkdir(&new_db)?;
        let others = parsed.databases().len();
        for n in 0..others {
            mkdir(&work.join(format!("other{n}")))?;
        }
        let load_config = parsed.config_with(
            |is_target, n| {
                Some(if is_target {
                    new_db.display().to_string()
                } else {
                    work.join(format!("other{n}")).display().to_string()
                })
            },
            target,
        );
        write(&work.join("load-config.ldif"), &load_config)?;
        write(&work.join("data.ldif"), &parsed.data)?;
        let load_d = work.join("load.d").display().to_string();
        run(&[
            strings(&["slapadd", "-n", "0", "-F", &load_d, "-l"]),
            vec![work.join("load-config.ldif").display().to_string()],
        ]
        .concat())?;
        let mut args = strings(&["slapadd", "-F", &load_d]);
        args.extend(which(suffix));
        args.extend(["-l".into(), work.join("data.ldif").display().to_string()]);
        run(&args)?;
        let mut args = strings(&["slapcat", "-F", &load_d]);
        args.extend(which(suffix));
        args.extend(strings(&["-o", "ldif-wrap=no"]));
        compare(&parsed.dns, &dns(&run(&args)?))?;
        // 2. The configuration itself, with its own directories: slapadd refuses a database
        //    directory that does not exist, and a machine that never served the directory has
        //    none (a site recovery): they are made empty, and an empty one made for the target
        //    is removed again at the swap.
        for dir in parsed.directories() {
            if !dir.exists() {
                let owner = owner_for(&dir);
                mkdir(&dir)?;
                chown_tree(&dir, owner)?;
                made.push(dir);
            }
        }
        mkdir(&new_cfg)?;
        write(&work.join("config.ldif"), &render(&parsed.config))?;
        run(&[
            strings(&["slapadd", "-n", "0", "-F"]),
            vec![new_cfg.display().to_string(), "-l".into()],
            vec![work.join("config.ldif").display().to_string()],
        ]
        .concat())?;
        chown_tree(&new_db, owner_for(&database))?;
        chown_tree(&new_cfg, owner_for(&config_dir))?;
        // 3. The TLS files cn=config names: there (a slapd without them does not start), and
        //    readable by slapd's group, whose number may differ on the machine they come from.
        let (_, gid, _) = owner_for(&config_dir);
        for f in parsed.tls_files() {
            if !f.is_file() {
                return Err(LdapError::TlsFile { path: f });
            }
            std::os::unix::fs::chown(&f, None, Some(gid)).map_err(|source| LdapError::Io {
                what: "cannot give slapd's group to",
                path: f.clone(),
                source,
            })?;
        }
        Ok(())
    })();
    let discard = || {
        let _ = std::fs::remove_dir_all(&new_db);
        let _ = std::fs::remove_dir_all(&new_cfg);
        for dir in &made {
            let _ = std::fs::remove_dir(dir);
        }
    };
    if let Err(e) = staged {
        discard();
        return Err(e);
    }
    say(&format!(
        "ldap: {} entries loaded and checked beside the live directory; stopping slapd",
        parsed.dns.len()
    ));
    if let Err(e) = run(&strings(&["systemctl", "stop", UNIT])) {
        discard();
        return Err(LdapError::Stop {
            source: Box::new(e),
        });
    }
    // 4. The swap: each live directory aside (if any), the new one in; undone on failure.
    let pairs = [(&database, &new_db), (&config_dir, &new_cfg)];
    let mut done: Vec<(PathBuf, Option<PathBuf>, PathBuf)> = Vec::new();
    for (live, new) in pairs {
        if made.contains(live) {
            // Empty, made for slapadd above: nothing to keep.
            let _ = std::fs::remove_dir(live);
        }
        let old = live.exists().then(|| slot(live, "old", stamp));
        let step = (|| {
            if let Some(old) = &old {
                rename(live, old)?;
            }
            rename(new, live).inspect_err(|_| {
                if let Some(old) = &old {
                    let _ = rename(old, live);
                }
            })
        })();
        if let Err(source) = step {
            for (live, old, new) in done.iter().rev() {
                let _ = rename(live, new);
                if let Some(old) = old {
                    let _ = rename(old, live);
                }
            }
            discard();
            let _ = run(&strings(&["systemctl", "start", UNIT]));
            return Err(LdapError::Swap {
                path: live.clone(),
                source,
            });
        }
        done.push((live.clone(), old, new.clone()));
    }
    // 5. Start, and read back what slapd now has.
    let started = run(&strings(&["systemctl", "start", UNIT])).and_then(|_| {
        let mut args = strings(&["slapcat", "-F", &config_dir.display().to_string()]);
        args.extend(which(suffix));
        args.extend(strings(&["-o", "ldif-wrap=no"]));
        compare(&parsed.dns, &dns(&run(&args)?))
    });
    if let Err(e) = started {
        let _ = run(&strings(&["systemctl", "stop", UNIT]));
        let failed = slot(&database, "failed", stamp);
        let mut rolled_back = true;
        for (live, old, _) in done.iter().rev() {
            let kept = slot(live, "failed", stamp);
            rolled_back &= rename(live, &kept).is_ok();
            if let Some(old) = old {
                rolled_back &= rename(old, live).is_ok();
            }
        }
        rolled_back &= run(&strings(&["systemctl", "start", UNIT])).is_ok();
        return Err(LdapError::Start {
            source: Box::new(e),
            rolled_back,
            kept: if rolled_back {
                failed
            } else {
                slot(&database, "old", stamp)
            },
        });
    }
    Ok(LiveLoad {
        entries: parsed.dns.len(),
        database,
        old_database: done[0].1.clone(),
        old_config: done[1].1.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "dn: cn=config\nobjectClass: olcGlobal\ncn: config\n\n\
        dn: olcDatabase={1}mdb,cn=config\nobjectClass: olcMdbConfig\nolcDatabase: {1}mdb\n\
        olcSuffix: dc=picasoft,dc=net\nolcDbDirectory: /var/lib/ldap\n\n\
        dn: olcDatabase={2}mdb,cn=config\nolcDatabase: {2}mdb\nolcSuffix: dc=other\n\
        olcDbDirectory:: L3Nydi9vdGhlcg==\n\n\
        # picaops-ldap-dump: data\n\
        dn: dc=picasoft,dc=net\nobjectClass: dcObject\ndc: picasoft\n\n\
        dn:: dWlkPWFsaWNlLCBvdT1QZW9wbGUsZGM9cGljYXNvZnQsZGM9bmV0\ndescription: a long\n  folded value\n\n";

    #[test]
    fn a_tree_moved_entry_by_entry_keeps_its_files_and_modes() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("slapd.d");
        std::fs::create_dir_all(from.join("cn=config")).unwrap();
        std::fs::write(from.join("cn=config.ldif"), "a").unwrap();
        std::fs::write(from.join("cn=config/olcDatabase={1}mdb.ldif"), "b").unwrap();
        std::fs::set_permissions(&from, std::fs::Permissions::from_mode(0o750)).unwrap();
        let to = dir.path().join("slapd.d.picaops-old-1");
        move_tree(&from, &to).unwrap();
        assert!(!from.exists());
        assert_eq!(
            std::fs::read_to_string(to.join("cn=config/olcDatabase={1}mdb.ldif")).unwrap(),
            "b"
        );
        assert_eq!(
            std::fs::read_to_string(to.join("cn=config.ldif")).unwrap(),
            "a"
        );
        assert_eq!(std::fs::metadata(&to).unwrap().mode() & 0o7777, 0o750);
    }

    #[test]
    fn a_dump_splits_into_its_configuration_and_its_data() {
        let d = LdapDump::parse(DUMP).unwrap();
        assert_eq!(d.config.len(), 3);
        assert_eq!(
            d.dns,
            [
                "dc=picasoft,dc=net",
                "uid=alice,ou=people,dc=picasoft,dc=net"
            ]
        );
        assert!(d.data.starts_with("dn: dc=picasoft,dc=net\n"), "{}", d.data);
        assert_eq!(
            d.target_directory("dc=Picasoft, dc=net").unwrap(),
            ("{1}mdb".to_string(), PathBuf::from("/var/lib/ldap"))
        );
        assert_eq!(
            d.target("").unwrap(),
            d.target("dc=picasoft,dc=net").unwrap()
        );
        assert!(matches!(
            d.target("dc=nowhere"),
            Err(LdapError::NoDatabase { .. })
        ));
        assert!(matches!(
            LdapDump::parse("dn: dc=x\n\n"),
            Err(LdapError::NotPicaopsDump)
        ));
    }

    #[test]
    fn every_database_directory_is_rewritten_even_in_base64() {
        let d = LdapDump::parse(DUMP).unwrap();
        let t = d.target("").unwrap();
        let text = d.config_with(|is_target, n| Some(format!("/s/{is_target}/{n}")), t);
        assert!(text.contains("olcDbDirectory: /s/true/0\n"), "{text}");
        assert!(text.contains("olcDbDirectory: /s/false/1\n"), "{text}");
        assert!(
            !text.contains("/var/lib/ldap") && !text.contains("L3Nydi9"),
            "{text}"
        );
        assert_eq!(entries(&text).len(), 3);
    }

    #[test]
    fn the_dump_command_passes_its_values_as_arguments() {
        let dump = Dump {
            kind: super::super::config::DumpKind::Ldap,
            container: None,
            database: "dc=picasoft,dc=net".into(),
            user: None,
            password_env: None,
            config_dir: None,
        };
        let argv = dump_argv(&dump);
        assert_eq!(argv[..2], ["sh", "-c"]);
        assert_eq!(argv[3..], ["picaops", "", "dc=picasoft,dc=net"]);
        assert!(!argv[2].contains("picasoft"));
    }

    /// The dump's script under a real `sh`, with a stand-in `slapcat` printing its arguments one a
    /// line: the values arrive whole, as arguments, and a hostile one runs nothing.
    #[test]
    fn the_dump_script_gives_slapcat_its_values_as_whole_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("slapcat");
        std::fs::write(&bin, "#!/bin/sh\nfor a; do echo \"[$a]\"; done\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let run = |config: Option<&str>, suffix: &str| {
            let dump = Dump {
                kind: super::super::config::DumpKind::Ldap,
                container: None,
                database: suffix.into(),
                user: None,
                password_env: None,
                config_dir: config.map(String::from),
            };
            let argv = dump_argv(&dump);
            let out = Command::new(&argv[0])
                .args(&argv[1..])
                .current_dir(dir.path())
                .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
                .output()
                .unwrap();
            assert!(out.status.success());
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert_eq!(
            run(None, ""),
            format!("[-n]\n[0]\n[-o]\n[ldif-wrap=no]\n{MARKER}\n[-n]\n[1]\n[-o]\n[ldif-wrap=no]\n")
        );
        let hostile = "dc=x$(touch pwned1); touch pwned2";
        let out = run(Some("/etc/my ldap"), hostile);
        assert!(
            out.starts_with("[-F]\n[/etc/my ldap]\n[-n]\n[0]\n"),
            "{out}"
        );
        assert!(out.contains(&format!("[-b]\n[{hostile}]\n")), "{out}");
        assert!(!dir.path().join("pwned1").exists() && !dir.path().join("pwned2").exists());
    }

    #[test]
    fn a_drill_in_a_container_mounts_its_scratch_directory() {
        let t = Tools {
            image: Some("osixia/openldap:1.5.0"),
            scratch: Path::new("/var/lib/picaops/backup/drill/x"),
        };
        assert_eq!(
            t.argv("slapadd", &["-F".into(), t.path("slapd.d")]),
            [
                "docker",
                "run",
                "--rm",
                "--user",
                "0:0",
                "--network",
                "none",
                "--volume",
                "/var/lib/picaops/backup/drill/x:/picaops-ldap",
                "--entrypoint",
                "slapadd",
                "osixia/openldap:1.5.0",
                "-F",
                "/picaops-ldap/slapd.d"
            ]
        );
    }

    #[test]
    fn a_mismatch_names_the_missing_entries() {
        let e = compare(&["a".into(), "b".into()], &["a".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the loaded directory holds 1 entries, the dump 2 (missing: b)"
        );
        assert!(compare(&["a".into()], &["a".into()]).is_ok());
    }
}
