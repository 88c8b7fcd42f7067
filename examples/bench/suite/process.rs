//! The servers under test as child processes, and what the kernel says about them: CPU time
//! and resident size from /proc, CPU pinning with taskset, a small HTTP client for setup and
//! checks (not for load; that is `load`).

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// A server under test, stopped on drop.
pub struct Server {
    pub name: &'static str,
    child: Option<Child>,
    pub policy_addr: SocketAddr,
    /// mailwarden's admin listener (the baseline has none).
    pub admin_addr: Option<SocketAddr>,
    pub api_key: String,
    pub admin_token: String,
    /// Where its stdout and stderr go.
    pub log_path: Option<PathBuf>,
    /// The baseline when it runs inside this process (the smoke test): its stop handle.
    in_process: Option<super::baseline::InProcess>,
}

impl Server {
    /// Starts `binary --config config` with its output in `log_path`, pinned to `cpu` when
    /// given, and waits until the policy and admin listeners accept connections.
    pub fn mailwarden(
        binary: &Path,
        config: &Path,
        log_path: &Path,
        addrs: (SocketAddr, SocketAddr),
        secrets: (&str, &str),
        cpu: Option<usize>,
    ) -> io::Result<Server> {
        let log = fs::File::create(log_path)?;
        let mut command = pinned_command(binary, cpu);
        command
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child =
            command.spawn().map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", binary.display())))?;
        let mut server = Server {
            name: "mailwarden",
            child: Some(child),
            policy_addr: addrs.0,
            admin_addr: Some(addrs.1),
            api_key: secrets.0.to_string(),
            admin_token: secrets.1.to_string(),
            log_path: Some(log_path.to_path_buf()),
            in_process: None,
        };
        // Generous: under valgrind (docs/BENCHMARKS.md, callgrind) loading the GeoIP database and
        // 9,991 rule sets takes minutes.
        server.wait_ready(Duration::from_secs(600))?;
        Ok(server)
    }

    /// A baseline as a child process (`bench serve-baseline`), pinned to `cpu` when given.
    pub fn baseline_process(program: &Path, cpu: Option<usize>, kind: super::baseline::Kind) -> io::Result<Server> {
        let addr = free_address();
        let mut command = pinned_command(program, cpu);
        command
            .arg("serve-baseline")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--workers")
            .arg(super::baseline::WORKERS.to_string())
            .stdin(Stdio::null());
        if kind == super::baseline::Kind::ReadsOnly {
            command.arg("--reads-only");
        }
        let child = command.spawn()?;
        let mut server = Server::baseline_at(addr, Some(child), None, kind);
        server.wait_ready(Duration::from_secs(30))?;
        Ok(server)
    }

    /// A baseline on a thread of this process (the smoke test, which has no program to run).
    pub fn baseline_in_process(kind: super::baseline::Kind) -> io::Result<Server> {
        let addr = free_address();
        let handle = super::baseline::InProcess::start(addr, kind)?;
        let mut server = Server::baseline_at(addr, None, Some(handle), kind);
        server.wait_ready(Duration::from_secs(30))?;
        Ok(server)
    }

    fn baseline_at(
        addr: SocketAddr,
        child: Option<Child>,
        in_process: Option<super::baseline::InProcess>,
        kind: super::baseline::Kind,
    ) -> Server {
        Server {
            name: kind.name(),
            child,
            policy_addr: addr,
            admin_addr: None,
            api_key: "baseline-needs-no-key".into(),
            admin_token: String::new(),
            log_path: None,
            in_process,
        }
    }

