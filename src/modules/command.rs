//! The `command` and `shell` modules: run something, unless a guard says it is already done.
//!
//! `creates` (a path that exists), `removes` (a path that does not) and `unless` (a read-only
//! command that succeeds) are checked in the read round trip, so the plan knows whether the
//! command runs. A command that runs is reported as changed; its output is known only then.

use super::probe::StepState;
use super::{q, Action, Op, OptionError, Opts, Planned};

#[derive(Clone, Debug)]
pub enum CommandLine {
    Argv(Vec<String>),
    Shell(String),
}

#[derive(Clone, Debug)]
pub struct CommandRes {
    pub line: CommandLine,
    pub chdir: Option<String>,
    pub creates: Option<String>,
    pub removes: Option<String>,
    pub unless: Option<String>,
}

/// A `cmd:` line that does not split into words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("a ' quote is not closed")]
    SingleQuote,
    #[error("a \" quote is not closed")]
    DoubleQuote,
    #[error("the line ends with \\")]
    Backslash,
}

/// Splits a command line into words the way a shell would for plain words and quotes, without
/// expanding anything (`command` runs no shell).
pub fn split_words(line: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(SplitError::SingleQuote),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => cur.push(c),
                            None => return Err(SplitError::Backslash),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(SplitError::DoubleQuote),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err(SplitError::Backslash),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

impl CommandRes {
    pub(super) fn parse(
        module: &str,
        free: Option<&str>,
        o: &Opts<'_>,
    ) -> Result<Self, OptionError> {
        let cmd = match free {
            Some(f) => Some(f.to_string()),
            None => o.str("cmd")?,
        };
        let line = if module == "shell" {
            CommandLine::Shell(
                cmd.filter(|c| !c.trim().is_empty())
                    .ok_or_else(|| OptionError::new("cmd", "`shell` needs a command line"))?,
            )
        } else {
            let argv = match (cmd, o.list("argv")?) {
                (Some(_), Some(_)) => {
                    return Err(OptionError::new("argv", "give `cmd` or `argv`, not both"))
                }
                (Some(c), None) => {
                    split_words(&c).map_err(|e| OptionError::new("cmd", e.to_string()))?
                }
                (None, Some(a)) => a,
                (None, None) => {
                    return Err(OptionError::new("cmd", "`command` needs `cmd` or `argv`"))
                }
            };
            if argv.is_empty() {
                return Err(OptionError::new("cmd", "the command is empty"));
            }
            if let Some(op) = argv
                .iter()
                .find(|w| ["|", ">", "<", "&&", "||", ";", ">>", "2>&1"].contains(&w.as_str()))
            {
                return Err(OptionError::new(
                    "cmd",
                    format!("`{op}` means nothing without a shell, and `command` runs none: use the `shell` module"),
                ));
            }
            CommandLine::Argv(argv)
        };
        Ok(CommandRes {
            line,
            chdir: o.str("chdir")?,
            creates: o.str("creates")?,
            removes: o.str("removes")?,
            unless: o.str("unless")?,
        })
    }

    pub fn label(&self) -> String {
        match &self.line {
            CommandLine::Argv(a) => crate::transport::quote::join(a),
            CommandLine::Shell(s) => s.lines().next().unwrap_or_default().to_string(),
        }
    }

    pub(super) fn probe(&self, i: usize, s: &mut String) {
        s.push_str(&format!(
            "pguard {i} {} {} {}\n",
            q(self.creates.as_deref().unwrap_or("")),
            q(self.removes.as_deref().unwrap_or("")),
            q(self.unless.as_deref().unwrap_or(""))
        ));
    }

    pub(super) fn diff(&self, st: &StepState) -> Planned {
        let reason = match st.guard.as_deref() {
            Some("creates") => Some(format!("{} exists", self.creates.as_deref().unwrap_or(""))),
            Some("removes") => Some(format!(
                "{} does not exist",
                self.removes.as_deref().unwrap_or("")
            )),
            Some("unless") => Some("its `unless` check succeeded".to_string()),
            _ => None,
        };
        if let Some(reason) = reason {
            let mut p = Planned::unchanged();
            p.action = Action::Skip;
            p.details.push(reason);
            return p;
        }
        let chdir = q(self.chdir.as_deref().unwrap_or(""));
        let call = match &self.line {
            CommandLine::Argv(a) => {
                format!("run_argv {chdir} {}", crate::transport::quote::join(a))
            }
            CommandLine::Shell(s) => format!("run_shell {chdir} {}", q(s)),
        };
        Planned {
            action: Action::Run,
            details: Vec::new(),
            content: None,
            ops: vec![Op::Command(call)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_words;

    #[test]
    fn splits_like_a_shell_without_expanding() {
        let cases: &[(&str, &[&str])] = &[
            ("ls -l /srv", &["ls", "-l", "/srv"]),
            ("echo 'a b' \"c d\" e\\ f", &["echo", "a b", "c d", "e f"]),
            ("echo $HOME", &["echo", "$HOME"]),
            ("  ", &[]),
            ("echo ''", &["echo", ""]),
        ];
        for (line, words) in cases {
            assert_eq!(split_words(line).unwrap(), *words, "{line}");
        }
        assert!(split_words("echo 'x").is_err());
    }
}
