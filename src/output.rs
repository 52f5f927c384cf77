//! How results leave picaops: output format, colour, verbosity and the documented exit codes.

use std::io::IsTerminal;

/// Exit code when everything went well.
pub const EXIT_OK: i32 = 0;
/// Exit code when at least one host failed (the others were still served).
pub const EXIT_HOST_FAILED: i32 = 1;
/// Exit code for a usage error or an invalid inventory/playbook: nothing was contacted.
pub const EXIT_USAGE: i32 = 2;

/// How a command prints its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Text for people, with colour when the terminal allows it.
    #[default]
    Human,
    /// One JSON document on stdout, for scripts.
    Json,
}

/// Output settings shared by every command.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    pub format: Format,
    /// Colour allowed (a terminal, and NO_COLOR unset).
    pub color: bool,
    /// -1 quiet, 0 normal, 1+ verbose.
    pub verbosity: i8,
    /// Progress bars allowed (human output on a terminal, not quiet).
    pub progress: bool,
}

impl Output {
    pub fn new(format: Format, verbosity: i8) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let tty_out = std::io::stdout().is_terminal();
        let tty_err = std::io::stderr().is_terminal();
        Output {
            format,
            color: tty_out && !no_color,
            verbosity,
            progress: format == Format::Human && tty_err && verbosity >= 0,
        }
    }

    /// Human text without colour or progress: what tests compare against.
    pub fn plain() -> Self {
        Output {
            format: Format::Human,
            color: false,
            verbosity: 0,
            progress: false,
        }
    }

    /// Wraps `text` in an ANSI style when colour is on.
    pub fn paint(&self, style: Style, text: &str) -> String {
        if !self.color {
            return text.to_string();
        }
        let code = match style {
            Style::Bold => "1",
            Style::Red => "31",
            Style::Green => "32",
            Style::Yellow => "33",
            Style::Cyan => "36",
            Style::Dim => "2",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Style {
    Bold,
    Red,
    Green,
    Yellow,
    Cyan,
    Dim,
}

/// A result a command prints: JSON for scripts or text for people, notes on stderr, and the
/// exit code it stands for. Every command's result goes out through [`show`].
pub trait Shown {
    fn json(&self) -> serde_json::Value;
    /// The text for people (stdout).
    fn human(&self, out: &Output, w: &mut dyn std::io::Write) -> std::io::Result<()>;
    /// Said on stderr before the result, whatever the format (what did not answer…).
    fn notes(&self, _out: &Output, _w: &mut dyn std::io::Write) -> std::io::Result<()> {
        Ok(())
    }
    /// Said on stderr after the text for people (a summary line).
    fn footer(&self, _out: &Output, _w: &mut dyn std::io::Write) -> std::io::Result<()> {
        Ok(())
    }
    fn exit_code(&self) -> i32 {
        EXIT_OK
    }
}

/// Prints `r` the way `out` asks; returns its exit code.
pub fn show(r: &dyn Shown, out: &Output) -> i32 {
    let _ = r.notes(out, &mut std::io::stderr().lock());
    match out.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&r.json()).unwrap_or_default()
        ),
        Format::Human => {
            let _ = r.human(out, &mut std::io::stdout().lock());
            let _ = r.footer(out, &mut std::io::stderr().lock());
        }
    }
    r.exit_code()
}
