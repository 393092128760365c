//! IRC advertising of the real binary against a real IRC server (`ngircd`, started by the
//! test on a free loopback port) and a real regtest node: the server's nick and real name
//! as another IRC client sees them, discovery of other advertisers (already on the
//! channel, and joining later), rejoin after a KICK, reconnect after the IRC server
//! restarts, QUIT on shutdown, TLS, a nick in use, and settings that fail at start.

use anyhow::{Context, Result, bail};
use electrumx_testkit::chaingen::{ChainGen, GenParams};
use electrumx_testkit::node::{RegtestNode, free_port};
use electrumx_testkit::server::{ServerProcess, regtest_env, set_env};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The channel and nick prefix of `COIN=BitcoinSV NET=regtest`.
const CHANNEL: &str = "#electrum-bsv";
const PREFIX: &str = "ER_";
/// Host and ports the server advertises (REPORT_SERVICES), and its real name.
const REPORT: &str = "tcp://electrum.test.example:50001,ssl://electrum.test.example:50002";
const REAL_NAME: &str = "electrum.test.example v1.7 s50002 t50001";
const LONG: Duration = Duration::from_secs(60);

/// The ngircd binary: `/usr/sbin/ngircd` (Debian), else `ngircd` on the PATH.
fn ngircd_bin() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/ngircd");
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from("ngircd")
    }
}

/// A real `ngircd`, owned by the test: killed when dropped.
struct Ngircd {
    dir: tempfile::TempDir,
    port: u16,
    tls_port: Option<u16>,
    child: Option<Child>,
}

impl Ngircd {
    /// Starts ngircd on `port` (and on `tls.0` with TLS from the PEM files `tls.1`, `tls.2`).
    fn start(port: u16, tls: Option<(u16, &Path, &Path)>) -> Result<Ngircd> {
        let dir = tempfile::Builder::new()
            .prefix("electrumx-ngircd-")
            .tempdir()?;
        // ngircd drops root privileges to "nobody", who must still write its PID file.
        let run = dir.path().join("run");
        std::fs::create_dir(&run)?;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777))?;
        std::fs::create_dir(dir.path().join("conf.d"))?;
        let mut conf = format!(
            "[Global]\nName = irc.test.local\nInfo = electrumx-rs test\n\
             AdminInfo1 = test\nAdminInfo2 = test\nAdminEMail = test@test.local\n\
             Listen = 127.0.0.1\nPorts = {port}\nPidFile = {}\nMotdPhrase = test\n\
             [Limits]\nMaxNickLength = 30\n\
             [Options]\nPAM = no\nIdent = no\nDNS = no\nIncludeDir = {}\n",
            run.join("ngircd.pid").display(),
            dir.path().join("conf.d").display(),
        );
        let tls_port = tls.map(|(p, cert, key)| {
            conf.push_str(&format!(
                "[SSL]\nCertFile = {}\nKeyFile = {}\nPorts = {p}\n",
                cert.display(),
                key.display()
            ));
            p
        });
        let path = dir.path().join("ngircd.conf");
        std::fs::write(&path, conf)?;
        let check = Command::new(ngircd_bin())
            .arg("--configtest")
            .arg("-f")
            .arg(&path)
            .output()
            .context("running ngircd (tools/setup.sh installs it)")?;
        if !check.status.success() {
            bail!(
                "ngircd --configtest failed: {}",
                String::from_utf8_lossy(&check.stdout)
            );
        }
        let mut irc = Ngircd {
            dir,
            port,
            tls_port,
            child: None,
        };
        irc.launch()?;
        Ok(irc)
    }

    fn launch(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("ngircd.log"))?;
        let child = Command::new(ngircd_bin())
            .arg("-n")
            .arg("-f")
            .arg(self.dir.path().join("ngircd.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in std::iter::once(self.port).chain(self.tls_port) {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if Instant::now() > deadline {
                    bail!("ngircd does not listen on {port}: {}", self.log());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Kills the server (its clients lose their connections).
    fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Starts the server again on the same ports.
    fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.launch()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ngircd.log")).unwrap_or_default()
    }
}

