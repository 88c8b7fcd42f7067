//! The `mailwarden` binary: everything is in the library; see `cli`.

fn main() -> std::process::ExitCode {
    mailwarden::cli::main()
}
