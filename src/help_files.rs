//! Shell completion scripts and man pages, generated from the command line's clap definition.
//!
//! The binary hands over its `clap::Command`; nothing here knows picaops's subcommands, so the
//! scripts complete and the pages say exactly what `--help` says. Nothing here contacts a host.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Command;
use clap_complete::Generator;

use crate::output::{Format, Output, Style, EXIT_HOST_FAILED, EXIT_OK};

/// `picaops completions --help`, after the options: what TAB then does, where each script goes.
pub const COMPLETIONS_EXAMPLES: &str = "\
Once installed, TAB completes subcommands, options and option values (not host names: those
come from the inventory). Install (as root; new shells pick it up):
  picaops completions bash > /etc/bash_completion.d/picaops
  picaops completions zsh > /usr/local/share/zsh/site-functions/_picaops
  picaops completions fish > /etc/fish/completions/picaops.fish
bash reads /etc/bash_completion.d through the bash-completion package (apt install bash-completion).
To try it in the bash you are in, without installing anything:
  source <(picaops completions bash)";

/// `picaops man --help`, after the options.
pub const MAN_EXAMPLES: &str = "\
The pages say what --help says: both come from the same definition. Read it now:
  picaops man | man -l -
Install a page per subcommand (as root), so that `man picaops-backup-restore` works:
  picaops man --dir /usr/local/share/man/man1 && mandb -q";

/// A shell picaops writes a completion script for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// GNU bash (with or without the bash-completion package).
    Bash,
    /// zsh (after `compinit`).
    Zsh,
    /// fish.
    Fish,
}

