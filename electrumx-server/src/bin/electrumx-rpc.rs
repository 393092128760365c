//! `electrumx-rpc`: the admin client of LocalRPC (the `rpc://` service), a counterpart of
//! ElectrumX's `electrumx_rpc` with the same commands and table layouts, plus `--json`.
//!
//! The port comes from `-p`, else `RPC_PORT`, else 8000.

use clap::{Parser, Subcommand};
use electrumx_server::protocol::registry::formatted_time;
use serde_json::{Map, Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Sends an admin command to a running electrumx-server and prints the result.
#[derive(Parser, Debug)]
#[command(name = "electrumx-rpc", version)]
struct Cli {
    /// LocalRPC port (default: RPC_PORT, else 8000).
    #[arg(short, long, env = "RPC_PORT", default_value_t = 8000, global = true)]
    port: u16,
    /// LocalRPC host.
    #[arg(long, default_value = "localhost", global = true)]
    host: String,
    /// Seconds to wait for the answer (default 30; 3600 for `snapshot`).
    #[arg(long, global = true)]
    timeout: Option<u64>,
    /// Print the raw JSON result instead of tables and lines.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// ElectrumX's command names (`add_peer`); the kebab-case forms (`add-peer`) work too.
#[derive(Subcommand, Debug)]
#[command(rename_all = "snake_case")]
enum Command {
    /// Summary of server state.
    Getinfo,
    /// Client sessions.
    Sessions,
    /// Session groups (by subnet).
    Groups,
    /// Peer servers.
    Peers,
    /// Sync progress.
    Sync,
    /// Database size by column family.
    Db,
    /// Take a consistent snapshot of the index into DIR (on the server's host; must not
    /// exist, or be empty) while the server runs, to seed a replica from; prints its
    /// metadata (height, tip, format).
    Snapshot {
        /// The snapshot's directory (a relative path is taken from the current directory).
        dir: std::path::PathBuf,
    },
    /// Poll the node for new blocks now; for the node's `-blocknotify` (the block hash
    /// argument is accepted and ignored).
    Notify { block_hash: Option<String> },
    /// Shut the server down cleanly.
    Stop,
    /// Add a peer, e.g. "host.tld s50002 t50001".
    #[command(alias = "add-peer")]
    AddPeer { real_name: String },
    /// Disconnect sessions: IDs, group names or "all".
    Disconnect {
        #[arg(required = true)]
        session_ids: Vec<String>,
    },
    /// Toggle request logging: IDs, group names, "all", "none" or "new".
    Log {
        #[arg(required = true)]
        session_ids: Vec<String>,
    },
    /// Replace the node URL(s); without one, restore DAEMON_URL as configured.
    #[command(alias = "daemon-url")]
    DaemonUrl {
        #[arg(default_value = "")]
        daemon_url: String,
    },
    /// History, UTXOs and balance of scripts (hex) or addresses.
    Query {
        /// Most history entries and UTXOs to print.
        #[arg(short, long, default_value_t = 1000)]
        limit: u64,
        #[arg(required = true)]
        items: Vec<String>,
    },
    /// Take back COUNT blocks and sync them again (testing).
    Reorg {
        #[arg(default_value_t = 3)]
        count: u64,
    },
    /// One session in detail.
    #[command(alias = "inspect-session")]
    InspectSession { session_id: u64 },
}

impl Command {
    /// The method name and ElectrumX-style named parameters.
    fn request(&self) -> (&'static str, Value) {
        match self {
            Command::Getinfo => ("getinfo", json!({})),
            Command::Sessions => ("sessions", json!({})),
            Command::Groups => ("groups", json!({})),
            Command::Peers => ("peers", json!({})),
            Command::Sync => ("sync", json!({})),
            Command::Db => ("db", json!({})),
            Command::Snapshot { dir } => {
                // The server resolves paths in its own directory: send an absolute one.
                let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
                ("snapshot", json!({"dir": dir.display().to_string()}))
            }
            Command::Notify { .. } => ("notify", json!({})),
            Command::Stop => ("stop", json!({})),
            Command::AddPeer { real_name } => ("add_peer", json!({"real_name": real_name})),
            Command::Disconnect { session_ids } => {
                ("disconnect", json!({"session_ids": session_ids}))
            }
            Command::Log { session_ids } => ("log", json!({"session_ids": session_ids})),
            Command::DaemonUrl { daemon_url } => ("daemon_url", json!({"daemon_url": daemon_url})),
            Command::Query { limit, items } => ("query", json!({"items": items, "limit": limit})),
            Command::Reorg { count } => ("reorg", json!({"count": count})),
            Command::InspectSession { session_id } => {
                ("inspect_session", json!({"session_id": session_id}))
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (method, params) = cli.command.request();
    let result = match call(&cli, method, params) {
        Ok(r) => r,
        Err(Failure::Connect) => {
            println!(
                "cannot connect - is electrumx-server catching up, not running, or is {} the wrong RPC port?",
                cli.port
            );
            return ExitCode::FAILURE;
        }
        Err(Failure::Other(e)) => {
            println!("error making request: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    let lines = match method {
        "sessions" => sessions_lines(&result),
        "groups" => groups_lines(&result),
        "peers" => peers_lines(&result),
        "query" | "disconnect" | "log" => result
            .as_array()
            .map(|a| a.iter().map(plain).collect())
            .unwrap_or_else(|| vec![plain(&result)]),
        _ => match &result {
            Value::String(s) => vec![s.clone()],
            v => vec![serde_json::to_string_pretty(v).unwrap_or_default()],
        },
    };
    for l in lines {
        println!("{l}");
    }
    ExitCode::SUCCESS
}

enum Failure {
    Connect,
    Other(String),
}

fn call(cli: &Cli, method: &str, params: Value) -> Result<Value, Failure> {
    let addrs = (cli.host.as_str(), cli.port)
        .to_socket_addrs()
        .map_err(|_| Failure::Connect)?;
    let default = match method {
        "snapshot" => 3600,
        _ => 30,
    };
    let timeout = Duration::from_secs(cli.timeout.unwrap_or(default).max(1));
    let mut stream = addrs
        .into_iter()
        .find_map(|a| TcpStream::connect_timeout(&a, timeout).ok())
        .ok_or(Failure::Connect)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| Failure::Other(e.to_string()))?;
    let req = json!({"jsonrpc": "2.0", "id": 0, "method": method, "params": params});
    let mut text = req.to_string();
    text.push('\n');
    stream
        .write_all(text.as_bytes())
        .map_err(|e| Failure::Other(e.to_string()))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| Failure::Other(format!("no answer: {e}")))?;
    let reply: Value = serde_json::from_str(&line)
        .map_err(|e| Failure::Other(format!("malformed answer: {e}")))?;
    if let Some(err) = reply.get("error").filter(|e| !e.is_null()) {
        let msg = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("error");
        return Err(Failure::Other(msg.to_string()));
    }
    Ok(reply.get("result").cloned().unwrap_or(Value::Null))
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn num(v: &Value) -> u64 {
    v.as_f64().map_or(0, |f| f.max(0.0) as u64)
}

fn g(v: &Value) -> String {
    electrumx_server::admin::local_rpc::grouped(num(v))
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        other => plain(other),
    }
}

/// ElectrumX's `sessions` table.
fn sessions_lines(data: &Value) -> Vec<String> {
    let mut out = vec![format!(
        "{:<6} {:<5} {:>17} {:>5} {:>7} {:>7} {:>5} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9} {:>21}",
        "ID",
        "Flags",
        "Client",
        "Proto",
        "Cost",
        "XCost",
        "Reqs",
        "Txs",
        "Subs",
        "Recv",
        "Recv KB",
        "Sent",
        "Sent KB",
        "Time",
        "Peer"
    )];
    for row in data.as_array().into_iter().flatten() {
        let Some(r) = row.as_array().filter(|r| r.len() >= 15) else {
            continue;
        };
        out.push(format!(
            "{:<6} {:<5} {:>17} {:>5} {:>7} {:>7} {:>5} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9} {:>21}",
            cell(&r[0]),
            cell(&r[1]),
            cell(&r[3]),
            cell(&r[4]),
            g(&r[5]),
            g(&r[6]),
            g(&r[7]),
            g(&r[8]),
            g(&r[9]),
            g(&r[10]),
            electrumx_server::admin::local_rpc::grouped(num(&r[11]) / 1024),
            g(&r[12]),
            electrumx_server::admin::local_rpc::grouped(num(&r[13]) / 1024),
            formatted_time(num(&r[14]), ""),
            cell(&r[2]),
        ));
    }
    out
}

/// ElectrumX's `groups` table.
fn groups_lines(data: &Value) -> Vec<String> {
    let mut out = vec![format!(
        "{:<14} {:>9} {:>8} {:>8} {:>6} {:>6} {:>8}{:>7} {:>9} {:>7} {:>9}",
        "Name",
        "Sessions",
        "Cost",
        "Retained",
        "Reqs",
        "Txs",
        "Subs",
        "Recv",
        "Recv KB",
        "Sent",
        "Sent KB"
    )];
    for row in data.as_array().into_iter().flatten() {
        let Some(r) = row.as_array().filter(|r| r.len() >= 11) else {
            continue;
        };
        out.push(format!(
            "{:<14} {:>9} {:>8} {:>8} {:>6} {:>6} {:>8}{:>7} {:>9} {:>7} {:>9}",
            cell(&r[0]),
            g(&r[1]),
            g(&r[2]),
            g(&r[3]),
            g(&r[4]),
            g(&r[5]),
            g(&r[6]),
            g(&r[7]),
            electrumx_server::admin::local_rpc::grouped(num(&r[8]) / 1024),
            g(&r[9]),
            electrumx_server::admin::local_rpc::grouped(num(&r[10]) / 1024),
        ));
    }
    out
}

/// ElectrumX's `peers` table.
fn peers_lines(data: &Value) -> Vec<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let ago = |v: &Value| match v.as_f64() {
        Some(t) if t > 0.0 => formatted_time((now - t).max(0.0) as u64, " "),
        _ => "Never".to_string(),
    };
    let mut out = vec![format!(
        "{:<62} {:<6} {:>5} {:>5} {:<17} {:>4} {:>4} {:>8} {:>11} {:>11} {:>5} {:>20} {:<15}",
        "Host",
        "Status",
        "TCP",
        "SSL",
        "Server",
        "Min",
        "Max",
        "Pruning",
        "Last Good",
        "Last Try",
        "Tries",
        "Source",
        "IP Address"
    )];
    let empty = Map::new();
    for item in data.as_array().into_iter().flatten() {
        let host = item.get("host").and_then(Value::as_str).unwrap_or("");
        let features = item
            .get("features")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let ports = features
            .get("hosts")
            .and_then(|h| h.get(host))
            .cloned()
            .unwrap_or(Value::Null);
        let f = |k: &str| features.get(k).map(cell).unwrap_or_default();
        let source: String = item
            .get("source")
            .map(cell)
            .unwrap_or_default()
            .chars()
            .take(20)
            .collect();
        out.push(format!(
            "{:<62} {:<6} {:>5} {:>5} {:<17} {:>4} {:>4} {:>8} {:>11} {:>11} {:>5} {:>20} {:<15}",
            host.chars().take(62).collect::<String>(),
            item.get("status").map(cell).unwrap_or_default(),
            ports.get("tcp_port").map(cell).unwrap_or_default(),
            ports.get("ssl_port").map(cell).unwrap_or_default(),
            if f("server_version").is_empty() {
                "unknown".to_string()
            } else {
                f("server_version")
            },
            f("protocol_min"),
            f("protocol_max"),
            f("pruning"),
            ago(item.get("last_good").unwrap_or(&Value::Null)),
            ago(item.get("last_try").unwrap_or(&Value::Null)),
            item.get("try_count").map(cell).unwrap_or_default(),
            source,
            item.get("ip_addr").map(cell).unwrap_or_default(),
        ));
    }
    out
}
