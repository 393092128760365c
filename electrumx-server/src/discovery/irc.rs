//! IRC advertising, as ElectrumX did from November 2016 until peer discovery replaced it:
//! the server joins its coin's channel with a nick made of the coin's prefix, and carries
//! its identity (`"<host> v<protocol> s<ssl port> t<tcp port>"`) as its IRC real name.
//! Other servers on the channel are found with `WHO` and handed on as [`IrcPeer`]s.
//!
//! One task per [`Advertiser`]: connect (TCP, or TLS with `IRC_TLS`), register, join,
//! answer `PING`, rejoin after a `KICK` or a lost channel, and reconnect with capped
//! exponential backoff after a failure; `QUIT` on shutdown. Lines from the IRC server are
//! untrusted: a malformed one is logged and skipped.

use crate::config::{Resolved, Settings};
use crate::protocol::framing::{Line, LineReader};
use crate::services::{self, Protocol};
use bitcoin::hashes::{Hash, sha256d};
use electrumx_core::SyncStatus;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{
    self,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};
use tokio_util::sync::CancellationToken;

/// Longest line accepted from the IRC server (512 bytes by RFC 1459, plus up to 8191 bytes
/// of IRCv3 message tags); longer lines are skipped.
pub const MAX_LINE: usize = 8192 + 512;
/// How long a TCP connect plus TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long registration (until the server's welcome) may take.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one write may take before the connection counts as dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Silence after which we `PING` the server ourselves.
const PING_AFTER: Duration = Duration::from_secs(120);
/// Silence after which the connection counts as dead.
const DEAD_AFTER: Duration = Duration::from_secs(240);
/// A `JOIN` not confirmed within this time is sent again.
const JOIN_RETRY: Duration = Duration::from_secs(60);
/// A connection registered for this long was healthy: the next reconnect starts the
/// backoff afresh.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How long the task may take to say goodbye once shut down.
const QUIT_GRACE: Duration = Duration::from_secs(3);
/// Nick-in-use retries (`<nick>_1`, `<nick>_2`, …) before giving up on a connection.
const MAX_NICK_TRIES: u32 = 20;

/// A server found on the channel: its nick, and the real name it advertises without the
/// hop count, e.g. `"electrum.example.com v1.4 s50002 t50001"` (ElectrumX's real-name
/// format, the host followed by its features).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrcPeer {
    /// The peer's IRC nick (starts with the coin's prefix).
    pub nick: String,
    /// `"<host> <features>…"` as advertised.
    pub real_name: String,
}

/// Everything an [`Advertiser`] needs: where to connect, who to be, where to be seen.
#[derive(Clone, Debug)]
pub struct IrcConfig {
    /// IRC server host name or address (`IRC_SERVER`).
    pub server: String,
    /// IRC server port (`IRC_PORT`).
    pub port: u16,
    /// Connect over TLS (`IRC_TLS`).
    pub tls: bool,
    /// Channel to join (`IRC_CHANNEL`).
    pub channel: String,
    /// The coin's nick prefix: other servers are the nicks starting with it.
    pub prefix: String,
    /// Our nick: the prefix plus `IRC_NICK` or a hash of the advertised host.
    pub nick: String,
    /// Our IRC real name, in [`services::real_name`]'s format.
    pub real_name: String,
    /// First delay before reconnecting.
    pub min_backoff: Duration,
    /// Longest delay before reconnecting.
    pub max_backoff: Duration,
    /// Delay before rejoining after a `KICK` or `PART`.
    pub rejoin_delay: Duration,
}

