//! A private Dovecot 2.4 (Debian 13's) for end-to-end tests, run with `chroot` in a cached
//! Debian 13 root, because the test machine is Debian 12, whose archive has only Dovecot 2.3.
//!
//! The root is built once per machine by `scripts/dovecot24-root.sh` (debootstrap from Debian's
//! archive, about a minute) into a folder outside the repository, and reused while its marker
//! says it is complete. Dovecot runs with the project's own `dovecot/2.4/95-mailwarden.conf`,
//! so the tests prove the snippet we ship. Each instance's files live in a temporary folder
//! inside the root's `/tmp`. Nothing is mounted: Dovecot needs only the `/dev` nodes
//! debootstrap creates (null, urandom, ...) and runs without `/proc`.
//! Needs root, like any Dovecot, and like chroot.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use super::dovecot::USERS;
use super::mailwarden::free_port;

/// Overrides where the Debian 13 root is kept (and built when missing).
pub const ROOT_ENV: &str = "MAILWARDEN_DOVECOT24_ROOT";
const DEFAULT_ROOT: &str = "/var/cache/mailwarden-tests/trixie-dovecot";
/// Written last by the build script; its first line is the script's RECIPE.
const MARKER: &str = ".mailwarden-root";
const BUILD_SCRIPT: &str = "scripts/dovecot24-root.sh";

/// The root's system account whose password has expired (made by the build script): with the
/// right password, Dovecot's PAM passdb fails it with `fail_type = "expired"`.
pub const EXPIRED_ACCOUNT: (&str, &str) = ("mw-expired", "expired-secret");

/// The nonce substituted into the shipped snippet; it only salts pwhash.
pub const TEST_NONCE: &str = "mailwarden-e2e-nonce";

/// Mail processes run as this account (65534 in the Debian 13 root too). Dovecot refuses root
/// and, by default, uids below 500.
const MAIL_USER: &str = "nobody";

/// How long Dovecot may take to start or stop.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(10);

/// The Debian 13 root to run Dovecot 2.4 in, built on first use. Call first in every 2.4 test:
/// `let Some(root) = require_dovecot24() else { return };`.
///
/// Outside CI a machine that cannot have the root (no debootstrap, not root, the archive
/// unreachable) skips the test with a note on stderr. In CI (`CI=true`) that is a failure.
pub fn require_dovecot24() -> Option<PathBuf> {
    static ROOT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match ROOT.get_or_init(prepare_root) {
        Ok(root) => Some(root.clone()),
        Err(problem) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but there is no Dovecot 2.4 to test against: {problem}")
        }
        Err(problem) => {
            note(&format!("SKIP: no Dovecot 2.4 to test against: {problem}"));
            None
        }
    }
}

