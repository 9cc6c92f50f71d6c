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

#[derive(Debug, Clone, Args)]
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
    /// summarise it (exit 0). With --connect, also reach the database and each IdP.
    CheckConfig(CheckConfigArgs),
    /// Manage bearer tokens for IdPs (scim), the gateway's sign-in hook (sso) and operators (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage the gateway's API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Show what syncing a snapshot would change, like `terraform plan`. Changes nothing.
    Plan(PlanArgs),
    /// Make the store match a snapshot, or apply a plan saved with `plan --out`.
    Apply(ApplyArgs),
    /// Plans a guard refused in a scheduled sync, kept for an operator: list, show,
    /// approve or reject them. While an IdP has one, its syncs apply no removals.
    #[command(subcommand)]
    Plans(PlansCommand),
    /// Show the audit log: every applied operation with its time, trigger and actor.
    /// `audit export` streams it as JSON lines for shipping elsewhere.
    Audit(AuditArgs),
    /// Copy the SQLite database, consistently, while the daemon runs. PostgreSQL: use
    /// pg_dump (this command refuses and says so).
    Backup(BackupArgs),
    /// Read an IdP's managed groups and their members into a snapshot (JSON).
    Pull(PullArgs),
    /// Sync one user's team memberships from the IdP, as a sign-in would.
    SsoSignIn(SsoSignInArgs),
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Also open the database (applying migrations, as serve would) and fetch a token
    /// from each IdP's token endpoint with the configured credentials.
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
        /// The IdP this SCIM token pushes for (the name of its [[idp]] table when it also
        /// has one): what the token creates is owned by that IdP, and it may change only
        /// what that IdP owns. Default: the IdP named "default".
        #[arg(long, value_name = "IDP")]
        idp: Option<String>,
    },
    /// List tokens (names, scopes, IdPs, dates; never the secrets).
    List {
        /// text for people, or json for scripts: {"tokens": [...]}.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
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
        /// Scope the key to a team: a team id or display name. The user must be a
        /// member of it; a key stops working when its user leaves its team.
        #[arg(long)]
        team: Option<String>,
        /// A label to recognise the key by.
        #[arg(long)]
        name: Option<String>,
        /// Expiry from now, e.g. 90d or 12h (s, m, h or d; more than 0s and at most
        /// 10 years, 3650d); default never.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// List API keys (id, prefix, owner's userName, team name, state; never the secrets).
    List {
        /// Only this user's keys (id or userName).
        #[arg(long)]
        user: Option<String>,
        /// text for people, or json for scripts: {"keys": [...]} with ids and names.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// Also show the user and team ids and the dates.
        #[arg(long)]
        wide: bool,
    },
    /// Revoke an API key by id.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum PlansCommand {
    /// The plans awaiting a decision, newest first, each with what it would do: its
    /// counts and the first users and teams it removes, by name.
    List {
        /// Also the plans decided already (approved, rejected, superseded).
        #[arg(long)]
        all: bool,
        /// text for people, or json for scripts (each plan with its `summary`: counts
        /// and the first removals, by name).
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// Also show when each plan was decided and why it was kept.
        #[arg(long)]
        wide: bool,
    },
    /// One plan, shown like `scimsync plan`, with why it was refused.
    Show {
        id: i64,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Apply a plan, deletions allowed, if the store has not changed since it was
    /// made. If it has, nothing is applied: the plan is made again from the same IdP
    /// state against the store as it is now and kept for review in its place (exit 2).
    Approve {
        id: i64,
        /// Who decides, for the audit log (default: $USER).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
    /// Drop a plan without applying it. The IdP's next sync plans afresh (and is
    /// refused again if the IdP still says the same).
    Reject {
        id: i64,
        /// Who decides, for the audit log (default: $USER).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
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
        Command::Serve(ref serve) => {
            let listen = serve.listen;
            let global = cli.global.clone();
            // SIGHUP re-reads the configuration from the same file, environment and flags.
            let loader: app::ConfigLoader = std::sync::Arc::new(move || {
                Cli {
                    global: global.clone(),
                    command: Command::Serve(ServeArgs { listen }),
                }
                .load_config()
            });
            let app = App::build(config).await?.reload_with(loader);
            let shutdown = app::shutdown_signal()?;
            app.serve(shutdown).await?;
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
        Command::Plan(args) => plan_command(&config, args).await,
        Command::Apply(args) => apply_command(&config, args).await,
        Command::Plans(command) => plans_command(&config, command).await,
        Command::Audit(args) => audit_command(&config, args).await,
        Command::Backup(args) => backup_command(&config, args).await,
        Command::Pull(args) => pull_command(&config, args).await,
        Command::SsoSignIn(args) => sso_sign_in_command(config, args).await,
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
        let mut failed = Vec::new();
        for idp_config in &config.idp {
            let outcome = match crate::idp::Idp::from_config(idp_config) {
                Ok(idp) => idp.check_credentials().await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(true) => println!(
                    "idp {}: token endpoint accepted the credentials",
                    idp_config.name
                ),
                Ok(false) => println!(
                    "idp {}: static API token present (checked at first use)",
                    idp_config.name
                ),
                Err(e) => {
                    eprintln!("idp {}: {e}", idp_config.name);
                    failed.push(idp_config.name.clone());
                }
            }
        }
        if !failed.is_empty() {
            return fail(format!("cannot authenticate to: {}", failed.join(", ")));
        }
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
        TokenCommand::Create { name, scope, idp } => {
            let name = name.trim().to_owned();
            if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                return fail("a token name must be 1 to 128 printable characters");
            }
            let idp = match idp {
                Some(_) if scope != TokenScope::Scim => {
                    return fail(format!(
                        "--idp binds a SCIM token to an IdP; a token of scope {scope} has none"
                    ))
                }
                Some(idp) => {
                    let idp = idp.trim().to_owned();
                    crate::domain::check_idp_name(&idp).map_err(UserError)?;
                    idp
                }
                None => crate::domain::DEFAULT_SCIM_IDP.to_owned(),
            };
            let secret = match store.issue_token(&name, scope, &idp).await {
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
        TokenCommand::List { format } => token_list(store, format).await,
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

/// Who the audit log names for what an operator does from the shell.
fn cli_actor() -> crate::reconcile::Actor {
    crate::reconcile::Actor::new(crate::domain::Trigger::Cli, "cli")
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
            let team = match team {
                None => None,
                Some(team) => match store.resolve_team(&team).await? {
                    found @ Some(_) => found,
                    None => {
                        return fail(format!(
                            "no team {team:?} (give a team id or a display name that is unique)"
                        ))
                    }
                },
            };
            let expires = expires_in
                .map(|text| expiry_from(&text, crate::store::now()))
                .transpose()?;
            let team_id = team.as_ref().map(|t| t.id);
            let engine = crate::reconcile::Engine::new(store.clone());
            let new = crate::reconcile::NewKey {
                user_id: owner.id,
                team_id,
                name,
                expires,
            };
            let (key, secret) = match engine.issue_key(new, &cli_actor()).await {
                Ok(issued) => issued,
                Err(e @ crate::reconcile::EngineError::NotAMember { .. }) => {
                    return fail(e.to_string())
                }
                Err(e) => return Err(e.into()),
            };
            println!("{}", secret.expose());
            eprintln!("created key {} for {}", key.id, owner.user_name);
            Ok(0)
        }
        KeyCommand::List { user, format, wide } => key_list(store, user, format, wide).await,
        KeyCommand::Revoke { id } => {
            let Ok(key_id) = Uuid::parse_str(&id) else {
                return fail(format!("{id:?} is not a key id (see `scimsync key list`)"));
            };
            let engine = crate::reconcile::Engine::new(store.clone());
            if engine.revoke_key(key_id, &cli_actor()).await? {
                eprintln!("revoked key {key_id}");
                Ok(0)
            } else {
                fail(format!("no key with id {key_id}"))
            }
        }
    }
}

/// `scimsync token list`.
async fn token_list(store: &Store, format: OutputFormat) -> anyhow::Result<i32> {
    use crate::output;
    let tokens = store.list_tokens().await?;
    match format {
        OutputFormat::Json => output::print_json(&output::keys::token_json(&tokens))?,
        OutputFormat::Text => {
            output::print_text(&output::keys::token_table(&tokens).render(output::stdout_color()))?
        }
    }
    Ok(0)
}

/// `scimsync key list`: names for people, ids too with `--wide` or `--format json`.
async fn key_list(
    store: &Store,
    user: Option<String>,
    format: OutputFormat,
    wide: bool,
) -> anyhow::Result<i32> {
    use crate::output;
    let user_id = match user {
        None => None,
        Some(user) => match store.resolve_user(&user).await? {
            Some(u) => Some(u.id),
            None => return fail(format!("no user {user:?}")),
        },
    };
    let keys = store.list_keys_named(user_id).await?;
    let now = crate::store::now();
    match format {
        OutputFormat::Json => output::print_json(&output::keys::key_json(&keys, now))?,
        OutputFormat::Text => output::print_text(
            &output::keys::key_table(&keys, wide, now).render(output::stdout_color()),
        )?,
    }
    Ok(0)
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
    // Streamed: a million memberships would otherwise be a second copy as one string.
    match &args.out {
        Some(path) => {
            let cannot = |e: &dyn std::fmt::Display| {
                UserError(format!("cannot write {}: {e}", path.display()))
            };
            let file = std::fs::File::create(path).map_err(|e| cannot(&e))?;
            write_snapshot(&pull.snapshot, std::io::BufWriter::new(file))
                .map_err(|e| cannot(&e))?;
        }
        None => write_snapshot(
            &pull.snapshot,
            std::io::BufWriter::new(std::io::stdout().lock()),
        )?,
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

/// Writes a snapshot as pretty JSON and a final newline, and flushes.
fn write_snapshot(
    snapshot: &crate::reconcile::snapshot::Snapshot,
    mut out: impl std::io::Write,
) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut out, snapshot)?;
    out.write_all(b"\n")?;
    out.flush()
}

// ---------------------------------------------------------------------------------
// plan, apply, audit: the reconcile engine's commands.

/// How `plan` and `audit` print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people: like `terraform plan`, coloured on a terminal.
    Text,
    /// For programs: see docs/snapshot.md for the plan's JSON.
    Json,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("desired").required(true).args(["snapshot", "idp", "target"])))]
pub struct PlanArgs {
    /// Compare a downstream [[target]] (LiteLLM) with the store instead: what it lacks
    /// or has in excess.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["user", "out"])]
    pub target: Option<String>,
    /// The desired state: a snapshot file as `scimsync pull` writes it (docs/snapshot.md);
    /// `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// The desired state: pull it now from this [[idp]] connection.
    #[arg(long, value_name = "NAME")]
    pub idp: Option<String>,
    /// Only the changes that concern this user (an id or a userName).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// How to show the plan.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Also save the plan, with a fingerprint of the current state, for `apply --plan`.
    #[arg(long, value_name = "PLAN")]
    pub out: Option<PathBuf>,
    /// Exit 0 when there is nothing to change, 2 when there is, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Plan deletions and deactivations beyond the [safety] limits instead of refusing.
    #[arg(long)]
    pub allow_deletions: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["snapshot", "idp", "plan", "target"])))]
