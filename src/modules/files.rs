//! The `file`, `copy`, `template` and `line` modules: paths, their kind, content and attributes.
//!
//! Content is always written whole and atomically (`put`: temporary file beside the target,
//! checked, synced, renamed). Nothing here replaces a directory by a file or the reverse: that is
//! refused with advice, never done silently.

use sha2::{Digest, Sha256};

use super::probe::StepState;
use super::{
    attr_changes, fmt_mode, q, Action, Attrs, ContentChange, DiffError, Op, OptionError, Opts,
    Planned, Sources,
};

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn absolute(k: &str, path: String) -> Result<String, OptionError> {
    if !path.starts_with('/') {
        return Err(OptionError::new(
            k,
            format!("`{k}: {path}` must be an absolute path (starting with /)"),
        ));
    }
    if path.len() > 1 && path.ends_with('/') {
        return Err(OptionError::new(
            k,
            format!("`{k}: {path}` ends with /: name the file itself"),
        ));
    }
    Ok(path)
}

/// Leftover temporary files from an interrupted run are removed as part of the step.
fn stale_cleanup(state: &StepState, details: &mut Vec<String>, ops: &mut Vec<Op>) {
    for f in &state.stale {
        details.push(format!("remove {f} (left by an interrupted apply)"));
        ops.push(Op::Call(format!("rm -f -- {}", q(f))));
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileState {
    Directory,
    File,
    Touch,
    Absent,
    Link(String),
}

/// `file`: a directory, an existing file's attributes, an empty file, a symlink, or nothing.
#[derive(Clone, Debug)]
pub struct FileRes {
    pub path: String,
    pub state: FileState,
    pub attrs: Attrs,
}

impl FileRes {
    pub(super) fn parse(o: &Opts<'_>) -> Result<Self, OptionError> {
        let path = absolute("path", o.req_str("path")?)?;
        let state = match o
            .choice(
                "state",
                &["directory", "file", "touch", "absent", "link"],
                "file",
            )?
            .as_str()
        {
            "directory" => FileState::Directory,
            "touch" => FileState::Touch,
            "absent" => FileState::Absent,
            "link" => FileState::Link(o.str("src")?.ok_or_else(|| {
                OptionError::new(
                    "src",
                    "`state: link` needs `src:` (what the link points to)",
                )
            })?),
            _ => FileState::File,
        };
        if path == "/" && state == FileState::Absent {
            return Err(OptionError::new("path", "refusing to remove /"));
        }
        Ok(FileRes {
            path,
            state,
            attrs: o.attrs()?,
        })
    }

    pub(super) fn probe(&self, i: usize, s: &mut String) {
        s.push_str(&format!("pst {i} {} -\n", q(&self.path)));
    }

    pub(super) fn diff(&self, st: &StepState) -> Result<Planned, DiffError> {
        let p = q(&self.path);
        let mut details = Vec::new();
        let mut ops = Vec::new();
        let kind = st.stat.as_ref().map(|s| s.kind.as_str());
        let a = &self.attrs;
        let new_attrs = |default_mode: u32| {
            format!(
                "attrs {p} {} {} {}",
                fmt_mode(a.mode.unwrap_or(default_mode)),
                q(a.owner.as_deref().unwrap_or("")),
                q(a.group.as_deref().unwrap_or(""))
            )
        };
        let action = match (&self.state, kind) {
            (FileState::Absent, None) => Action::Unchanged,
            (FileState::Absent, Some(k)) => {
                details.push(format!("remove the {k}"));
                ops.push(Op::Call(format!("rm -rf -- {p}")));
                Action::Delete
            }
            (FileState::Directory, None) => {
                ops.push(Op::Call(format!("mkdir -p -- {p}")));
                ops.push(Op::Call(new_attrs(0o755)));
                Action::Create
            }
            (FileState::Touch, None) => {
                ops.push(Op::Call(format!("touch -- {p}")));
                ops.push(Op::Call(new_attrs(0o644)));
                Action::Create
            }
            (FileState::File, None) => {
                return Err(DiffError::FileMissing {
                    path: self.path.clone(),
                })
            }
            (FileState::Link(target), None) => {
                details.push(format!("→ {target}"));
                ops.push(Op::Call(format!("link {p} {}", q(target))));
                Action::Create
            }
            (FileState::Link(target), Some("link")) => {
                let have = st.link_target.clone().unwrap_or_default();
                if &have == target {
                    Action::Unchanged
                } else {
                    details.push(format!("→ {have} becomes → {target}"));
                    ops.push(Op::Call(format!("link {p} {}", q(target))));
                    Action::Update
                }
            }
            (FileState::Link(_), Some(k)) => {
                return Err(DiffError::NotALink {
                    path: self.path.clone(),
                    kind: k.to_string(),
                })
            }
            (FileState::Directory, Some("directory"))
            | (FileState::File | FileState::Touch, Some("file")) => Action::Unchanged,
            (want, Some(k)) => {
                let want = match want {
                    FileState::Directory => "directory",
                    _ => "file",
                };
                return Err(DiffError::WrongKind {
                    path: self.path.clone(),
                    kind: k.to_string(),
                    want,
                });
            }
        };
        if action == Action::Unchanged
            && !matches!(self.state, FileState::Absent | FileState::Link(_))
        {
            if let Some(stat) = &st.stat {
                if let Some((m, o, g)) = attr_changes(a, stat, &mut details) {
                    ops.push(Op::Call(format!("attrs {p} {} {} {}", q(&m), q(&o), q(&g))));
                    stale_cleanup(st, &mut details, &mut ops);
                    return Ok(Planned::with(Action::Update, details, ops));
                }
            }
        }
        Ok(Planned::with(action, details, ops))
    }
}

/// `copy` and `template` (and a unit's file): a regular file with exactly this content.
#[derive(Clone, Debug)]
pub struct ContentRes {
    pub path: String,
    pub content: Vec<u8>,
    pub sha256: String,
    pub attrs: Attrs,
}

impl ContentRes {
    pub(crate) fn new(path: String, content: Vec<u8>, attrs: Attrs) -> Self {
        ContentRes {
            sha256: sha256_hex(&content),
            path,
            content,
            attrs,
        }
    }

    pub(super) fn parse_copy(o: &Opts<'_>, src: &Sources<'_>) -> Result<Self, OptionError> {
        let path = absolute("dest", o.req_str("dest")?)?;
        let content = match (o.str("content")?, o.str("src")?) {
            (Some(_), Some(_)) => {
                return Err(OptionError::new("src", "give `content` or `src`, not both"))
            }
            (Some(c), None) => c.into_bytes(),
            (None, Some(s)) => {
                (src.copy_src)(&s).map_err(|e| OptionError::new("src", e.to_string()))?
            }
            (None, None) => {
                return Err(OptionError::new(
                    "content",
                    "`copy` needs `content` or `src`",
                ))
            }
        };
        Ok(Self::new(path, content, o.attrs()?))
    }

    pub(super) fn parse_template(o: &Opts<'_>, src: &Sources<'_>) -> Result<Self, OptionError> {
        let path = absolute("dest", o.req_str("dest")?)?;
        let content = (src.template_src)(&o.req_str("src")?)
            .map_err(|e| OptionError::new("src", e.to_string()))?;
        Ok(Self::new(path, content, o.attrs()?))
    }

    pub(super) fn probe(&self, i: usize, s: &mut String) {
        s.push_str(&format!("pst {i} {} c {}\n", q(&self.path), self.sha256));
    }

    pub(super) fn diff(&self, st: &StepState) -> Result<Planned, DiffError> {
        let mut details = Vec::new();
        let mut ops = Vec::new();
        stale_cleanup(st, &mut details, &mut ops);
        let put = |mode: u32, owner: Option<String>, group: Option<String>| Op::Put {
            path: self.path.clone(),
            content: self.content.clone(),
            mode,
            owner,
            group,
        };
        match st.stat.as_ref() {
            None => {
                let a = &self.attrs;
                ops.push(put(
                    a.mode.unwrap_or(0o644),
                    a.owner.clone(),
                    a.group.clone(),
                ));
                details.insert(0, format!("{} bytes", self.content.len()));
                Ok(Planned {
                    action: Action::Create,
                    details,
                    content: Some(ContentChange {
                        path: self.path.clone(),
                        old: None,
                        new: self.content.clone(),
                    }),
                    ops,
                })
            }
            Some(stat) if stat.kind != "file" => Err(DiffError::NotAFile {
                path: self.path.clone(),
                kind: stat.kind.clone(),
            }),
            Some(stat) => {
                if st.sha256.as_deref() == Some(self.sha256.as_str()) {
                    return Ok(match attr_changes(&self.attrs, stat, &mut details) {
                        Some((m, o, g)) => {
                            ops.push(Op::Call(format!(
                                "attrs {} {} {} {}",
                                q(&self.path),
                                q(&m),
                                q(&o),
                                q(&g)
                            )));
                            Planned::with(Action::Update, details, ops)
                        }
                        None if !ops.is_empty() => Planned::with(Action::Update, details, ops),
                        None => Planned::unchanged(),
                    });
                }
                let _ = attr_changes(&self.attrs, stat, &mut details);
                details.insert(0, "content changed".into());
                // Keep what is there for what the task does not say.
                ops.push(put(
                    self.attrs.mode.unwrap_or(stat.mode),
                    Some(
                        self.attrs
                            .owner
                            .clone()
                            .unwrap_or_else(|| stat.uid.to_string()),
                    ),
                    Some(
                        self.attrs
                            .group
                            .clone()
                            .unwrap_or_else(|| stat.gid.to_string()),
                    ),
                ));
                Ok(Planned {
                    action: Action::Update,
                    details,
                    content: Some(ContentChange {
                        path: self.path.clone(),
                        old: st.content.clone(),
                        new: self.content.clone(),
                    }),
                    ops,
                })
            }
        }
    }
}

/// `line`: one line present (or replacing the last line a regex matches), or absent.
#[derive(Clone, Debug)]
pub struct LineRes {
    pub path: String,
    pub line: Option<String>,
    pub regexp: Option<regex::Regex>,
    pub present: bool,
    pub create: bool,
    pub attrs: Attrs,
}

impl LineRes {
    pub(super) fn parse(o: &Opts<'_>) -> Result<Self, OptionError> {
        let path = absolute("path", o.req_str("path")?)?;
        let present = o.choice("state", &["present", "absent"], "present")? == "present";
        let line = o.str("line")?;
        if let Some(l) = &line {
            if l.contains('\n') {
                return Err(OptionError::new(
                    "line",
                    "`line` must be a single line (no newline)",
                ));
            }
        }
        let regexp = match o.str("regexp")? {
            Some(r) => Some(regex::Regex::new(&r).map_err(|e| {
                OptionError::new(
                    "regexp",
                    format!("`regexp` is not a valid regular expression: {e}"),
                )
            })?),
            None => None,
        };
        if present && line.is_none() {
            return Err(OptionError::new("line", "`state: present` needs `line:`"));
        }
        if !present && line.is_none() && regexp.is_none() {
            return Err(OptionError::new(
                "regexp",
                "`state: absent` needs `line:` or `regexp:`",
            ));
        }
        Ok(LineRes {
            path,
            line,
            regexp,
            present,
            create: o.bool("create")?.unwrap_or(false),
            attrs: o.attrs()?,
        })
    }

    pub(super) fn probe(&self, i: usize, s: &mut String) {
        s.push_str(&format!("pst {i} {} a\n", q(&self.path)));
    }

    /// The file's text after the edit.
    pub fn edit(&self, old: &str) -> String {
        let mut lines: Vec<&str> = old.lines().collect();
        let matches = |l: &str| match &self.regexp {
            Some(r) => r.is_match(l),
            None => Some(l) == self.line.as_deref(),
        };
        if self.present {
            let line = self.line.as_deref().unwrap_or_default();
            if let Some(pos) = lines.iter().rposition(|l| matches(l)) {
                lines[pos] = line;
            } else if !lines.contains(&line) {
                lines.push(line);
            }
        } else {
            lines.retain(|l| !matches(l));
        }
        let mut out = lines.join("\n");
        if !lines.is_empty() {
            out.push('\n');
        }
        out
    }

    pub(super) fn diff(&self, st: &StepState) -> Result<Planned, DiffError> {
        let mut details = Vec::new();
        let mut ops = Vec::new();
        stale_cleanup(st, &mut details, &mut ops);
        let (old, stat) = match st.stat.as_ref() {
            None if !self.present => {
                return Ok(Planned::with(
                    if ops.is_empty() {
                        Action::Unchanged
                    } else {
                        Action::Update
                    },
                    details,
                    ops,
                ))
            }
            None if !self.create => {
                return Err(DiffError::NoLineFile {
                    path: self.path.clone(),
                })
            }
            None => (None, None),
            Some(stat) if stat.kind != "file" => {
                return Err(DiffError::NotText {
                    path: self.path.clone(),
                    kind: stat.kind.clone(),
                })
            }
            Some(stat) => match &st.content {
                Some(c) => (Some(c.clone()), Some(stat)),
                None => {
                    return Err(DiffError::TooLarge {
                        path: self.path.clone(),
                    })
                }
            },
        };
        let old_text = match &old {
            Some(bytes) => String::from_utf8(bytes.clone()).map_err(|_| DiffError::NotUtf8 {
                path: self.path.clone(),
            })?,
            None => String::new(),
        };
        let new_text = self.edit(&old_text);
        let content_changed = new_text != old_text || old.is_none();
        let (mode, owner, group) = match stat {
            Some(s) => {
                let _ = if content_changed {
                    attr_changes(&self.attrs, s, &mut details)
                } else {
                    None
                };
                (
                    self.attrs.mode.unwrap_or(s.mode),
                    Some(
                        self.attrs
                            .owner
                            .clone()
                            .unwrap_or_else(|| s.uid.to_string()),
                    ),
                    Some(
                        self.attrs
                            .group
                            .clone()
                            .unwrap_or_else(|| s.gid.to_string()),
                    ),
                )
            }
            None => (
                self.attrs.mode.unwrap_or(0o644),
                self.attrs.owner.clone(),
                self.attrs.group.clone(),
            ),
        };
        if !content_changed {
            if let Some(s) = stat {
                if let Some((m, o, g)) = attr_changes(&self.attrs, s, &mut details) {
                    ops.push(Op::Call(format!(
                        "attrs {} {} {} {}",
                        q(&self.path),
                        q(&m),
                        q(&o),
                        q(&g)
                    )));
                }
            }
            let action = if ops.is_empty() {
                Action::Unchanged
            } else {
                Action::Update
            };
            return Ok(Planned::with(action, details, ops));
        }
        ops.push(Op::Put {
            path: self.path.clone(),
            content: new_text.clone().into_bytes(),
            mode,
            owner,
            group,
        });
        Ok(Planned {
            action: if old.is_none() {
                Action::Create
            } else {
                Action::Update
            },
            details,
            content: Some(ContentChange {
                path: self.path.clone(),
                old,
                new: new_text.into_bytes(),
            }),
            ops,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(line: Option<&str>, regexp: Option<&str>, present: bool) -> LineRes {
        LineRes {
            path: "/etc/x".into(),
            line: line.map(String::from),
            regexp: regexp.map(|r| regex::Regex::new(r).unwrap()),
            present,
            create: false,
            attrs: Attrs::default(),
        }
    }

    #[test]
    fn line_edits() {
        let cases: &[(LineRes, &str, &str)] = &[
            (line(Some("b=2"), None, true), "a=1\n", "a=1\nb=2\n"),
            (line(Some("b=2"), None, true), "a=1\nb=2\n", "a=1\nb=2\n"),
            (line(Some("b=2"), None, true), "a=1", "a=1\nb=2\n"),
            (
                line(Some("b=3"), Some("^b="), true),
                "b=1\na=1\nb=2\n",
                "b=1\na=1\nb=3\n",
            ),
            (line(Some("b=3"), Some("^b="), true), "a=1\n", "a=1\nb=3\n"),
            (line(None, Some("^#"), false), "#x\na\n#y\n", "a\n"),
            (line(Some("a"), None, false), "a\n", ""),
            (line(Some("x"), None, true), "", "x\n"),
        ];
        for (res, old, new) in cases {
            assert_eq!(res.edit(old), *new, "editing {old:?}");
        }
    }
}
