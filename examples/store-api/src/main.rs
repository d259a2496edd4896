//! `store-api`: the example API. Run it beside `tessera serve`:
//!
//! ```sh
//! cargo run -p store-api -- --issuer http://127.0.0.1:8080 --audience store-api
//! ```

use clap::Parser;
use tessera_guard::{Guard, RemoteJwks};

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let refresh = std::time::Duration::from_secs(args.jwks_refresh_secs);
    let keys = RemoteJwks::discover(&args.issuer)?
        .cooldown(refresh)
        .cache_bounds(refresh, std::time::Duration::from_secs(24 * 3600));
    let guard = Guard::builder(&args.issuer, &args.audience, keys)
        .leeway(std::time::Duration::from_secs(args.leeway_secs))
        .build()?;
    let db = store_api::open_db(&args.database_url).await?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!("store-api: listening {}", listener.local_addr()?);
    println!("store-api: docs at http://{}/docs", listener.local_addr()?);
    // Header, idle and request timeouts and a connection limit, which
    // `axum::serve` does not set.
    let limits = tessera_listen::Limits::for_this_process(16);
    tessera_listen::serve(
        listener,
        store_api::app(db, guard),
        limits,
        tessera_listen::shutdown_signal(),
    )
    .await?;
    Ok(())
}