pub struct ApplyArgs {
    /// Repair a downstream [[target]] (LiteLLM) so that it matches the store.
    #[arg(long, value_name = "NAME", conflicts_with = "user")]
    pub target: Option<String>,
    /// Plan against this snapshot and apply at once (`-` reads standard input).
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// Pull from this [[idp]] connection now, plan, and apply at once.
    #[arg(long, value_name = "NAME")]
    pub idp: Option<String>,
    /// Apply a plan saved by `plan --out`; refused if the store changed since.
    #[arg(long, value_name = "PLAN")]
    pub plan: Option<PathBuf>,
    /// With --snapshot or --idp: only the changes that concern this user (an id or a userName).
    #[arg(long, value_name = "USER", conflicts_with = "plan")]
    pub user: Option<String>,
    /// Apply deletions and deactivations beyond the [safety] limits.
    #[arg(long)]
    pub allow_deletions: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    /// Only entries at or after TIME: RFC 3339 (2026-01-31T12:00:00Z), a date
    /// (2026-01-31, UTC) or an age such as 24h or 7d (at most 100 years, 36500d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// How to show the entries: text names each target (`user alice@example.com`);
    /// json is the entries as stored, ids and detail.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Text: also show each target as stored, with its ids.
    #[arg(long)]
    pub wide: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Write the audit log to stdout, one JSON object per line, oldest first, streamed
    /// as it is read: ship it elsewhere before [audit] retain prunes it. Each line has
    /// the entry's `id` (increasing), so overlapping exports can be deduplicated.
    Export(AuditExportArgs),
}

