//! The lab's Docker images: what each one is built from, how its tag is derived from the text of
//! its build scripts (a changed script gives a new tag, so a rebuild; an unchanged one is
//! reused), and the build itself. Images are made locally: no registry is reachable.
//!
//! Layers: `base` (debootstrap of Debian trixie, minbase) ← `common` (systemd, sshd, sudo,
//! python3…) ← `hypervisor` (Docker, libvirt/QEMU, restic) and `ldap` (slapd, and exim as the
//! lab's mail server). The WAN router
//! runs from `common`. Lab containers cannot reach the Debian archive: `common` carries an offline
//! apt repository (/srv/picaops-lab-apt, see images/lab-apt.sh) with the packages the base
//! playbooks install, and every image ends with that repository as apt's only source. A saved copy (`docker save | gzip -1`) is kept in the cache directory so
//! `docker system prune` does not cost a full rebuild.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::docker::Docker;
use super::{mirror, LabError};

/// Debian release the lab hosts run (restic 0.18, rest-server, Compose v2, OpenSSH 10).
pub const SUITE: &str = "trixie";

/// Where saved images are kept between runs (`PICAOPS_LAB_CACHE` overrides).
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/picaops-lab";

const BASE_SH: &str = include_str!("images/base.sh");
const COMMON_DOCKERFILE: &str = include_str!("images/common.Dockerfile");
const HYPERVISOR_DOCKERFILE: &str = include_str!("images/hypervisor.Dockerfile");
const LDAP_DOCKERFILE: &str = include_str!("images/ldap.Dockerfile");
const LDAP_SCHEMA_LDIF: &str = include_str!("images/ldap-schema.ldif");
const LDAP_CONFIG_LDIF: &str = include_str!("images/ldap-config.ldif");
const LDAP_BASE_LDIF: &str = include_str!("images/ldap-base.ldif");
const LDAP_TLS_SH: &str = include_str!("images/ldap-tls.sh");
const MAIL_EXIM4_CONF: &str = include_str!("images/mail-exim4.conf");
const MAIL_SETUP_SH: &str = include_str!("images/mail-setup.sh");
const INIT_SH: &str = include_str!("images/init.sh");
const LAB_APT_SH: &str = include_str!("images/lab-apt.sh");
const SSHD_CONF: &str = include_str!("images/sshd.conf");
const DAEMON_JSON: &str = include_str!("images/daemon.json");
const POSTGRES_DOCKERFILE: &str = include_str!("images/postgres.Dockerfile");
const POSTGRES_ENTRYPOINT: &str = include_str!("images/postgres-entrypoint.sh");
const APP_WEB_DOCKERFILE: &str = include_str!("images/app-web.Dockerfile");
const APP_WEB_PY: &str = include_str!("images/app-web.py");
const APP_WEB_PROBE_SH: &str = include_str!("images/app-web-probe.sh");
const GUEST_BUILD_SH: &str = include_str!("images/guest-build.sh");
const GUEST_INIT_SH: &str = include_str!("images/guest-init.sh");
const VMBR0_SERVICE: &str = include_str!("images/vmbr0.service");
const POOL_DEFAULT_XML: &str = include_str!("images/pool-default.xml");

/// One of the lab's images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Image {
    Base,
    Common,
    Hypervisor,
    Ldap,
    /// PostgreSQL for the hosts' inner Docker engines (see `super::apps`).
    Postgres,
    /// A tiny HTTP service (python3) for the services tests, in several versions (`super::apps`).
    AppWeb,
}

