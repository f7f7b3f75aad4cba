//! The `vaultcall` command line. Exit codes: 0 clean, 64 usage, 78 config invalid,
//! 1 runtime failure; failures print one line on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use vaultcall::app::{self, ConfigSource, Failure, exit};
use vaultcall::config::{Config, LogLevel, LogTarget};
use vaultcall::records::cli as records;

#[derive(Debug, Parser)]
#[command(
    name = "vaultcall",
    version,
    about = "On-prem AI outbound-call appliance: SIP, local Mandarin speech, call scripts, encrypted recordings"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the daemon (embedded defaults unless --config is given).
    Serve {
        /// Config file (the package uses /etc/vaultcall/vaultcall.toml).
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a config file: exit 0 if usable, 78 naming the first bad key.
    CheckConfig {
        /// The file to check.
        path: PathBuf,
    },
    /// Print version and build information.
    Version,
    /// Call scripts (话术): validate, simulate, import, publish, list, export.
    Script {
        #[command(subcommand)]
        cmd: ScriptCmd,
    },
    /// Place one test call through a trunk: play a WAV, record both legs, print the SIP flow,
    /// the outcome and media statistics.
    Dial {
        #[command(flatten)]
        args: vaultcall::dial::DialArgs,
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// SIP trunks: registration and keepalive state as the running daemon sees it.
    Trunk {
        #[command(subcommand)]
        cmd: TrunkCmd,
    },
    /// Admin API tokens and TLS certificates.
    Admin {
        #[command(subcommand)]
        cmd: AdminCmd,
    },
    /// Transcribe recordings (WAV; stereo: the customer on the left), split by VAD, for
    /// quality inspection. Each file is recorded in the history table (not its text).
    Transcribe {
        /// Business terms to correct towards (one per line).
        #[arg(long)]
        hotwords: Option<PathBuf>,
        /// Inverse text normalisation (三千五百元 → 3500元); default: speech.asr.itn.
        #[arg(long, value_enum)]
        itn: Option<OnOff>,
        /// Output format.
        #[arg(long, value_enum, default_value = "json")]
        format: vaultcall::speechctl::Format,
        /// Write one file per recording here (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
        /// The recordings.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Synthesise Mandarin speech to a WAV file.
    Say {
        #[command(flatten)]
        args: vaultcall::speechctl::SayArgs,
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Speech quality and speed benchmarks (docs/benchmarks.md).
    #[command(hide = true)]
    BenchSpeech {
        /// Which parts: quality, speed, tts (default: all).
        #[arg(long)]
        only: Option<String>,
        /// Utterances of the dev set to use (default: all).
        #[arg(long)]
        limit: Option<usize>,
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Erase a data subject (crypto-shredding) and print the signed deletion receipt.
    Erase {
        /// The phone number, or `-` to read it from stdin (keeps it out of ps and shell history).
        #[arg(
            long,
            conflicts_with = "subject_id",
            required_unless_present = "subject_id"
        )]
        phone: Option<String>,
        /// The data subject id instead of a number.
        #[arg(long)]
        subject_id: Option<i64>,
        /// The bank's ticket reference (no personal data).
        #[arg(long)]
        ticket: String,
        /// Why (no personal data).
        #[arg(long)]
        reason: String,
        /// Write the receipt to this new file (0600) instead of stdout.
        #[arg(long)]
        receipt_out: Option<PathBuf>,
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The suppression (do-not-call) list: add, check, lift on re-recorded consent, counts.
    Suppression {
        #[command(subcommand)]
        cmd: SuppressionCmd,
    },
    /// Check a deletion receipt's signature offline.
    VerifyReceipt {
        /// The receipt file.
        file: PathBuf,
        /// The appliance's public key: the output of `keys show-public` (or a file holding it),
        /// its 64 hex digits, or its PEM. Without it, the key stored in the local database.
        #[arg(long)]
        public_key: Option<String>,
        /// Config file (to find the local database when --public-key is not given).
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Keys: the receipt-verification key, master-key rotation.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// The hash-chained audit log.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Retention of personal data.
    Retention {
        #[command(subcommand)]
        cmd: RetentionCmd,
    },
    /// Development tools (synthetic calls for tests and demos).
    #[command(hide = true)]
    Dev {
        #[command(subcommand)]
        cmd: DevCmd,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
enum SuppressionCmd {
    /// Put a number on the suppression list so it is never dialled (idempotent).
    Add {
        /// The phone number, or `-` to read it from stdin (keeps it out of ps and shell history).
        #[arg(long)]
        phone: String,
        /// Why (stored in clear: no personal data, never the number).
        #[arg(long)]
        reason: Option<String>,
        /// `customer_request` (the customer asked not to be called) or `operator`.
        #[arg(long, default_value = "customer_request")]
        source: String,
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Say whether a number is on the suppression list, why and since when.
    Check {
        /// The phone number, or `-` to read it from stdin.
        #[arg(long)]
        phone: String,
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Take a number off the suppression list because its consent was recorded again (an
    /// erased subject's data stays destroyed; the next call makes a fresh key).
    Lift {
        /// The phone number, or `-` to read it from stdin.
        #[arg(long)]
        phone: String,
        /// Reference of the re-recorded consent (no personal data; it goes to the audit log).
        #[arg(long)]
        consent_ref: String,
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Numbers on the list per source.
    Stats {
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCmd {
    /// Print the Ed25519 public key that verifies deletion receipts.
    ShowPublic {
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Re-wrap every data key under a new master key (daemon stopped); safe to interrupt and
    /// run again. Creates the new key file (0600) if it does not exist, then replaces
    /// vault.master_key_file with it, keeping the old key as <file>.retired-<id>.
    Rotate {
        /// The new master key file.
        #[arg(long)]
        new_key: PathBuf,
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
        /// Keys re-wrapped per transaction.
        #[arg(long, default_value_t = 500, hide = true)]
        batch_size: usize,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCmd {
    /// Verify the hash chain (and checkpoints from the journal); says where it breaks.
    Verify {
        /// A checkpoint `ID:HASH` from an "audit log checkpoint" journal line (repeatable).
        #[arg(long = "checkpoint")]
        checkpoints: Vec<String>,
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Export entries as JSON Lines for a SIEM.
    Export {
        /// Entries at or after this time: YYYY-MM-DD (UTC) or RFC 3339.
        #[arg(long)]
        since: String,
        /// Write to this new file (0600) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum RetentionCmd {
    /// Run one retention sweep now (the daemon runs one at start and daily).
    Sweep {
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum DevCmd {
    /// Record a synthetic call for the number on stdin through the vault.
    Record {
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
        /// Seconds of audio.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// Delay after each 20 ms frame (20 = real time).
        #[arg(long, default_value_t = 0)]
        pace_ms: u64,
        /// Transcript turns.
        #[arg(long, default_value_t = 4)]
        turns: u32,
    },
}

#[derive(Debug, Subcommand)]
enum ScriptCmd {
    /// Check a script file: exit 0, or 78 with every problem listed on stdout.
    Validate {
        /// The script file (TOML).
        file: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Try a script in a text console, or run a transcript and print JSON.
    Simulate {
        /// The script file (TOML).
        file: PathBuf,
        /// Variables, e.g. name=张先生,amount=3200.
        #[arg(long)]
        vars: Option<String>,
        /// Customer turns, one per line (text, /silence, /dtmf 1, /hangup, /wait 5).
        #[arg(long)]
        transcript: Option<PathBuf>,
    },
    /// Validate a script file and store it as the draft of its key.
    Import {
        /// The script file (TOML).
        file: PathBuf,
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Publish the draft of a script (immutable from then on).
    Publish {
        /// Script key.
        key: String,
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// List stored script versions.
    List {
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a stored version exactly as imported (published one by default).
    Export {
        /// Script key.
        key: String,
        /// Version number.
        #[arg(long)]
        version: Option<i64>,
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print the JSON Schema of the script format.
    Schema,
}

#[derive(Debug, Subcommand)]
enum TrunkCmd {
    /// Each configured trunk with its registration and OPTIONS keepalive state (exit 69 when
    /// the daemon is not running).
    Status {
        /// Print the daemon's snapshot as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCmd {
    /// Create the first admin token and print it once.
    Bootstrap {
        /// Config file (defaults to the embedded defaults).
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
        /// A label for the token.
        #[arg(long, default_value = "bootstrap admin")]
        name: String,
        /// Create another admin token even if one is active.
        #[arg(long)]
        force: bool,
        /// Print only the token (for scripts).
        #[arg(long)]
        token_only: bool,
    },
    /// List tokens (never their secrets).
    Tokens {
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Revoke a token by id.
    Revoke {
        /// Token id (the 10 hex digits after `vct_`).
        id: String,
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Write a self-signed certificate and key for the admin API.
    SelfSigned {
        /// Directory for admin-cert.pem and admin-key.pem.
        #[arg(long)]
        out_dir: PathBuf,
        /// DNS name or IP address the certificate is for (repeatable).
        #[arg(long = "name", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])]
        names: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

fn source(config: Option<PathBuf>) -> ConfigSource {
    config.map_or(ConfigSource::Embedded, ConfigSource::File)
}

/// CLI commands log warnings and errors to stderr only; stdout carries their output.
fn quiet_logging() {
    let _ = vaultcall::telemetry::init(LogLevel::Warn, LogTarget::Stderr);
    // SAFETY: umask only changes this process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

fn with_config(config: Option<PathBuf>) -> Result<Config, Failure> {
    quiet_logging();
    app::load_config(&source(config))
}

fn run(cli: Cli) -> Result<String, Failure> {
    match cli.cmd {
        Cmd::Serve { config } => app::serve(source(config)).map(|()| String::new()),
        Cmd::CheckConfig { path } => {
            quiet_logging();
            let cfg = Config::load(&path)?;
            if let Some(t) = &cfg.admin.tls {
                let dir = cfg.resolve_paths(&|k| std::env::var(k).ok()).data_dir;
                vaultcall::admin::tls::load_certified_key(
                    &vaultcall::config::under(&dir, &t.cert_file),
                    &vaultcall::config::under(&dir, &t.key_file),
                )
                .map_err(Failure::config)?;
            }
            Ok(format!("config ok: {}\n", path.display()))
        }
        Cmd::Version => Ok(format!(
            "vaultcall {} (commit {}, database schema {})\n",
            env!("CARGO_PKG_VERSION"),
            option_env!("VAULTCALL_GIT_COMMIT").unwrap_or("unknown"),
            vaultcall::store::migrate::latest_version()
        )),
        Cmd::Script { cmd } => {
            use vaultcall::scriptctl::{self, lifecycle, simulate};
            match cmd {
                ScriptCmd::Validate { file, json } => {
                    quiet_logging();
                    scriptctl::validate_cmd(&file, json)
                }
                ScriptCmd::Simulate {
                    file,
                    vars,
                    transcript,
                } => {
                    quiet_logging();
                    simulate::simulate_cmd(&file, vars.as_deref(), transcript.as_deref())
                }
                ScriptCmd::Import { file, config } => {
                    lifecycle::import_cmd(&with_config(config)?, &file)
                }
                ScriptCmd::Publish { key, config } => {
                    lifecycle::publish_cmd(&with_config(config)?, &key)
                }
                ScriptCmd::List { config } => lifecycle::list_cmd(&with_config(config)?),
                ScriptCmd::Export {
                    key,
                    version,
                    config,
                } => lifecycle::export_cmd(&with_config(config)?, &key, version),
                ScriptCmd::Schema => Ok(vaultcall::conversation::Script::json_schema()),
            }
        }
        Cmd::Dial { args, config } => vaultcall::dial::run(&with_config(config)?, &args),
        Cmd::Trunk {
            cmd: TrunkCmd::Status { json, config },
        } => vaultcall::runtime::trunk_state::status_cmd(&with_config(config)?, json),
        Cmd::Transcribe {
            hotwords,
            itn,
            format,
            out,
            config,
            files,
        } => vaultcall::speechctl::transcribe_cmd(
            &with_config(config)?,
            &vaultcall::speechctl::TranscribeArgs {
                files,
                hotwords,
                itn: itn.map(|v| matches!(v, OnOff::On)),
                format,
                out,
            },
        ),
        Cmd::Say { args, config } => vaultcall::speechctl::say_cmd(&with_config(config)?, &args),
        Cmd::BenchSpeech {
            only,
            limit,
            config,
        } => vaultcall::speechctl::bench::run(&with_config(config)?, only.as_deref(), limit),
        Cmd::Admin { cmd } => match cmd {
            AdminCmd::Bootstrap {
                config,
                name,
                force,
                token_only,
            } => vaultcall::admin::cli::bootstrap(&with_config(config)?, &name, force, token_only),
            AdminCmd::Tokens { config } => vaultcall::admin::cli::list(&with_config(config)?),
            AdminCmd::Revoke { id, config } => {
                vaultcall::admin::cli::revoke(&with_config(config)?, &id)
            }
            AdminCmd::SelfSigned {
                out_dir,
                names,
                days,
            } => {
                quiet_logging();
                vaultcall::admin::cli::self_signed(&out_dir, &names, days)
            }
        },
        Cmd::Erase {
            phone,
            subject_id,
            ticket,
            reason,
            receipt_out,
            config,
        } => records::erase(
            &with_config(config)?,
            phone.as_deref(),
            subject_id,
            &ticket,
            &reason,
            receipt_out.as_deref(),
        ),
        Cmd::Suppression { cmd } => match cmd {
            SuppressionCmd::Add {
                phone,
                reason,
                source,
                config,
            } => {
                records::suppression_add(&with_config(config)?, &phone, &source, reason.as_deref())
            }
            SuppressionCmd::Check { phone, config } => {
                records::suppression_check(&with_config(config)?, &phone)
            }
            SuppressionCmd::Lift {
                phone,
                consent_ref,
                config,
            } => records::suppression_lift(&with_config(config)?, &phone, &consent_ref),
            SuppressionCmd::Stats { config } => records::suppression_stats(&with_config(config)?),
        },
        Cmd::VerifyReceipt {
            file,
            public_key,
            config,
        } => {
            quiet_logging();
            let cfg = match (&public_key, config) {
                (None, c) => Some(app::load_config(&source(c))?),
                (Some(_), _) => None,
            };
            records::verify_receipt(&file, public_key.as_deref(), cfg.as_ref())
        }
        Cmd::Keys { cmd } => match cmd {
            KeysCmd::ShowPublic { config } => records::show_public(&with_config(config)?),
            KeysCmd::Rotate {
                new_key,
                config,
                batch_size,
            } => records::rotate(&with_config(config)?, &new_key, batch_size),
        },
        Cmd::Audit { cmd } => match cmd {
            AuditCmd::Verify {
                checkpoints,
                config,
            } => vaultcall::admin::cli::audit_verify(&with_config(config)?, &checkpoints),
            AuditCmd::Export { since, out, config } => {
                vaultcall::admin::cli::audit_export(&with_config(config)?, &since, out.as_deref())
            }
        },
        Cmd::Retention { cmd } => match cmd {
            RetentionCmd::Sweep { config } => records::retention_sweep(&with_config(config)?),
        },
        Cmd::Dev { cmd } => match cmd {
            DevCmd::Record {
                config,
                seconds,
                pace_ms,
                turns,
            } => records::dev_record(&with_config(config)?, seconds, pace_ms, turns),
        },
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::from(exit::OK)
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    ExitCode::from(exit::USAGE)
                }
                _ => {
                    let text = e.render().to_string();
                    let first = text.lines().next().unwrap_or("invalid usage").trim();
                    eprintln!("vaultcall: {first} (see vaultcall --help)");
                    ExitCode::from(exit::USAGE)
                }
            };
        }
    };
    match run(cli) {
        Ok(out) => {
            print!("{out}");
            ExitCode::from(exit::OK)
        }
        Err(f) => {
            eprintln!("vaultcall: {}", f.message.replace('\n', " "));
            ExitCode::from(f.code)
        }
    }
}
