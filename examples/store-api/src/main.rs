//! `store-api`: the example API. Run it beside `tessera serve`:
//!
//! ```sh
//! cargo run -p store-api -- --issuer http://127.0.0.1:8080 --audience store-api
//! ```

use std::time::Duration;

use clap::{Parser, ValueEnum};
use tessera_guard::{Guard, ProtectedResource, RemoteJwks, RevocationFeed, WhenUnreachable};

#[derive(Parser)]
#[command(about = "Stores and items, protected by tessera-guard")]
struct Args {
    /// Where to listen.
    #[arg(long, env = "STORE_API_LISTEN", default_value = "127.0.0.1:3000")]
    listen: String,
    /// The SQLite database.
    #[arg(
        long,
        env = "STORE_API_DATABASE_URL",
        default_value = "sqlite://store-api.db"
    )]
    database_url: String,
    /// The authorization server (its RFC 8414 metadata names the JWKS).
    #[arg(
        long,
        env = "STORE_API_ISSUER",
        default_value = "http://127.0.0.1:8080"
    )]
    issuer: String,
    /// Also trust the certificate authorities in this PEM file, for an
    /// issuer whose certificate a private CA signed.
    #[arg(long, env = "STORE_API_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Reach the issuer over plain HTTP even on another host (by default
    /// plain HTTP is for loopback addresses only: keys fetched in the
    /// clear can be swapped on the way). From the environment: `true`, `1`, `yes` or `on`.
    #[arg(long, env = "STORE_API_ALLOW_PLAIN_HTTP", value_parser = clap::builder::BoolishValueParser::new())]
    allow_plain_http: bool,
    /// The audience tokens must name.
    #[arg(long, env = "STORE_API_AUDIENCE", default_value = "store-api")]
    audience: String,
    /// The least time between two JWKS fetches, in seconds; also the
    /// shortest time keys are cached.
    #[arg(long, env = "STORE_API_JWKS_REFRESH_SECS", default_value_t = 30)]
    jwks_refresh_secs: u64,
    /// Clock skew allowed on `exp`, in seconds (at most 300).
    #[arg(long, env = "STORE_API_LEEWAY_SECS", default_value_t = 60)]
    leeway_secs: u64,
    /// This API's URL as clients see it, published as its protected
    /// resource metadata (RFC 9728); default: `http://` and the address
    /// it listens on.
    #[arg(long, env = "STORE_API_RESOURCE")]
    resource: Option<String>,
    /// Subscribe to the issuer's revocation feed as this client (which
    /// needs the `revocations:read` scope and `client_credentials`); its
    /// secret comes from `STORE_API_REVOCATION_CLIENT_SECRET`, never from
    /// the command line.
    /// (A client id may begin with `-`: it is taken as the value.)
    #[arg(
        long,
        env = "STORE_API_REVOCATION_CLIENT_ID",
        allow_hyphen_values = true
    )]
    revocation_client_id: Option<String>,
    /// How long the feed may be unreachable before the policy applies.
    #[arg(
        long,
        env = "STORE_API_REVOCATIONS_UNREACHABLE_AFTER_SECS",
        default_value_t = 60
    )]
    revocations_unreachable_after_secs: u64,
    /// What to do once the feed has been unreachable that long.
    #[arg(long, env = "STORE_API_REVOCATIONS_WHEN_UNREACHABLE", value_enum, default_value_t = Policy::KeepServing)]
    revocations_when_unreachable: Policy,
}

