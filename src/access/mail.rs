//! How reminders leave the machine: mail through the team's SMTP relay (lettre, rustls) and
//! one digest to a Mattermost incoming webhook (ureq, rustls). Knows nothing of people or
//! thresholds (that is [`super::remind`]).
//!
//! The SMTP password is only ever sent inside TLS: port 465 is TLS from the first byte, any
//! other port must offer STARTTLS or nothing is sent (lettre's `Tls::Required`); the relay's
//! certificate is checked against its name. Errors never carry a secret: the webhook's URL holds
//! its token, so it is cut out of every message.

use std::time::Duration;

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Body, Mailbox};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

use crate::secrets::Secret;
use crate::sections::remind::IMPLICIT_TLS_PORT;

/// How long one SMTP conversation or the webhook's POST may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The relay, as a run needs it (the password resolved, the CA read).
#[derive(Clone, Debug)]
pub struct Relay {
    pub host: String,
    pub port: u16,
    pub from: String,
    pub user: String,
    pub password: Secret,
    /// PEM of the CA that signed the relay's certificate (None: the system's roots).
    pub ca_pem: Option<Vec<u8>>,
}

impl Relay {
    /// `host:port`, as messages name the relay.
    pub fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One mail to send.
#[derive(Clone, Debug)]
pub struct Mail {
    /// The person's display name, if any.
    pub to_name: Option<String>,
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// Why a mail or the digest did not leave. Never holds a password or the webhook URL.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the SMTP relay's settings are unusable: {0}")]
    Settings(String),
    #[error("`{address}` is not a mail address picaops can send to: {why}")]
    Address { address: String, why: String },
    /// The relay said no, or could not be reached, or TLS failed. `recipient_only`: it refused
    /// this recipient only (5xx after RCPT), the other mails may still go.
    #[error("{relay}: {detail}")]
    Relay {
        relay: String,
        detail: String,
        recipient_only: bool,
    },
    #[error("the Mattermost webhook: {0}")]
    Webhook(String),
}

impl SendError {
    /// Only this mail failed (a refused or invalid recipient): the run goes on with the others.
    pub fn recipient_only(&self) -> bool {
        matches!(
            self,
            SendError::Address { .. }
                | SendError::Relay {
                    recipient_only: true,
                    ..
                }
        )
    }
}

/// A connection to the relay, opened per mail (lettre without its pool).
pub struct Mailer {
    relay: Relay,
    transport: SmtpTransport,
    from: Mailbox,
}

impl Mailer {
    pub fn new(relay: &Relay) -> Result<Mailer, SendError> {
        let settings = |e: &dyn std::fmt::Display| SendError::Settings(e.to_string());
        let from: Mailbox = relay.from.parse().map_err(|e| settings(&e))?;
        let mut tls = TlsParameters::builder(relay.host.clone());
        if let Some(pem) = &relay.ca_pem {
            let ca = Certificate::from_pem(pem).map_err(|e| settings(&e))?;
            tls = tls
                .certificate_store(CertificateStore::None)
                .add_root_certificate(ca);
        }
        let tls = tls.build_rustls().map_err(|e| settings(&e))?;
        let tls = if relay.port == IMPLICIT_TLS_PORT {
            Tls::Wrapper(tls)
        } else {
            // STARTTLS or nothing: a relay that does not offer it never sees the password.
            Tls::Required(tls)
        };
        let transport = SmtpTransport::builder_dangerous(relay.host.as_str())
            .port(relay.port)
            .tls(tls)
            .credentials(Credentials::new(
                relay.user.clone(),
                relay.password.expose().to_string(),
            ))
            .authentication(vec![Mechanism::Plain, Mechanism::Login])
            .timeout(Some(TIMEOUT))
            .build();
        Ok(Mailer {
            relay: relay.clone(),
            transport,
            from,
        })
    }

