//! The cost of mailwarden to a real login: three private Dovecot 2.3 instances, one with the
//! shipped `dovecot/2.3/95-mailwarden.conf` asking a running mailwarden, one with the same
//! snippet asking the baseline (a bare actix-web server that parses the body and answers a
//! constant: what any policy server costs a login here, its two HTTP round trips), and one
//! without the snippet, otherwise the same configuration (the test suite's, from
//! `tests/support/dovecot.rs`: no failure delay, no anvil penalty). IMAP clients connect
//! from 127.0.0.x, log in and log out; sequential logins take turns between the instances,
//! one each, so drift on the machine hits all alike. Needs root, as any Dovecot does.

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use super::report::{DovecotFigures, DovecotLogins};
use super::{API_KEY, Settings, process, say};

const DOVECOT: &str = "/usr/sbin/dovecot";
const DOVEADM: &str = "/usr/bin/doveadm";
const IMAP_LOGIN: &str = "/usr/lib/dovecot/imap-login";
/// Mail processes run as this account (Dovecot refuses root and low uids).
const MAIL_USER: &str = "nobody";
const USERS: usize = 20;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The figures, or (inner `Err`) why the part was skipped: no Dovecot, or not root.
pub fn run(settings: &Settings, dir: &Path) -> io::Result<Result<DovecotFigures, String>> {
    let missing: Vec<&str> = [DOVECOT, DOVEADM, IMAP_LOGIN].into_iter().filter(|p| !Path::new(p).exists()).collect();
    let unavailable = if !missing.is_empty() {
        Some(format!("Dovecot is not installed (missing {})", missing.join(", ")))
    } else if !is_root() {
        Some("Dovecot needs root".to_string())
    } else {
        None
    };
    if let Some(reason) = unavailable {
        if std::env::var("CI").as_deref() == Ok("true") {
            return Err(io::Error::other(format!("CI=true but {reason}: install dovecot-core and dovecot-imapd")));
        }
        return Ok(Err(format!("Dovecot part skipped: {reason}")));
    }
    fs::create_dir_all(dir)?;
    open_up(dir)?;
    let mailwarden = super::start_mailwarden(settings, &dir.join("mailwarden"), "", None)?;
    let policy_url = format!("http://{}/", mailwarden.policy_addr);
    let baseline = super::start_baseline(settings, super::baseline::Kind::ParsesJson, None)?;
    let baseline_url = format!("http://{}/", baseline.policy_addr);
    let mut with = Dovecot::start(&dir.join("with"), Some(&policy_url))?;
    let mut with_baseline = Dovecot::start(&dir.join("baseline"), Some(&baseline_url))?;
    let mut without = Dovecot::start(&dir.join("without"), None)?;

    let mut figures = DovecotFigures {
        logins: settings.dovecot_logins,
        concurrency: settings.dovecot_concurrency,
        ..Default::default()
    };
    // Warm them up (processes started, files cached), then take turns.
    let instances = [&with, &with_baseline, &without];
    for instance in instances {
        for i in 0..settings.dovecot_logins.min(20) {
            let _ = login(instance.port, i);
        }
    }
    // One login each in turn: a spell of steal on this VM lasts seconds, and blocks of a
    // hundred logins (1.5 s) let it land on one instance; turn by turn it lands on all three.
    // A failed login is counted, not retried, so a broken instance cannot hold the run.
    let mut times: [Vec<Duration>; 3] = Default::default();
    let mut n = 0;
    let machine_before = process::MachineTicks::now();
    for _ in 0..settings.dovecot_logins {
        for (instance, times) in instances.iter().zip(times.iter_mut()) {
            n += 1;
            match login(instance.port, n) {
                Ok(elapsed) => times.push(elapsed),
                Err(_) => figures.failed += 1,
            }
        }
    }
    figures.steal = process::MachineTicks::now().since(machine_before).steal_share();
    let mut logins = times.map(|mut times| {
        let (mean, p50, p99) = spread(&mut times);
        DovecotLogins { mean, p50, p99, rate: 0.0 }
    });
    say(format!(
        "dovecot: sequential logins, mean {:?} with mailwarden, {:?} with the baseline, {:?} without",
        logins[0].mean, logins[1].mean, logins[2].mean
    ));

    // Concurrent clients: whole sessions per second, two rounds each, alternating (the
    // instance without a policy server first).
    for _ in 0..2 {
        for (instance, figures_of) in instances.iter().zip(logins.iter_mut()).rev() {
            let rate = concurrent(
                instance.port,
                settings.dovecot_logins / 2,
                settings.dovecot_concurrency,
                &mut figures.failed,
            );
            figures_of.rate += rate / 2.0;
        }
    }
    say(format!(
        "dovecot: {} concurrent clients, {:.0} sessions/s with mailwarden, {:.0} with the baseline, {:.0} without",
        settings.dovecot_concurrency, logins[0].rate, logins[1].rate, logins[2].rate
    ));
    [figures.with, figures.baseline, figures.without] = logins;
    if figures.failed > 0 {
        say(format!("dovecot: {} logins failed; see {}", figures.failed, dir.display()));
    }
    with.stop();
    with_baseline.stop();
    without.stop();
    drop(mailwarden);
    drop(baseline);
    Ok(Ok(figures))
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Dovecot's auth process (user `dovecot`) must read the passwd-file: every folder on the way
/// must be searchable.
fn open_up(dir: &Path) -> io::Result<()> {
    let mut current = Some(dir);
    while let Some(path) = current {
        let mode = fs::metadata(path)?.permissions().mode();
        if mode & 0o005 != 0o005 {
            fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o755))?;
        }
        current = path.parent().filter(|p| !p.as_os_str().is_empty() && *p != Path::new("/"));
    }
    Ok(())
}

