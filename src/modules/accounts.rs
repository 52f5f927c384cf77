//! The `user` and `group` modules: local accounts (useradd/usermod/userdel, groupadd/…).
//!
//! Removing a user never removes its home directory: data is not deleted by picaops.
//! Supplementary `groups` are added, never taken away (other tools and people add groups too).

use super::probe::StepState;
use super::{q, Action, DiffError, Op, OptionError, Opts, Planned};

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn name(o: &Opts<'_>) -> Result<String, OptionError> {
    let n = o.req_str("name")?;
    if valid_name(&n) {
        Ok(n)
    } else {
        Err(OptionError::new(
            "name",
            format!("{n:?} is not a valid account name"),
        ))
    }
}

#[derive(Clone, Debug)]
pub struct UserRes {
    pub name: String,
    pub present: bool,
    pub uid: Option<u32>,
    pub group: Option<String>,
    pub groups: Vec<String>,
    pub shell: Option<String>,
    pub home: Option<String>,
    pub comment: Option<String>,
    pub system: bool,
    pub create_home: bool,
}

impl UserRes {
    pub(super) fn parse(o: &Opts<'_>) -> Result<Self, OptionError> {
        let groups = o.list("groups")?.unwrap_or_default();
        if let Some(bad) = groups.iter().find(|g| !valid_name(g)) {
            return Err(OptionError::new(
                "groups",
                format!("{bad:?} is not a valid group name"),
            ));
        }
        let comment = o.str("comment")?;
        if comment
            .as_deref()
            .is_some_and(|c| c.contains(':') || c.contains('\n'))
        {
            return Err(OptionError::new(
                "comment",
                "`comment` cannot contain `:` or a newline",
            ));
        }
        Ok(UserRes {
            name: name(o)?,
            present: o.choice("state", &["present", "absent"], "present")? == "present",
            uid: o.u32("uid")?,
            group: o.str("group")?,
            groups,
            shell: o.str("shell")?,
            home: o.str("home")?,
            comment,
            system: o.bool("system")?.unwrap_or(false),
            create_home: o.bool("create_home")?.unwrap_or(true),
        })
    }

    pub(super) fn probe(&self, i: usize, s: &mut String) {
        s.push_str(&format!("pusr {i} {}\n", q(&self.name)));
    }

    pub(super) fn diff(&self, st: &StepState) -> Result<Planned, DiffError> {
        let n = q(&self.name);
        let entry = st.passwd.clone().ok_or(DiffError::Unprobed("user"))?;
        let mut details = Vec::new();
        let Some((fields, primary, all_groups)) = entry else {
            if !self.present {
                return Ok(Planned::unchanged());
            }
            let mut cmd = String::from("useradd");
            if let Some(uid) = self.uid {
                cmd += &format!(" -u {uid}");
            }
            if let Some(g) = &self.group {
                cmd += &format!(" -g {}", q(g));
            }
            if !self.groups.is_empty() {
                cmd += &format!(" -G {}", q(&self.groups.join(",")));
            }
            if let Some(s) = &self.shell {
                cmd += &format!(" -s {}", q(s));
            }
            if let Some(h) = &self.home {
                cmd += &format!(" -d {}", q(h));
            }
            if let Some(c) = &self.comment {
                cmd += &format!(" -c {}", q(c));
            }
            if self.system {
                cmd += " -r";
            }
            cmd += if self.create_home { " -m" } else { " -M" };
            cmd += &format!(" -- {n}");
            return Ok(Planned {
                action: Action::Create,
                details,
                content: None,
                ops: vec![Op::Call(cmd)],
            });
        };
        if !self.present {
            details.push("remove the account (its home directory is kept)".into());
            return Ok(Planned {
                action: Action::Delete,
                details,
                content: None,
                ops: vec![Op::Call(format!("userdel -- {n}"))],
            });
        }
        // name:x:uid:gid:gecos:home:shell
        let field = |i: usize| fields.get(i).map(String::as_str).unwrap_or("");
        let mut args = String::new();
        if let Some(uid) = self.uid {
            if field(2) != uid.to_string() {
                details.push(format!("uid {} → {uid}", field(2)));
                args += &format!(" -u {uid}");
            }
        }
        if let Some(g) = &self.group {
            if g != &primary && g != field(3) {
                details.push(format!("primary group {primary} → {g}"));
                args += &format!(" -g {}", q(g));
            }
        }
        let missing: Vec<&String> = self
            .groups
            .iter()
            .filter(|g| !all_groups.contains(g))
            .collect();
        if !missing.is_empty() {
            let list: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            details.push(format!("add to {}", list.join(", ")));
            args += &format!(" -a -G {}", q(&list.join(",")));
        }
        if let Some(c) = &self.comment {
            if c != field(4) {
                details.push(format!("comment {:?} → {c:?}", field(4)));
                args += &format!(" -c {}", q(c));
            }
        }
        if let Some(h) = &self.home {
            if h != field(5) {
                details.push(format!("home {} → {h}", field(5)));
                args += &format!(" -d {}", q(h));
            }
        }
        if let Some(s) = &self.shell {
            if s != field(6) {
                details.push(format!("shell {} → {s}", field(6)));
                args += &format!(" -s {}", q(s));
            }
        }
        if args.is_empty() {
            return Ok(Planned::unchanged());
        }
        Ok(Planned {
            action: Action::Update,
            details,
            content: None,
            ops: vec![Op::Call(format!("usermod{args} -- {n}"))],
        })
    }
}

#[derive(Clone, Debug)]
pub struct GroupRes {
    pub name: String,
    pub present: bool,
    pub gid: Option<u32>,
    pub system: bool,
}

impl GroupRes {
    pub(super) fn parse(o: &Opts<'_>) -> Result<Self, OptionError> {
        Ok(GroupRes {
            name: name(o)?,
            present: o.choice("state", &["present", "absent"], "present")? == "present",
            gid: o.u32("gid")?,
            system: o.bool("system")?.unwrap_or(false),
        })
    }

    pub(super) fn probe(&self, i: usize, s: &mut String) {
        s.push_str(&format!("pgrp {i} {}\n", q(&self.name)));
    }

    pub(super) fn diff(&self, st: &StepState) -> Result<Planned, DiffError> {
        let n = q(&self.name);
        let entry = st.group.clone().ok_or(DiffError::Unprobed("group"))?;
        let planned = |action, details: Vec<String>, cmd: String| Planned {
            action,
            details,
            content: None,
            ops: vec![Op::Call(cmd)],
        };
        Ok(match (entry, self.present) {
            (None, false) => Planned::unchanged(),
            (None, true) => {
                let mut cmd = String::from("groupadd");
                if let Some(gid) = self.gid {
                    cmd += &format!(" -g {gid}");
                }
                if self.system {
                    cmd += " -r";
                }
                planned(Action::Create, vec![], format!("{cmd} -- {n}"))
            }
            (Some(_), false) => planned(Action::Delete, vec![], format!("groupdel -- {n}")),
            (Some(fields), true) => match self.gid {
                Some(gid) if fields.get(2).map(String::as_str) != Some(&gid.to_string()) => {
                    planned(
                        Action::Update,
                        vec![format!(
                            "gid {} → {gid}",
                            fields.get(2).cloned().unwrap_or_default()
                        )],
                        format!("groupmod -g {gid} -- {n}"),
                    )
                }
                _ => Planned::unchanged(),
            },
        })
    }
}
