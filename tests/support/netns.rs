//! A network namespace of the test's own (`ip netns add`), entered by the calling thread, so
//! everything it then starts (mailwarden, listeners, clients, `nft`) sees only that
//! namespace's loopback and firewall, never the host's. Needs root, iproute2 and nftables.
//! Deleted when dropped, also when the test fails.

use std::os::fd::AsRawFd;
use std::process::Command;

pub struct Netns {
    pub name: String,
}

fn succeeds(program: &str, args: &[&str]) -> Result<(), String> {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => Err(format!("cannot run {program}: {e}")),
    }
}

impl Netns {
    /// Creates the namespace `name`, brings its `lo` up and moves the calling thread into it.
    /// Without root, `ip` or `nft` the test is skipped with a note (`None`); with `CI=true`
    /// that is a failure.
    pub fn enter(name: &str) -> Option<Netns> {
        let ready = succeeds("nft", &["--version"]).and_then(|()| {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
            succeeds("ip", &["netns", "add", name])
        });
        if let Err(e) = ready {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "CI=true but no network namespace with nftables ({e}): run as root with iproute2 and nftables installed"
                );
            }
            eprintln!("skipping: no network namespace with nftables ({e})");
            return None;
        }
        let netns = Netns { name: name.to_string() };
        succeeds("ip", &["netns", "exec", name, "ip", "link", "set", "lo", "up"]).expect("bring lo up");
        let file = std::fs::File::open(format!("/run/netns/{name}")).expect("open the namespace");
        // SAFETY: setns on a valid namespace descriptor changes only this thread's namespace.
        let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
        Some(netns)
    }

    /// Runs `nft` in the namespace; returns its standard output.
    pub fn nft(&self, args: &[&str]) -> String {
        let out = Command::new("ip").args(["netns", "exec", &self.name, "nft"]).args(args).output().expect("run nft");
        assert!(out.status.success(), "nft {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}
