//! Trellis: a federation-first Matrix homeserver on a Postgres event DAG store.
//!
//! Module dependencies point one way:
//! `server → http → e2e → sync → { federation → room } → { account, keys } → db → config, error`,
//! and `http → media → federation` (media fetches remote files through the federation client).
//! `room` never calls `federation`; an operation needing both is driven from above.
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
pub mod planner_stats;
pub mod room;
pub mod server;
pub mod sync;
pub mod voip;

pub use app::AppState;
pub use config::Config;
pub use error::{Error, Result};
