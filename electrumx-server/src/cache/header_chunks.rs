//! Rendered `blockchain.block.headers` chunks. A wallet syncs headers 2,016 at a time (322 KB
//! of hex each), and every new wallet asks for the same ones; rendering them means copying
//! 161 KB of headers and hex-encoding them. Each chunk of the chain (heights `k·2016 ..
//! k·2016 + 2015`, the last one up to the tip) is kept here rendered, and an answer is put
//! together from slices of at most two of them (an unaligned request spans two), sent
//! without a copy.
//!
//! A chunk's text is its headers' items back to back, every item the same length (`"hex",`
//! in the list form, the bare hex in the concatenated one), so headers `i..j` of a chunk are
//! the bytes `i·len .. j·len`. Entries are keyed by the hash of the chunk's last rendered
//! header (and the form), so neither a new block nor a reorg can serve a stale chunk: both
//! change the header at the chunk's last height (or add one), and the old entry is simply
//! not asked for again (the LRU drops it).

use crate::cache::{CacheStats, SizedLru};
use crate::protocol::outgoing::SharedSlice;
use electrumx_core::parse::HEADER_LEN;
use electrumx_core::{BlockHash, ChainIndex, Hash32, Index};
use parking_lot::Mutex;
use std::sync::Arc;

/// Headers per chunk: the most `blockchain.block.headers` returns, a difficulty period.
pub const CHUNK: u32 = 2016;

/// Hex digits of one block header.
const HEADER_HEX_LEN: usize = 2 * HEADER_LEN;

/// How headers are written: the protocol's two result forms.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum HeadersForm {
    /// Protocol 1.6 and later: `"headers":["…","…"]`, one string per header.
    List,
    /// Before 1.6: `"hex":"…"`, the headers concatenated.
    Concatenated,
}

impl HeadersForm {
    /// Bytes of one header's item in a chunk's text.
    fn item_len(self) -> usize {
        match self {
            HeadersForm::List => HEADER_HEX_LEN + 3,
            HeadersForm::Concatenated => HEADER_HEX_LEN,
        }
    }

    /// The result's member up to the first header, and after the last.
    pub fn brackets(self) -> (&'static str, &'static str) {
        match self {
            HeadersForm::List => ("\"headers\":[", "]"),
            HeadersForm::Concatenated => ("\"hex\":\"", "\""),
        }
    }
}

/// Where the headers come from: the chain index (a plain list in tests).
pub trait HeaderSource {
    /// Hash of the block at `height`.
    fn block_hash(&self, height: u32) -> Option<BlockHash>;
    /// Up to `count` consecutive headers from `start`.
    fn headers(&self, start: u32, count: u32) -> Vec<[u8; HEADER_LEN]>;
}

impl HeaderSource for Index {
    fn block_hash(&self, height: u32) -> Option<BlockHash> {
        ChainIndex::block_hash(self, height)
    }
    fn headers(&self, start: u32, count: u32) -> Vec<[u8; HEADER_LEN]> {
        ChainIndex::headers(self, start, count)
    }
}

/// Recently asked chunks, bounded by the bytes of text held.
pub struct HeaderChunkCache {
    inner: Mutex<SizedLru<(BlockHash, HeadersForm), Arc<String>>>,
}

impl HeaderChunkCache {
    /// A cache holding at most `max_bytes` of rendered text.
    pub fn new(max_bytes: usize) -> Self {
        HeaderChunkCache {
            inner: Mutex::new(SizedLru::new(max_bytes)),
        }
    }

    /// The headers of heights `start .. start + count` (at most up to `tip`, the index's tip
    /// height) as slices of rendered text, without the form's brackets. Chunks come from the
    /// cache or are rendered into it. The headers are read in up to two steps: the caller
    /// checks that the tip did not change meanwhile.
    pub fn slices<I: HeaderSource + ?Sized>(
        &self,
        index: &I,
        tip: u32,
        start: u32,
        count: u32,
        form: HeadersForm,
    ) -> Vec<SharedSlice> {
        let item = form.item_len();
        let end = start.saturating_add(count).min(tip.saturating_add(1));
        let mut out = Vec::with_capacity(2);
        let mut height = start;
        while height < end {
            let chunk_start = height - height % CHUNK;
            let chunk_last = chunk_start.saturating_add(CHUNK - 1);
            let upto = end.min(chunk_last.saturating_add(1));
            let (text, base) = match self.chunk(index, chunk_start, chunk_last.min(tip), form) {
                Some(text) => (text, chunk_start),
                None => {
                    let headers = index.headers(height, upto - height);
                    (Arc::new(render_items(&headers, form)), height)
                }
            };
            let from = (height - base) as usize * item;
            let to = ((upto - base) as usize * item).min(text.len());
            if from >= to {
                break; // the chain ends here
            }
            if let Some(slice) = SharedSlice::new(text, from..to) {
                out.push(slice);
            }
            height = upto;
        }
        if form == HeadersForm::List {
            trim_last_comma(&mut out);
        }
        out
    }

    /// The chunk's headers `chunk_start ..= last`, cached or rendered into the cache; `None`
    /// if the chain does not reach `last` (it got shorter meanwhile).
    fn chunk<I: HeaderSource + ?Sized>(
        &self,
        index: &I,
        chunk_start: u32,
        last: u32,
        form: HeadersForm,
    ) -> Option<Arc<String>> {
        let last_hash = index.block_hash(last)?;
        if let Some(text) = self.inner.lock().get(&(last_hash, form)) {
            return Some(text);
        }
        let n = last - chunk_start + 1;
        let headers = index.headers(chunk_start, n);
        if headers.len() != n as usize {
            return None;
        }
        let text = Arc::new(render_items(&headers, form));
        // Keyed by what was rendered, not by the hash read before.
        let key = (Hash32::sha256d(&headers[n as usize - 1]), form);
        self.inner.lock().insert(key, text.clone(), text.len());
        Some(text)
    }