impl Shell {
    fn generator(self) -> clap_complete::Shell {
        match self {
            Shell::Bash => clap_complete::Shell::Bash,
            Shell::Zsh => clap_complete::Shell::Zsh,
            Shell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// What went wrong writing a script or a page.
#[derive(Debug, thiserror::Error)]
pub enum HelpFilesError {
    #[error(
        "could not write the {what} to stdout: {source}. Nothing else was changed; if stdout \
         was redirected to a file, check that its disk has room and that you may write there."
    )]
    Stdout {
        what: &'static str,
        source: std::io::Error,
    },
    #[error(
        "could not create the man page directory {}: {source}. Pick a directory you may write \
         to, or run as root for /usr/local/share/man/man1.", dir.display()
    )]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "could not write the man page {}: {source}. Pages before it were written; check the \
         directory's permissions and free space, then run the same command again.", path.display()
    )]
    WritePage {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes the completion script of `cmd` for `shell` to `out`. Hidden subcommands (the host side
/// of `picaops backup`, which the timers run) are left out, as `--help` leaves them out.
pub fn completions(cmd: Command, shell: Shell, out: &mut dyn Write) -> Result<(), HelpFilesError> {
    let mut cmd = visible_only(&cmd);
    let name = cmd.get_name().to_string();
    cmd.set_bin_name(name);
    cmd.build();
    shell
        .generator()
        .try_generate(&cmd, out)
        .and_then(|()| out.flush())
        .map_err(|source| HelpFilesError::Stdout {
            what: "completion script",
            source,
        })
}

/// Writes the man page of `cmd` itself (roff, section 1) to `out`.
pub fn man_page(cmd: Command, out: &mut dyn Write) -> Result<(), HelpFilesError> {
    clap_mangen::Man::new(prepare(cmd))
        .render(out)
        .and_then(|()| out.flush())
        .map_err(|source| HelpFilesError::Stdout {
            what: "man page",
            source,
        })
}

/// Writes one man page per command into `dir` (created if missing): `picaops.1`, then
/// `picaops-apply.1`, `picaops-backup-run.1`, … for every subcommand `--help` lists (hidden ones
/// have no page). Returns the paths written, the root's page first.
pub fn man_pages(cmd: Command, dir: &Path) -> Result<Vec<PathBuf>, HelpFilesError> {
    std::fs::create_dir_all(dir).map_err(|source| HelpFilesError::CreateDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut commands = Vec::new();
    with_subcommands(&prepare(cmd), &mut commands);
    let mut written = Vec::with_capacity(commands.len());
    for cmd in commands {
        let man = clap_mangen::Man::new(cmd);
        let path = dir.join(man.get_filename());
        let mut page = Vec::new();
        man.render(&mut page)
            .and_then(|()| std::fs::write(&path, &page))
            .map_err(|source| HelpFilesError::WritePage {
                path: path.clone(),
                source,
            })?;
        written.push(path);
    }
    Ok(written)
}

/// `picaops completions SHELL`: the script on stdout; returns the exit code.
pub fn print_completions(cmd: Command, shell: Shell) -> i32 {
    finish(completions(cmd, shell, &mut std::io::stdout().lock()))
}

/// `picaops man [--dir DIR]`: the page on stdout, or every page into `dir` with a line (or a
/// JSON document) saying what was written; returns the exit code.
pub fn print_man(cmd: Command, dir: Option<&Path>, out: &Output) -> i32 {
    let Some(dir) = dir else {
        return finish(man_page(cmd, &mut std::io::stdout().lock()));
    };
    finish(man_pages(cmd, dir).map(|pages| match out.format {
        Format::Json => println!("{}", serde_json::json!({ "ok": true, "pages": pages })),
        Format::Human if out.verbosity >= 0 => {
            let line = format!("wrote {} man pages into {}", pages.len(), dir.display());
            eprintln!("{}", out.paint(Style::Green, &line));
        }
        Format::Human => {}
    }))
}

fn finish(result: Result<(), HelpFilesError>) -> i32 {
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("picaops: {e}");
            EXIT_HOST_FAILED
        }
    }
}

/// The command as the pages show it: built (so each subcommand knows its full name,
/// `picaops-backup-run`), without clap's `help` subcommand, which has no page of its own.
fn prepare(cmd: Command) -> Command {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// A copy of `cmd` (not yet built) without its hidden subcommands, at any depth: what the
/// completion scripts offer. clap_complete offers every subcommand, hidden or not, and clap has no
/// way to remove one, so the tree is put together again from each command's name, texts,
/// arguments and groups (settings such as `subcommand_required` do not change what completes).
fn visible_only(cmd: &Command) -> Command {
    let mut copy = Command::new(cmd.get_name().to_owned())
        .visible_aliases(cmd.get_visible_aliases().map(str::to_owned))
        .args(cmd.get_arguments().cloned())
        .groups(cmd.get_groups().cloned());
    if let Some(about) = cmd.get_about() {
        copy = copy.about(about.clone());
    }
    if let Some(about) = cmd.get_long_about() {
        copy = copy.long_about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        copy = copy.version(version.to_owned());
    }
    copy.subcommands(
        cmd.get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(visible_only),
    )
}

fn with_subcommands(cmd: &Command, all: &mut Vec<Command>) {
    all.push(cmd.clone());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        with_subcommands(sub, all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool() -> Command {
        Command::new("tool")
            .about("A tool.")
            .subcommand(Command::new("visible").about("Shown."))
            .subcommand(Command::new("secret").about("Hidden.").hide(true))
    }

    #[test]
    fn one_page_per_visible_command_named_after_its_full_name() {
        let dir = tempfile::tempdir().unwrap();
        let pages = man_pages(tool(), &dir.path().join("man1")).unwrap();
        let names: Vec<_> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["tool.1", "tool-visible.1"]);
        let visible = std::fs::read_to_string(&pages[1]).unwrap();
        assert!(visible.contains("tool\\-visible \\- Shown."), "{visible}");
    }

    #[test]
    fn completion_scripts_leave_hidden_subcommands_out() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut script = Vec::new();
            completions(tool(), shell, &mut script).unwrap();
            let script = String::from_utf8(script).unwrap();
            assert!(script.contains("visible"), "{shell:?}: {script}");
            assert!(!script.contains("secret"), "{shell:?}: {script}");
        }
    }

    #[test]
    fn a_directory_that_cannot_be_made_is_an_error_naming_it() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = man_pages(tool(), &file.path().join("man1")).unwrap_err();
        assert!(matches!(err, HelpFilesError::CreateDir { .. }), "{err}");
        assert!(err.to_string().contains("man1"), "{err}");
    }

    #[test]
    fn a_failing_stdout_is_an_error_not_a_panic() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("no space left on device"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let err = completions(tool(), Shell::Bash, &mut Full).unwrap_err();
        assert!(err.to_string().contains("no space left"), "{err}");
        assert!(man_page(tool(), &mut Full).is_err());
    }
}