impl Image {
    /// Build order: every image comes after its parent.
    pub const ALL: [Image; 6] = [
        Image::Base,
        Image::Common,
        Image::Hypervisor,
        Image::Ldap,
        Image::Postgres,
        Image::AppWeb,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Image::Base => "picaops-lab-base",
            Image::Common => "picaops-lab-common",
            Image::Hypervisor => "picaops-lab-hypervisor",
            Image::Ldap => "picaops-lab-ldap",
            Image::Postgres => "picaops-lab-postgres",
            Image::AppWeb => "picaops-lab-app-web",
        }
    }

    pub fn parent(self) -> Option<Image> {
        match self {
            Image::Base => None,
            Image::Common | Image::Postgres | Image::AppWeb => Some(Image::Base),
            Image::Hypervisor | Image::Ldap => Some(Image::Common),
        }
    }

    /// The build script (base.sh or a Dockerfile) and the files copied into the build context.
    fn sources(self) -> (&'static str, Vec<(&'static str, &'static str)>) {
        match self {
            Image::Base => (BASE_SH, vec![]),
            Image::Common => (
                COMMON_DOCKERFILE,
                vec![
                    ("init.sh", INIT_SH),
                    ("sshd.conf", SSHD_CONF),
                    ("lab-apt.sh", LAB_APT_SH),
                ],
            ),
            Image::Hypervisor => (
                HYPERVISOR_DOCKERFILE,
                vec![
                    ("daemon.json", DAEMON_JSON),
                    // Lab VMs: their guest, the bridge and the storage pool (see the Dockerfile).
                    ("guest-build.sh", GUEST_BUILD_SH),
                    ("guest-init.sh", GUEST_INIT_SH),
                    ("vmbr0.service", VMBR0_SERVICE),
                    ("pool-default.xml", POOL_DEFAULT_XML),
                ],
            ),
            Image::Ldap => (
                LDAP_DOCKERFILE,
                vec![
                    ("ldap-schema.ldif", LDAP_SCHEMA_LDIF),
                    ("ldap-config.ldif", LDAP_CONFIG_LDIF),
                    ("ldap-base.ldif", LDAP_BASE_LDIF),
                    ("ldap-tls.sh", LDAP_TLS_SH),
                    ("mail-exim4.conf", MAIL_EXIM4_CONF),
                    ("mail-setup.sh", MAIL_SETUP_SH),
                ],
            ),
            Image::Postgres => (
                POSTGRES_DOCKERFILE,
                vec![("postgres-entrypoint.sh", POSTGRES_ENTRYPOINT)],
            ),
            Image::AppWeb => (
                APP_WEB_DOCKERFILE,
                vec![
                    ("app-web.py", APP_WEB_PY),
                    ("app-web-probe.sh", APP_WEB_PROBE_SH),
                ],
            ),
        }
    }

    /// `name:hash`, the hash covering this image's scripts and its parent's tag (so a change in
    /// `base` rebuilds everything above it, a change in `ldap` only `ldap`).
    pub fn tag(self) -> String {
        let (script, files) = self.sources();
        let parent = self.parent().map(|p| p.tag()).unwrap_or_default();
        format!(
            "{}:{}",
            self.name(),
            content_hash(SUITE, &parent, script, &files)
        )
    }
}

/// First 12 hex digits of a SHA-256 over everything that shapes an image.
pub fn content_hash(suite: &str, parent: &str, script: &str, files: &[(&str, &str)]) -> String {
    let mut h = Sha256::new();
    for part in [suite, parent, script] {
        h.update(part.len().to_le_bytes());
        h.update(part.as_bytes());
    }
    for (name, text) in files {
        h.update(name.len().to_le_bytes());
        h.update(name.as_bytes());
        h.update(text.len().to_le_bytes());
        h.update(text.as_bytes());
    }
    hex::encode(h.finalize())[..12].to_string()
}

/// The images lab containers run from; saved together in one cache file.
const RUN_IMAGES: [Image; 5] = [
    Image::Common,
    Image::Hypervisor,
    Image::Ldap,
    Image::Postgres,
    Image::AppWeb,
];

