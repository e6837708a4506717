//! Shared integration-test support: a fresh database per test and real servers on loopback.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod dag;
pub mod db;
pub mod federation;
pub mod media;
pub mod rooms;
pub mod server;
pub mod stripped;