    /// Sends one mail (plain text, UTF-8).
    pub fn send(&self, mail: &Mail) -> Result<(), SendError> {
        let address = mail.to.parse().map_err(|e| SendError::Address {
            address: mail.to.clone(),
            why: format!("{e}"),
        })?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(mail.to_name.clone(), address))
            .subject(mail.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            // Plain text as written (8bit: every relay today speaks 8BITMIME), so the command
            // stays one line a reader copies; quoted-printable only for absurdly long lines.
            .body(
                Body::new_with_encoding(mail.body.clone(), ContentTransferEncoding::EightBit)
                    .unwrap_or_else(|_| Body::new(mail.body.clone())),
            )
            .map_err(|e| SendError::Address {
                address: mail.to.clone(),
                why: e.to_string(),
            })?;
        self.transport
            .send(&message)
            .map(|_| ())
            .map_err(|e| SendError::Relay {
                relay: self.relay.name(),
                detail: smtp_detail(&e),
                // 550-553: mailbox unknown, not allowed, bad syntax (RFC 5321 4.2.3).
                recipient_only: e.is_permanent()
                    && e.status().is_some_and(|c| {
                        let c = c.to_string();
                        ["550", "551", "553"].contains(&c.as_str())
                    }),
            })
    }
}

/// lettre's error in words, with the relay's own answer when there is one.
fn smtp_detail(e: &lettre::transport::smtp::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    if e.is_timeout() {
        text.push_str(" (no answer within 30 s)");
    }
    text
}

/// The webhook's URL, checked: https (or http when the inventory allows it for a hook on a
/// network the team trusts).
pub struct Webhook {
    url: Secret,
    /// The secret's name, for messages.
    pub secret_name: String,
}

impl Webhook {
    pub fn new(url: Secret, secret_name: &str, plain_http: bool) -> Result<Webhook, SendError> {
        let u = url.expose();
        let ok = u.starts_with("https://") || (plain_http && u.starts_with("http://"));
        if !ok || u.contains(char::is_whitespace) {
            return Err(SendError::Webhook(format!(
                "the secret `{secret_name}` holds no {} URL (Mattermost: Integrations → Incoming webhooks gives https://…/hooks/…){}",
                if plain_http { "http(s)://" } else { "https://" },
                if plain_http || !u.starts_with("http://") { "" } else { "; an http:// hook sends its token in clear: set `webhook_plain_http: true` only for a hook on a network you trust" },
            )));
        }
        Ok(Webhook {
            url,
            secret_name: secret_name.to_string(),
        })
    }

    /// POSTs `{"text": text}`; a non-2xx answer is an error.
    pub fn post(&self, text: &str) -> Result<(), SendError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(true)
            .build()
            .into();
        let body = serde_json::json!({ "text": text }).to_string();
        agent
            .post(self.url.expose())
            .header("Content-Type", "application/json")
            .send(body.as_str())
            .map(|_| ())
            .map_err(|e| SendError::Webhook(self.redact(&e.to_string())))
    }

    /// `text` without the URL or its path (where Mattermost puts the token).
    fn redact(&self, text: &str) -> String {
        let url = self.url.expose();
        let mut out = text.replace(url, "(the webhook URL)");
        if let Some(path) = url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        {
            if path.len() > 1 {
                out = out.replace(path, "/(token)");
            }
        }
        format!("{out} (the URL is the secret `{}`)", self.secret_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// An SMTP server without STARTTLS that offers AUTH in clear: what every line the client
    /// sent was.
    fn plain_server() -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut seen = Vec::new();
            w.write_all(b"220 plain ESMTP\r\n").unwrap();
            for line in BufReader::new(s).lines() {
                let Ok(line) = line else { break };
                seen.push(line.clone());
                let answer: &[u8] = if line.starts_with("EHLO") {
                    b"250-plain\r\n250 AUTH PLAIN LOGIN\r\n"
                } else if line.starts_with("QUIT") {
                    b"221 bye\r\n"
                } else {
                    b"250 ok\r\n"
                };
                if w.write_all(answer).is_err() || line.starts_with("QUIT") {
                    break;
                }
            }
            seen
        });
        (port, h)
    }

    fn relay(port: u16) -> Relay {
        Relay {
            host: "127.0.0.1".into(),
            port,
            from: "Tech <tech@example.org>".into(),
            user: "picaops".into(),
            password: Secret::from_line("hunter2-not-sent"),
            ca_pem: None,
        }
    }

    #[test]
    fn a_relay_without_starttls_never_sees_the_password() {
        let (port, server) = plain_server();
        let m = Mailer::new(&relay(port)).unwrap();
        let e = m
            .send(&Mail {
                to_name: None,
                to: "ann@example.org".into(),
                subject: "s".into(),
                body: "b".into(),
            })
            .unwrap_err();
        let seen = server.join().unwrap();
        assert!(
            !seen
                .iter()
                .any(|l| l.starts_with("AUTH") || l.contains("MAIL")),
            "{seen:?}"
        );
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("STARTTLS"), "{e}");
    }

    #[test]
    fn the_webhook_url_is_https_and_never_shown() {
        let url = |u: &str| Secret::from_line(u);
        let e = Webhook::new(url("http://chat.example/hooks/abc123"), "hook", false)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("webhook_plain_http") && !e.contains("abc123"),
            "{e}"
        );
        assert!(Webhook::new(url("ftp://x"), "hook", true).is_err());
        // Nothing listens on port 9 of localhost here: the error names the secret, not the URL.
        let h = Webhook::new(url("http://127.0.0.1:9/hooks/abc123"), "hook", true).unwrap();
        let e = h.post("hi").unwrap_err().to_string();
        assert!(!e.contains("abc123") && e.contains("`hook`"), "{e}");
    }
}