/// The root at `$MAILWARDEN_DOVECOT24_ROOT` (else the default), built when it is missing,
/// incomplete or from an older recipe. Runs once per test binary; tests wait for it.
fn prepare_root() -> Result<PathBuf, String> {
    let root = std::env::var_os(ROOT_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
    let recipe = expected_recipe()?;
    if root_is_complete(&root, &recipe) {
        return Ok(root);
    }
    if !running_as_root() {
        return Err(format!(
            "{} is missing or out of date, and building it needs root (debootstrap, chroot)",
            root.display()
        ));
    }
    if !Path::new("/usr/sbin/debootstrap").exists() {
        return Err(format!(
            "{} is missing or out of date, and debootstrap is not installed (apt-get install debootstrap)",
            root.display()
        ));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(BUILD_SCRIPT);
    note(&format!(
        "dovecot24: building the Debian 13 root at {} with {} (about a minute; once per machine)",
        root.display(),
        script.display()
    ));
    let started = Instant::now();
    // The script prints its progress (debootstrap's) to stderr, which a test does not capture.
    let status = Command::new("sh")
        .arg(&script)
        .arg(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| format!("run {}: {e}", script.display()))?;
    if !status.success() {
        return Err(format!("{} {} failed ({status}); its output is above", script.display(), root.display()));
    }
    if !root_is_complete(&root, &recipe) {
        return Err(format!("{} succeeded but {} has no complete marker", script.display(), root.display()));
    }
    note(&format!("dovecot24: root ready in {:.0?}", started.elapsed()));
    Ok(root)
}

/// A line on the test binary's stderr that the test harness does not capture: the root's
/// build takes a minute, and a skip must be visible, not only in a failing test's output.
fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The build script's `RECIPE="..."` line: a root built by another recipe is rebuilt.
fn expected_recipe() -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(BUILD_SCRIPT);
    let text = fs::read_to_string(&script).map_err(|e| format!("read {}: {e}", script.display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix("RECIPE=\"")?.strip_suffix('"'))
        .map(str::to_owned)
        .ok_or_else(|| format!("{} has no RECIPE=\"...\" line", script.display()))
}

fn root_is_complete(root: &Path, recipe: &str) -> bool {
    fs::read_to_string(root.join(MARKER)).is_ok_and(|marker| marker.lines().next() == Some(recipe))
}

fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status.lines().find_map(|line| line.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// How one test's Dovecot authenticates, beyond the passwd-file of [`USERS`].
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// Logins in a `deny = yes` passdb that Dovecot checks first: it fails them with
    /// `fail_type = "disabled"`, whatever the password.
    pub disabled: Vec<&'static str>,
    /// Also authenticate the root's system accounts named `mw-*` through PAM, so
    /// [`EXPIRED_ACCOUNT`] fails with `fail_type = "expired"`.
    pub pam: bool,
    /// Start with the passwd-file unreadable by Dovecot's auth process (user `dovecot`):
    /// every login fails with `fail_type = "internal"` until [`Dovecot24::repair_passdb`].
    pub broken_passdb: bool,
    /// `auth_debug = yes`: Dovecot logs every policy request body ([`Dovecot24::policy_requests`]).
    pub log_policy_requests: bool,
    /// A CA certificate (PEM) that Dovecot's HTTP client trusts (`ssl_client_ca_file`), for an
    /// https policy URL. Copied into the root, where Dovecot can read it.
    pub trusted_ca: Option<PathBuf>,
}

/// A running Dovecot 2.4 in the Debian 13 root. Stopped on drop.
pub struct Dovecot24 {
    root: PathBuf,
    /// This instance's folder, inside the root's /tmp.
    dir: tempfile::TempDir,
    /// `dir` as Dovecot sees it from inside the chroot.
    inner_dir: PathBuf,
    imap_port: u16,
    pop3_port: u16,
    stopped: bool,
}

impl Dovecot24 {
    /// Starts Dovecot 2.4 asking the policy server at `policy_url` with `X-API-Key: <api_key>`,
    /// and waits until its IMAP and POP3 ports accept connections.
    pub fn start(root: &Path, policy_url: &str, api_key: &str) -> Dovecot24 {
        Dovecot24::start_with(root, policy_url, api_key, &Setup::default())
    }

    pub fn start_with(root: &Path, policy_url: &str, api_key: &str, setup: &Setup) -> Dovecot24 {
        let dir = tempfile::Builder::new()
            .prefix("mailwarden-dovecot24-")
            .tempdir_in(root.join("tmp"))
            .expect("create a Dovecot folder in the root's /tmp");
        // mkdtemp makes the folder 0700; the auth process (user `dovecot`) must reach the
        // passwd-file inside it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod 0755 the Dovecot folder");
        let inner_dir =
            Path::new("/").join(dir.path().strip_prefix(root).expect("the Dovecot folder is inside the root"));
        let imap_port = free_port();
        let pop3_port = free_port();
        let dovecot = Dovecot24 { root: root.to_path_buf(), dir, inner_dir, imap_port, pop3_port, stopped: false };
        dovecot.write_files(policy_url, api_key, setup);

        // `dovecot` daemonizes and the daemon keeps the stdout/stderr it inherited: a pipe here
        // would never reach EOF, so both go to a file.
        let output_path = dovecot.dir.path().join("dovecot.stdout");
        let output = fs::File::create(&output_path).expect("create dovecot.stdout");
        let status = dovecot
            .chroot_command("/usr/sbin/dovecot")
            .arg("-c")
            .arg(dovecot.inner_dir.join("dovecot.conf"))
            .stdout(output.try_clone().expect("clone dovecot.stdout"))
            .stderr(output)
            .status()
            .expect("run chroot ... dovecot");
        if !status.success() {
            panic!(
                "chroot {} dovecot failed ({status}):\n{}\n--- dovecot.log ---\n{}",
                dovecot.root.display(),
                fs::read_to_string(&output_path).unwrap_or_default(),
                dovecot.log()
            );
        }
        dovecot.wait_for_port(imap_port);
        dovecot.wait_for_port(pop3_port);
        dovecot
    }

    pub fn imap_port(&self) -> u16 {
        self.imap_port
    }

    pub fn pop3_port(&self) -> u16 {
        self.pop3_port
    }

    /// The Dovecot log so far, for assertion messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_else(|e| format!("(no Dovecot log: {e})"))
    }

    /// The first `count` policy request bodies Dovecot sent, exactly as sent, in order (needs
    /// `Setup::log_policy_requests`). A report's body is the one with `"success"`. Dovecot's
    /// log process writes the log a moment after the request, so this waits up to 5 s for them;
    /// it returns what there is then.
    pub fn policy_requests(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let bodies: Vec<String> = self
                .log()
                .lines()
                .filter_map(|line| line.split_once("Policy server request JSON: "))
                .map(|(_, body)| body.to_owned())
                .collect();
            if bodies.len() >= count || Instant::now() > deadline {
                return bodies;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Makes the passwd-file of a `Setup::broken_passdb` readable again, as an admin fixing
    /// the passdb would.
    pub fn repair_passdb(&self) {
        fs::set_permissions(self.dir.path().join("users"), fs::Permissions::from_mode(0o644))
            .expect("chmod 0644 the passwd-file");
        // Dovecot checks a passwd-file at most once per second and remembers the result for
        // the rest of that second.
        thread::sleep(Duration::from_millis(1100));
    }

    /// Stops Dovecot and waits until its master process has exited. Idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let master_pid = fs::read_to_string(self.dir.path().join("run/master.pid")).ok();
        let _ = self
            .chroot_command("/usr/bin/doveadm")
            .arg("-c")
            .arg(self.inner_dir.join("dovecot.conf"))
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // The chroot shares the host's process IDs.
        if let Some(pid) = master_pid {
            let proc_dir = PathBuf::from(format!("/proc/{}", pid.trim()));
            let deadline = Instant::now() + PROCESS_TIMEOUT;
            while proc_dir.exists() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// `chroot <root> <program>` with a clean environment: nothing of the host's leaks in.
    fn chroot_command(&self, program: &str) -> Command {
        let mut command = Command::new("/usr/sbin/chroot");
        command
            .arg(&self.root)
            .arg(program)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null());
        command
    }

    fn write_files(&self, policy_url: &str, api_key: &str, setup: &Setup) {
        let host_dir = self.dir.path();
        let inner = self.inner_dir.display();
        let (uid, gid) = system_user_ids(&self.root, MAIL_USER);
        let mut passwd_file = String::new();
        for (login, password) in USERS {
            let home = host_dir.join("home").join(login);
            fs::create_dir_all(&home).expect("create mail home");
            std::os::unix::fs::chown(&home, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {} to {MAIL_USER} (the tests need root): {e}", home.display()));
            passwd_file.push_str(&format!("{login}:{{PLAIN}}{password}:{uid}:{gid}::{inner}/home/{login}::\n"));
        }
        let users = host_dir.join("users");
        fs::write(&users, passwd_file).expect("write passwd-file");
        if setup.broken_passdb {
            // root-owned 0600: the auth process runs as `dovecot` and cannot open it.
            fs::set_permissions(&users, fs::Permissions::from_mode(0o600)).expect("chmod 0600 the passwd-file");
        }
        let disabled: String = setup.disabled.iter().map(|login| format!("{login}\n")).collect();
        fs::write(host_dir.join("disabled"), disabled).expect("write the deny passdb");
        fs::write(host_dir.join("95-mailwarden.conf"), shipped_snippet(policy_url, api_key))
            .expect("write the policy snippet");
        let mut config = test_config(&self.inner_dir, self.imap_port, self.pop3_port, setup);
        if let Some(ca) = &setup.trusted_ca {
            fs::copy(ca, host_dir.join("ca.pem")).expect("copy the CA into the root");
            config.push_str(&format!("ssl_client_ca_file = {inner}/ca.pem\n"));
        }
        fs::write(host_dir.join("dovecot.conf"), config).expect("write dovecot.conf");
    }

    fn wait_for_port(&self, port: u16) {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                panic!(
                    "Dovecot 2.4 did not open port {port} within {PROCESS_TIMEOUT:?}\n--- dovecot.log ---\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Dovecot24 {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The project's `dovecot/2.4/95-mailwarden.conf` with the three placeholders replaced. Panics
/// if a placeholder line is not there exactly once: the shipped file and this harness must not
/// drift.
fn shipped_snippet(policy_url: &str, api_key: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("dovecot/2.4/95-mailwarden.conf");
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

/// Everything a self-contained 2.4 instance needs, in 2.4's syntax, then the shipped snippet.
/// Paths are as Dovecot sees them inside the chroot. The test-only settings (no failure delays,
/// no anvil penalty) keep a failed login at ~0.5 s instead of 2-15 s.
fn test_config(dir: &Path, imap_port: u16, pop3_port: u16, setup: &Setup) -> String {
    let dir = dir.display();
    let auth_debug = if setup.log_policy_requests { "yes" } else { "no" };
    let deny_passdb = if setup.disabled.is_empty() {
        String::new()
    } else {
        // Checked first; a login found here fails as disabled before any password check.
        format!("passdb deny {{\n  driver = passwd-file\n  deny = yes\n  passwd_file_path = {dir}/disabled\n}}\n")
    };
    let pam_passdb = if setup.pam {
        // Only for the root's test accounts: PAM fails unknown users after a 2 s delay, which
        // would slow down every wrong password of the passwd-file users.
        "passdb pam {\n  username_filter = mw-*\n}\n"
    } else {
        ""
    };
    format!(
        r#"# Generated by tests/support/dovecot24.rs for one test.
dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
base_dir = {dir}/run
state_dir = {dir}/state
instance_name = mailwarden-e2e24-{imap_port}
log_path = {dir}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = no
auth_allow_cleartext = yes
auth_mechanisms = plain login
auth_failure_delay = 0
auth_internal_failure_delay = 0
auth_debug = {auth_debug}
# Lets a test client pass x-originating-ip in IMAP ID, as a webmail or proxy would.
login_trusted_networks = 127.0.0.0/8
mail_driver = maildir
mail_path = ~/Maildir

{deny_passdb}passdb passwd-file {{
  passwd_file_path = {dir}/users
}}
{pam_passdb}userdb passwd-file {{
  passwd_file_path = {dir}/users
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

!include {dir}/95-mailwarden.conf
"#
    )
}

/// (uid, gid) of an account in the root's /etc/passwd.
fn system_user_ids(root: &Path, name: &str) -> (u32, u32) {
    let passwd = fs::read_to_string(root.join("etc/passwd")).expect("read the root's /etc/passwd");
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() > 3 && fields[0] == name)
        .and_then(|fields| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
        .unwrap_or_else(|| panic!("no usable account {name:?} in the root's /etc/passwd"))
}

impl super::dovecot::LoginPorts for Dovecot24 {
    fn imap_port(&self) -> u16 {
        self.imap_port
    }

    fn pop3_port(&self) -> u16 {
        self.pop3_port
    }
}
