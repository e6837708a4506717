//! Trellis: a federation-first Matrix homeserver on a Postgres event DAG store.
//!
//! Module dependencies point one way (scripts/check-layers keeps them so, by rank):
//! `server → http → app → e2e → { sync, media, push } → federation → ephemeral → room →
//! account → { keys, notify } → db → config, error`, with leaves beside (`random`, `memory`,
//! `voip`, `logging`, `planner_stats`). Whatever has news (rooms, ephemeral events, account
//! data, keys) tells the notifier, which depends on nothing above `db`; `room` never calls
//! `federation`: an operation needing both is driven from above.
//! `app` is the only place that wires modules together.

pub mod account;
pub mod app;
pub mod config;
pub mod db;
pub mod e2e;
pub mod ephemeral;
pub mod error;
pub mod federation;
pub mod http;
pub mod keys;
pub mod logging;
pub mod media;
pub mod memory;
pub mod notify;
pub mod planner_stats;
pub mod push;
pub mod random;
pub mod room;
pub mod server;
pub mod sync;
pub mod voip;

pub use app::AppState;
pub use config::Config;
pub use error::{Error, Result};