impl Drop for Ngircd {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// An IRC client of the test's own: plain lines over TCP, PINGs answered while waiting.
struct IrcClient {
    nick: String,
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

impl IrcClient {
    /// Connects and registers as `nick` with `real_name`.
    async fn connect(port: u16, nick: &str, real_name: &str) -> Result<IrcClient> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let (r, writer) = stream.into_split();
        let mut client = IrcClient {
            nick: nick.to_string(),
            lines: BufReader::new(r).lines(),
            writer,
        };
        client.send(&format!("NICK {nick}")).await?;
        client.send(&format!("USER test 0 * :{real_name}")).await?;
        client.expect(|l| l.contains(" 001 "), LONG).await?;
        Ok(client)
    }

    async fn send(&mut self, line: &str) -> Result<()> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await?;
        Ok(())
    }

    /// Joins `channel` and waits for the server's confirmation.
    async fn join(&mut self, channel: &str) -> Result<()> {
        self.send(&format!("JOIN {channel}")).await?;
        let me = format!(":{}!", self.nick);
        self.expect(|l| l.starts_with(&me) && l.contains(" JOIN "), LONG)
            .await?;
        Ok(())
    }

    /// Reads lines until one matches `pred`, answering PINGs.
    async fn expect(&mut self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let line = match tokio::time::timeout_at(deadline, self.lines.next_line()).await {
                Ok(Ok(Some(l))) => l,
                Ok(Ok(None)) => bail!("{}: connection closed; lines: {seen:#?}", self.nick),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => bail!(
                    "{}: no matching line in {timeout:?}; lines: {seen:#?}",
                    self.nick
                ),
            };
            if let Some(token) = line.strip_prefix("PING ") {
                self.send(&format!("PONG {token}")).await?;
            }
            if pred(&line) {
                return Ok(line);
            }
            seen.push(line);
        }
    }

    /// Waits for `nick` to join `CHANNEL`.
    async fn expect_join(&mut self, nick: &str, timeout: Duration) -> Result<String> {
        let from = format!(":{nick}!");
        self.expect(|l| l.starts_with(&from) && l.contains(" JOIN "), timeout)
            .await
    }

    /// `WHO nick`: the real name in the reply, without the hop count.
    async fn who_real_name(&mut self, nick: &str) -> Result<String> {
        self.send(&format!("WHO {nick}")).await?;
        let needle = format!(" {nick} ");
        let reply = self
            .expect(|l| l.contains(" 352 ") && l.contains(&needle), LONG)
            .await?;
        let trailing = reply
            .split_once(" :")
            .map(|(_, t)| t)
            .context("352 without trailing")?;
        let (_hops, real_name) = trailing.split_once(' ').context("no real name")?;
        Ok(real_name.to_string())
    }
}

/// A regtest node with a few blocks, and the server's settings for it.
async fn node() -> Result<RegtestNode> {
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed: 7,
        txs_per_block: 2,
        wallets: 4,
        ..GenParams::default()
    });
    chain.mine(&node, 3).await?;
    Ok(node)
}

fn server_env(
    node: &RegtestNode,
    db: &Path,
    irc_port: u16,
    extra: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let mut env = regtest_env(node, db);
    set_env(
        &mut env,
        "SERVICES",
        format!("tcp://127.0.0.1:{}", free_port()),
    );
    set_env(&mut env, "REPORT_SERVICES", REPORT);
    set_env(&mut env, "IRC", "1");
    set_env(&mut env, "IRC_SERVER", "127.0.0.1");
    set_env(&mut env, "IRC_PORT", irc_port.to_string());
    for (k, v) in extra {
        set_env(&mut env, k, v.clone());
    }
    env
}

