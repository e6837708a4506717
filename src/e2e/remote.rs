//! `/keys/query` and `/keys/claim` for users of any server: local users from our tables,
//! remote users by asking their servers, one request per server, concurrently, all within the
//! client's timeout. A server that fails or is too slow is listed in `failures`; what a server
//! answers is checked against what it was asked, so it can only speak for its own users and
//! the devices asked about.
//!
//! Why the network leg is a closure: the inbound transaction code in `federation/` calls the
//! EDU handlers of [`super::federation`], so `e2e` must not import `federation` (that would be
//! a cycle). The caller, which reaches both (the HTTP handler), passes the request to another
//! server in as `remote`, the way state resolution takes its fetch closures: this module
//! keeps the grouping, the time limit, the checks and the merge, and stays testable without
//! a network.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use ruma::api::client::keys::{claim_keys, get_keys};
use ruma::api::federation::keys::{claim_keys as fed_claim_keys, get_keys as fed_get_keys};
use ruma::serde::Raw;
use ruma::{OneTimeKeyAlgorithm, OwnedDeviceId, OwnedServerName, OwnedUserId, ServerName, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::E2e;
use crate::error::{Error, Result};

/// The spec's recommended wait for remote servers when the client names none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a client may make us wait for remote servers.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Servers asked at once for one request.
const MAX_CONCURRENT_SERVERS: usize = 32;

/// What `/keys/query` asks: user → devices (empty: all of them).
pub type KeyQuery = BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>;
/// What `/keys/claim` asks: user → device → algorithm.
pub type KeyClaims = BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>;

impl E2e {
    /// `/keys/query`: keys of local users, and of remote users as their servers answer
    /// through `remote` (one call per server, concurrently, within `timeout`).
    pub async fn query_keys<F, Fut>(
        &self,
        caller: &UserId,
        wanted: &KeyQuery,
        timeout: Option<Duration>,
        remote: F,
    ) -> Result<get_keys::v3::Response>
    where
        F: Fn(OwnedServerName, fed_get_keys::v1::Request) -> Fut,
        Fut: Future<Output = Result<fed_get_keys::v1::Response>>,
    {
        let by_server = self.group_remote(wanted);
        let ask = |server: &OwnedServerName, asked: &KeyQuery| {
            remote(
                server.clone(),
                fed_get_keys::v1::Request::new(asked.clone()),
            )
        };
        let (local, answers) = tokio::join!(
            self.local_keys(Some(caller), wanted),
            ask_each(&by_server, timeout, ask)
        );
        let mut out = local?;
        for (server, asked, answer) in answers {
            match answer {
                Ok(answer) => merge_query_answer(server, asked, answer, &mut out),
                Err(failure) => {
                    out.failures.insert(server.to_string(), failure);
                }
            }
        }
        Ok(out)
    }

    /// `/keys/claim`: one-time keys of local users, and of remote users as their servers
    /// hand them out through `remote` (one call per server, concurrently, within `timeout`).
    pub async fn claim_keys<F, Fut>(
        &self,
        wanted: &KeyClaims,
        timeout: Option<Duration>,
        remote: F,
    ) -> Result<claim_keys::v3::Response>
    where
        F: Fn(OwnedServerName, fed_claim_keys::v1::Request) -> Fut,
        Fut: Future<Output = Result<fed_claim_keys::v1::Response>>,
    {
        let by_server = self.group_remote(wanted);
        let ask = |server: &OwnedServerName, asked: &KeyClaims| {
            remote(
                server.clone(),
                fed_claim_keys::v1::Request::new(asked.clone()),
            )
        };
        let (local, answers) =
            tokio::join!(self.local_claim(wanted), ask_each(&by_server, timeout, ask));
        let mut out = local?;
        for (server, asked, answer) in answers {
            match answer {
                Ok(answer) => merge_claim_answer(server, asked, answer, &mut out),
                Err(failure) => {
                    out.failures.insert(server.to_string(), failure);
                }
            }
        }
        Ok(out)
    }

    /// The remote users of `wanted`, grouped by their server.
    fn group_remote<T: Clone>(
        &self,
        wanted: &BTreeMap<OwnedUserId, T>,
    ) -> BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>> {
        let mut by_server: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, T>> = BTreeMap::new();
        for (user, v) in wanted {
            if !self.is_local(user) {
                by_server
                    .entry(user.server_name().to_owned())
                    .or_default()
                    .insert(user.clone(), v.clone());
            }
        }
        by_server
    }
}

/// Ask every server its part of the request, at most [`MAX_CONCURRENT_SERVERS`] at a time and
/// all within one deadline, so a client naming many servers waits no longer than one would.
/// Each server's answer, or the `failures` entry for it.
async fn ask_each<A, Resp, Fut>(
    by_server: &BTreeMap<OwnedServerName, A>,
    timeout: Option<Duration>,
    ask: impl Fn(&OwnedServerName, &A) -> Fut,
) -> Vec<(&OwnedServerName, &A, std::result::Result<Resp, Value>)>
where
    Fut: Future<Output = Result<Resp>>,
{
    let deadline = tokio::time::Instant::now() + time_limit(timeout);
    // Built up front (futures do nothing until polled): a lazy iterator of async blocks here
    // would make the handler's future not provably `Send`.
    let calls: Vec<_> = by_server
        .iter()
        .map(|(server, asked)| {
            let call = ask(server, asked);
            async move {
                let answer = match tokio::time::timeout_at(deadline, call).await {
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(e)) => {
                        tracing::info!(%server, error = %e, "remote key request failed");
                        Err(failure(&e))
                    }
                    Err(_) => {
                        tracing::info!(%server, "remote key request timed out");
                        Err(timed_out())
                    }
                };
                (server, asked, answer)
            }
        })
        .collect();
    futures::stream::iter(calls)
        .buffer_unordered(MAX_CONCURRENT_SERVERS)
        .collect()
        .await
}

