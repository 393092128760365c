//! Newline framing, the one line reader of every line protocol the server speaks:
//! Electrum sessions, LocalRPC, the peer client and IRC. A line longer than its limit is
//! skipped up to its newline (the stream resynchronises, as in ElectrumX), bytes that are
//! not UTF-8 are replaced, and the work is linear in the bytes read however they arrive.

use tokio::io::{AsyncRead, AsyncReadExt};

/// What the line reader produced.
pub enum Line {
    /// A complete message (without its newline).
    Text(String),
    /// A message longer than the limit was skipped up to its newline.
    TooLong,
    /// The client closed the connection.
    Eof,
}

/// Bytes of room the line reader makes for each read.
const READ_CHUNK: usize = 16384;

/// Newline framing with a length limit that, unlike a codec that fails for good, drops an
/// oversized message and carries on with the next one. Lines are taken from the front of
/// one buffer by an offset, and a partial line is only searched from where the last search
/// stopped, so many lines in one packet, or one long line over many reads, cost work
/// linear in their bytes.
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already returned.
    start: usize,
    /// Bytes after `start` known to hold no newline.
    scanned: usize,
    max: usize,
    discarding: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// Reads lines of at most `max` bytes from `inner`.
    pub fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            buf: Vec::with_capacity(4096),
            start: 0,
            scanned: 0,
            max,
            discarding: false,
        }
    }

    /// The next line (its `\n` removed, and a `\r` before it: CR LF ends a line too).
    /// Cancel-safe: a call dropped while waiting for bytes loses nothing.
    pub async fn next_line(&mut self) -> std::io::Result<Line> {
        loop {
            let unread = &self.buf[self.start..];
            if let Some(i) = unread[self.scanned..].iter().position(|b| *b == b'\n') {
                let len = self.scanned + i;
                let too_long = std::mem::take(&mut self.discarding) || len > self.max;
                let text = &unread[..len];
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                let line = (!too_long).then(|| text.to_vec());
                self.start += len + 1;
                self.scanned = 0;
                return Ok(match line {
                    // Valid UTF-8 (nearly always) becomes the line without another copy.
                    Some(line) => Line::Text(
                        String::from_utf8(line)
                            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                    ),
                    None => Line::TooLong,
                });
            }
            self.scanned = unread.len();
            if self.scanned > self.max {
                // Skipped up to the next newline; only the fact is kept.
                self.discarding = true;
                self.start = self.buf.len();
                self.scanned = 0;
            }
            // Returned lines leave the buffer before it is read into again: the partial line
            // left, if any, moves to the front once per read.
            self.buf.drain(..self.start);
            self.start = 0;
            if self.buf.capacity() > 4 * READ_CHUNK && self.buf.len() < READ_CHUNK {
                // A long message grew it: give the room back.
                self.buf.shrink_to(READ_CHUNK);
            }
            // Read straight into the buffer's spare room (no zeroed scratch array a read).
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return Ok(Line::Eof);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines split across reads, several in one read, an oversized one skipped with the
    /// stream resynchronised after it, invalid UTF-8 replaced, and the end of the stream.
    #[tokio::test]
    async fn line_reader_frames_resynchronises_and_ends() {
        let (mut client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for part in [
                &b"first\r\nsec"[..],
                b"ond\nthird\n",
                &[b'x'; 40],
                &[b'y'; 40],
                b"\nafter\n\xff\n",
            ] {
                client.write_all(part).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut lines = LineReader::new(server, 30);
        let mut got = Vec::new();
        loop {
            match lines.next_line().await.unwrap() {
                Line::Text(t) => got.push(t),
                Line::TooLong => got.push("<too long>".into()),
                Line::Eof => break,
            }
        }
        writer.await.unwrap();
        assert_eq!(
            got,
            [
                "first",
                "second",
                "third",
                "<too long>",
                "after",
                "\u{fffd}"
            ]
        );
    }
}
