//! Messages queued for a session's writer. A message is text in parts: a long answer kept
//! rendered in a cache (a script's confirmed history, header chunks) goes out as shared
//! slices of the cached text, between the reply's envelope and its tail, without being
//! copied into the message: copying a multi-megabyte answer into a fresh buffer for every
//! request cost more (the kernel zeroing the new pages, then the copy) than sending it.
//!
//! A session's queue ([`Outbox`]) is bounded in messages and in bytes: a client that does
//! not read what it asked for cannot make the server hold more than that for it.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc;

/// The sending side of a session's queue of messages, shared by the session's requests and
/// the notifier. Bounded in messages (`SEND_QUEUE`) and in bytes ([`Outbox::max_bytes`]).
#[derive(Clone, Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The writer's side of a session's queue.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<Outgoing>,
    queued: Arc<AtomicUsize>,
}

/// The queue is over its bound (or the writer is gone): the session must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// A queue holding at most `max_messages` messages and `max_bytes` bytes.
pub fn queue(max_messages: usize, max_bytes: usize) -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::channel(max_messages.max(1));
    let queued = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            tx,
            queued: queued.clone(),
            max_bytes,
        },
        Inbox { rx, queued },
    )
}

impl Outbox {
    /// Queues `msg`; `Err` if that would pass either bound or the writer is gone.
    pub fn push(&self, msg: Outgoing) -> Result<(), QueueFull> {
        let len = msg.len();
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        if before + len > self.max_bytes && before > 0 {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(QueueFull);
        }
        self.tx.try_send(msg).map_err(|_| {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            QueueFull
        })
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The byte bound.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

impl Inbox {
    /// The next message; `None` when every [`Outbox`] is gone. Its bytes stop counting
    /// against the bound as it is taken for writing.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        let msg = self.rx.recv().await?;
        self.queued.fetch_sub(msg.len(), Ordering::AcqRel);
        Some(msg)
    }

    /// The next message if one is queued (as [`Inbox::recv`]).
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        let msg = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(msg.len(), Ordering::AcqRel);
        Some(msg)
    }
}

/// A message for a session: `head`, then the shared slices (if any), then `tail`, then a
/// newline (added by the writer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outgoing {
    head: String,
    shared: Vec<SharedSlice>,
    tail: String,
}

/// A byte range of cached text, sent without a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedSlice {
    text: Arc<String>,
    range: Range<usize>,
}

impl SharedSlice {
    /// The whole of `text`.
    pub fn whole(text: Arc<String>) -> Self {
        let range = 0..text.len();
        SharedSlice { text, range }
    }

    /// `range` of `text`; `None` unless it lies within the text, on character boundaries.
    pub fn new(text: Arc<String>, range: Range<usize>) -> Option<Self> {
        text.get(range.clone())?;
        Some(SharedSlice { text, range })
    }

    /// The text of the slice.
    pub fn as_str(&self) -> &str {
        &self.text[self.range.clone()]
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.range.len()
    }

    /// The slice without its last `n` bytes (unchanged if that would cut a character).
    pub fn trimmed_end(mut self, n: usize) -> Self {
        let end = self.range.end.saturating_sub(n).max(self.range.start);
        if self.text.is_char_boundary(end) {
            self.range.end = end;
        }
        self
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

impl Outgoing {
    /// A message of `head`, the `shared` slices and `tail`, in that order.
    pub fn assembled(head: String, shared: Vec<SharedSlice>, tail: String) -> Self {
        Outgoing { head, shared, tail }
    }

    /// Its length in bytes (without the newline).
    pub fn len(&self) -> usize {
        self.head.len() + self.shared.iter().map(SharedSlice::len).sum::<usize>() + self.tail.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its parts in order (some may be empty).
    pub fn parts(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.head.as_str())
            .chain(self.shared.iter().map(SharedSlice::as_str))
            .chain(std::iter::once(self.tail.as_str()))
    }

    /// Appends the newline that ends a message on the wire, to the last part.
    pub fn end_line(&mut self) {
        if self.shared.is_empty() && self.tail.is_empty() {
            self.head.push('\n');
        } else {
            self.tail.push('\n');
        }
    }

    /// Appends the whole text to `out`.
    pub fn append_to(&self, out: &mut String) {
        out.reserve(self.len());
        for p in self.parts() {
            out.push_str(p);
        }
    }

    /// The whole text as one string (copied only if it has a shared part).
    pub fn into_string(self) -> String {
        if self.shared.is_empty() && self.tail.is_empty() {
            return self.head;
        }
        let mut out = String::with_capacity(self.len());
        self.append_to(&mut out);
        out
    }
}

impl From<String> for Outgoing {
    fn from(text: String) -> Self {
        Outgoing {
            head: text,
            shared: Vec::new(),
            tail: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_of_shared_text_are_sent_in_order() {
        let a = Arc::new("0123456789".to_string());
        let b = Arc::new("abcdef".to_string());
        let parts = vec![
            SharedSlice::new(a.clone(), 7..10).unwrap(),
            SharedSlice::new(b.clone(), 0..2).unwrap(),
        ];
        let m = Outgoing::assembled("<".into(), parts, ">".into());
        assert_eq!(m.len(), 7);
        assert_eq!(m.into_string(), "<789ab>");
        assert!(SharedSlice::new(a.clone(), 5..11).is_none());
        assert!(SharedSlice::new(Arc::new("é".to_string()), 0..1).is_none());
    }

    #[test]
    fn spliced_message_reads_as_its_parts_in_order() {
        let body = Arc::new("{\"a\":1},{\"b\":2}".to_string());
        let whole = vec![SharedSlice::whole(body.clone())];
        let mut m = Outgoing::assembled("[".into(), whole, "]".into());
        assert_eq!(m.len(), body.len() + 2);
        assert_eq!(m.clone().into_string(), "[{\"a\":1},{\"b\":2}]");
        m.end_line();
        assert_eq!(m.parts().collect::<String>(), "[{\"a\":1},{\"b\":2}]\n");
        // The shared part is not copied.
        assert!(std::ptr::eq(
            m.parts().nth(1).unwrap().as_ptr(),
            body.as_ptr()
        ));
    }

    #[test]
    fn plain_message_ends_its_line_in_place() {
        let mut m = Outgoing::from("{}".to_string());
        assert!(!m.is_empty());
        m.end_line();
        assert_eq!(m.parts().collect::<Vec<_>>(), ["{}\n", ""]);
        assert_eq!(m.into_string(), "{}\n");
    }
}
