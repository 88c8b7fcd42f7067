//! Shared test harness: the real mailwarden binary and a real Dovecot, both on loopback, and
//! the real services they use (Prometheus, Redis, Postfix, a headless Chromium).
#![allow(dead_code)]

pub mod browser;
pub mod console;
pub mod dovecot;
pub mod dovecot24;
pub mod geoip;
pub mod mailwarden;
pub mod netns;
pub mod postfix;
pub mod prometheus;
pub mod redis;
pub mod tls;
pub mod webhook_receiver;
