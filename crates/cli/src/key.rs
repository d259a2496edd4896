//! `tessera key …` and `tessera jwks`.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use tessera_jose::{Algorithm, Jwk, JwkSet, KeyType, SigningKey};
use zeroize::Zeroizing;

use crate::input::{self, parse_alg, pem_signing_key, pem_verifying_key, KeyFile};
use crate::Failure;

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Generate a private key and print it as a JWK (with `alg` and `kid`).
    #[command(
        after_help = "Examples:\n  tessera key generate --alg ES256 -o signing.jwk\n  \
        tessera key generate --alg RS256 --bits 3072 --kid 2026-11 -o rsa.jwk\n  \
        tessera key generate --alg HS256 -o secret.jwk"
    )]
    Generate {
        /// Algorithm the key is for (HS256…HS512, RS*, PS*, ES256/384/512, EdDSA).
        #[arg(long, value_parser = parse_alg)]
        alg: Algorithm,
        /// Key id; defaults to the RFC 7638 thumbprint.
        #[arg(long)]
        kid: Option<String>,
        /// RSA modulus size.
        #[arg(long, value_parser = ["2048", "3072", "4096"])]
        bits: Option<String>,
        /// Write to this new file (mode 0600) instead of standard output.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print the public JWK of a private JWK.
    #[command(after_help = "Example:\n  tessera key public signing.jwk > public.jwk")]
    Public {
        /// The private key (JWK); `-` or nothing for standard input.
        #[arg(value_name = "FILE|-")]
        file: Option<String>,
    },
    /// Print the RFC 7638 SHA-256 thumbprint of a JWK.
    #[command(after_help = "Example:\n  tessera key thumbprint signing.jwk")]
    Thumbprint {
        /// The key (JWK); `-` or nothing for standard input.
        #[arg(value_name = "FILE|-")]
        file: Option<String>,
    },
    /// Convert a key between JWK and PEM (PKCS#8 or SPKI).
    #[command(
        after_help = "Examples:\n  tessera key convert --to pem -o signing.pem signing.jwk\n  \
        tessera key convert --to jwk --alg RS256 -o rsa.jwk rsa.pem\n  \
        tessera key convert --to pem public.jwk > public.pem"
    )]
    Convert {
        /// Output format.
        #[arg(long)]
        to: Format,
        /// Algorithm of a PEM key (needed for RSA; EC and Ed25519 keys imply theirs).
        #[arg(long, value_parser = parse_alg)]
        alg: Option<Algorithm>,
        /// The key; `-` or nothing for standard input.
        #[arg(value_name = "FILE|-")]
        file: Option<String>,
        /// Write to this new file (mode 0600) instead of standard output:
        /// the way to keep a private key private.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Make a master key for `tessera serve` (its `master_key_file`, or
    /// `TESSERA_MASTER_KEY_FILE`): 32 random bytes, base64url, in a new
    /// file readable by its owner only. The server makes one itself only
    /// at its default place, `DATA_DIR/master.key`.
    #[command(after_help = "Example:
  tessera key master /etc/tessera/master.key")]
    Master {
        /// The new file (never over an existing one).
        file: PathBuf,
    },
}

/// Key formats for `key convert`.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// JSON Web Key.
    Jwk,
    /// PEM: PKCS#8 for private keys, SPKI for public keys.
    Pem,
}

#[derive(Args)]
pub struct JwksArgs {
    /// Keys (JWK files, private or public).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

pub fn run(command: KeyCommand) -> Result<(), Failure> {
    match command {
        KeyCommand::Generate {
            alg,
            kid,
            bits,
            output,
        } => generate(alg, kid, bits.as_deref(), output),
        KeyCommand::Public { file } => {
            let jwk = read_jwk(file.as_deref())?;
            print_json(&public_of(&jwk)?)?;
            Ok(())
        }
        KeyCommand::Thumbprint { file } => {
            let jwk = read_jwk(file.as_deref())?;
            out!("{}", jwk.thumbprint()?);
            Ok(())
        }
        KeyCommand::Convert {
            to,
            alg,
            file,
            output,
        } => convert(to, alg, file.as_deref(), output),
        KeyCommand::Master { file } => {
            tessera_server::secret::MasterKey::create(&file)?;
            eprintln!(
                "master key written to {}: keep a copy of it apart from the database's backups \
                 (a restore needs both)",
                file.display()
            );
            Ok(())
        }
    }
}

fn generate(
    alg: Algorithm,
    kid: Option<String>,
    bits: Option<&str>,
    output: Option<PathBuf>,
) -> Result<(), Failure> {
    let key = match bits {
        Some(bits) if alg.key_type() == KeyType::Rsa => {
            SigningKey::generate_rsa(alg, bits.parse().context("--bits")?)?
        }
        Some(_) => return Err(anyhow!("--bits is only for RSA algorithms").into()),
        None => SigningKey::generate(alg)?,
    };
    let key = match kid {
        Some(kid) => key.with_kid(kid),
        None => key.with_thumbprint_kid()?,
    };
    let text = line(key.to_jwk()?.to_json_pretty());
    match output {
        Some(path) => input::write_private(&path, &text)?,
        None => {
            warn_private_to_stdout();
            out_raw!("{}", *text)
        }
    }
    Ok(())
}

/// A private key about to go to standard output: when that is not a
/// terminal, it is most likely a file made with the shell's umask, often
/// readable by every user; `-o` makes it with mode 0600.
fn warn_private_to_stdout() {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        eprintln!(
            "warning: a private key goes to standard output; a file it is redirected to gets \
             your umask's mode (often readable by all): -o FILE writes it with mode 0600"
        );
    }
}

