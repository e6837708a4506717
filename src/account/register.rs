//! Registration of full accounts through user-interactive auth, and guest upgrades.
//!
//! As in Synapse, the UIA session carries the registration from one request to the next:
//! 1. each request's parameters (the body without `auth` and the password) are kept in the
//!    session when there are any; a request carrying only `auth` uses the kept ones;
//! 2. the password is kept only as its hash, so a later stage need not send it again;
//! 3. once auth completes, the account is created and recorded in the session in one
//!    transaction; a repeated completion of the same session logs in to that account again
//!    (a new device) instead of registering another.

use ruma::api::client::uiaa::{AuthData, AuthType};
use ruma::api::error::ErrorKind;
use ruma::{OwnedDeviceId, OwnedUserId, UserId};
use serde_json::{Map, Value};

use super::uiaa::Purpose;
use super::{Accounts, NewAccount, NewLogin, Session, now_ms};
use crate::db;
use crate::error::{Error, Result};

/// A `POST /register` (kind `user`) in domain terms.
pub struct Registration {
    /// The body's fields other than `auth` and `password`, as sent.
    pub params: Map<String, Value>,
    pub password: Option<String>,
    pub auth: Option<AuthData>,
    pub ip: Option<String>,
}

/// The parameters of a registration that may come from an earlier request of its session.
#[derive(Debug, Default, serde::Deserialize)]
struct Params {
    username: Option<String>,
    device_id: Option<OwnedDeviceId>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
    #[serde(default)]
    refresh_token: bool,
    guest_access_token: Option<String>,
}

impl Params {
    fn read(params: &Map<String, Value>) -> Result<Params> {
        serde_json::from_value(Value::Object(params.clone()))
            .map_err(|e| Error::bad_json(format!("Invalid registration parameters: {e}")))
    }

    fn login(&self, ip: Option<String>) -> Option<NewLogin> {
        (!self.inhibit_login).then(|| NewLogin {
            device_id: self.device_id.clone(),
            device_display_name: self.initial_device_display_name.clone(),
            ip,
            refreshable: self.refresh_token,
        })
    }
}

impl Accounts {
    /// Register a full account (or upgrade a guest's) once `flows` are completed; the 401
    /// of user-interactive auth until then.
    pub async fn register(
        &self,
        flows: &[Vec<AuthType>],
        mut r: Registration,
    ) -> Result<(OwnedUserId, Option<Session>)> {
        // Some clients send the display name alone with a later stage; taken as new
        // parameters it would wipe out the first request's (Synapse ignores it too).
        if r.password.is_none() {
            r.params.remove("initial_device_display_name");
        }
        let requested = Params::read(&r.params)?;
        let prior = match r.auth.as_ref().and_then(AuthData::session) {
            Some(sid) => Some(self.uiaa_session(sid).await?),
            None => None,
        };
        let registered = prior.as_ref().and_then(|p| p.registered_user_id.clone());
        // A bad or taken username is told before the client goes through the stages.
        if let Some(username) = &requested.username {
            let localpart = username.to_lowercase();
            let ours = registered
                .as_deref()
                .and_then(|u| UserId::parse(u).ok())
                .is_some_and(|u| u.localpart() == localpart);
            if !ours {
                match &requested.guest_access_token {
                    Some(token) => {
                        self.guest_to_upgrade(token, &localpart).await?;
                    }
                    None => {
                        self.check_username(&localpart).await?;
                    }
                }
            }
        }

        let session_id = match self
            .check_uiaa_session(Purpose::Register, None, flows, r.auth.as_ref())
            .await
        {
            Ok(sid) => sid,
            Err(Error::Uiaa(info)) => {
                if let Some(sid) = &info.session {
                    self.remember_registration(sid, &r, prior.as_ref()).await?;
                }
                return Err(Error::Uiaa(info));
            }
            Err(e) => return Err(e),
        };
        let row = self.uiaa_session(&session_id).await?;
        let params = match r.params.is_empty() {
            true => Params::read(&row.params.0)?,
            false => requested,
        };

        if let Some(user_id) = &row.registered_user_id {
            return self.log_in_again(user_id, &params, r.ip).await;
        }
        let password_hash = match r.password {
            Some(p) => self.passwords.hash(p).await?,
            None => row
                .password_hash
                .clone()
                .ok_or_else(|| Error::missing_param("Missing parameter: password"))?,
        };
        let login = params.login(r.ip.clone());
        let created = match &params.guest_access_token {
            Some(token) => {
                let localpart = params.username.as_deref().ok_or_else(|| {
                    Error::missing_param("Upgrading a guest account needs its username")
                })?;
                let guest = self
                    .guest_to_upgrade(token, &localpart.to_lowercase())
                    .await?;
                self.upgrade_guest(&guest, &password_hash, &session_id, login)
                    .await?
            }
            None => {
                let new = NewAccount {
                    localpart: params.username.clone(),
                    password: None,
                    password_hash: Some(password_hash),
                    login,
                    ..NewAccount::default()
                };
                self.create_account_for(new, Some(&session_id)).await?
            }
        };
        match created {
            Some(done) => Ok(done),
            // A concurrent request of the session registered first: this one answers as a
            // repeated completion does.
            None => {
                let row = self.uiaa_session(&session_id).await?;
                let user_id = row
                    .registered_user_id
                    .ok_or_else(|| Error::internal("registration session lost its account"))?;
                self.log_in_again(&user_id, &params, r.ip).await
            }
        }
    }

