//! Ansible's module names and options mapped onto picaops's modules: what a task written for
//! Ansible keeps as it is, what picaops reads under another name, and what it refuses because
//! the two tools would do different things.
//!
//! The rule is the one the README's table states: an Ansible name or option is accepted only
//! where picaops does exactly what Ansible would; everywhere else the task is refused at load
//! time with what differs and what to write instead. Nothing is silently ignored.

use serde_json::Value;

use crate::modules::{self, ModuleSpec};

/// A value an Ansible option may keep because it is what picaops does anyway.
#[derive(Debug, Clone, Copy)]
pub enum Same {
    Bool(bool),
    Text(&'static str),
    /// Any value: the option changes nothing picaops does (`cache_valid_time`: picaops refreshes
    /// the package lists only when it installs, so they are never older than the run).
    Any,
}

/// One Ansible module as picaops reads it.
#[derive(Debug)]
pub struct Alias {
    /// Ansible's short name (`lineinfile`); `ansible.builtin.` and `ansible.legacy.` may precede it.
    pub ansible: &'static str,
    /// The picaops module that does the same.
    pub ours: &'static str,
    /// Ansible's names of picaops options (`dest` for `path`...).
    pub renames: &'static [(&'static str, &'static str)],
    /// Ansible options accepted only with the value that is picaops's behaviour, then dropped.
    pub same: &'static [(&'static str, Same, &'static str)],
    /// Ansible options picaops does not have, with what it does instead and what to write.
    pub differ: &'static [(&'static str, &'static str)],
    /// `(a, b)`: under Ansible's name, option `a` means what picaops does only when `b` is also
    /// written (with the value `same` accepts): Ansible's default for `b` differs from picaops.
    pub needs: &'static [(&'static str, &'static str)],
}

/// Options of Ansible's shared file fragment (SELinux, attributes, validation) picaops has none of.
const FILE_COMMON: &[(&str, &str)] = &[
    ("seuser", "picaops sets no SELinux context"),
    ("serole", "picaops sets no SELinux context"),
    ("setype", "picaops sets no SELinux context"),
    ("selevel", "picaops sets no SELinux context"),
    ("attributes", "picaops sets no chattr attributes; use a `command` task with `unless`"),
    ("attr", "picaops sets no chattr attributes; use a `command` task with `unless`"),
    ("unsafe_writes", "picaops always writes files atomically (a temporary file, then rename)"),
    ("validate", "picaops does not run a validation command before writing; run the check in a `command` task notified by this one, or validate the file on the workstation"),
    ("backup", "picaops keeps no backup copy of the old file; the plan shows the diff before apply"),
];

const BACKUP_FALSE: (&str, Same, &str) = ("backup", Same::Bool(false), "");
const FORCE_TRUE: (&str, Same, &str) = (
    "force",
    Same::Bool(true),
    "picaops always replaces a file's content by the desired one; to write a file only when it is missing, use a `command` task with `creates:`",
);

pub static ALIASES: &[Alias] = &[
    Alias {
        ansible: "file",
        ours: "file",
        renames: &[("dest", "path"), ("name", "path")],
        same: &[
            ("recurse", Same::Bool(false), "picaops sets the mode and owner of the path itself, not of what is under it; use a `command` task (`chown -R`) with `unless`"),
            ("force", Same::Bool(false), "picaops never replaces a file or directory by a link; remove it first (`state: absent`)"),
            BACKUP_FALSE,
        ],
        differ: &[
            ("follow", "picaops reads and changes the path itself; leave `follow` out"),
            ("modification_time", "picaops does not set timestamps; use a `command` task (`touch -d`)"),
            ("modification_time_format", "picaops does not set timestamps"),
            ("access_time", "picaops does not set timestamps; use a `command` task (`touch -a -d`)"),
            ("access_time_format", "picaops does not set timestamps"),
        ],
        needs: &[],
    },
    Alias {
        ansible: "copy",
        ours: "copy",
        renames: &[],
        same: &[
            FORCE_TRUE,
            BACKUP_FALSE,
            ("remote_src", Same::Bool(false), "picaops copies from the workstation's `files/` only; to copy a file that is already on the host, use a `command` task (`cp`) with `creates:`"),
            ("follow", Same::Bool(false), "picaops writes the destination path itself"),
            ("decrypt", Same::Bool(true), "picaops reads secrets from its secret store, not from Ansible Vault files"),
        ],
        differ: &[
            ("directory_mode", "picaops copies one file per task; create directories with `file: {state: directory}`"),
            ("local_follow", "picaops reads the source as the workstation's file system gives it"),
            ("checksum", "picaops compares the whole content itself (SHA-256) before writing"),
        ],
        needs: &[],
    },
    Alias {
        ansible: "template",
        ours: "template",
        renames: &[],
        same: &[
            FORCE_TRUE,
            BACKUP_FALSE,
            ("follow", Same::Bool(false), "picaops writes the destination path itself"),
            ("trim_blocks", Same::Bool(true), "picaops reads this from the template's first line, as Ansible also does: `#jinja2: trim_blocks: False`"),
            ("lstrip_blocks", Same::Bool(false), "picaops reads this from the template's first line, as Ansible also does: `#jinja2: lstrip_blocks: True`"),
            ("newline_sequence", Same::Text("\n"), "picaops writes template files with \\n line ends"),
            ("output_encoding", Same::Text("utf-8"), "picaops writes template files in UTF-8"),
        ],
        differ: &[
            ("block_start_string", "picaops templates use Jinja's default delimiters"),
            ("block_end_string", "picaops templates use Jinja's default delimiters"),
            ("variable_start_string", "picaops templates use Jinja's default delimiters"),
            ("variable_end_string", "picaops templates use Jinja's default delimiters"),
            ("comment_start_string", "picaops templates use Jinja's default delimiters"),
            ("comment_end_string", "picaops templates use Jinja's default delimiters"),
        ],
        needs: &[],
    },
    Alias {
        ansible: "lineinfile",
        ours: "line",
        renames: &[("dest", "path"), ("destfile", "path"), ("name", "path"), ("regex", "regexp"), ("value", "line")],
        same: &[
            ("insertafter", Same::Text("EOF"), "picaops adds a missing line at the end of the file; to put it elsewhere, write the whole file with `copy` or `template`"),
            ("backrefs", Same::Bool(false), "picaops writes `line` as it is, without regexp back-references"),
            ("firstmatch", Same::Bool(false), "picaops replaces the last line `regexp` matches, as Ansible does without `firstmatch`"),
            BACKUP_FALSE,
        ],
        differ: &[
            ("insertbefore", "picaops adds a missing line at the end of the file; to put it elsewhere, write the whole file with `copy` or `template`"),
            ("search_string", "write the string as a `regexp:` (escape what regular expressions treat as special)"),
        ],
        needs: &[],
    },
    Alias {
        ansible: "apt",
        ours: "package",
        renames: &[("pkg", "name"), ("package", "name"), ("update-cache", "update_cache")],
        same: &[
            ("cache_valid_time", Same::Any, ""),
            ("install_recommends", Same::Bool(true), "picaops installs what apt's configuration installs (Debian: recommended packages too); set APT::Install-Recommends in a file under /etc/apt/apt.conf.d with `copy`"),
            ("install-recommends", Same::Bool(true), "picaops installs what apt's configuration installs (Debian: recommended packages too)"),
            ("purge", Same::Bool(false), "picaops removes packages with `apt-get remove` and keeps their configuration files"),
            ("autoremove", Same::Bool(false), "picaops removes only the packages named; run `apt-get autoremove` in a `command` task"),
            ("upgrade", Same::Text("no"), "picaops upgrades only packages named with `state: latest`; a whole-system upgrade is unattended-upgrades' work (playbooks/)"),
            ("force_apt_get", Same::Bool(true), "picaops always uses apt-get"),
            ("dpkg_options", Same::Text("force-confdef,force-confold"), "picaops always runs dpkg with --force-confdef --force-confold"),
            ("force", Same::Bool(false), "picaops never forces apt (no unauthenticated or downgraded packages)"),
            ("allow_unauthenticated", Same::Bool(false), "picaops installs authenticated packages only"),
            ("only_upgrade", Same::Bool(false), "picaops installs a missing package named `state: latest`"),
        ],
        differ: &[
            ("deb", "picaops installs packages from the configured repositories only; publish the .deb in a repository, or use a `command` task"),
            ("default_release", "pin the release with an apt preferences file (`copy` into /etc/apt/preferences.d)"),
            ("default-release", "pin the release with an apt preferences file (`copy` into /etc/apt/preferences.d)"),
            ("allow_downgrade", "picaops never downgrades a package"),
            ("allow_change_held_packages", "picaops leaves held packages held"),
            ("autoclean", "use a `command` task (`apt-get autoclean`)"),
            ("clean", "use a `command` task (`apt-get clean`)"),
            ("policy_rc_d", "picaops lets packages start their services as Debian does; stop them with a `service` task"),
            ("lock_timeout", "picaops waits for apt's lock as apt-get does"),
            ("update_cache_retries", "picaops runs `apt-get update` once; run it in a `command` task with `retries` to retry"),
            ("update_cache_retry_max_delay", "picaops runs `apt-get update` once"),
            ("fail_on_autoremove", "picaops never autoremoves"),
            ("auto_install_module_deps", "picaops needs nothing on the host beyond apt-get"),
        ],
        needs: &[],
    },
    Alias {
        ansible: "package",
        ours: "package",
        renames: &[],
        same: &[("use", Same::Text("auto"), "picaops manages Debian packages with apt-get"), ("use", Same::Text("apt"), "")],
        differ: &[],
        needs: &[],
    },
    Alias {
        ansible: "systemd_service",
        ours: "service",
        renames: &[("service", "name"), ("unit", "name")],
        same: SYSTEMD_SAME,
        differ: SYSTEMD_DIFFER,
        needs: &[],
    },
    Alias {
        ansible: "systemd",
        ours: "service",
        renames: &[("service", "name"), ("unit", "name")],
        same: SYSTEMD_SAME,
        differ: SYSTEMD_DIFFER,
        needs: &[],
    },
    Alias {
        ansible: "service",
        ours: "service",
        renames: &[],
        same: &[("use", Same::Text("auto"), "picaops manages systemd units"), ("use", Same::Text("systemd"), "")],
        differ: &[
            ("arguments", "picaops runs no init script arguments; put them in the unit (`unit` module)"),
            ("args", "picaops runs no init script arguments; put them in the unit (`unit` module)"),
            ("pattern", "picaops asks systemd whether a unit runs, not the process table"),
            ("runlevel", "picaops manages systemd units, which have no runlevels"),
            ("sleep", "picaops restarts with `systemctl restart`, which waits for the stop"),
        ],
        needs: &[],
    },
    Alias {
        ansible: "user",
        ours: "user",
        renames: &[("createhome", "create_home"), ("user", "name")],
        same: &[
            ("append", Same::Bool(true), "picaops adds the supplementary `groups` and never removes one a person or a package added; remove a group with a `command` task (`gpasswd -d`)"),
            ("move_home", Same::Bool(false), "picaops does not move home directories; use a `command` task (`usermod -m -d`)"),
            ("non_unique", Same::Bool(false), "picaops refuses duplicate uids"),
            ("local", Same::Bool(false), "picaops manages accounts with useradd/usermod"),
        ],
        differ: &[
            ("password", "picaops writes no password hashes: people log in with SSH keys from the directory (`picaops access`); for a local password, a `command` task with `no_log: true`"),
            ("update_password", "picaops writes no password hashes"),
            ("password_lock", "picaops writes no password hashes; use a `command` task (`usermod -L`)"),
            ("remove", "picaops removes the account and keeps its home; remove the home with `file: {state: absent}`"),
            ("force", "picaops removes the account only when nobody is logged in as it"),
            ("generate_ssh_key", "picaops does not make keys on hosts; access keys come from the directory (`picaops access`)"),
            ("ssh_key_bits", "picaops does not make keys on hosts"),
            ("ssh_key_type", "picaops does not make keys on hosts"),
            ("ssh_key_file", "picaops does not make keys on hosts"),
            ("ssh_key_comment", "picaops does not make keys on hosts"),
            ("ssh_key_passphrase", "picaops does not make keys on hosts"),
            ("expires", "end dates of people's access live in the directory (`picaops access grant --until`)"),
            ("skeleton", "picaops creates homes from /etc/skel"),
            ("umask", "picaops creates homes with useradd's defaults"),
            ("hidden", "a macOS option"),
            ("seuser", "picaops sets no SELinux context"),
            ("login_class", "a BSD option"),
            ("profile", "a Solaris option"),
            ("authorization", "a Solaris option"),
            ("role", "a Solaris option"),
            ("password_expire_max", "picaops writes no password ageing; use a `command` task (`chage`)"),
            ("password_expire_min", "picaops writes no password ageing; use a `command` task (`chage`)"),
            ("password_expire_warn", "picaops writes no password ageing; use a `command` task (`chage`)"),
            ("password_expire_account_disable", "picaops writes no password ageing; use a `command` task (`chage`)"),
            ("uid_min", "give the `uid` itself, or let useradd choose"),
            ("uid_max", "give the `uid` itself, or let useradd choose"),
        ],
        // Ansible without `append: true` takes the user out of every group not listed.
        needs: &[("groups", "append")],
    },
    Alias {
        ansible: "group",
        ours: "group",
        renames: &[],
        same: &[
            ("non_unique", Same::Bool(false), "picaops refuses duplicate gids"),
            ("local", Same::Bool(false), "picaops manages groups with groupadd/groupmod"),
        ],
        differ: &[
            ("force", "picaops does not remove a group that is still some user's primary group"),
            ("gid_min", "give the `gid` itself, or let groupadd choose"),
            ("gid_max", "give the `gid` itself, or let groupadd choose"),
        ],
        needs: &[],
    },
    Alias {
        ansible: "command",
        ours: "command",
        renames: &[],
        same: &[("expand_argument_vars", Same::Bool(false), "picaops passes `argv` words as written")],
        differ: COMMAND_DIFFER,
        needs: &[],
    },
    Alias {
        ansible: "shell",
        ours: "shell",
        renames: &[],
        same: &[("executable", Same::Text("/bin/sh"), "picaops runs shell commands with /bin/sh; to use bash, write `cmd: bash -c '…'`")],
        differ: COMMAND_DIFFER,
        needs: &[],
    },
];

const SYSTEMD_SAME: &[(&str, Same, &str)] = &[
    ("daemon_reload", Same::Bool(false), "picaops reloads systemd itself after a unit file written by the `unit` module changed; write the unit file with `unit` instead of `copy`"),
    ("daemon-reload", Same::Bool(false), "picaops reloads systemd itself after a unit file written by the `unit` module changed; write the unit file with `unit` instead of `copy`"),
    ("scope", Same::Text("system"), "picaops manages system units only"),
    ("no_block", Same::Bool(false), "picaops waits for each systemctl call"),
    ("daemon_reexec", Same::Bool(false), "use a `command` task (`systemctl daemon-reexec`)"),
    ("daemon-reexec", Same::Bool(false), "use a `command` task (`systemctl daemon-reexec`)"),
];

const SYSTEMD_DIFFER: &[(&str, &str)] = &[
    ("masked", "picaops does not mask or unmask units; use a `command` task (`systemctl mask`) with `unless`"),
    ("force", "picaops does not overwrite unit links"),
];

const COMMAND_DIFFER: &[(&str, &str)] = &[
    ("stdin", "picaops runs commands with no input; pipe it in a `shell` task (`printf … | cmd`), with `no_log: true` for secrets"),
    ("stdin_add_newline", "picaops runs commands with no input"),
    ("strip_empty_ends", "picaops registers stdout and stdout_lines as Ansible does with its default"),
];

/// Ansible modules picaops has no module for, and what to use instead.
const NO_MODULE: &[(&str, &str)] = &[
    ("blockinfile", "write the whole file with `copy` or `template`, or one `line` task per line"),
    ("replace", "use `line` with `regexp`, or write the whole file with `template`"),
    ("apt_repository", "`copy` a .sources file into /etc/apt/sources.list.d, then a `package` task with `update_cache: true`"),
    ("deb822_repository", "`copy` a .sources file into /etc/apt/sources.list.d, then a `package` task with `update_cache: true`"),
    ("apt_key", "`copy` the key into /etc/apt/keyrings and name it in the .sources file (`Signed-By:`)"),
    ("cron", "a systemd timer: two `unit` tasks (the .service and the .timer), then `service: {enabled: true, state: started}`"),
    ("get_url", "a `command` task (`curl -fsSLo DEST URL`) with `creates:`; check the checksum in the same command"),
    ("unarchive", "a `command` task (`tar -xf`) with `creates:`"),
    ("git", "a `command` task (`git clone`) with `creates:`"),
    ("debug", "`register` a result and read it in the JSON report (`-o json`)"),
    ("set_fact", "set variables in the inventory or in `vars:`"),
    ("include_tasks", "list the playbook files on the command line (`picaops apply a.yml b.yml`)"),
    ("import_tasks", "list the playbook files on the command line (`picaops apply a.yml b.yml`)"),
    ("systemd_unit", "picaops's `unit` module writes a unit file and sets its state"),
    ("authorized_key", "people's keys come from the directory: `picaops access grant`"),
    ("hostname", "a `copy` of /etc/hostname and a `command` task (`hostname -F /etc/hostname`)"),
    ("sysctl", "`copy` a file into /etc/sysctl.d and a `command` task (`sysctl --system`) notified by it"),
    ("mount", "a systemd .mount unit with the `unit` module"),
    ("stat", "the `creates:`/`removes:`/`unless:` guards of `command`, or `when:` on a registered command"),
    ("pip", "a Debian package (`package`), or a `command` task creating a venv with `creates:`"),
    ("docker_compose", "services are picaops's own: declare them in the inventory (`services:`) and run `picaops apply`"),
    ("docker_compose_v2", "services are picaops's own: declare them in the inventory (`services:`) and run `picaops apply`"),
];

/// Prefixes Ansible accepts before a builtin module's name.
const PREFIXES: &[&str] = &["ansible.builtin.", "ansible.legacy."];

/// A module key of a task, resolved.
pub struct Resolved {
    pub spec: &'static ModuleSpec,
    /// Ansible's view of it, when Ansible has a module of that name.
    pub alias: Option<&'static Alias>,
    /// The name as written differs from picaops's (`lineinfile`, `ansible.builtin.copy`).
    pub renamed: bool,
}

/// What picaops runs for a task's module key: its own module, or the one an Ansible name maps to.
pub fn resolve(written: &str) -> Option<Resolved> {
    if let Some(spec) = modules::spec(written) {
        return Some(Resolved {
            spec,
            alias: ALIASES.iter().find(|a| a.ansible == written),
            renamed: false,
        });
    }
    let short = short_name(written);
    let alias = ALIASES.iter().find(|a| a.ansible == short)?;
    Some(Resolved {
        spec: modules::spec(alias.ours)?,
        alias: Some(alias),
        renamed: true,
    })
}

fn short_name(written: &str) -> &str {
    PREFIXES
        .iter()
        .find_map(|p| written.strip_prefix(p))
        .unwrap_or(written)
}

/// For a module key picaops does not know: what to write instead, when it is an Ansible module.
pub fn no_module_help(written: &str) -> Option<String> {
    let short = short_name(written);
    NO_MODULE
        .iter()
        .find(|(a, _)| *a == short)
        .map(|(_, instead)| format!("picaops has no `{short}` module: {instead}"))
}

/// What becomes of one option of a task whose module key resolved to `r`.
#[derive(Debug, PartialEq)]
pub enum OptionFate {
    /// A picaops option, under this name.
    Keep(&'static str),
    /// An Ansible option with picaops's behaviour as its value: dropped.
    Drop,
    /// Refused: the message and what to do.
    Refuse(String, String),
    /// Not an option of either tool.
    Unknown,
}

impl Resolved {
    /// The option `key` with the value `value` as written.
    pub fn option(&self, key: &str, value: &Value) -> OptionFate {
        let spec = self.spec;
        let renamed = self
            .alias
            .and_then(|a| a.renames.iter().find(|(from, _)| *from == key))
            .map(|(_, to)| *to);
        if let Some(ours) = spec.options.iter().find(|o| **o == renamed.unwrap_or(key)) {
            return OptionFate::Keep(ours);
        }
        let Some(alias) = self.alias else {
            return OptionFate::Unknown;
        };
        let same: Vec<_> = alias.same.iter().filter(|(k, _, _)| *k == key).collect();
        if let Some((_, _, why)) = same.first() {
            if same.iter().any(|(_, want, _)| matches_same(*want, value)) {
                return OptionFate::Drop;
            }
            let accepted = same
                .iter()
                .map(|(_, want, _)| describe(*want))
                .collect::<Vec<_>>()
                .join(" or ");
            return OptionFate::Refuse(
                self.differs(key, &format!("picaops accepts only `{key}: {accepted}`")),
                why.to_string(),
            );
        }
        let why = alias
            .differ
            .iter()
            .chain(if is_file_module(spec) {
                FILE_COMMON
            } else {
                &[]
            })
            .find(|(k, _)| *k == key)
            .map(|(_, why)| *why);
        match why {
            Some(why) => OptionFate::Refuse(
                self.differs(key, "picaops has no such option"),
                why.to_string(),
            ),
            None => OptionFate::Unknown,
        }
    }

