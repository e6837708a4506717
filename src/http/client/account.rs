//! `GET /_matrix/client/v3/account/whoami`, `POST /account/password`, `POST /account/deactivate`,
//! and the third-party identifier endpoints: `POST /account/3pid/{email,msisdn}/requestToken`,
//! `POST /register/{email,msisdn}/requestToken`, `POST /account/password/email/requestToken`,
//! `POST /account/3pid/add`, `/bind`, `/unbind`, `/delete`
//!
//! This server has no email sender and no identity server (nor a delegate for phone
//! numbers), so no third-party identifier can be validated, added or bound here. Each
//! endpoint answers as Synapse answers in that configuration (same status and errcode, after
//! the same checks of the request), so clients show "not supported on this server" rather
//! than an error of the server.
//!
//! [spec](https://spec.matrix.org/latest/client-server-api/#account-management),
//! [3PID](https://spec.matrix.org/latest/client-server-api/#adding-account-administrative-contact-information)

use axum::Router;
use axum::body::Bytes;
use axum::response::Response;
use ruma::api::client::account::ThirdPartyIdRemovalStatus;
use ruma::api::client::account::{
    add_3pid, bind_3pid, change_password, deactivate, delete_3pid,
    request_3pid_management_token_via_email, request_3pid_management_token_via_msisdn,
    request_password_change_token_via_email, request_registration_token_via_email,
    request_registration_token_via_msisdn, unbind_3pid, whoami,
};
use ruma::api::client::uiaa::AuthType;
use ruma::api::error::ErrorKind;
use ruma::thirdparty::Medium;

use crate::account::uiaa::Purpose;
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::ruma::{Ruma, route, route_raw};

pub fn routes(r: Router<AppState>) -> Router<AppState> {
    let r = route(r, whoami_route);
    let r = route(r, change_password_route);
    let r = route(r, deactivate_route);
    // The email endpoints refuse before reading the body, as Synapse does without an email
    // sender: whatever the body, the answer is the same.
    let r = route_raw::<request_3pid_management_token_via_email::v3::Request, Bytes, _, _>(
        r,
        |_, _: Bytes| async { Err::<Response, _>(no_email_for_3pid()) },
    );
    let r = route_raw::<request_registration_token_via_email::v3::Request, Bytes, _, _>(
        r,
        |_, _: Bytes| async {
            Err::<Response, _>(Error::bad_request(
                "Email-based registration has been disabled on this server",
            ))
        },
    );
    let r = route_raw::<request_password_change_token_via_email::v3::Request, Bytes, _, _>(
        r,
        |_, _: Bytes| async {
            Err::<Response, _>(Error::bad_request(
                "Email-based password resets have been disabled on this server",
            ))
        },
    );
    let r = route(r, msisdn_3pid_token_route);
    let r = route(r, msisdn_registration_token_route);
    let r = route(r, add_3pid_route);
    let r = route(r, bind_3pid_route);
    let r = route(r, unbind_3pid_route);
    route(r, delete_3pid_route)
}

/// The flows that guard sensitive account changes: re-enter the password.
pub fn password_flows() -> Vec<Vec<AuthType>> {
    vec![vec![AuthType::Password]]
}

/// # `GET /_matrix/client/v3/account/whoami`
async fn whoami_route(_: AppState, req: Ruma<whoami::v3::Request>) -> Result<whoami::v3::Response> {
    let mut response = whoami::v3::Response::new(req.auth.user_id, req.auth.is_guest);
    response.device_id = Some(req.auth.device_id);
    Ok(response)
}

/// # `POST /_matrix/client/v3/account/password`
async fn change_password_route(
    state: AppState,
    req: Ruma<change_password::v3::Request>,
) -> Result<change_password::v3::Response> {
    let user = req.auth.ok_or_else(Error::missing_token)?;
    let body = req.body;
    state
        .accounts
        .check_uiaa(
            Purpose::ChangePassword,
            Some(&user.user_id),
            &password_flows(),
            body.auth.as_ref(),
        )
        .await?;
    state
        .accounts
        .change_password(&user, body.new_password, body.logout_devices)
        .await?;
    Ok(change_password::v3::Response::new())
}

