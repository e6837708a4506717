//! Accounts: registration, login, access tokens, devices, passwords and profiles.
//!
//! This is domain code: it speaks ruma identifiers and our [`Error`], never HTTP.

mod account_data;
pub mod last_seen;
pub mod openid;
pub mod password;
pub mod ratelimit;
pub mod register;
pub mod token_cache;
pub mod tokens;
pub mod uiaa;

use std::sync::Arc;

use ruma::{OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};
use sqlx::PgPool;

use crate::config::{Config, RegistrationConfig};
use crate::db;
use crate::error::{Error, Result};
use crate::notify::{Kinds, SyncNotifier};
pub use account_data::{PUSH_RULES, TAGS, default_push_rules_content};
use ratelimit::Limiter;

/// The caller of an access-token endpoint.
#[derive(Debug, Clone)]
pub struct AuthedUser {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub is_guest: bool,
}

/// A fresh login: what /register and /login hand back.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub access_token: String,
    /// For a client that asked for one: the token that renews the access token, and how
    /// long the access token lives.
    pub refresh: Option<(String, std::time::Duration)>,
    /// Whether the login made a new device (which other servers sharing a room with the user
    /// are to be told of).
    pub new_device: bool,
}

/// What a registration asks for, whichever endpoint it came through.
#[derive(Debug, Default)]
pub struct NewAccount {
    /// Lower-cased before use; `None` picks a random localpart.
    pub localpart: Option<String>,
    pub password: Option<String>,
    /// The password already hashed (a registration's, kept in its UIA session), when
    /// `password` is `None`.
    pub password_hash: Option<String>,
    pub is_guest: bool,
    pub is_admin: bool,
    pub displayname: Option<String>,
    /// Log in as part of registering: device and token.
    pub login: Option<NewLogin>,
}

#[derive(Debug, Default)]
pub struct NewLogin {
    pub device_id: Option<OwnedDeviceId>,
    pub device_display_name: Option<String>,
    pub ip: Option<String>,
    /// The client asked for a refresh token (`refresh_token: true`).
    pub refreshable: bool,
}

/// Rate limiters for the unauthenticated account endpoints.
pub struct RateLimiters {
    pub login_per_ip: Limiter,
    pub login_per_user: Limiter,
    pub register_per_ip: Limiter,
}

#[derive(Clone)]
pub struct Accounts {
    db: PgPool,
    /// Wakes the syncs that account data and device changes concern.
    notifier: SyncNotifier,
    server_name: OwnedServerName,
    registration: Arc<RegistrationConfig>,
    pub limits: Arc<RateLimiters>,
    tokens: Arc<token_cache::TokenCache>,
    /// Which devices' last-seen rows were written lately.
    last_seen: Arc<last_seen::LastSeen>,
    passwords: password::Hasher,
    /// Counts push rule changes: rooms keep each room's push rules while none change.
    push: Arc<PushRulesVersion>,
}

/// A count of the changes to local users' push rules. Whoever caches what the rules decide
/// (the rooms' push contexts) keeps the count it saw and reloads when it moved.
#[derive(Default)]
pub struct PushRulesVersion(std::sync::atomic::AtomicU64);