#[derive(Debug, Args)]
pub struct AuditExportArgs {
    /// Only entries at or after TIME: RFC 3339 (2026-01-31T12:00:00Z), a date
    /// (2026-01-31, UTC) or an age such as 24h or 7d. Default: the whole log.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// The output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line: id, at, trigger, actor, operation, target, detail.
    Jsonl,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the copy (a SQLite database file, mode 0600). It is written to a
    /// temporary file beside FILE and renamed into place once complete and on disk.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
}

fn read_input(path: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Read;
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| UserError(format!("cannot read standard input: {e}")))?;
        return Ok(text);
    }
    std::fs::read_to_string(path)
        .map_err(|e| UserError(format!("cannot read {}: {e}", path.display())).into())
}

fn read_snapshot(path: &std::path::Path) -> anyhow::Result<crate::reconcile::snapshot::Snapshot> {
    let text = read_input(path)?;
    crate::reconcile::snapshot::Snapshot::parse(&text)
        .map_err(|e| UserError(format!("{}: {e}", path.display())).into())
}

/// Engine refusals are the operator's to act on: their text is the message.
/// An engine error as the operator reads it: what they can act on as a plain message
/// (exit 1), database trouble with its cause.
fn engine_error(e: crate::reconcile::EngineError) -> anyhow::Error {
    use crate::reconcile::{ApplyError, EngineError};
    match e {
        EngineError::Store(e) | EngineError::Apply(ApplyError::Store(e)) => {
            anyhow::anyhow!("database error: {e}")
        }
        other => UserError(other.to_string()).into(),
    }
}