impl IrcConfig {
    /// The IRC configuration from the settings, `None` when `IRC` is off. Fails with a
    /// message naming the setting at fault: a bad `IRC_NICK`, `IRC_SERVER` or
    /// `IRC_CHANNEL`, or nothing to advertise (no client
    /// service in `SERVICES`, no clearnet `tcp://`/`ssl://` service in `REPORT_SERVICES`).
    pub fn from_settings(
        settings: &Settings,
        resolved: &Resolved,
    ) -> Result<Option<IrcConfig>, String> {
        if !settings.irc {
            return Ok(None);
        }
        let tls = settings.irc_tls;
        let coin = &resolved.coin;
        if !resolved
            .services
            .iter()
            .any(|s| !matches!(s.protocol, Protocol::Rpc | Protocol::Metrics))
        {
            return Err(
                "IRC: SERVICES offers no client service, so there is nothing to advertise".into(),
            );
        }
        if resolved.report_services.is_empty() {
            return Err(
                "IRC: REPORT_SERVICES is empty; IRC advertises the host and ports given there"
                    .into(),
            );
        }
        let protocol_max = crate::protocol::version::MAX;
        let (host, real_name) = services::advertised_host(&resolved.report_services)
            .zip(services::real_name(
                &resolved.report_services,
                protocol_max,
            ))
            .ok_or(
                "IRC: REPORT_SERVICES has no tcp:// or ssl:// service with a clearnet host to advertise",
            )?;
        let nick = match settings.irc_nick.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => {
                if !valid_nick(n) {
                    return Err(format!(
                        "IRC_NICK: {n:?} is not a valid IRC nick (letters, digits and -[]\\`^_{{|}} only)"
                    ));
                }
                format!("{}{n}", coin.irc_prefix)
            }
            _ => hashed_nick(coin.irc_prefix, host),
        };
        let server = settings
            .irc_server
            .clone()
            .unwrap_or_else(|| coin.irc_server.to_string());
        if server.is_empty() || server.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("IRC_SERVER: {server:?} is not a host name"));
        }
        if tls {
            ServerName::try_from(server.clone()).map_err(|e| {
                format!("IRC_SERVER: {server:?} is not a name TLS can verify ({e})")
            })?;
        }
        let channel = settings
            .irc_channel
            .clone()
            .unwrap_or_else(|| coin.irc_channel.to_string());
        if !valid_channel(&channel) {
            return Err(format!(
                "IRC_CHANNEL: {channel:?} is not a channel name (#name or &name, at most 50 bytes, no spaces or commas)"
            ));
        }
        Ok(Some(IrcConfig {
            server,
            port: settings.irc_port.unwrap_or(if tls { 6697 } else { 6667 }),
            tls,
            channel,
            prefix: coin.irc_prefix.to_string(),
            nick,
            real_name,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            rejoin_delay: Duration::from_secs(5),
        }))
    }
}

/// ElectrumX's default nick: `prefix` and the first 5 bytes (10 hex digits) of the double
/// SHA-256 of `host`.
pub fn hashed_nick(prefix: &str, host: &str) -> String {
    let digest = sha256d::Hash::hash(host.as_bytes()).to_byte_array();
    format!("{prefix}{}", const_hex::encode(&digest[..5]))
}

/// Whether `s` may be (the part after the prefix of) an IRC nick: RFC 2812 characters.
fn valid_nick(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-[]\\`^_{|}".contains(&b))
}

/// Whether `s` is a channel name we can send safely.
fn valid_channel(s: &str) -> bool {
    (s.starts_with('#') || s.starts_with('&'))
        && s.len() >= 2
        && s.len() <= 50
        && !s
            .chars()
            .any(|c| c == ' ' || c == ',' || c == ':' || c.is_control())
}

/// Why a line from the IRC server could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing but whitespace (or message tags).
    Empty,
    /// A prefix with no command after it.
    NoCommand,
    /// The command is neither a word nor a three-digit numeric.
    BadCommand,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Empty => "empty line",
            ParseError::NoCommand => "no command",
            ParseError::BadCommand => "invalid command",
        })
    }
}

impl std::error::Error for ParseError {}

/// One IRC message: `[@tags] [:prefix] COMMAND params… [:trailing]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The source (`nick!user@host` or a server name), without the colon.
    pub prefix: Option<&'a str>,
    /// The command as sent (`PRIVMSG`, `352`, …).
    pub command: &'a str,
    /// The parameters; the trailing one (after ` :`) is the last, spaces and all.
    pub params: Vec<&'a str>,
}

impl<'a> Message<'a> {
    /// The nick of the source: the prefix up to `!` or `@`.
    pub fn nick(&self) -> Option<&'a str> {
        let p = self.prefix?;
        let end = p.find(['!', '@']).unwrap_or(p.len());
        Some(&p[..end]).filter(|n| !n.is_empty())
    }

    /// Parameter `i`, if present.
    pub fn param(&self, i: usize) -> Option<&'a str> {
        self.params.get(i).copied()
    }
}

