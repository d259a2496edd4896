//! `tessera serve` and the admin commands (`user`, `client`, `session`,
//! `keys`, `backup`), which work on the same configuration and database,
//! also while the server runs.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tessera_server::admin::{Actor, AdminService, ClientRequest, Page};
use tessera_server::config::DatabaseUrl;
use tessera_server::db::Schema;
use tessera_server::{Config, Overrides};
use zeroize::Zeroizing;

use crate::Failure;

/// Where the server's data lives; the same for `serve` and every admin
/// command.
#[derive(Args, Clone, Debug)]
pub struct ServerArgs {
    /// A TOML configuration file.
    #[arg(long, env = "TESSERA_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The data directory (SQLite database, master key) [default: ./tessera-data].
    #[arg(long, env = "TESSERA_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// The database: sqlite://PATH or postgres://… [default: SQLite in the
    /// data directory]. A URL holding a password is refused here, where
    /// every user of the machine can read it in the process list: set
    /// TESSERA_DATABASE_URL or `database_url` in the configuration file.
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// The issuer URL (`iss` of every token) [default: http://LISTEN]. The
    /// admin commands read it too (on https, clients may register only the
    /// redirect and logout URIs an https server accepts); unset, they take
    /// the issuer the server last started as.
    #[arg(long, env = "TESSERA_ISSUER", global = true)]
    issuer: Option<String>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "TESSERA_LISTEN")]
    listen: Option<String>,
}

impl ServerArgs {
    fn overrides(&self) -> anyhow::Result<Overrides> {
        Ok(Overrides {
            config: self.config.clone(),
            data_dir: self.data_dir.clone(),
            database_url: self.database_url()?,
            issuer: self.issuer.clone(),
            master_key: match std::env::var("TESSERA_MASTER_KEY") {
                Ok(key) => Some(Zeroizing::new(key)),
                Err(std::env::VarError::NotPresent) => None,
                // Not the file's key instead: refused, as the server would
                // otherwise start under another master key than asked.
                Err(std::env::VarError::NotUnicode(_)) => {
                    bail!("TESSERA_MASTER_KEY is not valid UTF-8 (base64url expected)")
                }
            },
            master_key_file: std::env::var_os("TESSERA_MASTER_KEY_FILE").map(PathBuf::from),
            ..Overrides::default()
        })
    }