/// Cache file for the current set of images (its name changes when any tag does).
pub fn cache_file(cache_dir: &Path) -> PathBuf {
    let tags: Vec<String> = RUN_IMAGES.iter().map(|i| i.tag()).collect();
    let hash = content_hash("", "", &tags.join(" "), &[]);
    cache_dir.join(format!("images-{hash}.tar.gz"))
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("PICAOPS_LAB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR))
}

/// Builds what is missing (everything with `rebuild`), reporting each step through `progress`.
/// Build output goes to `log` (or to the terminal when `verbose`).
pub fn build(
    docker: &Docker,
    rebuild: bool,
    log: &Path,
    verbose: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<(), LabError> {
    let missing = |img: &Image| rebuild || !docker.image_exists(&img.tag());
    if !RUN_IMAGES.iter().any(missing) {
        progress("images: all up to date (cached)");
        return Ok(());
    }
    let cache = cache_file(&cache_dir());
    if !rebuild && cache.is_file() {
        progress(&format!("images: loading saved copy {}", cache.display()));
        match load_cache(docker, &cache) {
            Ok(()) if !RUN_IMAGES.iter().any(missing) => return Ok(()),
            Ok(()) => progress("images: the saved copy lacks some images; building them"),
            Err(e) => progress(&format!(
                "images: could not load the saved copy ({e}); building"
            )),
        }
    }
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent).map_err(|e| LabError::io(parent, e))?;
    }
    // One log per build: the previous one is of no use once a new build starts.
    let _ = std::fs::remove_file(log);
    let started = Instant::now();
    for img in Image::ALL {
        let tag = img.tag();
        // The base is only needed to build its children; skip it when they are all there.
        let needed = match img {
            Image::Base => {
                rebuild
                    || Image::ALL
                        .iter()
                        .any(|i| i.parent() == Some(Image::Base) && missing(i))
            }
            _ => missing(&img),
        };
        if !needed || (!rebuild && docker.image_exists(&tag)) {
            continue;
        }
        progress(&format!("images: building {tag}"));
        let t = Instant::now();
        build_one(docker, img, rebuild, log, verbose, progress)?;
        progress(&format!(
            "images: {tag} built in {}",
            human_duration(t.elapsed())
        ));
    }
    progress(&format!(
        "images: all built in {}",
        human_duration(started.elapsed())
    ));
    remove_outdated(docker, progress);
    if let Err(e) = save_cache(docker, &cache, progress) {
        progress(&format!(
            "images: not saved to {} ({e}); a `docker system prune` will cost a full rebuild",
            cache.display()
        ));
    }
    Ok(())
}

fn build_one(
    docker: &Docker,
    img: Image,
    rebuild: bool,
    log: &Path,
    verbose: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<(), LabError> {
    let tag = img.tag();
    let (script, files) = img.sources();
    // /var/tmp: a debootstrap root filesystem needs a real disk, not a small tmpfs.
    let work = tempfile::Builder::new()
        .prefix("picaops-lab-build-")
        .tempdir_in("/var/tmp")
        .map_err(|e| LabError::io(Path::new("/var/tmp"), e))?;
    let write = |name: &str, text: &str| {
        let p = work.path().join(name);
        std::fs::write(&p, text).map_err(|e| LabError::io(&p, e))
    };
    for (name, text) in &files {
        write(name, text)?;
    }
    let mut cmd;
    match img {
        Image::Base => {
            let mirror = mirror::detect()?;
            write("base.sh", script)?;
            cmd = Command::new("bash");
            cmd.arg(work.path().join("base.sh"))
                .arg(mirror)
                .arg(SUITE)
                .arg(&tag)
                .arg(work.path());
        }
        _ => {
            write("Dockerfile", script)?;
            let parent = img.parent().expect("derived image").tag();
            cmd = docker.command(["build", "--network", "host", "--pull=false"]);
            if rebuild {
                cmd.arg("--no-cache");
            }
            cmd.arg("--build-arg")
                .arg(format!("BASE={parent}"))
                .arg("-t")
                .arg(&tag)
                .arg(work.path());
        }
    }
    run_logged(cmd, &format!("building {tag}"), log, verbose, progress)
}

/// Runs a long command with its output appended to `log`, reporting the last line every 15 s so
/// the volunteer sees it move. On failure the error quotes the end of the log.
fn run_logged(
    mut cmd: Command,
    what: &str,
    log: &Path,
    verbose: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<(), LabError> {
    let shown = super::docker::show(
        &cmd.get_program().to_string_lossy(),
        &cmd.get_args().map(|a| a.to_owned()).collect::<Vec<_>>(),
    );
    cmd.stdin(Stdio::null());
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| LabError::io(log, e))?;
    let start_offset = file.seek(SeekFrom::End(0)).unwrap_or(0);
    use std::io::Write;
    let _ = writeln!(file, "\n==> {shown}");
    if !verbose {
        let err = file.try_clone().map_err(|e| LabError::io(log, e))?;
        cmd.stdout(file).stderr(err);
    }
    let mut child = cmd.spawn().map_err(|e| LabError::Tool {
        tool: cmd.get_program().to_string_lossy().into_owned(),
        detail: e.to_string(),
    })?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| LabError::io(log, e))? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(200));
        if !verbose && last_report.elapsed() >= Duration::from_secs(15) {
            last_report = Instant::now();
            let last = tail(log, start_offset, 1).join("");
            progress(&format!(
                "images:   … {} ({})",
                human_duration(started.elapsed()),
                shorten(&last, 100)
            ));
        }
    };
    if status.success() {
        return Ok(());
    }
    Err(LabError::Build {
        what: what.to_string(),
        command: shown,
        log: log.to_path_buf(),
        tail: tail(log, start_offset, 15).join("\n"),
    })
}

