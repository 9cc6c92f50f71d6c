//! The command line. Doc comments here are the `--help` text.

use crate::app::{self, App};
use crate::config::{Config, LogFormat, Overrides};
use crate::domain::TokenScope;
use crate::keys;
use crate::store::Store;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use uuid::Uuid;

/// Keeps an LLM gateway's users, teams, memberships and API keys in line with your
/// identity provider (SCIM 2.0 push, IdP pull, SSO sign-in sync).
#[derive(Debug, Parser)]
#[command(name = "scimsync", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file (TOML). Default: $SCIMSYNC_CONFIG, else built-in defaults.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format: human (default) or json.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Database URL, e.g. sqlite://scimsync.db or postgres://... (overrides config and env).
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: SCIM listener, scheduler and sign-in hook.
    Serve(ServeArgs),
    /// Load and validate the configuration and say precisely what is wrong (exit 1) or
    /// summarise it (exit 0). With --connect, also reach the database.
    CheckConfig(CheckConfigArgs),
    /// Manage bearer tokens for IdPs (scim), the gateway's sign-in hook (sso) and operators (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage the gateway's API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Read an IdP's managed groups and their members into a snapshot (JSON).
    Pull(PullArgs),
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Also open the database (applying no migrations to PostgreSQL beyond what serve would).
    #[arg(long)]
    pub connect: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides [server] listen and $SCIMSYNC_LISTEN).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it, alone on stdout. It is shown this once; only its hash is kept.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value_t = TokenScope::Scim)]
        scope: TokenScope,
    },
    /// List tokens (names, scopes, dates; never the secrets).
    List,
    /// Revoke a token by name; requests using it are refused from then on.
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key and print it, alone on stdout. It is shown this once; only its hash is kept.
    Create {
        /// The key's owner: a user id or userName.
        #[arg(long)]
        user: String,
        /// Scope the key to a team: a team id or display name.
        #[arg(long)]
        team: Option<String>,
        /// A label to recognise the key by.
        #[arg(long)]
        name: Option<String>,
        /// Expiry, e.g. 90d or 12h; default never.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// List API keys (prefix, owner, team, state; never the secrets).
    List {
        /// Only this user's keys (id or userName).
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke an API key by id.
    Revoke { id: String },
}

/// A failure meant for the operator: printed as is, exit code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

fn fail<T>(message: impl Into<String>) -> anyhow::Result<T> {
    Err(UserError(message.into()).into())
}

impl Cli {
    pub fn load_config(&self) -> anyhow::Result<Config> {
        let listen = match &self.command {
            Command::Serve(serve) => serve.listen,
            _ => None,
        };
        let overrides = Overrides {
            listen,
            database_url: self.global.database_url.clone(),
            log_format: self.global.log_format,
        };
        Ok(Config::load(
            self.global.config.as_deref(),
            &|name| std::env::var(name).ok(),
            &overrides,
        )?)
    }
}

/// Runs a parsed command line against a loaded configuration. Returns the exit code.
pub async fn run(cli: Cli, config: Config) -> anyhow::Result<i32> {
    match cli.command {
        Command::CheckConfig(args) => check_config(&config, args.connect).await,
        Command::Serve(_) => {
            let app = App::build(config).await?;
            app.serve(app::shutdown_signal()).await?;
            Ok(0)
        }
        Command::Token(command) => {
            let store = open_store(&config).await?;
            token_command(&store, command).await
        }
        Command::Key(command) => {
            let store = open_store(&config).await?;
            key_command(&store, command).await
        }
        Command::Pull(args) => pull_command(&config, args).await,
    }
}

/// Prints what the configuration resolved to (never a secret) and, with `connect`,
/// whether the database answers.
async fn check_config(config: &Config, connect: bool) -> anyhow::Result<i32> {
    println!("listen:    {}", config.server.listen);
    println!(
        "database:  {}",
        crate::config::redact_url_password(&config.database.url)
    );
    println!("log:       {:?} {}", config.log.format, config.log.level);
    println!("idps:      {}", config.idp.len());
    for idp in &config.idp {
        println!(
            "  {} ({:?}){}",
            idp.name,
            idp.kind,
            idp.schedule
                .as_deref()
                .map(|s| format!(", schedule {s}"))
                .unwrap_or_default()
        );
    }
    if connect {
        let store = open_store(config).await?;
        if !store.ping().await {
            return fail("the database does not answer");
        }
        println!("database:  reachable, migrations applied");
        store.close().await;
    }
    println!("configuration OK");
    Ok(0)
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::open(&config.database.url, 2)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open database: {e}"))
}

async fn token_command(store: &Store, command: TokenCommand) -> anyhow::Result<i32> {
    match command {
        TokenCommand::Create { name, scope } => {
            let name = name.trim().to_owned();
            if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                return fail("a token name must be 1 to 128 printable characters");
            }
            let secret = match keys::issue_token(store, &name, scope).await {
                Ok(secret) => secret,
                Err(crate::store::StoreError::Conflict(_)) => {
                    return fail(format!(
                        "a token named {name:?} already exists; revoke it or pick another name"
                    ))
                }
                Err(e) => return Err(e.into()),
            };
            println!("{}", secret.expose());
            Ok(0)
        }
        TokenCommand::List => {
            let tokens = store.list_tokens().await?;
            println!(
                "{:<24} {:<6} {:<28} {:<28} REVOKED",
                "NAME", "SCOPE", "CREATED", "LAST USED"
            );
            for t in tokens {
                println!(
                    "{:<24} {:<6} {:<28} {:<28} {}",
                    t.name,
                    t.scope,
                    crate::store::format_ts(t.created),
                    t.last_used
                        .map(crate::store::format_ts)
                        .unwrap_or_else(|| "-".into()),
                    t.revoked
                        .map(crate::store::format_ts)
                        .unwrap_or_else(|| "-".into()),
                );
            }
            Ok(0)
        }
        TokenCommand::Revoke { name } => {
            if store.revoke_token(&name).await? {
                eprintln!("revoked token {name:?}");
                Ok(0)
            } else {
                fail(format!("no active token named {name:?}"))
            }
        }
    }
}

