//! User-interactive authentication: sessions, stages and flows.
//!
//! A guarded operation calls [`Accounts::check_uiaa`](super::Accounts::check_uiaa) with the
//! flows it accepts. Until one flow's stages are all completed the caller gets 401 with the
//! flows, the completed stages and the session ID; sessions live in Postgres so any process
//! of a scaled-out server can continue them.

use ruma::UserId;
use ruma::api::client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo, UserIdentifier};
use ruma::api::error::{ErrorKind, StandardErrorBody};

use super::{Accounts, now_ms, tokens};
use crate::db;
use crate::error::{Error, Result};

/// Sessions older than this are forgotten.
pub const SESSION_LIFETIME_MS: i64 = 15 * 60 * 1000;

/// The 401 that tells the client which flows there are and where its session stands.
/// `params` is always present, `{}` when no stage has any (the spec's response shape, and
/// what Synapse sends; some clients read it unconditionally).
fn uiaa_error(
    flows: &[Vec<AuthType>],
    session: String,
    completed: Vec<AuthType>,
    error: Option<StandardErrorBody>,
) -> Error {
    let mut info = UiaaInfo::new(flows.iter().map(|f| AuthFlow::new(f.clone())).collect());
    info.session = Some(session);
    info.completed = completed;
    info.params = serde_json::value::to_raw_value(&serde_json::Map::new()).ok();
    info.auth_error = error.map(Box::new);
    Error::Uiaa(Box::new(info))
}

/// What a session authorises; a session begun for one purpose cannot finish another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Register,
    DeleteDevices,
    ChangePassword,
    Deactivate,
    UploadSigningKeys,
    AddThreepid,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Register => "register",
            Purpose::DeleteDevices => "delete_devices",
            Purpose::ChangePassword => "change_password",
            Purpose::Deactivate => "deactivate",
            Purpose::UploadSigningKeys => "upload_signing_keys",
            Purpose::AddThreepid => "add_threepid",
        }
    }
}

impl Accounts {
    /// `Ok` once `auth` completes one of `flows`; otherwise the 401 that tells the client
    /// what is left.
    pub async fn check_uiaa(
        &self,
        purpose: Purpose,
        user: Option<&UserId>,
        flows: &[Vec<AuthType>],
        auth: Option<&AuthData>,
    ) -> Result<()> {
        self.check_uiaa_session(purpose, user, flows, auth)
            .await
            .map(|_| ())
    }

    /// [`Accounts::check_uiaa`], returning the ID of the completed session.
    ///
    /// A completed session stays (until it expires) with its stages completed, as in
    /// Synapse: repeating the completing request, or sending only the session, passes
    /// again, which is what makes a repeated registration idempotent.
    pub async fn check_uiaa_session(
        &self,
        purpose: Purpose,
        user: Option<&UserId>,
        flows: &[Vec<AuthType>],
        auth: Option<&AuthData>,
    ) -> Result<String> {
        let Some(auth) = auth else {
            let session = self.new_uiaa_session(purpose, user).await?;
            return Err(uiaa_error(flows, session, Vec::new(), None));
        };
        let session_id = match auth.session() {
            Some(s) => s.to_owned(),
            None => self.new_uiaa_session(purpose, user).await?,
        };
        let row = self.uiaa_session(&session_id).await?;
        if row.purpose != purpose.as_str() || row.user_id.as_deref() != user.map(UserId::as_str) {
            return Err(Error::forbidden(
                "This UIAA session was begun for another request",
            ));
        }
        let completed_before: Vec<AuthType> = row
            .completed
            .iter()
            .map(|s| AuthType::from(s.as_str()))
            .collect();
        let completes =
            |done: &[AuthType]| flows.iter().any(|f| f.iter().all(|s| done.contains(s)));

        // Only the session (the fallback's acknowledgement): done if its stages are.
        let Some(stage) = auth.auth_type() else {
            return match completes(&completed_before) {
                true => Ok(session_id),
                false => Err(uiaa_error(flows, session_id, completed_before, None)),
            };
        };
        let allowed = flows.iter().any(|f| f.contains(&stage));
        let verdict = if !allowed {
            Err(StandardErrorBody::new(
                ErrorKind::Unrecognized,
                format!("Authentication type {stage} is not accepted here"),
            ))
        } else {
            self.check_stage(auth, user).await?
        };
        if let Err(body) = verdict {
            return Err(uiaa_error(flows, session_id, completed_before, Some(body)));
        }

        let completed = db::uiaa::add_completed(&self.db, &session_id, stage.as_str()).await?;
        let completed: Vec<AuthType> = completed
            .iter()
            .map(|s| AuthType::from(s.as_str()))
            .collect();
        match completes(&completed) {
            true => Ok(session_id),
            false => Err(uiaa_error(flows, session_id, completed, None)),
        }
    }

    /// A live session; an unknown or expired one is the client's error.
    pub(super) async fn uiaa_session(&self, session_id: &str) -> Result<db::uiaa::SessionRow> {
        db::uiaa::get(&self.db, session_id)
            .await?
            .filter(|r| r.created_ts >= now_ms() - SESSION_LIFETIME_MS)
            .ok_or_else(|| Error::bad_request("Unknown or expired UIAA session"))
    }

    async fn new_uiaa_session(&self, purpose: Purpose, user: Option<&UserId>) -> Result<String> {
        let id = tokens::new_session_id();
        let now = now_ms();
        db::uiaa::expire(&self.db, now - SESSION_LIFETIME_MS).await?;
        db::uiaa::create(
            &self.db,
            &id,
            user.map(UserId::as_str),
            purpose.as_str(),
            now,
        )
        .await?;
        Ok(id)
    }

    /// Whether one stage succeeds; `Err(body)` is a failed stage the client may retry.
    async fn check_stage(
        &self,
        auth: &AuthData,
        user: Option<&UserId>,
    ) -> Result<Result<(), StandardErrorBody>> {
        Ok(match auth {
            AuthData::Dummy(_) => Ok(()),
            AuthData::RegistrationToken(t) => {
                if self
                    .registration
                    .tokens
                    .iter()
                    .any(|known| known == &t.token)
                {
                    Ok(())
                } else {
                    Err(StandardErrorBody::new(
                        ErrorKind::Forbidden,
                        "Invalid registration token".into(),
                    ))
                }
            }
            AuthData::Password(p) => {
                let claimed = match &p.identifier {
                    UserIdentifier::Matrix(m) => self.resolve_user(&m.user),
                    _ => None,
                };
                match (claimed, user) {
                    // Someone else's valid credentials never authorise this user's request
                    // (a stolen access token with the thief's own password): refused
                    // outright, as Synapse does, not offered another try. Wrong ones are
                    // a failed stage like any other.
                    (Some(claimed), Some(user))
                        if claimed != user
                            && self.password_matches(&claimed, &p.password).await? =>
                    {
                        return Err(Error::forbidden(
                            "Authentication must be for the user of the access token",
                        ));
                    }
                    (Some(claimed), Some(user)) if claimed == user => {
                        if self.password_matches(user, &p.password).await? {
                            Ok(())
                        } else {
                            Err(StandardErrorBody::new(
                                ErrorKind::Forbidden,
                                "Invalid password".into(),
                            ))
                        }
                    }
                    _ => Err(StandardErrorBody::new(
                        ErrorKind::Forbidden,
                        "Password authentication must be for the requesting user".into(),
                    )),
                }
            }
            _ => Err(StandardErrorBody::new(
                ErrorKind::Unrecognized,
                "This authentication type is not supported".to_owned(),
            )),
        })
    }
}