    /// `--database-url`, when it holds no password, else
    /// `TESSERA_DATABASE_URL`. The flag is read by hand rather than with
    /// clap's `env`, which would not say where a value came from.
    fn database_url(&self) -> anyhow::Result<Option<DatabaseUrl>> {
        if let Some(flag) = &self.database_url {
            let url = DatabaseUrl::from(flag.clone());
            if url.holds_password() {
                bail!(
                    "--database-url holds a password, which every user of this machine can \
                     read in the process list: pass the URL in TESSERA_DATABASE_URL or as \
                     database_url in the configuration file"
                );
            }
            return Ok(Some(url));
        }
        match std::env::var("TESSERA_DATABASE_URL") {
            Ok(url) => Ok(Some(url.into())),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                bail!("TESSERA_DATABASE_URL is not valid UTF-8")
            }
        }
    }

    fn config(&self) -> anyhow::Result<Config> {
        Ok(Config::resolve(self.overrides()?)?)
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Connections the kernel holds for the server to accept (what
/// `TcpListener::bind` asks for).
const LISTEN_BACKLOG: u32 = 1024;

/// `tessera serve`.
pub fn serve(args: ServeArgs) -> Result<(), Failure> {
    // With transparent huge pages on ("always" on many distributions) the
    // allocator's arenas fault in 2 MiB at a time: an idle server would
    // hold twice the memory it uses. A server of small objects gains
    // nothing from them.
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("tessera: cannot disable transparent huge pages: {e}");
    }
    let mut overrides = args.server.overrides()?;
    overrides.listen = args.listen;
    let mut config = Config::resolve(overrides)?;
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(std::env::var("TESSERA_LOG").ok().as_deref())?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    runtime()?.block_on(async move {
        // The address is taken now (a port another server listens on
        // fails the start before the database is touched, and port 0 gets
        // its number, which the issuer may name), but connections are taken only once the server
        // is open: a start may wait for the database or migrate for a
        // while, and connections accepted meanwhile would hang there, the
        // port looking up to a load balancer. Until then they are refused.
        let listen = config.listen;
        let socket = match listen {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .context("cannot make a socket")?;
        socket.set_reuseaddr(true)?;
        socket
            .bind(listen)
            .with_context(|| format!("cannot listen on {listen}"))?;
        let address = socket.local_addr()?;
        config.bound_to(address);
        let opened = tessera_server::open(config).await?;
        let listener = socket
            .listen(LISTEN_BACKLOG)
            .with_context(|| format!("cannot listen on {listen}"))?;
        out!("tessera: issuer    {}", opened.config.issuer);
        out!("tessera: listening {address} ({})", opened.db.backend());
        out!("tessera: JWKS      {}", opened.config.jwks_uri());
        std::io::stdout().flush()?;
        tessera_server::serve(opened, listener, shutdown_signal()).await?;
        eprintln!("tessera: stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

/// The log filter `TESSERA_LOG` says, or `info`. One that cannot be read
/// is refused, rather than log at a level nobody chose: a syntax error fell
/// back to `info` without a word, and a misspelt level (`warning`) is a
/// target's name to `tracing`, which turned every log off, the lines of
/// audit events that could not be written included. One that says
/// nothing (`TESSERA_LOG=` in a unit file, an empty value in a chart) is
/// no value: it had every log off.
fn log_filter(value: Option<&str>) -> anyhow::Result<tracing_subscriber::EnvFilter> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let Some(text) = value.filter(|text| text.split(',').any(|d| !d.trim().is_empty())) else {
        return Ok(tracing_subscriber::EnvFilter::new("info"));
    };
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains('=') && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            anyhow::bail!(
                "TESSERA_LOG: {directive:?} is not a level (trace, debug, info, warn, error, off); \
                 a module's level is written module=level"
            );
        }
    }
    tracing_subscriber::EnvFilter::try_new(text).with_context(|| format!("TESSERA_LOG {text:?}"))
}

async fn shutdown_signal() {
    tessera_listen::shutdown_signal().await;
    eprintln!("tessera: shutting down");
}

/// The longest line `--password-stdin` reads (a password is far shorter;
/// `< /dev/zero` must not fill the memory).
const PASSWORD_LINE_MAX: u64 = 4096;

/// Read a password from standard input (first line) with `--password-stdin`,
/// or, on a terminal, ask twice. Standard input that is not a terminal is
/// read only when asked: a loop of `user add` over a file of usernames
/// would otherwise take each next line for a password, silently.
fn read_password(from_stdin: bool) -> anyhow::Result<Zeroizing<String>> {
    if from_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .take(PASSWORD_LINE_MAX)
            .read_line(&mut line)?;
        if !line.ends_with('\n') && line.len() as u64 >= PASSWORD_LINE_MAX {
            bail!("the first line of standard input is longer than {PASSWORD_LINE_MAX} bytes");
        }
        let trimmed = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
        if trimmed.is_empty() {
            bail!("no password on standard input");
        }
        return Ok(trimmed);
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "standard input is not a terminal: pass --password-stdin to read the password \
             from its first line"
        );
    }
    let first = Zeroizing::new(rpassword::prompt_password("Password: ")?);
    let second = Zeroizing::new(rpassword::prompt_password("Again: ")?);
    if first != second {
        bail!("the passwords differ");
    }
    Ok(first)
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user who signs in on the login page (or with the password grant).
    #[command(
        after_help = "Example:\n  printf '%s\\n' \"$PASSWORD\" | tessera user add alice --password-stdin --scope orders:read --email alice@example.com --name \"Alice Liddell\""
    )]
    Add {
        username: String,
        /// Read the password from standard input (else asked on the terminal).
        #[arg(long)]
        password_stdin: bool,
        /// An API scope the user may be granted (repeatable; openid, profile, email and offline_access need none).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        #[command(flatten)]
        profile: ProfileArgs,
    },
    /// Change a user's profile claims (an empty value removes one) or
    /// scopes (taking one away ends the user's sessions and tokens).
    #[command(
        after_help = "Examples:\n  tessera user set alice --add-scope orders:write\n  \
        tessera user set alice --remove-scope orders:write --email alice@example.com\n  \
        tessera user set alice --scope orders:read --scope orders:write   # in place of all the old"
    )]
    Set {
        username: String,
        #[command(flatten)]
        profile: ProfileArgs,
        /// The user's scopes from now on, in place of the old (repeat).
        #[arg(long = "scope", conflicts_with_all = ["add_scopes", "remove_scopes", "no_scopes"])]
        scopes: Vec<String>,
        /// A scope to give, the others kept (repeat).
        #[arg(long = "add-scope")]
        add_scopes: Vec<String>,
        /// A scope to take away, the others kept (repeat).
        #[arg(long = "remove-scope")]
        remove_scopes: Vec<String>,
        /// Take every scope away (ends the user's sessions and tokens).
        #[arg(long = "no-scopes", conflicts_with_all = ["add_scopes", "remove_scopes"])]
        no_scopes: bool,
    },
    /// List users.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop a user from logging in (and end the user's sessions).
    Disable { username: String },
    /// Let a disabled user log in again.
    Enable { username: String },
    /// Delete a user and the user's sessions.
    Delete { username: String },
    /// Set a new password (and end the user's sessions).
    Passwd {
        username: String,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// Profile claims (OpenID Connect Core §5.1), given by the `profile` and
/// `email` scopes.
#[derive(Args, Debug, Default)]
pub struct ProfileArgs {
    /// Full name (`name` claim).
    #[arg(long)]
    name: Option<String>,
    /// Email address (`email` claim).
    #[arg(long)]
    email: Option<String>,
    /// Whether the email address has been verified (`email_verified`).
    #[arg(long)]
    email_verified: Option<bool>,
}

impl ProfileArgs {
    fn profile(self) -> tessera_server::store::users::Profile {
        tessera_server::store::users::Profile {
            name: self.name,
            email: self.email,
            email_verified: self.email_verified,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum SessionCommand {
    /// List live sign-in sessions, newest first.
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        /// Also the sessions past their end that refresh tokens issued in
        /// them keep (offline access), marked `offline`.
        #[arg(long)]
        offline: bool,
        /// The newest this many at most (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// End a session like a logout: its refresh tokens are revoked and its clients told.
    End {
        // Ids are random base64url and may begin with `-`.
        #[arg(allow_hyphen_values = true)]
        sid: String,
    },
}

// Parsed once per process: the size of the `Add` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Register a client; prints its client_id and, once, its secret.
    #[command(
        after_help = "Examples:\n  tessera client add orders-worker --grant client_credentials --scope orders:read --audience orders-api\n  \
        tessera client add shop --grant authorization_code --grant refresh_token --redirect-uri https://shop.example.com/callback --scope openid --scope profile\n  \
        tessera client add ios-app --public --grant authorization_code --redirect-uri com.example.app:/callback --scope openid"
    )]
    Add {
        name: String,
        /// A grant the client may use: authorization_code, client_credentials, refresh_token, jwt-bearer, password (repeatable; default client_credentials).
        #[arg(long = "grant")]
        grants: Vec<String>,
        /// A scope the client may ask for (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// The `aud` of its access tokens (repeatable; default the issuer).
        #[arg(long = "audience")]
        audiences: Vec<String>,
        /// A public client: no secret or keys; any grant but client_credentials and jwt-bearer (name it with --grant).
        #[arg(long)]
        public: bool,
        /// Public keys (JWKS file) for private_key_jwt instead of a secret.
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// Access-token lifetime, e.g. 5m [default: the server's].
        #[arg(long, value_parser = humantime::parse_duration)]
        access_ttl: Option<std::time::Duration>,
        /// Where the sign-in may send people back (repeatable; authorization_code).
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// Where logout may send people back (repeatable).
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        /// Where back-channel logout tokens are POSTed.
        #[arg(long)]
        backchannel_logout_uri: Option<String>,
        /// The algorithm of its ID tokens [default: RS256].
        #[arg(long)]
        id_token_alg: Option<String>,
        /// The operator's own application: people are not asked for consent.
        #[arg(long)]
        first_party: bool,
        /// Print {"client_id": …, "client_secret": …}.
        #[arg(long)]
        json: bool,
    },
    /// List clients.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a client and its refresh tokens.
    Delete {
        // Ids are random base64url and may begin with `-`.
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Change a client's scopes: in full, or some added and some taken
    /// away, the others kept (taking one away refuses the tokens issued
    /// to it before).
    #[command(
        group(clap::ArgGroup::new("change").required(true).multiple(true)
            .args(["scopes", "add_scopes", "remove_scopes", "no_scopes"])),
        after_help = "Examples:\n  tessera client set CLIENT_ID --add-scope orders:write\n  \
        tessera client set CLIENT_ID --scope orders:read   # in place of all the old"
    )]
    Set {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
        /// A scope the client may ask for from now on, in place of the
        /// old (repeat).
        #[arg(long = "scope", conflicts_with_all = ["add_scopes", "remove_scopes", "no_scopes"])]
        scopes: Vec<String>,
        /// A scope to give, the others kept (repeat).
        #[arg(long = "add-scope")]
        add_scopes: Vec<String>,
        /// A scope to take away, the others kept (repeat).
        #[arg(long = "remove-scope")]
        remove_scopes: Vec<String>,
        /// Take every scope away (refuses the tokens issued with them).
        #[arg(long = "no-scopes", conflicts_with_all = ["add_scopes", "remove_scopes"])]
        no_scopes: bool,
    },
    /// Give a client a new secret (printed once); the old one stops
    /// working, and so do the access tokens issued to the client before
    /// (its refresh tokens go on, with the new secret).
    RotateSecret {
        #[arg(allow_hyphen_values = true)]
        client_id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// List signing keys and their state (announced, active, retired).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start a rotation now: a new key is published, and signs after the announce period.
    Rotate,
    /// Revoke a key at once (it leaked): it is no longer published nor
    /// signs, every token it signed is refused here and, through the
    /// revocation feed, by every guard; a new key takes over at once.
    Revoke {
        /// The key's id (`tessera keys list`). A thumbprint: one in 64
        /// begins with `-`.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
}

/// The admin operations, acting as the operating-system user who runs the
/// command; audit events are written at once (the process ends next).
fn service<'a>(
    db: &'a tessera_server::Db,
    passwords: &'a tessera_server::password::Passwords,
    config: &'a Config,
) -> AdminService<'a> {
    AdminService {
        db,
        passwords,
        config,
        clients: None,
        revocations: None,
        actor: Actor::Cli {
            os_user: operator(),
        },
    }
}

