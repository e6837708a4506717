//! Acting as one test server towards another: requests signed with the first server's own
//! key (read from its data directory), as its real federation client would send them.

use std::time::Duration;

use serde_json::{Value, json};

use super::server::{TestServer, User, enc};

pub fn insecure_client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client")
}

/// `method path` (path with query) from `from` to `to`'s federation listener, X-Matrix
/// signed by `from`; returns (status, JSON body or Null).
pub async fn signed(
    from: &TestServer,
    to: &TestServer,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let response = signed_request(from, to, method, path, body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let value = response.json().await.unwrap_or(Value::Null);
    (status, value)
}

/// The request [`signed`] sends, for callers that read more than a JSON body.
pub fn signed_request(
    from: &TestServer,
    to: &TestServer,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> reqwest::RequestBuilder {
    let origin = ruma::OwnedServerName::try_from(from.server_name()).expect("server name");
    let keys = trellis::keys::ServerKeys::load_or_generate(&from.config.signing_key_path(), origin)
        .expect("signing key");
    let mut to_sign = json!({
        "method": method,
        "uri": path,
        "origin": from.server_name(),
        "destination": to.server_name(),
    });
    if let Some(b) = body {
        to_sign["content"] = b.clone();
    }
    let mut obj: ruma::CanonicalJsonObject =
        serde_json::from_value(to_sign).expect("canonical JSON");
    keys.sign_json(&mut obj).expect("sign");
    let sigs = serde_json::to_value(&obj["signatures"]).expect("signatures");
    let (key_id, sig) = sigs[from.server_name()]
        .as_object()
        .and_then(|m| m.iter().next())
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
        .expect("one signature");
    let header = format!(
        "X-Matrix origin=\"{}\",destination=\"{}\",key=\"{key_id}\",sig=\"{sig}\"",
        from.server_name(),
        to.server_name()
    );
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = insecure_client()
        .request(method, to.federation_url(path))
        .header("authorization", header);
    if let Some(b) = body {
        request = request.json(b);
    }
    request
}

/// Poll `check` until it holds (federation is asynchronous), failing after 60 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `who`'s membership in the room as `u` on `s` sees it (None if there is none to see).
pub async fn membership(s: &TestServer, u: &User, room: &str, who: &str) -> Option<String> {
    let (status, body) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/state/m.room.member/{}",
                enc(who)
            ),
            u.t(),
        )
        .await;
    (status == 200).then(|| body["membership"].as_str().unwrap_or("").to_owned())
}