async fn key_command(store: &Store, command: KeyCommand) -> anyhow::Result<i32> {
    match command {
        KeyCommand::Create {
            user,
            team,
            name,
            expires_in,
        } => {
            let Some(owner) = store.resolve_user(&user).await? else {
                return fail(format!("no user {user:?} (give a user id or userName)"));
            };
            let team_id = match team {
                None => None,
                Some(team) => match store.resolve_team(&team).await? {
                    Some(t) => Some(t.id),
                    None => {
                        return fail(format!(
                            "no team {team:?} (give a team id or a display name that is unique)"
                        ))
                    }
                },
            };
            let expires = match expires_in {
                None => None,
                Some(text) => {
                    let d = crate::config::parse_duration(&text)
                        .map_err(|e| UserError(format!("--expires-in {text:?}: {e}")))?;
                    let d = chrono::Duration::from_std(d)
                        .map_err(|_| UserError(format!("--expires-in {text:?} is too long")))?;
                    Some(crate::store::now() + d)
                }
            };
            let (key, secret) =
                keys::issue_api_key(store, owner.id, team_id, name, expires).await?;
            println!("{}", secret.expose());
            eprintln!("created key {} for {}", key.id, owner.user_name);
            Ok(0)
        }
        KeyCommand::List { user } => {
            let user_id = match user {
                None => None,
                Some(user) => match store.resolve_user(&user).await? {
                    Some(u) => Some(u.id),
                    None => return fail(format!("no user {user:?}")),
                },
            };
            let keys = store.list_keys(user_id).await?;
            println!(
                "{:<36} {:<12} {:<36} {:<36} {:<10} NAME",
                "ID", "PREFIX", "USER", "TEAM", "STATE"
            );
            for k in keys {
                let state = match (k.blocked_by, k.expires) {
                    (Some(by), _) => format!("blocked:{}", by.as_str()),
                    (None, Some(e)) if e <= chrono::Utc::now() => "expired".into(),
                    _ => "active".into(),
                };
                println!(
                    "{:<36} {:<12} {:<36} {:<36} {:<10} {}",
                    k.id,
                    k.prefix,
                    k.user_id,
                    k.team_id
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "-".into()),
                    state,
                    k.name.unwrap_or_default()
                );
            }
            Ok(0)
        }
        KeyCommand::Revoke { id } => {
            let Ok(key_id) = Uuid::parse_str(&id) else {
                return fail(format!("{id:?} is not a key id (see `scimsync key list`)"));
            };
            if store.revoke_key(key_id, "cli").await? {
                eprintln!("revoked key {key_id}");
                Ok(0)
            } else {
                fail(format!("no key with id {key_id}"))
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The [[idp]] to read (its `name`).
    #[arg(long, value_name = "NAME")]
    pub idp: String,
    /// Write the snapshot here instead of to stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `scimsync pull`: IdP → snapshot JSON. A partial pull is still written (marked
/// `"complete": false`, so applying it never deletes) and its problems are listed.
async fn pull_command(config: &Config, args: PullArgs) -> anyhow::Result<i32> {
    let idp = match crate::idp::idp_config(config, &args.idp) {
        Ok(c) => crate::idp::Idp::from_config(c)?,
        Err(e) => return fail(e.to_string()),
    };
    let progress = crate::idp::Progress::spawn_on_terminal(&idp);
    let result = idp.pull().await;
    progress.finish();
    let pull = result?;
    for problem in &pull.problems {
        eprintln!("warning: {problem}");
    }
    let json = serde_json::to_string_pretty(&pull.snapshot)?;
    match &args.out {
        Some(path) => std::fs::write(path, format!("{json}\n"))
            .map_err(|e| UserError(format!("cannot write {}: {e}", path.display())))?,
        None => println!("{json}"),
    }
    let s = &pull.snapshot;
    let members: usize = s.groups.iter().map(|g| g.members.len()).sum();
    eprintln!(
        "{}: {} groups, {} users, {} memberships{}",
        s.idp,
        s.groups.len(),
        s.users.len(),
        members,
        if s.complete {
            ""
        } else {
            " (partial: applying it adds and updates but never deletes)"
        }
    );
    Ok(0)
}