/// Mean, median and 99th percentile.
fn spread(times: &mut [Duration]) -> (Duration, Duration, Duration) {
    if times.is_empty() {
        return Default::default();
    }
    times.sort_unstable();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    (mean, at(0.5), at(0.99))
}

/// `total` whole sessions from `clients` threads; sessions per second.
fn concurrent(port: u16, total: usize, clients: usize, failed: &mut usize) -> f64 {
    let clients = clients.max(1);
    let started = Instant::now();
    let failures: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|client| {
                scope.spawn(move || {
                    (0..total / clients).filter(|i| session(port, client * 100_000 + i).is_err()).count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(total / clients)).sum()
    });
    *failed += failures;
    ((total / clients) * clients - failures) as f64 / started.elapsed().as_secs_f64()
}

/// Account `n % USERS` logs in from 127.0.0.(2 + n % 250): the time from connect to the
/// tagged answer to LOGIN. Then logs out.
fn login(port: u16, n: usize) -> io::Result<Duration> {
    let started = Instant::now();
    let mut connection = Imap::connect(port, n)?;
    let elapsed = connection.login(n, started)?;
    connection.logout();
    Ok(elapsed)
}

/// A whole session: connect, LOGIN, LOGOUT.
fn session(port: u16, n: usize) -> io::Result<()> {
    let mut connection = Imap::connect(port, n)?;
    connection.login(n, Instant::now())?;
    connection.logout();
    Ok(())
}

struct Imap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Imap {
    fn connect(port: u16, n: usize) -> io::Result<Imap> {
        let from = Ipv4Addr::new(127, 0, 0, 2 + (n % 250) as u8);
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.bind(&SocketAddr::from((from, 0)).into())?;
        socket.connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into(), IO_TIMEOUT)?;
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let writer = stream.try_clone()?;
        let mut imap = Imap { reader: BufReader::new(stream), writer };
        let greeting = imap.line()?;
        if !greeting.starts_with("* OK") {
            return Err(io::Error::other(format!("unexpected greeting {greeting:?}")));
        }
        Ok(imap)
    }

    fn login(&mut self, n: usize, started: Instant) -> io::Result<Duration> {
        let user = n % USERS;
        self.writer.write_all(format!("a LOGIN user{user}@example.com secret-{user}\r\n").as_bytes())?;
        loop {
            let line = self.line()?;
            if line.starts_with("a OK") {
                return Ok(started.elapsed());
            }
            if line.starts_with("a ") {
                return Err(io::Error::other(format!("login refused: {line}")));
            }
        }
    }

    fn logout(&mut self) {
        let _ = self.writer.write_all(b"z LOGOUT\r\n");
        let mut line = String::new();
        while matches!(self.reader.read_line(&mut line), Ok(n) if n > 0) {
            line.clear();
        }
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "IMAP server closed the connection"));
        }
        Ok(line.trim_end().to_string())
    }
}