/// The desired state of `plan`/`apply`: a snapshot file, or a pull made now. Pulled
/// before any transaction opens, so the IdP's speed never holds the writer lock.
async fn desired_snapshot(
    config: &Config,
    file: Option<&std::path::Path>,
    idp: Option<&str>,
) -> anyhow::Result<crate::reconcile::snapshot::Snapshot> {
    match (file, idp) {
        (Some(path), _) => read_snapshot(path),
        (None, Some(name)) => crate::idp::pull_snapshot(config, name)
            .await
            .map_err(|e| UserError(format!("cannot pull from {name:?}: {e}")).into()),
        (None, None) => fail("give --snapshot FILE or --idp NAME"),
    }
}

/// Whether the plan is coloured: see [`crate::output::stdout_color`].
fn stdout_is_terminal() -> bool {
    crate::output::stdout_color()
}

async fn plan_command(config: &Config, args: PlanArgs) -> anyhow::Result<i32> {
    use crate::reconcile::{self, render, Policy};
    let store = open_store(config).await?;
    if let Some(name) = &args.target {
        let json = args.format == OutputFormat::Json;
        return crate::target::drift::plan_command(
            config,
            store,
            name,
            json,
            args.detailed_exitcode,
            args.allow_deletions,
        )
        .await;
    }
    let mut policy = Policy::from_config(config, crate::store::now());
    policy.allow_deletions = args.allow_deletions;
    // A write transaction only for a consistent view of the store: nothing is written,
    // and dropping it rolls back.
    let snapshot = desired_snapshot(config, args.snapshot.as_deref(), args.idp.as_deref()).await?;
    let desired = snapshot.into_desired();
    let actor = cli_actor();
    let request = reconcile::Request {
        for_user: args.user.as_deref(),
        fingerprint: true,
        ..reconcile::Request::new(&desired, &policy, &actor)
    };
    let plan = reconcile::Engine::new(store)
        .plan(request)
        .await
        .map_err(engine_error)?;
    match args.format {
        OutputFormat::Text => print!("{}", render::render_text(&plan, stdout_is_terminal())),
        OutputFormat::Json => {
            // Streamed: a first pull's plan has a million operations.
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            render::write_json(&plan, &mut out)?;
            std::io::Write::flush(&mut out)?;
        }
    }
    if let Some(out) = &args.out {
        let bytes = serde_json::to_vec(&plan)?;
        std::fs::write(out, bytes)
            .map_err(|e| UserError(format!("cannot write {}: {e}", out.display())))?;
        eprintln!(
            "Saved the plan to {0}. Apply exactly these changes with: scimsync apply --plan {0}",
            out.display()
        );
    }
    Ok(if args.detailed_exitcode && !plan.is_empty() {
        2
    } else {
        0
    })
}

