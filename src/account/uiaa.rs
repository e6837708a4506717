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

/// What a session authorises; a session begun for one purpose cannot finish another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Register,
    DeleteDevices,
    ChangePassword,
    Deactivate,
    UploadSigningKeys,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Register => "register",
            Purpose::DeleteDevices => "delete_devices",
            Purpose::ChangePassword => "change_password",
            Purpose::Deactivate => "deactivate",
            Purpose::UploadSigningKeys => "upload_signing_keys",
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
        let info = |session: String, completed: Vec<AuthType>, error: Option<StandardErrorBody>| {
            let mut info = UiaaInfo::new(flows.iter().map(|f| AuthFlow::new(f.clone())).collect());
            info.session = Some(session);
            info.completed = completed;
            info.auth_error = error.map(Box::new);
            Error::Uiaa(Box::new(info))
        };

        let Some(auth) = auth else {
            let session = self.new_uiaa_session(purpose, user).await?;
            return Err(info(session, Vec::new(), None));
        };
        let session_id = match auth.session() {
            Some(s) => s.to_owned(),
            None => self.new_uiaa_session(purpose, user).await?,
        };
        let row = db::uiaa::get(&self.db, &session_id)
            .await?
            .filter(|r| r.created_ts >= now_ms() - SESSION_LIFETIME_MS)
            .ok_or_else(|| Error::bad_request("Unknown or expired UIAA session"))?;
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

        let Some(stage) = auth.auth_type() else {
            let body = StandardErrorBody::new(ErrorKind::Unrecognized, "Unsupported stage".into());
            return Err(info(session_id, completed_before, Some(body)));
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
            return Err(info(session_id, completed_before, Some(body)));
        }

        let completed = db::uiaa::add_completed(&self.db, &session_id, stage.as_str()).await?;
        let completed: Vec<AuthType> = completed
            .iter()
            .map(|s| AuthType::from(s.as_str()))
            .collect();
        if flows
            .iter()
            .any(|f| f.iter().all(|s| completed.contains(s)))
        {
            db::uiaa::delete(&self.db, &session_id).await?;
            Ok(())
        } else {
            Err(info(session_id, completed, None))
        }
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
