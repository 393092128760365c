//! The Electrum protocol of the real binary against a real regtest node: conformance
//! through a third-party client (the `electrum-client` crate), subscriptions and
//! notifications after blocks, mempool and reorgs, and raw-socket checks of framing,
//! version negotiation and error paths.

use anyhow::Result;
use bitcoin::hashes::{Hash, sha256};
use electrum_client::{Client, ElectrumApi};
use electrumx_core::{Hash32, ScriptHash};
use electrumx_testkit::chaingen::{ChainGen, GenParams, ScriptKind};
use electrumx_testkit::node::{RegtestNode, free_port};
use electrumx_testkit::rawclient::RawConn;
use electrumx_testkit::server::{ServerProcess, regtest_env, set_env};
use serde_json::{Value, json};
use std::time::Duration;

struct Fixture {
    node: RegtestNode,
    chain: ChainGen,
    server: ServerProcess,
    port: u16,
    _db: tempfile::TempDir,
}

async fn start(blocks: u32) -> Result<Fixture> {
    start_with(blocks, |_| Vec::new()).await
}

/// Starts node, chain and server; `extra` adds settings given the TCP port.
async fn start_with(
    blocks: u32,
    extra: impl FnOnce(u16) -> Vec<(&'static str, String)>,
) -> Result<Fixture> {
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed: 42,
        txs_per_block: 15,
        wallets: 40,
        ..GenParams::default()
    });
    chain.mine(&node, blocks).await?;
    let db = tempfile::tempdir()?;
    let port = free_port();
    let mut env = regtest_env(&node, db.path());
    set_env(&mut env, "SERVICES", format!("tcp://127.0.0.1:{port}"));
    set_env(&mut env, "DAEMON_POLL_INTERVAL_MEMPOOL", "100");
    set_env(&mut env, "MAX_RECV", "5000");
    for (k, v) in extra(port) {
        set_env(&mut env, k, v);
    }
    let mut server = ServerProcess::start(&env)?;
    // One "listening" line per client service: wait until every listener is bound.
    let listeners = env
        .iter()
        .find(|(k, _)| *k == "SERVICES")
        .map_or(1, |(_, v)| v.split(',').count());
    server.wait_for_line("listening for clients", listeners, Duration::from_secs(120))?;
    Ok(Fixture {
        node,
        chain,
        server,
        port,
        _db: db,
    })
}

fn script_of(kind: ScriptKind) -> electrum_client::bitcoin::ScriptBuf {
    electrum_client::bitcoin::ScriptBuf::from_bytes(kind.script())
}

fn status_of(entries: &[(String, i64)]) -> Option<String> {
    if entries.is_empty() {
        return None;
    }
    let pre: String = entries.iter().map(|(t, h)| format!("{t}:{h}:")).collect();
    Some(const_hex::encode(
        sha256::Hash::hash(pre.as_bytes()).to_byte_array(),
    ))
}