/// # `POST /_matrix/client/v3/account/deactivate`
async fn deactivate_route(
    state: AppState,
    req: Ruma<deactivate::v3::Request>,
) -> Result<deactivate::v3::Response> {
    let user = req.auth.ok_or_else(Error::missing_token)?;
    state
        .accounts
        .check_uiaa(
            Purpose::Deactivate,
            Some(&user.user_id),
            &password_flows(),
            req.body.auth.as_ref(),
        )
        .await?;
    state.accounts.deactivate(&user.user_id).await?;
    if req.body.erase {
        state.rooms.erase_user(&user.user_id).await?;
    }
    // No identity server is ever bound by this server, so there is nothing to unbind.
    Ok(deactivate::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    ))
}

fn no_email_for_3pid() -> Error {
    Error::new(
        ErrorKind::ThreepidMediumNotSupported,
        "Adding an email to your account is disabled on this server",
    )
}

/// The media of third-party identifiers the spec knows; others are malformed requests.
fn check_medium(medium: &Medium) -> Result<()> {
    match medium {
        Medium::Email | Medium::Msisdn => Ok(()),
        other => Err(Error::bad_json(format!(
            "Unknown medium {:?}: use \"email\" or \"msisdn\"",
            other.as_str()
        ))),
    }
}

/// # `POST /_matrix/client/v3/account/3pid/msisdn/requestToken`
///
/// The body is checked first (a malformed request is told so); then there is no one to send
/// the text message.
async fn msisdn_3pid_token_route(
    _: AppState,
    _: Ruma<request_3pid_management_token_via_msisdn::v3::Request>,
) -> Result<request_3pid_management_token_via_msisdn::v3::Response> {
    Err(Error::new(
        ErrorKind::ThreepidMediumNotSupported,
        "Adding phone numbers to user account is not supported by this homeserver",
    ))
}

/// # `POST /_matrix/client/v3/register/msisdn/requestToken`
async fn msisdn_registration_token_route(
    _: AppState,
    _: Ruma<request_registration_token_via_msisdn::v3::Request>,
) -> Result<request_registration_token_via_msisdn::v3::Response> {
    Err(Error::bad_request(
        "Registration by phone number is not supported on this homeserver",
    ))
}

/// # `POST /_matrix/client/v3/account/3pid/add`
///
/// The password first, as for any change of the account's identifiers; then the session
/// named cannot be a validated one, since this server validates none.
async fn add_3pid_route(
    state: AppState,
    req: Ruma<add_3pid::v3::Request>,
) -> Result<add_3pid::v3::Response> {
    state
        .accounts
        .check_uiaa(
            Purpose::AddThreepid,
            Some(&req.auth.user_id),
            &password_flows(),
            req.body.auth.as_ref(),
        )
        .await?;
    Err(Error::new(
        ErrorKind::ThreepidAuthFailed,
        "No validated 3pid session found",
    ))
}

/// # `POST /_matrix/client/v3/account/3pid/bind`
///
/// Binding goes through the identity server the client names; this server does not act for
/// its users at identity servers, so it binds nothing (and so has nothing to unbind later).
async fn bind_3pid_route(
    _: AppState,
    _: Ruma<bind_3pid::v3::Request>,
) -> Result<bind_3pid::v3::Response> {
    Err(Error::bad_request(
        "This homeserver does not bind third-party identifiers at identity servers",
    ))
}

/// # `POST /_matrix/client/v3/account/3pid/unbind`
///
/// Nothing was bound through this server, so there is no binding it could remove:
/// `no-support`, as Synapse answers for a user with no recorded binding.
async fn unbind_3pid_route(
    _: AppState,
    req: Ruma<unbind_3pid::v3::Request>,
) -> Result<unbind_3pid::v3::Response> {
    check_medium(&req.body.medium)?;
    Ok(unbind_3pid::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    ))
}

/// # `POST /_matrix/client/v3/account/3pid/delete`
///
/// Deleting an identifier the account does not have is a success (the spec's idempotent
/// delete); no account here has any, and none was bound at an identity server.
async fn delete_3pid_route(
    _: AppState,
    req: Ruma<delete_3pid::v3::Request>,
) -> Result<delete_3pid::v3::Response> {
    check_medium(&req.body.medium)?;
    Ok(delete_3pid::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    ))
}
