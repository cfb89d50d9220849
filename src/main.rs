//! The `referdesk` command: runs the server (default) and a few admin tasks.

mod import_progress;

use anyhow::Context;
use clap::{Parser, Subcommand};
use diesel::{Connection, PgConnection};
use referdesk::config::Config;
use referdesk::domain::team::Role;
use referdesk::domain::{imports, programs, team, tokens, Actor};
use referdesk::error::Error;
use referdesk::{prepare_database, resolve_database, Application};

#[derive(Parser)]
#[command(
    name = "referdesk",
    version,
    about = "Self-hosted manager for refer-a-friend programs"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the web server (the default when no command is given).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage team members.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Fill a program with generated customers (for benchmarks and demos).
    Seed {
        #[arg(long, default_value = "default")]
        program: String,
        #[arg(long, default_value_t = 1_000_000)]
        customers: i64,
        /// Draw the data from this seed: the same seed and count give the same data set
        /// (a random seed, logged, when absent).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Import data from a file.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an API token for a program and print it (once) on stdout.
    Create {
        /// The program's slug, e.g. `default`.
        #[arg(long, default_value = "default")]
        program: String,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Import customers from a CSV file (UTF-8; comma or semicolon separated; a header
    /// line naming the columns). Prints the report on stdout; exits 0 only when every row
    /// was imported (with --dry-run: would be).
    Customers {
        /// The CSV file.
        file: std::path::PathBuf,
        /// The program's slug, e.g. `default`.
        #[arg(long, default_value = "default")]
        program: String,
        /// Update the customers whose key, id or email matches a row (only the columns
        /// in the file); rows that match nobody create customers.
        #[arg(long, value_parser = ["key", "id", "email"])]
        upsert: Option<String>,
        /// Check every row and report, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Import the valid rows even when others are refused (default: all or nothing).
        #[arg(long)]
        valid_rows: bool,
        /// Write the refused rows, with why, to this CSV file.
        #[arg(long)]
        refused: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a team member. The password comes from REFERDESK_PASSWORD or is asked for.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        /// viewer, support or admin
        #[arg(long, default_value = Role::Viewer.as_str())]
        role: String,
    },
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("REFERDESK_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr, so that stdout carries only a command's result (`TOKEN=$(referdesk
    // token create …)`). Colours only on a terminal: a log file or journal gets plain text.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    let config = Config::from_env()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::Migrate => with_database(&config, |_, _| Ok(())),
        Command::User {
            command: UserCommand::Create { email, name, role },
        } => create_user(&config, &email, &name, &role),
        Command::Seed {
            program,
            customers,
            seed,
        } => seed_program(&config, program, customers, seed),
        Command::Import {
            command:
                ImportCommand::Customers {
                    file,
                    program,
                    upsert,
                    dry_run,
                    valid_rows,
                    refused,
                },
        } => {
            let options = import_options(&file, upsert.as_deref(), dry_run, valid_rows);
            import_customers(&config, &file, program, options, refused)
        }
        Command::Token {
            command: TokenCommand::Create { program, name },
        } => create_token(&config, program, name),
    }
}

/// Who the audit log names for what a command does.
fn cli_actor() -> Actor {
    Actor {
        label: "cli".into(),
        ..Actor::system()
    }
}

fn find_program(conn: &mut PgConnection, slug: &str) -> anyhow::Result<programs::Program> {
    programs::find_by_slug(conn, slug).map_err(|_| anyhow::anyhow!("no program with slug {slug:?}"))
}

/// `user create`: the password comes from REFERDESK_PASSWORD or is asked for.
fn create_user(config: &Config, email: &str, name: &str, role: &str) -> anyhow::Result<()> {
    let password = match std::env::var("REFERDESK_PASSWORD") {
        Ok(password) if !password.is_empty() => password,
        _ => rpassword::prompt_password("Password for the new member: ")
            .context("could not read a password (set REFERDESK_PASSWORD when there is no terminal)")?,
    };
    let new = team::NewMember::parse(email, name, role, Some(&password)).map_err(describe)?;
    with_database(config, move |conn, _| {
        let member = team::create_member(conn, &cli_actor(), new).map_err(describe)?;
        eprintln!("Created {} <{}> as {}.", member.name, member.email, member.role);
        Ok(())
    })
}

/// `seed`: fills the program with generated customers.
fn seed_program(config: &Config, program: String, customers: i64, seed: Option<u64>) -> anyhow::Result<()> {
    with_database(config, move |_, url| {
        // Two connections, so that PostgreSQL writes the data on two cores.
        let mut writers = Vec::new();
        for _ in 0..referdesk::seed::WRITERS {
            writers.push(PgConnection::establish(url).context("could not connect to the database")?);
        }
        referdesk::seed::seed(&mut writers, &program, customers, seed).map_err(describe)
    })
}

fn import_options(
    file: &std::path::Path,
    upsert: Option<&str>,
    dry_run: bool,
    valid_rows: bool,
) -> imports::Options {
    let mode = match upsert {
        Some("key") => imports::Mode::UpsertByKey,
        Some("id") => imports::Mode::UpsertById,
        Some("email") => imports::Mode::UpsertByEmail,
        _ => imports::Mode::Create,
    };
    imports::Options {
        mode,
        policy: if valid_rows {
            imports::Policy::ValidRows
        } else {
            imports::Policy::AllOrNothing
        },
        dry_run,
        source: file.display().to_string(),
    }
}

/// `import customers`: prints the report; exits 1 unless every row was (or would be)
/// imported.
fn import_customers(
    config: &Config,
    file: &std::path::Path,
    program: String,
    options: imports::Options,
    refused: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("could not read {}", file.display()))?;
    let csv = imports::CsvFile::parse(bytes).map_err(describe)?;
    let report = with_database(config, move |conn, _| {
        let program = find_program(conn, &program)?;
        let progress = import_progress::Bar::new();
        let report = imports::import(
            conn,
            &program,
            &cli_actor(),
            &csv,
            &csv.guess_mapping(),
            &options,
            &progress,
        )
        .map_err(describe);
        progress.finish();
        let report = report?;
        if let Some(path) = refused {
            write_refused_rows(&csv, &report, &path)?;
        }
        Ok(report)
    })?;
    print!("{}", import_progress::describe_report(&report));
    if !report.complete() {
        std::process::exit(1);
    }
    Ok(())
}

fn write_refused_rows(
    csv: &imports::CsvFile,
    report: &imports::Report,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let rows = imports::refused_rows_csv(csv, &report.refusals, referdesk::web::customers::export::defuse)
        .map_err(describe)?;
    std::fs::write(path, rows).with_context(|| format!("could not write {}", path.display()))
}

/// `token create`: the secret goes to stdout, once.
fn create_token(config: &Config, program: String, name: String) -> anyhow::Result<()> {
    with_database(config, move |conn, _| {
        let program = find_program(conn, &program)?;
        let (_, secret) = tokens::create(conn, program.id, &name, &cli_actor()).map_err(describe)?;
        eprintln!(
            "Created API token {name:?} for program {:?}. It is shown only now:",
            program.slug
        );
        println!("{secret}");
        Ok(())
    })
}

/// Turns a domain error into a message for the terminal, naming each invalid field.
fn describe(error: Error) -> anyhow::Error {
    match error.field_errors() {
        Some(fields) => anyhow::anyhow!(
            "{}",
            fields
                .iter()
                .map(|(field, messages)| format!("{field}: {}", messages.join(" ")))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        None => anyhow::anyhow!("{error}"),
    }
}

/// Runs a task against the migrated database (starting the embedded cluster if needed),
/// with a connection and the database's URL (for more).
fn with_database<T>(
    config: &Config,
    task: impl FnOnce(&mut PgConnection, &str) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let (url, _cluster) = resolve_database(config)?;
    prepare_database(&config.direct_url(&url))?;
    let mut conn = PgConnection::establish(&url).context("could not connect to the database")?;
    task(&mut conn, &url)
}

fn serve(config: Config) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(config.clone()).await?;
        tracing::info!(
            "Referdesk is listening on {} (open {})",
            config.bind,
            config.public_url
        );
        if let Some(url) = &app.setup_url {
            tracing::warn!(
                "No team member exists yet. Create the first admin here (valid 24 hours, once): {url}"
            );
            println!("\n  First run: create the first admin at\n  {url}\n");
        }
        app.run_until_stopped().await?;
        Ok(())
    })
}