fn time_limit(requested: Option<Duration>) -> Duration {
    requested.unwrap_or(DEFAULT_TIMEOUT).min(MAX_TIMEOUT)
}

/// The `failures` entry for a server that answered with an error or could not be reached.
/// Its own error text is not passed on (it is in our log).
fn failure(e: &Error) -> Value {
    let status = e.status_code();
    let status = if status.is_client_error() {
        status.as_u16()
    } else {
        503
    };
    json!({"status": status, "message": "The remote server could not be reached or refused the request"})
}

fn timed_out() -> Value {
    json!({"status": 503, "message": "The remote server did not answer in time"})
}

/// The fields of a device-keys object that say whose it is.
#[derive(Deserialize)]
struct DeviceOwner {
    user_id: OwnedUserId,
    device_id: OwnedDeviceId,
}

/// The fields of a cross-signing key that say whose it is and what it is for.
#[derive(Deserialize)]
struct CrossSigningOwner {
    user_id: OwnedUserId,
    #[serde(default)]
    usage: Vec<String>,
}

fn device_is(
    raw: &Raw<ruma::encryption::DeviceKeys>,
    user: &UserId,
    device: &OwnedDeviceId,
) -> bool {
    raw.deserialize_as_unchecked::<DeviceOwner>()
        .is_ok_and(|o| o.user_id == user && o.device_id == *device)
}

fn cross_signing_is(
    raw: &Raw<ruma::encryption::CrossSigningKey>,
    user: &UserId,
    usage: &str,
) -> bool {
    raw.deserialize_as_unchecked::<CrossSigningOwner>()
        .is_ok_and(|o| o.user_id == user && o.usage.iter().any(|u| u == usage))
}

/// Add what `server` answered to a key query into `out`, keeping only keys of users and
/// devices it was asked about whose objects name that same user and device.
pub fn merge_query_answer(
    server: &ServerName,
    asked: &KeyQuery,
    answer: fed_get_keys::v1::Response,
    out: &mut get_keys::v3::Response,
) {
    let mut discarded = 0usize;
    for (user, devices) in answer.device_keys {
        let Some(wanted) = asked.get(&user) else {
            discarded += devices.len();
            continue;
        };
        for (device, raw) in devices {
            if (!wanted.is_empty() && !wanted.contains(&device)) || !device_is(&raw, &user, &device)
            {
                discarded += 1;
                continue;
            }
            out.device_keys
                .entry(user.clone())
                .or_default()
                .insert(device, raw);
        }
    }
    for (keys, usage, into) in [
        (answer.master_keys, "master", &mut out.master_keys),
        (
            answer.self_signing_keys,
            "self_signing",
            &mut out.self_signing_keys,
        ),
    ] {
        for (user, raw) in keys {
            if asked.contains_key(&user) && cross_signing_is(&raw, &user, usage) {
                into.insert(user, raw);
            } else {
                discarded += 1;
            }
        }
    }
    if discarded > 0 {
        tracing::info!(%server, discarded, "dropped keys a server sent that were not asked for or not its users'");
    }
}