/// Parses one line (with or without its CR LF). IRCv3 message tags are skipped.
pub fn parse_line(line: &str) -> Result<Message<'_>, ParseError> {
    let mut rest = line.trim_end_matches(['\r', '\n']).trim_start_matches(' ');
    if rest.starts_with('@') {
        rest = rest.split_once(' ').map(|(_, r)| r).unwrap_or("");
        rest = rest.trim_start_matches(' ');
    }
    if rest.is_empty() {
        return Err(ParseError::Empty);
    }
    let prefix = match rest.strip_prefix(':') {
        Some(r) => {
            let (p, r) = r.split_once(' ').ok_or(ParseError::NoCommand)?;
            rest = r.trim_start_matches(' ');
            Some(p)
        }
        None => None,
    };
    let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
    if command.is_empty() {
        return Err(ParseError::NoCommand);
    }
    if !command.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ParseError::BadCommand);
    }
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        if let Some(trailing) = rest.strip_prefix(':') {
            params.push(trailing);
            break;
        }
        match rest.split_once(' ') {
            Some((p, r)) => {
                params.push(p);
                rest = r;
            }
            None => {
                params.push(rest);
                break;
            }
        }
    }
    Ok(Message {
        prefix,
        command,
        params,
    })
}

/// A server found by an `RPL_WHOREPLY` (352) line, if it is one of ours: params are
/// `<me> <channel> <user> <host> <server> <nick> <flags> :<hopcount> <real name>`; the nick
/// must start with `prefix`. The hop count is dropped from the real name.
pub fn who_reply_peer(msg: &Message<'_>, prefix: &str) -> Option<IrcPeer> {
    let nick = msg.param(5)?;
    let trailing = msg.param(7)?;
    if !nick.starts_with(prefix) {
        return None;
    }
    let (_hops, real_name) = trailing.trim().split_once(' ')?;
    let real_name = real_name.trim();
    (!real_name.is_empty()).then(|| IrcPeer {
        nick: nick.to_string(),
        real_name: real_name.to_string(),
    })
}

/// Why a connection to the IRC server ended.
#[derive(Debug)]
pub enum IrcError {
    /// Connecting, reading or writing failed (TLS handshake errors included).
    Io(std::io::Error),
    /// The TLS setup failed (no CA certificates).
    Tls(String),
    /// The server closed the connection, or sent `ERROR`.
    Closed(String),
    /// The server refused every nick we tried.
    Nick(String),
    /// A step took too long (named).
    Timeout(&'static str),
}

impl fmt::Display for IrcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IrcError::Io(e) => write!(f, "{e}"),
            IrcError::Tls(e) => write!(f, "TLS: {e}"),
            IrcError::Closed(why) => f.write_str(why),
            IrcError::Nick(why) => write!(f, "nick refused: {why}"),
            IrcError::Timeout(what) => write!(f, "timed out {what}"),
        }
    }
}

impl std::error::Error for IrcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IrcError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for IrcError {
    fn from(e: std::io::Error) -> Self {
        IrcError::Io(e)
    }
}

