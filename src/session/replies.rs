//! The one ordered queue of replies owed to the client.
//!
//! A client pairs replies with its commands by order alone, so a reply the gateway makes itself
//! must not overtake one the server still owes, and a transfer's final reply must not overtake
//! the transfer's last data byte. Every command gets a slot when it is taken; the server and the
//! gateway fill slots in any order, and only the head slot's bytes ever leave.

use super::DataId;
use std::collections::VecDeque;

#[derive(Debug)]
struct Slot {
    id: u64,
    /// Bytes that go as soon as the slot is at the head.
    bytes: Vec<u8>,
    /// Bytes that also wait for `after_data` to finish (a transfer's closing reply).
    held: Vec<u8>,
    /// The final reply is in (the slot leaves once its bytes are out).
    done: bool,
    after_data: Option<DataId>,
}

/// The queue outgrew its bound: the server sent more than a client could be owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

#[derive(Debug)]
pub struct ReplyQueue {
    slots: VecDeque<Slot>,
    next: u64,
    held: usize,
    max_held: usize,
}

impl ReplyQueue {
    /// `max_held` bounds the bytes waiting behind the head slot (or behind a draining transfer).
    pub fn new(max_held: usize) -> Self {
        Self { slots: VecDeque::new(), next: 0, held: 0, max_held }
    }

    /// A new slot at the tail.
    pub fn open(&mut self) -> u64 {
        let id = self.next;
        self.next += 1;
        self.slots.push_back(Slot { id, bytes: Vec::new(), held: Vec::new(), done: false, after_data: None });
        id
    }

    fn slot(&mut self, id: u64) -> Option<&mut Slot> {
        // Slots are in id order, so the position is the id's distance from the head.
        let head = self.slots.front()?.id;
        let i = usize::try_from(id.checked_sub(head)?).ok()?;
        self.slots.get_mut(i).filter(|s| s.id == id)
    }

    /// Adds reply bytes to a slot; `done` when they end its final reply. A slot that is gone
    /// (completed, or dropped by an abort) takes nothing.
    pub fn push(&mut self, id: u64, bytes: &[u8], done: bool) -> Result<(), Overflow> {
        let max = self.max_held;
        let held = self.held;
        let Some(slot) = self.slot(id) else { return Ok(()) };
        if held + bytes.len() > max {
            return Err(Overflow);
        }
        if slot.after_data.is_some() {
            slot.held.extend_from_slice(bytes);
        } else {
            slot.bytes.extend_from_slice(bytes);
        }
        slot.done |= done;
        self.held += bytes.len();
        Ok(())
    }

    /// Like [`push`](Self::push), but these bytes and everything the slot receives from now on
    /// wait until data channel `data` has finished; what the slot had before still goes first.
    pub fn push_after_data(&mut self, id: u64, bytes: &[u8], done: bool, data: DataId) -> Result<(), Overflow> {
        if let Some(slot) = self.slot(id) {
            slot.after_data.get_or_insert(data);
        }
        self.push(id, bytes, done)
    }

    /// Marks a slot complete with what it has (a transfer whose final reply an abort took over).
    pub fn finish(&mut self, id: u64) {
        if let Some(slot) = self.slot(id) {
            slot.done = true;
        }
    }

    /// Data channel `data` has finished or was dropped: replies waiting for it may go.
    pub fn data_gone(&mut self, data: DataId) {
        for s in self.slots.iter_mut().filter(|s| s.after_data == Some(data)) {
            s.after_data = None;
            let held = std::mem::take(&mut s.held);
            s.bytes.extend_from_slice(&held);
        }
    }

    /// Replaces a positive reply held for data channel `data` (a 226 whose data was cut short)
    /// with `bytes`; true when there was one.
    pub fn rewrite_positive_held(&mut self, data: DataId, bytes: &[u8]) -> bool {
        let mut done = false;
        for s in self.slots.iter_mut().filter(|s| s.after_data == Some(data) && s.held.first() == Some(&b'2')) {
            self.held = self.held - s.held.len() + bytes.len();
            s.held = bytes.to_vec();
            done = true;
        }
        done
    }

    /// True while some reply waits for a data channel to finish.
    pub fn waits_for_data(&self) -> bool {
        self.slots.iter().any(|s| s.after_data.is_some())
    }

    /// True when nothing is owed to the client any more.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Hands out, in order, every byte that may go now.
    pub fn drain(&mut self, mut emit: impl FnMut(u64, Vec<u8>)) {
        while let Some(head) = self.slots.front_mut() {
            if !head.bytes.is_empty() {
                let bytes = std::mem::take(&mut head.bytes);
                self.held -= bytes.len();
                emit(head.id, bytes);
            }
            if !head.done || head.after_data.is_some() {
                return;
            }
            self.slots.pop_front();
        }
    }

    /// Drops everything still owed (the session is closing with a 421 of its own).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.held = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(q: &mut ReplyQueue) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        q.drain(|id, b| out.push((id, String::from_utf8(b).unwrap())));
        out
    }

    #[test]
    fn a_later_slot_waits_for_the_head() {
        let mut q = ReplyQueue::new(1024);
        let (a, b) = (q.open(), q.open());
        q.push(b, b"534 no\r\n", true).unwrap();
        assert!(drained(&mut q).is_empty());
        q.push(a, b"200 ok\r\n", true).unwrap();
        assert_eq!(drained(&mut q), vec![(a, "200 ok\r\n".into()), (b, "534 no\r\n".into())]);
        assert!(q.is_empty());
    }

    #[test]
    fn the_head_streams_lines_before_its_reply_is_complete() {
        let mut q = ReplyQueue::new(1024);
        let a = q.open();
        q.push(a, b"211-a\r\n", false).unwrap();
        assert_eq!(drained(&mut q), vec![(a, "211-a\r\n".into())]);
        q.push(a, b"211 end\r\n", true).unwrap();
        assert_eq!(drained(&mut q), vec![(a, "211 end\r\n".into())]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_closing_reply_waits_for_its_data_channel() {
        let mut q = ReplyQueue::new(1024);
        let (a, b) = (q.open(), q.open());
        q.push(a, b"150 go\r\n", false).unwrap();
        q.push_after_data(a, b"226 done\r\n", true, DataId(7)).unwrap();
        q.push(b, b"200 ok\r\n", true).unwrap();
        assert_eq!(drained(&mut q), vec![(a, "150 go\r\n".into())]);
        assert!(q.waits_for_data());
        q.data_gone(DataId(6));
        assert!(drained(&mut q).is_empty());
        q.data_gone(DataId(7));
        assert_eq!(drained(&mut q), vec![(a, "226 done\r\n".into()), (b, "200 ok\r\n".into())]);
    }

    #[test]
    fn bytes_behind_the_head_are_bounded_and_gone_slots_take_nothing() {
        let mut q = ReplyQueue::new(10);
        let (a, b) = (q.open(), q.open());
        assert_eq!(q.push(b, b"0123456789x", false), Err(Overflow));
        q.push(b, b"01234", false).unwrap();
        q.finish(a);
        assert_eq!(drained(&mut q), vec![(b, "01234".into())]);
        q.push(a, b"late\r\n", true).unwrap();
        q.push(b, b"56789", true).unwrap();
        assert_eq!(drained(&mut q), vec![(b, "56789".into())]);
    }
}
