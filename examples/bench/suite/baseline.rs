//! The baseline: the least an actix-web server can do on Dovecot's route. It reads the body
//! and answers `{"status":0,"msg":""}` to every request, with the same framework, runtime,
//! keep-alive and worker count mailwarden's policy listener has, so the ratio of the two
//! throughputs is what mailwarden's own work costs.

use std::io;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpResponse, HttpServer, web};

/// mailwarden's policy listener runs this many workers (`POLICY_WORKERS` in src/server.rs).
pub const WORKERS: usize = 2;

/// Serves until the process is stopped (`bench serve-baseline`).
pub fn serve(listen: SocketAddr, workers: usize) -> io::Result<()> {
    actix_web::rt::System::new().block_on(async move { server(listen, workers)?.await })
}

fn server(listen: SocketAddr, workers: usize) -> io::Result<Server> {
    Ok(HttpServer::new(|| App::new().default_service(web::to(answer)))
        .keep_alive(Duration::from_secs(60))
        .workers(workers.max(1))
        .bind(listen)?
        .run())
}

async fn answer(_body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(r#"{"status":0,"msg":""}"#)
}

/// The baseline on a thread of this process, for the smoke test.
pub struct InProcess {
    handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl InProcess {
    pub fn start(listen: SocketAddr) -> io::Result<InProcess> {
        let (sender, receiver) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                match server(listen, WORKERS) {
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
