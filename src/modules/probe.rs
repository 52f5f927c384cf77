//! Reading the probe script's output: one record per line (`STEP<TAB>KEY<TAB>FIELDS`), free
//! text in base64. Parsing never guesses: an unexpected line is an error naming it.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;

/// `stat` of a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// `file`, `directory`, `link`, `other`.
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub user: String,
    pub gid: u32,
    pub group: String,
    pub size: u64,
}

/// getent passwd fields, primary group name, all group names.
pub type Account = (Vec<String>, String, Vec<String>);

/// Everything the probe said about one step.
#[derive(Clone, Debug, Default)]
pub struct StepState {
    /// `None` when the path does not exist (or the step has no path).
    pub stat: Option<Stat>,
    pub sha256: Option<String>,
    pub content: Option<Vec<u8>>,
    pub link_target: Option<String>,
    /// Temporary files an interrupted apply left beside the path.
    pub stale: Vec<String>,
    /// systemctl is-enabled / is-active.
    pub unit: Option<(String, String)>,
    /// The user's account. `Some(None)`: no such user.
    pub passwd: Option<Option<Account>>,
    /// getent group fields. `Some(None)`: no such group.
    pub group: Option<Option<Vec<String>>>,
    /// Why a command would not run (`creates`, `removes`, `unless`), or `run`.
    pub guard: Option<String>,
}

/// Installed packages and the versions apt would install.
#[derive(Clone, Debug, Default)]
pub struct PackageState {
    /// Installed version of each package dpkg knows as installed.
    pub installed: BTreeMap<String, String>,
    pub candidate: BTreeMap<String, String>,
}

/// The whole probe of one host.
#[derive(Clone, Debug, Default)]
pub struct HostState {
    pub steps: HashMap<usize, StepState>,
    pub packages: PackageState,
}

impl HostState {
    pub fn step(&self, i: usize) -> StepState {
        self.steps.get(&i).cloned().unwrap_or_default()
    }
}

/// Probe output picaops did not write: the host's shell or tools answered something else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("bad base64 from the host ({0})")]
    Base64(#[source] base64::DecodeError),
    #[error("unexpected line in the probe output: {0:?}")]
    UnexpectedLine(String),
}

fn b64(s: &str) -> Result<Vec<u8>, ProbeError> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(ProbeError::Base64)
}

fn b64_text(s: &str) -> Result<String, ProbeError> {
    Ok(String::from_utf8_lossy(&b64(s)?).into_owned())
}

/// Parses the probe output. Lines starting with `@@` (lock notes) are left to the caller.
pub fn parse_probe(out: &str) -> Result<HostState, ProbeError> {
    let mut host = HostState::default();
    for line in out.lines() {
        if line.is_empty() || line.starts_with("@@") {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let bad = || ProbeError::UnexpectedLine(line.to_string());
        match f[0] {
            "pkg" => {
                // pkg NAME STATUS VERSION; STATUS like "install ok installed".
                if f.len() >= 4 && f[2].ends_with(" installed") {
                    host.packages
                        .installed
                        .insert(f[1].to_string(), f[3].to_string());
                }
                continue;
            }
            "cand" => {
                if f.len() >= 3 && !f[2].is_empty() && f[2] != "(none)" {
                    host.packages
                        .candidate
                        .insert(f[1].to_string(), f[2].to_string());
                }
                continue;
            }
            _ => {}
        }
        let i: usize = f[0].parse().map_err(|_| bad())?;
        let st = host.steps.entry(i).or_default();
        match (f.get(1).copied(), f.len()) {
            (Some("absent"), _) => st.stat = None,
            (Some("stat"), 9) => {
                st.stat = Some(Stat {
                    kind: f[2].to_string(),
                    mode: u32::from_str_radix(f[3], 8).map_err(|_| bad())?,
                    uid: f[4].parse().map_err(|_| bad())?,
                    user: f[5].to_string(),
                    gid: f[6].parse().map_err(|_| bad())?,
                    group: f[7].to_string(),
                    size: f[8].parse().map_err(|_| bad())?,
                })
            }
            (Some("sha"), 3) => st.sha256 = Some(f[2].to_string()),
            (Some("content"), 3) => st.content = Some(b64(f[2])?),
            (Some("link"), 3) => {
                st.link_target = Some(b64_text(f[2])?.trim_end_matches('\n').to_string())
            }
            (Some("stale"), 3) => st.stale.push(b64_text(f[2])?),
            (Some("unit"), 4) => st.unit = Some((f[2].to_string(), f[3].to_string())),
            (Some("passwd"), 2) => st.passwd = Some(None),
            (Some("passwd"), 5) => {
                let entry = b64_text(f[2])?;
                st.passwd = Some(Some((
                    entry.split(':').map(String::from).collect(),
                    f[3].to_string(),
                    f[4].split_whitespace().map(String::from).collect(),
                )))
            }
            (Some("group"), 2) => st.group = Some(None),
            (Some("group"), 3) => {
                st.group = Some(Some(b64_text(f[2])?.split(':').map(String::from).collect()))
            }
            (Some("guard"), 3) => st.guard = Some(f[2].to_string()),
            _ => return Err(bad()),
        }
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_record_kind() {
        let out = "0\tstat\tfile\t644\t0\troot\t0\troot\t6\n0\tsha\tabc\n0\tcontent\taGVsbG8K\n\
                   1\tabsent\n1\tstale\tL2V0Yy8ueC5waWNhb3BzLWFiY2RlZg==\n\
                   2\tunit\tenabled\tactive\n3\tpasswd\n4\tgroup\tZG9ja2VyOng6OTk5Omd1cw==\n\
                   5\tguard\tcreates\npkg\thtop\tinstall ok installed\t3.3.0-4\n\
                   pkg\tvim\tdeinstall ok config-files\t2:9.0\ncand\thtop\t3.3.0-5\n@@locked abc\n";
        let h = parse_probe(out).unwrap();
        let s0 = h.step(0);
        assert_eq!(s0.stat.as_ref().unwrap().mode, 0o644);
        assert_eq!(s0.content.as_deref(), Some(&b"hello\n"[..]));
        assert!(h.step(1).stat.is_none());
        assert_eq!(h.step(1).stale, vec!["/etc/.x.picaops-abcdef".to_string()]);
        assert_eq!(h.step(2).unit, Some(("enabled".into(), "active".into())));
        assert_eq!(h.step(3).passwd, Some(None));
        assert_eq!(h.step(4).group.unwrap().unwrap()[2], "999");
        assert_eq!(h.step(5).guard.as_deref(), Some("creates"));
        assert_eq!(
            h.packages.installed.get("htop").map(String::as_str),
            Some("3.3.0-4")
        );
        assert!(!h.packages.installed.contains_key("vim"));
        assert_eq!(h.packages.candidate["htop"], "3.3.0-5");
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse_probe("hello world\n").is_err());
        assert!(parse_probe("0\tstat\tfile\tnope\n").is_err());
    }
}
