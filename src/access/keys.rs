//! SSH public keys as people hand them in: parsed from the wire format (not guessed from the
//! text), checked against what picaops accepts (ed25519, ECDSA, FIDO `sk-` keys, RSA of at least
//! 3072 bits), and fingerprinted the way `ssh-keygen -l` prints them (SHA256:…).

use base64::Engine;
use sha2::{Digest, Sha256};

/// Longest key line picaops accepts (an RSA-16384 key is about 3 KiB): longer is refused.
pub const MAX_KEY_LINE: usize = 16 << 10;

/// Smallest RSA modulus picaops accepts, in bits.
pub const MIN_RSA_BITS: usize = 3072;

/// A checked public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, …
    pub kind: String,
    /// The base64 blob, as in the key line.
    pub blob: String,
    pub comment: String,
    /// `SHA256:…`, as `ssh-keygen -l` shows it.
    pub fingerprint: String,
    /// Size in bits where it is meaningful (RSA, ECDSA).
    pub bits: Option<usize>,
}

impl PublicKey {
    /// `TYPE BLOB COMMENT`, one line.
    pub fn line(&self) -> String {
        if self.comment.is_empty() {
            format!("{} {}", self.kind, self.blob)
        } else {
            format!("{} {} {}", self.kind, self.blob, self.comment)
        }
    }

    /// `TYPE BLOB` (what identifies the key, without the comment).
    pub fn identity(&self) -> String {
        format!("{} {}", self.kind, self.blob)
    }

    /// A short description: `ED25519 SHA256:… comment`.
    pub fn describe(&self) -> String {
        let kind = match self.kind.as_str() {
            "ssh-ed25519" => "ED25519".to_string(),
            "ssh-rsa" => format!("RSA-{}", self.bits.unwrap_or(0)),
            k if k.starts_with("ecdsa-") => format!("ECDSA-{}", self.bits.unwrap_or(0)),
            k if k.starts_with("sk-ssh-ed25519") => "ED25519-SK".into(),
            k if k.starts_with("sk-ecdsa") => "ECDSA-SK".into(),
            k => k.to_string(),
        };
        format!("{kind} {} {}", self.fingerprint, self.comment)
            .trim_end()
            .to_string()
    }
}

/// Why a key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("this is not an SSH public key line (expected `TYPE BASE64 [COMMENT]`, like the content of ~/.ssh/id_ed25519.pub){0}")]
    Garbage(String),
    #[error(
        "this looks like a PRIVATE key. Never send it to anyone; send the `.pub` file next to it"
    )]
    Private,
    #[error("DSA keys are refused: OpenSSH disabled them for being weak. Make a new key: ssh-keygen -t ed25519")]
    Dsa,
    #[error("RSA key of {0} bits is too short (at least {MIN_RSA_BITS} needed). Make a new key: ssh-keygen -t ed25519")]
    ShortRsa(usize),
    #[error("key type `{0}` is not accepted (accepted: ssh-ed25519, ecdsa-sha2-nistp256/384/521, sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com, ssh-rsa of at least {MIN_RSA_BITS} bits)")]
    Unsupported(String),
    #[error(
        "the key's text says `{text}` but its data says `{blob}`: the line was edited or corrupted"
    )]
    Mismatch { text: String, blob: String },
}

const ACCEPTED: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa",
];

/// Reads SSH wire-format strings from a blob.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn string(&mut self) -> Option<&'a [u8]> {
        if self.0.len() < 4 {
            return None;
        }
        let n = u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]) as usize;
        let rest = &self.0[4..];
        if rest.len() < n {
            return None;
        }
        self.0 = &rest[n..];
        Some(&rest[..n])
    }
}

/// Bit length of an SSH mpint (big-endian, possibly with a leading zero byte).
fn mpint_bits(m: &[u8]) -> usize {
    let m = match m.iter().position(|&b| b != 0) {
        Some(i) => &m[i..],
        None => return 0,
    };
    (m.len() - 1) * 8 + (8 - m[0].leading_zeros() as usize)
}

