//! `PUT /_matrix/federation/v1/send_join/{roomId}/{eventId}`,
//! `PUT /_matrix/federation/v1/send_leave/{roomId}/{eventId}`
//!
//! [spec (v1.17, the last to describe them)](https://spec.matrix.org/v1.17/server-server-api/#put_matrixfederationv1send_joinroomideventid)
//!
//! The v1 forms of send_join and send_leave: the same request as v2, but the answer wrapped in
//! the array `[200, {...}]` (a historical bug the v2 forms fixed). MSC4376 removed them from
//! the spec and ruma no longer models them, but deployed servers still call them and Synapse
//! still serves them and falls back to them, so they are defined here as ruma endpoint types:
//! the server routes them like any other, and the federation client sends them when a peer
//! does not know the v2 form.

use http::Method;
use ruma::api::error::{DeserializationError, IntoHttpError};
use ruma::api::federation::authentication::ServerSignatures;
use ruma::api::federation::membership::{create_join_event, create_leave_event};
use ruma::api::path_builder::{PathBuilder, SinglePath};
use ruma::api::{
    IncomingRequest, IncomingResponse, Metadata, OutgoingBody, OutgoingRequest, OutgoingResponse,
};
use ruma::{OwnedEventId, OwnedRoomId};
use serde_json::value::RawValue;

pub use create_join_event::v2::RoomState;

/// A JSON body already serialized.
pub struct JsonBody(Vec<u8>);

impl OutgoingBody for JsonBody {
    type Error = std::convert::Infallible;

    fn content_type(&self) -> Option<http::HeaderValue> {
        Some(http::HeaderValue::from_static("application/json"))
    }

    fn try_into_buf<T: Default + bytes::BufMut + AsRef<[u8]>>(
        self,
    ) -> Result<T, std::convert::Infallible> {
        let mut buf = T::default();
        buf.put_slice(&self.0);
        Ok(buf)
    }
}

/// `[200, value]`, the v1 answer's shape.
fn wrapped<T: serde::Serialize>(value: &T) -> Result<http::Response<JsonBody>, IntoHttpError> {
    let body = serde_json::to_vec(&(200, value))?;
    http::Response::builder()
        .status(http::StatusCode::OK)
        .body(JsonBody(body))
        .map_err(Into::into)
}

/// The value inside `[200, value]`; anything else is not a v1 answer.
fn unwrapped<T: serde::de::DeserializeOwned>(
    response: http::Response<&[u8]>,
) -> Result<T, DeserializationError> {
    let (_, value): (serde::de::IgnoredAny, T) = serde_json::from_slice(response.body())?;
    Ok(value)
}

/// The request both v1 endpoints share: the membership event, named by room and event ID.
fn outgoing<R: Metadata<PathBuilder = SinglePath>>(
    base_url: &str,
    (room_id, event_id, pdu): (&OwnedRoomId, &OwnedEventId, &RawValue),
) -> Result<http::Request<JsonBody>, IntoHttpError> {
    let url = R::make_endpoint_url((), base_url, &[room_id, event_id], "")?;
    http::Request::builder()
        .method(Method::PUT)
        .uri(url)
        .body(JsonBody(pdu.get().as_bytes().to_vec()))
        .map_err(Into::into)
}

macro_rules! v1_endpoint {
    ($(#[$doc:meta])* $name:ident, $path:literal, $v2:path, $answer:ty) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name {
            pub room_id: OwnedRoomId,
            pub event_id: OwnedEventId,
            pub pdu: Box<RawValue>,
        }

        ruma::api::metadata! {
            @for $name,
            method: PUT,
            rate_limited: false,
            authentication: ServerSignatures,
            path: $path,
        }

        impl IncomingRequest for $name {
            type EndpointError = ruma::api::error::Error;
            type OutgoingResponse = V1Answer<$answer>;

            /// The v2 request has the same path parameters and body.
            fn try_from_http_request_inner(
                request: http::Request<&[u8]>,
                path_args: &[&str],
            ) -> Result<Self, DeserializationError> {
                use $v2 as v2;
                let r = v2::Request::try_from_http_request_inner(request, path_args)?;
                Ok($name {
                    room_id: r.room_id,
                    event_id: r.event_id,
                    pdu: r.pdu,
                })
            }
        }

        impl OutgoingRequest for $name {
            type Body = JsonBody;
            type EndpointError = ruma::api::error::Error;
            type IncomingResponse = V1Answer<$answer>;

            fn try_into_http_request_inner(
                self,
                base_url: &str,
                _: <SinglePath as PathBuilder>::Input<'_>,
            ) -> Result<http::Request<JsonBody>, IntoHttpError> {
                outgoing::<Self>(base_url, (&self.room_id, &self.event_id, &self.pdu))
            }
        }
    };
}

/// The answer of a v1 endpoint: `value` on the wire as `[200, value]`.
#[derive(Clone, Debug)]
pub struct V1Answer<T>(pub T);

impl<T: serde::Serialize> OutgoingResponse for V1Answer<T> {
    type Body = JsonBody;

    fn try_into_http_response_inner(self) -> Result<http::Response<JsonBody>, IntoHttpError> {
        wrapped(&self.0)
    }
}

impl<T: serde::de::DeserializeOwned> IncomingResponse for V1Answer<T> {
    type EndpointError = ruma::api::error::Error;

    fn try_from_http_response_inner(
        response: http::Response<&[u8]>,
    ) -> Result<Self, DeserializationError> {
        unwrapped(response).map(V1Answer)
    }
}

/// send_leave's answer inside the array: an empty object.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Empty {}

v1_endpoint!(
    /// `PUT /_matrix/federation/v1/send_join/{roomId}/{eventId}`: answered `[200, RoomState]`.
    SendJoinV1,
    "/_matrix/federation/v1/send_join/{room_id}/{event_id}",
    create_join_event::v2,
    RoomState
);

v1_endpoint!(
    /// `PUT /_matrix/federation/v1/send_leave/{roomId}/{eventId}`: answered `[200, {}]`.
    SendLeaveV1,
    "/_matrix/federation/v1/send_leave/{room_id}/{event_id}",
    create_leave_event::v2,
    Empty
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_wrapped_and_unwrapped() {
        let mut state = RoomState::new();
        state.state = vec![RawValue::from_string(r#"{"a":1}"#.to_owned()).unwrap()];
        let response = V1Answer(state).try_into_http_response_inner().unwrap();
        let body = response.into_body().0;
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value[0], 200);
        assert_eq!(value[1]["state"][0]["a"], 1);
        let back: V1Answer<RoomState> =
            IncomingResponse::try_from_http_response_inner(http::Response::new(&body[..])).unwrap();
        assert_eq!(back.0.state.len(), 1);

        let leave = V1Answer(Empty {}).try_into_http_response_inner().unwrap();
        assert_eq!(leave.into_body().0, b"[200,{}]");
        // A v2-shaped answer is not a v1 answer.
        assert!(
            <V1Answer<Empty> as IncomingResponse>::try_from_http_response_inner(
                http::Response::new(&b"{}"[..])
            )
            .is_err()
        );
    }
}
