//! The client-server API calls the scenarios make, the same for every server under test.

use serde_json::{Value, json};

pub type Res<T> = Result<T, String>;

const PASSWORD: &str = "load-test-password";

#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

#[derive(Clone)]
pub struct User {
    pub token: String,
    pub user_id: String,
}

impl User {
    /// The server name part of the user ID: the server's own name.
    pub fn server_name(&self) -> &str {
        self.user_id
            .split_once(':')
            .map_or("", |(_, server)| server)
    }
}

impl Client {
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Res<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| format!("{path}: {e}"))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        // A 401 with a session is the first step of user-interactive auth, not a failure.
        if status.is_success() || (status.as_u16() == 401 && v["session"].is_string()) {
            Ok(v)
        } else {
            Err(format!("{path}: {status} {v}"))
        }
    }

    /// Register `name` through the dummy flow of user-interactive auth.
    pub async fn register(&self, name: &str) -> Res<User> {
        let path = "/_matrix/client/v3/register";
        let mut body = json!({"username": name, "password": PASSWORD});
        let first = self
            .call(reqwest::Method::POST, path, None, Some(&body))
            .await?;
        body["auth"] = json!({"type": "m.login.dummy", "session": first["session"]});
        let done = self
            .call(reqwest::Method::POST, path, None, Some(&body))
            .await?;
        Ok(User {
            token: done["access_token"]
                .as_str()
                .ok_or("no access_token")?
                .to_owned(),
            user_id: done["user_id"].as_str().ok_or("no user_id")?.to_owned(),
        })
    }

    /// A new login (a new device) of `u`.
    pub async fn login(&self, u: &User) -> Res<User> {
        let body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": u.user_id},
            "password": PASSWORD,
        });
        let v = self
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/login",
                None,
                Some(&body),
            )
            .await?;
        Ok(User {
            token: v["access_token"]
                .as_str()
                .ok_or("no access_token")?
                .to_owned(),
            user_id: u.user_id.clone(),
        })
    }

    pub async fn create_room(&self, u: &User) -> Res<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&u.token),
                Some(&json!({"preset": "public_chat", "room_version": "10"})),
            )
            .await?;
        Ok(v["room_id"].as_str().ok_or("no room_id")?.to_owned())
    }

    pub async fn send(&self, u: &User, room: &str, txn: &str) -> Res<()> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
            enc(room)
        );
        let body = json!({"msgtype": "m.text", "body": txn});
        self.call(reqwest::Method::PUT, &path, Some(&u.token), Some(&body))
            .await
            .map(|_| ())
    }

    /// Join by room ID, through `via` when the room lives on another server.
    pub async fn join(&self, u: &User, room: &str, via: Option<&str>) -> Res<()> {
        let mut path = format!("/_matrix/client/v3/join/{}", enc(room));
        if let Some(server) = via {
            path.push_str(&format!("?server_name={}", enc(server)));
        }
        self.call(
            reqwest::Method::POST,
            &path,
            Some(&u.token),
            Some(&json!({})),
        )
        .await
        .map(|_| ())
    }

    pub async fn sync(&self, u: &User, query: &str) -> Res<Value> {
        let path = format!("/_matrix/client/v3/sync{query}");
        self.call(reqwest::Method::GET, &path, Some(&u.token), None)
            .await
    }

    pub async fn get(&self, u: &User, path: &str) -> Res<Value> {
        self.call(reqwest::Method::GET, path, Some(&u.token), None)
            .await
    }
}

/// Percent-encode a path segment or query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
