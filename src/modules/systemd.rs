//! The `package` (apt), `unit` and `service` (systemd) modules.
//!
//! Package operations are batched by the engine into one `apt-get` call per host; unit file
//! changes into one `daemon-reload` before the next systemctl call. `restarted`/`reloaded` have no
//! state to compare: they act at every run (use them in handlers).

use super::files::ContentRes;
use super::probe::{PackageState, StepState};
use super::{q, Action, Attrs, DiffError, Op, OptionError, Opts, Planned, Sources};

#[derive(Clone, Debug)]
pub struct PackageRes {
    pub names: Vec<String>,
    /// `present`, `absent` or `latest`.
    pub state: String,
    pub update_cache: bool,
}

fn valid_package(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.:_=".contains(c))
        && !name.starts_with('-')
}

impl PackageRes {
    pub(super) fn parse(o: &Opts<'_>) -> Result<Self, OptionError> {
        let names = o.list("name")?.unwrap_or_default();
        if names.is_empty() {
            return Err(OptionError::new("name", "`name` lists no package"));
        }
        if let Some(bad) = names.iter().find(|n| !valid_package(n)) {
            return Err(OptionError::new(
                "name",
                format!("{bad:?} is not a Debian package name"),
            ));
        }
        Ok(PackageRes {
            names,
            state: o.choice("state", &["present", "absent", "latest"], "present")?,
            update_cache: o.bool("update_cache")?.unwrap_or(false),
        })
    }

    pub(super) fn probe(&self, packages: &mut Vec<String>, candidates: &mut Vec<String>) {
        packages.extend(self.names.iter().cloned());
        if self.state == "latest" {
            candidates.extend(self.names.iter().cloned());
        }
    }

