//! Errors tied to a place in a file (file:line:column with an excerpt), collected and shown together.
//!
//! Loading an inventory or a playbook never stops at the first mistake: every problem found is
//! a `Diagnostic`, and the caller shows them all at once, gcc-style, so editors and people can
//! jump straight to the line.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// A place in a file: 1-based line and column (0 when the problem is the whole file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Place {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    /// How many characters to underline in the excerpt (at least 1).
    #[serde(skip)]
    pub len: u64,
}

impl Place {
    pub fn new(file: impl Into<PathBuf>, line: u64, column: u64) -> Self {
        Place {
            file: file.into(),
            line,
            column,
            len: 1,
        }
    }

    /// The whole file, when no line applies (unreadable, missing).
    pub fn file(file: impl Into<PathBuf>) -> Self {
        Place::new(file, 0, 0)
    }

    pub fn with_len(mut self, len: u64) -> Self {
        self.len = len.max(1);
        self
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
        }
    }
}

/// One problem, where it is, and what to do about it.
#[derive(Clone, Debug, Serialize)]
pub struct Diagnostic {
    #[serde(flatten)]
    pub place: Place,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// Other places that explain this one ("first defined here").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<(Place, String)>,
}

impl Diagnostic {
    pub fn new(place: Place, message: impl Into<String>) -> Self {
        Diagnostic {
            place,
            message: message.into(),
            help: None,
            notes: Vec::new(),
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn note(mut self, place: Place, message: impl Into<String>) -> Self {
        self.notes.push((place, message.into()));
        self
    }
}

/// The text of the files diagnostics point into, to print excerpts.
#[derive(Default, Debug, Clone)]
pub struct Sources {
    texts: HashMap<PathBuf, String>,
}

impl Sources {
    pub fn add(&mut self, file: &Path, text: &str) {
        self.texts.insert(file.to_path_buf(), text.to_string());
    }

    /// The whole text of a file added before.
    pub fn text(&self, file: &Path) -> Option<&str> {
        self.texts.get(file).map(String::as_str)
    }

    fn line(&self, file: &Path, line: u64) -> Option<&str> {
        let text = self.texts.get(file)?;
        text.lines()
            .nth(usize::try_from(line).ok()?.checked_sub(1)?)
    }
}

/// Renders one diagnostic as text: `file:line:col: error: message`, the excerpt, then help.
pub fn render(d: &Diagnostic, sources: &Sources, color: bool) -> String {
    let (red, bold, blue, reset) = if color {
        ("\x1b[1;31m", "\x1b[1m", "\x1b[1;34m", "\x1b[0m")
    } else {
        ("", "", "", "")
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{bold}{}{reset}: {red}error{reset}: {bold}{}{reset}",
        d.place, d.message
    );
    excerpt(&mut s, &d.place, sources, blue, red, reset);
    for (place, message) in &d.notes {
        let _ = writeln!(s, "  {blue}note{reset}: {place}: {message}");
        excerpt(&mut s, place, sources, blue, blue, reset);
    }
    if let Some(help) = &d.help {
        for (i, line) in help.lines().enumerate() {
            let lead = if i == 0 { "help:" } else { "     " };
            let _ = writeln!(s, "  {blue}{lead}{reset} {line}");
        }
    }
    s
}

fn excerpt(s: &mut String, place: &Place, sources: &Sources, blue: &str, mark: &str, reset: &str) {
    let Some(text) = sources.line(&place.file, place.line) else {
        return;
    };
    let number = place.line.to_string();
    let pad = " ".repeat(number.len());
    // Columns count characters; tabs are kept so the caret lines up under them.
    let lead: String = text
        .chars()
        .take(place.column.saturating_sub(1) as usize)
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    let shown: String = text.chars().take(200).collect();
    let carets = "^".repeat(place.len.clamp(1, 80) as usize);
    let _ = writeln!(s, "  {blue}{pad} |{reset}");
    let _ = writeln!(s, "  {blue}{number} |{reset} {shown}");
    let _ = writeln!(s, "  {blue}{pad} |{reset} {lead}{mark}{carets}{reset}");
}

/// Suggests the closest of `candidates` to `word`, when one is close enough to be a typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Prints diagnostics (gcc-style on stderr, or one JSON document on stdout) and a last line
/// saying nothing was contacted.
pub fn print_all(diags: &[Diagnostic], sources: &Sources, out: &crate::output::Output, what: &str) {
    use std::io::Write as _;
    match out.format {
        crate::output::Format::Json => {
            let doc = serde_json::json!({ "ok": false, "errors": diags });
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        crate::output::Format::Human => {
            let mut err = std::io::stderr().lock();
            for d in diags {
                let _ = writeln!(err, "{}", render(d, sources, out.color));
            }
            let n = diags.len();
            let _ = writeln!(
                err,
                "{}: {n} error{} {what}; nothing was contacted.",
                out.paint(crate::output::Style::Red, "picaops"),
                if n == 1 { "" } else { "s" },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_place_excerpt_and_help() {
        let mut sources = Sources::default();
        let file = Path::new("inv/hosts.yml");
        sources.add(file, "hosts:\n  bob:\n    sitee: x\n");
        let d = Diagnostic::new(Place::new(file, 3, 5).with_len(5), "unknown field `sitee`")
            .help("did you mean `site`?");
        let text = render(&d, &sources, false);
        assert_eq!(
            text,
            "inv/hosts.yml:3:5: error: unknown field `sitee`\n\
             \x20   |\n\
             \x20 3 |     sitee: x\n\
             \x20   |     ^^^^^\n\
             \x20 help: did you mean `site`?\n"
        );
    }

    #[test]
    fn suggests_only_close_words() {
        assert_eq!(did_you_mean("sitee", ["site", "address"]), Some("site"));
        assert_eq!(did_you_mean("zzz", ["site", "address"]), None);
    }
}