    /// Lookups, hits and bytes held.
    pub fn stats(&self) -> CacheStats {
        self.inner.lock().stats()
    }
}

/// The list form's items end with a comma; the last one of an answer must not.
fn trim_last_comma(slices: &mut Vec<SharedSlice>) {
    if let Some(last) = slices.pop() {
        let trimmed = last.trimmed_end(1);
        if !trimmed.is_empty() {
            slices.push(trimmed);
        }
    }
}

/// The headers' items back to back, in the given form (see the module docs).
pub fn render_items(headers: &[[u8; HEADER_LEN]], form: HeadersForm) -> String {
    let mut out = Vec::with_capacity(headers.len() * form.item_len());
    let mut buf = [0u8; HEADER_HEX_LEN];
    for h in headers {
        const_hex::encode_to_slice(h, &mut buf).expect("160 hex digits");
        match form {
            HeadersForm::List => {
                out.push(b'"');
                out.extend_from_slice(&buf);
                out.extend_from_slice(b"\",");
            }
            HeadersForm::Concatenated => out.extend_from_slice(&buf),
        }
    }
    // One validation pass over ASCII, instead of one per header.
    String::from_utf8(out).expect("hex digits and JSON punctuation are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain of `n` distinct headers, nothing else.
    struct Headers(Vec<[u8; HEADER_LEN]>);

    impl Headers {
        fn new(n: u32, salt: u8) -> Self {
            Headers(
                (0..n)
                    .map(|h| {
                        let mut x = [salt; HEADER_LEN];
                        x[..4].copy_from_slice(&h.to_le_bytes());
                        x
                    })
                    .collect(),
            )
        }
    }

    impl HeaderSource for Headers {
        fn headers(&self, start: u32, count: u32) -> Vec<[u8; HEADER_LEN]> {
            let s = (start as usize).min(self.0.len());
            let e = s.saturating_add(count as usize).min(self.0.len());
            self.0[s..e].to_vec()
        }
        fn block_hash(&self, height: u32) -> Option<BlockHash> {
            self.0.get(height as usize).map(|h| Hash32::sha256d(h))
        }
    }

    /// The answer's member as a JSON object, from slices.
    fn answer(slices: &[SharedSlice], form: HeadersForm) -> serde_json::Value {
        let (open, close) = form.brackets();
        let body: String = slices.iter().map(SharedSlice::as_str).collect();
        serde_json::from_str(&format!("{{{open}{body}{close}}}")).unwrap()
    }

    fn hex_of(chain: &Headers, start: u32, count: u32) -> Vec<String> {
        chain
            .headers(start, count)
            .iter()
            .map(const_hex::encode)
            .collect()
    }

    #[test]
    fn any_range_reads_as_the_chains_headers() {
        let chain = Headers::new(2 * CHUNK + 100, 7);
        let tip = 2 * CHUNK + 99;
        let cache = HeaderChunkCache::new(16 << 20);
        // Aligned, unaligned across two chunks, into the partial last chunk, past the tip,
        // short, empty.
        for (start, count) in [
            (0, CHUNK),
            (5, CHUNK),
            (CHUNK - 1, 2),
            (CHUNK + 1000, CHUNK),
            (2 * CHUNK + 50, CHUNK),
            (2 * CHUNK + 99, 1),
            (2 * CHUNK + 100, 5),
            (3, 0),
        ] {
            for _ in 0..2 {
                let want = hex_of(&chain, start, count);
                let list = cache.slices(&chain, tip, start, count, HeadersForm::List);
                let got = answer(&list, HeadersForm::List);
                assert_eq!(got["headers"], serde_json::json!(want), "{start} {count}");
                let cat = cache.slices(&chain, tip, start, count, HeadersForm::Concatenated);
                let got = answer(&cat, HeadersForm::Concatenated);
                assert_eq!(got["hex"], want.concat(), "{start} {count}");
            }
        }
        // The three chunks are cached, in both forms.
        assert_eq!(cache.stats().entries, 6);
        // A new block: the last chunk is rendered anew, up to the new tip.
        let longer = Headers::new(2 * CHUNK + 101, 7);
        let slices = cache.slices(&longer, tip + 1, 2 * CHUNK, CHUNK, HeadersForm::List);
        assert_eq!(
            answer(&slices, HeadersForm::List)["headers"],
            serde_json::json!(hex_of(&longer, 2 * CHUNK, CHUNK))
        );
    }

    #[test]
    fn a_reorged_chunk_is_rendered_anew() {
        let cache = HeaderChunkCache::new(16 << 20);
        let old = Headers::new(CHUNK + 10, 1);
        let mut new = Headers::new(CHUNK + 10, 1);
        // The new branch forks below the chunk's end.
        for h in &mut new.0[CHUNK as usize - 3..] {
            h[10] = 2;
        }
        let slices = cache.slices(&old, CHUNK + 9, 0, CHUNK, HeadersForm::List);
        assert_eq!(
            answer(&slices, HeadersForm::List)["headers"],
            serde_json::json!(hex_of(&old, 0, CHUNK))
        );
        let slices = cache.slices(&new, CHUNK + 9, 0, CHUNK, HeadersForm::List);
        assert_eq!(
            answer(&slices, HeadersForm::List)["headers"],
            serde_json::json!(hex_of(&new, 0, CHUNK))
        );
    }
}
