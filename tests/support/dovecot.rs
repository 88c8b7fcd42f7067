//! A private Dovecot 2.3 for end-to-end tests, and raw IMAP, POP3 and SMTP clients that log in
//! to it from a chosen 127.0.0.x address.
//!
//! Dovecot runs with the project's own `dovecot/2.3/95-mailwarden.conf`, so the tests prove the
//! snippet we ship. This is not an IMAP library: the clients only log in and log out. SMTP AUTH
//! goes through Dovecot's own `submission` service (Debian's `dovecot-submissiond`), started
//! only by [`Dovecot::start_with_submission`].
//! Needs root, like any Dovecot: its processes switch to the `dovecot`, `dovenull` and mail users.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use super::mailwarden::free_port;

const DOVECOT: &str = "/usr/sbin/dovecot";
const DOVEADM: &str = "/usr/bin/doveadm";
/// The login processes come from other packages than the master (dovecot-imapd,
/// dovecot-pop3d); without them Dovecot starts but never opens the ports.
const LOGIN_BINARIES: [&str; 2] = ["/usr/lib/dovecot/imap-login", "/usr/lib/dovecot/pop3-login"];
/// The submission service (dovecot-submissiond): its login process, which asks the policy
/// server, and the post-login process a successful SMTP AUTH hands the session to.
/// Dovecot's LMTP server (dovecot-lmtpd), which delivers into the Maildirs.
const LMTP_BINARY: &str = "/usr/lib/dovecot/lmtp";
const SUBMISSION_BINARIES: [&str; 2] = ["/usr/lib/dovecot/submission-login", "/usr/lib/dovecot/submission"];

/// Accounts in the test passdb, as (login, password).
pub const USERS: [(&str, &str); 4] = [
    ("alice@example.com", "alice-secret"),
    ("bob@example.com", "bob-secret"),
    ("carol@example.com", "carol-secret"),
    ("dave@example.com", "dave-secret"),
];

/// Ten colleagues behind one office NAT, as (login, password), also in the test passdb.
pub const COLLEAGUES: [(&str, &str); 10] = [
    ("colleague0@example.com", "colleague0-secret"),
    ("colleague1@example.com", "colleague1-secret"),
    ("colleague2@example.com", "colleague2-secret"),
    ("colleague3@example.com", "colleague3-secret"),
    ("colleague4@example.com", "colleague4-secret"),
    ("colleague5@example.com", "colleague5-secret"),
    ("colleague6@example.com", "colleague6-secret"),
    ("colleague7@example.com", "colleague7-secret"),
    ("colleague8@example.com", "colleague8-secret"),
    ("colleague9@example.com", "colleague9-secret"),
];

/// The owner of a laptop whose mail app still has an old password saved, as (login, the
/// current password), also in the test passdb.
pub const LAPTOP_OWNER: (&str, &str) = ("laptop-owner@example.com", "laptop-owner-new-secret");

/// The nonce substituted into the shipped snippet; any value works, it only salts pwhash.
pub const TEST_NONCE: &str = "mailwarden-e2e-nonce";

/// Mail processes run as this account. Dovecot refuses root and, by default, uids below 500
/// (which rules out `dovenull`); `nobody` (65534) exists everywhere.
const MAIL_USER: &str = "nobody";

/// How long a client waits for one server line, and how long Dovecot may take to start or stop.
/// A hang must fail the test with a message, never stall the suite.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const PROCESS_TIMEOUT: Duration = Duration::from_secs(10);

/// True when Dovecot and its IMAP and POP3 login processes are installed.
pub fn dovecot_available() -> bool {
    missing_binaries(&[]).is_empty()
}

/// Call first in every Dovecot test: `if !require_dovecot() { return; }`.
///
/// Outside CI a machine without Dovecot skips the test with a note on stderr. In CI (`CI=true`)
/// a missing component is a failure, never a silent skip, so this panics.
pub fn require_dovecot() -> bool {
    require(&[], "dovecot-core, dovecot-imapd and dovecot-pop3d")
}

/// [`require_dovecot`] for tests that also log in over SMTP AUTH (Dovecot's submission service).
pub fn require_dovecot_submission() -> bool {
    require(&SUBMISSION_BINARIES, "dovecot-core, dovecot-imapd, dovecot-pop3d and dovecot-submissiond")
}