fn read_plan_file(path: &std::path::Path) -> anyhow::Result<crate::reconcile::Plan> {
    let text = read_input(path)?;
    let version: Option<String> = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("format_version")
                .and_then(|f| f.as_str())
                .map(str::to_owned)
        });
    match version.as_deref() {
        Some(crate::reconcile::FORMAT_VERSION) => {}
        Some(other) => {
            return fail(format!(
                "{}: plan format version {other:?} is not supported (this scimsync writes {:?}); plan again",
                path.display(),
                crate::reconcile::FORMAT_VERSION
            ))
        }
        None => {
            return fail(format!(
                "{}: not a plan saved by `scimsync plan --out`",
                path.display()
            ))
        }
    }
    let mut de = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        UserError(format!(
            "{}: invalid plan at {}: {}",
            path.display(),
            e.path(),
            e.inner()
        ))
        .into()
    })
}

async fn apply_command(config: &Config, args: ApplyArgs) -> anyhow::Result<i32> {
    use crate::reconcile::{self, render, Policy, Scope};
    let store = open_store(config).await?;
    if let Some(name) = &args.target {
        return crate::target::drift::apply_command(config, store, name, args.allow_deletions)
            .await;
    }
    let mut policy = Policy::from_config(config, crate::store::now());
    policy.allow_deletions = args.allow_deletions;
    let actor = cli_actor();
    // A sync of this IdP, so it runs alone: never beside a scheduled run of the same
    // IdP, in the daemon or on another replica, nor another `apply --idp`.
    let sync_lock = match &args.idp {
        Some(name) => Some(take_sync_lock(config, &store, name).await?),
        None => None,
    };
    let snapshot = match &args.plan {
        Some(_) => None,
        None => {
            Some(desired_snapshot(config, args.snapshot.as_deref(), args.idp.as_deref()).await?)
        }
    };
    let engine = reconcile::Engine::new(store.clone());
    let show = |plan: &reconcile::Plan| {
        print!("{}", render::render_text(plan, stdout_is_terminal()));
    };
    let applied = match (&args.plan, snapshot) {
        (Some(path), _) => {
            let plan = read_plan_file(path)?;
            if plan.scope != Scope::Everything {
                return fail(format!(
                    "{}: only plans made by `scimsync plan` can be applied",
                    path.display()
                ));
            }
            engine
                .apply_saved(plan, &policy, &actor, show)
                .await
                .map_err(|e| match e {
                    e @ (reconcile::EngineError::StalePlan
                    | reconcile::EngineError::UnfingerprintedPlan) => {
                        UserError(format!("{}: {e}", path.display())).into()
                    }
                    e => engine_error(e),
                })?
        }
        (None, Some(snapshot)) => {
            let desired = snapshot.into_desired();
            let request = reconcile::Request {
                for_user: args.user.as_deref(),
                ..reconcile::Request::new(&desired, &policy, &actor)
            };
            engine
                .apply_shown(request, show)
                .await
                .map_err(engine_error)?
        }
        (None, None) => return fail("give --snapshot FILE, --idp NAME or --plan PLAN"),
    };
    let summary = applied.summary;
    if applied.plan.is_empty() {
        if let Some(lock) = sync_lock {
            lock.release().await;
        }
        return Ok(0);
    }
    println!(
        "\nApply complete! {} operations applied, {} already in place.",
        summary.applied, summary.unchanged
    );
    if let Some(lock) = sync_lock {
        lock.release().await;
    }
    Ok(0)
}

/// Who decides about a quarantined plan, for the audit log: `--by`, else the login
/// name, else "cli".
fn decider(by: Option<String>) -> anyhow::Result<crate::reconcile::Actor> {
    let name = by
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "cli".to_owned());
    if name.len() > 128 || name.chars().any(char::is_control) {
        return fail("--by must be 1 to 128 printable characters");
    }
    Ok(crate::reconcile::Actor::new(
        crate::domain::Trigger::Cli,
        name,
    ))
}