/// Who runs the command, for the audit trail: the login name the
/// environment gives (anyone can set it), the user id the system gives
/// (no one can), and, under `sudo`, who ran `sudo`.
fn operator() -> String {
    // Quoted: a name holding " uid=0" shows as the text it is.
    let name = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let mut who = format!("{name:?}");
    #[cfg(target_os = "linux")]
    who.push_str(&format!(" uid={}", rustix::process::getuid().as_raw()));
    if let Ok(sudo) = std::env::var("SUDO_USER") {
        who.push_str(&format!(" sudo={sudo:?}"));
    }
    who
}

/// The database (with its data directory) and the hasher the admin
/// commands work with.
async fn admin_parts(
    config: &mut Config,
    keys_matter: bool,
) -> anyhow::Result<(tessera_server::Db, tessera_server::password::Passwords)> {
    config.prepare_data_dir()?;
    let db =
        tessera_server::Db::open_for_commands(&config.database_url, 2, Schema::Current).await?;
    if let Err(e) = adopt_the_servers(config, &db, keys_matter).await {
        db.close().await;
        return Err(e.into());
    }
    Ok((db, tessera_server::password::Passwords::new(1)))
}

/// Take what the server last started with on `db` into `config`: its
/// issuer, when `config` sets none (an https server refuses plain http
/// redirect and logout URIs, which the default issuer of a shell that
/// has not set it would let through), and its key settings (the command
/// acts on the server's keys as the server does). Says on stderr where
/// `config` differs: its key settings only when `keys_matter` (a user or
/// session command reads none of them).
async fn adopt_the_servers(
    config: &mut Config,
    db: &tessera_server::Db,
    keys_matter: bool,
) -> Result<(), tessera_server::Error> {
    if let Some(recorded) = tessera_server::store::issuer::recorded(db).await? {
        if !config.adopt_issuer(&recorded) {
            eprintln!(
                "warning: this database's server last started as {recorded}, not {}: what is \
                 registered here is checked as for {}",
                config.issuer, config.issuer
            );
        }
    }
    if let Some(recorded) = tessera_server::store::key_settings::recorded(db).await? {
        let differs = config.adopt_key_settings(&recorded);
        if keys_matter && !differs.is_empty() {
            eprintln!(
                "warning: this database's server last started with other key settings than this \
                 configuration's ({}): this command follows the server's (restart the server to \
                 change them)",
                differs.join("; ")
            );
        }
    }
    Ok(())
}

