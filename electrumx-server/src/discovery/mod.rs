//! Finding and advertising peers: the peer manager (`server.peers.subscribe`,
//! `server.add_peer`, verification, Tor/SOCKS dialing) and IRC advertising.

pub mod irc;
pub mod peers;
