//! Private Redis servers for tests: Debian's `redis-server` on free loopback ports, each with its
//! files in a temporary folder, as one standalone server or a three-master Redis Cluster made
//! with `redis-cli --cluster create`. Killed on drop. `stop` and `restart` (same port, same
//! folder) make outages.
//!
//! This is not a Redis client: it only starts, stops and waits for servers, and asks
//! `redis-cli` what the tests need to plant or check.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::mailwarden::free_port;

/// How long a server may take to answer PING, and a cluster to agree it is ok. A hang must
/// fail the test with a message and the log, never stall the suite.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether `redis-server` and `redis-cli` are installed.
///
/// Outside CI a machine without them skips the test with a note on stderr. In CI (`CI=true`) a
/// missing component is a failure, never a silent skip, so this panics.
pub fn require_redis() -> bool {
    let missing: Vec<&str> =
        ["redis-server", "redis-cli"].into_iter().filter(|name| find_program(name).is_none()).collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true but {} not on PATH: install Debian's redis-server and redis-tools", missing.join(" and "));
    }
    eprintln!("SKIP: {} not installed (Debian packages redis-server and redis-tools)", missing.join(" and "));
    false
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

fn program(name: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| panic!("{name} is not on PATH (require_redis)"))
}

/// How a server keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Memory only (`--save "" --appendonly no`): a restart comes back empty.
    None,
    /// An append-only file synced on every write: a restart, even after SIGKILL, keeps everything.
    AppendOnly,
}

/// One running `redis-server`. Killed on drop.
pub struct RedisServer {
    /// Holds the log and any data files; deleted on drop.
    dir: tempfile::TempDir,
    pub port: u16,
    persistence: Persistence,
    /// `cluster-enabled yes` with this cluster bus port.
    cluster_port: Option<u16>,
    /// Also listening with TLS on this port, with these files (the plain port stays, for the
    /// harness's own PING).
    tls: Option<RedisTls>,
    child: Option<Child>,
}

/// A TLS port's certificate, key and CA (PEM files), with client certificates not asked for.
#[derive(Debug, Clone)]
pub struct RedisTls {
    pub port: u16,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl RedisServer {
    /// A memory-only server; `None` (after a note) when Redis is not installed outside CI.
    pub fn start() -> Option<RedisServer> {
        RedisServer::start_with(Persistence::None)
    }

    /// A server with the given persistence; `None` when Redis is not installed outside CI.
    pub fn start_with(persistence: Persistence) -> Option<RedisServer> {
        if !require_redis() {
            return None;
        }
        Some(RedisServer::launch(persistence, None))
    }

    /// A memory-only server that also speaks TLS (`--tls-port`) with `cert`, `key` and `ca`.
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> Option<RedisServer> {
        if !require_redis() {
            return None;
        }
        let tls =
            RedisTls { port: free_port(), cert: cert.to_path_buf(), key: key.to_path_buf(), ca: ca.to_path_buf() };
        Some(RedisServer::launch_with(Persistence::None, None, Some(tls)))
    }

    fn launch(persistence: Persistence, cluster_port: Option<u16>) -> RedisServer {
        RedisServer::launch_with(persistence, cluster_port, None)
    }

    fn launch_with(persistence: Persistence, cluster_port: Option<u16>, tls: Option<RedisTls>) -> RedisServer {
        let dir = tempfile::Builder::new().prefix("mailwarden-redis-").tempdir().expect("create Redis temp folder");
        let mut server = RedisServer { dir, port: free_port(), persistence, cluster_port, tls, child: None };
        server.spawn();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `rediss://127.0.0.1:<tls port>` (`start_tls`).
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls.as_ref().expect("started with start_tls").port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Redis's own log so far, for assertion messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("(no Redis log: {e})"))
    }

    fn spawn(&mut self) {
        let mut command = Command::new(program("redis-server"));
        command
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .args(["--save", ""]);
        match self.persistence {
            Persistence::None => command.args(["--appendonly", "no"]),
            Persistence::AppendOnly => command.args(["--appendonly", "yes", "--appendfsync", "always"]),
        };
        if let Some(bus) = self.cluster_port {
            command
                .args(["--cluster-enabled", "yes", "--cluster-port", &bus.to_string()])
                .args(["--cluster-node-timeout", "5000"])
                .arg("--cluster-config-file")
                .arg(self.dir.path().join("nodes.conf"));
        }
        if let Some(tls) = &self.tls {
            if self.cluster_port.is_some() {
                // The nodes then talk TLS to each other (presenting their certificate as
                // clients too) and tell clients their TLS ports.
                command.args(["--tls-cluster", "yes"]);
            }
            command
                .args(["--tls-port", &tls.port.to_string(), "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(&tls.cert)
                .arg("--tls-key-file")
                .arg(&tls.key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.ca);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        self.wait_until_ready();
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten()) {
                panic!("redis-server on port {} exited at start-up with {status}:\n{}", self.port, self.log());
            }
            if self.command(&["PING"]).is_ok_and(|reply| reply == "+PONG") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within {START_TIMEOUT:?}:\n{}",
                self.port,
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL, which also ends a paused one: an abrupt outage). Its port
    /// then refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open and the kernel still accepts new
    /// ones, but nothing is answered, as with a hung or overloaded Redis.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("the server is running");
        let pid = libc::pid_t::try_from(child.id()).expect("a pid");
        // SAFETY: kill(2) with our own child's pid and a valid signal has no memory effects.
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(result, 0, "kill({pid}, {signal}) failed: {}", std::io::Error::last_os_error());
    }

    /// Starts the server again on the same port with the same folder, and waits for it.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// One command over a raw connection, answered with the first line of the reply
    /// (`+PONG`, `:1`, `$5`, `-ERR ...`). Enough for PING and CLUSTER INFO checks.
    fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut reply = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buffer[..n]);
            if reply.ends_with(b"\r\n") && !reply.starts_with(b"$") {
                break;
            }
            if reply.starts_with(b"$") && bulk_complete(&reply) {
                break;
            }
        }
        let text = String::from_utf8_lossy(&reply).into_owned();
        Ok(if text.starts_with('$') { text } else { text.lines().next().unwrap_or_default().to_string() })
    }

    /// `redis-cli -p <port> <args>` (with `-c`, following cluster redirections): its output,
    /// trimmed. Panics if redis-cli fails.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }
}

