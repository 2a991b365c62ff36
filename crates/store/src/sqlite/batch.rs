//! The events of one ingest call, as the write path walks them.

use connscope_event::{ConnectionEvent, Timestamp};

use crate::{EventKey, KeyedEvent};

/// The events of an ingest call, with or without producer-supplied keys.
#[derive(Clone, Copy)]
pub(super) enum Batch<'a> {
    Plain(&'a [ConnectionEvent]),
    Keyed(&'a [KeyedEvent]),
}

impl<'a> Batch<'a> {
    pub(super) fn len(&self) -> usize {
        match self {
            Batch::Plain(events) => events.len(),
            Batch::Keyed(events) => events.len(),
        }
    }

    pub(super) fn event(&self, i: usize) -> &'a ConnectionEvent {
        match *self {
            Batch::Plain(events) => &events[i],
            Batch::Keyed(events) => &events[i].event,
        }
    }

    /// The event's key and the time it is filed under.
    pub(super) fn key(&self, i: usize) -> (EventKey, Timestamp) {
        match self {
            Batch::Plain(events) => (EventKey::of_event(&events[i]), events[i].timestamp),
            Batch::Keyed(events) => (events[i].key, events[i].key_time),
        }
    }
}