    pub fn diff(&self, have: &PackageState) -> Planned {
        let mut install = Vec::new();
        let mut remove = Vec::new();
        let mut details = Vec::new();
        for name in &self.names {
            let installed = have.installed.get(name);
            match (self.state.as_str(), installed) {
                ("absent", Some(v)) => {
                    details.push(format!("remove {name} {v}"));
                    remove.push(name.clone());
                }
                ("present", None) | ("latest", None) => {
                    details.push(format!("install {name}"));
                    install.push(name.clone());
                }
                ("latest", Some(v)) => match have.candidate.get(name) {
                    Some(c) if c != v => {
                        details.push(format!("upgrade {name} {v} → {c}"));
                        install.push(name.clone());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        if install.is_empty() && remove.is_empty() {
            return Planned::unchanged();
        }
        let action = if !remove.is_empty() && install.is_empty() {
            Action::Delete
        } else if details.iter().all(|d| d.starts_with("install")) {
            Action::Create
        } else {
            Action::Update
        };
        Planned::with(
            action,
            details,
            vec![Op::Packages {
                install,
                remove,
                update_cache: self.update_cache,
            }],
        )
    }
}

fn valid_unit(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.@\\".contains(c))
}

/// What a `service`/`unit` task wants of a running unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitWish {
    pub enabled: Option<bool>,
    /// `started`, `stopped`, `restarted`, `reloaded`.
    pub state: Option<String>,
}

impl UnitWish {
    fn parse(o: &Opts<'_>, states: &[&str]) -> Result<Self, OptionError> {
        let state = match o.str("state")? {
            Some(_) => Some(o.choice("state", states, "started")?),
            None => None,
        };
        Ok(UnitWish {
            enabled: o.bool("enabled")?,
            state,
        })
    }

    /// The systemctl operations for `name`, given `(is-enabled, is-active)` and whether its unit
    /// file changed in this run.
    fn diff(
        &self,
        name: &str,
        unit: Option<&(String, String)>,
        file_changed: bool,
        details: &mut Vec<String>,
        ops: &mut Vec<Op>,
    ) -> Action {
        let (enabled, active) = unit.cloned().unwrap_or_default();
        let mut action = Action::Unchanged;
        let n = q(name);
        if let Some(want) = self.enabled {
            let is = matches!(
                enabled.as_str(),
                "enabled" | "enabled-runtime" | "static" | "alias" | "indirect" | "generated"
            );
            if want && !is {
                details.push(format!(
                    "enable ({})",
                    if enabled.is_empty() {
                        "unknown"
                    } else {
                        &enabled
                    }
                ));
                ops.push(Op::Systemctl(format!("systemctl enable -- {n}")));
                action = Action::Update;
            } else if !want && enabled == "enabled" {
                details.push("disable".into());
                ops.push(Op::Systemctl(format!("systemctl disable -- {n}")));
                action = Action::Update;
            }
        }
        let running = active == "active" || active == "reloading" || active == "activating";
        match self.state.as_deref() {
            Some("started") if !running => {
                details.push(format!(
                    "start ({})",
                    if active.is_empty() {
                        "unknown"
                    } else {
                        &active
                    }
                ));
                ops.push(Op::Systemctl(format!("systemctl start -- {n}")));
                action = Action::Update;
            }
            Some("started") if file_changed => {
                details.push("restart (its unit file changed)".into());
                ops.push(Op::Systemctl(format!("systemctl restart -- {n}")));
                action = Action::Update;
            }
            Some("stopped") if running => {
                details.push("stop".into());
                ops.push(Op::Systemctl(format!("systemctl stop -- {n}")));
                action = Action::Update;
            }
            Some("restarted") => {
                details.push("restart".into());
                ops.push(Op::Systemctl(format!("systemctl restart -- {n}")));
                action = Action::Run;
            }
            Some("reloaded") => {
                details.push("reload".into());
                ops.push(Op::Systemctl(format!("systemctl reload-or-restart -- {n}")));
                action = Action::Run;
            }
            _ => {}
        }
        action
    }
}

/// `service`: the state of an existing unit.
#[derive(Clone, Debug)]
pub struct ServiceRes {
    pub name: String,
    pub wish: UnitWish,
}

impl ServiceRes {
    pub(super) fn parse(o: &Opts<'_>) -> Result<Self, OptionError> {
        let name = o.req_str("name")?;
        if !valid_unit(&name) {
            return Err(OptionError::new(
                "name",
                format!("{name:?} is not a systemd unit name"),
            ));
        }
        let wish = UnitWish::parse(o, &["started", "stopped", "restarted", "reloaded"])?;
        if wish.enabled.is_none() && wish.state.is_none() {
            return Err(OptionError::new(
                "state",
                "say what to ensure: `state:` and/or `enabled:`",
            ));
        }
        Ok(ServiceRes { name, wish })
    }

    pub(super) fn probe(&self, i: usize, s: &mut String) {
        s.push_str(&format!("punit {i} {}\n", q(&self.name)));
    }

    pub(super) fn diff(&self, st: &StepState) -> Planned {
        let mut details = Vec::new();
        let mut ops = Vec::new();
        let action = self
            .wish
            .diff(&self.name, st.unit.as_ref(), false, &mut details, &mut ops);
        Planned::with(action, details, ops)
    }
}

/// `unit`: a unit file in /etc/systemd/system (optional) and the unit's state.
#[derive(Clone, Debug)]
pub struct UnitRes {
    pub name: String,
    pub file: Option<ContentRes>,
    pub wish: UnitWish,
}

impl UnitRes {
    pub(super) fn parse(o: &Opts<'_>, src: &Sources<'_>) -> Result<Self, OptionError> {
        let name = o.req_str("name")?;
        if !valid_unit(&name) || !name.contains('.') {
            return Err(OptionError::new(
                "name",
                format!("{name:?} is not a systemd unit file name (like `backup.service` or `backup.timer`)"),
            ));
        }
        let content = match (o.str("content")?, o.str("src")?) {
            (Some(_), Some(_)) => {
                return Err(OptionError::new("src", "give `content` or `src`, not both"))
            }
            (Some(c), None) => Some(c.into_bytes()),
            (None, Some(s)) => {
                Some((src.template_src)(&s).map_err(|e| OptionError::new("src", e.to_string()))?)
            }
            (None, None) => None,
        };
        let file = content.map(|c| {
            ContentRes::new(
                format!("/etc/systemd/system/{name}"),
                c,
                Attrs {
                    mode: Some(0o644),
                    owner: Some("root".into()),
                    group: Some("root".into()),
                },
            )
        });
        Ok(UnitRes {
            name,
            file,
            wish: UnitWish::parse(o, &["started", "stopped", "restarted"])?,
        })
    }

    pub(super) fn probe(&self, i: usize, s: &mut String) {
        if let Some(f) = &self.file {
            f.probe(i, s);
        }
        s.push_str(&format!("punit {i} {}\n", q(&self.name)));
    }

    pub(super) fn diff(&self, st: &StepState) -> Result<Planned, DiffError> {
        let mut planned = match &self.file {
            Some(f) => f.diff(st)?,
            None => Planned::unchanged(),
        };
        let file_changed = planned.content.is_some();
        if !planned.ops.is_empty() {
            planned.ops.push(Op::UnitFileChanged);
        }
        // A unit file just written is unknown to systemd until the reload: judge its state as new.
        let unit = if st.stat.is_none() && self.file.is_some() {
            None
        } else {
            st.unit.as_ref()
        };
        let action = self.wish.diff(
            &self.name,
            unit,
            file_changed,
            &mut planned.details,
            &mut planned.ops,
        );
        if planned.action == Action::Unchanged {
            planned.action = action;
        }
        Ok(planned)
    }
}