fn wait_log(server: &mut ServerProcess, needle: &str, timeout: Duration) -> Result<String> {
    tokio::task::block_in_place(|| server.wait_for_line(needle, 1, timeout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertises_discovers_rejoins_after_kick_and_reconnects_after_a_restart() -> Result<()> {
    let irc_port = free_port();
    let mut ircd = Ngircd::start(irc_port, None)?;
    // The observer is the channel's first member (so its operator) and looks like another
    // server to the advertiser: it has the prefix and a real name in ElectrumX's format.
    let observer_nick = format!("{PREFIX}peer");
    let mut observer =
        IrcClient::connect(irc_port, &observer_nick, "peer.example v1.4 s50002 t50001").await?;
    observer.join(CHANNEL).await?;

    let node = node().await?;
    let db = tempfile::tempdir()?;
    let env = server_env(&node, db.path(), irc_port, &[("IRC_NICK", "test1".into())]);
    let mut server = ServerProcess::start(&env)?;
    let nick = format!("{PREFIX}test1");

    // Joined with prefix + IRC_NICK, and carries the real name.
    observer.expect_join(&nick, LONG).await?;
    assert_eq!(observer.who_real_name(&nick).await?, REAL_NAME);
    wait_log(
        &mut server,
        &format!("IRC: joined {CHANNEL} as {nick}"),
        LONG,
    )?;
    // The WHO of the channel after its own join found the observer.
    let found = wait_log(&mut server, "IRC: discovered peer", LONG)?;
    assert!(
        found.contains(&format!("{observer_nick}: peer.example v1.4 s50002 t50001")),
        "{found}"
    );

    // A server joining later is looked up with WHO; a human is not a peer.
    let mut human = IrcClient::connect(irc_port, "alice", "Alice").await?;
    human.join(CHANNEL).await?;
    let mut late = IrcClient::connect(
        irc_port,
        &format!("{PREFIX}late"),
        "late.example v1.4 t50001",
    )
    .await?;
    late.join(CHANNEL).await?;
    let found = wait_log(&mut server, "IRC: discovered peer", LONG)?;
    assert!(
        found.contains(&format!("{PREFIX}late: late.example v1.4 t50001")),
        "{found}"
    );

    // Kicked by the channel operator: it says so and rejoins.
    observer
        .send(&format!("KICK {CHANNEL} {nick} :testing kicks"))
        .await?;
    let kicked = wait_log(&mut server, "IRC: kicked from", LONG)?;
    assert!(kicked.contains("testing kicks"), "{kicked}");
    observer.expect_join(&nick, LONG).await?;
    wait_log(
        &mut server,
        &format!("IRC: joined {CHANNEL} as {nick}"),
        LONG,
    )?;

    // The IRC server goes away and comes back on the same port: reconnect and rejoin.
    drop((observer, human, late));
    ircd.kill()?;
    let down = wait_log(&mut server, "IRC: disconnected from", LONG)?;
    assert!(down.contains("reconnecting in"), "{down}");
    // While it is down, the next attempts fail and back off.
    let retry = wait_log(&mut server, "IRC: cannot connect to", LONG)?;
    assert!(retry.contains("retrying in 2s"), "{retry}");
    ircd.restart()?;
    let mut observer = IrcClient::connect(irc_port, "watcher", "watcher").await?;
    observer.join(CHANNEL).await?;
    observer
        .expect_join(&nick, Duration::from_secs(120))
        .await?;
    assert_eq!(observer.who_real_name(&nick).await?, REAL_NAME);

    // Shutdown: QUIT, then a clean exit.
    server.signal("TERM")?;
    let from = format!(":{nick}!");
    observer
        .expect(|l| l.starts_with(&from) && l.contains(" QUIT "), LONG)
        .await?;
    let status = tokio::task::block_in_place(|| server.wait_exit(LONG))?;
    assert!(status.success(), "{:?}", server.tail(10));
    Ok(())
}

/// A CA and a certificate for 127.0.0.1 signed by it, as PEM files in `dir`: (CA,
/// certificate, key).
fn tls_files(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let f = electrumx_testkit::tls::files(dir, "127.0.0.1")?;
    Ok((f.ca_file, PathBuf::from(f.cert), PathBuf::from(f.key)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_nick_over_tls_with_a_suffix_when_in_use() -> Result<()> {
    let certs = tempfile::tempdir()?;
    let (ca, cert, key) = tls_files(certs.path())?;
    let (irc_port, tls_port) = (free_port(), free_port());
    let _ircd = Ngircd::start(irc_port, Some((tls_port, &cert, &key)))?;
    let mut observer = IrcClient::connect(irc_port, "watcher", "watcher").await?;
    observer.join(CHANNEL).await?;

    let node = node().await?;
    let db = tempfile::tempdir()?;
    let env = server_env(
        &node,
        db.path(),
        tls_port,
        &[
            ("IRC_TLS", "1".into()),
            ("SSL_CERT_FILE", ca.display().to_string()),
        ],
    );
    // ElectrumX's nick: the prefix and 10 hex digits of double SHA-256 of the host. Someone
    // holds it already, so the server takes it with a suffix.
    let nick = electrumx_server::discovery::irc::hashed_nick(PREFIX, "electrum.test.example");
    assert_eq!(nick.len(), PREFIX.len() + 10);
    let _squatter = IrcClient::connect(irc_port, &nick, "squatter").await?;
    let mut server = ServerProcess::start(&env)?;
    let taken = format!("{nick}_1");
    observer.expect_join(&taken, LONG).await?;
    assert_eq!(observer.who_real_name(&taken).await?, REAL_NAME);
    let connected = wait_log(&mut server, "IRC: connected to", LONG)?;
    assert!(
        connected.contains(&format!(":{tls_port} (TLS)")),
        "{connected}"
    );
    wait_log(
        &mut server,
        &format!("IRC: nick {nick} is in use; trying {taken}"),
        LONG,
    )?;
    server.signal("TERM")?;
    assert!(tokio::task::block_in_place(|| server.wait_exit(LONG))?.success());
    Ok(())
}

#[test]
fn bad_irc_settings_fail_at_start_naming_the_setting() -> Result<()> {
    let db = tempfile::tempdir()?;
    let base = vec![
        ("DAEMON_URL", "http://u:p@127.0.0.1:1/".to_string()),
        ("DB_DIRECTORY", db.path().display().to_string()),
        ("COIN", "BitcoinSV".into()),
        ("NET", "regtest".into()),
        ("SERVICES", format!("tcp://127.0.0.1:{}", free_port())),
        ("REPORT_SERVICES", REPORT.to_string()),
        ("IRC", "1".into()),
    ];
    let cases: [(&str, &str, &[&str]); 7] = [
        ("REPORT_SERVICES", "", &["IRC", "REPORT_SERVICES"]),
        (
            "REPORT_SERVICES",
            "tcp://abc.onion:50001",
            &["IRC", "REPORT_SERVICES"],
        ),
        ("SERVICES", "", &["IRC", "SERVICES"]),
        ("IRC_NICK", "two words", &["IRC_NICK"]),
        ("IRC_CHANNEL", "electrum", &["IRC_CHANNEL"]),
        ("IRC_PORT", "0", &["IRC_PORT"]),
        ("IRC_SERVER", "bad host", &["IRC_SERVER"]),
    ];
    for (var, value, names) in cases {
        let mut env = base.clone();
        env.retain(|(k, _)| *k != var);
        env.push((var, value.to_string()));
        let mut server = ServerProcess::start(&env)?;
        let status = server.wait_exit(Duration::from_secs(30))?;
        assert!(!status.success(), "{var}={value:?} must fail");
        let log = server.tail(20).join("\n");
        for n in names {
            assert!(log.contains(n), "{var}={value:?}: {n} not named in {log}");
        }
    }
    Ok(())
}