fn read_jwk(file: Option<&str>) -> anyhow::Result<Jwk> {
    let text = input::read_source(file)?;
    match input::parse_key(&text)? {
        KeyFile::Jwk(jwk) => Ok(*jwk),
        KeyFile::Pem(_) => bail!("expected a JWK; convert PEM with `tessera key convert --to jwk`"),
    }
}

/// The public JWK of a key, refusing shared secrets.
fn public_of(jwk: &Jwk) -> anyhow::Result<Jwk> {
    if jwk.is_symmetric() {
        bail!("an oct key is a shared secret: it has no public part and must not be published");
    }
    Ok(jwk.to_public()?)
}

/// `text` and a line break, leaving no copy of `text` behind (a private
/// JWK's text is as secret as the key): `text + "\n"` may move it into a
/// larger buffer and free the old one as it was.
fn line(text: String) -> Zeroizing<String> {
    let text = Zeroizing::new(text);
    let mut line = Zeroizing::new(String::with_capacity(text.len() + 1));
    line.push_str(&text);
    line.push('\n');
    line
}

fn convert(
    to: Format,
    alg: Option<Algorithm>,
    file: Option<&str>,
    output: Option<PathBuf>,
) -> Result<(), Failure> {
    let text = input::read_source(file)?;
    let mut private = false;
    let converted = match (input::parse_key(&text)?, to) {
        (KeyFile::Jwk(jwk), Format::Jwk) => {
            private = jwk.is_private();
            line(jwk.to_json_pretty())
        }
        (KeyFile::Jwk(jwk), Format::Pem) => {
            let alg = match alg {
                Some(alg) => alg,
                None => jwk.algorithm()?,
            };
            if jwk.is_private() {
                private = true;
                jwk.to_signing_key_for(alg)?.to_pkcs8_pem()?
            } else {
                Zeroizing::new(jwk.to_verifying_key_for(alg)?.to_public_pem()?)
            }
        }
        (KeyFile::Pem(pem), to) => {
            let is_private = pem.contains("PRIVATE KEY-----");
            private = is_private;
            match (is_private, to) {
                (true, Format::Jwk) => {
                    let key = pem_signing_key(&pem, alg)?.with_thumbprint_kid()?;
                    line(key.to_jwk()?.to_json_pretty())
                }
                (true, Format::Pem) => pem_signing_key(&pem, alg)?.to_pkcs8_pem()?,
                (false, Format::Jwk) => {
                    let key = pem_verifying_key(&pem, alg)?;
                    let kid = key.thumbprint()?;
                    line(key.with_kid(kid).to_public_jwk()?.to_json_pretty())
                }
                (false, Format::Pem) => {
                    Zeroizing::new(pem_verifying_key(&pem, alg)?.to_public_pem()?)
                }
            }
        }
    };
    match output {
        Some(path) => input::write_private(&path, &converted)?,
        None => {
            if private {
                warn_private_to_stdout();
            }
            out_raw!("{}", *converted)
        }
    }
    Ok(())
}

pub fn jwks(args: &JwksArgs) -> Result<(), Failure> {
    let mut keys = Vec::with_capacity(args.files.len());
    for path in &args.files {
        let jwk = match input::key_file(path)? {
            KeyFile::Jwk(jwk) => *jwk,
            KeyFile::Pem(_) => {
                return Err(anyhow!(
                    "{}: expected a JWK; convert PEM with `tessera key convert --to jwk`",
                    path.display()
                )
                .into())
            }
        };
        let public = public_of(&jwk).with_context(|| path.display().to_string())?;
        // A verifier picks a key by type and `kid`: two that share both
        // are a set every token of theirs fails on (`AmbiguousKey`).
        if let Some(i) = keys
            .iter()
            .position(|k: &Jwk| k.kty == public.kty && k.kid == public.kid)
        {
            let what = match &public.kid {
                Some(kid) => format!("both {} keys have kid {kid:?}", public.kty),
                None => format!(
                    "both are {} keys without a kid (give each one a kid)",
                    public.kty
                ),
            };
            return Err(anyhow!(
                "{} and {}: {what}; a verifier could not tell which signed a token",
                args.files[i].display(),
                path.display()
            )
            .into());
        }
        keys.push(public);
    }
    out!("{}", JwkSet::new(keys).to_json_pretty());
    Ok(())
}

fn print_json(jwk: &Jwk) -> anyhow::Result<()> {
    out!("{}", jwk.to_json_pretty());
    Ok(())
}
