//! mailwarden: an authentication-policy server for Dovecot. See ARCHITECTURE.md for the map.

pub mod access;
pub mod accounts;
pub mod audit;
pub mod bans;
pub mod bounded;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod events;
pub mod failures;
pub mod firewall;
pub mod geoip;
pub mod http;
pub mod journal;
pub mod logging;
pub mod login;
pub mod metrics;
pub mod network;
pub mod principal;
pub mod printable;
#[cfg(test)]
mod readme;
pub mod reload;
pub mod secrets;
pub mod selfservice;
pub mod server;
pub mod state_dir;
pub mod store;
pub mod subnets;
pub mod template;
pub mod tokens;
pub mod tolerance;
pub mod warden;
pub mod wire;