    fn differs(&self, key: &str, what: &str) -> String {
        if self.renamed {
            format!(
                "picaops calls this module `{}`; these options differ: `{key}` ({what})",
                self.spec.name
            )
        } else {
            format!(
                "Ansible's option `{key}` of `{}` differs: {what}",
                self.spec.name
            )
        }
    }

    /// Options that must be written together under Ansible's name, with the message when one is
    /// missing: `(option, message, help)`.
    pub fn missing_companions(&self, written: &[&str]) -> Vec<(&'static str, String, String)> {
        let Some(alias) = self.alias.filter(|_| self.renamed) else {
            return Vec::new();
        };
        alias
            .needs
            .iter()
            .filter(|(a, b)| written.contains(a) && !written.contains(b))
            .map(|(a, b)| {
                let why = alias
                    .same
                    .iter()
                    .find(|(k, _, _)| k == b)
                    .map(|(_, want, why)| (describe(*want), *why))
                    .unwrap_or_default();
                (
                    *a,
                    format!(
                        "picaops calls this module `{}`; these options differ: `{a}` without `{b}: {}` means something else in Ansible",
                        self.spec.name, why.0
                    ),
                    format!("write `{b}: {}`: {}", why.0, why.1),
                )
            })
            .collect()
    }
}

fn is_file_module(spec: &ModuleSpec) -> bool {
    ["file", "copy", "template", "line"].contains(&spec.name)
}

fn matches_same(want: Same, value: &Value) -> bool {
    match (want, value) {
        (Same::Any, _) => true,
        (Same::Bool(b), v) => modules::boolean(v) == Some(b),
        (Same::Text(t), Value::String(s)) => {
            s == t || modules::boolean(value).is_some_and(|b| t == if b { "yes" } else { "no" })
        }
        (Same::Text(t), Value::Bool(b)) => t == if *b { "yes" } else { "no" },
        _ => false,
    }
}

fn describe(want: Same) -> String {
    match want {
        Same::Bool(b) => b.to_string(),
        Same::Text(t) => format!("{t:?}"),
        Same::Any => "any value".into(),
    }
}

/// Options Ansible reads out of a `command`/`shell` line (`touch /x creates=/x`).
const INLINE_OPTIONS: &[&str] = &[
    "creates",
    "removes",
    "chdir",
    "executable",
    "stdin",
    "stdin_add_newline",
    "strip_empty_ends",
    "expand_argument_vars",
    "warn",
];

/// A `key=value` word of a free-form command line that Ansible would take as an option, where
/// picaops would pass it to the command: `(byte offset, option)`.
pub fn inline_option(line: &str) -> Option<(usize, &'static str)> {
    let mut quote = None;
    let mut word_start = Some(0);
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                word_start = None;
            }
            None if c.is_whitespace() => word_start = Some(i + c.len_utf8()),
            None => {
                if let Some(start) = word_start {
                    if let Some(opt) = INLINE_OPTIONS
                        .iter()
                        .find(|o| line[start..].starts_with(&format!("{o}=")))
                    {
                        return Some((start, opt));
                    }
                    word_start = None;
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ansible_names_resolve_to_picaops_modules() {
        for (written, ours) in [
            ("lineinfile", "line"),
            ("ansible.builtin.lineinfile", "line"),
            ("apt", "package"),
            ("ansible.builtin.apt", "package"),
            ("ansible.legacy.systemd", "service"),
            ("systemd_service", "service"),
            ("ansible.builtin.copy", "copy"),
            ("ansible.builtin.template", "template"),
            ("ansible.builtin.file", "file"),
            ("ansible.builtin.command", "command"),
            ("ansible.builtin.shell", "shell"),
            ("ansible.builtin.user", "user"),
            ("ansible.builtin.group", "group"),
            ("ansible.builtin.service", "service"),
            ("ansible.builtin.package", "package"),
        ] {
            let r = resolve(written).unwrap_or_else(|| panic!("{written}"));
            assert_eq!(r.spec.name, ours, "{written}");
            assert!(r.renamed, "{written}");
        }
        let own = resolve("copy").unwrap();
        assert!(!own.renamed && own.alias.is_some());
        assert!(resolve("unit").unwrap().alias.is_none());
        assert!(resolve("ansible.builtin.blockinfile").is_none());
        assert!(
            resolve("ansible.builtin.unit").is_none(),
            "picaops names take no prefix"
        );
        assert!(no_module_help("ansible.builtin.blockinfile").is_some());
    }

    #[test]
    fn options_are_kept_renamed_dropped_or_refused() {
        let r = resolve("lineinfile").unwrap();
        assert_eq!(r.option("dest", &json!("/x")), OptionFate::Keep("path"));
        assert_eq!(r.option("regexp", &json!("^a")), OptionFate::Keep("regexp"));
        assert_eq!(r.option("insertafter", &json!("EOF")), OptionFate::Drop);
        assert!(
            matches!(r.option("insertafter", &json!("^#")), OptionFate::Refuse(m, _) if m.contains("picaops calls this module `line`; these options differ: `insertafter`"))
        );
        assert!(matches!(
            r.option("insertbefore", &json!("BOF")),
            OptionFate::Refuse(..)
        ));
        assert!(matches!(
            r.option("validate", &json!("x %s")),
            OptionFate::Refuse(..)
        ));
        assert_eq!(r.option("bogus", &json!(1)), OptionFate::Unknown);
        let apt = resolve("ansible.builtin.apt").unwrap();
        assert_eq!(
            apt.option("update_cache", &json!("yes")),
            OptionFate::Keep("update_cache")
        );
        assert_eq!(
            apt.option("install_recommends", &json!("yes")),
            OptionFate::Drop
        );
        assert!(matches!(
            apt.option("install_recommends", &json!(false)),
            OptionFate::Refuse(..)
        ));
        assert_eq!(
            apt.option("upgrade", &json!(false)),
            OptionFate::Drop,
            "`upgrade: no` is YAML 1.1's false"
        );
        let own = resolve("copy").unwrap();
        assert!(
            matches!(own.option("backup", &json!(true)), OptionFate::Refuse(m, _) if m.starts_with("Ansible's option `backup` of `copy`"))
        );
        assert_eq!(own.option("backup", &json!("no")), OptionFate::Drop);
    }

    #[test]
    fn ansible_user_groups_need_append() {
        let r = resolve("ansible.builtin.user").unwrap();
        assert_eq!(r.missing_companions(&["name", "groups"]).len(), 1);
        assert!(r
            .missing_companions(&["name", "groups", "append"])
            .is_empty());
        // picaops's own `user` adds groups: no companion needed.
        assert!(resolve("user")
            .unwrap()
            .missing_companions(&["groups"])
            .is_empty());
    }

    #[test]
    fn inline_options_of_a_command_line_are_found_outside_quotes() {
        assert_eq!(inline_option("touch /x creates=/x"), Some((9, "creates")));
        assert_eq!(inline_option("chdir=/srv make"), Some((0, "chdir")));
        assert_eq!(inline_option("echo 'creates=/x'"), None);
        assert_eq!(inline_option("echo \"a creates=/x\""), None);
        assert_eq!(inline_option("env notcreates=1 true"), None);
        assert_eq!(inline_option("ls -l"), None);
    }
}
