//! Reading YAML files strictly (serde-saphyr: duplicate keys are errors, `yes`/`no` stay strings)
//! and turning every parse error into a diagnostic with a place and advice.
//!
//! Shared by the inventory and the playbooks; it knows nothing about either.

use std::hash::{Hash, Hasher};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_saphyr::{DuplicateKeyPolicy, Options, Spanned};

use crate::diagnostic::{did_you_mean, Diagnostic, Place, Sources};

/// A mapping key (a name) with the place it was written, compared by text only.
#[derive(Debug, Clone)]
pub struct Name(pub Spanned<String>);

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.0.value == other.0.value
    }
}
impl Eq for Name {}
impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.value.hash(state)
    }
}
impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Spanned::deserialize(d).map(Name)
    }
}

/// Where a spanned value was written.
pub fn place_of<T>(file: &Path, s: &Spanned<T>) -> Place {
    let l = s.referenced;
    Place::new(file, l.line(), l.column()).with_len(l.span().len())
}

/// Reads and parses one YAML file into `T`. The text is added to `sources` (for excerpts).
/// `Ok(None)`: the file holds no document (empty, or only comments).
pub fn read<T: DeserializeOwned>(
    file: &Path,
    sources: &mut Sources,
) -> Result<Option<T>, Diagnostic> {
    let bytes = std::fs::read(file).map_err(|e| {
        Diagnostic::new(Place::file(file), format!("cannot read this file: {e}"))
            .help("check the file's permissions")
    })?;
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text,
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            let valid = std::str::from_utf8(valid).unwrap_or_default();
            sources.add(file, valid);
            let line = valid.matches('\n').count() as u64 + 1;
            let column = valid.rsplit('\n').next().unwrap_or("").chars().count() as u64 + 1;
            return Err(Diagnostic::new(
                Place::new(file, line, column),
                format!(
                    "this file is not UTF-8 text (byte 0x{:02x} at offset {})",
                    bytes[e.valid_up_to()],
                    e.valid_up_to()
                ),
            )
            .help("save the file as UTF-8 (for example `iconv -f latin1 -t utf-8`)"));
        }
    };
    sources.add(file, text);
    let mut options = Options::default();
    options.duplicate_keys = DuplicateKeyPolicy::Error;
    options.strict_booleans = true;
    options.with_snippet = false;
    serde_saphyr::from_str_with_options::<Option<T>>(text, options).map_err(|e| {
        let mut d = error(file, &e);
        // The parser stops where the unclosed quote's text runs into the next key; the cause
        // is the quote, lines before: point at it too.
        if d.message.contains("quoted scalar") {
            if let Some((line, column)) = unclosed_quote(text, d.place.line) {
                d = d.note(
                    Place::new(file, line, column),
                    "the quote that is never closed opens here",
                );
            }
        }
        d
    })
}

/// The last `"` before line `before` (1-based) on a line with an odd number of unescaped `"`:
/// the likely start of a double-quoted text that never ends. (line, column), 1-based.
fn unclosed_quote(text: &str, before: u64) -> Option<(u64, u64)> {
    let lines: Vec<&str> = text.lines().collect();
    let upto = (before as usize).min(lines.len());
    (0..upto).rev().find_map(|i| {
        let quotes: Vec<usize> = lines[i]
            .char_indices()
            .filter(|&(j, c)| c == '"' && !lines[i][..j].ends_with('\\'))
            .map(|(j, _)| lines[i][..j].chars().count())
            .collect();
        match quotes.last() {
            Some(&column) if quotes.len() % 2 == 1 => Some((i as u64 + 1, column as u64 + 1)),
            _ => None,
        }
    })
}

/// Turns a serde-saphyr error into a diagnostic with advice.
pub fn error(file: &Path, e: &serde_saphyr::Error) -> Diagnostic {
    let (line, column) = e
        .location()
        .map(|l| (l.line().max(1), l.column().max(1)))
        .unwrap_or((1, 1));
    let raw = e.without_snippet().to_string();
    // serde-saphyr appends " at line L, column C"; the place is shown in front instead.
    let message = match raw.rfind(" at line ") {
        Some(i) => raw[..i].to_string(),
        None => raw,
    };
    let len = e.location().map(|l| l.span().len()).unwrap_or(1).max(1);
    let place = Place::new(file, line, column).with_len(len);
    let mut d = Diagnostic::new(place, message.clone());
    match e {
        serde_saphyr::Error::ExternalMessage { .. } | serde_saphyr::Error::Eof { .. } => {
            d.message = format!("YAML syntax error: {message}");
            d.help = Some(if message.contains("tab") {
                "YAML indents with spaces only: replace the tabs on this line with spaces".into()
            } else {
                "check the quotes, brackets and indentation on this line and the lines just before"
                    .into()
            });
            return d;
        }
        serde_saphyr::Error::Unexpected { expected, .. } => {
            d.message = format!("wrong type: expected {}", readable_type(expected));
            return d;
        }
        serde_saphyr::Error::MultipleDocuments { .. } => {
            d.message = "this file holds several YAML documents (`---`)".into();
            d.help =
                Some("keep one document per inventory file: split it into several files".into());
            return d;
        }
        _ => {}
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known: Vec<&str> = expected
            .trim_start_matches(", expected one of ")
            .trim_start_matches(", expected ")
            .split(", ")
            .map(|s| s.trim_matches('`'))
            .filter(|s| !s.is_empty())
            .collect();
        d.place.len = field.chars().count() as u64;
        d.message = format!("unknown key `{field}`");
        d.help = Some(match did_you_mean(field, known.iter().copied()) {
            Some(s) => format!("did you mean `{s}`? Known keys here: {}", known.join(", ")),
            None => format!("known keys here: {}", known.join(", ")),
        });
    } else if message.starts_with("duplicate mapping key") {
        let key = message
            .trim_start_matches("duplicate mapping key: ")
            .split(',')
            .next()
            .unwrap_or("");
        d.message = format!("`{key}` is written twice in the same mapping");
        d.help = Some("YAML would keep only one of the two: merge them or rename one".into());
    } else if message.contains("strict mode expects true/false") {
        d.message = "not a boolean".into();
        d.help = Some("write `true` or `false` (yes/no/on/off are not booleans here)".into());
    } else if message.starts_with("missing field `") {
        let field = message
            .trim_start_matches("missing field `")
            .trim_end_matches('`');
        d.message = format!("missing required key `{field}`");
        d.help = Some(format!("add `{field}:` to this entry"));
    } else if let Some(what) = message.strip_prefix("invalid ") {
        d.message = format!("wrong type: expected {}", readable_type(what));
    } else if let Some(what) = message.strip_prefix("expected ") {
        d.message = format!("wrong type: expected {}", readable_type(what));
    } else if let Some(rest) = message.strip_prefix("unknown variant `") {
        d.message = format!(
            "unknown value `{}",
            rest.replace(", expected one of", "; expected one of")
        );
    }
    d
}

fn readable_type(what: &str) -> String {
    match what {
        "u16" => "a port number (1-65535)".into(),
        "u32" | "u64" | "i64" => "a whole number".into(),
        "string scalar" => "text (a single value, not a list or a mapping)".into(),
        other => other.to_string(),
    }
}
