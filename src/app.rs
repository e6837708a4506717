//! The application state, built once at start; the only place that wires modules together.

use std::sync::Arc;

use sqlx::PgPool;

use crate::account::Accounts;
use crate::config::Config;
use crate::e2e::E2e;
use crate::ephemeral::Ephemeral;
use crate::federation::Federation;
use crate::keys::ServerKeys;
use crate::media::Media;
use crate::notify::SyncNotifier;
use crate::push::Push;
use crate::room::Rooms;
use crate::sync::Sync;

/// Handed to every request handler. Cheap to clone: everything inside is shared.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub keys: Arc<ServerKeys>,
    pub accounts: Accounts,
    pub rooms: Rooms,
    pub sync: Sync,
    pub federation: Federation,
    pub e2e: E2e,
    pub ephemeral: Ephemeral,
    pub media: Media,
    pub push: Push,
}

impl AppState {
    /// `stream_max`: the highest event stream position already in the database.
    pub fn new(
        config: Arc<Config>,
        db: PgPool,
        keys: Arc<ServerKeys>,
        stream_max: i64,
    ) -> crate::error::Result<Self> {
        let notifier = SyncNotifier::new();
        let rooms = Rooms::new(db.clone(), keys.clone(), stream_max);
        let accounts = Accounts::new(
            db.clone(),
            &config,
            notifier.clone(),
            rooms.push_rules_version(),
        );
        let ephemeral = Ephemeral::new(
            db.clone(),
            rooms.clone(),
            accounts.clone(),
            notifier.clone(),
        );
        let sync = Sync::new(rooms.clone(), notifier.clone(), ephemeral.clone());
        let e2e = E2e::new(db.clone(), config.server_name(), notifier);
        let federation = Federation::new(db.clone(), &config.federation, keys.clone())?;
        let media = Media::new(
            db.clone(),
            config.media_dir(),
            config.media.clone(),
            config.server_name(),
            federation.client.clone(),
        )?;
        let push = Push::new(
            db.clone(),
            rooms.clone(),
            federation.client.clone(),
            &config.push,
        );
        Ok(AppState {
            config,
            db,
            keys,
            accounts,
            rooms,
            sync,
            federation,
            e2e,
            ephemeral,
            media,
            push,
        })
    }
}