/// A private Dovecot, stopped on drop.
struct Dovecot {
    config: PathBuf,
    root: PathBuf,
    port: u16,
    stopped: bool,
}

impl Dovecot {
    /// With `policy_url`, the shipped snippet asks mailwarden there; without, no policy.
    fn start(root: &Path, policy_url: Option<&str>) -> io::Result<Dovecot> {
        fs::create_dir_all(root)?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o755))?;
        let (uid, gid) = system_user_ids(MAIL_USER)?;
        let mut users = String::new();
        for user in 0..USERS {
            let home = root.join("home").join(user.to_string());
            fs::create_dir_all(&home)?;
            std::os::unix::fs::chown(&home, Some(uid), Some(gid))?;
            users.push_str(&format!(
                "user{user}@example.com:{{PLAIN}}secret-{user}:{uid}:{gid}::{}::\n",
                home.display()
            ));
        }
        fs::write(root.join("users"), users)?;
        let port = process::free_address().port();
        let include = match policy_url {
            Some(url) => {
                fs::write(root.join("95-mailwarden.conf"), shipped_snippet(url)?)?;
                format!("!include {}/95-mailwarden.conf\n", root.display())
            }
            None => String::new(),
        };
        let config = root.join("dovecot.conf");
        fs::write(&config, base_config(root, port) + &include)?;
        let output = fs::File::create(root.join("dovecot.stdout"))?;
        let status = Command::new(DOVECOT)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .status()?;
        let dovecot = Dovecot { config, root: root.to_path_buf(), port, stopped: false };
        if !status.success() {
            return Err(io::Error::other(format!("dovecot failed to start ({status}); see {}", root.display())));
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), Duration::from_millis(200))
            .is_err()
        {
            if Instant::now() > deadline {
                return Err(io::Error::other(format!("dovecot did not open port {port}; see {}", root.display())));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(dovecot)
    }

    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let pid = fs::read_to_string(self.root.join("run/master.pid")).ok();
        let _ = Command::new(DOVEADM)
            .arg("-c")
            .arg(&self.config)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(pid) = pid {
            let proc_dir = PathBuf::from(format!("/proc/{}", pid.trim()));
            let deadline = Instant::now() + Duration::from_secs(10);
            while proc_dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The shipped snippet with its placeholders filled in.
fn shipped_snippet(policy_url: &str) -> io::Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dovecot/2.3/95-mailwarden.conf");
    let snippet = fs::read_to_string(&path)?;
    let lines: Vec<String> = snippet
        .lines()
        .map(|line| {
            if line.starts_with("auth_policy_server_url =") {
                format!("auth_policy_server_url = {policy_url}")
            } else if line.starts_with("auth_policy_server_api_header =") {
                format!("auth_policy_server_api_header = X-API-Key: {API_KEY}")
            } else if line.starts_with("auth_policy_hash_nonce =") {
                "auth_policy_hash_nonce = mailwarden-bench-nonce".to_string()
            } else {
                line.to_string()
            }
        })
        .collect();
    Ok(lines.join("\n") + "\n")
}

/// The test suite's self-contained Dovecot configuration (tests/support/dovecot.rs), IMAP only.
fn base_config(root: &Path, port: u16) -> String {
    let root = root.display();
    format!(
        r#"# Generated by the mailwarden benchmark.
base_dir = {root}/run
state_dir = {root}/state
instance_name = mailwarden-bench-{port}
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:~/Maildir

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/users
}}

service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}

"#
    )
}

fn system_user_ids(name: &str) -> io::Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() > 3 && fields[0] == name)
        .and_then(|fields| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
        .ok_or_else(|| io::Error::other(format!("no account {name:?} in /etc/passwd")))
}
