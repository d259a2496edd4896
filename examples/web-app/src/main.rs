//! `web-app`: the example web application. Run it beside `tessera serve`
//! and `store-api` (the repository's README, "Five minutes to a browser
//! login", walks through it):
//!
//! ```sh
//! WEB_APP_CLIENT_ID=… WEB_APP_CLIENT_SECRET=… cargo run -p web-app
//! ```
//!
//! Behind a proxy that terminates TLS, give the address browsers use:
//! `--base-url https://shop.example.com` (`cargo run -p web-app -- --help`
//! lists every option).

use clap::Parser;
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(about = "Signs people in through tessera serve and calls store-api for them")]
struct Args {
    /// Where to listen.
    #[arg(long, env = "WEB_APP_LISTEN", default_value = "127.0.0.1:4000")]
    listen: String,
    /// Where browsers reach the app: scheme, host and port, such as
    /// `https://shop.example.com` behind a proxy that terminates TLS.
    /// Default: `http://` and the address it listens on. The client's
    /// redirect URI must be this plus `/callback`, its post-logout redirect
    /// URI this plus `/`. With `https`, the cookies are `Secure` and named
    /// with the `__Host-` prefix.
    #[arg(long, env = "WEB_APP_BASE_URL")]
    base_url: Option<String>,
    /// The authorization server.
    #[arg(long, env = "WEB_APP_ISSUER", default_value = "http://127.0.0.1:8080")]
    issuer: String,
    /// This app's client id at the authorization server (it may begin
    /// with `-`: it is taken as the value).
    #[arg(long, env = "WEB_APP_CLIENT_ID", allow_hyphen_values = true)]
    client_id: String,
    /// The store API it calls.
    #[arg(
        long,
        env = "WEB_APP_STORE_API",
        default_value = "http://127.0.0.1:3000"
    )]
    store_api: String,
    /// Reach the provider and the store API, and serve the app's own base
    /// URL, over plain HTTP even on another host (by default only over
    /// HTTPS or on a loopback address: the app's secret, its users' tokens
    /// and the provider's keys would cross the network in the clear, and
    /// its cookies could not be `Secure`). Listening on 0.0.0.0 needs
    /// `--base-url` (the address browsers reach it at) all the same. From
    /// the environment: `true`, `1`, `yes` or `on`.
    #[arg(long, env = "WEB_APP_ALLOW_PLAIN_HTTP", value_parser = clap::builder::BoolishValueParser::new())]
    allow_plain_http: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // What the guard, the listener and the app report (the provider out of
    // reach, why a sign-in failed), on stderr.
    tracing_subscriber::fmt()
        .with_env_filter(log_filter()?)
        .with_writer(std::io::stderr)
        .init();
    // The secret never goes on the command line (process listings show it).
    let secret = Zeroizing::new(
        std::env::var("WEB_APP_CLIENT_SECRET")
            .map_err(|_| anyhow::anyhow!("set WEB_APP_CLIENT_SECRET to the client's secret"))?,
    );
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let listening = format!("http://{}", listener.local_addr()?);
    let base = args.base_url.unwrap_or_else(|| listening.clone());
    let settings = web_app::Settings {
        issuer: args.issuer,
        client_id: args.client_id,
        client_secret: secret,
        base: base.clone(),
        store_api: args.store_api,
        allow_plain_http: args.allow_plain_http,
        limits: web_app::Limits::default(),
    };
    // Started with its provider, the app waits for it (Ctrl-C or SIGTERM
    // stop the wait).
    let app = tokio::select! {
        app = web_app::WebApp::discover_when_reachable(settings) => app?,
        () = tessera_listen::shutdown_signal() => return Ok(()),
    };
    println!("web-app: listening {listening}");
    if base != listening {
        println!("web-app: browsers reach it at {base}");
    }
    tessera_listen::serve(
        listener,
        web_app::router(app),
        tessera_listen::Limits::for_this_process(16),
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
        let args = super::Args::try_parse_from(["web-app", "--client-id", "-uXYZ"])
            .expect("a client id, not an option");
        assert_eq!(args.client_id, "-uXYZ");
    }

    #[test]
    fn the_base_url_is_given_or_left_to_the_listening_address() {
        let args = super::Args::try_parse_from(["web-app", "--client-id", "c"]).unwrap();
        assert_eq!(args.base_url, None);
        let args = super::Args::try_parse_from([
            "web-app",
            "--client-id",
            "c",
            "--base-url",
            "https://shop.example.com",
        ])
        .unwrap();
        assert_eq!(args.base_url.as_deref(), Some("https://shop.example.com"));
    }
}