/// Polls `f` until it returns `Some`, for up to 30 s.
fn eventually<T>(mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    for _ in 0..300 {
        if let Some(v) = f()? {
            return Ok(v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("condition not reached within 30 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn electrum_client_sees_history_balances_proofs_and_notifications() -> Result<()> {
    let mut fx = start(130).await?;
    let url = format!("tcp://127.0.0.1:{}", fx.port);
    let client = tokio::task::block_in_place(|| Client::new(&url))?;
    tokio::task::block_in_place(|| -> Result<()> {
        assert_eq!(client.protocol_version()?, "1.6");
        let features = client.server_features()?;
        assert_eq!(
            const_hex::encode(features.genesis_hash),
            electrumx_testkit::chaingen::REGTEST_GENESIS
        );
        let tip = client.block_headers_subscribe()?;
        assert_eq!(tip.height as u32, fx.chain.height());
        let last = fx.chain.blocks.last().unwrap();
        assert_eq!(tip.header.block_hash().to_byte_array(), last.hash.0);
        let headers = client.block_headers(0, 10)?;
        assert_eq!(headers.headers.len(), 10);
        assert_eq!(
            client.block_header(5)?.block_hash().to_byte_array(),
            fx.chain.blocks[4].hash.0
        );
        // The node has no fee estimator: -1, not an error.
        assert_eq!(client.estimate_fee(6, None)?, -1.0);
        client.ping()?;

        let ledger = fx.chain.ledger();
        for w in 0..5 {
            let kind = ScriptKind::Wallet(w);
            let sh = ScriptHash::of_script(&kind.script());
            let script = script_of(kind);
            let history = client.script_get_history(&script)?;
            let want = ledger.history.get(&sh).cloned().unwrap_or_default();
            let got: Vec<(Hash32, u32)> = history
                .iter()
                .map(|h| (Hash32(h.tx_hash.to_byte_array()), h.height as u32))
                .collect();
            assert_eq!(got, want, "history of wallet {w}");
            let balance = client.script_get_balance(&script)?;
            assert_eq!(balance.confirmed, ledger.balance(&sh));
            assert_eq!(balance.unconfirmed, 0);
            let utxos = client.script_list_unspent(&script)?;
            let total: u64 = utxos.iter().map(|u| u.value).sum();
            assert_eq!(total, ledger.balance(&sh));
        }

        // Transactions and merkle proofs.
        let block = &fx.chain.blocks[120];
        let tx = &block.txs[1];
        let txid = electrum_client::bitcoin::Txid::from_byte_array(tx.txid.0);
        assert_eq!(client.transaction_get_raw(&txid)?, tx.raw);
        let merkle = client.transaction_get_merkle(&txid, block.height as usize)?;
        assert_eq!(merkle.pos, 1);
        let mut acc = tx.txid;
        let mut idx = merkle.pos;
        for sib in &merkle.merkle {
            // The client keeps branch hashes in display (reversed) order.
            let mut sib = *sib;
            sib.reverse();
            let mut buf = [0u8; 64];
            if idx & 1 == 1 {
                buf[..32].copy_from_slice(&sib);
                buf[32..].copy_from_slice(&acc.0);
            } else {
                buf[..32].copy_from_slice(&acc.0);
                buf[32..].copy_from_slice(&sib);
            }
            acc = Hash32::sha256d(&buf);
            idx >>= 1;
        }
        assert_eq!(
            &acc.0[..],
            &block.header[36..68],
            "merkle branch proves inclusion"
        );
        assert_eq!(client.txid_from_pos(block.height as usize, 1)?, txid);
        Ok(())
    })?;

    // Subscriptions to every wallet script; statuses match the ledger.
    let ledger = fx.chain.ledger();
    let mut first_status = std::collections::HashMap::new();
    for w in 0..40u32 {
        let kind = ScriptKind::Wallet(w);
        let status = tokio::task::block_in_place(|| client.script_subscribe(&script_of(kind)))?;
        let sh = ScriptHash::of_script(&kind.script());
        let confirmed: Vec<(String, i64)> = ledger
            .history
            .get(&sh)
            .into_iter()
            .flatten()
            .map(|(t, h)| (t.to_display_hex(), *h as i64))
            .collect();
        assert_eq!(
            status.as_ref().map(|s| const_hex::encode(**s)),
            status_of(&confirmed),
            "wallet {w}"
        );
        first_status.insert(w, status);
    }

    // Mempool transactions: unconfirmed history with fees, and a notification.
    let sent = fx.chain.send_to_mempool(&fx.node, 30).await?;
    let kind = sent
        .iter()
        .flat_map(|t| t.outputs.iter().map(|(_, k)| *k))
        .find(|k| matches!(k, ScriptKind::Wallet(_)))
        .expect("a wallet output in the mempool");
    let ScriptKind::Wallet(w) = kind else {
        unreachable!()
    };
    let script = script_of(kind);
    let sh = ScriptHash::of_script(&kind.script());
    let paying = sent
        .iter()
        .filter(|t| t.outputs.iter().any(|(_, k)| *k == kind))
        .count();
    tokio::task::block_in_place(|| -> Result<()> {
        let unconfirmed = eventually(|| {
            let h = client.script_get_history(&script)?;
            let u: Vec<_> = h.iter().filter(|e| e.height <= 0).cloned().collect();
            Ok((u.len() >= paying).then_some(u))
        })?;
        assert!(
            unconfirmed.iter().all(|e| e.fee.is_some()),
            "mempool entries carry fees"
        );
        let balance = client.script_get_balance(&script)?;
        assert_ne!(balance.unconfirmed, 0);
        // The blocking client reads notifications while it waits for replies: ping to pump.
        let notified = eventually(|| {
            client.ping()?;
            Ok(client.script_pop(&script)?)
        })?;
        assert_ne!(
            Some(notified),
            first_status[&w],
            "a notification with the new status"
        );
        Ok(())
    })?;

    // Mining them: headers and script notifications, unconfirmed entries confirmed.
    fx.chain.mine(&fx.node, 1).await?;
    let new_tip = tokio::task::block_in_place(|| {
        eventually(|| {
            client.ping()?;
            Ok(client
                .block_headers_pop()?
                .filter(|h| h.height as u32 == fx.chain.height()))
        })
    })?;
    assert_eq!(new_tip.height as u32, fx.chain.height());
    tokio::task::block_in_place(|| -> Result<()> {
        let ledger = fx.chain.ledger();
        eventually(|| {
            let h = client.script_get_history(&script)?;
            let got: Vec<(Hash32, u32)> = h
                .iter()
                .filter(|e| e.height > 0)
                .map(|e| (Hash32(e.tx_hash.to_byte_array()), e.height as u32))
                .collect();
            Ok((got == ledger.history[&sh] && h.iter().all(|e| e.height > 0)).then_some(()))
        })?;
        Ok(())
    })?;

    // A reorg: the index follows, history matches the new chain.
    fx.chain.reorg(&fx.node, 2).await?;
    tokio::task::block_in_place(|| -> Result<()> {
        let ledger = fx.chain.ledger();
        eventually(|| {
            let tip = client.block_headers_subscribe()?;
            Ok(
                (tip.header.block_hash().to_byte_array() == fx.chain.blocks.last().unwrap().hash.0)
                    .then_some(()),
            )
        })?;
        for w in 0..5 {
            let kind = ScriptKind::Wallet(w);
            let sh = ScriptHash::of_script(&kind.script());
            let got: Vec<(Hash32, u32)> = client
                .script_get_history(&script_of(kind))?
                .iter()
                .filter(|e| e.height > 0)
                .map(|e| (Hash32(e.tx_hash.to_byte_array()), e.height as u32))
                .collect();
            assert_eq!(
                got,
                ledger.history.get(&sh).cloned().unwrap_or_default(),
                "wallet {w} after reorg"
            );
        }
        Ok(())
    })?;

    // Broadcast through the client; a bad transaction gets the node's reason.
    let tx = fx.chain.mempool_txs(1).pop().expect("a spendable coin");
    let txid = tokio::task::block_in_place(|| client.transaction_broadcast_raw(&tx.raw))?;
    assert_eq!(txid.to_byte_array(), tx.txid.0);
    let err =
        tokio::task::block_in_place(|| client.transaction_broadcast_raw(&[0u8; 10])).unwrap_err();
    assert!(err.to_string().contains("rejected"), "{err}");
    drop(client);
    fx.server.signal("TERM")?;
    assert!(fx.server.wait_exit(Duration::from_secs(30))?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_socket_framing_negotiation_and_errors() -> Result<()> {
    let mut fx = start(110).await?;
    let port = fx.port;
    tokio::task::block_in_place(|| -> Result<()> {
        // A method before server.version: error 1, then disconnect.
        let mut c = RawConn::connect(port)?;
        assert_eq!(c.error_code("server.ping", json!([]))?, 1);
        assert!(c.recv()?.is_none(), "disconnected");

        // Unsupported version: error and disconnect.
        let mut c = RawConn::connect(port)?;
        assert_eq!(
            c.error_code("server.version", json!(["t", ["1.8", "2.0"]]))?,
            1
        );
        assert!(c.recv()?.is_none());

        // Negotiation: a range picks the highest common version; extra args are tolerated.
        let mut c = RawConn::connect(port)?;
        let v = c.result("server.version", json!(["t", ["1.4", "1.6"], "extra", 9]))?;
        assert_eq!(v[1], json!("1.6"));
        assert_eq!(
            c.error_code("server.version", json!(["t", "1.4"]))?,
            1,
            "only the first version is accepted"
        );
        // 1.6: block.headers as a list; relayfee gone; mempool.get_info present.
        let h = c.result("blockchain.block.headers", json!([0, 3]))?;
        assert_eq!(h["headers"].as_array().unwrap().len(), 3);
        assert_eq!(c.error_code("blockchain.relayfee", json!([]))?, -32601);
        assert!(
            c.result("mempool.get_info", json!([]))?
                .get("minrelaytxfee")
                .is_some()
        );

        // 1.4: hex form and relayfee.
        let mut c = RawConn::connect(port)?;
        assert_eq!(
            c.result("server.version", json!(["t", "1.4"]))?[1],
            json!("1.4")
        );
        let h = c.result("blockchain.block.headers", json!([0, 2]))?;
        assert_eq!(h["hex"].as_str().unwrap().len(), 320);
        assert_eq!(h["max"], json!(2016));
        assert_eq!(h["count"], json!(2));
        // With a checkpoint: the proof of the last header, as block.header gives it.
        let h = c.result("blockchain.block.headers", json!([3, 3, 8]))?;
        let one = c.result("blockchain.block.header", json!([5, 8]))?;
        assert_eq!(h["hex"].as_str().unwrap().len(), 480);
        assert_eq!(
            &h["hex"].as_str().unwrap()[320..],
            one["header"].as_str().unwrap()
        );
        assert_eq!(h["branch"], one["branch"]);
        assert_eq!(h["root"], one["root"]);
        assert!(c.result("blockchain.relayfee", json!([]))?.is_number());

        // Errors: unknown method, bad params, invalid JSON, out of range, huge numbers, bad hex.
        assert_eq!(c.error_code("no.such.method", json!([]))?, -32601);
        assert_eq!(
            c.error_code("blockchain.block.header", json!([1, 2, 3]))?,
            -32602
        );
        assert_eq!(c.error_code("blockchain.block.header", json!([99999]))?, 1);
        assert_eq!(c.error_code("blockchain.block.header", json!([-1]))?, 1);
        assert_eq!(c.error_code("blockchain.block.header", json!([1e300]))?, 1);
        assert_eq!(
            c.error_code("blockchain.block.header", json!(["18446744073709551616"]))?,
            1
        );
        assert_eq!(
            c.error_code("blockchain.scripthash.get_balance", json!(["zz"]))?,
            1
        );
        assert_eq!(
            c.error_code("blockchain.transaction.get", json!(["00"]))?,
            1
        );
        assert_eq!(
            c.error_code("blockchain.transaction.get", json!([format!("{:064}", 0)]))?,
            2
        );
        c.send_raw(b"{not json\n")?;
        assert_eq!(c.recv()?.unwrap()["error"]["code"], json!(-32700));

        // cp_height proof verifies to its root.
        let r = c.result("blockchain.block.header", json!([5, 8]))?;
        assert_eq!(r["branch"].as_array().unwrap().len(), 4);

        // Framing: two requests in one write, one request split across writes, padding.
        c.send_raw(
            b"{\"jsonrpc\":\"2.0\",\"id\":100,\"method\":\"server.ping\"}\n{\"jsonrpc\":\"2.0\",\"id\":101,\"method\":\"server.ping\"}\n",
        )?;
        // Requests are handled concurrently: replies may come in any order.
        let mut ids = [
            c.recv()?.unwrap()["id"].clone(),
            c.recv()?.unwrap()["id"].clone(),
        ];
        ids.sort_by_key(|v| v.as_i64());
        assert_eq!(ids, [json!(100), json!(101)]);
        // Many pipelined requests of several kinds: each answered once, by its id.
        let mut pipelined = String::new();
        for i in 0..40 {
            let (method, params) = match i % 4 {
                0 => ("server.ping", json!([])),
                1 => ("blockchain.block.header", json!([i])),
                2 => ("blockchain.block.headers", json!([0, 50])),
                _ => (
                    "blockchain.scripthash.get_history",
                    json!([format!("{:064x}", i)]),
                ),
            };
            pipelined.push_str(
                &json!({"jsonrpc": "2.0", "id": 1000 + i, "method": method, "params": params})
                    .to_string(),
            );
            pipelined.push('\n');
        }
        c.send_raw(pipelined.as_bytes())?;
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let r = c.recv()?.unwrap();
            assert!(r.get("error").is_none(), "{r}");
            assert!(seen.insert(r["id"].as_i64().unwrap()));
        }
        assert_eq!(seen, (1000..1040).collect());
        c.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":102,")?;
        std::thread::sleep(Duration::from_millis(100));
        c.send_raw(b"\"method\":\"server.ping\"}          \n")?;
        assert_eq!(c.recv()?.unwrap()["id"], json!(102));
        // JSON-RPC 1.0 request.
        c.send_raw(b"{\"id\":103,\"method\":\"server.ping\",\"params\":[]}\n")?;
        let r = c.recv()?.unwrap();
        assert_eq!(r["id"], json!(103));
        assert!(r.get("jsonrpc").is_none());
        // Batches, with an invalid element answered in place.
        c.send_raw(b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"server.ping\"},{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"nope\"},7]\n")?;
        let batch = c.recv()?.unwrap();
        let items = batch.as_array().unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[1]["error"]["code"], json!(-32601));
        c.send_raw(b"[]\n")?;
        assert_eq!(c.recv()?.unwrap()["error"]["code"], json!(-32600));
        // A message over MAX_RECV is dropped; the session goes on.
        let mut big = vec![b' '; 6000];
        big.push(b'\n');
        c.send_raw(&big)?;
        assert!(c.result("server.ping", json!([]))?.is_null());
        Ok(())
    })?;

    // Mempool ordering: entries with unconfirmed parents (-1) after those with confirmed
    // ones (0); the status covers both.
    let sent = fx.chain.send_to_mempool(&fx.node, 60).await?;
    tokio::task::block_in_place(|| -> Result<()> {
        let mut c = RawConn::connect(port)?;
        c.result("server.version", json!(["t", "1.6"]))?;
        for w in 0..40u32 {
            let sh = ScriptHash::of_script(&ScriptKind::Wallet(w).script()).to_hex();
            let mempool = eventually(|| {
                let m = c.result("blockchain.scripthash.get_mempool", json!([sh]))?;
                let want = sent
                    .iter()
                    .filter(|t| t.outputs.iter().any(|(_, k)| *k == ScriptKind::Wallet(w)))
                    .count();
                Ok((m.as_array().unwrap().len() >= want).then_some(m))
            })?;
            let heights: Vec<i64> = mempool
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["height"].as_i64().unwrap())
                .collect();
            assert!(
                heights.windows(2).all(|p| p[0] >= p[1]),
                "0 before -1: {heights:?}"
            );
            let history = c.result("blockchain.scripthash.get_history", json!([sh]))?;
            let entries: Vec<(String, i64)> = history
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["tx_hash"].as_str().unwrap().to_string(),
                        e["height"].as_i64().unwrap(),
                    )
                })
                .collect();
            let status = c.result("blockchain.scripthash.subscribe", json!([sh]))?;
            assert_eq!(status.as_str().map(String::from), status_of(&entries));
        }
        let hist = c.result("mempool.get_fee_histogram", json!([]))?;
        assert!(hist.is_array());
        Ok(())
    })?;
    fx.server.signal("TERM")?;
    assert!(fx.server.wait_exit(Duration::from_secs(30))?.success());
    Ok(())
}

