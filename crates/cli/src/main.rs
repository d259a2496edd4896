//! `tessera`: keys, tokens and JWKS from the shell, and the OAuth 2.0
//! authorization server (`tessera serve`) with its admin commands.
//!
//! Exit codes: 0 success, 1 token invalid (verification failed), 2 usage
//! or input error; the admin commands also 3, 4 and 75 ([`exit_code`]).
//! Errors are one line on standard error.

/// `println!` that returns the error from the enclosing function (as
/// `anyhow::Error` or [`Failure`]) instead of panicking when standard
/// output is closed (`tessera … | head -c0`): one line on standard error
/// and exit 2, never a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            return Err(::core::convert::From::from(
                anyhow::Error::from(e).context("writing to standard output"),
            ));
        }
    }};
}

/// [`out!`] without the newline.
macro_rules! out_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($arg)*) {
            return Err(::core::convert::From::from(
                anyhow::Error::from(e).context("writing to standard output"),
            ));
        }
    }};
}

mod input;
mod key;
mod server;
mod token;

use std::process::ExitCode;

/// mimalloc: under the server's load (many small, short-lived allocations
/// across threads) it measured 30 % more client_credentials grants per
/// second than glibc's allocator, and it gives memory back after bursts
/// (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "JSON Web Tokens: keys, tokens and JWKS from the shell, and an OAuth 2.0 authorization server"
)]
#[command(
    after_help = "Example:\n  tessera key generate --alg ES256 -o signing.jwk\n  \
    tessera token sign --key signing.jwk --iss https://auth.example.com --aud api --sub alice --exp 15m > token.txt\n  \
    tessera token verify --key signing.jwk --iss https://auth.example.com --aud api < token.txt\n\n\
    Exit status: 0 done; 1 the token is not valid (token verify); 2 bad arguments, unreadable \
    input or a change refused; 3 the user, client, session or key named does not exist; 4 the \
    user to add already exists; 75 the database cannot answer now (try again)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate, inspect and convert keys.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Print a JWK set (`{"keys":[…]}`) of the public parts of keys.
    #[command(after_help = "Example:\n  tessera jwks current.jwk next.jwk > jwks.json")]
    Jwks(key::JwksArgs),
    /// Sign, verify and decode tokens.
    #[command(subcommand)]
    Token(Box<token::TokenCommand>),
    /// Run the OAuth 2.0 authorization server.
    #[command(after_help = "Examples:\n  tessera serve\n  \
        tessera serve --listen 0.0.0.0:8080 --issuer https://auth.example.com --database-url postgres://tessera@db/tessera")]
    Serve(server::ServeArgs),
    /// Manage the users who sign in on the login page (or with the password grant).
    User {
        #[command(flatten)]
        server: server::ServerArgs,
        #[command(subcommand)]
        command: server::UserCommand,
    },
    /// Manage OAuth clients.
    Client {
        #[command(flatten)]
        server: server::ServerArgs,
        #[command(subcommand)]
        command: server::ClientCommand,
    },
    /// Sign-in sessions: list them, end one like a logout.
    Session {
        #[command(flatten)]
        server: server::ServerArgs,
        #[command(subcommand)]
        command: server::SessionCommand,
    },
    /// Copy the SQLite database to FILE while the server runs (for
    /// PostgreSQL use pg_dump). The master key is not in the copy: keep it
    /// safe on its own; a restore needs both.
    #[command(after_help = "Example:\n  tessera backup /var/backups/tessera-$(date +%F).db")]
    Backup(server::BackupArgs),
    /// List and rotate the server's signing keys.
    Keys {
        #[command(flatten)]
        server: server::ServerArgs,
        #[command(subcommand)]
        command: server::KeysCommand,
    },
}

/// How a command failed, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// The token is not valid (exit 1).
    Invalid(tessera_jose::Error),
    /// Bad arguments, unreadable input, or a change refused (exit 2, or
    /// the code [`exit_code`] gives its cause).
    Input(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure::Input(e.into())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Key(command) => key::run(command),
        Command::Jwks(args) => key::jwks(&args),
        Command::Token(command) => token::run(*command),
        Command::Serve(args) => server::serve(args),
        Command::User { server, command } => server::user(&server, command),
        Command::Client { server, command } => server::client(&server, command),
        Command::Session { server, command } => server::session(&server, command),
        Command::Keys { server, command } => server::keys(&server, command),
        Command::Backup(args) => server::backup(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Invalid(e)) => {
            eprintln!("invalid token: {e}");
            ExitCode::from(1)
        }
        Err(Failure::Input(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The exit code of a failed command: what a script needs to tell apart,
/// to provision idempotently or retry, has a code of its own.
///
/// - 3: the user, client, session or key named does not exist;
/// - 4: the user to add already exists (clients get new ids);
/// - 75 (`EX_TEMPFAIL`): the database cannot answer now, or the server is
///   at capacity: the same command may succeed later;
/// - 2: anything else (bad arguments, unreadable input, a refused change).
fn exit_code(e: &anyhow::Error) -> u8 {
    use tessera_server::Error;
    match e.chain().find_map(|c| c.downcast_ref::<Error>()) {
        Some(Error::NotFound { .. }) => 3,
        Some(Error::Exists { .. }) => 4,
        Some(Error::Unavailable(_) | Error::Overloaded(_)) => 75,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    /// Ids made of base64url (key thumbprints, client ids, session ids)
    /// may begin with `-`: every command that takes one reads it as the
    /// id, not as an option (`tessera keys revoke` refused one key id in
    /// 64, the command meant for a leaked key).
    #[test]
    fn ids_that_begin_with_a_hyphen_are_read_as_ids() {
        for args in [
            &["tessera", "keys", "revoke", "-Xq3vR9d"][..],
            &["tessera", "keys", "revoke", "--q3vR9d"],
            &["tessera", "client", "delete", "-Xq3vR9d"],
            &["tessera", "client", "rotate-secret", "-Xq3vR9d"],
            &["tessera", "client", "set", "-Xq3vR9d", "--add-scope", "a"],
            &["tessera", "session", "end", "-Xq3vR9d"],
        ] {
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("{args:?}: {e}");
            }
        }
    }
}