    fn wait_ready(&mut self, limit: Duration) -> io::Result<()> {
        let deadline = Instant::now() + limit;
        let addresses: Vec<SocketAddr> = std::iter::once(self.policy_addr).chain(self.admin_addr).collect();
        for address in addresses {
            while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
                if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    return Err(io::Error::other(format!(
                        "{} exited at start-up with {status}{}",
                        self.name,
                        self.log_tail()
                    )));
                }
                if Instant::now() > deadline {
                    return Err(io::Error::other(format!(
                        "{} did not open {address} in time{}",
                        self.name,
                        self.log_tail()
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// The last lines of the log, for error messages.
    pub fn log_tail(&self) -> String {
        let Some(path) = &self.log_path else {
            return String::new();
        };
        let text = fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("\n--- {} ---\n{}", path.display(), lines[lines.len().saturating_sub(20)..].join("\n"))
    }

    /// The process id (this process for an in-process baseline).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(std::process::id(), Child::id)
    }

    /// Resident size, KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid()).unwrap_or(0)
    }

    /// CPU time used so far, user and system, every thread.
    pub fn cpu(&self) -> Duration {
        cpu_time(self.pid())
    }

    /// An admin API call with the bearer token: (HTTP status, body).
    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> io::Result<(u16, String)> {
        let addr = self.admin_addr.ok_or_else(|| io::Error::other("this server has no admin API"))?;
        let url = format!("http://{addr}{path}");
        let agent = agent();
        let bearer = format!("Bearer {}", self.admin_token);
        let answer = match (method, body) {
            ("GET", _) => agent.get(&url).header("Authorization", &bearer).call(),
            ("DELETE", _) => agent.delete(&url).header("Authorization", &bearer).call(),
            ("PUT", Some(body)) => {
                agent.put(&url).header("Authorization", &bearer).header("Content-Type", "application/json").send(body)
            }
            ("POST", body) => agent
                .post(&url)
                .header("Authorization", &bearer)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or("")),
            _ => return Err(io::Error::other(format!("unsupported admin call {method} {path}"))),
        };
        read_answer(answer)
    }

    /// One policy request with the API key, as Dovecot sends it: (HTTP status, body).
    pub fn policy(&self, command: &str, body: &str) -> io::Result<(u16, String)> {
        let url = format!("http://{}/?command={command}", self.policy_addr);
        let answer = agent()
            .post(&url)
            .header("Content-Type", "application/json")
            .header("X-API-Key", format!(" {}", self.api_key))
            .send(body);
        read_answer(answer)
    }

    /// A field of `/healthz` (mailwarden only).
    pub fn health(&self, field: &str) -> Option<u64> {
        let (status, body) = self.admin("GET", "/healthz", None).ok()?;
        if status != 200 {
            return None;
        }
        let value: serde_json::Value = serde_json::from_str(&body).ok()?;
        value.get(field)?.as_u64()
    }

    /// Stops the server: SIGTERM, then SIGKILL if it has not ended within 20 s.
    pub fn stop(&mut self) {
        if let Some(handle) = self.in_process.take() {
            handle.stop();
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn read_answer(answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> io::Result<(u16, String)> {
    let mut response = answer.map_err(|e| io::Error::other(format!("HTTP request failed: {e}")))?;
    let status = response.status().as_u16();
    Ok((status, response.body_mut().read_to_string().unwrap_or_default()))
}

/// Niceness of the measured processes from now on: servers started and load threads.
static NICE: AtomicI32 = AtomicI32::new(0);

/// Sets the niceness of the servers started and load threads run from now on (0: unchanged).
pub fn set_nice(nice: i32) {
    NICE.store(nice, Ordering::Relaxed);
}

/// `program` run through `nice -n N` when a niceness is set, and `taskset -c CPU` when a CPU
/// is given.
pub fn pinned_command(program: &Path, cpu: Option<usize>) -> Command {
    let mut words: Vec<String> = Vec::new();
    let nice = NICE.load(Ordering::Relaxed);
    if nice != 0 {
        words.extend(["nice".into(), "-n".into(), nice.to_string()]);
    }
    if let Some(cpu) = cpu {
        words.extend(["taskset".into(), "-c".into(), cpu.to_string()]);
    }
    match words.split_first() {
        Some((first, rest)) => {
            let mut command = Command::new(first);
            command.args(rest).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// A loopback address nobody listens on right now, never handed out twice in one run: the
/// kernel may give two binds that each closed at once the same ephemeral port (a node's
/// policy and admin listeners once got one port between them, and its start failed).
pub fn free_address() -> SocketAddr {
    static GIVEN: std::sync::Mutex<Vec<SocketAddr>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let address = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port");
        if !given.contains(&address) {
            given.push(address);
            return address;
        }
    }
}

/// Whether `taskset` (util-linux) can pin: it runs and this machine has two CPUs or more.
pub fn can_pin() -> bool {
    cpus() >= 2
        && Command::new("taskset")
            .arg("-p")
            .arg(std::process::id().to_string())
            .output()
            .is_ok_and(|o| o.status.success())
}

/// CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Pins the calling thread to `cpu` when given (taskset on the thread's own id) and gives it
/// the niceness set with `set_nice`.
pub fn place_this_thread(cpu: Option<usize>) {
    let nice = NICE.load(Ordering::Relaxed);
    if cpu.is_none() && nice == 0 {
        return;
    }
    let Some(tid) = fs::read_link("/proc/thread-self").ok().and_then(|p| p.file_name().map(|n| n.to_os_string()))
    else {
        return;
    };
    if let Some(cpu) = cpu {
        let _ =
            Command::new("taskset").arg("-p").arg("-c").arg(cpu.to_string()).arg(&tid).stdout(Stdio::null()).status();
    }
    if nice != 0 {
        let _ =
            Command::new("renice").arg("-n").arg(nice.to_string()).arg("-p").arg(&tid).stdout(Stdio::null()).status();
    }
}

fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// User and system CPU time of process `pid`, all threads (from /proc/PID/stat).
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The command name is in parentheses and may contain spaces: count fields after it.
    let Some(after_name) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 1000 / clock_ticks_per_second())
}

/// VmRSS of process `pid`, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The whole machine's CPU time from the `cpu` line of /proc/stat, in clock ticks: all of it
/// and the part the hypervisor spent on other guests while this one wanted to run (steal). A
/// run with much steal measures the host's neighbours more than the servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineTicks {
    pub total: u64,
    pub steal: u64,
}

impl MachineTicks {
    /// Now; zero where /proc/stat cannot be read.
    pub fn now() -> MachineTicks {
        fs::read_to_string("/proc/stat").ok().and_then(|stat| MachineTicks::parse(&stat)).unwrap_or_default()
    }

    /// user nice system idle iowait irq softirq steal (guest time is inside user already).
    fn parse(stat: &str) -> Option<MachineTicks> {
        let line = stat.lines().find(|line| line.starts_with("cpu "))?;
        let fields: Vec<u64> = line.split_whitespace().skip(1).take(8).map_while(|f| f.parse().ok()).collect();
        Some(MachineTicks { total: fields.iter().sum(), steal: fields.get(7).copied().unwrap_or(0) })
    }

    /// The ticks from `earlier` to `self`.
    pub fn since(self, earlier: MachineTicks) -> MachineTicks {
        MachineTicks {
            total: self.total.saturating_sub(earlier.total),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }

    pub fn add(&mut self, other: MachineTicks) {
        self.total += other.total;
        self.steal += other.steal;
    }

    /// Steal as a share of the machine's CPU time (0 to 1).
    pub fn steal_share(&self) -> f64 {
        self.steal as f64 / self.total.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::MachineTicks;

    #[test]
    fn steal_is_read_from_the_cpu_line() {
        let stat = "cpu  100 5 50 800 10 0 5 30 0 0\ncpu0 50 2 25 400 5 0 2 15 0 0\n";
        let ticks = MachineTicks::parse(stat).expect("a cpu line");
        assert_eq!(ticks, MachineTicks { total: 1000, steal: 30 });
        let later = MachineTicks { total: 2000, steal: 130 };
        assert!((later.since(ticks).steal_share() - 0.1).abs() < 1e-9);
        // A kernel without the steal column (before 2.6.11) reads as no steal.
        assert_eq!(MachineTicks::parse("cpu 1 2 3 4\n"), Some(MachineTicks { total: 10, steal: 0 }));
        assert_eq!(MachineTicks::default().steal_share(), 0.0);
    }
}