impl PushRulesVersion {
    /// Some local user's push rules changed (called once the change is stored).
    pub fn bump(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn current(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Accounts {
    pub fn new(
        db: PgPool,
        config: &Config,
        notifier: SyncNotifier,
        push: Arc<PushRulesVersion>,
    ) -> Self {
        let rl = &config.rate_limits;
        Accounts {
            db,
            notifier,
            server_name: config.server_name(),
            registration: Arc::new(config.registration.clone()),
            limits: Arc::new(RateLimiters {
                login_per_ip: Limiter::new(rl.login_per_ip),
                login_per_user: Limiter::new(rl.login_per_user),
                register_per_ip: Limiter::new(rl.register_per_ip),
            }),
            tokens: Arc::default(),
            last_seen: Arc::default(),
            passwords: password::Hasher::default(),
            push,
        }
    }

    pub fn server_name(&self) -> &OwnedServerName {
        &self.server_name
    }

    pub fn registration(&self) -> &RegistrationConfig {
        &self.registration
    }

    /// Who holds `token`; `M_UNKNOWN_TOKEN` for unknown, revoked or deactivated.
    pub async fn authenticate(&self, token: &str) -> Result<AuthedUser> {
        let hash = tokens::hash_token(token);
        let now = now_ms();
        if let Some(user) = self.tokens.get(&hash, now) {
            return Ok(user);
        }
        let owner = db::devices::token_owner(&self.db, &hash)
            .await?
            .filter(|o| !o.deactivated)
            .ok_or_else(Error::unknown_token)?;
        if owner.expires_ts.is_some_and(|t| t <= now) {
            // The client is to refresh it, not to log in again.
            return Err(Error::soft_logout());
        }
        let user = AuthedUser {
            user_id: UserId::parse(owner.user_id)
                .map_err(|e| Error::internal(format!("stored user ID is invalid: {e}")))?,
            device_id: owner.device_id.into(),
            is_guest: owner.is_guest,
        };
        self.tokens.insert(hash, user.clone(), owner.expires_ts);
        Ok(user)
    }

    /// `user`'s device made a request, from `ip`: its last-seen time and address are
    /// written in the background, at most once per [`last_seen::INTERVAL`].
    pub fn seen(&self, user: &AuthedUser, ip: Option<std::net::IpAddr>) {
        if !self
            .last_seen
            .due(&user.user_id, &user.device_id, std::time::Instant::now())
        {
            return;
        }
        let db = self.db.clone();
        let (user_id, device_id) = (user.user_id.clone(), user.device_id.clone());
        let ip = ip.map(|i| i.to_string());
        let write = async move {
            let result = db::devices::seen(
                &db,
                user_id.as_str(),
                device_id.as_str(),
                now_ms(),
                ip.as_deref(),
            )
            .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "a device's last-seen time was not written");
            }
        };
        tokio::spawn(tracing::Instrument::instrument(
            write,
            tracing::info_span!("device_last_seen"),
        ));
    }

    /// A user ID on this server from a full ID or a localpart, if it is well formed.
    pub fn resolve_user(&self, user: &str) -> Option<OwnedUserId> {
        let user = user.trim();
        if user.starts_with('@') {
            let id = UserId::parse(user.to_lowercase()).ok()?;
            (id.server_name() == self.server_name).then_some(id)
        } else {
            UserId::parse_with_server_name(user.to_lowercase(), &self.server_name).ok()
        }
    }

    /// Validate a requested localpart for a new account (spec grammar, length, not taken).
    pub async fn check_username(&self, localpart: &str) -> Result<OwnedUserId> {
        let invalid = |why: &str| Error::new(ruma::api::error::ErrorKind::InvalidUsername, why);
        if localpart.is_empty() {
            return Err(invalid("User ID cannot be empty"));
        }
        if !localpart.bytes().all(
            |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'),
        ) {
            return Err(invalid(
                "User ID may only contain a-z, 0-9, '.', '_', '=', '-', '/' and '+'",
            ));
        }
        let user_id = UserId::parse_with_server_name(localpart, &self.server_name)
            .map_err(|_| invalid("User ID is invalid"))?;
        if user_id.as_str().len() > 255 {
            return Err(invalid("User ID is longer than 255 characters"));
        }
        if db::users::exists(&self.db, user_id.as_str()).await? {
            return Err(Error::new(
                ruma::api::error::ErrorKind::UserInUse,
                "User ID already taken",
            ));
        }
        Ok(user_id)
    }

    /// Create an account (and, if asked, log it in) in one transaction.
    pub async fn create_account(&self, new: NewAccount) -> Result<(OwnedUserId, Option<Session>)> {
        self.create_account_for(new, None)
            .await?
            .ok_or_else(|| Error::internal("an account without a session was not created"))
    }

    /// [`Accounts::create_account`], recording the account in the registration's UIA
    /// session (`claim`) in the same transaction; `None` when another request of the session
    /// created its account first (nothing is created then).
    async fn create_account_for(
        &self,
        new: NewAccount,
        claim: Option<&str>,
    ) -> Result<Option<(OwnedUserId, Option<Session>)>> {
        let user_id = match &new.localpart {
            Some(l) => self.check_username(&l.to_lowercase()).await?,
            None => self.random_free_user_id().await?,
        };
        let password_hash = match new.password {
            Some(p) => Some(self.passwords.hash(p).await?),
            None => new.password_hash,
        };
        let now = now_ms();
        let displayname = new
            .displayname
            .unwrap_or_else(|| user_id.localpart().to_owned());
        let mut tx = db::begin(&self.db).await?;
        let inserted = db::users::insert(
            &mut *tx,
            &db::users::NewUser {
                user_id: user_id.as_str(),
                password_hash: password_hash.as_deref(),
                is_guest: new.is_guest,
                is_admin: new.is_admin,
                displayname: Some(&displayname),
                created_ts: now,
            },
        )
        .await;
        match inserted {
            Err(e) if db::is_unique_violation(&e, db::users::USERS_PKEY) => {
                return Err(Error::new(
                    ruma::api::error::ErrorKind::UserInUse,
                    "User ID already taken",
                ));
            }
            other => other?,
        }
        if let Some(sid) = claim
            && !db::uiaa::claim_registration(&mut *tx, sid, user_id.as_str()).await?
        {
            return Ok(None);
        }
        let session = match new.login {
            Some(login) => Some(self.start_session(&mut tx, &user_id, login, now).await?),
            None => None,
        };
        tx.commit().await?;
        tracing::info!(%user_id, guest = new.is_guest, admin = new.is_admin, "account created");
        Ok(Some((user_id, session)))
    }

    async fn random_free_user_id(&self) -> Result<OwnedUserId> {
        for _ in 0..10 {
            let localpart = crate::random::string(12, b"abcdefghijklmnopqrstuvwxyz0123456789");
            let id = UserId::parse_with_server_name(localpart, &self.server_name)
                .map_err(|e| Error::internal(format!("generated user ID invalid: {e}")))?;
            if !db::users::exists(&self.db, id.as_str()).await? {
                return Ok(id);
            }
        }
        Err(Error::internal("could not find a free random user ID"))
    }

    async fn start_session(
        &self,
        tx: &mut sqlx::PgConnection,
        user_id: &UserId,
        login: NewLogin,
        now: i64,
    ) -> Result<Session> {
        Ok(self.start_session_on(tx, user_id, login, now).await?.0)
    }

    /// [`Accounts::start_session`], also saying whether the device is new: a new device is a
    /// change of the user's device list (marked in `tx`), which the caller wakes syncs for
    /// once `tx` is committed, as Synapse notifies a new device.
    async fn start_session_on(
        &self,
        tx: &mut sqlx::PgConnection,
        user_id: &UserId,
        login: NewLogin,
        now: i64,
    ) -> Result<(Session, bool)> {
        let device_id = login
            .device_id
            .unwrap_or_else(|| tokens::new_device_id().into());
        let new_device = db::devices::upsert(
            &mut *tx,
            user_id.as_str(),
            device_id.as_str(),
            login.device_display_name.as_deref(),
            now,
            login.ip.as_deref(),
        )
        .await?;
        if new_device {
            device_list_changed(&mut *tx, user_id).await?;
        }
        let mut session = self
            .issue_tokens(tx, user_id, device_id, login.refreshable, now)
            .await?;
        session.new_device = new_device;
        Ok((session, new_device))
    }

    /// A new access token for the device, and with `refreshable` a refresh token too (the
    /// access token then expires).
    async fn issue_tokens(
        &self,
        tx: &mut sqlx::PgConnection,
        user_id: &UserId,
        device_id: OwnedDeviceId,
        refreshable: bool,
        now: i64,
    ) -> Result<Session> {
        let access_token = tokens::new_access_token();
        let lifetime = std::time::Duration::from_secs(
            self.registration.refreshable_access_token_lifetime_secs,
        );
        let refresh = refreshable.then(|| (tokens::new_access_token(), lifetime));
        let expires_ts = refresh
            .as_ref()
            .map(|(_, l)| now.saturating_add(i64::try_from(l.as_millis()).unwrap_or(i64::MAX)));
        db::devices::insert_token(
            &mut *tx,
            &tokens::hash_token(&access_token),
            user_id.as_str(),
            device_id.as_str(),
            now,
            expires_ts,
        )
        .await?;
        if let Some((token, _)) = &refresh {
            db::devices::insert_refresh_token(
                &mut *tx,
                &tokens::hash_token(token),
                user_id.as_str(),
                device_id.as_str(),
                now,
            )
            .await?;
        }
        Ok(Session {
            user_id: user_id.to_owned(),
            device_id,
            access_token,
            refresh,
            new_device: false,
        })
    }

    /// `POST /refresh`: a new access token and refresh token for the device the refresh
    /// token belongs to; each refresh token works once. The old access token stays valid
    /// until it expires.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Session> {
        let now = now_ms();
        let mut tx = db::begin(&self.db).await?;
        let (user_id, device_id, deactivated) =
            db::devices::take_refresh_token(&mut *tx, &tokens::hash_token(refresh_token))
                .await?
                .ok_or_else(Error::unknown_token)?;
        if deactivated {
            return Err(Error::unknown_token());
        }
        let user_id = UserId::parse(user_id)
            .map_err(|e| Error::internal(format!("stored user ID is invalid: {e}")))?;
        let session = self
            .issue_tokens(&mut tx, &user_id, device_id.into(), true, now)
            .await?;
        tx.commit().await?;
        tracing::debug!(%user_id, device_id = %session.device_id, "access token refreshed");
        Ok(session)
    }