/// Add what `server` handed out for a claim into `out`: at most one key per device asked
/// about, of the algorithm asked for.
pub fn merge_claim_answer(
    server: &ServerName,
    asked: &KeyClaims,
    answer: fed_claim_keys::v1::Response,
    out: &mut claim_keys::v3::Response,
) {
    let mut discarded = 0usize;
    for (user, devices) in answer.one_time_keys {
        let Some(wanted) = asked.get(&user) else {
            discarded += devices.len();
            continue;
        };
        for (device, keys) in devices {
            let Some(algorithm) = wanted.get(&device) else {
                discarded += keys.len();
                continue;
            };
            let mut matching = keys
                .into_iter()
                .filter(|(id, _)| id.algorithm() == *algorithm);
            match matching.next() {
                Some((id, key)) => {
                    out.one_time_keys
                        .entry(user.clone())
                        .or_default()
                        .entry(device)
                        .or_default()
                        .insert(id, key);
                }
                None => discarded += 1,
            }
            discarded += matching.count();
        }
    }
    if discarded > 0 {
        tracing::info!(%server, discarded, "dropped one-time keys a server sent that were not asked for");
    }
}

#[cfg(test)]
mod tests {
    use ruma::{owned_device_id, owned_server_name, owned_user_id};
    use serde_json::value::to_raw_value;

    use super::*;

    fn raw<T>(v: Value) -> Raw<T> {
        Raw::from_json(to_raw_value(&v).expect("JSON"))
    }

    fn device(user: &str, device: &str) -> Raw<ruma::encryption::DeviceKeys> {
        raw(json!({
            "user_id": user, "device_id": device,
            "algorithms": ["m.megolm.v1.aes-sha2"],
            "keys": {format!("ed25519:{device}"): "key"},
            "signatures": {}
        }))
    }

    fn cross(user: &str, usage: &str) -> Raw<ruma::encryption::CrossSigningKey> {
        raw(json!({"user_id": user, "usage": [usage], "keys": {"ed25519:pub": "pub"}}))
    }

    #[test]
    fn query_answers_keep_only_what_was_asked_and_matches() {
        let server = owned_server_name!("remote.test");
        let bob = owned_user_id!("@bob:remote.test");
        let carol = owned_user_id!("@carol:remote.test");
        let asked: KeyQuery = [
            (bob.clone(), vec![]),
            (carol.clone(), vec![owned_device_id!("C1")]),
        ]
        .into();
        let mut answer = fed_get_keys::v1::Response::new(
            [
                (
                    bob.clone(),
                    [
                        (owned_device_id!("B1"), device("@bob:remote.test", "B1")),
                        // A key object for another device than the one it is filed under.
                        (owned_device_id!("B2"), device("@bob:remote.test", "B3")),
                        // A key object of another user.
                        (owned_device_id!("B4"), device("@mallory:remote.test", "B4")),
                    ]
                    .into(),
                ),
                (
                    carol.clone(),
                    [
                        (owned_device_id!("C1"), device("@carol:remote.test", "C1")),
                        // Not asked about.
                        (owned_device_id!("C2"), device("@carol:remote.test", "C2")),
                    ]
                    .into(),
                ),
                // Not asked about at all (and not even this server's user).
                (
                    owned_user_id!("@dave:elsewhere.test"),
                    [(owned_device_id!("D1"), device("@dave:elsewhere.test", "D1"))].into(),
                ),
            ]
            .into(),
        );
        answer.master_keys = [
            (bob.clone(), cross("@bob:remote.test", "master")),
            (carol.clone(), cross("@mallory:remote.test", "master")),
        ]
        .into();
        answer.self_signing_keys = [
            (bob.clone(), cross("@bob:remote.test", "master")),
            (carol.clone(), cross("@carol:remote.test", "self_signing")),
        ]
        .into();

        let mut out = get_keys::v3::Response::new();
        merge_query_answer(&server, &asked, answer, &mut out);
        let devices: Vec<(String, String)> = out
            .device_keys
            .iter()
            .flat_map(|(u, ds)| ds.keys().map(move |d| (u.to_string(), d.to_string())))
            .collect();
        assert_eq!(
            devices,
            vec![
                ("@bob:remote.test".to_owned(), "B1".to_owned()),
                ("@carol:remote.test".to_owned(), "C1".to_owned()),
            ]
        );
        assert_eq!(out.master_keys.keys().collect::<Vec<_>>(), vec![&bob]);
        assert_eq!(
            out.self_signing_keys.keys().collect::<Vec<_>>(),
            vec![&carol]
        );
    }