/// Parses and checks one public key line.
pub fn parse(line: &str) -> Result<PublicKey, KeyError> {
    if line.len() > MAX_KEY_LINE {
        return Err(KeyError::Garbage(format!(
            ": it is {} bytes long, more than any public key ({} KiB at most)",
            line.len(),
            MAX_KEY_LINE >> 10
        )));
    }
    let line = line.trim();
    if line.contains("PRIVATE KEY") {
        return Err(KeyError::Private);
    }
    if line.contains('\n') || line.contains('\r') {
        return Err(KeyError::Garbage(
            ": it spans several lines; give one key per file".into(),
        ));
    }
    let mut words = line.split_whitespace();
    let (Some(kind), Some(b64)) = (words.next(), words.next()) else {
        return Err(KeyError::Garbage(String::new()));
    };
    let comment = words.collect::<Vec<_>>().join(" ");
    if kind == "ssh-dss" {
        return Err(KeyError::Dsa);
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| KeyError::Garbage(": its second word is not base64".into()))?;
    let mut r = Reader(&blob);
    let inner = r
        .string()
        .and_then(|t| std::str::from_utf8(t).ok())
        .ok_or_else(|| KeyError::Garbage(": its data is not an SSH key".into()))?;
    if inner != kind {
        if !ACCEPTED.contains(&kind)
            && !kind.starts_with("ssh-")
            && !kind.starts_with("ecdsa")
            && !kind.starts_with("sk-")
        {
            return Err(KeyError::Garbage(String::new()));
        }
        return Err(KeyError::Mismatch {
            text: kind.into(),
            blob: inner.into(),
        });
    }
    if kind == "ssh-dss" {
        return Err(KeyError::Dsa);
    }
    if !ACCEPTED.contains(&kind) {
        return Err(KeyError::Unsupported(kind.into()));
    }
    let short = || KeyError::Garbage(": its data is truncated".into());
    let bits = match kind {
        "ssh-rsa" => {
            let _e = r.string().ok_or_else(short)?;
            let n = r.string().ok_or_else(short)?;
            let bits = mpint_bits(n);
            if bits < MIN_RSA_BITS {
                return Err(KeyError::ShortRsa(bits));
            }
            Some(bits)
        }
        "ssh-ed25519" | "sk-ssh-ed25519@openssh.com" => {
            let k = r.string().ok_or_else(short)?;
            if k.len() != 32 {
                return Err(KeyError::Garbage(
                    ": its ed25519 key is not 32 bytes".into(),
                ));
            }
            None
        }
        _ => {
            // ECDSA: curve name, then the point.
            let curve = r.string().ok_or_else(short)?;
            let _q = r.string().ok_or_else(short)?;
            match curve {
                b"nistp256" => Some(256),
                b"nistp384" => Some(384),
                b"nistp521" => Some(521),
                _ => return Err(KeyError::Garbage(": unknown ECDSA curve".into())),
            }
        }
    };
    let digest = Sha256::digest(&blob);
    let fingerprint = format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    );
    Ok(PublicKey {
        kind: kind.into(),
        blob: b64.into(),
        comment,
        fingerprint,
        bits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keygen(args: &[&str]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let out = std::process::Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-C", "test@picaops", "-f"])
            .arg(&path)
            .args(args)
            .output()
            .expect("ssh-keygen runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
        let fp = std::process::Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(path.with_extension("pub"))
            .output()
            .unwrap();
        let fp = String::from_utf8_lossy(&fp.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string();
        format!("{}\n{}", public.trim(), fp)
    }

    #[test]
    fn accepted_keys_get_ssh_keygens_fingerprint() {
        for args in [
            &["-t", "ed25519"][..],
            &["-t", "ecdsa", "-b", "384"],
            &["-t", "rsa", "-b", "3072"],
        ] {
            let both = keygen(args);
            let (line, fp) = both.split_once('\n').unwrap();
            let k = parse(line).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(k.fingerprint, fp, "{args:?}");
            assert_eq!(k.comment, "test@picaops");
            assert_eq!(k.line(), line);
        }
    }

    #[test]
    fn weak_and_broken_keys_are_refused_with_the_reason() {
        let both = keygen(&["-t", "rsa", "-b", "2048"]);
        let line = both.lines().next().unwrap();
        assert_eq!(parse(line), Err(KeyError::ShortRsa(2048)));
        assert!(parse(line)
            .unwrap_err()
            .to_string()
            .contains("ssh-keygen -t ed25519"));
        assert_eq!(parse("ssh-dss AAAAB3NzaC1kc3MAAACBAP"), Err(KeyError::Dsa));
        assert!(matches!(parse("hello world"), Err(KeyError::Garbage(_))));
        assert!(matches!(parse(""), Err(KeyError::Garbage(_))));
        assert_eq!(
            parse("-----BEGIN OPENSSH PRIVATE KEY-----"),
            Err(KeyError::Private)
        );
        // An ed25519 blob announced as RSA.
        let ed = keygen(&["-t", "ed25519"]);
        let blob = ed.split_whitespace().nth(1).unwrap();
        assert!(matches!(
            parse(&format!("ssh-rsa {blob}")),
            Err(KeyError::Mismatch { .. })
        ));
        // Truncated data.
        assert!(matches!(
            parse(&format!("ssh-ed25519 {}", &blob[..20])),
            Err(KeyError::Garbage(_))
        ));
        // Two lines in one.
        assert!(parse(&format!("ssh-ed25519 {blob}\nssh-ed25519 {blob}")).is_err());
    }
}
