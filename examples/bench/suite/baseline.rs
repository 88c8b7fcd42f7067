//! The baselines: the least an actix-web server can do on Dovecot's route, with the same
//! framework, runtime, keep-alive and worker count mailwarden's policy listener has, so the
//! ratio of the two throughputs is what mailwarden's own work costs.
//!
//! Issue 21 defines its reference as "a bare actix-web server that parses the same JSON and
//! answers a constant": [`Kind::ParsesJson`] takes each body as actix-web's `Json` extractor of
//! the fields Dovecot sends. [`Kind::ReadsOnly`] reads the body and parses nothing (the
//! benchmark's only baseline until issue 21): the framework's own floor, reported beside it.

use std::io;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpResponse, HttpServer, web};
use serde::Deserialize;

/// mailwarden's policy listener runs this many workers (`POLICY_WORKERS` in src/server.rs).
pub const WORKERS: usize = 2;

/// What a baseline does with each body before it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Parses it into the fields Dovecot sends, as a bare actix-web server would (issue 21's
    /// baseline, which the throughput target is measured against).
    ParsesJson,
    /// Reads it and parses nothing: the framework alone.
    ReadsOnly,
}

impl Kind {
    /// How the report names its figures.
    pub fn name(self) -> &'static str {
        match self {
            Kind::ParsesJson => "baseline",
            Kind::ReadsOnly => "floor",
        }
    }
}

/// A policy request as the shipped `dovecot/2.3/95-mailwarden.conf` makes Dovecot send it. The
/// fields are read by nobody; parsing them is the point.
#[derive(Deserialize)]
#[allow(dead_code)]
struct PolicyRequest {
    #[serde(default)]
    device_id: String,
    login: String,
    protocol: String,
    #[serde(default)]
    pwhash: String,
    #[serde(default)]
    real_remote: String,
    remote: String,
    #[serde(default)]
    session_id: String,
    #[serde(default)]
    tls: bool,
    success: Option<bool>,
    policy_reject: Option<bool>,
}

/// Serves until the process is stopped (`bench serve-baseline`).
pub fn serve(listen: SocketAddr, workers: usize, kind: Kind) -> io::Result<()> {
    actix_web::rt::System::new().block_on(async move { server(listen, workers, kind)?.await })
}

fn server(listen: SocketAddr, workers: usize, kind: Kind) -> io::Result<Server> {
    Ok(HttpServer::new(move || match kind {
        Kind::ParsesJson => App::new().default_service(web::to(answer_parsed)),
        Kind::ReadsOnly => App::new().default_service(web::to(answer)),
    })
    .keep_alive(Duration::from_secs(60))
    .workers(workers.max(1))
    .bind(listen)?
    .run())
}

fn constant() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(r#"{"status":0,"msg":""}"#)
}

async fn answer(_body: web::Bytes) -> HttpResponse {
    constant()
}

async fn answer_parsed(_request: web::Json<PolicyRequest>) -> HttpResponse {
    constant()
}

/// A baseline on a thread of this process, for the smoke test.
pub struct InProcess {
    handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl InProcess {
    pub fn start(listen: SocketAddr, kind: Kind) -> io::Result<InProcess> {
        let (sender, receiver) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                match server(listen, WORKERS, kind) {
                    Ok(server) => {
                        let _ = sender.send(Ok(server.handle()));
                        let _ = server.await;
                    }
                    Err(e) => {
                        let _ = sender.send(Err(e));
                    }
                }
            });
        });
        let handle = receiver.recv().map_err(|_| io::Error::other("the baseline thread ended at start-up"))??;
        Ok(InProcess { handle, thread: Some(thread) })
    }

    pub fn stop(mut self) {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            runtime.block_on(self.handle.stop(false));
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