    #[test]
    fn claim_answers_keep_one_key_of_the_asked_algorithm_per_asked_device() {
        let server = owned_server_name!("remote.test");
        let bob = owned_user_id!("@bob:remote.test");
        let asked: KeyClaims = [(
            bob.clone(),
            [(
                owned_device_id!("B1"),
                OneTimeKeyAlgorithm::SignedCurve25519,
            )]
            .into(),
        )]
        .into();
        let key = || raw(json!({"key": "k", "signatures": {}}));
        let answer = fed_claim_keys::v1::Response::new(
            [
                (
                    bob.clone(),
                    [
                        (
                            owned_device_id!("B1"),
                            [
                                ("curve25519:AAAA".try_into().expect("key id"), key()),
                                ("signed_curve25519:AAAB".try_into().expect("key id"), key()),
                                ("signed_curve25519:AAAC".try_into().expect("key id"), key()),
                            ]
                            .into(),
                        ),
                        (
                            owned_device_id!("B2"),
                            [("signed_curve25519:AAAD".try_into().expect("key id"), key())].into(),
                        ),
                    ]
                    .into(),
                ),
                (
                    owned_user_id!("@eve:remote.test"),
                    [(
                        owned_device_id!("E1"),
                        [("signed_curve25519:AAAE".try_into().expect("key id"), key())].into(),
                    )]
                    .into(),
                ),
            ]
            .into(),
        );
        let mut out = claim_keys::v3::Response::new(BTreeMap::new());
        merge_claim_answer(&server, &asked, answer, &mut out);
        assert_eq!(out.one_time_keys.len(), 1);
        let b1 = &out.one_time_keys[&bob][&owned_device_id!("B1")];
        assert_eq!(
            b1.keys().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["signed_curve25519:AAAB"]
        );
        assert!(!out.one_time_keys[&bob].contains_key(&owned_device_id!("B2")));
    }

    #[tokio::test]
    async fn each_server_is_asked_once_and_slow_or_failing_ones_become_failures() {
        let by_server: BTreeMap<OwnedServerName, u32> = [
            (owned_server_name!("fast.test"), 1),
            (owned_server_name!("refusing.test"), 2),
            (owned_server_name!("slow.test"), 3),
        ]
        .into();
        let asked = std::sync::Mutex::new(Vec::new());
        let answers = ask_each(&by_server, Some(Duration::from_millis(200)), |server, n| {
            asked.lock().expect("lock").push(server.to_string());
            let (server, n) = (server.clone(), *n);
            async move {
                match server.as_str() {
                    "fast.test" => Ok(n * 10),
                    "refusing.test" => Err(Error::forbidden("no")),
                    _ => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        Ok(n)
                    }
                }
            }
        })
        .await;
        let mut asked = asked.into_inner().expect("lock");
        asked.sort();
        assert_eq!(asked, vec!["fast.test", "refusing.test", "slow.test"]);
        let by_name: BTreeMap<String, std::result::Result<u32, Value>> = answers
            .into_iter()
            .map(|(server, _, answer)| (server.to_string(), answer))
            .collect();
        assert_eq!(by_name["fast.test"], Ok(10));
        assert_eq!(
            by_name["refusing.test"]
                .as_ref()
                .map_err(|f| f["status"].clone()),
            Err(json!(403))
        );
        assert_eq!(by_name["slow.test"], Err(timed_out()));
    }

    #[test]
    fn failures_hide_remote_detail_and_keep_client_errors() {
        let refused = failure(&Error::forbidden("secret detail"));
        assert_eq!(refused["status"], 403);
        assert!(!refused.to_string().contains("secret"));
        assert_eq!(failure(&Error::Upstream("x".into()))["status"], 503);
        assert_eq!(timed_out()["status"], 503);
        assert_eq!(time_limit(None), DEFAULT_TIMEOUT);
        assert_eq!(time_limit(Some(Duration::from_secs(3600))), MAX_TIMEOUT);
    }
}