    /// Log in with a password. Wrong user or wrong password are the same 403, so the answer
    /// does not tell which accounts exist.
    pub async fn login_password(
        &self,
        user: &str,
        password: &str,
        login: NewLogin,
    ) -> Result<Session> {
        if let Some(ip) = &login.ip {
            self.limits.login_per_ip.check(ip)?;
        }
        let forbidden = || Error::forbidden("Invalid username or password");
        let user_id = self.resolve_user(user).ok_or_else(forbidden)?;
        self.limits.login_per_user.check(user_id.as_str())?;
        if !self.password_matches(&user_id, password).await? {
            return Err(forbidden());
        }
        let mut tx = db::begin(&self.db).await?;
        let (session, new_device) = self
            .start_session_on(&mut tx, &user_id, login, now_ms())
            .await?;
        tx.commit().await?;
        if new_device {
            self.devices_changed(&user_id);
        }
        tracing::info!(%user_id, device_id = %session.device_id, "logged in");
        Ok(session)
    }

    /// Whether `password` is the password of the active account `user_id`.
    pub async fn password_matches(&self, user_id: &UserId, password: &str) -> Result<bool> {
        let Some(row) = db::users::get(&self.db, user_id.as_str()).await? else {
            return Ok(false);
        };
        let Some(hash) = row.password_hash.filter(|_| !row.deactivated) else {
            return Ok(false);
        };
        self.passwords.verify(password.to_owned(), hash).await
    }

