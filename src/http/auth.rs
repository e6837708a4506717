//! Who is calling: access tokens for the client API.
//!
//! Each ruma authentication scheme gets an [`Authenticate`] implementation, so an endpoint's
//! metadata alone decides what is checked before its handler runs.

use std::future::Future;

use http::request::Parts;
use ruma::ServerName;
use ruma::api::auth_scheme::{
    AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, NoAccessToken,
    NoAuthentication,
};
use ruma::api::federation::authentication::XMatrix;
use ruma::signatures::PublicKeyMap;

use crate::account::AuthedUser;
use crate::app::AppState;
use crate::error::{Error, Result};

pub trait Authenticate {
    type Output: Send;

    /// Whether the caller is a guest account (whose endpoints are limited, see
    /// [`super::guest`]).
    fn is_guest(_: &Self::Output) -> bool {
        false
    }

    fn authenticate(
        state: &AppState,
        parts: &Parts,
        body: &[u8],
    ) -> impl Future<Output = Result<Self::Output>> + Send;
}

impl Authenticate for NoAuthentication {
    type Output = ();

    async fn authenticate(_: &AppState, _: &Parts, _: &[u8]) -> Result<()> {
        Ok(())
    }
}

impl Authenticate for NoAccessToken {
    type Output = ();

    async fn authenticate(_: &AppState, _: &Parts, _: &[u8]) -> Result<()> {
        Ok(())
    }
}

impl Authenticate for AccessToken {
    type Output = AuthedUser;

    fn is_guest(user: &AuthedUser) -> bool {
        user.is_guest
    }

    async fn authenticate(state: &AppState, parts: &Parts, _: &[u8]) -> Result<AuthedUser> {
        let token = access_token(parts)?.ok_or_else(Error::missing_token)?;
        let user = state.accounts.authenticate(&token).await?;
        tracing::Span::current().record("user", user.user_id.as_str());
        let ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        state.accounts.seen(&user, ip);
        Ok(user)
    }
}

impl Authenticate for AccessTokenOptional {
    type Output = Option<AuthedUser>;

    fn is_guest(user: &Option<AuthedUser>) -> bool {
        user.as_ref().is_some_and(|u| u.is_guest)
    }

    async fn authenticate(state: &AppState, parts: &Parts, _: &[u8]) -> Result<Option<AuthedUser>> {
        match access_token(parts)? {
            Some(_) => AccessToken::authenticate(state, parts, &[]).await.map(Some),
            None => Ok(None),
        }
    }
}

// Application services are not supported yet: their tokens are checked like users' tokens,
// so an unknown appservice token answers M_UNKNOWN_TOKEN rather than being trusted.
impl Authenticate for AppserviceToken {
    type Output = AuthedUser;

    fn is_guest(user: &AuthedUser) -> bool {
        user.is_guest
    }

    async fn authenticate(state: &AppState, parts: &Parts, body: &[u8]) -> Result<AuthedUser> {
        AccessToken::authenticate(state, parts, body).await
    }
}

impl Authenticate for AppserviceTokenOptional {
    type Output = Option<AuthedUser>;

    fn is_guest(user: &Option<AuthedUser>) -> bool {
        user.as_ref().is_some_and(|u| u.is_guest)
    }

    async fn authenticate(
        state: &AppState,
        parts: &Parts,
        body: &[u8],
    ) -> Result<Option<AuthedUser>> {
        AccessTokenOptional::authenticate(state, parts, body).await
    }
}

/// The access token from `Authorization: Bearer …`, or the deprecated `access_token` query
/// parameter that older clients still send.
pub fn access_token(parts: &Parts) -> Result<Option<String>> {
    if let Some(value) = parts.headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| Error::unknown_token())?;
        let token = value
            .strip_prefix("Bearer ")
            .ok_or_else(Error::missing_token)?
            .trim();
        return Ok(Some(token.to_owned()));
    }
    if let Some(query) = parts.uri.query() {
        for (k, v) in form_urlencoded_pairs(query) {
            if k == "access_token" {
                return Ok(Some(v));
            }
        }
    }
    Ok(None)
}

