//! `GET /_matrix/client/v3/pushers`, `POST /_matrix/client/v3/pushers/set`,
//! `GET /_matrix/client/v3/notifications`
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#push-notifications)

use axum::Router;
use ruma::api::client::push::{get_notifications, get_pushers, set_pusher};
use serde_json::Value;

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, get_pushers_route);
    let r = route(r, set_pusher_route);
    route(r, get_notifications_route)
}

/// # `GET /_matrix/client/v3/pushers`
async fn get_pushers_route(
    state: AppState,
    req: Ruma<get_pushers::v3::Request>,
) -> Result<get_pushers::v3::Response> {
    Ok(get_pushers::v3::Response::new(
        state.push.pushers(&req.auth.user_id).await?,
    ))
}

/// # `POST /_matrix/client/v3/pushers/set`
async fn set_pusher_route(
    state: AppState,
    req: Ruma<set_pusher::v3::Request>,
) -> Result<set_pusher::v3::Response> {
    match req.body.action {
        set_pusher::v3::PusherAction::Post(post) => {
            state
                .push
                .set_pusher(&req.auth, post.pusher, post.append)
                .await?
        }
        set_pusher::v3::PusherAction::Delete(ids) => {
            state.push.delete_pusher(&req.auth.user_id, &ids).await?
        }
        _ => return Err(Error::invalid_param("Unknown pusher action")),
    }
    Ok(set_pusher::v3::Response::new())
}

/// # `GET /_matrix/client/v3/notifications`
async fn get_notifications_route(
    state: AppState,
    req: Ruma<get_notifications::v3::Request>,
) -> Result<get_notifications::v3::Response> {
    let body = req.body;
    let page = state
        .push
        .notifications(
            &req.auth.user_id,
            body.from.as_deref(),
            body.limit,
            body.only.as_deref(),
        )
        .await?;
    let mut response = get_notifications::v3::Response::new(page.notifications);
    response.next_token = page.next_token;
    Ok(response)
}

/// The required keys a `/pushers/set` body lacks, for the `M_MISSING_PARAM` the spec
/// answers with (ruma's parser would only say the body has the wrong shape): `None` when
/// nothing is missing, or the body is not an object at all.
pub(in crate::http) fn missing_set_pusher_params(body: &[u8]) -> Option<Error> {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let mut missing: Vec<&str> = ["app_id", "pushkey", "kind"]
        .into_iter()
        .filter(|k| !body.contains_key(*k))
        .collect();
    // `kind: null` deletes, and needs nothing more.
    if body.get("kind").is_some_and(|k| !k.is_null()) {
        missing.extend(
            ["app_display_name", "device_display_name", "lang", "data"]
                .into_iter()
                .filter(|k| !body.contains_key(*k)),
        );
        if body.get("kind").and_then(Value::as_str) == Some("http")
            && body
                .get("data")
                .is_some_and(|d| d.is_object() && d.get("url").is_none())
        {
            missing.push("data.url");
        }
    }
    (!missing.is_empty())
        .then(|| Error::missing_param(format!("Missing parameters: {}", missing.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn missing(body: Value) -> Option<String> {
        missing_set_pusher_params(body.to_string().as_bytes()).map(|e| e.client_message())
    }

    #[test]
    fn missing_keys_are_named() {
        let full = serde_json::json!({
            "app_id": "a", "pushkey": "k", "kind": "http", "app_display_name": "A",
            "device_display_name": "D", "lang": "en",
            "data": {"url": "https://p.example/_matrix/push/v1/notify"}
        });
        assert_eq!(missing(full.clone()), None);
        assert_eq!(
            missing(serde_json::json!({"app_id": "a", "pushkey": "k", "kind": null})),
            None
        );
        let mut no_url = full.clone();
        no_url["data"] = serde_json::json!({});
        assert_eq!(
            missing(no_url).as_deref(),
            Some("Missing parameters: data.url")
        );
        let mut partial = full;
        let obj = partial.as_object_mut().unwrap();
        obj.remove("lang");
        obj.remove("pushkey");
        assert_eq!(
            missing(partial).as_deref(),
            Some("Missing parameters: pushkey, lang")
        );
        assert_eq!(missing(serde_json::json!([1])), None);
    }
}