/// Dovecot's LMTP delivery (Debian's `dovecot-lmtpd`).
pub fn require_dovecot_lmtp() -> bool {
    require(&[LMTP_BINARY], "dovecot-core, dovecot-imapd, dovecot-pop3d and dovecot-lmtpd")
}

fn require(extra: &[&'static str], packages: &str) -> bool {
    let missing = missing_binaries(extra);
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true but Dovecot is not installed (missing {}): install {packages}", missing.join(", "));
    }
    eprintln!("SKIP: dovecot not installed (missing {})", missing.join(", "));
    false
}

fn missing_binaries(extra: &[&'static str]) -> Vec<&'static str> {
    [DOVECOT, DOVEADM]
        .into_iter()
        .chain(LOGIN_BINARIES)
        .chain(extra.iter().copied())
        .filter(|path| !Path::new(path).exists())
        .collect()
}

/// A running Dovecot instance whose files all live in one temporary folder. Stopped on drop.
pub struct Dovecot {
    dir: tempfile::TempDir,
    config_path: PathBuf,
    log_path: PathBuf,
    imap_port: u16,
    pop3_port: u16,
    /// Dovecot's submission service (SMTP AUTH), when started with it.
    submission_port: Option<u16>,
    /// Dovecot's LMTP delivery into the users' Maildirs, when started with it.
    lmtp_port: Option<u16>,
    stopped: bool,
}

impl Dovecot {
    /// Starts Dovecot asking the policy server at `policy_url` with header `X-API-Key: <api_key>`,
    /// and waits until its IMAP and POP3 ports accept connections.
    pub fn start(policy_url: &str, api_key: &str) -> Dovecot {
        Dovecot::start_services(policy_url, api_key, false, false, "")
    }

    /// As `start`, for an https `policy_url`: Dovecot's HTTP client verifies the policy
    /// server's certificate against `ca` (`ssl_client_ca_file`; without it Dovecot 2.3 accepts
    /// any certificate).
    pub fn start_trusting(policy_url: &str, api_key: &str, ca: &Path) -> Dovecot {
        Dovecot::start_services(policy_url, api_key, false, false, &format!("ssl_client_ca_file = {}\n", ca.display()))
    }

    /// [`Dovecot::start`] with the submission service too (call [`require_dovecot_submission`]
    /// first), and waits until its port accepts connections as well.
    pub fn start_with_submission(policy_url: &str, api_key: &str) -> Dovecot {
        Dovecot::start_services(policy_url, api_key, true, false, "")
    }

    /// [`Dovecot::start`] with LMTP on a loopback port (call [`require_dovecot_lmtp`] first),
    /// delivering into the users' Maildirs, which IMAP then reads.
    pub fn start_with_delivery(policy_url: &str, api_key: &str) -> Dovecot {
        Dovecot::start_services(policy_url, api_key, false, true, "")
    }

    fn start_services(
        policy_url: &str,
        api_key: &str,
        submission: bool,
        delivery: bool,
        extra_config: &str,
    ) -> Dovecot {
        let dir = tempfile::Builder::new().prefix("mailwarden-dovecot-").tempdir().expect("create Dovecot temp folder");
        // mkdtemp makes the folder 0700, and the auth process (user `dovecot`) could not read
        // the passwd-file inside it: every login would fail with "Temporary authentication failure".
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod 0755 the Dovecot temp folder");
        let root = dir.path();

        let (uid, gid) = system_user_ids(MAIL_USER);
        let mut passwd_file = String::new();
        for (login, password) in USERS.into_iter().chain(COLLEAGUES).chain([LAPTOP_OWNER]) {
            let home = root.join("home").join(login);
            fs::create_dir_all(&home).expect("create mail home");
            std::os::unix::fs::chown(&home, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {} to {MAIL_USER} (the tests need root): {e}", home.display()));
            passwd_file.push_str(&format!("{login}:{{PLAIN}}{password}:{uid}:{gid}::{}::\n", home.display()));
        }
        fs::write(root.join("users"), passwd_file).expect("write passwd-file");
        fs::write(root.join("95-mailwarden.conf"), shipped_snippet(policy_url, api_key))
            .expect("write the policy snippet");

        let imap_port = free_port();
        let pop3_port = free_port();
        let submission = submission.then(|| Submission { port: free_port(), relay_port: free_port() });
        let lmtp_port = delivery.then(free_port);
        let config_path = root.join("dovecot.conf");
        let log_path = root.join("dovecot.log");
        fs::write(&config_path, test_config(root, imap_port, pop3_port, submission, lmtp_port) + extra_config)
            .expect("write dovecot.conf");

        // `dovecot` daemonizes and the daemon keeps the stdout/stderr it inherited: a pipe here
        // would never reach EOF, so both go to a file.
        let output_path = root.join("dovecot.stdout");
        let output = fs::File::create(&output_path).expect("create dovecot.stdout");
        let status = Command::new(DOVECOT)
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("clone dovecot.stdout"))
            .stderr(output)
            .status()
            .expect("run dovecot");
        if !status.success() {
            panic!(
                "dovecot -c {} failed ({status}):\n{}\n--- dovecot.log ---\n{}",
                config_path.display(),
                fs::read_to_string(&output_path).unwrap_or_default(),
                fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        let submission_port = submission.map(|s| s.port);
        let dovecot =
            Dovecot { dir, config_path, log_path, imap_port, pop3_port, submission_port, lmtp_port, stopped: false };
        for port in [imap_port, pop3_port].into_iter().chain(submission_port).chain(lmtp_port) {
            dovecot.wait_for_port(port);
        }
        dovecot
    }

    pub fn imap_port(&self) -> u16 {
        self.imap_port
    }

    /// Where LMTP listens; panics unless started with [`Dovecot::start_with_delivery`].
    pub fn lmtp_port(&self) -> u16 {
        self.lmtp_port.expect("Dovecot was started without LMTP")
    }

    pub fn pop3_port(&self) -> u16 {
        self.pop3_port
    }

    /// The submission (SMTP AUTH) port; panics unless started with [`Dovecot::start_with_submission`].
    pub fn submission_port(&self) -> u16 {
        self.submission_port.expect("Dovecot was started without its submission service")
    }

    /// The Dovecot log so far, for assertion messages.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("(no Dovecot log: {e})"))
    }

    /// Stops Dovecot and waits until its master process has exited. Idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let master_pid = fs::read_to_string(self.dir.path().join("run/master.pid")).ok();
        let _ = Command::new(DOVEADM)
            .arg("-c")
            .arg(&self.config_path)
            .arg("stop")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(pid) = master_pid {
            let proc_dir = PathBuf::from(format!("/proc/{}", pid.trim()));
            let deadline = Instant::now() + PROCESS_TIMEOUT;
            while proc_dir.exists() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn wait_for_port(&self, port: u16) {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                panic!(
                    "Dovecot did not open port {port} within {PROCESS_TIMEOUT:?}\n--- dovecot.log ---\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The project's `dovecot/2.3/95-mailwarden.conf` with the three placeholders replaced. Panics if a
/// placeholder line is not there exactly once: the shipped file and this harness must not drift.
fn shipped_snippet(policy_url: &str, api_key: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dovecot/2.3/95-mailwarden.conf");
    let snippet = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let replacements = [
        ("auth_policy_server_url = http://127.0.0.1:8180/", format!("auth_policy_server_url = {policy_url}")),
        (
            "auth_policy_server_api_header = X-API-Key: CHANGE-ME",
            format!("auth_policy_server_api_header = X-API-Key: {api_key}"),
        ),
        ("auth_policy_hash_nonce = CHANGE-ME-", format!("auth_policy_hash_nonce = {TEST_NONCE}")),
    ];
    let mut lines: Vec<String> = snippet.lines().map(str::to_owned).collect();
    for (placeholder, replacement) in replacements {
        let matching: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].starts_with(placeholder)).collect();
        assert_eq!(matching.len(), 1, "{} must contain exactly one line starting {placeholder:?}", path.display());
        lines[matching[0]] = replacement;
    }
    lines.join("\n") + "\n"
}

/// The submission service's ports: where it listens, and the relay it would pass mail to.
#[derive(Debug, Clone, Copy)]
struct Submission {
    port: u16,
    /// Nothing listens there: Dovecot's submission does not start without a relay, and after
    /// each successful AUTH its post-login process tries to connect, fails (an `Error:` in the
    /// Dovecot log) and drops the session with `421 4.4.0`, but only after the `235` the tests
    /// look at. No test sends mail.
    relay_port: u16,
}

/// Everything a self-contained instance needs, then the shipped snippet. The test-only settings
/// (no failure delay, no anvil penalty) keep a failed login at ~0.5 s instead of 2-15 s.
fn test_config(
    root: &Path,
    imap_port: u16,
    pop3_port: u16,
    submission: Option<Submission>,
    lmtp_port: Option<u16>,
) -> String {
    let (mut protocols, mut submission_config) = match submission {
        None => ("imap pop3".to_string(), String::new()),
        Some(Submission { port, relay_port }) => (
            "imap pop3 submission".to_string(),
            format!(
                r#"
# SMTP AUTH in plain text on loopback (ssl = no, disable_plaintext_auth = no above).
submission_relay_host = 127.0.0.1
submission_relay_port = {relay_port}
service submission-login {{
  inet_listener submission {{
    port = {port}
  }}
}}
"#
            ),
        ),
    };
    if let Some(port) = lmtp_port {
        protocols.push_str(" lmtp");
        submission_config.push_str(&format!(
            r#"
# Delivery (Postfix relays to it): into ~/Maildir, as IMAP reads it.
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
}}
"#
        ));
    }
    let root = root.display();
    format!(
        r#"# Generated by tests/support/dovecot.rs for one test.
base_dir = {root}/run
state_dir = {root}/state
instance_name = mailwarden-e2e-{imap_port}
log_path = {root}/dovecot.log
protocols = {protocols}
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
# Any character in a login (the default allows ASCII letters, digits and .-_@ only), so a test
# can see what Dovecot's lowercasing sends for a name with a non-ASCII capital.
auth_username_chars =
# Lets a test client pass x-originating-ip in IMAP ID, as a webmail or proxy would.
login_trusted_networks = 127.0.0.0/8
# Also needed by the submission service: without it a successful AUTH ends in 451 4.7.0.
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
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
# Anvil's growing per-IP delay (2, 4, 8, 15 s) would make repeated failures slow.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
{submission_config}
!include {root}/95-mailwarden.conf
"#
    )
}

/// (uid, gid) of a system account, read from /etc/passwd.
fn system_user_ids(name: &str) -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() > 3 && fields[0] == name)
        .and_then(|fields| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
        .unwrap_or_else(|| panic!("no usable account {name:?} in /etc/passwd"))
}

/// What a client saw at the end of a login attempt.
#[derive(Debug, Clone)]
pub struct LoginOutcome {
    pub ok: bool,
    /// The final tagged (IMAP) or status (POP3) line without CRLF, e.g.
    /// `a NO [ALERT] Too many failed logins from ...` or `-ERR [AUTH] ...`.
    pub line: String,
}

/// IMAP `LOGIN` from source address `from` (any 127.0.0.x works on Linux without setup).
/// Any Dovecot the raw clients can log in to: 2.3 here, 2.4 in `dovecot24`.
pub trait LoginPorts {
    fn imap_port(&self) -> u16;
    fn pop3_port(&self) -> u16;
}

impl LoginPorts for Dovecot {
    fn imap_port(&self) -> u16 {
        Dovecot::imap_port(self)
    }

    fn pop3_port(&self) -> u16 {
        Dovecot::pop3_port(self)
    }
}

pub fn imap_login(dovecot: &impl LoginPorts, from: Ipv4Addr, user: &str, pass: &str) -> LoginOutcome {
    imap_login_with_id(dovecot, from, &[], user, pass)
}

/// IMAP `ID (...)` with `id_fields` as key/value pairs, then `LOGIN`. With the test's
/// `login_trusted_networks`, an `x-originating-ip` field replaces the client address Dovecot
/// reports as `remote`; a `name` field shows up in `device_id`.
pub fn imap_login_with_id(
    dovecot: &impl LoginPorts,
    from: Ipv4Addr,
    id_fields: &[(&str, &str)],
    user: &str,
    pass: &str,
) -> LoginOutcome {
    let mut conn = LineConnection::open(from, dovecot.imap_port(), "IMAP");
    let greeting = conn.read_line();
    assert!(greeting.starts_with("* OK"), "unexpected IMAP greeting: {greeting:?}");
    if !id_fields.is_empty() {
        let list: Vec<String> =
            id_fields.iter().map(|(key, value)| format!("{} {}", imap_quote(key), imap_quote(value))).collect();
        conn.send(&format!("i ID ({})", list.join(" ")));
        let reply = conn.read_tagged("i");
        assert!(reply.starts_with("i OK"), "IMAP ID refused: {reply:?}");
    }
    conn.send(&format!("a LOGIN {} {}", imap_quote(user), imap_quote(pass)));
    let line = conn.read_tagged("a");
    conn.send("z LOGOUT");
    conn.drain();
    LoginOutcome { ok: line.starts_with("a OK"), line }
}

/// Every message in `user`'s INBOX, whole (headers and body), read over IMAP as a mail app
/// would (`FETCH BODY.PEEK[]`, so nothing is marked read). Panics unless the login succeeds.
pub fn imap_inbox(dovecot: &impl LoginPorts, from: Ipv4Addr, user: &str, pass: &str) -> Vec<String> {
    let mut conn = LineConnection::open(from, dovecot.imap_port(), "IMAP");
    let greeting = conn.read_line();
    assert!(greeting.starts_with("* OK"), "unexpected IMAP greeting: {greeting:?}");
    conn.send(&format!("a LOGIN {} {}", imap_quote(user), imap_quote(pass)));
    let login = conn.read_tagged("a");
    assert!(login.starts_with("a OK"), "IMAP login of {user} refused: {login:?}");
    conn.send("b SELECT INBOX");
    let mut exists = 0;
    loop {
        let line = conn.read_line();
        if let Some(count) = line.strip_prefix("* ").and_then(|rest| rest.strip_suffix(" EXISTS")) {
            exists = count.parse().unwrap_or(0);
        }
        if line.starts_with("b ") {
            assert!(line.starts_with("b OK"), "SELECT INBOX refused: {line:?}");
            break;
        }
    }
    let mut messages = Vec::new();
    if exists > 0 {
        conn.send("c FETCH 1:* BODY.PEEK[]");
        loop {
            let line = conn.read_line();
            if line.starts_with("c ") {
                assert!(line.starts_with("c OK"), "FETCH refused: {line:?}");
                break;
            }
            // `* n FETCH (BODY[] {size}`: the message follows as `size` bytes.
            let Some(size) = line.rsplit_once('{').and_then(|(_, n)| n.strip_suffix('}')).and_then(|n| n.parse().ok())
            else {
                continue;
            };
            let mut literal = vec![0u8; size];
            std::io::Read::read_exact(&mut conn.reader, &mut literal).expect("read a message");
            messages.push(String::from_utf8_lossy(&literal).into_owned());
        }
    }
    conn.send("z LOGOUT");
    conn.drain();
    messages
}

/// POP3 `USER`/`PASS` from source address `from`.
pub fn pop3_login(dovecot: &impl LoginPorts, from: Ipv4Addr, user: &str, pass: &str) -> LoginOutcome {
    let mut conn = LineConnection::open(from, dovecot.pop3_port(), "POP3");
    let greeting = conn.read_line();
    assert!(greeting.starts_with("+OK"), "unexpected POP3 greeting: {greeting:?}");
    conn.send(&format!("USER {user}"));
    let reply = conn.read_line();
    assert!(reply.starts_with("+OK"), "POP3 USER refused: {reply:?}");
    conn.send(&format!("PASS {pass}"));
    let line = conn.read_line();
    conn.send("QUIT");
    conn.drain();
    LoginOutcome { ok: line.starts_with("+OK"), line }
}

/// The server's reply to SMTP `AUTH`: `235` logged in, `535` refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: u16,
    /// The text after the code, with its enhanced status code, e.g. `5.7.8 Authentication
    /// failed.`; the lines of a multi-line reply joined with `\n`.
    pub text: String,
}

impl SmtpReply {
    pub fn ok(&self) -> bool {
        self.code == 235
    }
}

/// SMTP `EHLO`, then `AUTH PLAIN` with the initial response, from source address `from` to
/// Dovecot's submission service. Panics unless the server offers AUTH PLAIN.
pub fn smtp_login(dovecot: &Dovecot, from: Ipv4Addr, user: &str, pass: &str) -> SmtpReply {
    use base64::Engine as _;
    let mut conn = LineConnection::open(from, dovecot.submission_port(), "SMTP");
    let greeting = conn.read_smtp_reply();
    assert_eq!(greeting.code, 220, "unexpected SMTP greeting: {greeting:?}");
    conn.send("EHLO laptop.example");
    let ehlo = conn.read_smtp_reply();
    let offers_plain = ehlo.text.lines().any(|l| l.starts_with("AUTH ") && l.split(' ').any(|m| m == "PLAIN"));
    assert!(ehlo.code == 250 && offers_plain, "submission does not offer AUTH PLAIN: {ehlo:?}");
    let initial = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
    conn.send(&format!("AUTH PLAIN {initial}"));
    let reply = conn.read_smtp_reply();
    // After a 235 Dovecot's submission may already have dropped the session (it cannot reach
    // the test's relay), so QUIT is best effort.
    conn.send_if_open("QUIT");
    conn.drain();
    reply
}

fn imap_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A CRLF line protocol connection with a read timeout, bound to a chosen source address.
struct LineConnection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// "IMAP", "POP3" or "SMTP", for error messages.
    protocol: &'static str,
}