fn form_urlencoded_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        Some((percent_decode(k)?, percent_decode(v)?))
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Signed server-server requests: the X-Matrix header must name us as destination and carry
/// the origin's valid signature over method, URI, origin, destination and body.
impl Authenticate for ruma::api::federation::authentication::ServerSignatures {
    type Output = ruma::OwnedServerName;

    async fn authenticate(
        state: &AppState,
        parts: &Parts,
        body: &[u8],
    ) -> Result<ruma::OwnedServerName> {
        let ours = state.keys.server_name();
        let x = read_x_matrix(&parts.headers, ours)?;
        let keys = state.federation.remote_keys.key_map(&x.origin, &x.key).await.map_err(|e| {
            tracing::info!(origin = %x.origin, error = %e, "could not get the origin's signing key");
            unauthorized("Could not verify the origin's signing key")
        })?;
        verify_x_matrix(&x, parts, body, ours, &keys)?;
        tracing::Span::current().record("user", x.origin.as_str());
        state.federation.sender.destination_alive(&x.origin);
        Ok(x.origin)
    }
}

fn unauthorized(why: &str) -> Error {
    Error::new(ruma::api::error::ErrorKind::Unauthorized, why)
}

/// The X-Matrix header of a request, refused unless it is meant for us (`ours`) and comes
/// from another server. Nothing is verified yet: see [`verify_x_matrix`].
///
/// No header, or one of another scheme, is 401; an X-Matrix header that cannot be read
/// (a field missing, an origin or destination that is not a server name, such as one with a
/// non-numeric port) is 400, as Synapse answers.
pub fn read_x_matrix(headers: &http::HeaderMap, ours: &ServerName) -> Result<XMatrix> {
    let x = XMatrix::extract_from_http_headers(headers).map_err(|e| {
        let x_matrix = headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .any(|v| v.as_bytes().starts_with(b"X-Matrix"));
        if x_matrix {
            Error::MalformedAuthorization(format!("Malformed X-Matrix authorization: {e}"))
        } else {
            unauthorized("Missing X-Matrix authorization")
        }
    })?;
    if x.destination.as_ref().is_some_and(|d| d != ours) {
        return Err(unauthorized("Request was meant for another server"));
    }
    if x.origin == *ours {
        return Err(unauthorized(
            "Requests from our own server name are not accepted",
        ));
    }
    Ok(x)
}

/// Check the header's signature over the request (method, URI, origin, destination and
/// body) with the origin's keys.
pub fn verify_x_matrix(
    x: &XMatrix,
    parts: &Parts,
    body: &[u8],
    ours: &ServerName,
    keys: &PublicKeyMap,
) -> Result<()> {
    let request = http::Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .body(body)
        .map_err(|e| Error::internal(e.to_string()))?;
    x.verify_http_request(&request, ours, keys).map_err(|e| {
        tracing::info!(origin = %x.origin, error = %e, "bad X-Matrix signature");
        unauthorized("Invalid request signature")
    })
}

/// The access-token caller, for the few endpoints that have no ruma type (unstable and
/// admin APIs).
pub struct Authed(pub AuthedUser);

impl axum::extract::FromRequestParts<AppState> for Authed {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Authed> {
        AccessToken::authenticate(state, parts, &[])
            .await
            .map(Authed)
    }
}

/// The X-Matrix-verified origin, for the federation endpoints without a ruma type (those
/// with an extension ruma does not model). Only for requests without a body.
pub struct SignedBy(pub ruma::OwnedServerName);

impl axum::extract::FromRequestParts<AppState> for SignedBy {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<SignedBy> {
        ruma::api::federation::authentication::ServerSignatures::authenticate(state, parts, &[])
            .await
            .map(SignedBy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, auth: Option<&str>) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn token_from_header_or_query() {
        assert_eq!(
            access_token(&parts("/x", Some("Bearer abc")))
                .unwrap()
                .as_deref(),
            Some("abc")
        );
        assert_eq!(
            access_token(&parts("/x?a=1&access_token=a%2Bb", None))
                .unwrap()
                .as_deref(),
            Some("a+b")
        );
        assert_eq!(access_token(&parts("/x", None)).unwrap(), None);
        assert!(access_token(&parts("/x", Some("Basic abc"))).is_err());
    }
}