async fn plans_command(config: &Config, command: PlansCommand) -> anyhow::Result<i32> {
    use crate::output;
    use crate::reconcile::{render, summary, Approval, Engine, Plan, Policy};
    let store = open_store(config).await?;
    match command {
        PlansCommand::List { all, format, wide } => {
            let mut plans = store.quarantined_plans(all).await?;
            crate::reconcile::summary::fill_missing(&store, &mut plans).await?;
            match format {
                OutputFormat::Json => output::print_json(&plans)?,
                OutputFormat::Text if plans.is_empty() => eprintln!(
                    "No plans {}.",
                    if all {
                        "were ever quarantined"
                    } else {
                        "await a decision"
                    }
                ),
                OutputFormat::Text => output::print_text(
                    &output::plans::plans_table(&plans, wide).render(output::stdout_color()),
                )?,
            }
            Ok(0)
        }
        PlansCommand::Show { id, format } => {
            let Some((mut kept, body)) = store.quarantined_plan(id).await? else {
                return fail(format!(
                    "there is no quarantined plan {id}; `scimsync plans list --all` lists them"
                ));
            };
            let plan: Option<Plan> = serde_json::from_str(&body.plan).ok();
            if kept.summary.is_none() {
                kept.summary = plan.as_ref().map(summary::summarize);
            }
            match format {
                OutputFormat::Json => {
                    let rendered: serde_json::Value = match &plan {
                        Some(plan) => serde_json::from_str(&render::render_json(plan))?,
                        None => serde_json::Value::Null,
                    };
                    let mut doc = serde_json::to_value(&kept)?;
                    doc["plan"] = rendered;
                    println!("{}", serde_json::to_string_pretty(&doc)?);
                }
                OutputFormat::Text => {
                    println!(
                        "Plan {} of IdP {:?}, kept {} ({}): {}",
                        kept.id,
                        kept.idp,
                        crate::store::format_ts(kept.created),
                        kept.trigger,
                        output::plans::status(&kept).text
                    );
                    println!("Why: {}", kept.reason);
                    if let Some(summary) = &kept.summary {
                        println!("Would: {summary}");
                    }
                    println!();
                    match &plan {
                        Some(plan) => {
                            print!("{}", render::render_text(plan, stdout_is_terminal()))
                        }
                        // Kept by another version: its own rendering still says what it does.
                        None => print!("{}", body.rendered),
                    }
                    if kept.is_pending() {
                        println!(
                            "\nApprove it (deletions allowed) with `scimsync plans approve {id}`, \
                             or drop it with `scimsync plans reject {id}`."
                        );
                    }
                }
            }
            Ok(0)
        }
        PlansCommand::Approve { id, by } => {
            let actor = decider(by)?;
            let policy = Policy::from_config(config, crate::store::now());
            match Engine::new(store)
                .approve_quarantined(id, &policy, &actor)
                .await
                .map_err(engine_error)?
            {
                Approval::Applied(applied) => {
                    println!(
                        "Approved plan {id}: {} operations applied, {} already in place.",
                        applied.summary.applied, applied.summary.unchanged
                    );
                    Ok(0)
                }
                Approval::Replanned { id: new, plan } => {
                    print!("{}", render::render_text(&plan, stdout_is_terminal()));
                    eprintln!(
                        "\nNothing was applied: the store has changed since plan {id} was made. \
                         It was planned again from the same IdP state against the store as it \
                         is now (above) and kept as plan {new} in its place. Review it, then \
                         `scimsync plans approve {new}` or `scimsync plans reject {new}`."
                    );
                    Ok(2)
                }
            }
        }
        PlansCommand::Reject { id, by } => {
            let actor = decider(by)?;
            let kept = Engine::new(store)
                .reject_quarantined(id, &actor)
                .await
                .map_err(engine_error)?;
            println!(
                "Rejected plan {id}; nothing was applied. IdP {:?}'s next sync plans afresh.",
                kept.idp
            );
            Ok(0)
        }
    }
}