    /// Revoke the caller's token by removing its device.
    pub async fn logout(&self, user: &AuthedUser) -> Result<()> {
        let mut tx = db::begin(&self.db).await?;
        db::devices::delete(&mut *tx, user.user_id.as_str(), user.device_id.as_str()).await?;
        device_list_changed(&mut tx, &user.user_id).await?;
        tx.commit().await?;
        self.tokens.forget_user(&user.user_id);
        self.devices_changed(&user.user_id);
        Ok(())
    }

    /// Revoke every token of the user.
    pub async fn logout_all(&self, user_id: &UserId) -> Result<()> {
        let mut tx = db::begin(&self.db).await?;
        db::devices::delete_all_except(&mut *tx, user_id.as_str(), None).await?;
        device_list_changed(&mut tx, user_id).await?;
        tx.commit().await?;
        self.tokens.forget_user(user_id);
        self.devices_changed(user_id);
        Ok(())
    }

    /// Set a new password; optionally log out every other device.
    pub async fn change_password(
        &self,
        user: &AuthedUser,
        new_password: String,
        logout_devices: bool,
    ) -> Result<()> {
        let hash = self.passwords.hash(new_password).await?;
        let mut tx = db::begin(&self.db).await?;
        db::users::set_password_hash(&mut *tx, user.user_id.as_str(), Some(&hash)).await?;
        if logout_devices {
            db::devices::delete_all_except(
                &mut *tx,
                user.user_id.as_str(),
                Some(user.device_id.as_str()),
            )
            .await?;
            device_list_changed(&mut tx, &user.user_id).await?;
        }
        tx.commit().await?;
        self.tokens.forget_user(&user.user_id);
        if logout_devices {
            self.devices_changed(&user.user_id);
        }
        Ok(())
    }

    /// Deactivate the account: no more logins, every token revoked, profile cleared.
    pub async fn deactivate(&self, user_id: &UserId) -> Result<()> {
        let mut tx = db::begin(&self.db).await?;
        db::users::deactivate(&mut *tx, user_id.as_str()).await?;
        db::devices::delete_all_except(&mut *tx, user_id.as_str(), None).await?;
        device_list_changed(&mut tx, user_id).await?;
        tx.commit().await?;
        self.tokens.forget_user(user_id);
        self.devices_changed(user_id);
        tracing::info!(%user_id, "account deactivated");
        Ok(())
    }

    pub async fn devices(&self, user_id: &UserId) -> Result<Vec<db::devices::DeviceRow>> {
        Ok(db::devices::list(&self.db, user_id.as_str()).await?)
    }

