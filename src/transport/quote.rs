//! Quoting words for a POSIX shell on the far side of an SSH connection.
//!
//! SSH sends one string that the host's login shell parses; argv must therefore be quoted. Every
//! word that is not made only of plainly safe characters is wrapped in single quotes, with each `'`
//! written as `'\''`. This works in sh, dash, bash and zsh.

/// Quotes one word so that the remote shell passes it through unchanged.
pub fn quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if safe {
        return word.to_string();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Quotes every word and joins them with spaces.
pub fn join<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_that_need_no_quotes_stay_as_they_are() {
        assert_eq!(quote("ls"), "ls");
        assert_eq!(quote("/etc/ssh/sshd_config"), "/etc/ssh/sshd_config");
        assert_eq!(quote("--user=alice"), "--user=alice");
    }

    #[test]
    fn everything_else_is_single_quoted() {
        for (word, quoted) in [
            ("", "''"),
            ("a b", "'a b'"),
            ("$HOME", "'$HOME'"),
            ("it's", "'it'\\''s'"),
            ("a;rm -rf /", "'a;rm -rf /'"),
            ("`id`", "'`id`'"),
            ("line\nbreak", "'line\nbreak'"),
        ] {
            assert_eq!(quote(word), quoted, "quoting {word:?}");
        }
    }

    #[test]
    fn quoted_words_survive_a_real_shell() {
        let words = [
            "printf", "%s|", "a b", "it's", "$HOME", "`id`", "", "*", "\\n",
        ];
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(join(&words))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "a b|it's|$HOME|`id`||*|\\n|"
        );
    }
}