/// The sync lock of the IdP `name`, or an error saying who may hold it.
async fn take_sync_lock(
    config: &Config,
    store: &Store,
    name: &str,
) -> anyhow::Result<crate::store::locks::SyncLock> {
    if let Err(e) = crate::idp::idp_config(config, name) {
        return fail(e.to_string());
    }
    match store.try_sync_lock(name).await {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => fail(format!(
            "another sync of IdP {name:?} is running (a scheduled run, on this host or \
             another replica, or another `scimsync apply --idp {name}`); nothing was \
             pulled or applied. Try again once it has finished."
        )),
        Err(e) => Err(anyhow::anyhow!(
            "cannot take the sync lock of IdP {name:?}: {e}"
        )),
    }
}

/// `--expires-in`: when a new key stops working. It must be in the future, and at most
/// [`keys::KEY_EXPIRY_LIMIT`] away: an expiry decades out is a typo, not a policy.
fn expiry_from(
    text: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let d = crate::config::parse_duration(text, keys::KEY_EXPIRY_LIMIT)
        .map_err(|e| UserError(format!("--expires-in {text:?} {e}")))?;
    if d.is_zero() {
        return fail(format!(
            "--expires-in {text:?} is zero; a key's expiry must be in the future (e.g. 90d)"
        ));
    }
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| UserError(format!("--expires-in {text:?} is too long")).into())
}

/// `--since`: RFC 3339, a date (UTC midnight) or an age such as 24h (at most 100 years).
fn parse_since(text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    use chrono::{DateTime, NaiveDate, Utc};
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    match crate::config::parse_duration(text, crate::config::CONFIG_DURATION_LIMIT) {
        Ok(age) => {
            // The limit keeps this far inside chrono's range; checked all the same.
            if let Some(t) = chrono::Duration::from_std(age)
                .ok()
                .and_then(|age| crate::store::now().checked_sub_signed(age))
            {
                return Ok(t);
            }
            return fail(format!("--since {text:?} is too long"));
        }
        Err(e @ crate::config::DurationError::TooLong(_)) => {
            return fail(format!("--since {text:?} {e}"))
        }
        Err(_) => {}
    }
    fail(format!(
        "--since {text:?}: expected a time such as 2026-01-31T12:00:00Z, a date such as \
         2026-01-31, or an age such as 24h or 7d"
    ))
}

async fn audit_command(config: &Config, args: AuditArgs) -> anyhow::Result<i32> {
    if let Some(AuditCommand::Export(export)) = args.command {
        return audit_export(config, export).await;
    }
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let store = open_store(config).await?;
    match args.format {
        OutputFormat::Json => {
            let entries = store.audit_since(since).await?;
            println!("{}", serde_json::to_string_pretty(&entries)?);
        }
        OutputFormat::Text => audit_text(&store, since, args.wide).await?,
    }
    Ok(0)
}

/// `scimsync audit` as a table, streamed a page at a time, each page's names looked up
/// in one query.
async fn audit_text(
    store: &Store,
    since: Option<chrono::DateTime<chrono::Utc>>,
    wide: bool,
) -> anyhow::Result<()> {
    use crate::output::{self, audit};
    use futures::StreamExt;
    let color = output::stdout_color();
    let mut pages = store.audit_stream(since).chunks(audit::PAGE);
    let mut first = true;
    while let Some(page) = pages.next().await {
        let entries = page
            .into_iter()
            .map(|e| e.map(|e| e.entry))
            .collect::<Result<Vec<_>, _>>()?;
        let (users, teams, keys) = audit::unnamed(&entries);
        let names = store.audit_names(&users, &teams, &keys).await?;
        let table = audit::audit_table(&entries, &names, wide);
        output::print_text(&if first {
            table.render(color)
        } else {
            table.render_rows_only(color)
        })?;
        first = false;
    }
    if first {
        // An empty log still shows its columns, as it always has.
        output::print_text(&audit::audit_table(&[], &Default::default(), wide).render(color))?;
    }
    Ok(())
}

/// `scimsync audit export`: one entry in memory at a time, however long the log.
async fn audit_export(config: &Config, args: AuditExportArgs) -> anyhow::Result<i32> {
    use futures::StreamExt;
    use std::io::Write;
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let ExportFormat::Jsonl = args.format;
    let store = open_store(config).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut entries = store.audit_stream(since);
    let mut written = 0u64;
    let closed = |e: std::io::Error| UserError(format!("cannot write to standard output: {e}"));
    while let Some(entry) = entries.next().await {
        serde_json::to_writer(&mut out, &entry?)?;
        out.write_all(b"\n").map_err(closed)?;
        written += 1;
    }
    out.flush().map_err(closed)?;
    drop(entries);
    store.close().await;
    eprintln!("exported {written} audit entries");
    Ok(0)
}

