//! The engine's event queue: first in, first out, its first two events inline. The driver
//! drains it after every input, so it rarely holds more than two; a client's whole life
//! (`Up` at open, `End` and `Released` at close) then allocates nothing, where a
//! `VecDeque`'s first push allocated room for four events (352 bytes) in every group.

use std::collections::VecDeque;

use crate::event::Event;

/// Events held inline before the queue spills to the heap.
const INLINE: usize = 2;

#[derive(Debug, Default)]
pub(crate) struct EventQueue {
    /// The oldest events, `inline[head..head + len]` (no wrap: `head` resets when empty).
    inline: [Option<Event>; INLINE],
    head: u8,
    len: u8,
    /// The rest, in order, behind the inline ones. While it holds any, new events go here
    /// too, so order is kept.
    spill: VecDeque<Event>,
}

impl EventQueue {
    pub(crate) fn push_back(&mut self, e: Event) {
        let end = usize::from(self.head + self.len);
        if self.spill.is_empty() && end < INLINE {
            self.inline[end] = Some(e);
            self.len += 1;
        } else {
            self.spill.push_back(e);
        }
    }

    pub(crate) fn pop_front(&mut self) -> Option<Event> {
        if self.len == 0 {
            return self.spill.pop_front();
        }
        let e = self.inline[usize::from(self.head)].take();
        self.len -= 1;
        self.head = if self.len == 0 { 0 } else { self.head + 1 };
        e
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0 && self.spill.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(self.len) + self.spill.len()
    }

    /// In order, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Event> {
        let (h, l) = (usize::from(self.head), usize::from(self.len));
        self.inline[h..h + l]
            .iter()
            .flatten()
            .chain(self.spill.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::PipeId;

    fn ev(n: u64) -> Event {
        Event::Up { pipe: PipeId(n) }
    }

    fn id(e: &Event) -> u64 {
        match e {
            Event::Up { pipe } => pipe.0,
            _ => unreachable!(),
        }
    }

    /// Against a `VecDeque`: random pushes and pops keep the same order, length and
    /// contents (the inline part refilling while the spill is not empty included).
    #[test]
    fn behaves_as_a_vecdeque() {
        let mut rng = crate::rng::Rng::new(7);
        let (mut q, mut model) = (EventQueue::default(), VecDeque::new());
        let mut next = 0u64;
        for _ in 0..20_000 {
            if rng.next_u64() % 5 < 3 {
                q.push_back(ev(next));
                model.push_back(next);
                next += 1;
            } else {
                assert_eq!(q.pop_front().map(|e| id(&e)), model.pop_front());
            }
            assert_eq!(q.len(), model.len());
            assert_eq!(q.is_empty(), model.is_empty());
            assert!(q.iter().map(id).eq(model.iter().copied()));
        }
    }

    /// Two events in, two out, twice: nothing allocated.
    #[test]
    fn two_at_a_time_stay_inline() {
        let mut q = EventQueue::default();
        for round in 0..2 {
            q.push_back(ev(round * 2));
            q.push_back(ev(round * 2 + 1));
            assert_eq!(q.pop_front().map(|e| id(&e)), Some(round * 2));
            assert_eq!(q.pop_front().map(|e| id(&e)), Some(round * 2 + 1));
            assert!(q.pop_front().is_none());
        }
        assert_eq!(q.spill.capacity(), 0);
    }
}