impl LineConnection {
    fn open(from: Ipv4Addr, port: u16, protocol: &'static str) -> LineConnection {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("create client socket");
        socket
            .bind(&SocketAddr::from((from, 0)).into())
            .unwrap_or_else(|e| panic!("bind {protocol} client to {from}: {e}"));
        socket
            .connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into(), IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect {protocol} client from {from} to port {port}: {e}"));
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("set read timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("set write timeout");
        let writer = stream.try_clone().expect("clone client socket");
        LineConnection { reader: BufReader::new(stream), writer, protocol }
    }

    fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("{} send {line:?}: {e}", self.protocol));
    }

    /// Sends `line` unless the server has already closed the connection.
    fn send_if_open(&mut self, line: &str) {
        let _ = self.writer.write_all(format!("{line}\r\n").as_bytes());
    }

    /// One SMTP reply: `NNN-text` lines up to the `NNN text` line.
    fn read_smtp_reply(&mut self) -> SmtpReply {
        let mut code = None;
        let mut text = Vec::new();
        loop {
            let line = self.read_line();
            let parsed = line.get(..3).and_then(|c| c.parse::<u16>().ok());
            let (Some(this_code), separator) = (parsed, line.as_bytes().get(3).copied()) else {
                panic!("{} reply line without a code: {line:?}", self.protocol);
            };
            assert!(
                code.is_none_or(|c| c == this_code),
                "{} reply changes its code mid-reply: {line:?}",
                self.protocol
            );
            code = Some(this_code);
            text.push(line.get(4..).unwrap_or_default().to_owned());
            if separator != Some(b'-') {
                return SmtpReply { code: this_code, text: text.join("\n") };
            }
        }
    }

    /// One line without CRLF; panics on timeout or a closed connection.
    fn read_line(&mut self) -> String {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("{} server closed the connection", self.protocol),
            Ok(_) => line.trim_end_matches(['\r', '\n']).to_owned(),
            Err(e) => panic!("{} read failed after {IO_TIMEOUT:?} at most: {e}", self.protocol),
        }
    }

    /// Skips untagged lines up to the line tagged `tag`.
    fn read_tagged(&mut self, tag: &str) -> String {
        let prefix = format!("{tag} ");
        loop {
            let line = self.read_line();
            if line.starts_with(&prefix) {
                return line;
            }
        }
    }

    /// Reads until the server closes the connection (after LOGOUT/QUIT); errors do not matter then.
    fn drain(&mut self) {
        let mut line = String::new();
        while matches!(self.reader.read_line(&mut line), Ok(n) if n > 0) {
            line.clear();
        }
    }
}