/// Last `n` non-empty lines of `path` written after `offset`.
fn tail(path: &Path, offset: u64, n: usize) -> Vec<String> {
    let Ok(mut f) = File::open(path) else {
        return vec![];
    };
    let _ = f.seek(SeekFrom::Start(offset));
    let lines: Vec<String> = BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

fn shorten(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}…")
    }
}

pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s as u64) % 60)
    }
}

/// Removes lab images built from older scripts (a tag that is no longer current). An image a
/// container still uses stays; the next `lab up` replaces that container anyway.
fn remove_outdated(docker: &Docker, progress: &mut dyn FnMut(&str)) {
    let current: Vec<String> = Image::ALL.iter().map(|i| i.tag()).collect();
    let Ok(listed) = docker.run(
        "listing images",
        ["images", "--format", "{{.Repository}}:{{.Tag}}"],
    ) else {
        return;
    };
    let outdated: Vec<&str> = listed
        .lines()
        .filter(|t| {
            Image::ALL
                .iter()
                .any(|i| t.starts_with(&format!("{}:", i.name())))
        })
        .filter(|t| !current.iter().any(|c| c == t))
        .collect();
    for tag in outdated {
        if docker.succeeds(["rmi", tag]) {
            progress(&format!("images: removed outdated {tag}"));
        }
    }
}

