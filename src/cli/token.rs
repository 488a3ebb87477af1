//! `rexray token new|decode`: make and read the bearer tokens of the
//! libStorage API (HMAC-signed JWTs, as the original's `rexray token`).

use crate::api::auth::{self, Alg};
use crate::config::{keys, Config};
use crate::{Error, Result};
use clap::Subcommand;

/// How long a new token is valid by default: 365 days, as the original's.
const DEFAULT_VALID: &str = "8760h";

#[derive(Subcommand)]
pub(crate) enum TokenCmd {
    /// Print a new token for each SUBJECT, one per line.
    #[command(visible_aliases = ["create", "c", "n"])]
    New {
        /// The HMAC secret, or the path of a file holding it (default:
        /// $REXRAY_TOKEN_KEY, else libstorage.server.auth.key).
        #[arg(long)]
        key: Option<String>,
        /// HS256, HS384 or HS512 (default: libstorage.server.auth.alg).
        #[arg(long)]
        alg: Option<String>,
        /// How long the token is valid, e.g. 24h or 30d.
        #[arg(long, default_value = DEFAULT_VALID)]
        exp: String,
        /// Who the token stands for (its `sub`).
        #[arg(required = true)]
        subjects: Vec<String>,
    },
    /// Print the claims of tokens as JSON.
    #[command(visible_aliases = ["dec", "d"])]
    Decode {
        /// Check the signature and times too (with --key or the configured key).
        #[arg(long)]
        verify: bool,
        /// The HMAC secret, or the path of a file holding it.
        #[arg(long)]
        key: Option<String>,
        /// HS256, HS384 or HS512.
        #[arg(long)]
        alg: Option<String>,
        /// The tokens.
        #[arg(required = true)]
        tokens: Vec<String>,
    },
}

fn key_and_alg(cfg: &Config, key: Option<String>, alg: Option<String>) -> Result<(Vec<u8>, Alg)> {
    let key = key
        .or_else(|| std::env::var("REXRAY_TOKEN_KEY").ok())
        .filter(|k| !k.is_empty())
        .or_else(|| Some(cfg.string(keys::SERVER_AUTH_KEY).to_string()))
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            Error::invalid(format!(
                "no key: give --key, or set REXRAY_TOKEN_KEY or {}",
                keys::SERVER_AUTH_KEY
            ))
        })?;
    let key = auth::read_secret(&key, "the token key")?;
    let alg = Alg::parse(&alg.unwrap_or_else(|| cfg.string(keys::SERVER_AUTH_ALG).to_string()))?;
    Ok((key, alg))
}

pub(crate) fn run(cmd: TokenCmd, cfg: &Config) -> Result<String> {
    match cmd {
        TokenCmd::New {
            key,
            alg,
            exp,
            subjects,
        } => {
            let (key, alg) = key_and_alg(cfg, key, alg)?;
            let valid = humantime::parse_duration(exp.trim())
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "invalid --exp {}: expected a duration such as 24h or 30d",
                        crate::input::quote(&exp)
                    ))
                })?;
            let now = auth::now();
            let mut out = String::new();
            for s in subjects {
                if s.trim().is_empty() {
                    return Err(Error::invalid("a subject cannot be empty"));
                }
                out.push_str(&auth::sign(alg, &key, &s, now, valid.as_secs() as i64));
                out.push('\n');
            }
            Ok(out)
        }
        TokenCmd::Decode {
            verify,
            key,
            alg,
            tokens,
        } => {
            let checker = if verify {
                Some(key_and_alg(cfg, key, alg)?)
            } else {
                None
            };
            let mut out = Vec::new();
            for t in &tokens {
                let claims = match &checker {
                    Some((key, alg)) => auth::verify(t, *alg, key, auth::now())
                        .map_err(|why| Error::invalid(format!("invalid token: {why}")))?,
                    None => auth::decode(t)
                        .map_err(|why| Error::invalid(format!("invalid token: {why}")))?,
                };
                out.push(serde_json::json!({
                    "sub": claims.sub,
                    "iat": claims.iat,
                    "nbf": claims.nbf,
                    "exp": claims.exp,
                }));
            }
            Ok(format!("{}\n", serde_json::Value::Array(out)))
        }
    }
}