/// [`WhenUnreachable`] on the command line.
#[derive(Clone, Copy, ValueEnum)]
enum Policy {
    /// Keep serving with the revocations known, and report it.
    KeepServing,
    /// Refuse every token (503) until the feed is back.
    Refuse,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // What the guard reports (keys or the feed out of reach, why a token
    // was refused: at `debug`) and the listener's warnings, on stderr.
    tracing_subscriber::fmt()
        .with_env_filter(log_filter()?)
        .with_writer(std::io::stderr)
        .init();
    let refresh = std::time::Duration::from_secs(args.jwks_refresh_secs);
    let roots = match &args.ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("--ca-file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let mut keys = RemoteJwks::discover(&args.issuer)?
        .cooldown(refresh)
        // At most ten minutes whatever the key set's max-age: a key the
        // issuer withdraws is trusted that long at most.
        .cache_bounds(refresh, std::time::Duration::from_secs(600));
    if let Some(pem) = &roots {
        keys = keys.root_certificates(pem)?;
    }
    if args.allow_plain_http {
        keys = keys.allow_plain_http()?;
    }
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let resource = args.resource.clone().unwrap_or_else(|| {
        format!(
            "http://{}",
            listener
                .local_addr()
                .map_or_else(|_| args.listen.clone(), |a| a.to_string())
        )
    });
    let resource = ProtectedResource::new(resource, &args.issuer)?
        .scopes([store_api::READ, store_api::WRITE, store_api::ADMIN])
        .name("Store API");
    let mut guard = Guard::builder(&args.issuer, &args.audience, keys)
        .leeway(Duration::from_secs(args.leeway_secs))
        .resource_metadata(resource.metadata_url());
    if let Some(client_id) = &args.revocation_client_id {
        let secret = std::env::var("STORE_API_REVOCATION_CLIENT_SECRET").map_err(|_| {
            anyhow::anyhow!("--revocation-client-id needs STORE_API_REVOCATION_CLIENT_SECRET")
        })?;
        let mut feed = RevocationFeed::builder(&args.issuer, client_id, secret.into());
        if let Some(pem) = &roots {
            feed = feed.root_certificates(pem)?;
        }
        if args.allow_plain_http {
            feed = feed.allow_plain_http();
        }
        let feed = feed
            .unreachable_after(Duration::from_secs(args.revocations_unreachable_after_secs))
            .when_unreachable(match args.revocations_when_unreachable {
                Policy::KeepServing => WhenUnreachable::KeepServing,
                Policy::Refuse => WhenUnreachable::Refuse,
            })
            .start()?;
        guard = guard.revocations(feed);
    } else {
        // Said at every start: without the feed, a token revoked at the
        // provider (a logout, a password change, a deleted client) is
        // accepted here until it expires.
        tracing::warn!(
            "no revocation feed (--revocation-client-id): revoked tokens are accepted until \
             they expire"
        );
    }
    let guard = guard.build()?;
    let db = store_api::open_db(&args.database_url).await?;
    println!("store-api: listening {}", listener.local_addr()?);
    println!("store-api: docs at http://{}/docs", listener.local_addr()?);
    // Header, idle and request timeouts and a connection limit, which
    // `axum::serve` does not set.
    let limits = tessera_listen::Limits::for_this_process(16);
    tessera_listen::serve(
        listener,
        store_api::app(db.clone(), guard.clone())
            .merge(resource.router())
            .merge(store_api::health(guard, db)),
        limits,
        tessera_listen::shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// `RUST_LOG` (`info` when unset); one it cannot read stops the start.
fn log_filter() -> anyhow::Result<tracing_subscriber::EnvFilter> {
    match std::env::var("RUST_LOG") {
        Ok(text) => tracing_subscriber::EnvFilter::try_new(&text)
            .map_err(|e| anyhow::anyhow!("RUST_LOG {text:?}: {e}")),
        Err(_) => Ok(tracing_subscriber::EnvFilter::new("info")),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[test]
    fn a_client_id_that_begins_with_a_hyphen_is_a_value() {
        // Client ids are random base64url: one in 32 begins with `-`.
        let args = super::Args::try_parse_from(["store-api", "--revocation-client-id", "-uXYZ"])
            .expect("a client id, not an option");
        assert_eq!(args.revocation_client_id.as_deref(), Some("-uXYZ"));
    }
}