fn bulk_complete(reply: &[u8]) -> bool {
    let text = String::from_utf8_lossy(reply);
    let Some((header, body)) = text.split_once("\r\n") else { return false };
    match header[1..].parse::<i64>() {
        Ok(length) if length < 0 => true,
        Ok(length) => body.len() >= usize::try_from(length).unwrap_or(0) + 2,
        Err(_) => true,
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new(program("redis-cli"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-c"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    assert!(
        output.status.success(),
        "redis-cli -p {port} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of masters without replicas, each a `RedisServer` with `cluster-enabled
/// yes`. Killed on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// `masters` nodes joined with `redis-cli --cluster create`, once every node reports
    /// `cluster_state:ok`; `None` when Redis is not installed outside CI.
    pub fn start(masters: usize) -> Option<RedisCluster> {
        if !require_redis() {
            return None;
        }
        let nodes: Vec<RedisServer> =
            (0..masters).map(|_| RedisServer::launch(Persistence::None, Some(free_port()))).collect();
        let addresses: Vec<String> = nodes.iter().map(|node| format!("127.0.0.1:{}", node.port)).collect();
        Some(RedisCluster::join(nodes, &addresses, &[]))
    }

    /// As `start`, with every node also speaking TLS (`RedisServer::start_tls`), to clients
    /// and to each other (`--tls-cluster yes`: `cert` must be good for client use too), joined
    /// over TLS.
    pub fn start_tls(masters: usize, cert: &Path, key: &Path, ca: &Path) -> Option<RedisCluster> {
        if !require_redis() {
            return None;
        }
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                let tls = RedisTls {
                    port: free_port(),
                    cert: cert.to_path_buf(),
                    key: key.to_path_buf(),
                    ca: ca.to_path_buf(),
                };
                RedisServer::launch_with(Persistence::None, Some(free_port()), Some(tls))
            })
            .collect();
        let addresses: Vec<String> =
            nodes.iter().filter_map(|node| node.tls.as_ref()).map(|tls| format!("127.0.0.1:{}", tls.port)).collect();
        let ca = ca.display().to_string();
        Some(RedisCluster::join(nodes, &addresses, &["--tls", "--cacert", &ca]))
    }

    /// `redis-cli <connection args> --cluster create <addresses>`, then waits for
    /// `cluster_state:ok`. Bounded: redis-cli waits for ever for nodes that cannot meet.
    fn join(nodes: Vec<RedisServer>, addresses: &[String], connection: &[&str]) -> RedisCluster {
        let output = Command::new("timeout")
            .arg("60")
            .arg(program("redis-cli"))
            .args(connection)
            .args(["--cluster", "create"])
            .args(addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        let cluster = RedisCluster { nodes };
        assert!(
            output.status.success(),
            "redis-cli {connection:?} --cluster create failed: {}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            cluster.logs()
        );
        cluster.wait_until_ok();
        cluster
    }

    /// The nodes' URLs, as a cluster configuration lists them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes' `rediss://` URLs (`start_tls`).
    pub fn tls_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::tls_url).collect()
    }

    fn logs(&self) -> String {
        self.nodes.iter().map(|node| format!("--- node {} ---\n{}", node.port, node.log())).collect()
    }

    fn wait_until_ok(&self) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let states: Vec<String> = self
                .nodes
                .iter()
                .map(|node| {
                    node.command(&["CLUSTER", "INFO"])
                        .ok()
                        .and_then(|info| info.lines().find(|l| l.starts_with("cluster_state:")).map(str::to_string))
                        .unwrap_or_else(|| "no answer".into())
                })
                .collect();
            if states.iter().all(|state| state.trim() == "cluster_state:ok") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster was not ok within {CLUSTER_TIMEOUT:?}: {states:?}\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}