/// `config` with what the server last started with on its database
/// ([`adopt_the_servers`]), for a command that opens the database itself.
async fn as_the_server_started(mut config: Config) -> anyhow::Result<Config> {
    let db =
        tessera_server::Db::open_for_commands(&config.database_url, 1, Schema::Current).await?;
    let adopted = adopt_the_servers(&mut config, &db, true).await;
    db.close().await;
    adopted?;
    Ok(config)
}

/// `tessera user …`.
pub fn user(server: &ServerArgs, command: UserCommand) -> Result<(), Failure> {
    let mut config = server.config()?;
    database_for(&config, matches!(command, UserCommand::Add { .. }))?;
    runtime()?.block_on(async move {
        let (db, passwords) = admin_parts(&mut config, false).await?;
        let admin = service(&db, &passwords, &config);
        match command {
            UserCommand::Add {
                username,
                password_stdin,
                scopes,
                profile,
            } => {
                let profile = profile.profile();
                admin.check_new_user(&username, &scopes, &profile).await?;
                let password = read_password(password_stdin)?;
                let user = admin
                    .add_user(&username, password, &scopes, &profile)
                    .await?;
                out!("{}", user.id);
            }
            UserCommand::Set {
                username,
                profile,
                scopes,
                add_scopes,
                remove_scopes,
                no_scopes,
            } => {
                let profile = profile.profile();
                // Scopes that cannot be read change nothing.
                let change = scope_change(scopes, add_scopes, remove_scopes, no_scopes)?;
                admin
                    .change_user(&username, &profile, change.as_ref())
                    .await?;
            }
            UserCommand::List { json } => {
                // Every user, read and printed a page at a time.
                let mut listing = Listing::new(json);
                let mut page = Page::first(1000);
                loop {
                    let listed = admin.users(&page).await?;
                    for u in &listed.items {
                        listing.item(u, || {
                            let state = if u.disabled { "disabled" } else { "enabled" };
                            format!("{}\t{}\t{}\t{}", u.username, u.id, state, u.scopes)
                        })?;
                    }
                    match listed.next {
                        Some(next) => page.after = Some(next),
                        None => break,
                    }
                }
                listing.finish()?;
            }
            UserCommand::Disable { username } => admin.set_disabled(&username, true).await?,
            UserCommand::Enable { username } => admin.set_disabled(&username, false).await?,
            UserCommand::Delete { username } => admin.delete_user(&username).await?,
            UserCommand::Passwd {
                username,
                password_stdin,
            } => {
                // Known before the new password is asked for (twice).
                admin.user(&username).await?;
                let password = read_password(password_stdin)?;
                admin.change_password(&username, password).await?;
            }
        }
        db.close().await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

/// A listing printed as its pages are read, never held whole (a busy
/// server has millions of users): a line per item, or with `--json` one
/// array, laid out as `serde_json::to_string_pretty` lays out a list.
struct Listing<W: Write> {
    out: W,
    json: bool,
    printed: usize,
}

impl Listing<std::io::Stdout> {
    fn new(json: bool) -> Self {
        Listing::to(std::io::stdout(), json)
    }
}

impl<W: Write> Listing<W> {
    fn to(out: W, json: bool) -> Self {
        Listing {
            out,
            json,
            printed: 0,
        }
    }

    /// Print `item`, as JSON or as the line `line` makes.
    fn item<T: serde::Serialize>(
        &mut self,
        item: &T,
        line: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        if self.json {
            let text = serde_json::to_string_pretty(item)?;
            let open = if self.printed == 0 { "[" } else { "," };
            // A JSON string never holds a bare newline: each line of the
            // item's text is one of its layout, indented one level more.
            let indented = text.replace('\n', "\n  ");
            write!(self.out, "{open}\n  {indented}")
        } else {
            writeln!(self.out, "{}", line())
        }
        .context("writing to standard output")?;
        self.printed += 1;
        Ok(())
    }

    /// Close the list; the writer back.
    fn finish(mut self) -> anyhow::Result<W> {
        if self.json {
            let close = if self.printed == 0 { "[]" } else { "\n]" };
            writeln!(self.out, "{close}").context("writing to standard output")?;
        }
        self.out.flush().context("writing to standard output")?;
        Ok(self.out)
    }
}

/// `tessera session …`.
pub fn session(server: &ServerArgs, command: SessionCommand) -> Result<(), Failure> {
    let mut config = server.config()?;
    require_database(&config)?;
    runtime()?.block_on(async move {
        let (db, passwords) = admin_parts(&mut config, false).await?;
        let admin = service(&db, &passwords, &config);
        match command {
            SessionCommand::List {
                user,
                offline,
                limit,
                json,
            } => {
                let kept = if offline {
                    tessera_server::store::sessions::Kept::WithOffline
                } else {
                    tessera_server::store::sessions::Kept::SignedIn
                };
                let listed = admin
                    .sessions(user.as_deref(), kept, &Page::first(limit))
                    .await?;
                let list = listed.items;
                if listed.next.is_some() {
                    // Said apart from the list, which stays as scripts read it.
                    eprintln!(
                        "(the newest {} sessions; there are more: raise --limit, up to 1000, \
                         or page through GET /admin/sessions)",
                        list.len()
                    );
                }
                if json {
                    out!("{}", serde_json::to_string_pretty(&list)?);
                } else {
                    for s in list {
                        // Marked after the columns scripts read: offline
                        // sessions are listed only when asked for.
                        let offline = if s.signed_in { "" } else { "\toffline" };
                        out!(
                            "{}\t{}\tauth_time={}\tlast_seen={}\texpires_at={}{offline}",
                            s.sid,
                            s.username,
                            s.auth_time,
                            s.last_seen,
                            s.expires_at
                        );
                    }
                }
            }
            SessionCommand::End { sid } => admin.end_session(&sid).await?,
        }
        db.close().await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

/// `tessera client …`.
pub fn client(server: &ServerArgs, command: ClientCommand) -> Result<(), Failure> {
    let mut config = server.config()?;
    let adds = matches!(command, ClientCommand::Add { .. });
    database_for(&config, adds)?;
    runtime()?.block_on(async move {
        let (db, passwords) = admin_parts(&mut config, adds).await?;
        let admin = service(&db, &passwords, &config);
        match command {
            ClientCommand::Add {
                name,
                grants,
                scopes,
                audiences,
                public,
                jwks,
                access_ttl,
                redirect_uris,
                post_logout_redirect_uris,
                backchannel_logout_uri,
                id_token_alg,
                first_party,
                json,
            } => {
                let jwks = match jwks {
                    Some(path) => Some(crate::input::read_file(&path)?),
                    None => None,
                };
                let added = admin
                    .add_client(ClientRequest {
                        name,
                        grants,
                        scopes,
                        audiences,
                        public,
                        jwks,
                        access_ttl,
                        redirect_uris,
                        post_logout_redirect_uris,
                        backchannel_logout_uri,
                        id_token_alg,
                        first_party,
                    })
                    .await?;
                print_credentials(
                    &added.client_id,
                    added.client_secret.as_deref().map(String::as_str),
                    json,
                )
                .map_err(|e| {
                    e.context(format!(
                        "the client {} is added, but its credentials could not be written \
                         (delete it, or rotate its secret, rather than add it again)",
                        added.client_id
                    ))
                })?;
            }
            ClientCommand::List { json } => {
                // Every client, read and printed a page at a time.
                let mut listing = Listing::new(json);
                let mut page = Page::first(1000);
                loop {
                    let listed = admin.clients(&page).await?;
                    for c in &listed.items {
                        listing.item(c, || {
                            let grants: Vec<_> = c.grants.iter().map(|g| g.as_str()).collect();
                            format!(
                                "{}\t{}\t{}\t{}\t{}",
                                c.client_id,
                                c.name,
                                c.auth_method,
                                grants.join(","),
                                c.scopes
                            )
                        })?;
                    }
                    match listed.next {
                        Some(next) => page.after = Some(next),
                        None => break,
                    }
                }
                listing.finish()?;
            }
            ClientCommand::Delete { client_id } => admin.delete_client(&client_id).await?,
            ClientCommand::Set {
                client_id,
                scopes,
                add_scopes,
                remove_scopes,
                no_scopes,
            } => {
                if let Some(change) = scope_change(scopes, add_scopes, remove_scopes, no_scopes)? {
                    admin.set_client_scopes(&client_id, &change).await?;
                }
            }
            ClientCommand::RotateSecret { client_id, json } => {
                let secret = admin.rotate_secret(&client_id).await?;
                print_credentials(&client_id, Some(&secret), json).map_err(|e| {
                    e.context(format!(
                        "the secret of {client_id} is rotated (the old one no longer works), \
                         but the new one could not be written: rotate it again"
                    ))
                })?;
            }
        }
        db.close().await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

fn print_credentials(client_id: &str, secret: Option<&str>, json: bool) -> anyhow::Result<()> {
    if json {
        out!(
            "{}",
            serde_json::json!({ "client_id": client_id, "client_secret": secret })
        );
    } else {
        out!("client_id:     {client_id}");
        if let Some(secret) = secret {
            out!("client_secret: {secret}");
            eprintln!("(the secret is shown only now; store it safely)");
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Where to write the copy (must not exist).
    file: PathBuf,
}

/// `tessera backup FILE`.
pub fn backup(args: &BackupArgs) -> Result<(), Failure> {
    let config = args.server.config()?;
    require_database(&config)?;
    runtime()?.block_on(async move {
        // The copy holds the schema as it is: one taken with a new
        // version's binary before the upgrade is from before it.
        let db = tessera_server::Db::open(&config.database_url, 1, Schema::AsIs).await?;
        let copied = db.backup_to(&args.file).await;
        let mut sealed_under = None;
        if copied.is_ok() {
            let passwords = tessera_server::password::Passwords::new(1);
            let path = args.file.display().to_string();
            if let Err(e) = service(&db, &passwords, &config).backed_up(&path).await {
                eprintln!("warning: backup written, but its audit event could not be: {e}");
            }
            sealed_under = Some(master_key_of(&db, &config.master_key).await);
        }
        db.close().await;
        copied?;
        out!("{}", args.file.display());
        if let Some(said) = sealed_under {
            eprintln!("{said}");
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

/// What to say of the master key a backup of `db` needs: the configured
/// one, named only when it is the one the database is tied to (it opens
/// the check a start wrote). Run from a shell without the server's
/// settings (its `TESSERA_MASTER_KEY_FILE`, say), the configured key is
/// another one, or none: naming it would have the wrong key archived.
async fn master_key_of(
    db: &tessera_server::Db,
    source: &tessera_server::secret::MasterKeySource,
) -> String {
    use tessera_server::secret::{MasterKey, MasterKeySource};
    let name = match source {
        MasterKeySource::File(path) => path.display().to_string(),
        MasterKeySource::Value(_) => "TESSERA_MASTER_KEY".to_owned(),
    };
    let key = match MasterKey::load_existing(source) {
        Ok(Some(key)) => key,
        Ok(None) => {
            return format!(
                "warning: backup written, but the master key it needs is not at {name}: \
                 find the one the server uses (its TESSERA_MASTER_KEY_FILE or \
                 TESSERA_MASTER_KEY) and keep it safe, apart from the backup"
            )
        }
        Err(e) => {
            return format!(
                "warning: backup written, but the master key at {name} could not be read \
                 ({e}): find the one the server uses and keep it safe, apart from the backup"
            )
        }
    };
    match tessera_server::keys::opened_by(db, &key).await {
        Ok(Some(true)) => format!(
            "backup written; it holds the signing keys sealed under {name}, checked \
             (not in the backup: keep it safe, apart from it)"
        ),
        Ok(Some(false)) => format!(
            "warning: backup written, but the master key at {name} is not the one its \
             signing keys are sealed under: find the one the server uses (its \
             TESSERA_MASTER_KEY_FILE or TESSERA_MASTER_KEY) and keep it safe, apart from \
             the backup"
        ),
        Ok(None) => format!(
            "backup written; no signing key is sealed in it yet (the server seals them \
             under {name} at its first start)"
        ),
        Err(e) => format!(
            "warning: backup written, but whether {name} is its master key could not be \
             checked ({e}): keep the server's master key safe, apart from the backup"
        ),
    }
}

/// `tessera keys …`.
pub fn keys(server: &ServerArgs, command: KeysCommand) -> Result<(), Failure> {
    let config = server.config()?;
    match command {
        KeysCommand::Rotate => {
            // In the wrong directory it would rotate the keys of a new,
            // empty database, and say it had.
            require_database(&config)?;
            runtime()?.block_on(async move {
                // Rotating is maintenance: open the server's keys in full.
                let config = as_the_server_started(config).await?;
                let opened = tessera_server::open_with(config, Schema::Current).await?;
                // One new key per algorithm: access tokens first, then ID tokens.
                let passwords = tessera_server::password::Passwords::new(1);
                let kids = service(&opened.db, &passwords, &opened.config)
                    .rotate_keys(&opened.keys)
                    .await?;
                let announce = humantime::format_duration(opened.config.keys.announce);
                for kid in &kids {
                    out!("{kid}");
                }
                eprintln!("new keys published now; they sign in {announce}");
                opened.db.close().await;
                Ok::<_, anyhow::Error>(())
            })?;
        }
        KeysCommand::Revoke { kid } => {
            require_database(&config)?;
            runtime()?.block_on(async move {
                let config = as_the_server_started(config).await?;
                let opened = tessera_server::open_with(config, Schema::Current).await?;
                let passwords = tessera_server::password::Passwords::new(1);
                let replaced_by = service(&opened.db, &passwords, &opened.config)
                    .revoke_key(&opened.keys, &kid)
                    .await;
                opened.db.close().await;
                match replaced_by? {
                    Some(new_kid) => {
                        out!("{new_kid}");
                        eprintln!(
                            "{kid} revoked: its tokens are refused; {new_kid} signs from now on"
                        );
                    }
                    None => eprintln!("{kid} revoked: its tokens are refused"),
                }
                Ok::<_, anyhow::Error>(())
            })?;
        }
        KeysCommand::List { json } => {
            // Listing reads: no data directory, master key or key is made,
            // no rotation started, nothing deleted.
            require_database(&config)?;
            runtime()?.block_on(async move {
                let mut config = config;
                let db = tessera_server::Db::open(&config.database_url, 1, Schema::Current).await?;
                let list = match adopt_the_servers(&mut config, &db, true).await {
                    Ok(()) => {
                        let now = tessera_server::store::now();
                        tessera_server::keys::stored(&db, &config.keys, now).await
                    }
                    Err(e) => Err(e),
                };
                db.close().await;
                print_keys(list?, json)
            })?;
        }
    }
    Ok(())
}

fn print_keys(
    list: Vec<(
        tessera_server::keys::KeyInfo,
        tessera_server::keys::KeyState,
    )>,
    json: bool,
) -> anyhow::Result<()> {
    let list = tessera_server::admin::listed_keys(list);
    if json {
        out!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        for key in list {
            let state = serde_json::to_value(key.state)?;
            let state = state.as_str().unwrap_or_default();
            let at = tessera_jose::NumericDate::from_seconds(key.activate_at).to_rfc3339();
            out!("{}\t{}\t{state}\tsigns from {at}", key.kid, key.alg);
        }
    }
    Ok(())
}

/// Before a `user` or `client` command: one that adds may make the
/// database (the README's first steps do, before the server ever ran) and
/// says so on stderr, in case the server's data directory is elsewhere;
/// any other needs the database there (pointed at the wrong directory,
/// `list` would show nothing and `delete` find nothing, both in a new
/// empty database).
fn database_for(config: &Config, adds: bool) -> Result<(), Failure> {
    if !adds {
        return require_database(config);
    }
    if let Some(path) = config.database_url.strip_prefix("sqlite://") {
        if !std::path::Path::new(path).exists() {
            eprintln!("tessera: no database at {path} yet: making a new one (is the server's --data-dir elsewhere?)");
        }
    }
    Ok(())
}

/// Refuse, for a SQLite database that does not exist, rather than make
/// one (a read must not create the data directory).
fn require_database(config: &Config) -> Result<(), Failure> {
    // `sqlite://PATH` and `sqlite:PATH` both name a file (sqlx takes
    // either), without the query's options.
    let path = config
        .database_url
        .strip_prefix("sqlite://")
        .or_else(|| config.database_url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or(rest));
    if let Some(path) = path {
        if !std::path::Path::new(path).is_file() {
            return Err(Failure::Input(anyhow::anyhow!(
                "no database at {path} (start tessera serve once, or check --data-dir)"
            )));
        }
    }
    Ok(())
}

/// The change `--scope` (in full), `--add-scope` and `--remove-scope`
/// say; `None` when they say none.
fn scope_change(
    scopes: Vec<String>,
    add: Vec<String>,
    remove: Vec<String>,
    none: bool,
) -> anyhow::Result<Option<tessera_server::store::ScopeChange>> {
    use tessera_server::store::{ScopeChange, Scopes};
    if none {
        return Ok(Some(ScopeChange::Replace(Scopes::default())));
    }
    if scopes.is_empty() && add.is_empty() && remove.is_empty() {
        return Ok(None);
    }
    let all = (!scopes.is_empty()).then_some(scopes.as_slice());
    Ok(Some(ScopeChange::of_lists(all, &add, &remove)?))
}

#[cfg(test)]
mod tests {
    use super::{log_filter, Listing};

    /// Printed a page at a time, a listing reads as the whole list
    /// printed at once did: the same JSON text, the same lines.
    #[test]
    fn a_listing_printed_as_it_comes_reads_as_the_whole_list() {
        let lists = [
            vec![],
            vec![serde_json::json!({"a": 1})],
            vec![
                serde_json::json!({"name": "two\nlines", "list": [1, {"b": []}], "empty": {}}),
                serde_json::json!("text"),
                serde_json::json!({"c": null}),
            ],
        ];
        for list in lists {
            let mut json = Listing::to(Vec::new(), true);
            let mut lines = Listing::to(Vec::new(), false);
            for item in &list {
                json.item(item, || unreachable!()).unwrap();
                lines.item(item, || item.to_string()).unwrap();
            }
            let whole = serde_json::to_string_pretty(&list).unwrap() + "\n";
            assert_eq!(String::from_utf8(json.finish().unwrap()).unwrap(), whole);
            let each: String = list.iter().map(|item| format!("{item}\n")).collect();
            assert_eq!(String::from_utf8(lines.finish().unwrap()).unwrap(), each);
        }
    }

    #[test]
    fn a_log_filter_that_cannot_be_read_is_refused() {
        for good in [
            None,
            Some("warn"),
            Some("INFO"),
            Some("info,tessera_server=debug"),
        ] {
            assert!(log_filter(good).is_ok(), "{good:?}");
        }
        // Saying nothing is the default, not every log off.
        for nothing in [None, Some(""), Some(" "), Some(",")] {
            assert_eq!(
                log_filter(nothing).unwrap().max_level_hint(),
                Some(tracing_subscriber::filter::LevelFilter::INFO),
                "{nothing:?}"
            );
        }
        for (bad, said) in [
            ("warning", "not a level"),
            ("info,debugg", "not a level"),
            ("tessera_server=loud", "TESSERA_LOG"),
        ] {
            let err = format!("{:#}", log_filter(Some(bad)).unwrap_err());
            assert!(err.contains(said), "{bad}: {err}");
        }
    }
}