/// Trusts exactly one certificate (self-signed test certificates, CA or not), while still
/// checking the handshake signatures.
#[derive(Debug)]
struct PinnedCert {
    der: Vec<u8>,
    provider: std::sync::Arc<tokio_rustls::rustls::crypto::CryptoProvider>,
}

impl tokio_rustls::rustls::client::danger::ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[tokio_rustls::rustls::pki_types::CertificateDer<'_>],
        _name: &tokio_rustls::rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: tokio_rustls::rustls::pki_types::UnixTime,
    ) -> Result<tokio_rustls::rustls::client::danger::ServerCertVerified, tokio_rustls::rustls::Error>
    {
        if end_entity.as_ref() == self.der.as_slice() {
            Ok(tokio_rustls::rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(tokio_rustls::rustls::Error::General(
                "not the expected certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &tokio_rustls::rustls::pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<
        tokio_rustls::rustls::client::danger::HandshakeSignatureValid,
        tokio_rustls::rustls::Error,
    > {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS client that trusts exactly `cert_pem`.
fn tls_connector(cert_pem: &str) -> Result<tokio_rustls::TlsConnector> {
    use tokio_rustls::rustls::{
        self,
        pki_types::{CertificateDer, pem::PemObject},
    };
    let der = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .next()
        .expect("a certificate")?
        .to_vec();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(PinnedCert { der, provider }))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

/// Sends `server.version` over TLS to `port`; returns the negotiated version.
async fn tls_version(port: u16, cert_pem: &str) -> Result<String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost")?;
    let mut tls = tls_connector(cert_pem)?.connect(name, tcp).await?;
    tls.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"server.version\",\"params\":[\"t\",\"1.4\"]}\n").await?;
    let mut line = String::new();
    BufReader::new(tls).read_line(&mut line).await?;
    let v: Value = serde_json::from_str(&line)?;
    Ok(v["result"][1].as_str().unwrap_or_default().to_string())
}

fn openssl(args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("openssl").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_ws_and_wss_with_operator_key_formats_and_certificate_reload() -> Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let keys = tempfile::tempdir()?;
    let path = |n: &str| keys.path().join(n).display().to_string();
    // An RSA key in PKCS#1 form (`BEGIN RSA PRIVATE KEY`), as older openssl genrsa writes.
    openssl(&["genrsa", "-traditional", "-out", &path("rsa.key"), "2048"])?;
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &path("rsa.key"),
        "-out",
        &path("rsa.crt"),
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost",
    ])?;
    assert!(std::fs::read_to_string(path("rsa.key"))?.contains("BEGIN RSA PRIVATE KEY"));
    // An EC key in SEC1 form (`BEGIN EC PRIVATE KEY`).
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &path("ec.key"),
    ])?;
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &path("ec.key"),
        "-out",
        &path("ec.crt"),
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost",
    ])?;
    assert!(std::fs::read_to_string(path("ec.key"))?.contains("BEGIN EC PRIVATE KEY"));
    // A PKCS#8 key from rcgen.
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    std::fs::write(path("p8.key"), generated.signing_key.serialize_pem())?;
    std::fs::write(path("p8.crt"), generated.cert.pem())?;
    // The served files start as the RSA pair.
    std::fs::copy(path("rsa.key"), path("server.key"))?;
    std::fs::copy(path("rsa.crt"), path("server.crt"))?;

    let (ssl, ws, wss) = (free_port(), free_port(), free_port());
    let (cert, key) = (path("server.crt"), path("server.key"));
    let mut fx = start_with(105, move |tcp| {
        vec![
            ("SERVICES", format!("tcp://127.0.0.1:{tcp},ssl://127.0.0.1:{ssl},ws://127.0.0.1:{ws},wss://127.0.0.1:{wss}")),
            ("SSL_CERTFILE", cert),
            ("SSL_KEYFILE", key),
        ]
    })
    .await?;

    assert_eq!(
        tls_version(ssl, &std::fs::read_to_string(path("rsa.crt"))?).await?,
        "1.4"
    );
    // A client that trusts only another certificate is refused.
    assert!(
        tls_version(ssl, &std::fs::read_to_string(path("ec.crt"))?)
            .await
            .is_err()
    );

    // Replace the files on disk: new connections get the new certificate, no restart.
    for (k, c) in [("ec.key", "ec.crt"), ("p8.key", "p8.crt")] {
        tokio::time::sleep(Duration::from_millis(1100)).await; // a visible mtime change
        // Replace the files the way operators' tools do: write aside, then rename.
        std::fs::copy(path(k), path("server.key.new"))?;
        std::fs::copy(path(c), path("server.crt.new"))?;
        std::fs::rename(path("server.key.new"), path("server.key"))?;
        std::fs::rename(path("server.crt.new"), path("server.crt"))?;
        let pem = std::fs::read_to_string(path(c))?;
        // A connection racing the two renames may still get the old pair; the next ones get
        // the new certificate.
        let mut last = Err(anyhow::anyhow!("no attempt"));
        for _ in 0..20 {
            last = tls_version(ssl, &pem).await;
            if last.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(last?, "1.4", "after switching to {c}");
    }

    // WebSocket: one JSON message per frame, no newline.
    let (mut sock, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{ws}/")).await?;
    sock.send(Message::text(
        r#"{"jsonrpc":"2.0","id":1,"method":"server.version","params":["t","1.6"]}"#,
    ))
    .await?;
    let reply = sock.next().await.expect("a frame")?;
    let text = reply.into_text()?.to_string();
    assert!(!text.ends_with('\n'));
    assert_eq!(
        serde_json::from_str::<Value>(&text)?["result"][1],
        json!("1.6")
    );
    sock.send(Message::text(
        r#"{"jsonrpc":"2.0","id":2,"method":"blockchain.headers.subscribe"}"#,
    ))
    .await?;
    let tip: Value = serde_json::from_str(&sock.next().await.expect("a frame")?.into_text()?)?;
    assert_eq!(tip["result"]["height"], json!(fx.chain.height()));

    // Secure WebSocket: TLS, then the WebSocket handshake.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", wss)).await?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost")?;
    let tls = tls_connector(&std::fs::read_to_string(path("p8.crt"))?)?
        .connect(name, tcp)
        .await?;
    let (mut sock, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{wss}/"), tls).await?;
    sock.send(Message::text(
        r#"{"jsonrpc":"2.0","id":1,"method":"server.version","params":["t","1.4"]}"#,
    ))
    .await?;
    let v: Value = serde_json::from_str(&sock.next().await.expect("a frame")?.into_text()?)?;
    assert_eq!(v["result"][1], json!("1.4"));

    // A new block is notified over the WebSocket subscription.
    fx.chain.mine(&fx.node, 1).await?;
    let (mut ws_sub, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{ws}/")).await?;
    ws_sub
        .send(Message::text(
            r#"{"jsonrpc":"2.0","id":1,"method":"server.version","params":["t","1.4"]}"#,
        ))
        .await?;
    ws_sub.next().await.expect("version reply")?;
    ws_sub
        .send(Message::text(
            r#"{"jsonrpc":"2.0","id":2,"method":"blockchain.headers.subscribe"}"#,
        ))
        .await?;
    let _ = ws_sub.next().await;
    fx.chain.mine(&fx.node, 1).await?;
    // Notifications arrive for each new tip; the last is the generated tip.
    let want = json!(fx.chain.height());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws_sub.next())
            .await?
            .expect("a frame")?;
        let note: Value = serde_json::from_str(&frame.into_text()?)?;
        assert_eq!(note["method"], json!("blockchain.headers.subscribe"));
        if note["params"][0]["height"] == want {
            break;
        }
    }
    drop(sock);
    fx.server.signal("TERM")?;
    assert!(fx.server.wait_exit(Duration::from_secs(30))?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_1_7_scriptpubkey_outpoints_ping_and_recent() -> Result<()> {
    let mut fx = start(115).await?;
    let port = fx.port;
    let ledger = fx.chain.ledger();
    // A confirmed, still unspent output of a wallet script, to follow.
    let (&(txid, vout), &(sh, _, height)) = ledger
        .utxos
        .iter()
        .find(|(_, (sh, _, _))| *sh == ScriptHash::of_script(&ScriptKind::Wallet(1).script()))
        .expect("an unspent output of wallet 1");
    let spk = const_hex::encode(ScriptKind::Wallet(1).script());
    let mut c = tokio::task::block_in_place(|| -> Result<RawConn> {
        let mut c = RawConn::connect(port)?;
        assert_eq!(
            c.result("server.version", json!(["t", ["1.4", "1.7"]]))?[1],
            json!("1.7")
        );
        // scripthash.* is gone in 1.7; scriptpubkey.* wraps lists in objects.
        assert_eq!(
            c.error_code("blockchain.scripthash.get_balance", json!([sh.to_hex()]))?,
            -32601
        );
        let hist = c.result("blockchain.scriptpubkey.get_history", json!([spk]))?;
        let want: Vec<Value> = ledger.history[&sh]
            .iter()
            .map(|(t, h)| json!({"tx_hash": t.to_display_hex(), "height": h}))
            .collect();
        assert_eq!(hist["history"], json!(want));
        let utxos = c.result("blockchain.scriptpubkey.listunspent", json!([spk]))?;
        assert!(
            utxos["utxos"]
                .as_array()
                .unwrap()
                .iter()
                .any(|u| u["tx_hash"] == json!(txid.to_display_hex()))
        );
        assert_eq!(
            c.result("blockchain.scriptpubkey.get_balance", json!([spk]))?["confirmed"],
            json!(ledger.balance(&sh))
        );
        let status = c.result("blockchain.scriptpubkey.subscribe", json!([spk]))?;
        assert!(status.is_string());
        // server.ping 1.7: pong of the asked length.
        assert_eq!(
            c.result("server.ping", json!([5, "ab"]))?["data"],
            json!("00000")
        );
        assert!(
            c.result("server.features", json!([]))?
                .get("hash_function")
                .is_none()
        );
        // Outpoints: unknown, unspent, then (below) spent.
        assert_eq!(
            c.result(
                "blockchain.outpoint.get_status",
                json!([format!("{:064}", 1), 0, "51"])
            )?,
            json!({})
        );
        assert_eq!(
            c.error_code(
                "blockchain.outpoint.get_status",
                json!([txid.to_display_hex(), vout])
            )?,
            -32602
        );
        let st = c.result(
            "blockchain.outpoint.subscribe",
            json!([txid.to_display_hex(), vout, spk]),
        )?;
        assert_eq!(st, json!({"funder_height": height}));
        Ok(c)
    })?;
    // An outpoint spent in the mempool, then in a block: the status follows, and the
    // subscription is notified when the spender confirms.
    let sent = fx.chain.send_to_mempool(&fx.node, 5).await?;
    let (op_txid, op_vout) = sent[0].inputs[0];
    let funder_height = fx.chain.ledger().positions[&op_txid].0;
    let spender = sent[0].txid.to_display_hex();
    tokio::task::block_in_place(|| -> Result<()> {
        let st = eventually(|| {
            let st = c.result(
                "blockchain.outpoint.subscribe",
                json!([op_txid.to_display_hex(), op_vout, "51"]),
            )?;
            Ok(st.get("spender_txhash").is_some().then_some(st))
        })?;
        assert_eq!(
            st,
            json!({"funder_height": funder_height, "spender_txhash": spender, "spender_height": 0})
        );
        // mempool.recent lists what arrived last. The transactions were submitted one by
        // one, so the refresh that saw the spender may not have seen the later ones yet.
        let wanted: Vec<String> = sent.iter().map(|t| t.txid.to_display_hex()).collect();
        eventually(|| {
            let recent = c.result("mempool.recent", json!([]))?;
            let ids: Vec<String> = recent
                .as_array()
                .expect("mempool.recent answers a list")
                .iter()
                .map(|e| e["txid"].as_str().expect("txid").to_string())
                .collect();
            Ok(wanted.iter().all(|w| ids.contains(w)).then_some(()))
        })?;
        Ok(())
    })?;
    fx.chain.mine(&fx.node, 1).await?;
    let mined_at = fx.chain.height();
    let note = tokio::task::block_in_place(|| -> Result<Value> {
        loop {
            let v = c.recv()?.expect("connection open");
            if v["method"] == json!("blockchain.outpoint.subscribe")
                && v["params"][0] == json!(op_txid.to_display_hex())
                && v["params"][1] == json!(op_vout)
                && v["params"][2]["spender_height"] != json!(0)
            {
                return Ok(v);
            }
        }
    })?;
    assert_eq!(note["params"][0], json!(op_txid.to_display_hex()));
    assert_eq!(
        note["params"][2],
        json!({"funder_height": funder_height, "spender_txhash": spender, "spender_height": mined_at})
    );
    fx.server.signal("TERM")?;
    assert!(fx.server.wait_exit(Duration::from_secs(30))?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_histories_stream_status_and_hit_the_configured_limit() -> Result<()> {
    // Two scripts share every spendable output: each gets tens of thousands of transactions.
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed: 9,
        txs_per_block: 400,
        wallets: 2,
        p2pkh_rate: 0.0,
        ..GenParams::default()
    });
    chain.mine(&node, 200).await?;
    let db = tempfile::tempdir()?;
    let port = free_port();
    let mut server = ServerProcess::start(&[
        ("DAEMON_URL", node.rpc_url()),
        (
            "DAEMON_COOKIE_FILE",
            node.cookie_path().display().to_string(),
        ),
        ("DB_DIRECTORY", db.path().display().to_string()),
        ("COIN", "BitcoinSV".into()),
        ("NET", "regtest".into()),
        ("SERVICES", format!("tcp://127.0.0.1:{port}")),
        // 350,000 bytes: at most 3,534 history entries per answer.
        ("MAX_SEND", "350000".into()),
    ])?;
    server.wait_for_line("listening for clients", 1, Duration::from_secs(180))?;
    let ledger = chain.ledger();
    let kind = ScriptKind::Wallet(0);
    let sh = ScriptHash::of_script(&kind.script());
    let history = &ledger.history[&sh];
    assert!(history.len() > 20_000, "a big history: {}", history.len());
    tokio::task::block_in_place(|| -> Result<()> {
        let mut c = RawConn::connect(port)?;
        c.result("server.version", json!(["t", "1.6"]))?;
        // Too large to send: the spec's error, not a truncated or endless answer.
        assert_eq!(
            c.error_code("blockchain.scripthash.get_history", json!([sh.to_hex()]))?,
            10001
        );
        // The status is computed by streaming the whole history, and is exact.
        let entries: Vec<(String, i64)> = history
            .iter()
            .map(|(t, h)| (t.to_display_hex(), *h as i64))
            .collect();
        let status = c.result("blockchain.scripthash.subscribe", json!([sh.to_hex()]))?;
        assert_eq!(status.as_str().map(String::from), status_of(&entries));
        let balance = c.result("blockchain.scripthash.get_balance", json!([sh.to_hex()]))?;
        assert_eq!(balance["confirmed"], json!(ledger.balance(&sh)));
        // Other sessions are served meanwhile and afterwards.
        let mut other = RawConn::connect(port)?;
        other.result("server.version", json!(["t", "1.4"]))?;
        assert!(other.result("server.ping", json!([]))?.is_null());
        Ok(())
    })?;
    server.signal("TERM")?;
    assert!(server.wait_exit(Duration::from_secs(30))?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_limits_and_drop_client() -> Result<()> {
    let mut fx = start_with(101, |_| {
        vec![
            ("COST_SOFT_LIMIT", "20".into()),
            ("COST_HARD_LIMIT", "300".into()),
            ("REQUEST_SLEEP", "50".into()),
            ("DROP_CLIENT", "^badwallet".into()),
        ]
    })
    .await?;
    let port = fx.port;
    tokio::task::block_in_place(|| -> Result<()> {
        // DROP_CLIENT: refused by name, then disconnected.
        let mut c = RawConn::connect(port)?;
        assert_eq!(
            c.error_code("server.version", json!(["badwallet 1.0", "1.4"]))?,
            1
        );
        assert!(c.recv()?.is_none());
        // A session that keeps sending bad requests is slowed, then closed with -101.
        let mut c = RawConn::connect(port)?;
        c.result("server.version", json!(["good", "1.4"]))?;
        let mut closed = false;
        for _ in 0..20 {
            let r = c.call("blockchain.block.header", json!([999_999]))?;
            if r["error"]["code"] == json!(-101) {
                closed = c.recv()?.is_none();
                break;
            }
        }
        assert!(closed, "the abusive session was closed with -101");
        // Others are unaffected.
        let mut d = RawConn::connect(port)?;
        d.result("server.version", json!(["good", "1.4"]))?;
        assert!(d.result("server.ping", json!([]))?.is_null());
        Ok(())
    })?;
    fx.server.signal("TERM")?;
    assert!(fx.server.wait_exit(Duration::from_secs(30))?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mempool_payment_confirms_then_returns_to_the_mempool_after_a_reorg() -> Result<()> {
    let mut fx = start(110).await?;
    let port = fx.port;
    let sent = fx.chain.send_to_mempool(&fx.node, 8).await?;
    // A wallet paid by the first sent transaction, and every sent tx paying it.
    let kind = sent[0]
        .outputs
        .iter()
        .map(|(_, k)| *k)
        .find(|k| matches!(k, ScriptKind::Wallet(_)))
        .unwrap();
    let script_hash = ScriptHash::of_script(&kind.script());
    let sh = script_hash.to_hex();
    let paying: Vec<String> = sent
        .iter()
        .filter(|t| t.outputs.iter().any(|(_, k)| *k == kind))
        .map(|t| t.txid.to_display_hex())
        .collect();
    let heights_of = |c: &mut RawConn| -> Result<Vec<(String, i64)>> {
        let h = c.result("blockchain.scripthash.get_history", json!([sh]))?;
        Ok(h.as_array()
            .unwrap()
            .iter()
            .filter(|e| paying.contains(&e["tx_hash"].as_str().unwrap().to_string()))
            .map(|e| {
                (
                    e["tx_hash"].as_str().unwrap().to_string(),
                    e["height"].as_i64().unwrap(),
                )
            })
            .collect())
    };
    // Balance as (confirmed, unconfirmed), and the heights of the script's UTXOs created by
    // the paying transactions. Asked twice each time: the second answer comes from the
    // server's script cache, which a new block or a reorg must not leave stale.
    let balance_of = |c: &mut RawConn| -> Result<(i64, i64)> {
        let b = c.result("blockchain.scripthash.get_balance", json!([sh]))?;
        let b = (
            b["confirmed"].as_i64().unwrap(),
            b["unconfirmed"].as_i64().unwrap(),
        );
        let again = c.result("blockchain.scripthash.get_balance", json!([sh]))?;
        assert_eq!(again["confirmed"].as_i64().unwrap(), b.0);
        Ok(b)
    };
    let utxo_heights_of = |c: &mut RawConn| -> Result<Vec<i64>> {
        let u = c.result("blockchain.scripthash.listunspent", json!([sh]))?;
        assert_eq!(
            c.result("blockchain.scripthash.listunspent", json!([sh]))?,
            u
        );
        Ok(u.as_array()
            .unwrap()
            .iter()
            .filter(|e| paying.contains(&e["tx_hash"].as_str().unwrap().to_string()))
            .map(|e| e["height"].as_i64().unwrap())
            .collect())
    };
    let confirmed_before = fx.chain.ledger().balance(&script_hash);
    let mut c = tokio::task::block_in_place(|| -> Result<_> {
        let mut c = RawConn::connect(port)?;
        c.result("server.version", json!(["t", "1.6"]))?;
        // Seen unconfirmed: height 0 (or -1 with an unconfirmed parent).
        eventually(|| {
            let h = heights_of(&mut c)?;
            Ok((h.len() == paying.len() && h.iter().all(|(_, ht)| *ht <= 0)).then_some(()))
        })?;
        let balance = balance_of(&mut c)?;
        assert_eq!(balance.0, confirmed_before as i64);
        assert_ne!(balance.1, 0, "the payments show as unconfirmed");
        assert!(utxo_heights_of(&mut c)?.iter().all(|h| *h == 0));
        Ok(c)
    })?;
    // Mined: confirmed at the new height.
    fx.chain.mine(&fx.node, 1).await?;
    let mined = fx.chain.height() as i64;
    let confirmed_mined = fx.chain.ledger().balance(&script_hash) as i64;
    tokio::task::block_in_place(|| -> Result<()> {
        eventually(|| {
            let h = heights_of(&mut c)?;
            Ok((h.len() == paying.len() && h.iter().all(|(_, ht)| *ht == mined)).then_some(()))
        })?;
        assert_eq!(balance_of(&mut c)?, (confirmed_mined, 0));
        let utxos = utxo_heights_of(&mut c)?;
        assert!(!utxos.is_empty() && utxos.iter().all(|h| *h == mined));
        Ok(())
    })?;
    // Confirmed transactions are answered from the transaction cache the second time.
    let raw_of = |c: &mut RawConn, txid: &str| -> Result<Value> {
        c.result("blockchain.transaction.get", json!([txid]))
    };
    let first_raw = tokio::task::block_in_place(|| -> Result<Value> {
        let raw = raw_of(&mut c, &paying[0])?;
        assert_eq!(raw_of(&mut c, &paying[0])?, raw);
        Ok(raw)
    })?;
    // That block is replaced by a longer branch without it: back in the mempool.
    fx.chain.reorg_empty(&fx.node, 1).await?;
    let confirmed_after_reorg = fx.chain.ledger().balance(&script_hash) as i64;
    tokio::task::block_in_place(|| {
        eventually(|| {
            let tip = c.result("blockchain.headers.subscribe", json!([]))?;
            let h = heights_of(&mut c)?;
            Ok((tip["height"] == json!(fx.chain.height())
                && h.len() == paying.len()
                && h.iter().all(|(_, ht)| *ht <= 0))
            .then_some(()))
        })
    })?;
    // Unconfirmed again (the cache was cleared by the reorg), and still the same bytes.
    tokio::task::block_in_place(|| -> Result<()> {
        assert_eq!(raw_of(&mut c, &paying[0])?, first_raw);
        // The taken-back block's transactions are all in the mempool again.
        let (confirmed, unconfirmed) = balance_of(&mut c)?;
        assert_eq!(confirmed, confirmed_after_reorg);
        assert_ne!(unconfirmed, 0);
        assert!(utxo_heights_of(&mut c)?.iter().all(|h| *h == 0));
        Ok(())
    })?;
    fx.server.signal("TERM")?;
    assert!(fx.server.wait_exit(Duration::from_secs(30))?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_holds_up_nobody() -> Result<()> {
    let mut fx = start_with(105, |_| vec![("SEND_QUEUE", "8".into())]).await?;
    let port = fx.port;
    tokio::task::block_in_place(|| -> Result<()> {
        let mut watcher = RawConn::connect(port)?;
        watcher.result("server.version", json!(["w", "1.4"]))?;
        watcher.result("blockchain.headers.subscribe", json!([]))?;
        // Ask for megabytes of headers and never read the answers.
        let mut greedy = RawConn::connect(port)?;
        let mut reqs = String::new();
        reqs.push_str("{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"server.version\",\"params\":[\"g\",\"1.4\"]}\n");
        for i in 1..400 {
            reqs.push_str(&format!("{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":\"blockchain.block.headers\",\"params\":[0,2016]}}\n"));
        }
        // The server may close the connection while we are still writing.
        let _ = greedy.send_raw(reqs.as_bytes());
        // Meanwhile others are served.
        assert!(watcher.result("server.ping", json!([]))?.is_null());
        Ok(())
    })?;
    // And the server log says the greedy one was dropped.
    fx.server
        .wait_for_line("not reading its replies", 1, Duration::from_secs(60))?;
    // Blocks are still processed and notified to the others.
    fx.chain.mine(&fx.node, 1).await?;
    let mut c = tokio::task::block_in_place(|| RawConn::connect(port))?;
    tokio::task::block_in_place(|| -> Result<()> {
        c.result("server.version", json!(["x", "1.4"]))?;
        eventually(|| {
            let tip = c.result("blockchain.headers.subscribe", json!([]))?;
            Ok((tip["height"] == json!(fx.chain.height())).then_some(()))
        })
    })?;
    fx.server.signal("TERM")?;
    assert!(fx.server.wait_exit(Duration::from_secs(30))?.success());
    Ok(())
}

/// A wallet syncs headers in aligned chunks of 2,016, which the server keeps rendered: the
/// same chunk asked again (in both result forms, with a checkpoint too) is the chain's, and
/// after a reorg below the chunk's end it is the new chain's, never the cached old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_header_chunk_is_the_chains_again_and_after_a_reorg() -> Result<()> {
    // Heights 0..=2016: the chunk of heights 0..=2015 is complete.
    let mut fx = start(2016).await?;
    let port = fx.port;
    let check = |chain: &ChainGen| -> Result<()> {
        // Heights 1..=2015 (blocks[h - 1] is height h; the genesis is not generated).
        let want: Vec<String> = chain.blocks[..2015]
            .iter()
            .map(|b| const_hex::encode(b.header))
            .collect();
        for _ in 0..2 {
            let mut c = RawConn::connect(port)?;
            c.result("server.version", json!(["t", "1.6"]))?;
            let h = c.result("blockchain.block.headers", json!([0, 2016]))?;
            assert_eq!(h["count"], json!(2016));
            let got: Vec<&str> = h["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap())
                .collect();
            assert_eq!(got.len(), 2016);
            assert_eq!(
                got[1..],
                want.iter().map(String::as_str).collect::<Vec<_>>()[..]
            );
            // With a checkpoint: the proof of the chunk's last header.
            let h = c.result("blockchain.block.headers", json!([0, 2016, 2016]))?;
            let one = c.result("blockchain.block.header", json!([2015, 2016]))?;
            assert_eq!(h["headers"][2015], one["header"]);
            assert_eq!(h["branch"], one["branch"]);
            assert_eq!(h["root"], one["root"]);

            let mut c = RawConn::connect(port)?;
            c.result("server.version", json!(["t", "1.4"]))?;
            let h = c.result("blockchain.block.headers", json!([0, 2016]))?;
            assert_eq!(h["count"], json!(2016));
            assert_eq!(h["hex"].as_str().unwrap()[160..], want.concat());
        }
        Ok(())
    };
    tokio::task::block_in_place(|| check(&fx.chain))?;
    // Heights 2014..=2016 replaced by a longer branch: the chunk's last two headers change.
    fx.chain.reorg(&fx.node, 3).await?;
    let tip = fx.chain.height();
    tokio::task::block_in_place(|| -> Result<()> {
        let mut c = RawConn::connect(port)?;
        c.result("server.version", json!(["t", "1.6"]))?;
        eventually(|| {
            let t = c.result("blockchain.headers.subscribe", json!([]))?;
            Ok((t["height"] == json!(tip)).then_some(()))
        })?;
        check(&fx.chain)
    })?;
    fx.server.signal("TERM")?;
    assert!(fx.server.wait_exit(Duration::from_secs(30))?.success());
    Ok(())
}
