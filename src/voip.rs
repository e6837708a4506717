//! TURN credentials for calls. With a secret shared with the TURN server, each user gets
//! time-limited credentials in the TURN REST API form coturn checks (`use-auth-secret`):
//! username `<expiry, unix seconds>:<user ID>`, password base64(HMAC-SHA1(secret, username)).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use ruma::UserId;
use sha1::Sha1;

use crate::config::VoipConfig;

/// What a client is told to use.
#[derive(Debug, PartialEq, Eq)]
pub struct TurnCredentials {
    pub username: String,
    pub password: String,
    pub uris: Vec<String>,
    /// How long the credentials stay valid.
    pub ttl: Duration,
}

/// The credentials for `user` at `now`; `None` when no TURN server is configured.
pub fn turn_credentials(
    config: &VoipConfig,
    user: &UserId,
    now: SystemTime,
) -> Option<TurnCredentials> {
    if config.turn_uris.is_empty() {
        return None;
    }
    let ttl = Duration::from_secs(config.turn_user_lifetime_secs);
    let (username, password) = match (
        &config.turn_shared_secret,
        &config.turn_username,
        &config.turn_password,
    ) {
        (Some(secret), _, _) => {
            let expiry = (now + ttl).duration_since(UNIX_EPOCH).ok()?.as_secs();
            let username = format!("{expiry}:{user}");
            // HMAC takes a key of any length; the error case cannot happen.
            let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).ok()?;
            mac.update(username.as_bytes());
            (username, STANDARD.encode(mac.finalize().into_bytes()))
        }
        (None, Some(u), Some(p)) => (u.clone(), p.clone()),
        _ => return None,
    };
    Some(TurnCredentials {
        username,
        password,
        uris: config.turn_uris.clone(),
        ttl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_secret_credentials_are_the_turn_rest_form() {
        let config = VoipConfig {
            turn_uris: vec!["turn:turn.example.org:3478?transport=udp".into()],
            turn_shared_secret: Some("s3cret".into()),
            turn_user_lifetime_secs: 3600,
            ..VoipConfig::default()
        };
        let user = <&UserId>::try_from("@alice:example.org").unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = turn_credentials(&config, user, now).unwrap();
        assert_eq!(c.username, "1003600:@alice:example.org");
        // HMAC-SHA1("s3cret", "1003600:@alice:example.org"), as coturn computes it.
        let mut mac = Hmac::<Sha1>::new_from_slice(b"s3cret").unwrap();
        mac.update(b"1003600:@alice:example.org");
        assert_eq!(c.password, STANDARD.encode(mac.finalize().into_bytes()));
        assert_eq!(c.password.len(), 28);
        assert_eq!(c.ttl, Duration::from_secs(3600));

        let fixed = VoipConfig {
            turn_uris: config.turn_uris.clone(),
            turn_username: Some("u".into()),
            turn_password: Some("p".into()),
            ..VoipConfig::default()
        };
        let c = turn_credentials(&fixed, user, now).unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));
        assert!(turn_credentials(&VoipConfig::default(), user, now).is_none());
    }
}
