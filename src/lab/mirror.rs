//! Which Debian mirror the image builds use: read from this machine's apt configuration at run
//! time (so no archive host name is ever written into picaops), or from `PICAOPS_DEBIAN_MIRROR`.

use std::path::Path;

use super::LabError;

/// Environment variable that overrides the mirror found in the apt configuration.
pub const MIRROR_ENV: &str = "PICAOPS_DEBIAN_MIRROR";

/// The mirror to debootstrap from: `PICAOPS_DEBIAN_MIRROR`, else the first Debian (non-security)
/// source in /etc/apt/sources.list.d/*.sources, else in /etc/apt/sources.list.
pub fn detect() -> Result<String, LabError> {
    if let Ok(m) = std::env::var(MIRROR_ENV) {
        if !m.trim().is_empty() {
            return Ok(m.trim().trim_end_matches('/').to_string());
        }
    }
    detect_in(Path::new("/etc/apt"))
}

/// Same as [`detect`] without the environment, reading apt's files under `etc_apt`.
pub fn detect_in(etc_apt: &Path) -> Result<String, LabError> {
    let mut sources: Vec<_> = std::fs::read_dir(etc_apt.join("sources.list.d"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sources"))
                .collect()
        })
        .unwrap_or_default();
    sources.sort();
    for path in &sources {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Some(m) = from_deb822(&text) {
                return Ok(m);
            }
        }
    }
    let list = etc_apt.join("sources.list");
    if let Ok(text) = std::fs::read_to_string(&list) {
        if let Some(m) = from_one_line_style(&text) {
            return Ok(m);
        }
    }
    Err(LabError::NoMirror {
        etc_apt: etc_apt.to_path_buf(),
        list,
    })
}

/// First `URIs:` of an enabled `deb` stanza that is not the security archive.
pub fn from_deb822(text: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let mut uris = None;
        let mut deb = false;
        let mut enabled = true;
        let mut security = false;
        for line in stanza.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match key.trim().to_ascii_lowercase().as_str() {
                "types" => deb = value.split_whitespace().any(|t| t == "deb"),
                "uris" => uris = value.split_whitespace().next().map(str::to_string),
                "enabled" => enabled = value != "no",
                "suites" => security = value.split_whitespace().all(|s| s.ends_with("-security")),
                _ => {}
            }
        }
        if let Some(uri) = uris {
            if deb && enabled && !security && !uri.contains("-security") {
                return Some(uri.trim_end_matches('/').to_string());
            }
        }
    }
    None
}

/// First `deb URI suite …` line (options in brackets allowed) that is not the security archive.
pub fn from_one_line_style(text: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        let rest = rest.trim_start();
        let rest = match rest.strip_prefix('[') {
            Some(r) => r.split_once(']')?.1.trim_start(),
            None => rest,
        };
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        if uri.contains("-security") || suite.ends_with("-security") {
            continue;
        }
        return Some(uri.trim_end_matches('/').to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_skips_security_and_disabled_stanzas() {
        let text = "\
Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://disabled.example/debian
Suites: bookworm

Types: deb deb-src
# a comment: http://comment.example/
URIs: http://mirror.example/debian/ http://second.example/debian
Suites: bookworm bookworm-updates
Components: main
";
        assert_eq!(
            from_deb822(text).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn deb822_without_deb_type_gives_nothing() {
        assert_eq!(
            from_deb822("Types: deb-src\nURIs: http://x.example/debian\n"),
            None
        );
    }

    #[test]
    fn one_line_style_with_options() {
        let text = "\
# deb http://commented.example/debian bookworm main
deb http://mirror.example/debian-security bookworm-security main
deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main
";
        assert_eq!(
            from_one_line_style(text).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn apt_directory_prefers_sources_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sources.list.d")).unwrap();
        std::fs::write(
            dir.path().join("sources.list"),
            "deb http://old.example/debian bookworm main\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://new.example/debian\nSuites: bookworm\n",
        )
        .unwrap();
        assert_eq!(detect_in(dir.path()).unwrap(), "http://new.example/debian");
        std::fs::remove_file(dir.path().join("sources.list.d/debian.sources")).unwrap();
        assert_eq!(detect_in(dir.path()).unwrap(), "http://old.example/debian");
        std::fs::remove_file(dir.path().join("sources.list")).unwrap();
        assert!(detect_in(dir.path())
            .unwrap_err()
            .to_string()
            .contains(MIRROR_ENV));
    }
}
