//! Messages queued for a session's writer. A message is text in up to three parts: a long
//! answer kept rendered in a cache (a script's confirmed history) goes out as the shared
//! middle part, between the reply's envelope and its tail, without being copied into the
//! message: copying a multi-megabyte answer into a fresh buffer for every request cost more
//! (the kernel zeroing the new pages, then the copy) than sending it.

use std::sync::Arc;

/// A message for a session: `head`, then the shared `body` (if any), then `tail`, then a
/// newline (added by the writer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outgoing {
    head: String,
    body: Option<Arc<String>>,
    tail: String,
}

impl Outgoing {
    /// A message of `head`, the shared `body` and `tail`, in that order.
    pub fn spliced(head: String, body: Arc<String>, tail: String) -> Self {
        Outgoing {
            head,
            body: Some(body),
            tail,
        }
    }

    /// Its length in bytes (without the newline).
    pub fn len(&self) -> usize {
        self.head.len() + self.body.as_ref().map_or(0, |b| b.len()) + self.tail.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its parts in order (some may be empty).
    pub fn parts(&self) -> [&str; 3] {
        [
            &self.head,
            self.body.as_ref().map_or("", |b| b.as_str()),
            &self.tail,
        ]
    }

    /// Appends the newline that ends a message on the wire, to the last part.
    pub fn end_line(&mut self) {
        if self.body.is_none() && self.tail.is_empty() {
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
        if self.body.is_none() && self.tail.is_empty() {
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
            body: None,
            tail: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spliced_message_reads_as_its_parts_in_order() {
        let body = Arc::new("{\"a\":1},{\"b\":2}".to_string());
        let mut m = Outgoing::spliced("[".into(), body.clone(), "]".into());
        assert_eq!(m.len(), body.len() + 2);
        assert_eq!(m.clone().into_string(), "[{\"a\":1},{\"b\":2}]");
        m.end_line();
        assert_eq!(m.parts().concat(), "[{\"a\":1},{\"b\":2}]\n");
        // The shared part is not copied.
        assert!(std::ptr::eq(m.parts()[1].as_ptr(), body.as_ptr()));
    }

    #[test]
    fn plain_message_ends_its_line_in_place() {
        let mut m = Outgoing::from("{}".to_string());
        assert!(!m.is_empty());
        m.end_line();
        assert_eq!(m.parts(), ["{}\n", "", ""]);
        assert_eq!(m.into_string(), "{}\n");
    }
}