    /// The devices of `target` with what is known of their connections, for `caller`: the
    /// user themself or a server admin (`M_FORBIDDEN` for anyone else), and only for users
    /// of this server, whose connections it sees.
    pub async fn whois(
        &self,
        caller: &UserId,
        target: &UserId,
    ) -> Result<Vec<db::devices::DeviceRow>> {
        if caller != target {
            let admin = db::users::get(&self.db, caller.as_str())
                .await?
                .is_some_and(|u| u.is_admin);
            if !admin {
                return Err(Error::forbidden(
                    "Only a server admin may look up another user",
                ));
            }
        }
        if target.server_name() != self.server_name {
            return Err(Error::invalid_param("Can only look up a local user"));
        }
        self.devices(target).await
    }

    pub async fn device(
        &self,
        user_id: &UserId,
        device_id: &str,
    ) -> Result<db::devices::DeviceRow> {
        db::devices::get(&self.db, user_id.as_str(), device_id)
            .await?
            .ok_or_else(|| Error::not_found("Device not found"))
    }

    pub async fn set_device_name(
        &self,
        user_id: &UserId,
        device_id: &str,
        name: Option<&str>,
    ) -> Result<()> {
        // The name is part of the device list others see (`unsigned.device_display_name` in
        // /keys/query), so renaming is a device-list change, as in Synapse.
        let mut tx = db::begin(&self.db).await?;
        if !db::devices::set_display_name(&mut *tx, user_id.as_str(), device_id, name).await? {
            return Err(Error::not_found("Device not found"));
        }
        device_list_changed(&mut tx, user_id).await?;
        tx.commit().await?;
        self.devices_changed(user_id);
        Ok(())
    }

    /// Delete those of `device_ids` the user has; returns the ones deleted. An ID the user
    /// has no device of (another user's, or one deleted before) is no error: the spec
    /// answers success for a device already gone, and nothing of anyone else's is touched.
    pub async fn delete_devices(
        &self,
        user_id: &UserId,
        device_ids: &[String],
    ) -> Result<Vec<OwnedDeviceId>> {
        let mut tx = db::begin(&self.db).await?;
        let deleted = db::devices::delete_many(&mut *tx, user_id.as_str(), device_ids).await?;
        if deleted.is_empty() {
            return Ok(Vec::new());
        }
        device_list_changed(&mut tx, user_id).await?;
        tx.commit().await?;
        self.tokens.forget_user(user_id);
        self.devices_changed(user_id);
        Ok(deleted.into_iter().map(OwnedDeviceId::from).collect())
    }

    /// `(displayname, avatar_url)` of a local user; 404 when there is no such user.
    pub async fn profile(&self, user_id: &UserId) -> Result<(Option<String>, Option<String>)> {
        db::users::profile(&self.db, user_id.as_str())
            .await?
            .ok_or_else(|| Error::not_found("Profile not found"))
    }

    pub async fn set_displayname(&self, user_id: &UserId, name: Option<&str>) -> Result<()> {
        db::users::set_displayname(&self.db, user_id.as_str(), name).await?;
        Ok(())
    }

    pub async fn set_avatar_url(&self, user_id: &UserId, url: Option<&str>) -> Result<()> {
        db::users::set_avatar_url(&self.db, user_id.as_str(), url).await?;
        Ok(())
    }

    /// Wake the syncs of the user and of everyone sharing a room with them: their device list
    /// changed.
    fn devices_changed(&self, user_id: &UserId) {
        self.notifier
            .publish_to_co_members(&self.db, user_id, Kinds::DEVICE_LISTS);
    }

    /// Hand out a one-time nonce for shared-secret registration.
    pub async fn new_registration_nonce(&self) -> Result<String> {
        let nonce = tokens::new_session_id();
        let now = now_ms();
        db::uiaa::expire(&self.db, now - uiaa::SESSION_LIFETIME_MS).await?;
        db::uiaa::insert_nonce(&self.db, &nonce, now).await?;
        Ok(nonce)
    }

    /// Consume a nonce handed out in the last minute.
    pub async fn take_registration_nonce(&self, nonce: &str) -> Result<bool> {
        Ok(db::uiaa::take_nonce(&self.db, nonce, now_ms() - 60_000).await?)
    }
}

/// Devices going away change the user's device list: other users' clients must hear of it
/// (/sync device_lists, /keys/changes) to stop encrypting for them.
async fn device_list_changed(tx: &mut sqlx::PgConnection, user_id: &UserId) -> Result<()> {
    db::e2e::lock_stream(&mut *tx, db::e2e::DEVICE_LIST_LOCK).await?;
    db::e2e::mark_device_lists_changed(&mut *tx, &[user_id.to_string()]).await?;
    Ok(())
}