/// `docker save IMAGES | gzip -1 > cache` (written under a temporary name, then renamed);
/// older saved sets are removed.
fn save_cache(
    docker: &Docker,
    cache: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(), LabError> {
    let dir = cache
        .parent()
        .ok_or_else(|| LabError::io(cache, std::io::Error::other("no cache directory")))?;
    std::fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
    progress(&format!("images: saving a copy to {}", cache.display()));
    let t = Instant::now();
    let partial = cache.with_extension("partial");
    let out = File::create(&partial).map_err(|e| LabError::io(&partial, e))?;
    let mut save = docker
        .command(
            ["save".to_string()]
                .into_iter()
                .chain(RUN_IMAGES.iter().map(|i| i.tag())),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| tool("docker save", e))?;
    let gzip = Command::new("gzip")
        .arg("-1")
        .stdin(save.stdout.take().expect("piped"))
        .stdout(out)
        .status()
        .map_err(|e| tool("gzip", e))?;
    let saved = save
        .wait_with_output()
        .map_err(|e| tool("docker save", e))?;
    if !saved.status.success() || !gzip.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(if saved.status.success() {
            tool("gzip", gzip)
        } else {
            tool("docker save", String::from_utf8_lossy(&saved.stderr).trim())
        });
    }
    std::fs::rename(&partial, cache).map_err(|e| LabError::io(cache, e))?;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for entry in rd.flatten() {
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if p != cache && name.starts_with("images-") && name.ends_with(".tar.gz") {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    progress(&format!("images: saved in {}", human_duration(t.elapsed())));
    Ok(())
}

/// `gzip -dc cache | docker load`.
fn load_cache(docker: &Docker, cache: &Path) -> Result<(), LabError> {
    let mut gunzip = Command::new("gzip")
        .arg("-dc")
        .arg(cache)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| tool("gzip", e))?;
    let load = docker
        .command(["load", "--quiet"])
        .stdin(gunzip.stdout.take().expect("piped"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| tool("docker load", e))?;
    let unzipped = gunzip.wait().map_err(|e| tool("gzip", e))?;
    if !load.status.success() {
        return Err(tool(
            "docker load",
            String::from_utf8_lossy(&load.stderr).trim(),
        ));
    }
    if !unzipped.success() {
        return Err(tool("gzip", unzipped));
    }
    Ok(())
}

/// What a tool of the image cache (`docker save`/`load`, `gzip`) said, or why it did not run.
fn tool(tool: &str, detail: impl std::fmt::Display) -> LabError {
    LabError::Tool {
        tool: tool.to_string(),
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_name_colon_twelve_hex_digits() {
        for img in Image::ALL {
            let tag = img.tag();
            let (name, hash) = tag.split_once(':').unwrap();
            assert_eq!(name, img.name());
            assert_eq!(hash.len(), 12);
            assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn a_changed_script_changes_the_hash_an_unchanged_one_does_not() {
        let a = content_hash("trixie", "p:1", "RUN true", &[("f", "x")]);
        assert_eq!(a, content_hash("trixie", "p:1", "RUN true", &[("f", "x")]));
        assert_ne!(a, content_hash("trixie", "p:1", "RUN false", &[("f", "x")]));
        assert_ne!(a, content_hash("trixie", "p:2", "RUN true", &[("f", "x")]));
        assert_ne!(a, content_hash("trixie", "p:1", "RUN true", &[("f", "y")]));
        assert_ne!(
            a,
            content_hash("bookworm", "p:1", "RUN true", &[("f", "x")])
        );
        // Boundaries between parts count: moving text from one part to the next is a change.
        assert_ne!(
            content_hash("", "", "ab", &[]),
            content_hash("", "a", "b", &[])
        );
    }

    #[test]
    fn derived_images_depend_on_their_parent() {
        assert_eq!(Image::Ldap.parent(), Some(Image::Common));
        assert_eq!(Image::Hypervisor.parent(), Some(Image::Common));
        assert_eq!(Image::Common.parent(), Some(Image::Base));
        assert_eq!(Image::Base.parent(), None);
    }

    #[test]
    fn every_image_build_leaves_apt_on_the_offline_repository() {
        for img in [Image::Common, Image::Hypervisor, Image::Ldap] {
            let (script, _) = img.sources();
            let name = img.name();
            // A bare `apt-get update` would need the archive's sources in place; the helper
            // switches to them and back, so a container's `apt-get update` never hits the network.
            assert!(!script.contains("apt-get update"), "{name}");
            let on = script.matches("picaops-lab-apt archive").count();
            let off = script.matches("picaops-lab-apt local").count();
            assert!(on >= 1 && on == off, "{name}: {on} archive, {off} local");
            assert!(
                script.rfind("picaops-lab-apt local") > script.rfind("picaops-lab-apt archive"),
                "{name}"
            );
        }
        let (common, files) = Image::Common.sources();
        assert!(common.contains("picaops-lab-apt repo "));
        assert!(files.iter().any(|(n, _)| *n == "lab-apt.sh"));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_millis(2500)), "2.5s");
        assert_eq!(human_duration(Duration::from_secs(125)), "2m05s");
    }
}