    /// Keep what a registration request asked for in its session, for the requests after
    /// it that carry only `auth`.
    async fn remember_registration(
        &self,
        session_id: &str,
        r: &Registration,
        prior: Option<&db::uiaa::SessionRow>,
    ) -> Result<()> {
        let hashed = prior.is_some_and(|p| p.password_hash.is_some());
        let password_hash = match (&r.password, hashed) {
            (Some(p), false) => Some(self.passwords.hash(p.clone()).await?),
            _ => None,
        };
        if r.params.is_empty() && password_hash.is_none() {
            return Ok(());
        }
        let params = match r.params.is_empty() {
            true => prior.map(|p| p.params.0.clone()).unwrap_or_default(),
            false => r.params.clone(),
        };
        db::uiaa::set_params(&self.db, session_id, &params, password_hash.as_deref()).await?;
        Ok(())
    }

    /// The account a completed registration session created, logged in again (a new device)
    /// unless the client inhibits the login.
    async fn log_in_again(
        &self,
        user_id: &str,
        params: &Params,
        ip: Option<String>,
    ) -> Result<(OwnedUserId, Option<Session>)> {
        let user_id = UserId::parse(user_id)
            .map_err(|e| Error::internal(format!("stored user ID is invalid: {e}")))?;
        tracing::info!(%user_id, "registration session completed again");
        let Some(login) = params.login(ip) else {
            return Ok((user_id, None));
        };
        let mut tx = db::begin(&self.db).await?;
        let session = self
            .start_session(&mut tx, &user_id, login, now_ms())
            .await?;
        tx.commit().await?;
        Ok((user_id, Some(session)))
    }

    /// The guest whose access token `token` is, if they are the user `localpart` names: only
    /// a guest may upgrade, and only their own account.
    async fn guest_to_upgrade(&self, token: &str, localpart: &str) -> Result<OwnedUserId> {
        let invalid = || Error::forbidden("Invalid guest access token");
        let guest = self.authenticate(token).await.map_err(|_| invalid())?;
        if !guest.is_guest {
            return Err(invalid());
        }
        if guest.user_id.localpart() != localpart {
            return Err(Error::forbidden(
                "Cannot register taken user ID without valid guest credentials for that user",
            ));
        }
        Ok(guest.user_id)
    }

    /// Make the guest `user_id` a full account with the password, recorded in the
    /// registration's session; `None` when another request of the session did it first.
    async fn upgrade_guest(
        &self,
        user_id: &UserId,
        password_hash: &str,
        session_id: &str,
        login: Option<NewLogin>,
    ) -> Result<Option<(OwnedUserId, Option<Session>)>> {
        let mut tx = db::begin(&self.db).await?;
        if !db::uiaa::claim_registration(&mut *tx, session_id, user_id.as_str()).await? {
            return Ok(None);
        }
        if !db::users::upgrade_guest(&mut *tx, user_id.as_str(), password_hash).await? {
            return Err(Error::new(
                ErrorKind::UserInUse,
                "This account is no guest account any more",
            ));
        }
        let session = match login {
            Some(login) => Some(
                self.start_session(&mut tx, user_id, login, now_ms())
                    .await?,
            ),
            None => None,
        };
        tx.commit().await?;
        // Cached tokens of the account still say it is a guest's.
        self.tokens.forget_user(user_id);
        tracing::info!(%user_id, "guest account upgraded");
        Ok(Some((user_id.to_owned(), session)))
    }
}