/// A TLS connector trusting the system's CA certificates: the PEM bundle named by
/// `SSL_CERT_FILE`, else the first bundle found at the usual Linux/BSD paths.
pub fn system_tls_connector() -> Result<TlsConnector, IrcError> {
    const BUNDLES: [&str; 5] = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ];
    let path = match std::env::var_os("SSL_CERT_FILE") {
        Some(p) => std::path::PathBuf::from(p),
        None => BUNDLES
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                IrcError::Tls(format!(
                    "no CA certificate bundle found (looked at {}); set SSL_CERT_FILE",
                    BUNDLES.join(", ")
                ))
            })?,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| IrcError::Tls(format!("{}: {e}", path.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(IrcError::Tls(format!(
            "{}: no usable CA certificate",
            path.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| IrcError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Checks the IRC settings (`None` when `IRC` is off) and prepares the advertiser: call
/// before the index is opened, so a bad setting stops the start at once. Fails with a
/// message naming the setting at fault. Discovered peers go to `peers` (with `None` they
/// are only logged).
pub fn prepare(
    settings: &Settings,
    resolved: &Resolved,
    peers: Option<UnboundedSender<IrcPeer>>,
) -> Result<Option<Advertiser>, String> {
    let Some(config) = IrcConfig::from_settings(settings, resolved)? else {
        return Ok(None);
    };
    // Without a consumer the receiver is dropped at once and sends fail quietly.
    let peers = peers.unwrap_or_else(|| tokio::sync::mpsc::unbounded_channel().0);
    let advertiser = Advertiser::new(config, peers).map_err(|e| match e {
        IrcError::Tls(m) => format!("IRC_TLS: {m}"),
        other => format!("IRC: {other}"),
    })?;
    Ok(Some(advertiser))
}

/// Spawns a task that waits until the index has caught up (so that what is advertised is
/// being served) and then advertises until `shutdown`. The task ends at most 3 s after
/// `shutdown` (after its `QUIT`): await it before exiting.
pub fn start(
    advertiser: Advertiser,
    mut status: watch::Receiver<SyncStatus>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if !status.borrow().caught_up {
            tracing::info!("IRC: advertising starts once the index has caught up");
        }
        let caught_up = tokio::select! {
            _ = shutdown.cancelled() => false,
            r = status.wait_for(|s| s.caught_up || s.stopped) => r.map(|s| s.caught_up).unwrap_or(false),
        };
        if caught_up {
            // Once shut down, the QUIT gets a moment, not more (a write may hang).
            let grace = async {
                shutdown.cancelled().await;
                tokio::time::sleep(QUIT_GRACE).await;
            };
            tokio::select! {
                _ = advertiser.run(shutdown.clone()) => {}
                _ = grace => tracing::debug!("IRC: no clean QUIT within {QUIT_GRACE:?}"),
            }
        }
    })
}

/// A connected byte stream, TCP or TLS.
trait IrcStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> IrcStream for T {}

/// Advertises one identity on one IRC server, reconnecting until shut down.
pub struct Advertiser {
    config: IrcConfig,
    peers: UnboundedSender<IrcPeer>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Advertiser {
    /// An advertiser for `config`, sending the peers it finds to `peers` (never blocking;
    /// a closed channel is ignored). Fails if TLS is asked for but cannot be set up.
    pub fn new(config: IrcConfig, peers: UnboundedSender<IrcPeer>) -> Result<Self, IrcError> {
        let tls = if config.tls {
            let name = ServerName::try_from(config.server.clone())
                .map_err(|e| IrcError::Tls(format!("server name {:?}: {e}", config.server)))?;
            Some((system_tls_connector()?, name))
        } else {
            None
        };
        Ok(Advertiser { config, peers, tls })
    }

    /// Connects, advertises and reconnects after failures (waiting `min_backoff`, doubling
    /// up to `max_backoff`; afresh after a connection that was healthy) until `shutdown`,
    /// when it sends `QUIT` and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let c = &self.config;
        let mut delay = c.min_backoff;
        loop {
            let target = format!(
                "{}:{}{}",
                c.server,
                c.port,
                if c.tls { " (TLS)" } else { "" }
            );
            tracing::info!("IRC: connecting to {target}");
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.connect() => r,
            };
            match stream {
                Ok(stream) => {
                    tracing::info!("IRC: connected to {target}; registering as {}", c.nick);
                    let (reader, writer) = tokio::io::split(stream);
                    let mut lines = LineReader::new(reader, MAX_LINE);
                    let mut session = Session::new(c, &self.peers, writer);
                    let outcome = session.run(&mut lines, &shutdown).await;
                    let registered_for = session.registered_at.map(|t| t.elapsed());
                    let Err(e) = outcome else {
                        tracing::info!("IRC: left {target} (shutting down)");
                        return;
                    };
                    if registered_for.is_some_and(|d| d >= STABLE_AFTER) {
                        delay = c.min_backoff;
                    }
                    tracing::warn!(
                        "IRC: disconnected from {target}: {e}; reconnecting in {}s",
                        delay.as_secs_f64()
                    );
                }
                Err(e) => tracing::warn!(
                    "IRC: cannot connect to {target}: {e}; retrying in {}s",
                    delay.as_secs_f64()
                ),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(c.max_backoff);
        }
    }

    async fn connect(&self) -> Result<Box<dyn IrcStream>, IrcError> {
        let c = &self.config;
        let connect = async {
            let tcp = TcpStream::connect((c.server.as_str(), c.port)).await?;
            let _ = tcp.set_nodelay(true);
            Ok::<Box<dyn IrcStream>, IrcError>(match &self.tls {
                None => Box::new(tcp),
                Some((connector, name)) => Box::new(connector.connect(name.clone(), tcp).await?),
            })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| IrcError::Timeout("connecting"))?
    }
}

/// The lines read from a connection.
type Lines = LineReader<ReadHalf<Box<dyn IrcStream>>>;

/// One connection: registration, the channel, and the timers.
struct Session<'a> {
    config: &'a IrcConfig,
    peers: &'a UnboundedSender<IrcPeer>,
    writer: WriteHalf<Box<dyn IrcStream>>,
    /// Our nick as the server knows it (the configured one, or with a suffix).
    nick: String,
    nick_tries: u32,
    connected_at: Instant,
    registered_at: Option<Instant>,
    /// Whether the server confirmed our `JOIN`.
    joined: bool,
    /// When to send `JOIN` (again), if we are not in the channel.
    join_at: Option<Instant>,
    last_rx: Instant,
    pinged: bool,
}

impl<'a> Session<'a> {
    fn new(
        config: &'a IrcConfig,
        peers: &'a UnboundedSender<IrcPeer>,
        writer: WriteHalf<Box<dyn IrcStream>>,
    ) -> Self {
        let now = Instant::now();
        Session {
            config,
            peers,
            writer,
            nick: config.nick.clone(),
            nick_tries: 0,
            connected_at: now,
            registered_at: None,
            joined: false,
            join_at: None,
            last_rx: now,
            pinged: false,
        }
    }

    /// Reads `lines` until the connection fails (`Err`) or `shutdown` (`Ok`, after `QUIT`).
    async fn run(
        &mut self,
        lines: &mut Lines,
        shutdown: &CancellationToken,
    ) -> Result<(), IrcError> {
        self.send(&format!("NICK {}", self.nick)).await?;
        let user = format!("USER electrumx 0 * :{}", self.config.real_name);
        self.send(&user).await?;
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.quit().await;
                    return Ok(());
                }
                line = lines.next_line() => match line {
                    Ok(Line::Eof) => return Err(IrcError::Closed("connection closed by the server".into())),
                    Err(e) => return Err(IrcError::Io(e)),
                    Ok(Line::TooLong) => {
                        tracing::warn!("IRC: skipped a line longer than {MAX_LINE} bytes");
                    }
                    Ok(Line::Text(line)) => {
                        self.last_rx = Instant::now();
                        self.pinged = false;
                        self.handle(&line).await?;
                    }
                },
                _ = tokio::time::sleep_until(deadline) => self.on_timer().await?,
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut d = if self.pinged {
            self.last_rx + DEAD_AFTER
        } else {
            self.last_rx + PING_AFTER
        };
        if self.registered_at.is_none() {
            d = d.min(self.connected_at + REGISTER_TIMEOUT);
        }
        if let Some(j) = self.join_at {
            d = d.min(j);
        }
        d
    }

    async fn on_timer(&mut self) -> Result<(), IrcError> {
        let now = Instant::now();
        if self.registered_at.is_none() && now >= self.connected_at + REGISTER_TIMEOUT {
            return Err(IrcError::Timeout("waiting for the server's welcome"));
        }
        if now >= self.last_rx + DEAD_AFTER {
            return Err(IrcError::Timeout("waiting for data from the server"));
        }
        if !self.pinged && now >= self.last_rx + PING_AFTER {
            self.pinged = true;
            self.send("PING :keepalive").await?;
        }
        if self.join_at.is_some_and(|t| now >= t) {
            self.join().await?;
        }
        Ok(())
    }

    async fn join(&mut self) -> Result<(), IrcError> {
        self.join_at = Some(Instant::now() + JOIN_RETRY);
        self.send(&format!("JOIN {}", self.config.channel)).await
    }

    fn is_me(&self, nick: &str) -> bool {
        nick.eq_ignore_ascii_case(&self.nick)
    }

    fn is_our_channel(&self, channel: &str) -> bool {
        channel.eq_ignore_ascii_case(&self.config.channel)
    }

    async fn handle(&mut self, line: &str) -> Result<(), IrcError> {
        let msg = match parse_line(line) {
            Ok(m) => m,
            Err(ParseError::Empty) => return Ok(()),
            Err(e) => {
                tracing::warn!("IRC: skipping a malformed line ({e}): {line:?}");
                return Ok(());
            }
        };
        tracing::trace!("IRC <- {line}");
        let command = msg.command.to_ascii_uppercase();
        let c = self.config;
        match command.as_str() {
            "PING" => {
                let token = msg.param(0).unwrap_or_default();
                self.send(&format!("PONG :{token}")).await?;
            }
            // RPL_WELCOME: registered; params[0] is our nick as the server has it.
            "001" => {
                if let Some(n) = msg.param(0).filter(|n| valid_nick(n)) {
                    self.nick = n.to_string();
                }
                self.registered_at = Some(Instant::now());
                tracing::info!("IRC: registered on {} as {}", c.server, self.nick);
                self.join().await?;
            }
            // ERR_NICKNAMEINUSE, ERR_UNAVAILRESOURCE (before registration: our nick).
            "433" | "437" if self.registered_at.is_none() => {
                self.nick_tries += 1;
                if self.nick_tries > MAX_NICK_TRIES {
                    return Err(IrcError::Nick(format!(
                        "{} and {MAX_NICK_TRIES} variants are in use",
                        c.nick
                    )));
                }
                let next = format!("{}_{}", c.nick, self.nick_tries);
                tracing::warn!("IRC: nick {} is in use; trying {next}", self.nick);
                self.nick = next;
                self.send(&format!("NICK {}", self.nick)).await?;
            }
            // ERR_ERRONEUSNICKNAME: too long or refused by the server's rules.
            "432" => {
                let why = msg.params.last().copied().unwrap_or_default();
                return Err(IrcError::Nick(format!("{}: {why}", self.nick)));
            }
            "JOIN" => {
                let (Some(who), Some(channel)) = (msg.nick(), msg.param(0)) else {
                    tracing::debug!("IRC: JOIN without nick or channel: {line:?}");
                    return Ok(());
                };
                if !self.is_our_channel(channel) {
                    return Ok(());
                }
                if self.is_me(who) {
                    self.joined = true;
                    self.join_at = None;
                    tracing::info!("IRC: joined {} as {}", c.channel, self.nick);
                    self.send(&format!("WHO {}", c.channel)).await?;
                } else if who.starts_with(&c.prefix) {
                    self.send(&format!("WHO {who}")).await?;
                }
            }
            "KICK" => {
                let (Some(channel), Some(victim)) = (msg.param(0), msg.param(1)) else {
                    return Ok(());
                };
                if self.is_our_channel(channel) && self.is_me(victim) {
                    self.joined = false;
                    self.join_at = Some(Instant::now() + c.rejoin_delay);
                    tracing::warn!(
                        "IRC: kicked from {} by {} ({}); rejoining in {}s",
                        c.channel,
                        msg.nick().unwrap_or("?"),
                        msg.param(2).unwrap_or_default(),
                        c.rejoin_delay.as_secs_f64()
                    );
                }
            }
            "PART" => {
                if let (Some(who), Some(channel)) = (msg.nick(), msg.param(0))
                    && self.is_me(who)
                    && self.is_our_channel(channel)
                {
                    self.joined = false;
                    self.join_at = Some(Instant::now() + c.rejoin_delay);
                    tracing::warn!(
                        "IRC: removed from {}; rejoining in {}s",
                        c.channel,
                        c.rejoin_delay.as_secs_f64()
                    );
                }
            }
            "NICK" => {
                if let (Some(who), Some(new)) = (msg.nick(), msg.param(0))
                    && self.is_me(who)
                {
                    tracing::info!("IRC: the server renamed us from {} to {new}", self.nick);
                    self.nick = new.to_string();
                }
            }
            // RPL_WHOREPLY
            "352" => match who_reply_peer(&msg, &c.prefix) {
                Some(peer) if !self.is_me(&peer.nick) => {
                    tracing::info!("IRC: discovered peer {}: {}", peer.nick, peer.real_name);
                    // Unbounded: never blocks; nobody listening is fine.
                    let _ = self.peers.send(peer);
                }
                Some(_) => {}
                None => tracing::debug!("IRC: WHO reply not of a peer: {line:?}"),
            },
            // Cannot join: channel full, invite only, banned, bad key, no such channel, …
            "403" | "405" | "437" | "471" | "473" | "474" | "475" | "477" if !self.joined => {
                tracing::warn!(
                    "IRC: cannot join {}: {}; retrying in {}s",
                    c.channel,
                    msg.params.last().copied().unwrap_or_default(),
                    JOIN_RETRY.as_secs()
                );
            }
            "ERROR" => {
                return Err(IrcError::Closed(format!(
                    "server error: {}",
                    msg.param(0).unwrap_or_default()
                )));
            }
            _ => {}
        }
        Ok(())
    }

    /// Sends one line (CR and LF in it become spaces) and flushes.
    async fn send(&mut self, line: &str) -> Result<(), IrcError> {
        tracing::trace!("IRC -> {line}");
        let mut bytes = line.replace(['\r', '\n'], " ").into_bytes();
        bytes.extend_from_slice(b"\r\n");
        let write = async {
            self.writer.write_all(&bytes).await?;
            self.writer.flush().await
        };
        tokio::time::timeout(WRITE_TIMEOUT, write)
            .await
            .map_err(|_| IrcError::Timeout("writing to the server"))?
            .map_err(IrcError::Io)
    }

    /// Says goodbye: `QUIT`, then closes our side (TLS close_notify), briefly.
    async fn quit(&mut self) {
        let bye = async {
            self.send("QUIT :server shutting down").await?;
            self.writer.shutdown().await.map_err(IrcError::Io)
        };
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), bye).await {
            tracing::debug!("IRC: QUIT failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefix_command_params_and_trailing() {
        let m = parse_line(":nick!user@host PRIVMSG #chan :hello there\r\n").unwrap();
        assert_eq!(m.prefix, Some("nick!user@host"));
        assert_eq!(m.nick(), Some("nick"));
        assert_eq!(m.command, "PRIVMSG");
        assert_eq!(m.params, vec!["#chan", "hello there"]);

        let m = parse_line("PING :irc.example.net").unwrap();
        assert_eq!((m.prefix, m.command), (None, "PING"));
        assert_eq!(m.params, vec!["irc.example.net"]);
        let m = parse_line("PING token").unwrap();
        assert_eq!(m.params, vec!["token"]);

        // Tags skipped, several spaces, an empty trailing, a server prefix.
        let m = parse_line("@time=2024-01-01T00:00:00Z :srv  KICK  #c  E_x :").unwrap();
        assert_eq!(m.nick(), Some("srv"));
        assert_eq!(m.params, vec!["#c", "E_x", ""]);
        let m = parse_line(":E_ab!~u@h JOIN :#electrum").unwrap();
        assert_eq!(m.param(0), Some("#electrum"));
        assert_eq!(m.param(1), None);

        assert_eq!(parse_line(""), Err(ParseError::Empty));
        assert_eq!(parse_line("  \r\n"), Err(ParseError::Empty));
        assert_eq!(parse_line("@tags-only"), Err(ParseError::Empty));
        assert_eq!(parse_line(":prefix-only"), Err(ParseError::NoCommand));
        assert_eq!(parse_line(":p  "), Err(ParseError::NoCommand));
        assert_eq!(parse_line("PRIV/MSG x"), Err(ParseError::BadCommand));
        assert_eq!(
            parse_line(":p\u{e9} \u{e9}t\u{e9}"),
            Err(ParseError::BadCommand)
        );
    }

    #[test]
    fn who_reply_gives_the_peer_without_hop_count() {
        let line = ":irc.test 352 E_me #electrum ~electrum 10.0.0.1 irc.test E_0123456789 H :0 peer.example v1.4 s50002 t50001";
        let m = parse_line(line).unwrap();
        assert_eq!(m.command, "352");
        assert_eq!(
            who_reply_peer(&m, "E_"),
            Some(IrcPeer {
                nick: "E_0123456789".into(),
                real_name: "peer.example v1.4 s50002 t50001".into()
            })
        );
        // Another prefix, a human, a missing real name, too few params.
        assert_eq!(who_reply_peer(&m, "ET_"), None);
        let human = parse_line(":s 352 me #electrum u h s alice H :0 Alice A.").unwrap();
        assert_eq!(who_reply_peer(&human, "E_"), None);
        let bare = parse_line(":s 352 me #electrum u h s E_x H :0").unwrap();
        assert_eq!(who_reply_peer(&bare, "E_"), None);
        let short = parse_line(":s 352 me #electrum u h s E_x").unwrap();
        assert_eq!(who_reply_peer(&short, "E_"), None);
    }

    #[test]
    fn hashed_nick_is_prefix_and_ten_hex_digits_of_double_sha256() {
        // double_sha256(b"localhost")[:5].hex(), as ElectrumX computed it.
        let digest = sha256d::Hash::hash(b"electrum.example.com").to_byte_array();
        let nick = hashed_nick("E_", "electrum.example.com");
        assert_eq!(nick.len(), 12);
        assert_eq!(nick, format!("E_{}", const_hex::encode(&digest[..5])));
        assert_eq!(hashed_nick("E_", "localhost"), "E_26964a3cdc");
    }

    #[test]
    fn flags_and_names() {
        assert!(valid_nick("my-server[1]"));
        assert!(!valid_nick("bad nick"));
        assert!(!valid_nick("a\r\nQUIT"));
        assert!(valid_channel("#electrum-bsv"));
        assert!(!valid_channel("electrum"));
        assert!(!valid_channel("#a,#b"));
        assert!(!valid_channel("#"));
    }

    /// The advertiser against a scripted server: every step of the protocol it speaks.
    #[tokio::test]
    async fn advertiser_against_a_scripted_server() {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = IrcConfig {
            server: "127.0.0.1".into(),
            port: listener.local_addr().unwrap().port(),
            tls: false,
            channel: "#electrum".into(),
            prefix: "E_".into(),
            nick: "E_me".into(),
            real_name: "me.example v1.7 t50001".into(),
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            rejoin_delay: Duration::from_millis(10),
        };
        let (tx, mut found) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(Advertiser::new(config, tx).unwrap().run(shutdown.clone()));
        let timeout = Duration::from_secs(10);

        let (sock, _) = listener.accept().await.unwrap();
        let (r, mut w) = sock.into_split();
        let mut from = BufReader::new(r).lines();
        macro_rules! expect {
            ($from:expr, $want:expr) => {
                let got = tokio::time::timeout(timeout, $from.next_line())
                    .await
                    .expect("a line in time")
                    .unwrap();
                assert_eq!(got.as_deref(), Some($want));
            };
        }
        expect!(from, "NICK E_me");
        expect!(from, "USER electrumx 0 * :me.example v1.7 t50001");
        w.write_all(b":srv 433 * E_me :Nickname is already in use\r\n")
            .await
            .unwrap();
        expect!(from, "NICK E_me_1");
        // Malformed, non-UTF-8 and over-long lines are skipped.
        w.write_all(b":prefix-only\r\n\r\nBAD/CMD x\r\n:srv NOTICE * :\xff\xfe\r\n")
            .await
            .unwrap();
        w.write_all(&vec![b'x'; MAX_LINE + 10]).await.unwrap();
        w.write_all(b"\r\n:srv 001 E_me_1 :Welcome\r\n")
            .await
            .unwrap();
        expect!(from, "JOIN #electrum");
        w.write_all(b"PING :abc def\r\n").await.unwrap();
        expect!(from, "PONG :abc def");
        w.write_all(b":E_me_1!u@h JOIN #electrum\r\n")
            .await
            .unwrap();
        expect!(from, "WHO #electrum");
        w.write_all(
            b":srv 352 E_me_1 #electrum u h srv E_me_1 H :0 me.example v1.7 t50001\r\n\
              :srv 352 E_me_1 #electrum u h srv alice H :0 Alice\r\n\
              :srv 352 E_me_1 #electrum u h srv E_other H :0 other.example v1.4 s50002\r\n\
              :srv 352 E_me_1 #electrum u h srv E_bad H\r\n",
        )
        .await
        .unwrap();
        let peer = tokio::time::timeout(timeout, found.recv()).await.unwrap();
        assert_eq!(
            peer,
            Some(IrcPeer {
                nick: "E_other".into(),
                real_name: "other.example v1.4 s50002".into()
            })
        );
        w.write_all(b":alice!u@h JOIN #electrum\r\n:E_new!u@h JOIN :#electrum\r\n")
            .await
            .unwrap();
        expect!(from, "WHO E_new");
        w.write_all(b":op!u@h KICK #electrum E_me_1 :bye\r\n")
            .await
            .unwrap();
        expect!(from, "JOIN #electrum");
        assert!(found.try_recv().is_err(), "only E_other was a peer");

        // The server closes the link: reconnect, with the configured nick again.
        w.write_all(b"ERROR :Closing link\r\n").await.unwrap();
        drop((from, w));
        let (sock, _) = tokio::time::timeout(timeout, listener.accept())
            .await
            .unwrap()
            .unwrap();
        let (r, _w) = sock.into_split();
        let mut from = BufReader::new(r).lines();
        expect!(from, "NICK E_me");
        expect!(from, "USER electrumx 0 * :me.example v1.7 t50001");
        shutdown.cancel();
        expect!(from, "QUIT :server shutting down");
        tokio::time::timeout(timeout, task).await.unwrap().unwrap();
    }
}