/// `scimsync backup`: see [`crate::store::backup_sqlite`].
async fn backup_command(config: &Config, args: BackupArgs) -> anyhow::Result<i32> {
    match crate::store::backup_sqlite(&config.database.url, &args.out, args.force).await {
        Ok(bytes) => {
            eprintln!(
                "backed up the database to {} ({bytes} bytes)",
                args.out.display()
            );
            Ok(0)
        }
        Err(e) => fail(e.to_string()),
    }
}

#[cfg(test)]
mod reconcile_cli_tests {
    use super::*;

    #[test]
    fn since_accepts_times_dates_and_ages() {
        assert_eq!(
            parse_since("2026-01-31T12:00:00Z").unwrap().to_rfc3339(),
            "2026-01-31T12:00:00+00:00"
        );
        assert_eq!(
            parse_since("2026-01-31").unwrap().to_rfc3339(),
            "2026-01-31T00:00:00+00:00"
        );
        assert!(parse_since("24h").unwrap() < chrono::Utc::now());
        assert!(parse_since("yesterday").is_err());
        let err = parse_since("144115188075855872d").unwrap_err().to_string();
        assert!(err.contains("is too long (at most 100 years"), "{err}");
        let err = parse_since("36500000d").unwrap_err().to_string();
        assert!(err.contains("is too long"), "{err}");
    }

    #[test]
    fn expiry_must_be_in_the_future_and_within_ten_years() {
        let now = crate::store::now();
        assert_eq!(
            expiry_from("90d", now).unwrap(),
            now + chrono::Duration::days(90)
        );
        assert_eq!(
            expiry_from("3650d", now).unwrap(),
            now + chrono::Duration::days(3650)
        );
        for (text, expected) in [
            ("0s", "is zero; a key's expiry must be in the future"),
            ("0d", "is zero"),
            ("3651d", "is too long (at most 10 years, 3650d)"),
            ("144115188075855872d", "is too long"),
            ("18446744073709551615s", "is too long"),
            ("-1d", "is negative"),
            ("1.5d", "has a fraction"),
            ("d", "has no number"),
            ("5y", "unknown unit"),
        ] {
            let err = expiry_from(text, now).unwrap_err().to_string();
            assert!(err.starts_with(&format!("--expires-in {text:?} ")), "{err}");
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}

#[derive(Debug, Args)]
pub struct SsoSignInArgs {
    /// The [[idp]] the user signs in through.
    #[arg(long, value_name = "NAME")]
    pub idp: String,
    /// The user: an IdP id, userName or email.
    #[arg(long, value_name = "USER")]
    pub user: String,
    /// Show the plan without changing anything.
    #[arg(long)]
    pub dry_run: bool,
}

/// `scimsync sso-sign-in`: what the sign-in hook does, from a shell; prints the plan.
async fn sso_sign_in_command(config: Config, args: SsoSignInArgs) -> anyhow::Result<i32> {
    let store = open_store(&config).await?;
    let outcome = crate::sso::sign_in_from_cli(
        &store,
        std::sync::Arc::new(config),
        &args.idp,
        &args.user,
        args.dry_run,
    )
    .await;
    store.close().await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e @ (crate::sso::SsoError::UnknownIdp(_) | crate::sso::SsoError::BadRequest(_))) => {
            return fail(e.to_string())
        }
        Err(e) => return Err(e.into()),
    };
    let color = crate::output::stdout_color();
    print!(
        "{}",
        crate::reconcile::render::render_text(&outcome.plan, color)
    );
    eprintln!(
        "{} via {}: {} ({})",
        outcome.user_name,
        outcome.idp,
        if outcome.teams.is_empty() {
            "no managed groups".to_owned()
        } else {
            outcome.teams.join(", ")
        },
        if outcome.applied {
            "applied"
        } else {
            "dry run, nothing changed"
        }
    );
    Ok(0)
}
