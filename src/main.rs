//! The `vaultcall` command line. Exit codes: 0 clean, 64 usage, 78 config invalid,
//! 1 runtime failure; failures print one line on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use vaultcall::app::{self, ConfigSource, Failure, exit};
use vaultcall::config::{Config, LogLevel, LogTarget};

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
        /// The number to call.
        number: String,
        /// Trunk name (default: the first [[sip.trunks]]).
        #[arg(long)]
        trunk: Option<String>,
        /// WAV file to play when answered (16-bit PCM, any rate; resampled to 8 kHz).
        #[arg(long)]
        play: Option<PathBuf>,
        /// Stereo WAV to record (left customer, right robot).
        #[arg(long)]
        record: Option<PathBuf>,
        /// Hang up this many seconds after the answer.
        #[arg(long)]
        seconds: Option<f64>,
        /// DTMF digits to send (RFC 4733) one second after the answer.
        #[arg(long)]
        dtmf: Option<String>,
        /// Transfer the answered call to this SIP URI (REFER, 转人工) one second after the answer.
        #[arg(long)]
        transfer: Option<String>,
        /// Config file.
        #[arg(long, short, env = "VAULTCALL_CONFIG")]
        config: Option<PathBuf>,
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
        /// The text.
        text: String,
        /// Voice (default: speech.tts.voice).
        #[arg(long)]
        voice: Option<String>,
        /// Output WAV file.
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// Sample rate of the file (8000 for the phone).
        #[arg(long, default_value_t = 24_000)]
        rate: u32,
        /// Speaking rate (default: speech.tts.speed).
        #[arg(long)]
        speed: Option<f64>,
        /// Also print the pinyin (after normalisation and tone sandhi) and Kokoro phonemes.
        #[arg(long)]
        show_pinyin: bool,
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
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
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
        Cmd::Dial {
            number,
            trunk,
            play,
            record,
            seconds,
            dtmf,
            transfer,
            config,
        } => {
            let cfg = with_config(config)?;
            vaultcall::dial::run(
                &cfg,
                &vaultcall::dial::DialArgs {
                    number,
                    trunk,
                    play,
                    record,
                    seconds,
                    dtmf,
                    transfer,
                },
            )
        }
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
        Cmd::Say {
            text,
            voice,
            out,
            rate,
            speed,
            show_pinyin,
            config,
        } => vaultcall::speechctl::say_cmd(
            &with_config(config)?,
            &vaultcall::speechctl::SayArgs {
                text,
                voice,
                out,
                rate,
                speed,
                show_pinyin,
            },
        ),
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
