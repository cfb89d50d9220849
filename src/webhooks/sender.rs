//! One webhook request: signed, sent only to allowed addresses, read at most 2 KiB.

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use sha2::Sha256;

use crate::config::WebhookSettings;
use crate::domain::webhooks::addresses::{self, Policy};
use crate::domain::webhooks::delivery::{AttemptResult, Claimed, MAX_RESPONSE_BYTES};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const USER_AGENT: &str = concat!("Referdesk-Webhooks/", env!("CARGO_PKG_VERSION"));

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Partnero's `Signature`: hex HMAC-SHA256 of the raw body, keyed with the secret's text.
pub fn partnero_signature(secret: &str, body: &str) -> String {
    hex::encode(hmac(secret.as_bytes(), &[body.as_bytes()]))
}

/// Standard Webhooks' `v1,<base64>` signature of `id.timestamp.body`, keyed with the
/// secret's bytes (the base64 after `whsec_`).
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap_or_else(|_| secret.as_bytes().to_vec());
    let timestamp = timestamp.to_string();
    let mac = hmac(
        &key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body.as_bytes()],
    );
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac))
}

/// A refused receiver address, found in the error chain to name the refusal in the log.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Refused {}

/// Resolves names and refuses the forbidden addresses: the connection is made to exactly
/// the addresses checked, so a name cannot resolve to another address between the check
/// and the connection.
struct GuardedResolver {
    policy: Policy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            addresses::check_addresses(&found, policy)
                .map_err(|message| Box::new(Refused(message)) as Box<dyn StdError + Send + Sync>)?;
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    }
}

/// Sends deliveries. Cheap to clone (one connection pool inside).
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: Policy,
}

impl Sender {
    pub fn new(settings: &WebhookSettings) -> anyhow::Result<Sender> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT.min(settings.request_timeout))
            .timeout(settings.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would connect to addresses never checked here.
            .no_proxy()
            .user_agent(USER_AGENT)
            .dns_resolver(Arc::new(GuardedResolver {
                policy: settings.policy,
            }))
            .build()?;
        Ok(Sender {
            client,
            policy: settings.policy,
        })
    }

    /// Checks the URL's form and an address written in it (names are checked by the
    /// resolver once resolved).
    fn check(&self, raw: &str) -> Result<reqwest::Url, String> {
        let url = addresses::check_form(raw, self.policy)?;
        let literal: Option<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            _ => None,
        };
        if let Some(address) = literal {
            let port = url.port_or_known_default().unwrap_or(443);
            addresses::check_addresses(&[SocketAddr::new(address, port)], self.policy)?;
        }
        Ok(url)
    }

    /// Makes one attempt at `now` (which picks the signing secrets and the timestamp).
    pub async fn send(&self, claimed: &Claimed, now: DateTime<Utc>) -> AttemptResult {
        let started = Instant::now();
        let elapsed = |started: Instant| i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
        let url = match self.check(&claimed.url) {
            Ok(url) => url,
            Err(message) => {
                return AttemptResult {
                    status_code: None,
                    duration_ms: 0,
                    response: None,
                    error: Some(message),
                }
            }
        };
        let body = claimed.body();
        let id = claimed.event_id.to_string();
        let timestamp = now.timestamp();
        let secrets = claimed.secrets(now);
        let standard: Vec<String> = secrets
            .iter()
            .map(|secret| standard_signature(secret, &id, timestamp, &body))
            .collect();
        let request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("signature", partnero_signature(secrets[0], &body))
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", standard.join(" "))
            .body(body);
        match request.send().await {
            Err(error) => AttemptResult {
                status_code: None,
                duration_ms: elapsed(started),
                response: None,
                error: Some(describe(&error)),
            },
            Ok(mut response) => {
                let status = i32::from(response.status().as_u16());
                let mut read = Vec::new();
                let mut error = None;
                while read.len() < MAX_RESPONSE_BYTES {
                    match response.chunk().await {
                        Ok(Some(chunk)) => read.extend_from_slice(&chunk),
                        Ok(None) => break,
                        Err(failure) => {
                            // The status arrived: a body cut short does not undo a 2xx.
                            if !(200..300).contains(&status) {
                                error = Some(describe(&failure));
                            }
                            break;
                        }
                    }
                }
                read.truncate(MAX_RESPONSE_BYTES);
                AttemptResult {
                    status_code: Some(status),
                    duration_ms: elapsed(started),
                    response: Some(String::from_utf8_lossy(&read).into_owned()),
                    error,
                }
            }
        }
    }
}

/// A readable reason for a failed request.
fn describe(error: &reqwest::Error) -> String {
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return refused.0.clone();
        }
        source = current.source();
    }
    if error.is_timeout() {
        return "The receiver did not answer in time.".to_string();
    }
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(current) = source {
        message.push_str(": ");
        message.push_str(&current.to_string());
        source = current.source();
    }
    message.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_example_signature() {
        // The example of the Standard Webhooks specification.
        let signature = standard_signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
